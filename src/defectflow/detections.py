"""COCO and YOLO detection labels as a dataset source, read with FiftyOne's importers (no
database needed) and normalized into manifest records: an image with a box of a defect class is
an anomaly whose mask is the union of those boxes (written as a PNG), its defect type the class
of its largest box; an image without one is normal.

Bad input is answered before anything is written: boxes outside the image, annotations of
unknown images or classes (COCO), class ids that data.yaml does not name (YOLO).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from defectflow.config import CocoSource, YoloSource
from defectflow.errors import ManifestError
from defectflow.records import Label, ManifestRecord, SourceRef

log = logging.getLogger(__name__)
_EPS = 1e-3  # relative slack for boxes that touch the border (rounding in exporters)


def _check_coco(labels: Path) -> None:
    """What FiftyOne's importer would skip silently: annotations of unknown images or classes,
    boxes outside their image."""
    try:
        data = json.loads(labels.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{labels}: not a readable COCO JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ManifestError(f"{labels}: no `images` list; is this a COCO instances file?")
    images = {im.get("id"): im for im in data["images"]}
    classes = {c.get("id") for c in data.get("categories", [])}
    for k, ann in enumerate(data.get("annotations", [])):
        where = f"{labels}: annotations[{k}] (id {ann.get('id')})"
        im = images.get(ann.get("image_id"))
        if im is None:
            raise ManifestError(f"{where} names image_id {ann.get('image_id')!r}, which `images` does "
                                "not list; fix or drop the annotation")  # fmt: skip
        if ann.get("category_id") not in classes:
            raise ManifestError(f"{where} names category_id {ann.get('category_id')!r}, which "
                                "`categories` does not list")  # fmt: skip
        bbox = ann.get("bbox")
        if bbox is not None:
            x, y, w, h = (float(v) for v in bbox)
            W, H = float(im.get("width") or 0), float(im.get("height") or 0)
            if (
                w <= 0
                or h <= 0
                or x < -0.5
                or y < -0.5
                or (W and x + w > W + 0.5)
                or (H and y + h > H + 0.5)
            ):
                raise ManifestError(f"{where}: box {bbox} lies outside image {im.get('file_name')!r} "
                                    f"({W:g} x {H:g}); fix the box or the image size")  # fmt: skip


def _check_yolo(root: Path, yaml_path: Path, names: list[str], splits: list[str]) -> None:
    for split in splits:
        lab = root / "labels" / split
        if not lab.is_dir():
            continue
        for txt in sorted(lab.rglob("*.txt")):
            for n, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                try:
                    cls = int(float(parts[0]))
                    box = [float(v) for v in parts[1:5]]
                except ValueError:
                    raise ManifestError(f"{txt}:{n}: not `class x y w h`: {line!r}") from None
                if len(box) != 4:
                    raise ManifestError(f"{txt}:{n}: not `class x y w h`: {line!r}")
                if not 0 <= cls < len(names):
                    raise ManifestError(f"{txt}:{n}: class id {cls} is not in {yaml_path} "
                                        f"(names: {names}); fix the label or the YAML")  # fmt: skip
                cx, cy, w, h = box
                if w <= 0 or h <= 0 or cx - w / 2 < -_EPS or cy - h / 2 < -_EPS or \
                        cx + w / 2 > 1 + _EPS or cy + h / 2 > 1 + _EPS:  # fmt: skip
                    raise ManifestError(f"{txt}:{n}: box {box} lies outside the image (YOLO boxes "
                                        "are relative, 0..1)")  # fmt: skip


def _yolo_names(yaml_path: Path) -> list[str]:
    import yaml

    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{yaml_path}: not a readable YAML file ({exc})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, list) or not names:
        raise ManifestError(f"{yaml_path}: no `names` list of classes")
    return [str(n) for n in names]


def _box_mask(boxes: list[list[float]], width: int, height: int, out: Path) -> str:
    from PIL import Image

    mask = np.zeros((height, width), np.uint8)
    for x, y, w, h in boxes:  # relative [x, y, w, h]
        x0, y0 = int(np.floor(x * width)), int(np.floor(y * height))
        x1, y1 = int(np.ceil((x + w) * width)), int(np.ceil((y + h) * height))
        mask[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)] = 255
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(out)
    return str(out.resolve())


def _records(items: list[tuple[str, Any, Any]], src: CocoSource | YoloSource, root: Path,
             kind: str, where: str, mask_dir: Path) -> list[ManifestRecord]:  # fmt: skip
    from PIL import Image

    from defectflow.ingest import _group_from

    wanted = set(src.defect_classes) if src.defect_classes is not None else None
    category = src.category or root.name
    out = []
    for image_path, meta, label in items:
        img = Path(image_path).resolve()
        dets = getattr(label, "detections", None) or []
        boxes = [d for d in dets if wanted is None or d.label in wanted]
        try:
            rel = img.relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = img.name
        mask_path, defect = None, None
        if boxes:
            w, h = (meta.width, meta.height) if meta is not None and meta.width else (None, None)
            if not w and img.is_file():
                with Image.open(img) as im:
                    w, h = im.size
            largest = max(boxes, key=lambda d: d.bounding_box[2] * d.bounding_box[3])
            defect = largest.label
            if w:
                key = hashlib.sha256(f"{kind}:{root}:{rel}".encode()).hexdigest()[:12]
                mask_path = _box_mask([d.bounding_box for d in boxes], int(w), int(h),
                                      mask_dir / f"{img.stem}-{key}.png")  # fmt: skip
        out.append(ManifestRecord(
            image_path=str(img), category=category, split=src.split,
            label=Label.ANOMALY if boxes else Label.NORMAL, mask_path=mask_path,
            defect_type=defect, group_id=_group_from(src.group_regex, rel), rel_path=rel,
            meta={"boxes": len(boxes)}, source=SourceRef(file=where, type=kind),
        ))  # fmt: skip
    return out


def ingest_coco(src: CocoSource, mask_dir: str | Path) -> list[ManifestRecord]:
    import fiftyone.utils.coco as fouc

    root, labels = Path(src.path), Path(src.labels)
    if not root.is_dir():
        raise ManifestError(f"COCO image folder {root} does not exist; check the source `path`")
    _check_coco(labels)
    importer = fouc.COCODetectionDatasetImporter(data_path=str(root), labels_path=str(labels),
                                                 label_types=["detections"])  # fmt: skip
    try:
        with importer:
            items = list(importer)
    except Exception as exc:  # the importer's own complaint, with the file named
        raise ManifestError(f"{labels}: FiftyOne's COCO importer failed: {exc}") from None
    missing = [p for p, _, _ in items if not Path(p).is_file()]
    if missing:
        raise ManifestError(f"{labels}: {len(missing)} images it lists are not in {root} "
                            f"(e.g. {missing[0]})")  # fmt: skip
    return _records(items, src, root, "coco", str(labels), Path(mask_dir))


def ingest_yolo(src: YoloSource, mask_dir: str | Path) -> list[ManifestRecord]:
    import fiftyone.utils.yolo as fouy

    root = Path(src.path)
    yaml_path = root / src.yaml
    if not yaml_path.is_file():
        raise ManifestError(f"YOLO dataset {root}: no {src.yaml}; set the source `yaml`")
    names = _yolo_names(yaml_path)
    _check_yolo(root, yaml_path, names, src.splits)
    items: list[tuple[str, Any, Any]] = []
    import yaml

    declared = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    for split in src.splits:
        if split not in declared:
            continue
        importer = fouy.YOLOv5DatasetImporter(dataset_dir=str(root), yaml_path=str(yaml_path),
                                              split=split)  # fmt: skip
        try:
            with importer:
                items += list(importer)
        except Exception as exc:
            raise ManifestError(f"{yaml_path}: FiftyOne's YOLO importer failed on split "
                                f"{split!r}: {exc}") from None  # fmt: skip
    if not items:
        raise ManifestError(f"{yaml_path}: none of the splits {src.splits} is declared")
    return _records(items, src, root, "yolo", str(yaml_path), Path(mask_dir))
