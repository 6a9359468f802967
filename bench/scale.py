"""Scale: preflight of a 100,000-record manifest (header mode), the workflow's plan for a
20,000-image dataset, and PatchCore train jobs on 2k / 10k / 20k images, each against a
baseline measured in the same run.

    .venv/bin/python bench/scale.py [--n 100000] [--plan 20000]
                                    [--fit-images 2000 10000 20000] [--exact-up-to 2000]
                                    [--radius-up-to 2000]
                                    [--only-fit] [--keep DIR]

- preflight (header mode, all cores) against a bare serial loop that opens every image header
  with PIL (the least any check must do);
- `snakemake -n` of the whole chain for a `--plan`-image dataset whose standardize checkpoint has
  run (so every embed, score and predict shard is planned), against `snakemake -n` of the
  built-in demo's whole chain;
- PatchCore train jobs with default settings (fit with the coreset, 5-fold cross-fit scoring
  of every training image, val scored, checkpoint written) on N images' stored features: wall
  time, the job's own peak RSS against the `mem_mb` the rule declares, bank size and covering
  radius (projected space; with two stages, the bound global + per-image radius). Baseline:
  the same fit with the global greedy on every candidate (one stage, `max_greedy_pairs`
  unbounded) where it is run (`--exact-up-to`), else its time extrapolated from its measured
  rate (pairs/s) at the largest size run; with the one-stage bank's exact covering radius of
  all candidates. Features: real battery-weld patch features (36 training images and their
  mirror images) as prototypes, each synthetic image one of them shifted by up to two
  positions plus noise (a production line's near-identical parts).
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
from common import REPO  # noqa: E402
from preflight import make_dataset  # noqa: E402


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
    jobs = sum(int(line.split()[-1]) for line in r.stdout.splitlines() if line.startswith("total"))
    return dt, jobs


def _train(table: Path, files: list[str], params: dict, out: Path) -> dict:
    from defectflow.models.memory import measure_train, train_mem_mb

    t = time.perf_counter()
    peak = measure_train(table, files, params, out, threads=2)
    wall = time.perf_counter() - t
    facts = json.loads((out / "card.json").read_text())["facts"]
    return {"wall": wall, "peak": peak, "mem_mb": train_mem_mb(params, files, fallback=0), **facts}


def _exact_radius(files: list[str], table: Path, out: Path) -> float:
    """Covering radius of every candidate by the bank in ``out`` (the selection's projection)."""
    import numpy as np

    from defectflow.artifacts.checkpoint import load_checkpoint
    from defectflow.features.stored import FIT_SPLITS, load_inputs
    from defectflow.models.backends.base import nearest_sq_distances
    from defectflow.models.backends.coreset import flat_patches, projection

    pc = load_checkpoint(out / "c.safetensors")
    data, _ = load_inputs(
        "features",
        table,
        "cat",
        feature_files=files,
        image_size=224,
        splits=FIT_SPLITS,
        select=lambda r: r["split"] != "val",
    )
    proj = projection(data.patch.shape[1], pc.params.projection_dim, np.random.default_rng(0))
    bank = pc.bank @ proj
    worst = 0.0
    for i in range(0, len(data), 256):
        x = flat_patches(data.patch[i : i + 256]) @ proj
        worst = max(worst, float(nearest_sq_distances(x, bank).max()))
    return worst**0.5


def fit_bench(args: argparse.Namespace) -> None:
    """PatchCore train jobs at scale (see the module's docstring)."""
    from common import patch_features, weld_rows

    from defectflow.config import parse_config
    from defectflow.models.memory import synthetic_train_data

    rows = [r["image_path"] for r in weld_rows() if r["split"] != "test"]
    flat = patch_features(rows, flips=True)
    protos = flat.reshape(-1, 28, 28, flat.shape[1]).transpose(0, 3, 1, 2)
    default = parse_config({"datasets": {"big": {"sources": [{"type": "demo"}]}}}).models
    params = default["patchcore"].model_dump(mode="json")
    print(
        f"\n{'images':>7} {'run':<20} {'wall s':>7} {'peak MB':>8} {'mem_mb':>7} {'bank':>6} "
        f"{'greedy cands':>12} {'radius':>7} {'bound':>7} {'exact radius':>12}"
    )
    rate = None
    for n in args.fit_images:
        root = Path(tempfile.mkdtemp(prefix="df-scale-fit-"))
        try:
            table, files = synthetic_train_data(root, n, 2000, prototypes=protos)
            runs = {"default (two-stage)": params}
            if n <= args.exact_up_to:
                runs["one-stage greedy"] = params | {
                    "max_greedy_pairs": 10**18,
                    "max_memory_mb": 10**6,
                }
            for name, p in runs.items():
                r = _train(table, files, p, root / name)
                exact = _exact_radius(files, table, root / name) if n <= args.radius_up_to else None
                print(
                    f"{n:>7} {name:<20} {r['wall']:>7.0f} {r['peak']:>8,.0f} {r['mem_mb']:>7} "
                    f"{r['bank_size']:>6} {r.get('greedy_candidates', 0):>12,} "
                    f"{r['covering_radius']:>7.3f} {r.get('radius_bound', r['covering_radius']):>7.3f} "
                    f"{'-' if exact is None else f'{exact:.3f}':>12}"
                )
                if name == "one-stage greedy":
                    rate = r["candidates"] * r["bank_size"] / r["wall"]
            if n > args.exact_up_to and rate:
                pairs = r["candidates"] * r["bank_size"]
                print(
                    f"{n:>7} {'one-stage greedy':<20} {pairs / rate:>7.0f} (extrapolated from "
                    f"its {rate:.3g} pairs/s above; not run)"
                )
        finally:
            shutil.rmtree(root)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000, help="manifest records for preflight")
    ap.add_argument("--plan", type=int, default=20_000, help="images of the planned dataset")
    ap.add_argument("--fit-images", type=int, nargs="*", default=[2000, 10_000, 20_000])
    ap.add_argument(
        "--exact-up-to",
        type=int,
        default=2000,
        help="run the one-stage greedy baseline up to this many images",
    )
    ap.add_argument(
        "--radius-up-to",
        type=int,
        default=2000,
        help="compute every candidate's distance to the bank up to this many images",
    )
    ap.add_argument("--only-fit", action="store_true", help="only the PatchCore train jobs")
    ap.add_argument("--keep", type=Path, help="make the data here and keep it")
    args = ap.parse_args()
    if args.only_fit:
        fit_bench(args)
        return

    from defectflow.config import DatasetConfig, PreflightConfig
    from defectflow.data.ingest import ingest_sources
    from defectflow.data.preflight import preflight_records

    root = args.keep or Path(tempfile.mkdtemp(prefix="df-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    manifest = make_dataset(root, args.n, 32)
    print(f"made {args.n:,} images (32x32 PNG) in {time.perf_counter() - t:.0f} s under {root}")

    # 1. preflight, header mode
    recs = ingest_sources(
        DatasetConfig.model_validate(
            {"sources": [{"type": "manifest", "path": str(manifest)}]}
        ).sources,
        "scale",
    )
    paths = [r.image_path for r in recs]
    header_baseline(paths[:1000])
    t_base = header_baseline(paths)
    cfg = PreflightConfig(verify="header", threads=os.cpu_count() or 1)
    t = time.perf_counter()
    report, _ = preflight_records(recs, cfg, "scale", str(manifest))
    dt = time.perf_counter() - t
    print(
        f"preflight header, {len(recs):,} records: {dt:.1f} s ({len(recs) / dt:,.0f} records/s); "
        f"bare serial header loop {t_base:.1f} s; ratio {t_base / dt:.2f}x (ok={report.ok})"
    )

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
    (wf / "big.yaml").write_text(
        json.dumps(
            {
                "datasets": {
                    "demo": {"enabled": False, "sources": [{"type": "demo"}]},
                    "big": {"sources": [{"type": "manifest", "path": str(sub)}]},
                },
                "preflight": {"verify": "header"},
            }
        )
    )
    t = time.perf_counter()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "results/big/standardized.parquet",
            "--cores",
            "2",
            "--configfile",
            "big.yaml",
        ],
        cwd=wf,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        sys.exit(f"standardize failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    print(
        f"ingest + preflight + standardize of {args.plan:,} images through snakemake: "
        f"{time.perf_counter() - t:.1f} s"
    )
    big_s, big_jobs = dry_run(wf, "--configfile", "big.yaml")
    demo = copy_workflow(root / "demo")
    subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "results/demo/standardized.parquet"],
        cwd=demo,
        capture_output=True,
        check=True,
    )
    demo_s, demo_jobs = dry_run(demo)
    print(
        f"snakemake -n, {args.plan:,} images: {big_s:.2f} s for {big_jobs} jobs; demo "
        f"(188 images): {demo_s:.2f} s for {demo_jobs} jobs; ratio {big_s / demo_s:.2f}x "
        f"(target: under 3 s)"
    )

    fit_bench(args)
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
