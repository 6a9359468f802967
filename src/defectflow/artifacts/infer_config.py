"""``infer_config.json``: everything a deployment needs, with no run directory; and the digest
that makes a hand edit visible (``defectflow infer`` refuses a file whose digest does not match
its content; ``defectflow seal`` records an intended edit as a new model id)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from defectflow.contracts import validate
from defectflow.errors import IntegrityError, ModelError
from defectflow.false_alarms import FalseAlarmRate
from defectflow.io import read_json, write_json_atomic
from defectflow.models.backends import REGISTRY
from defectflow.records import ModelArtifact


class FileRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="relative to infer_config.json (or the file name beside it)")
    sha256: str


class CatchRate(BaseModel):
    """The share of seeded synthetic defects a threshold flags: what share of defects it may
    catch, stated before the first real one is found (an estimate: the report sets it beside
    the real recall wherever labelled defects exist)."""

    model_config = ConfigDict(extra="forbid")
    expected: float = Field(description="synthetic defects flagged / synthetic defects")
    low: float = Field(description="5% bound (Clopper-Pearson) from their count")
    high: float = Field(description="95% bound (Clopper-Pearson) from their count")
    flagged: int
    n: int = Field(
        description="synthetic defects scored, each by a model that never saw its source"
    )
    by_family: dict[str, list[float]] = Field(
        default_factory=dict, description="family -> [flagged, n, rate]"
    )
    synthetic_auroc: float | None = Field(
        default=None,
        description="AUROC of the synthetic defects against the out-of-sample good scores",
    )


class OperatingPoint(BaseModel):
    """Another false-alarm target for the same model: what it would cost and buy."""

    model_config = ConfigDict(extra="forbid")
    target: float = Field(description="false-alarm rate asked for")
    value: float = Field(description="its raw-score threshold (conformal, as policy fpr)")
    expected_false_alarms: float
    attainable: bool = Field(description="false: this n is too small; the highest good score")
    catch_rate: float | None = Field(description="synthetic defects it flags (null: none made)")


class Threshold(BaseModel):
    """A calibrated threshold with where it came from."""

    model_config = ConfigDict(extra="forbid")
    value: float = Field(description="raw-score threshold: score >= value -> anomaly")
    policy: str = Field(description="normal_quantile | f1_optimal | fpr | fixed")
    quantile: float | None = None
    low: float = Field(description="normalization: raw score that maps to 0")
    spread: float = Field(
        description="normalization: raw distance from the threshold to 0 (and to 1)"
    )
    n_normal: int = Field(description="normal scores the threshold rests on")
    n_anomaly: int = Field(description="anomalous scores the threshold rests on")
    folds: int = Field(description="cross-fit folds (0: scores of the delivered model)")
    normal_scores: dict[str, float] = Field(
        default_factory=dict,
        description="spread of the normal calibration scores: min, median, p95, max",
    )
    calibration_ids_sha256: str = Field(description="sha256 of the sorted calibration image ids")
    f1: float | None = Field(default=None, description="F1 on the calibration scores")
    calibration: str = Field(
        default="crossfit",
        description="scores it rests on: `crossfit` (out-of-fold training normals), `val` (held-out "
        "labelled images scored by the delivered model), `crossfit+val` (both)",
    )
    false_alarms: FalseAlarmRate | None = Field(
        default=None,
        description="the false-alarm rate this threshold states on new normals (expected, 90% "
        "interval, the n it rests on); null after a hand edit (`defectflow seal`)",
    )
    catch_rate: CatchRate | None = Field(
        default=None,
        description="the share of seeded synthetic defects it flags (config `synthetic`); null "
        "without them or after a hand edit",
    )
    tradeoff: list[OperatingPoint] | None = Field(
        default=None,
        description="other false-alarm targets on the same scores: threshold, expected false "
        "alarms, synthetic catch rate",
    )


def normalize(raw: Any, t: Threshold) -> np.ndarray:
    """Map raw scores (or maps) so the threshold is 0.5 and the calibration minimum 0; clip to [0, 1]."""
    return np.clip(0.5 + 0.5 * (np.asarray(raw, dtype=np.float64) - t.value) / t.spread, 0.0, 1.0)


class InferConfig(ModelArtifact):
    """``infer_config.json``."""

    backend: str
    params: dict[str, Any]
    consumes: str = Field(description="features (ONNX backbone + backend) | images (own forward)")
    backbone: FileRef | None = Field(description="backbone.onnx; null for image backends")
    backbone_spec: dict[str, Any] = Field(description="what the backbone was built from")
    weights_sha256: str | None = Field(description="sha256 of the backbone weights file used")
    preprocess: dict[str, Any] = Field(description="PreprocessSpec: size, crop, normalization")
    checkpoint: FileRef
    threshold: Threshold
    map_sigma: float
    search: dict[str, Any] | None = Field(
        default=None,
        description="how the scores' nearest-neighbour search runs (`method`: exact | ivf, with "
        "the index's lists and probe); `defectflow infer` uses the same; null: no such search",
    )
    seed: int
    versions: dict[str, str]
    device: str = Field(
        default="cpu", description="where the model was fitted (provenance: not in the digest)"
    )
    digest: str = Field(description="sha256 of the decision-relevant content (model id suffix)")

    @property
    def model_id(self) -> str:
        return f"{self.dataset}/{self.category}/{self.model}@{self.digest[:12]}"

    def compute_digest(self) -> str:
        content = self.model_dump(
            mode="json",
            include={"backend", "params", "consumes", "preprocess", "threshold", "map_sigma"},
        )
        for key in ("false_alarms", "catch_rate", "tradeoff"):
            if content["threshold"][key] is None:  # as before the field existed: files
                del content["threshold"][key]  # delivered then keep their model id
        content["backbone"] = self.backbone.sha256 if self.backbone else None
        content["checkpoint"] = self.checkpoint.sha256
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def deliverable(cfg: InferConfig, path: str | Path) -> None:
    """What every delivered model must hold, checked wherever one is written, sealed or read:
    a backend the registry knows, whose typed params accept ``params``, and a threshold and
    normalization of finite numbers (a NaN threshold labels every image normal and writes
    ``normalized_score: NaN``, which is not JSON)."""
    if cfg.backend not in REGISTRY:
        raise ModelError(
            f"{path}: backend {cfg.backend!r} is no backend defectflow knows "
            f"(known: {', '.join(sorted(REGISTRY))}); re-run the workflow for this model"
        )
    if cfg.params.get("backend") != cfg.backend:
        raise ModelError(
            f"{path}: params.backend {cfg.params.get('backend')!r} differs from backend "
            f"{cfg.backend!r}; re-run the workflow for this model"
        )
    try:
        REGISTRY[cfg.backend].params.model_validate(cfg.params)
    except ValueError as exc:
        raise ModelError(f"{path}: params are not {cfg.backend}'s: {exc}") from None
    t = cfg.threshold
    for name in ("value", "low", "spread"):
        if not np.isfinite(getattr(t, name)):
            raise ModelError(f"{path}: threshold.{name} is {getattr(t, name)}: it must be a number")
    if t.spread <= 0:
        raise ModelError(f"{path}: threshold.spread is {t.spread}: it must be above 0")
    if not np.isfinite(cfg.map_sigma) or cfg.map_sigma < 0:
        raise ModelError(f"{path}: map_sigma is {cfg.map_sigma}: it must be 0 or more")


def write_infer_config(cfg: InferConfig, path: str | Path) -> InferConfig:
    """Seal (digest) and write."""
    deliverable(cfg, path)
    cfg = cfg.model_copy(update={"digest": cfg.compute_digest()})
    data = cfg.model_dump(mode="json")
    validate("infer_config", data, where=str(path))
    write_json_atomic(path, data)
    return cfg


def read_infer_config(path: str | Path, verify: bool = True) -> InferConfig:
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise ModelError(f"infer config {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not JSON: {exc}") from None
    validate("infer_config", data, where=str(path))
    cfg = InferConfig.model_validate(data)
    deliverable(cfg, path)
    if verify and cfg.compute_digest() != cfg.digest:
        raise IntegrityError(
            f"{path} was edited: its threshold, normalization, preprocessing or model content no "
            f"longer matches its digest {cfg.digest[:12]}. If the edit is intended, run "
            f"`defectflow seal {path}`: the model then gets a new id"
        )
    return cfg
