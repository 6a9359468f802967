"""A production-size category end to end: the default chain on a demo-generator texture with
10,000 training images, every job's peak memory against the `mem_mb` it declared.

    .venv/bin/python bench/large.py [--train 10000] [--test-normal 60] [--test-per-defect 20]
                                    [--cores 2] [--keep DIR] [--synthetic on|off|both]

``--synthetic both`` runs the chain without synthetic defects, then with them (the default),
each in its own copy of the workflow on the same data, and prints the ratio of their times.

The data (the demo generator's `tile`, MVTec layout) is made first, outside the timing. Then
`snakemake --cores N` runs the whole default chain on it (ingest, preflight, standardize, the
backbone export, embedding in shards, knn + PatchCore + PaDiM fitted and cross-fitted, scoring,
calibration, predictions with heatmaps, metrics, report) in a fresh copy of the workflow: wall
time and the peak memory of the whole process tree. Each job with a `benchmark:` file (embed,
train, score, predict, ...) has its peak RSS (`max_rss`) compared with the `mem_mb` Snakemake
gave it; the slowest jobs are listed.
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import REPO, run_measured


def declared_mem(log: str) -> dict[str, int]:
    """benchmark path -> mem_mb, from Snakemake's job blocks in its output."""
    out = {}
    for block in re.split(r"\n\s*\n", log):
        bench = re.search(r"^\s*benchmark: (\S+)", block, re.M)
        mem = re.search(r"^\s*resources: .*?\bmem_mb=(\d+)", block, re.M)
        if bench and mem:
            out[bench.group(1)] = int(mem.group(1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--train", type=int, default=10_000)
    ap.add_argument("--test-normal", type=int, default=60)
    ap.add_argument("--test-per-defect", type=int, default=20)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="work here and keep everything")
    ap.add_argument("--synthetic", choices=("on", "off", "both"), default="on")
    args = ap.parse_args()

    from defectflow.config import DemoConfig
    from defectflow.data.demo import generate_demo

    root = args.keep or Path(tempfile.mkdtemp(prefix="df-large-"))
    data, wf = root / "data", root / "wf"
    if not (data / "demo.json").exists():
        t = time.perf_counter()
        generate_demo(
            data,
            DemoConfig(
                n_train=args.train,
                n_test_normal=args.test_normal,
                n_test_per_defect=args.test_per_defect,
                categories=["tile"],
            ),
        )
        print(f"made {args.train:,} training images in {time.perf_counter() - t:.0f} s", flush=True)
    walls = {}
    for synthetic in {"on": [True], "off": [False], "both": [False, True]}[args.synthetic]:
        wf = root / ("wf" if synthetic else "wf-nosynthetic")
        wf.mkdir(parents=True, exist_ok=True)
        for name in ("Snakefile", "rules", "scripts", "config", "schemas", "envs", "profiles"):
            if not (wf / name).exists():
                (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, wf / name)
        cfg = yaml.safe_load((wf / "config" / "config.yaml").read_text())
        cfg["datasets"] = {
            "demo": {"enabled": False, "sources": [{"type": "demo"}]},
            "large": {"sources": [{"type": "mvtec", "path": str(data)}]},
        }
        cfg["synthetic"] = {"enabled": synthetic}
        (wf / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
        res = run_measured(
            [sys.executable, "-m", "snakemake", "--cores", str(args.cores)], cwd=wf, max_mb=22000
        )
        status = "ok" if res["rc"] == 0 else f"FAILED (exit {res['rc']})"
        print(
            f"default chain, {args.train:,} training images, {args.cores} cores, synthetic "
            f"defects {'on' if synthetic else 'off'}: "
            f"{res['wall_s']:.0f} s ({res['wall_s'] / 60:.1f} min), peak {res['peak_mb']:,.0f} MB "
            f"(process tree), {status}"
        )
        if res["rc"] != 0:
            print(res["output"][-4000:])
        mem = declared_mem(res["output"])
        rows = []
        for f in sorted((wf / "benchmarks").rglob("*.tsv")):
            with open(f) as fh:
                b = next(csv.DictReader(fh, delimiter="\t"))
            key = str(f.relative_to(wf))
            rows.append((key, float(b["s"]), float(b["max_rss"]), mem.get(key)))
        over = [r for r in rows if r[3] is not None and r[2] > r[3]]
        print(
            f"{len(rows)} jobs with a benchmark, {sum(r[3] is not None for r in rows)} with a "
            f"declared mem_mb; over it: {len(over)}"
        )
        print(f"{'job':<60} {'s':>7} {'max_rss MB':>10} {'mem_mb':>7}")
        for key, s, rss, declared in sorted(rows, key=lambda r: -r[1])[:12] + over:
            print(f"{key:<60} {s:>7.0f} {rss:>10,.0f} {declared or '-':>7}")
        walls[synthetic] = res["wall_s"]
    if len(walls) == 2:
        print(
            f"synthetic defects: {walls[True]:.0f} s with, {walls[False]:.0f} s without: "
            f"{walls[True] / walls[False]:.2f}x"
        )
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
