"""Sources -> normalized ``manifest.jsonl`` records.

Supported sources: manifest files (JSONL, CSV, Parquet) with an alias table for field names,
MVTec-AD folders, plain ``good/`` + defect-folder layouts, COCO and YOLO detection labels
(:mod:`defectflow.data.detections`), and the built-in demo data.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from defectflow.config import (
    DatasetConfig,
    DemoSource,
    FolderSource,
    ManifestSource,
    MvtecSource,
)
from defectflow.contracts import validate_rows
from defectflow.errors import ManifestError
from defectflow.io import read_jsonl, write_jsonl_atomic
from defectflow.records import Label, ManifestRecord, SourceRef, normalize_label, normalize_split

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

#: defectflow field -> column names recognised in third-party manifests (first match wins,
#: case-insensitive). A source's ``fields:`` mapping takes precedence.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "image_path": ("image_path", "image", "filename", "file_name", "file", "path", "img", "img_path", "filepath", "image_file"),
    "category": ("category", "clsname", "class_name", "object", "cls", "product", "class"),
    "split": ("split", "subset", "set", "phase"),
    "label": ("label", "is_anomaly", "anomaly", "target", "gt_label", "status"),
    "mask_path": ("mask_path", "mask", "maskname", "mask_name", "mask_file", "gt_mask", "ground_truth"),
    "defect_type": ("defect_type", "label_name", "defect", "anomaly_type", "defect_class", "type"),
    "group_id": ("group_id", "group", "part_id", "serial", "sample_id"),
    "meta": ("meta",),
}  # fmt: skip

DEMO_DIR = "resources/demo"


def _resolve(base: Path, value: str | None) -> str | None:
    """An absolute path for a manifest's path value (relative to ``base``). What other tools
    write is read as meant where the literal path does not exist: surrounding spaces, a
    ``file://`` URI, Windows separators."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", text) and not text.startswith("file://"):
        return text  # a URL: kept as given, preflight says it is not a local file
    p = Path(text)
    p = p if p.is_absolute() else base / p
    if not _exists(p):
        alt = text.strip().removeprefix("file://").replace("\\", "/")
        q = Path(alt) if Path(alt).is_absolute() else base / alt
        if alt != text and _exists(q):
            p = q
    try:
        return str(p.resolve())
    except (OSError, RuntimeError, ValueError):  # a loop, a NUL byte: kept, preflight reports it
        return os.path.abspath(p)


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except (OSError, ValueError):  # a NUL byte, a name too long: preflight reports it
        return False


def _rel(base: Path, resolved: str) -> str:
    try:
        return Path(resolved).relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(resolved).as_posix()


def _column_map(columns: list[str], explicit: dict[str, str], where: str) -> dict[str, str]:
    """defectflow field -> column, from the explicit mapping then the alias table."""
    lower = {c.lower(): c for c in columns}
    mapping: dict[str, str] = {}
    for field, col in explicit.items():
        if field not in FIELD_ALIASES:
            raise ManifestError(
                f"{where}: `fields` names unknown field {field!r}; known: {sorted(FIELD_ALIASES)}"
            )
        if col not in columns:
            raise ManifestError(
                f"{where}: `fields.{field}` names column {col!r}, which is not in the file (columns: {columns})"
            )
        mapping[field] = col
    used = set(mapping.values())
    for field, aliases in FIELD_ALIASES.items():
        if field in mapping:
            continue
        for alias in aliases:
            col = lower.get(alias)
            if col is not None and col not in used:
                mapping[field] = col
                used.add(col)
                break
    if "image_path" not in mapping:
        raise ManifestError(
            f"{where}: no image path column. Columns found: {columns}. Name one of "
            f"{list(FIELD_ALIASES['image_path'])}, or map yours in the source's config: "
            "`fields: {image_path: <your column>}`"
        )
    return mapping


def _iter_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    where = str(path)
    if fmt == "auto":
        ext = path.suffix.lower()
        fmt = {
            ".jsonl": "jsonl",
            ".json": "jsonl",
            ".ndjson": "jsonl",
            ".csv": "csv",
            ".tsv": "csv",
            ".txt": "csv",
            ".parquet": "parquet",
            ".pq": "parquet",
        }.get(ext, "")
        if not fmt:
            hint = " (a spreadsheet: save it as CSV)" if ext in (".xlsx", ".xls", ".ods") else ""
            raise ManifestError(
                f"{where}: cannot tell the format from extension {ext!r}{hint}; set `format: jsonl|csv|parquet`"
            )
    try:
        if fmt == "jsonl" and _starts_with(path, "["):
            yield from _json_array(path, where)
        elif fmt == "jsonl":
            for lineno, obj in read_jsonl(path):
                if not isinstance(obj, dict):
                    raise ManifestError(
                        f"{where} line {lineno}: expected a JSON object, got {type(obj).__name__}",
                        file=str(path), line=lineno,
                    )  # fmt: skip
                yield lineno, obj
        elif fmt == "csv":
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh, dialect=_csv_dialect(path))
                for row in reader:
                    yield reader.line_num, dict(row)
        else:
            from defectflow.tables import read_parquet

            for i, row in enumerate(read_parquet(path).to_pylist(), start=1):
                yield i, row
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{where}: not UTF-8 text ({exc}); save it as UTF-8, or check the format",
            file=str(path),
        ) from None
    except csv.Error as exc:
        raise ManifestError(f"{where}: not valid CSV: {exc}", file=str(path)) from None
    except OSError as exc:
        raise ManifestError(f"{where}: cannot read: {exc}", file=str(path)) from None
    except ValueError as exc:  # Arrow's complaint about a truncated or foreign Parquet file
        raise ManifestError(f"{where}: not a readable {fmt} file: {exc}", file=str(path)) from None


def _csv_dialect(path: Path) -> type[csv.Dialect] | str:
    """Commas, or the delimiter the header plainly uses instead (semicolons from a European
    spreadsheet, tabs, pipes)."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        header = fh.readline()
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    delim = max(counts, key=counts.get)
    if counts[delim] == 0 or delim == ",":
        return "excel"

    class Found(csv.excel):
        delimiter = delim

    return Found


def _starts_with(path: Path, char: str) -> bool:
    """Whether the file's first non-blank character is ``char`` (a JSON array, not JSON lines)."""
    with path.open(encoding="utf-8-sig") as fh:
        while chunk := fh.read(4096):
            text = chunk.lstrip()
            if text:
                return text[0] == char
    return False


def _json_array(path: Path, where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """A JSON file holding one array of records (accepted beside JSON lines)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{where} line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})",
                            file=str(path), line=exc.lineno) from None  # fmt: skip
    for i, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise ManifestError(
                f"{where} record {i}: expected a JSON object, got {type(obj).__name__}",
                file=str(path),
            )
        yield i, obj


def _group_from(regex: str | None, rel_path: str | None) -> str | None:
    if not regex or not rel_path:
        return None
    m = re.search(regex, Path(rel_path).name)
    if not m:
        return None
    return m.group(1) if m.groups() else m.group(0)


def ingest_manifest(src: ManifestSource) -> list[ManifestRecord]:
    """Read a manifest file into records, mapping third-party field names."""
    path = Path(src.path)
    if not path.is_file():
        raise ManifestError(
            f"manifest {path} does not exist (from config source `path`); check the path"
        )
    root = Path(src.root) if src.root else path.parent
    rows = list(_iter_rows(path, src.format))
    if not rows:
        raise ManifestError(
            f"{path}: the manifest has no records (empty, or a CSV header alone)", file=str(path)
        )
    columns = list(dict.fromkeys(k for _, r in rows for k in r if k is not None))
    cmap = _column_map(columns, src.fields, str(path))
    if not any(r.get(cmap["image_path"]) not in (None, "") for _, r in rows):
        raise ManifestError(
            f"{path}: column {cmap['image_path']!r} is empty in every record: no record names an image; "
            "map the right column with `fields: {image_path: <column>}`",
            file=str(path), line=rows[0][0],
        )  # fmt: skip
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
        image = _resolve(root, get("image_path"))
        rel = _rel(root, image) if image else None
        category = get("category")
        records.append(
            ManifestRecord(
                image_path=image,
                category=str(category) if category not in (None, "") else src.category,
                split=normalize_split(get("split")) or normalize_split(src.split),
                label=label,
                mask_path=_resolve(root, get("mask_path")),
                defect_type=defect,
                group_id=str(get("group_id"))
                if get("group_id") not in (None, "")
                else _group_from(src.group_regex, rel),
                rel_path=rel,
                meta=json.loads(json.dumps(meta, default=str)),
                source=SourceRef(file=str(path), line=lineno, type="manifest"),
            )
        )
    return records


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _find_mask(mask_dir: Path, stem: str) -> Path | None:
    for name in (f"{stem}_mask", stem):
        for ext in (".png", ".bmp", ".tif", ".tiff", ".jpg"):
            p = mask_dir / f"{name}{ext}"
            if p.exists():
                return p
    return None


def _mvtec_categories(root: Path) -> list[Path]:
    if (root / "train").is_dir() or (root / "test").is_dir():
        return [root]
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir())
    )


def ingest_mvtec(
    src: MvtecSource | DemoSource, path: Path | None = None, kind: str = "mvtec"
) -> list[ManifestRecord]:
    """Read an MVTec-AD layout; masks with no image become records with ``image_path = null``."""
    root = Path(path or src.path)  # type: ignore[union-attr]
    if not root.is_dir():
        raise ManifestError(f"MVTec folder {root} does not exist; check the source `path`")
    cats = _mvtec_categories(root)
    wanted = getattr(src, "categories", None)
    if wanted:
        missing = set(wanted) - {c.name for c in cats}
        if missing:
            raise ManifestError(
                f"{root}: categories {sorted(missing)} not found (found {[c.name for c in cats]})"
            )
        cats = [c for c in cats if c.name in wanted]
    if not cats:
        raise ManifestError(f"{root}: no MVTec category folder (one with train/ or test/) found")
    regex = getattr(src, "group_regex", None)
    records: list[ManifestRecord] = []
    for cat in cats:
        used_masks: set[Path] = set()
        for split_dir, split in (
            ("train", "train"),
            ("validation", "val"),
            ("val", "val"),
            ("test", "test"),
        ):
            base = cat / split_dir
            if not base.is_dir():
                continue
            for type_dir in sorted(p for p in base.iterdir() if p.is_dir()):
                normal = type_dir.name.lower() in {"good", "normal", "ok"}
                for img in _images(type_dir):
                    mask = (
                        None
                        if normal
                        else _find_mask(cat / "ground_truth" / type_dir.name, img.stem)
                    )
                    if mask is not None:
                        used_masks.add(mask.resolve())
                    rel = img.relative_to(cat).as_posix()
                    records.append(
                        ManifestRecord(
                            image_path=str(img.resolve()),
                            category=cat.name,
                            split=split,
                            label=Label.NORMAL if normal else Label.ANOMALY,
                            mask_path=str(mask.resolve()) if mask else None,
                            defect_type=None if normal else type_dir.name,
                            group_id=_group_from(regex, rel),
                            rel_path=rel,
                            source=SourceRef(file=str(root), type=kind),
                        )
                    )
        for mask in _images(cat / "ground_truth"):
            if mask.resolve() not in used_masks:
                records.append(
                    ManifestRecord(
                        image_path=None,
                        category=cat.name,
                        mask_path=str(mask.resolve()),
                        defect_type=mask.parent.name,
                        rel_path=mask.relative_to(cat).as_posix(),
                        source=SourceRef(file=str(root), type=kind),
                    )
                )
    return records


def ingest_folder(src: FolderSource) -> list[ManifestRecord]:
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
        for img in _images(sub):
            mask = None
            if not normal and mask_root is not None:
                mask = _find_mask(mask_root / sub.name, img.stem)
            rel = img.relative_to(root).as_posix()
            records.append(
                ManifestRecord(
                    image_path=str(img.resolve()),
                    category=src.category or root.name,
                    label=Label.NORMAL if normal else Label.ANOMALY,
                    mask_path=str(mask.resolve()) if mask else None,
                    defect_type=None if normal else sub.name,
                    group_id=_group_from(src.group_regex, rel),
                    rel_path=rel,
                    source=SourceRef(file=str(root), type="folder"),
                )
            )
    return records


def ingest_sources(
    sources: list[Any],
    dataset: str,
    demo_dir: str | Path = DEMO_DIR,
    mask_dir: str | Path | None = None,
) -> list[ManifestRecord]:
    """All records of one dataset's sources, in source order. ``mask_dir``: where the box masks
    of detection sources (COCO, YOLO) are written."""
    records: list[ManifestRecord] = []
    for i, src in enumerate(sources, start=1):
        if src.type == "corrections":
            n = apply_corrections(records, Path(src.path))
            log.info("dataset %s: source #%d (corrections) -> %d records changed", dataset, i, n)
            continue
        if src.type in ("coco", "yolo"):
            from defectflow.data import detections

            if mask_dir is None:
                raise ManifestError(f"source #{i} ({src.type}) needs a folder for its box masks")
            reader = detections.ingest_coco if src.type == "coco" else detections.ingest_yolo
            got = reader(src, Path(mask_dir) / f"source-{i}")
        elif isinstance(src, ManifestSource):
            got = ingest_manifest(src)
        elif isinstance(src, MvtecSource):
            got = ingest_mvtec(src)
        elif isinstance(src, FolderSource):
            got = ingest_folder(src)
        else:
            got = ingest_mvtec(src, path=Path(demo_dir), kind="demo")
        if not got:
            raise ManifestError(f"dataset {dataset!r} source #{i} ({src.type}) yielded no images")
        log.info("dataset %s: source #%d (%s) -> %d records", dataset, i, src.type, len(got))
        records.extend(got)
    return records


def apply_corrections(records: list[ManifestRecord], path: Path) -> int:
    """Override label, mask and defect type of the records named in a corrections file (in
    place); a correction of an image no earlier source has is an error."""
    by_path = {str(Path(r.image_path).resolve()): r for r in records if r.image_path}
    changed = 0
    for line, row in read_jsonl(path):
        where = f"{path}:{line}"
        img = row.get("image_path")
        rec = by_path.get(str(Path(img).resolve())) if isinstance(img, str) else None
        if rec is None:
            raise ManifestError(f"{where}: {img!r} is not an image of the sources before it; "
                                "was this file pulled for another dataset?")  # fmt: skip
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


def write_manifest(records: list[ManifestRecord], out: str | Path) -> int:
    """Validate and write records as ``manifest.jsonl`` (atomic)."""
    rows = [r.model_dump(mode="json") for r in records]
    validate_rows("manifest_record", rows, where=str(out))
    return write_jsonl_atomic(out, rows)


def read_manifest(path: str | Path) -> list[ManifestRecord]:
    """Read ``manifest.jsonl``, validating each line against its schema."""
    from defectflow.contracts import read_jsonl_models

    return read_jsonl_models(path, "manifest_record", ManifestRecord)


def run_ingest(
    dataset_config: dict[str, Any] | DatasetConfig,
    dataset: str,
    out: str | Path,
    demo_dir: str | Path = DEMO_DIR,
    mask_dir: str | Path | None = None,
    report: str | Path | None = None,
) -> int:
    """Snakemake entry point: one dataset's config -> ``manifest.jsonl`` (and the box masks of
    detection sources under ``mask_dir``). A source that cannot be read is also written as a
    preflight report with its code to ``report`` (a log file: CI gates read the same JSON as
    from preflight)."""
    cfg = (
        dataset_config
        if isinstance(dataset_config, DatasetConfig)
        else DatasetConfig.model_validate(dataset_config)
    )
    if mask_dir is not None:
        Path(mask_dir).mkdir(parents=True, exist_ok=True)
    try:
        records = ingest_sources(cfg.sources, dataset, demo_dir, mask_dir)
    except ManifestError as exc:
        if report is not None:
            from defectflow.config import PreflightConfig
            from defectflow.data.preflight import unreadable_manifest_report, write_report

            write_report(
                unreadable_manifest_report(exc, dataset, str(out), PreflightConfig()), report
            )
            raise ManifestError(f"{exc}\nReport: {report}", file=exc.file, line=exc.line) from None
        raise
    n = write_manifest(records, out)
    log.info("wrote %d records to %s", n, out)
    return n
