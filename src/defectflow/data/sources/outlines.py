"""COCO and YOLO labels as a dataset source, normalized into manifest records.

An image with an object of a defect class is an anomaly. Its mask is the union of those objects,
drawn from their polygons (COCO ``segmentation`` polygons or RLE, YOLO segmentation and
oriented-box lines) and, where an object has no outline, from its box; its defect type is the
class of its largest object. An image without one is normal: for YOLO that includes an image
with an empty label file or none at all (the Ultralytics convention for "no objects").

What the formats leave to the reader is answered, never skipped silently:
- a YOLO label file whose image does not exist becomes a ``LABEL_ORPHAN`` record, and a COCO
  image whose file is missing a record that preflight reports as ``IMAGE_MISSING``;
- an object that cannot be drawn (a malformed line, a box outside its image, a class the
  dataset does not name, an annotation of an unknown image) stops ingest with a
  :class:`ManifestError` of code ``LABELS_INVALID`` naming the file and the line or annotation.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pydantic import Field

from defectflow.data.sources.base import SourceParams
from defectflow.errors import ManifestError
from defectflow.manifests import group_from
from defectflow.records import Label, ManifestRecord, SourceRef

log = logging.getLogger(__name__)
_EPS = 1e-3  # relative slack for YOLO coordinates that touch the border (exporters round)
_PX = 0.5  # pixel slack for COCO boxes that touch the border


class DetectionParams(SourceParams):
    category: str | None = Field(
        default=None,
        description="category of every image (default: the folder's name, or the nearest folder "
        "above it whose name is not generic: `line4/images` -> `line4`)",
    )
    split: str | None = Field(
        default=None, description="split for every image (train|val|test; null: assigned)"
    )
    defect_classes: list[str] | None = Field(
        default=None,
        description="class names that are defects (default: every class); boxes of other classes are ignored",
    )
    group_regex: str | None = Field(
        default=None,
        description="regex on the file name whose first group (or whole match) is the `group_id` (e.g. one physical part)",
    )


class LabelsInvalid(ManifestError):
    """A label (COCO annotation, YOLO line) cannot be read as the format defines it."""

    code = "LABELS_INVALID"


@dataclass
class Object:
    """One labelled object in pixel coordinates: polygons (lists of (x, y)), else a box."""

    cls: str
    polygons: list[list[tuple[float, float]]] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None  # x, y, w, h
    rle: np.ndarray | None = None  # a decoded mask (COCO RLE)

    def area(self) -> float:
        if self.rle is not None:
            return float(self.rle.sum())
        if self.polygons:
            return sum(polygon_area(p) for p in self.polygons)
        return self.box[2] * self.box[3] if self.box else 0.0


def polygon_area(pts: list[tuple[float, float]]) -> float:
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def draw(objects: list[Object], width: int, height: int, out: Path) -> str:
    """The union of the objects as an 8-bit mask PNG (255 = defect)."""

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    extra = np.zeros((height, width), bool)
    for o in objects:
        if o.rle is not None:
            if o.rle.shape == extra.shape:
                extra |= o.rle
            continue
        for poly in o.polygons:
            draw.polygon(poly, fill=255, outline=255)
        if not o.polygons and o.box is not None:
            x, y, w, h = o.box
            x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
            x1, y1 = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
            if x1 > x0 and y1 > y0:
                draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=255)
    mask = np.asarray(canvas).copy()
    mask[extra] = 255
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(out)
    return str(out.resolve())


def image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None  # preflight reports the image itself


#: folder names that say what a folder holds, not which product: a category is named further up
GENERIC_FOLDERS = {"images", "imgs", "img", "image", "train", "val", "valid", "test", "data"}


def default_category(root: Path) -> str:
    """A source's category when the config names none: its folder's name, or the nearest
    folder above that is not a generic one (``line4/images`` -> ``line4``)."""
    for folder in (root, *root.resolve().parents):
        if folder.name and folder.name.lower() not in GENERIC_FOLDERS:
            return folder.name
    return root.name


def check_defect_classes(src: DetectionParams, known: list[str | None], where: Path) -> None:
    """Every class named in ``defect_classes`` must be one the labels define (a typo would make
    every image normal without a word)."""
    if src.defect_classes is None:
        return
    names = sorted({k for k in known if k is not None})
    unknown = [c for c in src.defect_classes if c not in names]
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise LabelsInvalid(
            f"{where}: defect_classes names {unknown}, which its labels do not define{hint} "
            f"Classes: {names}",
            file=str(where),
        )


def check_some_defect(
    records: list[ManifestRecord], n_objects: int, src: DetectionParams, where: Path
) -> None:
    """Labels with objects of which none makes a defect (every one of a class left out by
    ``defect_classes``) would make every image normal: an error, not a warning about test
    anomalies later."""
    if n_objects and not any(r.label == Label.ANOMALY for r in records):
        raise LabelsInvalid(
            f"{where}: its labels hold {n_objects} objects, none of a defect class "
            f"(defect_classes: {src.defect_classes}); every image would be normal. Name the "
            "defect classes, or leave defect_classes out (every class is a defect)",
            file=str(where),
        )


def record(
    img: Path,
    objects: list[Object],
    size: tuple[int, int] | None,
    src: DetectionParams,
    root: Path,
    kind: str,
    where: SourceRef,
    mask_dir: Path,
    meta: dict[str, Any],
) -> ManifestRecord:
    wanted = set(src.defect_classes) if src.defect_classes is not None else None
    defects = [o for o in objects if wanted is None or o.cls in wanted]
    try:
        rel = img.relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = img.name
    mask_path, defect = None, None
    drawable = [o for o in defects if o.polygons or o.box or o.rle is not None]
    if defects:
        defect = max(defects, key=lambda o: o.area()).cls
        if drawable and size is not None:
            key = hashlib.sha256(f"{kind}:{root}:{rel}".encode()).hexdigest()[:12]
            mask_path = draw(drawable, size[0], size[1], mask_dir / f"{img.stem}-{key}.png")
    return ManifestRecord(
        image_path=str(img),
        category=src.category or default_category(root),
        split=src.split,
        label=Label.ANOMALY if defects else Label.NORMAL,
        mask_path=mask_path,
        defect_type=defect,
        group_id=group_from(src.group_regex, rel),
        rel_path=rel,
        meta={**meta, "objects": len(defects)},
        source=where,
    )


def orphan(label_file: Path, kind: str, category: str, why: str) -> ManifestRecord:
    """A label file with no image (preflight: ``LABEL_ORPHAN``)."""
    return ManifestRecord(
        image_path=None,
        category=category,
        rel_path=label_file.name,
        meta={"orphan_label": str(label_file), "why": why},
        source=SourceRef(file=str(label_file), type=kind),
    )
