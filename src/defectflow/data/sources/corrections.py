"""Reviewed labels (`defectflow review pull`) that override earlier sources' records."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from defectflow.data.sources.base import SourceParams
from defectflow.errors import ManifestError
from defectflow.io import read_jsonl
from defectflow.records import Label, ManifestRecord, normalize_label


class CorrectionsSource(SourceParams):
    """Reviewed labels (``defectflow review pull``): JSON Lines of image_path, label, mask_path,
    defect_type. Each overrides the record of the same image from the sources before it."""

    type: Literal["corrections"] = Field(description="source type")
    path: str = Field(description="corrections file written by `defectflow review pull`")


def apply(records: list[ManifestRecord], path: Path) -> int:
    """Override label, mask and defect type of the records named in a corrections file (in
    place); a correction of an image no earlier source has is an error."""
    by_path = {str(Path(r.image_path).resolve()): r for r in records if r.image_path}
    changed = 0
    for line, row in read_jsonl(path):
        where = f"{path}:{line}"
        img = row.get("image_path")
        rec = by_path.get(str(Path(img).resolve())) if isinstance(img, str) else None
        if rec is None:
            raise ManifestError(
                f"{where}: {img!r} is not an image of the sources before it; "
                "was this file pulled for another dataset?"
            )
        label = normalize_label(row.get("label"))
        if label not in (Label.NORMAL, Label.ANOMALY):
            raise ManifestError(
                f"{where}: label {row.get('label')!r} is neither normal nor anomaly"
            )
        rec.label = label
        rec.mask_path = row.get("mask_path") if label == Label.ANOMALY else None
        rec.defect_type = (
            (row.get("defect_type") or rec.defect_type) if label == Label.ANOMALY else None
        )
        rec.meta = {**rec.meta, "reviewed": True}
        changed += 1
    return changed
