"""Reading manifest files: rows of JSON Lines, a JSON array, CSV (any common delimiter) or
Parquet; third-party column names mapped by an alias table; path values resolved as the tools
that wrote them meant. Shared by the manifest source and by ``defectflow infer``."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from defectflow.errors import ManifestError
from defectflow.io import read_json_document, read_jsonl
from defectflow.records import normalize_label
from defectflow.tables import read_parquet

#: what PIL reads and lines save: a folder is scanned for exactly what a named file may be
IMAGE_EXTENSIONS = {
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
    ".pgm",
    ".ppm",
    ".pnm",
}

#: defectflow field -> column names recognised in third-party manifests (first match wins,
#: case-insensitive). A source's ``fields:`` mapping takes precedence.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "image_path": (
        "image_path",
        "image",
        "filename",
        "file_name",
        "file",
        "path",
        "img",
        "img_path",
        "filepath",
        "image_file",
    ),
    "category": ("category", "clsname", "class_name", "object", "cls", "product", "class"),
    "split": ("split", "subset", "set", "phase"),
    "label": ("label", "is_anomaly", "anomaly", "target", "gt_label", "status"),
    "mask_path": (
        "mask_path",
        "mask",
        "maskname",
        "mask_name",
        "mask_file",
        "gt_mask",
        "ground_truth",
    ),
    "defect_type": ("defect_type", "label_name", "defect", "anomaly_type", "defect_class", "type"),
    "group_id": ("group_id", "group", "part_id", "serial", "sample_id"),
    "meta": ("meta",),
}


def resolve(base: Path, value: str | None) -> str | None:
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


def rel(base: Path, resolved: str) -> str:
    try:
        return Path(resolved).relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(resolved).as_posix()


def column_map(columns: list[str], explicit: dict[str, str], where: str) -> dict[str, str]:
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


def iter_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
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
                        file=str(path),
                        line=lineno,
                    )
                yield lineno, obj
        elif fmt == "csv":
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh, dialect=_csv_dialect(path))
                for row in reader:
                    yield reader.line_num, dict(row)
        else:
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
    data = read_json_document(path)
    for i, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise ManifestError(
                f"{where} record {i}: expected a JSON object, got {type(obj).__name__}",
                file=str(path),
            )
        yield i, obj


def group_from(regex: str | None, rel_path: str | None) -> str | None:
    if not regex or not rel_path:
        return None
    m = re.search(regex, Path(rel_path).name)
    if not m:
        return None
    return m.group(1) if m.groups() else m.group(0)


def image_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The images a manifest file names, with the label, defect type and category it gives
    (``defectflow infer`` over a manifest)."""

    rows = list(iter_rows(path, "auto"))
    columns = list(dict.fromkeys(k for _, r in rows for k in r if k is not None))
    cmap = column_map(columns, {}, str(path))
    for _, row in rows:
        image = resolve(path.parent, row.get(cmap["image_path"]))
        if image is None:
            continue
        label = normalize_label(row.get(cmap["label"])) if "label" in cmap else None
        yield {
            "image_path": image,
            "label": label,
            "defect_type": row.get(cmap["defect_type"]) if "defect_type" in cmap else None,
            "category": row.get(cmap["category"]) if "category" in cmap else None,
        }
