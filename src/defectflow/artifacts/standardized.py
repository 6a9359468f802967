"""``standardized.parquet``: one row per usable image (the table every later stage reads)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from defectflow.records import Label, Split
from defectflow.tables import read_columns, read_table, write_table


class StandardizedRow(BaseModel):
    """One row of ``standardized.parquet``."""

    model_config = ConfigDict(extra="forbid")
    image_id: str = Field(
        description="stable id: category, file stem and a hash of the source-relative path"
    )
    category: str
    split: Split
    split_assigned: bool = Field(description="true when defectflow assigned the split")
    label: Label | None = Field(description="null only for unlabeled test images")
    defect_type: str | None
    image_path: str
    mask_path: str | None
    rel_path: str
    sha256: str
    width: int
    height: int
    channels: int
    mode: str
    bit_depth: int
    mask_fraction: float | None
    group_id: str | None
    source_file: str
    source_line: int | None
    source_type: str


def write_standardized(path: str | Path, rows: list[dict[str, Any]]) -> None:
    write_table(path, rows, StandardizedRow, "standardized_row")


def read_standardized(path: str | Path) -> list[dict[str, Any]]:
    """Read ``standardized.parquet`` (types and rows checked against the schema)."""
    return read_table(path, StandardizedRow, "standardized_row")


def category_rows(
    path: str | Path, category: str, splits: tuple[str, ...] | None = None
) -> list[dict[str, Any]]:
    """The rows of one category (optionally of some splits), in table order."""
    return [
        r
        for r in read_standardized(path)
        if r["category"] == category and (splits is None or r["split"] in splits)
    ]


def category_counts(path: str | Path) -> dict[str, int]:
    """Category -> number of images of ``standardized.parquet``, its columns checked against
    the schema first (what the workflow's input functions read to plan the jobs)."""
    column = read_columns(path, StandardizedRow, ["category"])["category"].to_pylist()
    return dict(sorted(Counter(column).items()))
