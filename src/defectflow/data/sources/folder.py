"""A plain folder: `good/` beside one folder per defect type."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from defectflow.data.sources.base import SourceParams, find_mask, images_in
from defectflow.errors import ManifestError
from defectflow.manifests import group_from
from defectflow.records import Label, ManifestRecord, SourceRef


class FolderSource(SourceParams):
    """A plain folder: `good/` (normal images) beside one folder per defect type; no splits."""

    type: Literal["folder"] = Field(description="source type")
    path: str = Field(description="folder holding `good/` and one folder per defect type")
    category: str | None = Field(
        default=None, description="category name (default: the folder's name)"
    )
    normal_dirs: list[str] = Field(
        default_factory=lambda: ["good", "normal", "ok"],
        description="folder names that hold normal images",
    )
    mask_dir: str | None = Field(
        default=None,
        description="folder of masks mirroring the defect folders (`<type>/<stem>[_mask].png`)",
    )
    group_regex: str | None = Field(
        default=None,
        description="regex on the file name whose first group (or whole match) is the `group_id` (e.g. one physical part)",
    )


def read(src: FolderSource, **_: Any) -> list[ManifestRecord]:
    """Read a ``good/`` + ``<defect_type>/`` folder layout (no splits: they are assigned later)."""
    root = Path(src.path)
    if not root.is_dir():
        raise ManifestError(f"folder {root} does not exist; check the source `path`")
    mask_root = Path(src.mask_dir) if src.mask_dir else None
    skip = {"ground_truth", "masks", "mask"}
    if mask_root is not None:
        skip.add(mask_root.name)
    normal_dirs = {d.lower() for d in src.normal_dirs}
    records = []
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() not in skip)
    if not any(p.name.lower() in normal_dirs for p in subdirs):
        raise ManifestError(
            f"{root}: no folder of normal images (one of {sorted(normal_dirs)}) found; set `normal_dirs`"
        )
    for sub in subdirs:
        normal = sub.name.lower() in normal_dirs
        for img in images_in(sub):
            mask = None
            if not normal and mask_root is not None:
                mask = find_mask(mask_root / sub.name, img.stem)
            rel = img.relative_to(root).as_posix()
            records.append(
                ManifestRecord(
                    image_path=str(img.resolve()),
                    category=src.category or root.name,
                    label=Label.NORMAL if normal else Label.ANOMALY,
                    mask_path=str(mask.resolve()) if mask else None,
                    defect_type=None if normal else sub.name,
                    group_id=group_from(src.group_regex, rel),
                    rel_path=rel,
                    source=SourceRef(file=str(root), type="folder"),
                )
            )
    return records
