"""Enums and record models shared by stages."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from defectflow import __version__


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class Label(StrEnum):
    NORMAL = "normal"
    ANOMALY = "anomaly"


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


SPLIT_ALIASES: dict[str, Split] = {
    "train": Split.TRAIN,
    "training": Split.TRAIN,
    "val": Split.VAL,
    "valid": Split.VAL,
    "validation": Split.VAL,
    "calibration": Split.VAL,
    "test": Split.TEST,
    "testing": Split.TEST,
    "eval": Split.TEST,
}

LABEL_ALIASES: dict[str, Label] = {
    "normal": Label.NORMAL,
    "good": Label.NORMAL,
    "ok": Label.NORMAL,
    "0": Label.NORMAL,
    "false": Label.NORMAL,
    "pass": Label.NORMAL,
    "nominal": Label.NORMAL,
    "anomaly": Label.ANOMALY,
    "anomalous": Label.ANOMALY,
    "abnormal": Label.ANOMALY,
    "defect": Label.ANOMALY,
    "defective": Label.ANOMALY,
    "bad": Label.ANOMALY,
    "ng": Label.ANOMALY,
    "nok": Label.ANOMALY,
    "1": Label.ANOMALY,
    "true": Label.ANOMALY,
    "fail": Label.ANOMALY,
}


def _norm(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        if value != value:  # NaN from CSV/parquet
            return None
        if value.is_integer():
            value = int(value)
    text = str(value).strip()
    return text or None


def normalize_split(value: Any) -> str | None:
    """Map a split spelling to ``train|val|test``; unknown spellings are returned as given
    (preflight reports them as ``SPLIT_INVALID``); empty -> ``None`` (assigned later)."""
    text = _norm(value)
    if text is None:
        return None
    return SPLIT_ALIASES.get(text.lower(), text).__str__()


def normalize_label(value: Any) -> str | None:
    """Map a label spelling to ``normal|anomaly``; unknown spellings are returned as given
    (preflight reports ``LABEL_INVALID``); empty -> ``None``."""
    text = _norm(value)
    if text is None:
        return None
    return LABEL_ALIASES.get(text.lower(), text).__str__()


class SourceRef(BaseModel):
    """Where a record came from."""

    model_config = ConfigDict(extra="forbid")
    file: str = Field(description="manifest file or folder the record was read from")
    line: int | None = Field(default=None, description="1-based line (JSONL/CSV) or row number")
    type: str = Field(description="source type: manifest, mvtec, folder, demo")


class ManifestRecord(BaseModel):
    """One normalized record of ``manifest.jsonl``. Label/split keep unknown spellings so that
    preflight can report them with their source line instead of ingest failing."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    image_path: str | None = Field(
        description="absolute path of the image; null for a mask with no image"
    )
    category: str | None
    split: str | None = Field(default=None, description="train|val|test, null = assign later")
    label: str | None = Field(default=None, description="normal|anomaly, null = unknown")
    mask_path: str | None = None
    defect_type: str | None = None
    group_id: str | None = None
    rel_path: str | None = Field(default=None, description="image path relative to its source root")
    meta: dict[str, Any] = Field(default_factory=dict)
    source: SourceRef


class ModelArtifact(BaseModel):
    """Fields every per-model artifact (model card, infer config, metrics) starts with."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    defectflow_version: str = __version__
    dataset: str
    category: str
    model: str
