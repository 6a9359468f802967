"""``predictions.jsonl`` records (no torch: the report and metrics read them cheaply)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from defectflow.contracts import read_jsonl_models, validate_rows
from defectflow.io import write_jsonl_atomic
from defectflow.records import Label


class Region(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x0: int
    y0: int
    x1: int
    y1: int
    score: float = Field(description="max normalized map value inside the box")
    area: float = Field(description="share of the image the region covers")


class PredictionRecord(BaseModel):
    """One line of ``predictions.jsonl``."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    image_id: str = Field(description="stable and unique within the run")
    image_path: str
    score: float | None = Field(description="raw anomaly score")
    normalized_score: float | None = Field(description="0..1, threshold at 0.5")
    pred_label: Label | None = Field(description="normal | anomaly")
    gt_label: Label | None = None
    defect_type: str | None = None
    map_path: str | None = Field(default=None, description="PNG heatmap, when maps were asked for")
    regions: list[Region] = Field(
        default_factory=list, description="boxes of the thresholded map, in image pixels"
    )
    model_id: str
    error: str | None = Field(default=None, description="why this image could not be scored")
    warnings: list[str] = Field(
        default_factory=list, description="what the backbone may not represent faithfully"
    )
    image_sha256: str | None = Field(
        default=None,
        description="sha256 of the image file (`defectflow watch`: what makes a rescan skip it)",
    )

    def to_json(self) -> dict:
        """The record as written: ``image_sha256`` only where it is known."""
        return self.model_dump(mode="json", exclude=None if self.image_sha256 else {"image_sha256"})


def write_predictions(records: list[PredictionRecord], out: str | Path) -> None:
    rows = [r.to_json() for r in records]
    validate_rows("prediction", rows, where=str(out))
    write_jsonl_atomic(out, rows)


def read_predictions(path: str | Path) -> list[PredictionRecord]:
    return read_jsonl_models(path, "prediction", PredictionRecord)
