"""Predict: raw scores + maps + the delivered threshold -> ``predictions.jsonl`` and heatmaps.
Cheap (no model is run): a threshold change reruns this, never the scoring."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from defectflow.artifacts.infer_config import read_infer_config
from defectflow.artifacts.predictions import write_predictions
from defectflow.artifacts.scores import read_maps, read_scores
from defectflow.artifacts.standardized import category_rows
from defectflow.detector import record
from defectflow.maps import save_heatmap
from defectflow.preprocess import load_rgb
from defectflow.thresholds import normalize

log = logging.getLogger(__name__)


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
