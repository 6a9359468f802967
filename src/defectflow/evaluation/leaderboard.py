"""The leaderboard: one row per dataset x category x model, with quality, time and memory,
and the marks of the best model on test and the one picked without test labels."""

from __future__ import annotations

import contextlib
import csv
import re
import statistics
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from defectflow.artifacts.checkpoint import checkpoint_meta
from defectflow.artifacts.infer_config import read_infer_config
from defectflow.artifacts.metrics import read_metrics
from defectflow.io import atomic_path
from defectflow.models.backends import entry

METRICS = ("image_auroc", "image_aupr", "f1", "best_f1", "f1_gap", "pixel_auroc", "pixel_aupro")


COLUMNS = (
    "dataset",
    "category",
    "model",
    "variant_of",
    "seed",
    "backend",
    "backbone",
    "threshold",
    "threshold_policy",
    *METRICS,
    "fit_s",
    "score_s",
    "peak_mb",
    "model_mb",
    "auroc_mean_over_seeds",
    "auroc_std_over_seeds",
    "n_seeds",
    "best_on_test",
    "picked_without_test_labels",
    "selection_signal",
    "selection_rule",
)


def _bench(path: Path) -> dict[str, float]:
    """Seconds and peak RSS (MB) of a job from its Snakemake benchmark file (empty if absent)."""
    try:
        head, row = path.read_text().splitlines()[:2]
    except (OSError, ValueError):
        return {}
    rec = dict(zip(head.split("\t"), row.split("\t"), strict=False))
    out = {}
    for key in ("s", "max_rss"):
        with contextlib.suppress(KeyError, ValueError):
            out[key] = float(rec[key])
    return out


def leaderboard_rows(
    metrics_files: list[str], benchmarks: str | Path = "benchmarks"
) -> list[dict[str, Any]]:
    rows = []
    for f in sorted(metrics_files):
        m = read_metrics(f)
        folder = Path(f).parent
        bdir = Path(benchmarks) / m.dataset
        fit = _bench(bdir / "train" / f"{m.model}-{m.category}.tsv")
        scores = [
            _bench(p) for p in sorted((bdir / "score").glob(f"{m.model}-{m.category}-*-of-*.tsv"))
        ]
        ckpt = folder / "checkpoint.safetensors"
        params = checkpoint_meta(ckpt)["params"] if ckpt.exists() else {}
        backend = params.get("backend")
        signal, backbone = _signal_and_backbone(folder / "infer_config.json")
        labelled = _val_anomalies(folder / "infer_config.json")
        peak = [b["max_rss"] for b in [fit, *scores] if "max_rss" in b]
        rows.append(
            {
                "dataset": m.dataset,
                "category": m.category,
                "model": m.model,
                "backend": backend,
                "variant_of": params.get("variant_of") or m.model,
                "seed": params.get("seed"),
                "selection_signal": signal,
                "selection_rule": (
                    "val F1"
                    if labelled
                    else "combined: no labelled defects"
                    if backend and entry(backend).members
                    else None
                ),
                "backbone": backbone,
                "threshold": m.image.threshold,
                "threshold_policy": m.image.threshold_policy,
                "image_auroc": m.image.auroc,
                "image_aupr": m.image.aupr,
                "f1": m.image.f1,
                "best_f1": m.image.best_f1,
                "f1_gap": m.image.f1_gap,
                "pixel_auroc": m.pixel.auroc,
                "pixel_aupro": m.pixel.aupro,
                "fit_s": fit.get("s"),
                "score_s": sum(b["s"] for b in scores if "s" in b) if scores else None,
                "peak_mb": max(peak) if peak else None,
                "model_mb": round(ckpt.stat().st_size / 2**20, 3) if ckpt.exists() else None,
            }
        )
    rows = sorted(rows, key=lambda r: (r["dataset"], r["category"], r["model"]))
    _mark(rows)
    return rows


def _signal_and_backbone(infer_config: Path) -> tuple[float | None, str | None]:
    """What a choice that never looks at test labels ranks variants by (higher is better): the
    F1 on validation anomalies and cross-fit normals when there are validation anomalies; else
    minus the relative spread of the cross-fit normal scores, (p95 - median) / |median| (a model
    whose unseen normals score consistently; a heuristic, documented as such). With it, the id
    of the backbone the model runs on (its folder under ``results/backbones``; None for a model
    with its own network)."""

    if not infer_config.exists():
        return None, None
    ic = read_infer_config(infer_config, verify=False)
    backbone = Path(ic.backbone.path).parent.name if ic.backbone else None
    t = ic.threshold
    if t.n_anomaly and t.f1 is not None:
        return round(float(t.f1), 6), backbone
    s = t.normal_scores
    if not s or not s.get("median"):
        return None, backbone
    return round(-(s["p95"] - s["median"]) / abs(s["median"]), 6), backbone


def _val_anomalies(infer_config: Path) -> bool:
    if not infer_config.exists():
        return False
    t = read_infer_config(infer_config, verify=False).threshold
    return bool(t.n_anomaly and t.f1 is not None)


def _pick(cat_rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The model delivered without test labels. With labelled defects in val: the best F1 on
    them. Without (good images only): the combined model, whose test AUROC was within 0.01 of
    the best single model's or above it on every category measured, where every single-model
    signal without labels picked a weak model somewhere (README, "Good images only"); among
    several combined models, and where there is none, the spread heuristic."""
    labelled = [r for r in cat_rows if r["selection_rule"] == "val F1"]
    pool = labelled or [r for r in cat_rows if r["selection_rule"]] or cat_rows
    pool = [r for r in pool if r["selection_signal"] is not None] or pool
    if not pool:
        return None
    picked = max(
        pool, key=lambda r: (r["selection_signal"] is not None, r["selection_signal"] or 0)
    )
    if picked["selection_rule"] is None:
        picked["selection_rule"] = "spread heuristic: no labelled defects, no combined model"
    return picked


def _mark(rows: list[dict[str, Any]]) -> None:
    """Per category: the best variant on the test split, the one the label-free signal picks,
    and each variant's AUROC mean and spread over its seeds."""

    for cat in {(r["dataset"], r["category"]) for r in rows}:
        cat_rows = [r for r in rows if (r["dataset"], r["category"]) == cat]
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in cat_rows:
            groups.setdefault(re.sub(r"-s\d+$", "", r["model"]), []).append(r)
        for members in groups.values():
            vals = [r["image_auroc"] for r in members if r["image_auroc"] is not None]
            for r in members:
                r["n_seeds"] = float(len(members))
                r["auroc_mean_over_seeds"] = round(statistics.fmean(vals), 6) if vals else None
                r["auroc_std_over_seeds"] = (
                    round(statistics.pstdev(vals), 6) if len(vals) > 1 else 0.0
                )
        scored = [r for r in cat_rows if r["image_auroc"] is not None]
        best = max(scored, key=lambda r: r["image_auroc"], default=None)
        picked = _pick(cat_rows)
        for r in cat_rows:
            r["best_on_test"] = r is best
            r["picked_without_test_labels"] = r is picked


def write_leaderboard(
    rows: list[dict[str, Any]], out_parquet: str | Path, out_csv: str | Path
) -> None:
    table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=_schema())
    with atomic_path(out_parquet) as tmp:
        pq.write_table(table, tmp)
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows({c: r.get(c) for c in COLUMNS} for r in rows)


def _schema():
    text = {
        "dataset",
        "category",
        "model",
        "variant_of",
        "backend",
        "backbone",
        "threshold_policy",
        "selection_rule",
    }
    flags = {"best_on_test", "picked_without_test_labels"}
    return pa.schema(
        [
            (c, pa.string() if c in text else pa.bool_() if c in flags else pa.float64())
            for c in COLUMNS
        ]
    )


def run_leaderboard(
    metrics_files: list[str],
    out_parquet: str | Path,
    out_csv: str | Path,
    benchmarks: str | Path = "benchmarks",
) -> list[dict[str, Any]]:
    """Snakemake entry point."""
    rows = leaderboard_rows(metrics_files, benchmarks)
    write_leaderboard(rows, out_parquet, out_csv)
    return rows


# -- the registry ---------------------------------------------------------------------------
