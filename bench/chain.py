"""The whole default chain on the battery-weld data against anomalib 2.7 training ONE model.

    .venv/bin/python bench/chain.py [--threads 2]

Ours: `snakemake --cores 2` in a fresh copy of the workflow with the default config pointed at
the battery-weld manifests (ingest, preflight, backbone export, embedding of train AND test
once, 3 models each fitted and cross-fitted, scoring, calibration, predictions with heatmaps,
metrics, report). Theirs: anomalib's Engine fit + test of one Patchcore (lite0 with the
packaged weights and their normalization, layers 2+3, coreset 0.1, 224 px) on the same images, in an anomalib Folder
datamodule. Each runs in its own process tree, one after the other; wall time and the peak
resident memory of the whole tree are printed, and the ratio ours/theirs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import yaml
from common import REPO, WELD, run_measured

ANOMALIB = r"""
import os, sys, tempfile, time
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[1])
from common import weld_rows
from defectflow.backends.anomalib import builtin_pretrained
torch.set_num_threads(int(sys.argv[2]))
from anomalib.data import Folder
from anomalib.engine import Engine
from anomalib.models import Patchcore
rows = weld_rows()
with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp) / "data"
    for sub, keep in (("train/good", lambda r: r["split"] != "test"),
                      ("test/good", lambda r: r["split"] == "test" and r["label"] == "normal"),
                      ("test/defect", lambda r: r["split"] == "test" and r["label"] == "anomaly")):
        d = root / sub
        d.mkdir(parents=True)
        for i, r in enumerate(x for x in rows if keep(x)):
            os.symlink(r["image_path"], d / f"{i:05d}.png")
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms import v2
    pre = PreProcessor(transform=v2.Compose([v2.Resize((224, 224), antialias=True), v2.Normalize([0.5] * 3, [0.5] * 3)]))
    with builtin_pretrained():
        model = Patchcore(backbone="tf_efficientnet_lite0", layers=[2, 3], coreset_sampling_ratio=0.1, pre_processor=pre)
    dm = Folder(name="weld", root=root, normal_dir="train/good", abnormal_dir="test/defect",
                normal_test_dir="test/good", train_batch_size=16, eval_batch_size=16, num_workers=0)
    engine = Engine(default_root_dir=Path(tmp) / "run", accelerator="cpu", devices=1, logger=False,
                    enable_progress_bar=False)
    engine.fit(model=model, datamodule=dm)
    res = engine.test(model=model, datamodule=dm)
    print("RESULT", res)
"""


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-mb", type=int, default=16000)
    args = ap.parse_args()
    if not WELD.is_dir():
        sys.exit(f"battery-weld data not found at {WELD}")
    with tempfile.TemporaryDirectory() as tmp:
        wf = Path(tmp) / "wf"
        wf.mkdir()
        for name in ("Snakefile", "rules", "scripts", "config", "schemas", "envs", "profiles"):
            (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, wf / name)
        cfg = yaml.safe_load((wf / "config" / "config.yaml").read_text())
        cfg["datasets"] = {"demo": {"enabled": False, "sources": [{"type": "demo"}]}, "weld": {"sources": [
            {"type": "manifest", "path": str(WELD / "train_welding.json"), "split": "train"},
            {"type": "manifest", "path": str(WELD / "test_welding.json"), "split": "test"}]}}  # fmt: skip
        cfg["preflight"]["severity"] = {"LEAKAGE_EXACT": "warning"}  # the data has 7 leaked copies
        (wf / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
        ours = run_measured(
            [sys.executable, "-m", "snakemake", "--cores", str(args.threads)],
            cwd=wf,
            max_mb=args.max_mb,
        )
        if ours["rc"] != 0:
            sys.exit("our chain failed:\n" + ours["output"][-3000:])
        metrics = {
            p.parts[-3]: yaml.safe_load(p.read_text())["image"]
            for p in (wf / "results/weld/models").glob("*/welding/metrics.json")
        }
    theirs = run_measured(
        [sys.executable, "-c", ANOMALIB, str(Path(__file__).parent), str(args.threads)],
        max_mb=args.max_mb,
    )
    ok = theirs["rc"] == 0 and "RESULT" in theirs["output"]
    auroc = next(
        (line for line in theirs["output"].splitlines() if "image_AUROC" in line), ""
    ).strip()
    print(f"battery weld, {args.threads} cores")
    print(f"{'run':<52} {'wall s':>7} {'peak MB':>8}")
    print(
        f"{'defectflow: whole default chain (3 models)':<52} {ours['wall_s']:>7.1f} {ours['peak_mb']:>8.0f}"
    )
    print(f"{'anomalib 2.7: Engine fit + test of one Patchcore':<52} {theirs['wall_s']:>7.1f} {theirs['peak_mb']:>8.0f}"
          + ("" if ok else "  (FAILED: " + ("memory cap" if theirs["killed"] else theirs["output"][-300:]) + ")"))  # fmt: skip
    if ok:
        print(f"ratio ours/theirs: wall {ours['wall_s'] / theirs['wall_s']:.2f}x, "
              f"peak memory {ours['peak_mb'] / theirs['peak_mb']:.2f}x")  # fmt: skip
    else:  # a run stopped part-way has no wall time to compare with
        print(f"ratio: none (anomalib did not finish; it had run {theirs['wall_s']:.1f} s "
              f"and held {theirs['peak_mb']:.0f} MB when it stopped)")  # fmt: skip
    for m, img in sorted(metrics.items()):
        print(
            f"  ours {m:<10} image AUROC {img['auroc']:.3f}  F1 {img['f1']:.3f} (best possible {img['best_f1']:.3f})"
        )
    if auroc:
        print(f"  anomalib Patchcore test metrics: {auroc}")


if __name__ == "__main__":
    main()
