"""Parquet tables with column types declared from a pydantic model (never inferred from data)."""

from __future__ import annotations

import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from defectflow.contracts import validate_rows
from defectflow.errors import SchemaValidationError
from defectflow.io import atomic_path

_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
}


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union {annotation}")
        return _arrow_type(args[0])[0], True
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return pa.string(), False
    if annotation in _SCALARS:
        return _SCALARS[annotation], False
    raise TypeError(f"no arrow type for {annotation}")


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """Arrow schema of a flat pydantic model: one column per field, in declaration order."""
    fields = []
    for name, info in model.model_fields.items():
        typ, nullable = _arrow_type(info.annotation)
        fields.append(pa.field(name, typ, nullable=nullable))
    return pa.schema(fields)


def write_table(
    path: str | Path, rows: list[dict[str, Any]], model: type[BaseModel], schema_name: str
) -> None:
    """Validate ``rows`` against the artifact schema and write them as Parquet, atomically."""
    validate_rows(schema_name, rows, where=str(path))
    schema = arrow_schema(model)
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    table = pa.Table.from_pydict(cols, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file as a table. ``pq.read_table`` would import ``pyarrow.dataset``, a quarter
    of a second of start-up in every job that reads a table."""
    with pq.ParquetFile(path) as f:
        return f.read(columns=columns)


def read_table_rows(path: str | Path) -> list[dict[str, Any]]:
    return read_parquet(path).to_pylist()


def _check_schema(path: str | Path, model: type[BaseModel], got: dict[str, Any]) -> None:
    for f in arrow_schema(model):
        if f.name not in got or got[f.name] != f.type:
            raise SchemaValidationError(
                f"{path}: column {f.name!r} should be {f.type}, found {got.get(f.name, 'nothing')}; "
                "re-run the stage that writes it"
            )


def read_columns(path: str | Path, model: type[BaseModel], columns: list[str]) -> pa.Table:
    """Some columns of a Parquet artifact, after checking that every column of its model is
    there with its type (the rows are not validated: cheap enough for a DAG's input functions)."""
    try:
        with pq.ParquetFile(path) as f:
            got = {field.name: field.type for field in f.schema_arrow}
            _check_schema(path, model, got)
            return f.read(columns=columns)
    except (OSError, pa.ArrowInvalid) as exc:
        raise SchemaValidationError(f"{path} is not a readable Parquet file: {exc}") from None


def read_table(path: str | Path, model: type[BaseModel], schema_name: str) -> list[dict[str, Any]]:
    """Read a Parquet artifact and check its column types and every row against its schema."""
    try:
        table = read_parquet(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise SchemaValidationError(f"{path} is not a readable Parquet file: {exc}") from None
    expected = arrow_schema(model)
    got = {f.name: f.type for f in table.schema}
    for f in expected:
        if f.name not in got or got[f.name] != f.type:
            raise SchemaValidationError(
                f"{path}: column {f.name!r} should be {f.type}, found {got.get(f.name, 'nothing')}; "
                "re-run the stage that writes it"
            )
    rows = table.to_pylist()
    validate_rows(schema_name, rows, where=str(path))
    return rows
