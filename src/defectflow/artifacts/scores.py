"""Raw scores from a checkpoint alone (no threshold): ``crossfit.parquet`` (out-of-fold scores of
the training normals, and val anomalies scored by the delivered model) and ``scores.parquet``
+ ``maps.safetensors`` (test images: raw score and smoothed anomaly map at model input size)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from safetensors.numpy import load_file, save_file

from defectflow.io import atomic_path
from defectflow.tables import read_table, write_table


class ScoreRow(BaseModel):
    """One row of ``crossfit.parquet`` or ``scores.parquet``."""

    model_config = ConfigDict(extra="forbid")
    image_id: str
    split: str
    label: str | None
    fold: int = Field(
        description="cross-fit fold that scored it out of sample; -1: the delivered model"
    )
    score: float = Field(description="raw anomaly score")


class SyntheticScoreRow(BaseModel):
    """One row of ``synthetic_scores.parquet``: a synthetic defect scored by the model that did
    not see the good image it was made from."""

    model_config = ConfigDict(extra="forbid")
    image_id: str
    source_id: str = Field(description="the training good image it was made from")
    family: str = Field(description="cutpaste, scratch, stain, texture, blur or missing")
    strength: float
    fold: int = Field(description="cross-fit fold of its source image (its scoring model's)")
    score: float = Field(description="raw anomaly score")


def write_synthetic_scores(path: str | Path, rows: list[dict[str, Any]]) -> None:
    write_table(path, rows, SyntheticScoreRow, "synthetic_score_row")


def read_synthetic_scores(path: str | Path) -> list[dict[str, Any]]:
    return read_table(path, SyntheticScoreRow, "synthetic_score_row")


def write_scores(path: str | Path, rows: list[dict[str, Any]]) -> None:
    write_table(path, rows, ScoreRow, "score_row")


def read_scores(path: str | Path) -> list[dict[str, Any]]:
    return read_table(path, ScoreRow, "score_row")


def write_maps(path: str | Path, maps: dict[str, np.ndarray]) -> None:
    """Anomaly maps by image id (float16); an empty file when the model makes none."""

    arrays = {k: np.asarray(v, np.float16) for k, v in maps.items()}
    with atomic_path(path) as tmp:
        save_file(arrays or {"_empty": np.zeros(1, np.float16)}, str(tmp))


def read_maps(path: str | Path) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float32) for k, v in load_file(str(path)).items() if k != "_empty"}
