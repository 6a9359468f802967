"""YOLO (Ultralytics) labels: boxes, segmentation polygons, oriented boxes; images without a
label file are normal, label files without an image are reported."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from defectflow.data.sources.base import images_in
from defectflow.data.sources.outlines import (
    DetectionParams,
    LabelsInvalid,
    Object,
    check_defect_classes,
    check_some_defect,
    default_category,
    image_size,
    orphan,
    record,
)
from defectflow.errors import ManifestError
from defectflow.io import load_yaml
from defectflow.records import ManifestRecord, SourceRef

log = logging.getLogger(__name__)
_EPS = 1e-3  # relative slack for YOLO coordinates that touch the border (exporters round)


class YoloSource(DetectionParams):
    """YOLO (Ultralytics) labels: `data.yaml` naming the classes and the image folders (or list
    files) of each split, `labels/*.txt` beside `images/`. Boxes, segmentation polygons and
    oriented boxes of a defect class make an anomaly, as for COCO; an image with an empty label
    file or none is normal; a label file without its image is reported (LABEL_ORPHAN)."""

    type: Literal["yolo"] = Field(description="source type")
    path: str = Field(description="dataset folder holding `data.yaml`")
    yaml: str = Field(
        default="data.yaml",
        description="the dataset YAML, relative to `path` (if absent: dataset.yaml, the one YAML "
        "naming classes, or none: images/ and labels/ with class ids as names)",
    )
    splits: list[str] = Field(
        default_factory=lambda: ["train", "val", "test"],
        description="YOLO splits to read (those data.yaml names); they do not become defectflow splits",
    )


def _read_yaml(path: Path) -> Any:
    return load_yaml(path, what="YOLO dataset YAML", error=ManifestError)


def find_yaml(root: Path, name: str | None) -> Path | None:
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


def yolo_names(yaml_path: Path | None, doc: dict[str, Any]) -> list[str | None] | None:
    """Class names by id (None where a mapping skips an id: no class has it); None when the
    YAML names none (ids are then the names). ``nc`` beside ``names`` must match it, as
    Ultralytics requires."""
    names = doc.get("names")
    nc = doc.get("nc")
    if isinstance(names, dict):
        try:
            ids = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise ManifestError(
                f"{yaml_path}: `names` keys must be class ids (0, 1, ...)"
            ) from None
        out: list[str | None] = [ids.get(k) for k in range(max(ids, default=-1) + 1)]
    elif isinstance(names, list):
        out = [str(n) for n in names]
    else:
        out = []
    if isinstance(names, dict | list):
        if isinstance(nc, int) and nc != len(out):
            raise ManifestError(
                f"{yaml_path}: `nc: {nc}` but `names` defines {len(out)} class ids; make them "
                "agree (Ultralytics refuses this file too)"
            )
        return out
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
            out += images_in(p)
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


def _yolo_objects(
    txt: Path,
    names: list[str] | None,
    yaml_path: Path | None,
    size: tuple[int, int] | None,
    pose: bool,
) -> list[Object]:
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
            raise LabelsInvalid(
                f"{txt}:{n}: not numbers: {line[:80]!r}; a YOLO line is `class cx cy "
                "w h` or `class x1 y1 x2 y2 ...`",
                file=str(txt),
                line=n,
            ) from None
        cls_f, xy = values[0], values[1:]
        if not all(math.isfinite(v) for v in values) or cls_f != int(cls_f) or cls_f < 0:
            raise LabelsInvalid(
                f"{txt}:{n}: class id {parts[0]!r} is not a non-negative integer",
                file=str(txt),
                line=n,
            )
        cls = int(cls_f)
        if names is not None and (cls >= len(names) or names[cls] is None):
            raise LabelsInvalid(
                f"{txt}:{n}: class id {cls} is not in {yaml_path} (names: {names}); "
                "fix the label or the YAML",
                file=str(txt),
                line=n,
            )
        name = names[cls] if names is not None else str(cls)
        if any(v < -_EPS or v > 1 + _EPS for v in (xy[:4] if pose else xy)):
            raise LabelsInvalid(
                f"{txt}:{n}: coordinates {[round(v, 4) for v in xy[:8]]} lie outside "
                "the image (YOLO coordinates are relative, 0..1)",
                file=str(txt),
                line=n,
            )
        if len(xy) in (4, 5) or (pose and len(xy) >= 4):
            cx, cy, w, h = xy[:4]
            if (
                w <= 0
                or h <= 0
                or cx - w / 2 < -_EPS
                or cy - h / 2 < -_EPS
                or cx + w / 2 > 1 + _EPS
                or cy + h / 2 > 1 + _EPS
            ):
                raise LabelsInvalid(
                    f"{txt}:{n}: box {xy[:4]} lies outside the image (YOLO boxes are "
                    "relative, 0..1)",
                    file=str(txt),
                    line=n,
                )
            objects.append(Object(name, box=((cx - w / 2) * W, (cy - h / 2) * H, w * W, h * H)))
        elif len(xy) >= 6 and len(xy) % 2 == 0:
            objects.append(
                Object(
                    name,
                    polygons=[[(x * W, y * H) for x, y in zip(xy[0::2], xy[1::2], strict=True)]],
                )
            )
        else:
            raise LabelsInvalid(
                f"{txt}:{n}: {len(xy)} coordinates; a YOLO line is `class cx cy w h` "
                "(a box) or `class x1 y1 x2 y2 x3 y3 ...` (a polygon)",
                file=str(txt),
                line=n,
            )
    return objects


def _refuse_cased_folders(*folders: Path) -> None:
    """Ultralytics finds a label by turning the folder ``images`` (exactly) into ``labels``:
    an ``Images/`` and ``Labels/`` export (Windows) would lose every label without a word, here
    as there. Refused with the reason instead."""
    for folder in folders:
        if not folder.is_dir():
            continue
        for d in sorted(p for p in folder.iterdir() if p.is_dir()):
            if d.name.lower() in ("images", "labels") and d.name not in ("images", "labels"):
                raise ManifestError(
                    f"{d}: YOLO label files are found by turning the folder `images` into "
                    f"`labels`, in lower case (as Ultralytics does); `{d.name}/` would lose every "
                    f"label. Rename it to `{d.name.lower()}/` (and its partner likewise)"
                )


def _yolo_layout(root: Path, src: YoloSource) -> tuple[Path | None, dict[str, Any], Path]:
    _refuse_cased_folders(root)
    yaml_path = find_yaml(root, src.yaml)
    if yaml_path is None and not (root / "images").is_dir():
        raise ManifestError(
            f"YOLO dataset {root}: no {src.yaml} (and no images/ folder to read "
            "without one); set the source `yaml`"
        )
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
            log.warning(
                "%s: `path: %s` does not exist here; reading splits relative to %s",
                yaml_path,
                doc["path"],
                root,
            )
    return yaml_path, doc, base


def read(src: YoloSource, *, mask_dir: str | Path, **_: Any) -> list[ManifestRecord]:
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
    if names is not None:
        check_defect_classes(src, names, yaml_path or root)
    pose = "kpt_shape" in doc
    declared = [s for s in src.splits if doc.get(s)]
    if yaml_path is None:  # no YAML: images/<split>/ (or images/) with labels/ beside
        sub = [s for s in src.splits if (root / "images" / s).is_dir()]
        entries = {s: f"images/{s}" for s in sub} or {"images": "images"}
    else:
        entries = {s: doc[s] for s in declared}
        if not entries:
            raise ManifestError(
                f"{yaml_path}: declares none of the splits {src.splits}; name image "
                "folders under `train:`, `val:` or `test:`"
            )
    where = SourceRef(file=str(yaml_path or root), type="yolo")
    category = src.category or default_category(root)
    out, seen, label_dirs = [], set(), set()
    n_objects = 0
    images = {
        split: _split_images(base, entry, yaml_path, split) for split, entry in entries.items()
    }
    if not any(images.values()):
        raise ManifestError(
            f"{yaml_path or root}: no image in the splits it names "
            f"({', '.join(f'{k}: {v}' for k, v in entries.items())}) under {base}"
        )
    for split, found in images.items():
        for img in found:
            key = os.path.abspath(img)
            if key in seen:
                continue
            seen.add(key)
            txt = _label_file(Path(key))
            label_dirs.add(txt.parent)
            objects: list[Object] = []
            size = None
            if txt.is_file():
                size = image_size(img)
                objects = _yolo_objects(txt, names, yaml_path, size, pose)
            n_objects += len(objects)
            meta = {"yolo_split": split, "label_file": str(txt) if txt.is_file() else None}
            out.append(
                record(Path(key), objects, size, src, root, "yolo", where, Path(mask_dir), meta)
            )
    check_some_defect(out, n_objects, src, yaml_path or root)
    expected = {os.path.abspath(_label_file(Path(k))) for k in seen}
    for d in sorted(label_dirs):
        if not d.is_dir():
            continue
        if "labels" not in d.parts:  # labels beside their images: no label folder to audit
            continue
        for txt in sorted(d.glob("*.txt")):
            if os.path.abspath(txt) not in expected and txt.name not in ("classes.txt",):
                out.append(
                    orphan(
                        txt, "yolo", category, "no image of that name in the split's image folder"
                    )
                )
    return out
