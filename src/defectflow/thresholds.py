"""Threshold calibration, outside the model graph, and score normalization (threshold -> 0.5)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import precision_recall_curve

from defectflow.config import ThresholdConfig
from defectflow.errors import ModelError


class Threshold(BaseModel):
    """A calibrated threshold with where it came from."""

    model_config = ConfigDict(extra="forbid")
    value: float = Field(description="raw-score threshold: score >= value -> anomaly")
    policy: str = Field(description="f1_optimal | normal_quantile | fixed")
    quantile: float | None = None
    low: float = Field(description="normalization: raw score that maps to 0")
    spread: float = Field(
        description="normalization: raw distance from the threshold to 0 (and to 1)"
    )
    n_normal: int
    n_anomaly: int
    calibration_ids_sha256: str = Field(description="sha256 of the sorted calibration image ids")
    f1: float | None = Field(default=None, description="f1 on the calibration set (f1_optimal)")


def fingerprint(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def calibrate(
    scores: np.ndarray, labels: list[str | None], ids: list[str], cfg: ThresholdConfig
) -> Threshold:
    """Choose the threshold by ``cfg.policy`` from calibration scores and labels."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.array([lab == "anomaly" for lab in labels])
    known = np.array([lab in ("normal", "anomaly") for lab in labels])
    n_an, n_no = int((y & known).sum()), int((~y & known).sum())
    policy = cfg.policy
    if policy == "auto":
        policy = "f1_optimal" if n_an and n_no else "normal_quantile"
    f1 = None
    if policy == "fixed":
        if cfg.value is None:
            raise ModelError("threshold policy `fixed` needs `threshold.value`")
        value = float(cfg.value)
    elif policy == "f1_optimal":
        if not (n_an and n_no):
            raise ModelError(
                f"f1_optimal needs normal and anomalous calibration images; the val split has {n_no} normal, {n_an} anomalous (use normal_quantile)"
            )
        prec, rec, thr = precision_recall_curve(y[known].astype(int), scores[known])
        f = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
        best = int(np.argmax(f[:-1]))
        value, f1 = float(thr[best]), float(f[best])
    else:
        normal = scores[known & ~y] if n_no else scores[~y]
        if len(normal) == 0:
            raise ModelError(
                "normal_quantile needs normal calibration images; the val split has none"
            )
        value = float(np.quantile(normal, cfg.quantile))
    low = float(min(scores.min(), value)) if len(scores) else 0.0
    spread = max(value - low, 1e-6 * max(abs(value), 1.0))
    return Threshold(
        value=value, policy=policy, quantile=cfg.quantile if policy == "normal_quantile" else None, low=low, spread=spread,
        n_normal=n_no, n_anomaly=n_an, calibration_ids_sha256=fingerprint(ids), f1=f1,
    )  # fmt: skip


def normalize(raw: Any, t: Threshold) -> np.ndarray:
    """Map raw scores (or maps) so the threshold is 0.5 and the calibration minimum 0; clip to [0, 1]."""
    return np.clip(0.5 + 0.5 * (np.asarray(raw, dtype=np.float64) - t.value) / t.spread, 0.0, 1.0)
