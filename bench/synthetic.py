"""Good images only: what each label-free choice of model costs, how far the synthetic catch
rate stands from the real recall, whether the stated false-alarm rate holds, and what the
synthetic defects add to the chain's time.

Runs the default chain with ``split: {val_from_test: 0}`` (no labelled defect reaches
calibration) on battery weld and the demo, with and without ``synthetic``, then reads every
model's files. Per category:
- the regret (best single model's test AUROC minus the chosen one's) of each label-free rule:
  the combined model (the default), the best synthetic AUROC, the spread heuristic
  (``selection_signal``), a fixed PatchCore;
- per model: the synthetic catch rate stated at the delivered threshold against the real recall
  on test, and the stated false-alarm rate against the realized one on test normals;
- chain wall time with and without synthetic defects, and the ratio.

    .venv/bin/python bench/synthetic.py [--data weld demo]
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, workflow_copy  # noqa: E402

SINGLE = ("knn", "padim", "patchcore")


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    neg, pos = np.sort(s[~y]), s[y]
    lo, hi = np.searchsorted(neg, pos, "left"), np.searchsorted(neg, pos, "right")
    return float((lo + (hi - lo) / 2).sum() / (len(neg) * len(pos)))


def run(data: str, root: Path, synthetic: bool) -> float:
    cfg = workflow_copy(root, data)
    cfg.setdefault("split", {})["val_from_test"] = 0
    cfg["synthetic"] = {"enabled": synthetic}
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    t = time.perf_counter()
    subprocess.run(
        [str(REPO / ".venv" / "bin" / "snakemake"), "--cores", "2", "-q"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t


def category_rows(root: Path, dataset: str) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    lb = {
        (r["category"], r["model"]): r
        for r in pq.read_table(root / f"results/{dataset}/leaderboard.parquet").to_pylist()
    }
    for d in sorted((root / f"results/{dataset}/models").glob("*/*")):
        model, cat = d.parent.name, d.name
        sc = pq.read_table(glob.glob(str(d / "scores" / "*.scores.parquet"))).to_pandas()
        y, s = (sc.label == "anomaly").to_numpy(), sc.score.to_numpy()
        t = json.loads((d / "infer_config.json").read_text())["threshold"]
        cr = t.get("catch_rate") or {}
        fa = t.get("false_alarms") or {}
        out.setdefault(cat, {})[model] = {
            "auroc": _auroc(y, s),
            "recall": float(np.mean(s[y] >= t["value"])),
            "realized_fa": float(np.mean(s[~y] >= t["value"])),
            "stated_fa": fa.get("expected"),
            "fa_band": (fa.get("low"), fa.get("high")),
            "catch": cr.get("expected"),
            "syn_auroc": cr.get("synthetic_auroc"),
            "picked": bool(lb[(cat, model)]["picked_without_test_labels"]),
            "signal": lb[(cat, model)]["selection_signal"],
        }
    return out


def report(dataset: str, rows: dict[str, dict[str, dict]]) -> None:
    for cat, models in rows.items():
        best = max(models[m]["auroc"] for m in SINGLE if m in models)
        rules = {
            "combined (default)": "combined",
            "synthetic AUROC": max(models, key=lambda m: models[m]["syn_auroc"] or -1),
            "spread heuristic": max(
                (m for m in SINGLE if m in models), key=lambda m: models[m]["signal"] or -9e9
            ),
            "fixed patchcore": "patchcore",
            "leaderboard pick": next(m for m in models if models[m]["picked"]),
        }
        print(f"\n{dataset}/{cat}: best single-model test AUROC {best:.3f}")
        for rule, m in rules.items():
            print(
                f"  {rule:20s} -> {m:10s} AUROC {models[m]['auroc']:.3f}  regret "
                f"{best - models[m]['auroc']:+.3f}"
            )
        print(
            "  model      AUROC  syn.AUROC  caught(syn) recall(real)  gap   FA stated "
            "[90%]        realized"
        )
        for m, r in sorted(models.items()):
            gap = None if r["catch"] is None else r["recall"] - r["catch"]
            print(
                f"  {m:10s} {r['auroc']:.3f}  {r['syn_auroc'] or float('nan'):.3f}      "
                f"{(r['catch'] or float('nan')):.2f}        {r['recall']:.2f}      "
                f"{(gap if gap is not None else float('nan')):+.2f}  {r['stated_fa']:.3f} "
                f"[{r['fa_band'][0]:.3f}-{r['fa_band'][1]:.3f}]  {r['realized_fa']:.3f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=["weld", "demo"])
    args = ap.parse_args()
    for data in args.data:
        dataset = "weld" if data == "weld" else "demo"
        with tempfile.TemporaryDirectory() as tmp:
            without = run(data, Path(tmp) / "without", synthetic=False)
            with_s = run(data, Path(tmp) / "with", synthetic=True)
            report(dataset, category_rows(Path(tmp) / "with", dataset))
            print(
                f"\n{dataset}: chain {with_s:.1f} s with synthetic defects, {without:.1f} s "
                f"without: {with_s / without:.2f}x"
            )


if __name__ == "__main__":
    main()
