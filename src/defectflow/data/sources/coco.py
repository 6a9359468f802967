"""COCO labels: polygons, RLE masks and boxes (a 5-number box is a rotated one)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from defectflow.data.sources.outlines import (
    DetectionParams,
    LabelsInvalid,
    Object,
    check_defect_classes,
    check_some_defect,
    image_size,
    record,
)
from defectflow.errors import ManifestError
from defectflow.io import read_json_document
from defectflow.records import ManifestRecord, SourceRef

log = logging.getLogger(__name__)
_PX = 0.5  # pixel slack for COCO boxes that touch the border


class CocoSource(DetectionParams):
    """COCO labels: an image with an annotation of a defect class is an anomaly (its mask is
    the union of their polygons or RLE masks, boxes where an annotation has no outline; its
    defect type the class of the largest); without one, normal."""

    type: Literal["coco"] = Field(description="source type")
    path: str = Field(description="folder of the images (`file_name` is relative to it)")
    labels: str = Field(description="COCO instances JSON (`images`, `annotations`, `categories`)")


def _numbers(value: Any, where: str, what: str) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise LabelsInvalid(f"{where}: `{what}` is not a list of numbers: {str(value)[:80]}")
    return [float(v) for v in value]


def _rle_counts(counts: str) -> list[int]:
    """COCO's compressed RLE string (the LEB128-like code of pycocotools) -> run lengths."""
    out: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def _rle_mask(seg: dict[str, Any], where: str) -> np.ndarray:
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2):
        raise LabelsInvalid(f"{where}: RLE `segmentation` has no `size: [height, width]`")
    h, w = int(size[0]), int(size[1])
    if isinstance(counts, str):
        runs = _rle_counts(counts)
    elif isinstance(counts, list):
        runs = [int(c) for c in counts]
    else:
        raise LabelsInvalid(f"{where}: RLE `counts` is neither a list nor a string")
    if any(r < 0 for r in runs) or sum(runs) != h * w:
        raise LabelsInvalid(f"{where}: RLE runs cover {sum(runs)} pixels, not {h} x {w}")
    flat = np.zeros(h * w, bool)
    pos = 0
    for i, r in enumerate(runs):
        if i % 2:
            flat[pos : pos + r] = True
        pos += r
    return flat.reshape(w, h).T  # column-major, as COCO writes it


def _rotated(cx: float, cy: float, w: float, h: float, angle: float) -> list[tuple[float, float]]:
    """A rotated box (detectron2's XYWHA: centre, size, degrees counter-clockwise) as 4 points."""
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    pts = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    return [(cx + x * c + y * s, cy - x * s + y * c) for x, y in pts]


def is_labels_file(path: Path) -> bool:
    """Whether a JSON file is COCO labels (an object with an `images` list), not a manifest."""
    if path.suffix.lower() != ".json" or path.stat().st_size > 2**30:
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("images"), list)


def _coco_object(
    ann: dict[str, Any], cls: str, W: float, H: float, where: str, name: str
) -> Object:
    obj = Object(cls)
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        obj.rle = _rle_mask(seg, where)
        if W and H and obj.rle.shape != (int(H), int(W)):  # it would be drawn nowhere
            raise LabelsInvalid(
                f"{where}: RLE `size` {list(obj.rle.shape)} is not image {name!r}'s "
                f"[{int(H)}, {int(W)}] ([height, width]); fix the size or the image"
            )
    elif isinstance(seg, list) and seg:
        polys = seg if isinstance(seg[0], list) else [seg]  # some exporters drop the outer list
        for k, poly in enumerate(polys):
            if poly == []:  # an empty outline (some exporters write one for box-only objects)
                continue
            xy = _numbers(poly, where, f"segmentation[{k}]")
            if len(xy) < 6 or len(xy) % 2:
                raise LabelsInvalid(
                    f"{where}: polygon segmentation[{k}] has {len(xy)} numbers; "
                    "a polygon is x1 y1 x2 y2 x3 y3 ... (at least 3 points)"
                )
            obj.polygons.append(list(zip(xy[0::2], xy[1::2], strict=True)))
    bbox = ann.get("bbox")
    if bbox is not None and bbox != []:
        b = _numbers(bbox, where, "bbox")
        if len(b) == 5:  # a rotated box: drawn as its polygon unless an outline is given
            corners = _rotated(*b)
            if not obj.polygons and obj.rle is None:
                obj.polygons.append(corners)
            xs, ys = [p[0] for p in corners], [p[1] for p in corners]
            b = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        elif len(b) != 4:
            raise LabelsInvalid(
                f"{where}: `bbox` has {len(b)} numbers; COCO boxes are "
                "[x, y, width, height] in pixels (5: a rotated box)"
            )
        x, y, w, h = b
        if (
            w <= 0
            or h <= 0
            or x + w <= 0
            or y + h <= 0
            or (W and x >= W)
            or (H and y >= H)
            or (
                len(bbox) == 4
                and (x < -_PX or y < -_PX or (W and x + w > W + _PX) or (H and y + h > H + _PX))
            )
        ):
            raise LabelsInvalid(
                f"{where}: box {bbox} lies outside image {name!r} ({W:g} x {H:g}); "
                "fix the box or the image size"
            )
        obj.box = (x, y, w, h)
    return obj


def _coco_file(root: Path, labels: Path, name: str) -> Path:
    """Where an image named ``file_name`` is: under the image folder, else beside the labels file
    or in its ``images/`` folder, else by its bare name (exports differ); the first candidate
    when none exists (preflight reports it missing)."""
    p = Path(name.replace("\\", "/"))  # a Windows export's separators
    if p.is_absolute():
        return p
    candidates = [root / p, labels.parent / p, labels.parent / "images" / p, root / p.name]
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


def _declared_size(im: dict[str, Any]) -> tuple[float, float]:
    """An image's `width` and `height` as the JSON states them (0 where absent or not numbers)."""
    out = []
    for key in ("width", "height"):
        try:
            out.append(max(0.0, float(im.get(key) or 0)))
        except (TypeError, ValueError):
            out.append(0.0)
    return out[0], out[1]


def _load_coco(labels: Path) -> dict[str, Any]:
    try:
        data = read_json_document(labels)
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(
            f"{labels}: not a readable COCO JSON file ({exc})", file=str(labels)
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ManifestError(
            f"{labels}: no `images` list; is this a COCO instances file?", file=str(labels)
        )
    for key in ("annotations", "categories"):
        if data.get(key) is None:
            data[key] = []  # absent or null: no objects (every image normal), no classes
        if not isinstance(data[key], list):
            raise ManifestError(f"{labels}: `{key}` is not a list", file=str(labels))
    return data


def read(src: CocoSource, *, mask_dir: str | Path, **_: Any) -> list[ManifestRecord]:
    root, labels = Path(src.path), Path(src.labels)
    if not root.is_dir():
        raise ManifestError(f"COCO image folder {root} does not exist; check the source `path`")
    if not labels.is_file():
        raise ManifestError(f"COCO labels file {labels} does not exist; check the source `labels`")
    data = _load_coco(labels)
    classes: dict[Any, str] = {}
    for k, c in enumerate(data.get("categories", [])):
        if not isinstance(c, dict) or "id" not in c:
            raise LabelsInvalid(f"{labels}: categories[{k}] has no `id`", file=str(labels))
        classes[c["id"]] = str(c.get("name", c["id"]))
    check_defect_classes(src, list(classes.values()), labels)
    images: dict[Any, dict[str, Any]] = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise LabelsInvalid(
                f"{labels}: images[{k}] needs an `id` and a `file_name`", file=str(labels)
            )
        if im["id"] in images:
            raise LabelsInvalid(
                f"{labels}: images[{k}] repeats image id {im['id']!r}", file=str(labels)
            )
        images[im["id"]] = im
    objects: dict[Any, list[Object]] = {i: [] for i in images}
    sizes: dict[Any, tuple[int, int] | None] = {}
    paths = {i: _coco_file(root, labels, im["file_name"]).absolute() for i, im in images.items()}
    for k, ann in enumerate(data.get("annotations", [])):
        where = f"{labels}: annotations[{k}]"
        if not isinstance(ann, dict):
            raise LabelsInvalid(f"{where} is not an object", file=str(labels))
        where += f" (id {ann.get('id')})"
        im = images.get(ann.get("image_id"))
        if im is None:
            raise LabelsInvalid(
                f"{where} names image_id {ann.get('image_id')!r}, which `images` does "
                "not list; fix or drop the annotation",
                file=str(labels),
            )
        if ann.get("category_id") not in classes:
            raise LabelsInvalid(
                f"{where} names category_id {ann.get('category_id')!r}, which "
                "`categories` does not list",
                file=str(labels),
            )
        i = ann["image_id"]
        if i not in sizes:
            sizes[i] = image_size(paths[i])
        W, H = sizes[i] or _declared_size(im)
        try:
            objects[i].append(
                _coco_object(ann, classes[ann["category_id"]], W, H, where, im["file_name"])
            )
        except LabelsInvalid as exc:
            raise LabelsInvalid(str(exc), file=str(labels)) from None
    where = SourceRef(file=str(labels), type="coco")
    out = []
    for i, im in images.items():
        size = None
        if objects[i]:  # drawn at the file's size; the JSON's when the file is missing
            json_size = tuple(int(v) for v in _declared_size(im))
            size = sizes.get(i) or image_size(paths[i]) or (json_size if all(json_size) else None)
        out.append(
            record(
                paths[i].resolve() if paths[i].exists() else paths[i],
                objects[i],
                size,
                src,
                root,
                "coco",
                where,
                Path(mask_dir),
                {"coco_id": i},
            )
        )
    check_some_defect(out, sum(len(o) for o in objects.values()), src, labels)
    return out
