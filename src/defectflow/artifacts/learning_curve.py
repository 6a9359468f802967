"""``learning_curve.json``: one model refitted on nested subsets of a category's training normals,
and whether more good images are likely to help."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from defectflow.contracts import read_json_artifact, write_json_artifact
from defectflow.records import ModelArtifact


class CurvePoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_train: int = Field(description="training normals fitted")
    normal_q95: float = Field(description="95% quantile of the held-out normals' raw scores")
    normal_median: float
    val_auroc: float | None = Field(
        default=None, description="image AUROC on val (if it has anomalies)"
    )
    val_best_f1: float | None = Field(
        default=None, description="best F1 any threshold reaches on val"
    )
    synthetic_auroc: float | None = Field(
        default=None,
        description="AUROC of synthetic defects made from images this subset did not fit, "
        "against the held-out normals",
    )
    fit_s: float


class LearningCurve(ModelArtifact):
    """``learning_curve.json`` of one dataset x category x model."""

    n_available: int = Field(description="training normals of the category")
    probe: str = Field(
        description="the held-out normals: `val normals` or `held-out train normals`"
    )
    n_probe: int
    n_val_anomalies: int
    seed: int
    points: list[CurvePoint]
    judged_by: str = Field(description="val_auroc | normal_q95")
    verdict: str = Field(description="improving | flat | too few images to tell")
    sentence: str = Field(description="the answer in one sentence")


def write_learning_curve(c: LearningCurve, path: str | Path) -> None:
    write_json_artifact("learning_curve", c, path)


def read_learning_curve(path: str | Path) -> LearningCurve:
    return read_json_artifact("learning_curve", LearningCurve, path)
