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

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defectflow.config import CocoSource, YoloSource
from defectflow.errors import ManifestError
from defectflow.records import Label, ManifestRecord, SourceRef

log = logging.getLogger(__name__)
_EPS = 1e-3  # relative slack for YOLO coordinates that touch the border (exporters round)
_PX = 0.5  # pixel slack for COCO boxes that touch the border
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class LabelsInvalid(ManifestError):
    """A label (COCO annotation, YOLO line) cannot be read as the format defines it."""

    code = "LABELS_INVALID"


@dataclass
class _Object:
    """One labelled object in pixel coordinates: polygons (lists of (x, y)), else a box."""

    cls: str
    polygons: list[list[tuple[float, float]]] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None  # x, y, w, h
    rle: np.ndarray | None = None  # a decoded mask (COCO RLE)

    def area(self) -> float:
        if self.rle is not None:
            return float(self.rle.sum())
        if self.polygons:
            return sum(_polygon_area(p) for p in self.polygons)
        return self.box[2] * self.box[3] if self.box else 0.0


def _polygon_area(pts: list[tuple[float, float]]) -> float:
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def _draw(objects: list[_Object], width: int, height: int, out: Path) -> str:
    """The union of the objects as an 8-bit mask PNG (255 = defect)."""
    from PIL import Image, ImageDraw

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


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None  # preflight reports the image itself


def _record(img: Path, objects: list[_Object], size: tuple[int, int] | None,
            src: CocoSource | YoloSource, root: Path, kind: str, where: SourceRef,
            mask_dir: Path, meta: dict[str, Any]) -> ManifestRecord:  # fmt: skip
    from defectflow.data.ingest import _group_from

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
            mask_path = _draw(drawable, size[0], size[1], mask_dir / f"{img.stem}-{key}.png")
    return ManifestRecord(
        image_path=str(img), category=src.category or root.name, split=src.split,
        label=Label.ANOMALY if defects else Label.NORMAL, mask_path=mask_path,
        defect_type=defect, group_id=_group_from(src.group_regex, rel), rel_path=rel,
        meta={**meta, "objects": len(defects)}, source=where,
    )  # fmt: skip


def _orphan(label_file: Path, kind: str, category: str, why: str) -> ManifestRecord:
    """A label file with no image (preflight: ``LABEL_ORPHAN``)."""
    return ManifestRecord(
        image_path=None, category=category, rel_path=label_file.name,
        meta={"orphan_label": str(label_file), "why": why},
        source=SourceRef(file=str(label_file), type=kind),
    )  # fmt: skip


# --------------------------------------------------------------------------------------- COCO


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


def _coco_object(ann: dict[str, Any], cls: str, W: float, H: float, where: str,
                 name: str) -> _Object:  # fmt: skip
    obj = _Object(cls)
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        obj.rle = _rle_mask(seg, where)
    elif isinstance(seg, list) and seg:
        polys = seg if isinstance(seg[0], list) else [seg]  # some exporters drop the outer list
        for k, poly in enumerate(polys):
            if poly == []:  # an empty outline (some exporters write one for box-only objects)
                continue
            xy = _numbers(poly, where, f"segmentation[{k}]")
            if len(xy) < 6 or len(xy) % 2:
                raise LabelsInvalid(f"{where}: polygon segmentation[{k}] has {len(xy)} numbers; "
                                    "a polygon is x1 y1 x2 y2 x3 y3 ... (at least 3 points)")  # fmt: skip
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
            raise LabelsInvalid(f"{where}: `bbox` has {len(b)} numbers; COCO boxes are "
                                "[x, y, width, height] in pixels (5: a rotated box)")  # fmt: skip
        x, y, w, h = b
        if w <= 0 or h <= 0 or x + w <= 0 or y + h <= 0 or (W and x >= W) or (H and y >= H) or \
                (len(bbox) == 4 and (x < -_PX or y < -_PX or (W and x + w > W + _PX)
                                     or (H and y + h > H + _PX))):  # fmt: skip
            raise LabelsInvalid(f"{where}: box {bbox} lies outside image {name!r} ({W:g} x {H:g}); "
                                "fix the box or the image size")  # fmt: skip
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
        data = json.loads(labels.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{labels} line {exc.lineno}: not valid JSON ({exc.msg})",
                            file=str(labels), line=exc.lineno) from None  # fmt: skip
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


def ingest_coco(src: CocoSource, mask_dir: str | Path) -> list[ManifestRecord]:
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
    objects: dict[Any, list[_Object]] = {i: [] for i in images}
    sizes: dict[Any, tuple[int, int] | None] = {}
    paths = {i: _coco_file(root, labels, im["file_name"]).absolute() for i, im in images.items()}
    for k, ann in enumerate(data.get("annotations", [])):
        where = f"{labels}: annotations[{k}]"
        if not isinstance(ann, dict):
            raise LabelsInvalid(f"{where} is not an object", file=str(labels))
        where += f" (id {ann.get('id')})"
        im = images.get(ann.get("image_id"))
        if im is None:
            raise LabelsInvalid(f"{where} names image_id {ann.get('image_id')!r}, which `images` does "
                                "not list; fix or drop the annotation", file=str(labels))  # fmt: skip
        if ann.get("category_id") not in classes:
            raise LabelsInvalid(f"{where} names category_id {ann.get('category_id')!r}, which "
                                "`categories` does not list", file=str(labels))  # fmt: skip
        i = ann["image_id"]
        if i not in sizes:
            sizes[i] = _image_size(paths[i])
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
            size = sizes.get(i) or _image_size(paths[i]) or (json_size if all(json_size) else None)
        out.append(_record(paths[i].resolve() if paths[i].exists() else paths[i], objects[i], size,
                           src, root, "coco", where, Path(mask_dir), {"coco_id": i}))  # fmt: skip
    return out


# --------------------------------------------------------------------------------------- YOLO


def _read_yaml(path: Path) -> Any:
    from defectflow.config import load_yaml

    return load_yaml(path, what="YOLO dataset YAML", error=ManifestError)


def _yolo_yaml(root: Path, name: str | None) -> Path | None:
    """The dataset YAML: the one named, else ``data.yaml``/``dataset.yaml`` or the only
    ``*.yaml`` of the folder that names classes."""
    if name:
        p = root / name
        if p.is_file():
            return p
    for cand in ("data.yaml", "dataset.yaml", "data.yml"):
        if (root / cand).is_file():
            return root / cand
    found = []
    for p in sorted(root.glob("*.y*ml")):
        try:
            doc = _read_yaml(p)
        except ManifestError:
            continue
        if isinstance(doc, dict) and ("names" in doc or "nc" in doc):
            found.append(p)
    return found[0] if len(found) == 1 else None


def yolo_names(yaml_path: Path | None, doc: dict[str, Any]) -> list[str] | None:
    """Class names by id; None when the YAML names none (ids are then the names)."""
    names = doc.get("names")
    if isinstance(names, dict):
        try:
            top = max(int(k) for k in names)
        except (TypeError, ValueError):
            raise ManifestError(
                f"{yaml_path}: `names` keys must be class ids (0, 1, ...)"
            ) from None
        return [str(names.get(k, names.get(str(k), k))) for k in range(top + 1)]
    if isinstance(names, list):
        return [str(n) for n in names]
    if isinstance(doc.get("nc"), int):
        return [str(k) for k in range(doc["nc"])]
    if names is not None:
        raise ManifestError(f"{yaml_path}: `names` is neither a list nor an id -> name mapping")
    return None


def _split_images(base: Path, entry: Any, yaml_path: Path | None, split: str) -> list[Path]:
    """The images a data.yaml split entry names: folders, list files, or lists of either."""
    entries = entry if isinstance(entry, list) else [entry]
    out: list[Path] = []
    for e in entries:
        if not isinstance(e, str):
            raise ManifestError(
                f"{yaml_path}: split {split!r} must name folders or list files, not {e!r}"
            )
        p = _split_path(base, e)
        if p is None:
            log.warning(
                "%s: split %r names %r, which is not under %s: skipped", yaml_path, split, e, base
            )
        elif p.is_dir():
            out += sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
            )
        elif p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8-sig").splitlines():
                q = Path(line.strip())
                if line.strip():
                    out.append(
                        q
                        if q.is_absolute()
                        else (p.parent / q if line.startswith(".") else base / q)
                    )
        else:
            raise ManifestError(
                f"{yaml_path}: split {split!r} names {e!r}, which is neither a folder "
                "nor a list file of images (.txt)"
            )
    return out


def _split_path(base: Path, entry: str) -> Path | None:
    """Where a split entry is, as Ultralytics finds it: relative to the dataset root, or with a
    leading ``../`` dropped (Roboflow's exports); an absolute path of another machine is looked
    for under the root by its last parts. None when it is nowhere."""
    p = Path(entry)
    candidates = [p] if p.is_absolute() else [base / p]
    if entry.startswith("../"):
        candidates.append(base / entry[3:])
    candidates += [base.joinpath(*p.parts[-k:]) for k in (3, 2, 1) if len(p.parts) > k]
    return next((c for c in candidates if c.exists()), None)


def _label_file(img: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, the suffix
    ``.txt``; images outside an ``images`` folder have their labels beside them."""
    parts = list(img.parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            return Path(*parts).with_suffix(".txt")
    return img.with_suffix(".txt")


def _yolo_objects(txt: Path, names: list[str] | None, yaml_path: Path | None,
                  size: tuple[int, int] | None, pose: bool) -> list[_Object]:  # fmt: skip
    """The objects of one label file: ``class cx cy w h`` boxes (a sixth number, a confidence, is
    ignored), ``class x1 y1 ... xn yn`` polygons (segmentation, oriented boxes), pose lines."""
    try:
        text = txt.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsInvalid(f"{txt}: cannot read the label file ({exc})", file=str(txt)) from None
    W, H = size or (1, 1)
    objects = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise LabelsInvalid(f"{txt}:{n}: not numbers: {line[:80]!r}; a YOLO line is `class cx cy "
                                "w h` or `class x1 y1 x2 y2 ...`", file=str(txt), line=n) from None  # fmt: skip
        cls_f, xy = values[0], values[1:]
        if not all(math.isfinite(v) for v in values) or cls_f != int(cls_f) or cls_f < 0:
            raise LabelsInvalid(f"{txt}:{n}: class id {parts[0]!r} is not a non-negative integer",
                                file=str(txt), line=n)  # fmt: skip
        cls = int(cls_f)
        if names is not None and cls >= len(names):
            raise LabelsInvalid(f"{txt}:{n}: class id {cls} is not in {yaml_path} (names: {names}); "
                                "fix the label or the YAML", file=str(txt), line=n)  # fmt: skip
        name = names[cls] if names is not None else str(cls)
        if any(v < -_EPS or v > 1 + _EPS for v in (xy[:4] if pose else xy)):
            raise LabelsInvalid(f"{txt}:{n}: coordinates {[round(v, 4) for v in xy[:8]]} lie outside "
                                "the image (YOLO coordinates are relative, 0..1)", file=str(txt), line=n)  # fmt: skip
        if len(xy) in (4, 5) or (pose and len(xy) >= 4):
            cx, cy, w, h = xy[:4]
            if w <= 0 or h <= 0 or cx - w / 2 < -_EPS or cy - h / 2 < -_EPS or \
                    cx + w / 2 > 1 + _EPS or cy + h / 2 > 1 + _EPS:  # fmt: skip
                raise LabelsInvalid(f"{txt}:{n}: box {xy[:4]} lies outside the image (YOLO boxes are "
                                    "relative, 0..1)", file=str(txt), line=n)  # fmt: skip
            objects.append(_Object(name, box=((cx - w / 2) * W, (cy - h / 2) * H, w * W, h * H)))
        elif len(xy) >= 6 and len(xy) % 2 == 0:
            objects.append(
                _Object(
                    name,
                    polygons=[[(x * W, y * H) for x, y in zip(xy[0::2], xy[1::2], strict=True)]],
                )
            )
        else:
            raise LabelsInvalid(f"{txt}:{n}: {len(xy)} coordinates; a YOLO line is `class cx cy w h` "
                                "(a box) or `class x1 y1 x2 y2 x3 y3 ...` (a polygon)", file=str(txt), line=n)  # fmt: skip
    return objects


def _yolo_layout(root: Path, src: YoloSource) -> tuple[Path | None, dict[str, Any], Path]:
    yaml_path = _yolo_yaml(root, src.yaml)
    if yaml_path is None and not (root / "images").is_dir():
        raise ManifestError(f"YOLO dataset {root}: no {src.yaml} (and no images/ folder to read "
                            "without one); set the source `yaml`")  # fmt: skip
    doc = _read_yaml(yaml_path) if yaml_path is not None else {}
    if not isinstance(doc, dict):
        raise ManifestError(f"{yaml_path}: not a mapping of keys (path, train, val, names)")
    base = root
    if isinstance(doc.get("path"), str):  # Ultralytics' dataset root; often stale after a move
        p = Path(doc["path"])
        p = p if p.is_absolute() else yaml_path.parent / p  # type: ignore[union-attr]
        if p.is_dir():
            base = p
        else:
            log.warning("%s: `path: %s` does not exist here; reading splits relative to %s",
                        yaml_path, doc["path"], root)  # fmt: skip
    return yaml_path, doc, base


def ingest_yolo(src: YoloSource, mask_dir: str | Path) -> list[ManifestRecord]:
    root = Path(src.path)
    if not root.is_dir():
        raise ManifestError(f"YOLO dataset folder {root} does not exist; check the source `path`")
    yaml_path, doc, base = _yolo_layout(root, src)
    names = yolo_names(yaml_path, doc)
    if names is None:  # Darknet-style exports name their classes in classes.txt
        listed = [p for p in (root / "classes.txt", root / "labels" / "classes.txt") if p.is_file()]
        if listed:
            names = [
                n.strip()
                for n in listed[0].read_text(encoding="utf-8-sig").splitlines()
                if n.strip()
            ]
    pose = "kpt_shape" in doc
    declared = [s for s in src.splits if doc.get(s)]
    if yaml_path is None:  # no YAML: images/<split>/ (or images/) with labels/ beside
        sub = [s for s in src.splits if (root / "images" / s).is_dir()]
        entries = {s: f"images/{s}" for s in sub} or {"images": "images"}
    else:
        entries = {s: doc[s] for s in declared}
        if not entries:
            raise ManifestError(f"{yaml_path}: declares none of the splits {src.splits}; name image "
                                "folders under `train:`, `val:` or `test:`")  # fmt: skip
    where = SourceRef(file=str(yaml_path or root), type="yolo")
    category = src.category or root.name
    out, seen, label_dirs = [], set(), set()
    images = {
        split: _split_images(base, entry, yaml_path, split) for split, entry in entries.items()
    }
    if not any(images.values()):
        raise ManifestError(f"{yaml_path or root}: no image in the splits it names "
                            f"({', '.join(f'{k}: {v}' for k, v in entries.items())}) under {base}")  # fmt: skip
    for split, found in images.items():
        for img in found:
            key = os.path.abspath(img)
            if key in seen:
                continue
            seen.add(key)
            txt = _label_file(Path(key))
            label_dirs.add(txt.parent)
            objects: list[_Object] = []
            size = None
            if txt.is_file():
                size = _image_size(img)
                objects = _yolo_objects(txt, names, yaml_path, size, pose)
            meta = {"yolo_split": split, "label_file": str(txt) if txt.is_file() else None}
            out.append(
                _record(Path(key), objects, size, src, root, "yolo", where, Path(mask_dir), meta)
            )
    expected = {os.path.abspath(_label_file(Path(k))) for k in seen}
    for d in sorted(label_dirs):
        if not d.is_dir():
            continue
        if "labels" not in d.parts:  # labels beside their images: no label folder to audit
            continue
        for txt in sorted(d.glob("*.txt")):
            if os.path.abspath(txt) not in expected and txt.name not in ("classes.txt",):
                out.append(
                    _orphan(
                        txt, "yolo", category, "no image of that name in the split's image folder"
                    )
                )
    return out
