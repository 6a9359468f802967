"""How a category's images split into embedding jobs (no torch: the Snakefile uses this while
building the DAG)."""

from __future__ import annotations

import math
from typing import Any


def n_shards(n_rows: int, shard_size: int) -> int:
    """Embedding jobs for ``n_rows`` images (at least one)."""
    return max(1, math.ceil(n_rows / shard_size))


def shard_rows(rows: list[dict[str, Any]], shard: int, n: int) -> list[dict[str, Any]]:
    """Shard ``shard`` of ``n`` near-equal contiguous parts (depends only on the shard count, so
    a shard file's content is fixed by its name ``shard-I-of-N``)."""
    size = math.ceil(len(rows) / n) if rows else 0
    return rows[shard * size : (shard + 1) * size]
