"""Predict: raw scores + maps + the delivered threshold -> ``predictions.jsonl`` and heatmaps.
Cheap (no model is run): a threshold change reruns this, never the scoring."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from defectflow.artifacts.infer_config import InferConfig, read_infer_config
from defectflow.artifacts.predictions import PredictionRecord, write_predictions
from defectflow.artifacts.scores import read_maps, read_scores
from defectflow.artifacts.standardized import category_rows
from defectflow.maps import regions, round6, save_heatmap
from defectflow.preprocess import load_rgb
from defectflow.thresholds import normalize

log = logging.getLogger(__name__)


def record(cfg: InferConfig, image_id: str, image_path: str, score: float | None, norm_map: np.ndarray | None,
           image_size: tuple[int, int] | None, gt_label: str | None = None, defect_type: str | None = None,
           error: str | None = None, warnings: list[str] | None = None) -> PredictionRecord:  # fmt: skip
    """One prediction from a raw score (and normalized map): the pipeline and ``defectflow infer``
    build records here."""
    norm = None if score is None else float(normalize(score, cfg.threshold))
    return PredictionRecord(
        image_id=image_id, image_path=image_path, score=None if score is None else round6(score),
        normalized_score=None if norm is None else round6(norm),
        pred_label=None if norm is None else ("anomaly" if norm >= 0.5 else "normal"),
        gt_label=gt_label, defect_type=defect_type, model_id=cfg.model_id, error=error,
        regions=regions(norm_map, image_size) if norm_map is not None and image_size else [],
        warnings=warnings or [],
    )  # fmt: skip


def run_predict(infer_config: str | Path, scores: str | Path, maps: str | Path, table: str | Path, category: str,
                out: str | Path, heatmaps: str | Path) -> int:  # fmt: skip
    """Snakemake entry point."""
    cfg = read_infer_config(infer_config)
    raw = {r["image_id"]: r["score"] for r in read_scores(scores)}
    all_maps = read_maps(maps)
    heat_dir = Path(heatmaps)
    heat_dir.mkdir(parents=True, exist_ok=True)
    recs = []
    for r in category_rows(table, category, ("test",)):
        m = all_maps.get(r["image_id"])
        nm = normalize(m, cfg.threshold).astype(np.float32) if m is not None else None
        size = (r["width"], r["height"])
        rec = record(
            cfg,
            r["image_id"],
            r["image_path"],
            raw[r["image_id"]],
            nm,
            size,
            r["label"],
            r["defect_type"],
        )
        if nm is not None:
            rec.map_path = str(
                save_heatmap(nm, load_rgb(r["image_path"]), heat_dir / f"{r['image_id']}.png")
            )
        recs.append(rec)
    write_predictions(recs, out)
    log.info("%s: %d predictions, %d anomalies at threshold %.5g (%s)", category, len(recs),
             sum(r.pred_label == "anomaly" for r in recs), cfg.threshold.value, cfg.threshold.policy)  # fmt: skip
    return len(recs)
