"""The source registry: each source type is one module here with its typed params (its keys in
the config) and its reader; adding a format is one new module and one line below.

A reader takes its params (and, where it needs them, ``mask_dir`` for drawn masks and
``demo_dir``) and returns manifest records; ``corrections`` is applied to the records of the
sources before it instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field

from defectflow.data.sources import coco, corrections, folder, manifest, mvtec, yolo
from defectflow.data.sources.base import SourceParams
from defectflow.errors import DefectflowError
from defectflow.records import ManifestRecord


@dataclass(frozen=True)
class SourceType:
    params: type[SourceParams]
    read: Callable[..., list[ManifestRecord]] | None  # None: applied to earlier records
    labels_file: bool = False  # a second file besides `path` (COCO's labels), an input too
    draws_masks: bool = False  # writes masks drawn from its objects under the ingest's mask folder


REGISTRY: dict[str, SourceType] = {
    "manifest": SourceType(manifest.ManifestSource, manifest.read),
    "mvtec": SourceType(mvtec.MvtecSource, mvtec.read),
    "folder": SourceType(folder.FolderSource, folder.read),
    "coco": SourceType(coco.CocoSource, coco.read, labels_file=True, draws_masks=True),
    "yolo": SourceType(yolo.YoloSource, yolo.read, draws_masks=True),
    "corrections": SourceType(corrections.CorrectionsSource, None),
    "demo": SourceType(mvtec.DemoSource, mvtec.read_demo),
}

#: a dataset's source entry in the config: one of the registered types, chosen by `type`
Source = Annotated[
    Union[tuple(t.params for t in REGISTRY.values())],  # noqa: UP007 - built from the registry
    Field(discriminator="type"),
]


def guess(path: Path) -> list[dict[str, Any]]:
    """The sources of a path given on the command line: a manifest or COCO labels file; a YOLO
    dataset (a data.yaml, or images/ beside labels/); a folder with COCO labels (at its top or in
    annotations/); an MVTec layout; else a good/ + defect-folder layout."""
    if path.is_file():
        if coco.is_labels_file(path):
            images = path.parent / "images"
            return [
                {
                    "type": "coco",
                    "labels": str(path),
                    "path": str(images if images.is_dir() else path.parent),
                }
            ]
        return [{"type": "manifest", "path": str(path)}]
    if not path.is_dir():
        raise DefectflowError(
            f"{path} does not exist; give a manifest file (JSONL/CSV/Parquet), COCO labels or a folder"
        )
    if yolo.find_yaml(path, None) is not None or (
        (path / "images").is_dir() and (path / "labels").is_dir()
    ):
        return [{"type": "yolo", "path": str(path)}]
    found = [
        p
        for d in (path, path / "annotations")
        if d.is_dir()
        for p in sorted(d.glob("*.json"))
        if coco.is_labels_file(p)
    ]
    if found:
        images = path / "images"
        return [
            {"type": "coco", "labels": str(p), "path": str(images if images.is_dir() else path)}
            for p in found
        ]
    if mvtec.mvtec_categories(path):
        return [{"type": "mvtec", "path": str(path)}]
    return [{"type": "folder", "path": str(path)}]


def read_source(src: Any, **context: Any) -> list[ManifestRecord]:
    """The records of one source (not ``corrections``)."""
    return REGISTRY[src.type].read(src, **context)  # type: ignore[misc]
