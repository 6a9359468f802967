"""``predictions.summary.json``: what one ``defectflow infer`` batch flagged, against the false-alarm
rate its threshold states (the alarm of a line that has changed)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from defectflow.contracts import write_json_artifact
from defectflow.false_alarms import BatchCheck


class InferSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: str
    predictions: str = Field(description="the predictions.jsonl this summarizes")
    n_images: int
    n_errors: int = Field(description="images that could not be read")
    n_flagged: int = Field(description="images predicted anomalous")
    batch: BatchCheck = Field(
        description="the flagged fraction against the stated false-alarm rate"
    )


def summary_path(predictions: str | Path) -> Path:
    p = Path(predictions)
    return p.with_name(p.name.removesuffix(".jsonl") + ".summary.json")


def write_infer_summary(s: InferSummary, path: str | Path) -> None:
    write_json_artifact("infer_summary", s, path)
