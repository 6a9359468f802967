"""Predict: raw scores + maps + the delivered threshold -> ``predictions.jsonl`` and heatmaps.
Cheap (no model is run): a threshold change reruns this, never the scoring."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from defectflow.artifacts.infer_config import normalize, read_infer_config
from defectflow.artifacts.predictions import write_predictions
from defectflow.artifacts.scores import read_maps, read_scores
from defectflow.artifacts.standardized import category_rows
from defectflow.deploy.detector import record
from defectflow.deploy.maps import save_heatmap
from defectflow.errors import ModelError
from defectflow.features.preprocess import load_rgb

log = logging.getLogger(__name__)


def run_predict(
    infer_config: str | Path,
    scores: list[str],
    maps: list[str],
    *,
    table: str | Path,
    category: str,
    out: str | Path,
    heatmaps: str | Path,
) -> int:
    """Snakemake entry point: the per-shard raw scores and maps (one shard in memory at a time)
    -> one ``predictions.jsonl`` in the table's order, and a heatmap per image with a map."""
    cfg = read_infer_config(infer_config)
    rows = {r["image_id"]: r for r in category_rows(table, category, ("test",))}
    heat_dir = Path(heatmaps)
    heat_dir.mkdir(parents=True, exist_ok=True)
    recs = []
    for score_file, map_file in zip(sorted(map(str, scores)), sorted(map(str, maps)), strict=True):
        shard_maps = read_maps(map_file)
        for s in read_scores(score_file):
            r = rows.pop(s["image_id"])
            m = shard_maps.get(r["image_id"])
            nm = normalize(m, cfg.threshold).astype(np.float32) if m is not None else None
            rec = record(
                cfg,
                r["image_id"],
                r["image_path"],
                s["score"],
                nm,
                (r["width"], r["height"]),
                r["label"],
                r["defect_type"],
            )
            if nm is not None:
                rec.map_path = str(
                    save_heatmap(nm, load_rgb(r["image_path"]), heat_dir / f"{r['image_id']}.png")
                )
            recs.append(rec)
    if rows:
        raise ModelError(
            f"{len(rows)} test images of {category!r} have no score (e.g. {next(iter(rows))}); "
            "re-run the score rule"
        )
    write_predictions(recs, out)
    log.info(
        "%s: %d predictions, %d anomalies at threshold %.5g (%s)",
        category,
        len(recs),
        sum(r.pred_label == "anomaly" for r in recs),
        cfg.threshold.value,
        cfg.threshold.policy,
    )
    return len(recs)
