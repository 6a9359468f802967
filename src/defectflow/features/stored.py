"""What a backend consumes, loaded for a category: stored features or image files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from defectflow.artifacts.embeddings import load_features
from defectflow.artifacts.standardized import category_rows
from defectflow.errors import ModelError
from defectflow.models.backends.base import Images

FIT_SPLITS = ("train", "val")


def load_inputs(
    consumes: str,
    table: str | Path,
    category: str,
    *,
    feature_files: list[str],
    image_size: int,
    splits: tuple[str, ...],
    ids: set[str] | None = None,
    select: Callable[[dict[str, Any]], bool] | None = None,
    patches: bool = True,
) -> tuple[Any, list[dict[str, Any]]]:
    """A category's inputs of the given splits (stored features, or image files) and their rows
    (the table's: its labels are the truth); ``ids``: only these images (one shard); ``select``:
    only the rows it accepts; ``patches=False``: image embeddings only."""
    rows = {
        r["image_id"]: r
        for r in category_rows(table, category, splits)
        if (ids is None or r["image_id"] in ids) and (select is None or select(r))
    }
    if consumes == "features":
        data, _, _, _ = load_features(feature_files, splits, ids=set(rows), patches=patches)
        missing = set(rows) - set(data.ids)
        if missing:
            raise ModelError(
                f"{len(missing)} images of {category!r} have no stored features; re-run embed"
            )
        return data, [rows[i] for i in data.ids]
    ordered = list(rows.values())
    return Images(
        [r["image_id"] for r in ordered], [r["image_path"] for r in ordered], image_size
    ), ordered
