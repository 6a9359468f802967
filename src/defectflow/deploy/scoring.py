"""Score: a checkpoint alone on the test images of one shard of a category -> raw scores +
smoothed maps (no threshold: changing the threshold never reruns this)."""

from __future__ import annotations

import logging
from pathlib import Path

from defectflow import device as dev
from defectflow.artifacts.checkpoint import load_checkpoint
from defectflow.artifacts.scores import write_maps, write_scores
from defectflow.artifacts.standardized import category_rows
from defectflow.deploy.detector import score_with_maps
from defectflow.features.stored import load_inputs
from defectflow.models import backends
from defectflow.sharding import shard_rows
from defectflow.threads import set_threads

log = logging.getLogger(__name__)


def run_score(
    checkpoint: str | Path,
    table: str | Path,
    feature_file: str | None,
    *,
    category: str,
    shard: int,
    n_shards: int,
    out_size: int,
    sigma: float,
    out_scores: str | Path,
    out_maps: str | Path,
    threads: int = 1,
    device: str = "cpu",
) -> int:
    """Snakemake entry point: the test images of one shard of a category (the shard's stored
    features, or its image files), so memory per job is bounded by ``backbone.shard_size``."""
    set_threads(threads)

    dev.use(device)
    ids = {r["image_id"] for r in shard_rows(category_rows(table, category), shard, n_shards)}
    test = [r for r in category_rows(table, category, ("test",)) if r["image_id"] in ids]
    scores, maps, rows = [], {}, []
    if test:  # a shard may hold training images only
        backend = load_checkpoint(checkpoint)
        entry = backends.entry(backend.name)
        out_size = int(backend.extra_meta().get("image_size", out_size))
        files = [feature_file] if feature_file else []
        data, rows = load_inputs(
            entry.consumes,
            table,
            category,
            feature_files=files,
            image_size=out_size,
            splits=("test",),
            ids=ids,
            patches=entry.patches,
        )
        scores, maps = score_with_maps(
            backend, data, out_size, sigma, desc=f"score {category} {shard + 1}/{n_shards}"
        )
    write_scores(
        out_scores,
        [
            {
                "image_id": r["image_id"],
                "split": r["split"],
                "label": r["label"],
                "fold": -1,
                "score": float(s),
            }
            for r, s in zip(rows, scores, strict=True)
        ],
    )
    write_maps(out_maps, maps)
    log.info(
        "%s shard %d/%d: scored %d test images (%d maps)",
        category,
        shard + 1,
        n_shards,
        len(rows),
        len(maps),
    )
    return len(rows)
