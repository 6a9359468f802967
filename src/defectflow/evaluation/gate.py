"""Comparing runs: the difference of two runs' rows, and the gate that fails when a metric drops."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from defectflow.errors import DefectflowError
from defectflow.evaluation.leaderboard import METRICS
from defectflow.evaluation.registry import load_registry, runs_of
from defectflow.tables import read_parquet


def _pick(
    rows: list[dict[str, Any]], run: str, datasets: set[str] | None = None
) -> list[dict[str, Any]]:
    """One run's rows; ``datasets``: only runs (and rows) of these datasets count, so
    ``latest``/``previous`` never name a run of another dataset."""
    if datasets:
        rows = [r for r in rows if r["dataset"] in datasets]
    ids = [s["run_id"] for s in runs_of(rows)]
    if run == "latest" and ids:
        run = ids[-1]
    if run == "previous" and len(ids) > 1:
        run = ids[-2]
    match = [i for i in ids if i == run or i.startswith(run)]
    if len(match) != 1:
        raise DefectflowError(
            f"run {run!r} {'is ambiguous' if match else 'is not in the registry'}; "
            f"known: {', '.join(ids[-5:]) or 'none'}"
        )
    return [r for r in rows if r["run_id"] == match[0]]


def baseline_rows(
    baseline: str, registry: str | Path, datasets: set[str] | None = None
) -> list[dict[str, Any]]:
    """A run id (or prefix, or latest/previous) in the registry, or a leaderboard file;
    ``datasets``: of these datasets only (the run being compared)."""
    path = Path(baseline)
    if path.suffix in (".parquet", ".csv") and path.is_file():
        if path.suffix == ".csv":
            with open(path, newline="") as fh:
                return [
                    {
                        k: (float(v) if k in METRICS and v not in ("", None) else (v or None))
                        for k, v in row.items()
                    }
                    for row in csv.DictReader(fh)
                ]

        return read_parquet(path).to_pylist()
    return _pick(load_registry(registry), baseline, datasets)


def _key(r: dict[str, Any]) -> tuple[str, str, str]:
    return (r["dataset"], r["category"], r["model"])


def diff(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """Config differences and metric deltas (b - a) per dataset x category x model."""

    def cfg(rows):
        return json.loads(rows[0]["config"]) if rows and rows[0].get("config") else {}

    def flat(d, prefix=""):
        out = {}
        for k, v in (d or {}).items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    ca, cb = flat(cfg(a)), flat(cfg(b))
    changes = {
        k: [ca.get(k), cb.get(k)] for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)
    }
    ia, ib = {_key(r): r for r in a}, {_key(r): r for r in b}
    deltas = []
    for k in sorted(set(ia) | set(ib)):
        ra, rb = ia.get(k), ib.get(k)
        d = {
            "dataset": k[0],
            "category": k[1],
            "model": k[2],
            "only_in": None if ra and rb else ("a" if ra else "b"),
        }
        for m in METRICS:
            va, vb = (ra or {}).get(m), (rb or {}).get(m)
            d[m] = {
                "a": va,
                "b": vb,
                "delta": None if va is None or vb is None else round(vb - va, 6),
            }
        deltas.append(d)
    return {"config_changes": changes, "metrics": deltas}


def gate(
    current: list[dict[str, Any]],
    baseline: list[dict[str, Any]],
    metric: str = "image_auroc",
    max_drop: float = 0.01,
) -> list[dict[str, Any]]:
    """The rows whose ``metric`` dropped by more than ``max_drop`` against the baseline (a row
    missing from the current run counts as a drop)."""
    higher_is_better = [m for m in METRICS if m != "f1_gap"]
    if metric not in higher_is_better:
        raise DefectflowError(
            f"metric {metric!r} cannot gate; one of {', '.join(higher_is_better)}"
        )
    cur = {_key(r): r for r in current}
    failed = []
    for r in baseline:
        base = r.get(metric)
        if base is None:
            continue
        now = cur.get(_key(r), {}).get(metric)
        if now is None or base - now > max_drop + 1e-12:
            failed.append(
                {
                    "dataset": r["dataset"],
                    "category": r["category"],
                    "model": r["model"],
                    "baseline": base,
                    "current": now,
                    "drop": None if now is None else round(base - now, 6),
                }
            )
    return failed
