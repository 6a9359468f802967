"""Atomic file writes, JSON/JSONL helpers and hashing."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from defectflow.errors import DefectflowError, ManifestError

_CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    Readers never see a half-written file: on any exception the temporary file is removed
    and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(
            tmp_path, 0o666 & ~umask
        )  # mkstemp makes private files; artifacts are shared like any other
        os.replace(tmp_path, target)
        # what a killed earlier write of this target left behind (kill -9 skips `finally`)
        for stale in target.parent.glob(f".{glob.escape(target.name)}.{'?' * 8}.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def dumps_json(obj: Any) -> str:
    """Stable, human-readable JSON (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json_atomic(target: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as stable JSON, atomically."""
    write_text_atomic(target, dumps_json(obj))


def write_jsonl_atomic(target: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write one compact JSON object per line, atomically. Returns the number of lines."""
    n = 0
    with atomic_path(target) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":")))
            fh.write("\n")
            n += 1
    return n


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_json_document(path: str | os.PathLike[str]) -> Any:
    """A whole JSON file (a BOM accepted); not JSON is a :class:`ManifestError` at its line."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"{path} line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})",
            file=str(path),
            line=exc.lineno,
        ) from None


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file (1-based lines)."""
    with open(path, encoding="utf-8-sig") as fh:  # a byte-order mark is accepted
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(
                    f"{path} line {lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                    "each line must hold one JSON object",
                    file=str(path),
                    line=lineno,
                ) from None
            yield lineno, obj


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def short_hash(text: str, n: int = 10) -> str:
    """A short, stable hex digest of a string (for ids, not for security)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (plain YAML keeps the
    last one silently: a dataset or model written twice would lose the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base loader reports it
            line = key_node.start_mark.line + 1
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is written twice (lines {first} and {line}); "
                    "the second would replace the first: merge them or rename one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(
    path: str | Path, what: str = "config file", error: type[Exception] = DefectflowError
) -> Any:
    """A YAML file's content; ``error`` names the file (and line) when it is missing, not
    UTF-8, not YAML, or writes a key twice."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_UniqueKeyLoader)  # noqa: S506 - a safe loader
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} cannot be read as UTF-8 text: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{what} {path}{at}: not valid YAML: {problem}") from None
