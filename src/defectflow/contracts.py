"""Artifact contracts: each artifact's JSON Schema is generated from its pydantic model, checked
in under ``schemas/`` (a test fails when the two drift) and enforced where artifacts are written
and read."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from defectflow import __version__
from defectflow.errors import SchemaValidationError
from defectflow.io import dumps_json, read_json, read_jsonl, write_json_atomic

# schema name -> "module:Model". Extend here when a stage gains an artifact.
ARTIFACTS: dict[str, str] = {
    "config": "defectflow.config:Config",
    "manifest_record": "defectflow.records:ManifestRecord",
    "preflight": "defectflow.data.preflight_report:PreflightReport",
    "memory_report": "defectflow.models.memory:MemoryReport",
    "image_facts": "defectflow.data.imagefacts:ImageFacts",
    "standardized_row": "defectflow.artifacts.standardized:StandardizedRow",
    "backbone_card": "defectflow.artifacts.backbone:BackboneCard",
    "model_card": "defectflow.artifacts.checkpoint:ModelCard",
    "score_row": "defectflow.artifacts.scores:ScoreRow",
    "synthetic_score_row": "defectflow.artifacts.scores:SyntheticScoreRow",
    "infer_config": "defectflow.artifacts.infer_config:InferConfig",
    "infer_summary": "defectflow.artifacts.infer_summary:InferSummary",
    "prediction": "defectflow.artifacts.predictions:PredictionRecord",
    "metrics": "defectflow.artifacts.metrics:Metrics",
    "learning_curve": "defectflow.artifacts.learning_curve:LearningCurve",
    "openvino_report": "defectflow.artifacts.openvino_report:OpenVinoReport",
    "fiftyone_summary": "defectflow.curation.fiftyone:FiftyoneSummary",
}


def model_for(name: str) -> type:
    try:
        module, attr = ARTIFACTS[name].split(":")
    except KeyError:
        raise SchemaValidationError(
            f"unknown schema {name!r}; known: {sorted(ARTIFACTS)}"
        ) from None
    return getattr(importlib.import_module(module), attr)


@functools.cache
def schema_for(name: str) -> dict[str, Any]:
    """The JSON Schema of artifact ``name``, generated from its pydantic model."""
    # The config is input written by people (defaults may be left out); artifacts are output.
    schema = model_for(name).model_json_schema(
        mode="validation" if name == "config" else "serialization"
    )
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://defectflow.dev/schemas/{name}.schema.json"
    return schema


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema_for(name))


def validate(name: str, obj: Any, where: str = "") -> None:
    """Validate ``obj`` against schema ``name``; raise :class:`SchemaValidationError` saying where.
    A ``schema_version`` above the one this defectflow writes is refused first: the fields may
    mean something else now."""
    known = schema_for(name).get("properties", {}).get("schema_version", {}).get("default")
    given = obj.get("schema_version") if isinstance(obj, dict) else None
    if (
        isinstance(known, int)
        and isinstance(given, int)
        and not isinstance(given, bool)
        and given > known
    ):
        raise SchemaValidationError(
            f"{where or 'artifact'} is a {name!r} of schema version {given}, written by a newer "
            f"defectflow; this one ({__version__}) reads up to version {known}. Upgrade defectflow "
            "(`pip install -U defectflow`), or re-run the stage that makes it with this version."
        )
    err = next(iter(sorted(_validator(name).iter_errors(obj), key=lambda e: list(e.path))), None)
    if err is not None:
        loc = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise SchemaValidationError(
            f"{where or 'artifact'} does not match schema {name!r} at {loc}: {err.message}. "
            "It was written by another defectflow version or edited by hand; re-run the stage that makes it."
        )


def validate_rows(name: str, rows: Iterable[dict[str, Any]], where: str) -> None:
    """Validate every row of a table or JSONL artifact; the error names the row."""
    for i, row in enumerate(rows, start=1):
        validate(name, row, where=f"{where} row {i}")


def write_json_artifact(name: str, obj: Any, path: str | Path) -> None:
    """Validate a pydantic artifact against schema ``name`` and write it as JSON, atomically."""

    data = obj.model_dump(mode="json")
    validate(name, data, where=str(path))
    write_json_atomic(path, data)


def read_json_artifact(name: str, model: type, path: str | Path) -> Any:
    """Read a JSON artifact, validate it against schema ``name``, parse it into ``model``."""

    data = read_json(path)
    validate(name, data, where=str(path))
    return model.model_validate(data)


def read_jsonl_models(path: str | Path, name: str, model: type) -> list[Any]:
    """Read a JSONL artifact: each line validated against schema ``name``, then parsed."""

    out = []
    for lineno, obj in read_jsonl(path):
        validate(name, obj, where=f"{path} line {lineno}")
        out.append(model.model_validate(obj))
    return out


def write_schemas(out_dir: str | Path) -> list[Path]:
    """Write every artifact schema as ``<name>.schema.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in sorted(ARTIFACTS):
        p = out_dir / f"{name}.schema.json"
        p.write_text(dumps_json(schema_for(name)), encoding="utf-8")
        paths.append(p)
    return paths
