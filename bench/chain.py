"""The whole default chain against anomalib 2.7 training ONE model, on the same images.

    .venv/bin/python bench/chain.py [--threads 2]                      # battery weld
    .venv/bin/python bench/chain.py --data DIR [--category NAME]       # any MVTec-layout folder
    .venv/bin/python bench/chain.py --demo-train 500                   # demo texture, 500 train

Ours: `snakemake --cores 2` in a fresh copy of the workflow with the default config pointed at
the data (ingest, preflight, backbone export, embedding of train AND test once, 3 models each
fitted and cross-fitted, scoring, calibration, predictions with heatmaps, metrics, report), on
one category. Theirs: anomalib's Engine fit + test of one Patchcore (lite0 with the packaged
weights and their normalization, layers 2+3, coreset 0.1, 224 px) on the same images, in an
anomalib Folder datamodule. Each runs in its own process tree, one after the other; wall time
and the peak resident memory of the whole tree are printed, and the ratio ours/theirs.

anomalib 2.7's ``KCenterGreedy.update_distances`` allocates a new N x d temporary at every
step; on this machine its coreset was OOM-killed at 16-22 GB. The baseline runs with one
monkeypatch that computes the same distances into one reused buffer (same maths, same
selection), so it finishes and the ratio can be measured.
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
from defectflow.models.backends.anomalib import builtin_pretrained
torch.set_num_threads(int(sys.argv[2]))
from anomalib.data import Folder
from anomalib.engine import Engine
from anomalib.models import Patchcore
from anomalib.models.components.sampling import k_center_greedy


def update_distances(self, cluster_center):
    # anomalib's update, into one buffer reused across steps (theirs allocates N x d each)
    if cluster_center is None:
        return
    center = self.features[cluster_center].squeeze()
    if getattr(self, "_buf", None) is None or self._buf.shape != self.features.shape:
        self._buf = torch.empty_like(self.features)
        self._dist = torch.empty((self.features.shape[0], 1), dtype=self.features.dtype)
    torch.sub(self.features, center, out=self._buf)
    torch.linalg.vector_norm(self._buf, ord=2, dim=1, keepdim=True, out=self._dist)
    if self.min_distances is None:
        self.min_distances = self._dist.clone()
    else:
        torch.minimum(self.min_distances, self._dist, out=self.min_distances)


k_center_greedy.KCenterGreedy.update_distances = update_distances
data, category = sys.argv[3], sys.argv[4]
with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp) / "data"
    if data == "weld":
        rows = weld_rows()
        for sub, keep in (("train/good", lambda r: r["split"] != "test"),
                          ("test/good", lambda r: r["split"] == "test" and r["label"] == "normal"),
                          ("test/defect", lambda r: r["split"] == "test" and r["label"] == "anomaly")):
            d = root / sub
            d.mkdir(parents=True)
            for i, r in enumerate(x for x in rows if keep(x)):
                os.symlink(r["image_path"], d / f"{i:05d}.png")
    else:  # an MVTec-layout category: every test/<type> but good is a defect
        src = Path(data) / category
        (root / "test").mkdir(parents=True)
        os.symlink(src / "train" / "good", root / "train_good")
        os.symlink(src / "test" / "good", root / "test" / "good")
        d = root / "test" / "defect"
        d.mkdir()
        for t in sorted(p for p in (src / "test").iterdir() if p.name != "good"):
            for f in sorted(t.iterdir()):
                os.symlink(f, d / f"{t.name}_{f.name}")
        (root / "train").mkdir()
        os.symlink(src / "train" / "good", root / "train" / "good")
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


def _data(args: argparse.Namespace, tmp: Path) -> tuple[Path | None, str]:
    """(MVTec-layout folder or None for battery weld, category)."""
    if args.demo_train:
        from defectflow.config import DemoConfig
        from defectflow.data.demo import generate_demo

        data = tmp / "demo"
        generate_demo(
            data,
            DemoConfig(
                n_train=args.demo_train, n_test_normal=40, n_test_per_defect=15, categories=["tile"]
            ),
        )
        return data, "tile"
    if args.data:
        cats = sorted(p.name for p in args.data.iterdir() if (p / "train" / "good").is_dir())
        if not cats:
            sys.exit(f"{args.data}: no <category>/train/good folder (MVTec layout)")
        return args.data.resolve(), args.category or cats[0]
    if not WELD.is_dir():
        sys.exit(f"battery-weld data not found at {WELD}")
    return None, "welding"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-mb", type=int, default=16000)
    ap.add_argument("--data", type=Path, help="an MVTec-layout folder (<category>/train/good, ...)")
    ap.add_argument("--category", help="its category (default: the first)")
    ap.add_argument(
        "--demo-train",
        type=int,
        help="generate the demo texture (tile) with this many training images and run on it",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, category = _data(args, Path(tmp))
        wf = Path(tmp) / "wf"
        wf.mkdir()
        for name in ("Snakefile", "rules", "scripts", "config", "schemas", "envs", "profiles"):
            (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, wf / name)
        cfg = yaml.safe_load((wf / "config" / "config.yaml").read_text())
        if data is None:
            sources = [
                {"type": "manifest", "path": str(WELD / "train_welding.json"), "split": "train"},
                {"type": "manifest", "path": str(WELD / "test_welding.json"), "split": "test"},
            ]
            cfg["preflight"]["severity"] = {"LEAKAGE_EXACT": "warning"}  # 7 leaked copies
        else:
            sources = [{"type": "mvtec", "path": str(data), "categories": [category]}]
        cfg["datasets"] = {
            "demo": {"enabled": False, "sources": [{"type": "demo"}]},
            "bench": {"sources": sources},
        }
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
            for p in (wf / "results/bench/models").glob("*/*/metrics.json")
        }
        theirs = run_measured(
            [
                sys.executable,
                "-c",
                ANOMALIB,
                str(Path(__file__).parent),
                str(args.threads),
                "weld" if data is None else str(data),
                category,
            ],
            max_mb=args.max_mb,
        )
    ok = theirs["rc"] == 0 and "RESULT" in theirs["output"]
    auroc = next(
        (line for line in theirs["output"].splitlines() if "image_AUROC" in line), ""
    ).strip()
    print(f"{'battery weld' if data is None else f'{data} / {category}'}, {args.threads} cores")
    print(f"{'run':<52} {'wall s':>7} {'peak MB':>8}")
    print(
        f"{'defectflow: whole default chain (3 models)':<52} {ours['wall_s']:>7.1f} {ours['peak_mb']:>8.0f}"
    )
    print(
        f"{'anomalib 2.7: Engine fit + test of one Patchcore':<52} {theirs['wall_s']:>7.1f} {theirs['peak_mb']:>8.0f}"
        + (
            ""
            if ok
            else "  (FAILED: "
            + ("memory cap" if theirs["killed"] else theirs["output"][-300:])
            + ")"
        )
    )
    if ok:
        print(
            f"ratio ours/theirs: wall {ours['wall_s'] / theirs['wall_s']:.2f}x, "
            f"peak memory {ours['peak_mb'] / theirs['peak_mb']:.2f}x"
        )
    else:  # a run stopped part-way has no wall time to compare with
        print(
            f"ratio: none (anomalib did not finish; it had run {theirs['wall_s']:.1f} s "
            f"and held {theirs['peak_mb']:.0f} MB when it stopped)"
        )
    for m, img in sorted(metrics.items()):
        print(
            f"  ours {m:<10} image AUROC {img['auroc']:.3f}  F1 {img['f1']:.3f} (best possible {img['best_f1']:.3f})"
        )
    if auroc:
        print(f"  anomalib Patchcore test metrics: {auroc}")


if __name__ == "__main__":
    main()
