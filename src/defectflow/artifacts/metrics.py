"""``metrics.json`` of one dataset x category x model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from defectflow.contracts import read_json_artifact, write_json_artifact
from defectflow.records import ModelArtifact


class ImageMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str = Field(description="ok | skipped")
    reason: str | None = None
    n_normal: int
    n_anomaly: int
    auroc: float | None = None
    aupr: float | None = None
    f1: float | None = None
    precision: float | None = None
    recall: float | None = None
    best_f1: float | None = Field(
        default=None, description="best F1 any threshold reaches on these test scores"
    )
    best_f1_threshold: float | None = Field(
        default=None, description="raw score threshold of best_f1 (for comparison only)"
    )
    f1_gap: float | None = Field(
        default=None, description="best_f1 - f1: what the delivered threshold gives up"
    )
    threshold: float | None = Field(default=None, description="the delivered raw threshold")
    threshold_policy: str | None = None
    confusion: dict[str, int] = Field(
        default_factory=dict, description="tp, fp, tn, fn at the calibrated threshold"
    )


class PixelMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str = Field(description="ok | skipped")
    reason: str | None = None
    auroc: float | None = None
    aupro: float | None = Field(
        default=None,
        description="area under the per-region-overlap curve up to 30% FPR, normalized",
    )
    resolution: int | None = None


class Metrics(ModelArtifact):
    """``metrics.json`` of one dataset x category x model."""

    model_id: str
    n_images: int
    n_errors: int
    image: ImageMetrics
    per_defect_type: dict[str, dict[str, Any]]
    pixel: PixelMetrics


def write_metrics(m: Metrics, path: str | Path) -> None:
    write_json_artifact("metrics", m, path)


def read_metrics(path: str | Path) -> Metrics:
    return read_json_artifact("metrics", Metrics, path)
