"""``metrics.json`` of one dataset x category x model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from defectflow.contracts import read_json_artifact, write_json_artifact
from defectflow.false_alarms import FalseAlarmRate
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


class ScoreShift(BaseModel):
    """Two-sample test of the calibration normals' scores against the test normals' scores."""

    model_config = ConfigDict(extra="forbid")
    statistic: float = Field(description="Kolmogorov-Smirnov distance of the two score samples")
    p_value: float
    differs: bool = Field(description="p < 0.01: the two are not from one distribution")
    direction: str = Field(description="test normals score `higher` | `lower` | `alike`")
    meaning: str


class FalseAlarmCheck(BaseModel):
    """The threshold's stated false-alarm rate against the rate realized on test normals."""

    model_config = ConfigDict(extra="forbid")
    status: str = Field(description="ok | skipped")
    reason: str | None = None
    stated: FalseAlarmRate | None = None
    n_normal: int = Field(default=0, description="test normals")
    false_alarms: int = Field(default=0, description="test normals flagged")
    realized: float | None = Field(default=None, description="false_alarms / n_normal")
    allowed: list[int] = Field(
        default_factory=list,
        description="90% interval of false alarms among n_normal new normals, as stated",
    )
    verdict: str = Field(
        default="", description="`holds` | `more false alarms than stated` | `fewer ...`"
    )
    shift: ScoreShift | None = None


class Metrics(ModelArtifact):
    """``metrics.json`` of one dataset x category x model."""

    model_id: str
    n_images: int
    n_errors: int
    image: ImageMetrics
    per_defect_type: dict[str, dict[str, Any]]
    pixel: PixelMetrics
    false_alarms: FalseAlarmCheck | None = Field(
        default=None, description="stated vs realized false-alarm rate on the test normals"
    )


def write_metrics(m: Metrics, path: str | Path) -> None:
    write_json_artifact("metrics", m, path)


def read_metrics(path: str | Path) -> Metrics:
    return read_json_artifact("metrics", Metrics, path)
