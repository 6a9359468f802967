"""Score: a checkpoint alone on a category's test images -> raw scores + smoothed maps (no
threshold: changing the threshold never reruns this)."""

from __future__ import annotations

import logging
from pathlib import Path

from defectflow import backends
from defectflow.artifacts.checkpoint import load_checkpoint
from defectflow.artifacts.scores import write_maps, write_scores
from defectflow.detector import score_with_maps
from defectflow.inputs import load_inputs
from defectflow.threads import set_threads

log = logging.getLogger(__name__)


def run_score(checkpoint: str | Path, table: str | Path, feature_files: list[str], category: str,
              out_size: int, sigma: float, out_scores: str | Path, out_maps: str | Path,
              threads: int = 1) -> int:  # fmt: skip
    """Snakemake entry point."""
    set_threads(threads)
    backend = load_checkpoint(checkpoint)
    entry = backends.entry(backend.name)
    out_size = int(backend.extra_meta().get("image_size", out_size))
    data, rows = load_inputs(entry.consumes, table, category, feature_files, out_size, ("test",))
    scores, maps = score_with_maps(backend, data, out_size, sigma, desc=f"score {category}")
    write_scores(out_scores, [{"image_id": r["image_id"], "split": r["split"], "label": r["label"], "fold": -1,
                               "score": float(s)} for r, s in zip(rows, scores, strict=True)])  # fmt: skip
    write_maps(out_maps, maps)
    log.info("%s: scored %d test images (%d maps)", category, len(rows), len(maps))
    return len(rows)
