"""Deployment without labelled defects: the false-alarm rate a threshold states against the rate
realized on the test normals, and the recall it leaves, per model and target.

    .venv/bin/python bench/fpr.py [--data weld demo] [--targets 0.01 0.05 0.1] [--keep DIR]

Each dataset runs the default chain once in a fresh copy of the workflow with
`split: {val_from_test: 0}` (no labelled defect before test: the thresholds rest on the
cross-fitted training normals alone). From the stored calibration scores (crossfit.parquet) and
test scores (predictions.jsonl) every target is then applied as `policy: fpr` would apply it
(the conformal order statistic) and, as the baseline measured in the same run, as the former
default (`normal_quantile` at 1 - target, interpolated). Printed per dataset x category x model:
n, the stated rate (expected and 90% interval), the realized rate on the test normals with the
count range the statement allows, whether it held, the score-shift test, and recall.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from common import workflow_copy

from defectflow.artifacts.scores import read_scores
from defectflow.evaluation.metrics import score_shift
from defectflow.false_alarms import conformal_threshold, count_interval


def run_chain(wf: Path, data: str) -> None:
    cfg = workflow_copy(wf, data)
    cfg["split"] = {**cfg.get("split", {}), "val_from_test": 0.0}
    (wf / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2"], cwd=wf, text=True, capture_output=True
    )
    if r.returncode:
        sys.exit(f"the chain failed on {data}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def rows_of(wf: Path, dataset: str, targets: list[float]) -> list[dict]:
    out = []
    for d in sorted((wf / "results" / dataset / "models").glob("*/*")):
        calib = np.array(
            [r["score"] for r in read_scores(d / "crossfit.parquet") if r["label"] != "anomaly"]
        )
        preds = [json.loads(x) for x in (d / "predictions.jsonl").read_text().splitlines()]
        normal = np.array([p["score"] for p in preds if p["gt_label"] == "normal"])
        anomaly = np.array([p["score"] for p in preds if p["gt_label"] == "anomaly"])
        shift = score_shift(calib, normal)
        for alpha in targets:
            value, rate = conformal_threshold(calib, alpha)
            lo, hi = count_interval(rate, len(normal))
            flagged = int((normal >= value).sum())
            base = float(np.quantile(calib, 1 - alpha))
            out.append(
                {
                    "cat": d.name,
                    "model": d.parent.name,
                    "target": alpha,
                    "n": rate.n,
                    "stated": rate,
                    "realized": flagged / max(len(normal), 1),
                    "allowed": (lo, hi),
                    "n_test": len(normal),
                    "held": lo <= flagged <= hi,
                    "recall": float((anomaly >= value).mean()) if len(anomaly) else float("nan"),
                    "base_realized": float((normal >= base).mean()),
                    "base_recall": float((anomaly >= base).mean())
                    if len(anomaly)
                    else float("nan"),
                    "shift": shift.direction,
                    "shift_p": shift.p_value,
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", nargs="+", default=["weld", "demo"], choices=["weld", "demo"])
    ap.add_argument("--targets", nargs="+", type=float, default=[0.01, 0.05, 0.1])
    ap.add_argument("--keep", type=Path, help="keep the workflow copies here")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="fpr-"))
    summary = []
    for data in args.data:
        wf = root / data
        if not (wf / "results").exists():
            run_chain(wf, data)
        rows = rows_of(wf, data, args.targets)
        print(f"\n{data}: val_from_test 0 (thresholds on cross-fitted training normals alone)")
        print(
            f"{'category':10} {'model':10} {'target':>6} {'n':>4} {'stated (90%)':>20} "
            f"{'realized':>9} {'allowed':>9} {'held':>5} {'recall':>6} | {'quantile: realized':>18} "
            f"{'recall':>6} | shift"
        )
        for r in rows:
            s = r["stated"]
            flag = "" if s.attainable else " (n too small)"
            print(
                f"{r['cat']:10} {r['model']:10} {r['target']:>6.2f} {r['n']:>4} "
                f"{s.expected:>6.1%} ({s.low:.1%}-{s.high:.1%}) {r['realized']:>9.1%} "
                f"{r['allowed'][0]:>4}-{r['allowed'][1]:<4} {'yes' if r['held'] else 'NO':>5} "
                f"{r['recall']:>6.2f} | {r['base_realized']:>18.1%} {r['base_recall']:>6.2f} | "
                f"{r['shift']} (p={r['shift_p']:.2g}){flag}"
            )
        summary += [(data, r) for r in rows]
    held = sum(r["held"] for _, r in summary)
    print(
        f"\nstated rate held on the test normals in {held} of {len(summary)} (dataset x model x target)"
    )
    flagged = [r for _, r in summary if r["shift"] != "alike"]
    print(
        f"score shift flagged (test normals vs calibration normals, p < 0.01) in {len(flagged)} of "
        f"{len(summary)}; where it was, the stated rate held in "
        f"{sum(r['held'] for r in flagged)} of {len(flagged)}"
    )
    print(f"workflow copies: {root}")


if __name__ == "__main__":
    main()
