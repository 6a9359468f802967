"""Which images get stored features, and how they split into embedding jobs (no torch: the
Snakefile uses this while building the DAG)."""

from __future__ import annotations

import math
from typing import Any

#: splits whose features are stored (fitting and calibration); test images are scored by the
#: delivered model from the image files
FIT_SPLITS = ("train", "val")


def n_shards(n_rows: int, shard_size: int) -> int:
    """Embedding jobs for ``n_rows`` images (at least one)."""
    return max(1, math.ceil(n_rows / shard_size))


def fit_rows(rows: list[dict[str, Any]], category: str) -> list[dict[str, Any]]:
    """The rows whose features are stored: train + val of one category, in table order."""
    return [r for r in rows if r["category"] == category and r["split"] in FIT_SPLITS]


def shard_rows(rows: list[dict[str, Any]], shard: int, shard_size: int) -> list[dict[str, Any]]:
    return rows[shard * shard_size : (shard + 1) * shard_size]
