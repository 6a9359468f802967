"""A manifest file (JSONL, CSV or Parquet) with one record per image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from defectflow.data.sources.base import SourceParams
from defectflow.errors import ManifestError
from defectflow.manifests import column_map, group_from, iter_rows, rel, resolve
from defectflow.records import Label, ManifestRecord, SourceRef, normalize_label, normalize_split


class ManifestSource(SourceParams):
    """A manifest file (JSONL, CSV or Parquet) with one record per image."""

    type: Literal["manifest"] = Field(description="source type")
    path: str = Field(description="manifest file; relative image paths are relative to `root`")
    format: Literal["auto", "jsonl", "csv", "parquet"] = Field(
        default="auto", description="file format; `auto` decides by extension"
    )
    root: str | None = Field(
        default=None, description="base folder of relative paths (default: the manifest's folder)"
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="map of defectflow field -> column name in this file, for names the alias table does not know",
    )
    category: str | None = Field(default=None, description="category for records that have none")
    split: str | None = Field(
        default=None, description="split for records that have none (train|val|test)"
    )
    group_regex: str | None = Field(
        default=None,
        description="regex on the file name whose first group (or whole match) is the `group_id` (e.g. one physical part)",
    )


def read(src: ManifestSource, **_: Any) -> list[ManifestRecord]:
    """Read a manifest file into records, mapping third-party field names."""
    path = Path(src.path)
    if not path.is_file():
        raise ManifestError(
            f"manifest {path} does not exist (from config source `path`); check the path"
        )
    root = Path(src.root) if src.root else path.parent
    rows = list(iter_rows(path, src.format))
    if not rows:
        raise ManifestError(
            f"{path}: the manifest has no records (empty, or a CSV header alone)", file=str(path)
        )
    columns = list(dict.fromkeys(k for _, r in rows for k in r if k is not None))
    cmap = column_map(columns, src.fields, str(path))
    if not any(r.get(cmap["image_path"]) not in (None, "") for _, r in rows):
        raise ManifestError(
            f"{path}: column {cmap['image_path']!r} is empty in every record: no record names an image; "
            "map the right column with `fields: {image_path: <column>}`",
            file=str(path),
            line=rows[0][0],
        )
    mapped_cols = set(cmap.values())
    records = []
    for lineno, row in rows:

        def get(field: str, row: dict[str, Any] = row) -> Any:
            return row.get(cmap[field]) if field in cmap else None

        label = normalize_label(get("label"))
        defect = get("defect_type")
        defect = None if defect is None or str(defect).strip() == "" else str(defect)
        if label == Label.NORMAL or (
            defect is not None and normalize_label(defect) == Label.NORMAL
        ):
            defect = None if label != Label.ANOMALY else defect
        meta = get("meta") if isinstance(get("meta"), dict) else {}
        meta = {
            **meta,
            **{k: v for k, v in row.items() if k not in mapped_cols and v not in (None, "")},
        }
        image = resolve(root, get("image_path"))
        rel_path = rel(root, image) if image else None
        category = get("category")
        records.append(
            ManifestRecord(
                image_path=image,
                category=str(category) if category not in (None, "") else src.category,
                split=normalize_split(get("split")) or normalize_split(src.split),
                label=label,
                mask_path=resolve(root, get("mask_path")),
                defect_type=defect,
                group_id=str(get("group_id"))
                if get("group_id") not in (None, "")
                else group_from(src.group_regex, rel_path),
                rel_path=rel_path,
                meta=json.loads(json.dumps(meta, default=str)),
                source=SourceRef(file=str(path), line=lineno, type="manifest"),
            )
        )
    return records
