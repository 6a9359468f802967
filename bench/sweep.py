"""A sweep against running its configurations one by one: backbones x models x seeds.

    .venv/bin/python bench/sweep.py                       # battery weld, layers [2,3] vs [2,4]
    .venv/bin/python bench/sweep.py --data demo --names tf_efficientnet_lite0,tf_efficientnet_lite1 \
        --layers 23 --seeds 3                             # 2 backbones x 3 models x 3 seeds

Baseline, measured in this run: the default chain (3 models, one seed) from scratch once per
backbone of the sweep, each alone; run one by one, the sweep's configurations cost the sum of
those runs, each times the number of seeds. Sweep: `snakemake --cores N` once, from scratch, with
lists in `backbone` and `seeds` in every model. The ratio sweep / that sum shows what sharing
saves (ingest, preflight and standardize run once, each backbone embeds each category once). Printed: wall times, the ratio, embed jobs against
backbones x categories (read from Snakemake's benchmark files: a job computed twice would show),
and per category and variant the image AUROC, F1 at the delivered threshold and fit seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from common import WELD, run_measured, workflow_copy


def workflow(root: Path, data: str, backbone: dict, seeds: int) -> Path:
    wf = root / "wf"
    cfg = workflow_copy(wf, data)
    cfg["backbone"].update(backbone)
    if seeds > 1:
        for m in cfg["models"].values():
            m["seeds"] = list(range(seeds))
    (wf / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return wf


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", choices=("weld", "demo"), default="weld")
    ap.add_argument("--names", default="tf_efficientnet_lite0", help="comma-separated timm names")
    ap.add_argument("--layers", default="23,24", help="comma-separated layer sets: 23 is [2, 3]")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-mb", type=int, default=20000)
    args = ap.parse_args()
    if args.data == "weld" and not WELD.is_dir():
        sys.exit(f"battery-weld data not found at {WELD} (or run with --data demo)")
    names = args.names.split(",")
    layers = [[int(c) for c in s] for s in args.layers.split(",")]
    sweep = {
        "name": names if len(names) > 1 else names[0],
        "layers": layers if len(layers) > 1 else layers[0],
    }
    combos = [{"name": n, "layers": la} for n in names for la in layers]
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        bases = []
        for i, combo in enumerate(combos):
            base = run_measured(
                cmd, cwd=workflow(Path(tmp) / f"base{i}", args.data, combo, 1), max_mb=args.max_mb
            )
            if base["rc"] != 0:
                sys.exit(f"baseline chain {combo} failed:\n" + base["output"][-3000:])
            bases.append(base)
        wf = workflow(Path(tmp) / "sweep", args.data, sweep, args.seeds)
        ours = run_measured(cmd, cwd=wf, max_mb=args.max_mb)
        if ours["rc"] != 0:
            sys.exit("sweep failed:\n" + ours["output"][-3000:])
        ds = args.data
        cats = {p.name for p in (wf / "results" / ds / "models").glob("*/*") if p.is_dir()}
        embeds = sorted((wf / "benchmarks" / ds / "embed").glob("*/*.tsv"))
        exports = sorted((wf / "benchmarks" / "backbones").glob("*.tsv"))
        board = pq.read_table(wf / "results" / ds / "leaderboard.parquet").to_pylist()
    print(
        f"{args.data}, {args.threads} cores; sweep: backbone {sweep}, seeds {args.seeds}, 3 models"
    )
    print(f"{'run':<58} {'wall s':>7} {'peak MB':>8}")
    for combo, base in zip(combos, bases, strict=True):
        label = f"alone: {combo['name']} layers {combo['layers']}, 1 seed"
        print(f"{label:<58} {base['wall_s']:>7.1f} {base['peak_mb']:>8.0f}")
    one_by_one = args.seeds * sum(b["wall_s"] for b in bases)
    print(f"{f'one by one: the runs above x {args.seeds} seed(s)':<58} {one_by_one:>7.1f}")
    print(
        f"{f'sweep: {len(board)} variants x categories in one run':<58} {ours['wall_s']:>7.1f} {ours['peak_mb']:>8.0f}"
    )
    print(f"ratio sweep / one by one: {ours['wall_s'] / one_by_one:.2f}x")
    print(
        f"backbone exports {len(exports)} (backbones {len(combos)}); embed jobs {len(embeds)} "
        f"(backbones x categories = {len(combos) * len(cats)})"
    )
    print(
        f"  {'category':<10} {'model':<48} {'AUROC':>6} {'F1':>6} {'best F1':>7} {'fit s':>6}  marks"
    )
    for r in board:
        marks = " ".join(
            m
            for m, on in (
                ("best-on-test", r["best_on_test"]),
                ("picked-without-labels", r["picked_without_test_labels"]),
            )
            if on
        )
        print(
            f"  {r['category']:<10} {r['model']:<48} {r['image_auroc']:>6.3f} {r['f1']:>6.3f} "
            f"{r['best_f1']:>7.3f} {r['fit_s'] or 0:>6.1f}  {marks}"
        )


if __name__ == "__main__":
    main()
