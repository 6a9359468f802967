"""`defectflow runs` and `gate`: the run registry and the regression gate."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from defectflow.cli.common import EXIT_OK
from defectflow.errors import DefectflowError

log = logging.getLogger("defectflow")


def cmd_runs(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it runs, so `defectflow infer` stays light
    from defectflow.evaluation.gate import baseline_rows, diff
    from defectflow.evaluation.registry import load_registry, runs_of

    rows = load_registry(args.registry)
    if args.action == "list":
        summary = runs_of(rows)
        if args.json:
            print(json.dumps(summary, indent=2))
            return EXIT_OK
        print(
            f"{'run':<24} {'time':<20} {'config':<12} {'commit':<11} rows  mean image AUROC  "
            "datasets"
        )
        for s in summary:
            commit = (s["git_commit"] or "-") + ("*" if s["git_dirty"] else "")
            print(
                f"{s['run_id']:<24} {s['time']:<20} {s['config_sha256']:<12} {commit:<11} "
                f"{s['rows']:>4}  {str(s['mean_image_auroc']):<16}  {', '.join(s['datasets'])}"
            )
        return EXIT_OK
    if args.action == "show":
        picked = baseline_rows(args.runs[0] if args.runs else "latest", args.registry)
        if args.json:
            print(json.dumps(picked, indent=2, default=str))
            return EXIT_OK
        r0 = picked[0]
        print(
            f"run {r0['run_id']} at {r0['time']}, commit {r0['git_commit']}{' (dirty)' if r0['git_dirty'] else ''}, "
            f"config {r0['config_sha256'][:12]}"
        )
        for r in picked:
            print(
                f"  {r['dataset']}/{r['category']}/{r['model']}: image AUROC {r['image_auroc']}, "
                f"F1 {r['f1']} (best {r['best_f1']}), pixel AUROC {r['pixel_auroc']}"
            )
        return EXIT_OK
    if len(args.runs) != 2:
        raise DefectflowError(
            "runs diff needs two runs: RUN_A RUN_B (ids, prefixes, latest, previous)"
        )
    a, b = (baseline_rows(r, args.registry) for r in args.runs)
    d = diff(a, b)
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return EXIT_OK
    print(f"A = {args.runs[0]}: {_run_name(a)}\nB = {args.runs[1]}: {_run_name(b)}")
    print("config changes:" if d["config_changes"] else "config: identical")
    for k, (va, vb) in d["config_changes"].items():
        print(f"  {k}: {va!r} -> {vb!r}")
    for m in d["metrics"]:
        au, f1 = m["image_auroc"], m["f1"]
        name = f"{m['dataset']}/{m['category']}/{m['model']}"
        if m["only_in"]:
            print(f"  {name}: only in run {m['only_in']}")
            continue
        delta = "" if au["delta"] is None else f" ({au['delta']:+.4f})"
        print(f"  {name}: image AUROC {au['a']} -> {au['b']}{delta}, F1 {f1['a']} -> {f1['b']}")
    return EXIT_OK


def _run_name(rows: list[dict]) -> str:
    r = rows[0] if rows else {}
    return f"run {r['run_id']} ({r.get('time')})" if r.get("run_id") else "the leaderboard file"


def cmd_gate(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it runs, so `defectflow infer` stays light
    from defectflow.evaluation.gate import baseline_rows, gate

    current = baseline_rows(args.current, args.registry)
    datasets = {r["dataset"] for r in current}
    base = baseline_rows(args.baseline, args.registry, datasets)
    if not args.json:
        print(
            f"current {_run_name(current)} against baseline {_run_name(base)} "
            f"(datasets: {', '.join(sorted(datasets))})"
        )
    failed = gate(current, base, args.metric, args.max_drop)
    if args.json:
        print(
            json.dumps(
                {
                    "passed": not failed,
                    "metric": args.metric,
                    "max_drop": args.max_drop,
                    "failed": failed,
                },
                indent=2,
            )
        )
    elif failed:
        print(
            f"gate FAILED: {len(failed)} of {len(base)} results dropped {args.metric} by more than {args.max_drop}:"
        )
        for f in failed:
            now = "missing" if f["current"] is None else f"{f['current']:.4f} (-{f['drop']:.4f})"
            print(f"  {f['dataset']}/{f['category']}/{f['model']}: {f['baseline']:.4f} -> {now}")
    else:
        print(
            f"gate passed: no {args.metric} dropped by more than {args.max_drop} ({len(base)} results)"
        )
    return 1 if failed else EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("runs", help="the run registry: list runs, show one, diff two")
    s.add_argument("action", choices=["list", "show", "diff"])
    s.add_argument("runs", nargs="*", help="run ids (or a unique prefix, latest, previous)")
    s.add_argument("--registry", type=Path, default=Path("runs/registry.parquet"))
    s.add_argument("--json", action="store_true", help="JSON instead of text")
    s.set_defaults(func=cmd_runs)

    s = sub.add_parser(
        "gate",
        help="exit 1 when a metric dropped against a baseline run or leaderboard file (a CI step)",
    )
    s.add_argument(
        "--baseline",
        required=True,
        help="run id (prefix, latest, previous) or a leaderboard .parquet/.csv",
    )
    s.add_argument("--current", default="latest", help="run to check (default: the latest)")
    s.add_argument("--metric", default="image_auroc")
    s.add_argument("--max-drop", type=float, default=0.01, help="tolerated drop (default 0.01)")
    s.add_argument("--registry", type=Path, default=Path("runs/registry.parquet"))
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_gate)
