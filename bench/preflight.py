"""Preflight throughput on a 20,000-image manifest, and dry-run time of the workflow on it.

    .venv/bin/python bench/preflight.py [--n 20000] [--threads 2] [--keep DIR]

Prints records/s for header-only and full-verify preflight, each against a baseline measured in
the same run: a naive serial loop that fully decodes and hashes every image (what a hand-written
check does). Then times `snakemake -n` with the manifest as a dataset.
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

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_dataset(root: Path, n: int, size: int = 64) -> Path:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
    rows = []
    for i in range(n):
        arr = base.copy()
        arr[i % size, :] = (i * 37) % 256  # distinct bytes per image, cheap to make
        arr[:, (i // size) % size] ^= i % 251
        p = root / "img" / f"{i // 1000:03d}" / f"{i:06d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(p, compress_level=1)
        split = "test" if i % 10 == 0 else "train"
        rows.append(
            {
                "image_path": str(p.relative_to(root)),
                "category": f"cat{i % 4}",
                "split": split,
                "label": "normal",
            }
        )
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def baseline(paths: list[str]) -> float:
    import hashlib

    t = time.perf_counter()
    for p in paths:
        data = Path(p).read_bytes()
        hashlib.sha256(data).hexdigest()
        Image.open(p).convert("RGB")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", type=Path, help="make the data here and keep it")
    args = ap.parse_args()

    from defectflow.config import DatasetConfig, PreflightConfig
    from defectflow.data.ingest import ingest_sources
    from defectflow.data.preflight import preflight_records

    root = args.keep or Path(tempfile.mkdtemp(prefix="df-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    manifest = make_dataset(root, args.n, args.size)
    print(
        f"made {args.n} images ({args.size}x{args.size} PNG) in {time.perf_counter() - t:.1f} s under {root}"
    )

    t = time.perf_counter()
    recs = ingest_sources(
        DatasetConfig.model_validate(
            {"sources": [{"type": "manifest", "path": str(manifest)}]}
        ).sources,
        "bench",
    )
    t_ingest = time.perf_counter() - t
    paths = [r.image_path for r in recs]
    baseline(paths[:200])  # warm the page cache like the runs below
    t_base = baseline(paths)
    print(f"ingest: {len(recs) / t_ingest:,.0f} records/s ({t_ingest:.2f} s)")
    print(
        f"baseline (serial full decode + sha256): {len(paths) / t_base:,.0f} records/s ({t_base:.2f} s)"
    )
    for mode in ("header", "full"):
        cfg = PreflightConfig(verify=mode, threads=args.threads)
        t = time.perf_counter()
        report, _ = preflight_records(recs, cfg, "bench", str(manifest))
        dt = time.perf_counter() - t
        print(
            f"preflight {mode:<6} ({args.threads} threads): {len(recs) / dt:,.0f} records/s ({dt:.2f} s), "
            f"{t_base / dt:.2f}x the baseline; ok={report.ok}, issues={len(report.issues)}"
        )

    wf = root / "wf"
    wf.mkdir(exist_ok=True)
    for name in ("Snakefile", "rules", "scripts", "config", "schemas", "envs", "profiles"):
        src = REPO / name
        dst = wf / name
        if not dst.exists():
            (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    cfg = {"datasets": {"big": {"sources": [{"type": "manifest", "path": str(manifest)}]}}}
    (wf / "big.yaml").write_text(json.dumps(cfg))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--cores",
        "2",
        "--configfile",
        "big.yaml",
        "--quiet",
        "rules",
    ]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=wf, capture_output=True, text=True)
    dt = time.perf_counter() - t
    print(f"snakemake -n on the {args.n}-image manifest: {dt:.2f} s (exit {r.returncode})")
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
