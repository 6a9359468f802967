"""Any artifact file read as plain data, and which schema it follows by its name: what
``defectflow validate`` checks a file the user points at with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from defectflow.contracts import ARTIFACTS
from defectflow.errors import SchemaValidationError
from defectflow.tables import read_table_rows


def detect_schema(path: str | Path) -> str:
    """Guess which artifact a file is by its name (for ``defectflow validate``)."""
    name = Path(path).name
    table = {
        "manifest.jsonl": "manifest_record",
        "preflight_memory.json": "memory_report",
        "preflight.json": "preflight",
        "standardized.parquet": "standardized_row",
        "image_facts.parquet": "image_facts",
        "config.yaml": "config",
        "model_card.json": "model_card",
        "backbone.json": "backbone_card",
        "crossfit.parquet": "score_row",
        "scores.parquet": "score_row",  # scores/shard-I-of-N.scores.parquet
        "infer_config.json": "infer_config",
        "predictions.jsonl": "prediction",
        "summary.json": "infer_summary",
        "learning_curve.json": "learning_curve",  # predictions.summary.json
        "metrics.json": "metrics",
        "fiftyone.json": "fiftyone_summary",
        "openvino_report.json": "openvino_report",
    }
    for suffix, schema in table.items():
        if name.endswith(suffix):
            return schema
    raise SchemaValidationError(
        f"cannot tell which schema {path} follows; pass --schema NAME ({sorted(ARTIFACTS)})"
    )


def load_any(path: str | Path) -> list[dict[str, Any]] | dict[str, Any]:
    """Load JSON, JSONL, YAML or Parquet for validation."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [
            json.loads(line)
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    if path.suffix == ".parquet":
        return read_table_rows(path)
    if path.suffix in {".yaml", ".yml"}:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    return json.loads(path.read_text(encoding="utf-8"))
