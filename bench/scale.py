"""Scale: preflight of a 100,000-record manifest (header mode), the workflow's plan for a
20,000-image dataset, and PatchCore fitting on many images' features, each against a baseline
measured in the same run.

    .venv/bin/python bench/scale.py [--n 100000] [--plan 20000] [--fit-images 10000]
                                    [--coreset-ratio 0.01] [--keep DIR]

- preflight (header mode, all cores) against a bare serial loop that opens every image header
  with PIL (the least any check must do);
- `snakemake -n` of the whole chain for a `--plan`-image dataset whose standardize checkpoint has
  run (so every embed, score and predict shard is planned), against `snakemake -n` of the
  built-in demo's whole chain;
- PatchCore fit (coreset included) on `--fit-images` synthetic images' stored features in a
  child process: wall time and peak RSS of its process tree, against the size of the features it
  reads. Target: peak under 8 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, run_measured  # noqa: E402
from preflight import make_dataset  # noqa: E402

FIT = """
import sys, time, numpy as np
from defectflow.backends.base import Features
from defectflow.backends.params import PatchcoreParams
from defectflow.backends.patchcore import PatchcoreBackend
from defectflow.threads import set_threads
set_threads(2)
n, ratio = int(sys.argv[1]), float(sys.argv[2])
rng = np.random.default_rng(0)
# stored features are float16 [N, C, H, W] (the default backbone: 152 x 28 x 28)
patch = np.empty((n, 152, 28, 28), np.float16)
for i in range(0, n, 256):  # made in chunks: the benchmark's own arrays stay small
    patch[i : i + 256] = rng.standard_normal((min(256, n - i), 152, 28, 28), dtype=np.float32)
feats = Features([str(i) for i in range(n)], patch, np.zeros((n, 1), np.float32))
t = time.perf_counter()
info = PatchcoreBackend(PatchcoreParams(backend="patchcore", coreset_ratio=ratio)).fit(feats)
print("FIT", time.perf_counter() - t, info)
"""


def header_baseline(paths: list[str]) -> float:
    from PIL import Image

    t = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            im.size  # noqa: B018 - the header read is the work
    return time.perf_counter() - t


def copy_workflow(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "rules", "scripts", "config", "schemas", "envs", "profiles"):
        src = REPO / name
        if not (dst / name).exists():
            (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / name)
    return dst


def dry_run(wf: Path, *args: str) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", *args]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=wf, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"snakemake -n failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    jobs = sum(int(line.split()[-1]) for line in r.stdout.splitlines()
               if line.startswith("total"))  # fmt: skip
    return dt, jobs


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000, help="manifest records for preflight")
    ap.add_argument("--plan", type=int, default=20_000, help="images of the planned dataset")
    ap.add_argument("--fit-images", type=int, default=10_000)
    ap.add_argument("--coreset-ratio", type=float, default=0.0005,
                    help="small by default: the memory is the point, the coreset time grows with "
                    "kept x candidates")  # fmt: skip
    ap.add_argument("--keep", type=Path, help="make the data here and keep it")
    args = ap.parse_args()

    from defectflow.config import DatasetConfig, PreflightConfig
    from defectflow.ingest import ingest_sources
    from defectflow.preflight import preflight_records

    root = args.keep or Path(tempfile.mkdtemp(prefix="df-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    manifest = make_dataset(root, args.n, 32)
    print(f"made {args.n:,} images (32x32 PNG) in {time.perf_counter() - t:.0f} s under {root}")

    # 1. preflight, header mode
    recs = ingest_sources(DatasetConfig.model_validate(
        {"sources": [{"type": "manifest", "path": str(manifest)}]}).sources, "scale")  # fmt: skip
    paths = [r.image_path for r in recs]
    header_baseline(paths[:1000])
    t_base = header_baseline(paths)
    cfg = PreflightConfig(verify="header", threads=os.cpu_count() or 1)
    t = time.perf_counter()
    report, _ = preflight_records(recs, cfg, "scale", str(manifest))
    dt = time.perf_counter() - t
    print(f"preflight header, {len(recs):,} records: {dt:.1f} s ({len(recs) / dt:,.0f} records/s); "
          f"bare serial header loop {t_base:.1f} s; ratio {t_base / dt:.2f}x (ok={report.ok})")  # fmt: skip

    # 2. the plan of a --plan-image dataset, every shard planned (standardize has run)
    sub = root / "plan.jsonl"
    with open(manifest) as src, open(sub, "w") as dst:
        for i, line in enumerate(src):
            if i >= args.plan:
                break
            row = json.loads(line)
            row["image_path"] = str(root / row["image_path"])
            dst.write(json.dumps(row) + "\n")
    wf = copy_workflow(root / "wf")
    (wf / "big.yaml").write_text(json.dumps({
        "datasets": {"demo": {"enabled": False, "sources": [{"type": "demo"}]},
                     "big": {"sources": [{"type": "manifest", "path": str(sub)}]}},
        "preflight": {"verify": "header"}}))  # fmt: skip
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "snakemake", "results/big/standardized.parquet", "--cores", "2",
                        "--configfile", "big.yaml"], cwd=wf, capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        sys.exit(f"standardize failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    print(f"ingest + preflight + standardize of {args.plan:,} images through snakemake: "
          f"{time.perf_counter() - t:.1f} s")  # fmt: skip
    big_s, big_jobs = dry_run(wf, "--configfile", "big.yaml")
    demo = copy_workflow(root / "demo")
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "results/demo/standardized.parquet"],
                   cwd=demo, capture_output=True, check=True)  # fmt: skip
    demo_s, demo_jobs = dry_run(demo)
    print(f"snakemake -n, {args.plan:,} images: {big_s:.2f} s for {big_jobs} jobs; demo "
          f"(188 images): {demo_s:.2f} s for {demo_jobs} jobs; ratio {big_s / demo_s:.2f}x "
          f"(target: under 3 s)")  # fmt: skip

    # 3. PatchCore fit on many images' features
    feat_mb = args.fit_images * 152 * 28 * 28 * 2 / 2**20
    res = run_measured([sys.executable, "-c", FIT, str(args.fit_images), str(args.coreset_ratio)],
                       max_mb=12000)  # fmt: skip
    fit = next((line for line in res["output"].splitlines() if line.startswith("FIT")), None)
    status = "killed at 12 GB" if res["killed"] else f"exit {res['rc']}"
    print(f"patchcore fit, {args.fit_images:,} images (coreset_ratio {args.coreset_ratio}): "
          f"{res['wall_s']:.0f} s, peak RSS {res['peak_mb']:,.0f} MB ({status}); stored features "
          f"{feat_mb:,.0f} MB; ratio {res['peak_mb'] / feat_mb:.2f}x; target under 8 GB: "
          f"{'met' if res['peak_mb'] < 8192 and res['rc'] == 0 else 'NOT met'}")  # fmt: skip
    if fit:
        print("  ", fit)
    elif res["rc"] != 0:
        print(res["output"][-2000:])
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
