"""Image and pixel metrics from predictions (sklearn and anomalib metric code)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from defectflow.contracts import validate
from defectflow.io import write_json_atomic
from defectflow.predictions import PredictionRecord, read_predictions
from defectflow.records import ModelArtifact

log = logging.getLogger(__name__)

MAX_PIXEL_SIDE = 256


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


def _r(x: float) -> float:
    return round(float(x), 6)


def image_metrics(recs: list[PredictionRecord]) -> ImageMetrics:
    scored = [r for r in recs if r.score is not None and r.gt_label in ("normal", "anomaly")]
    y = np.array([r.gt_label == "anomaly" for r in scored], dtype=int)
    s = np.array([r.score for r in scored], dtype=np.float64)
    pred = np.array([r.pred_label == "anomaly" for r in scored], dtype=int)
    n_an, n_no = int(y.sum()), int(len(y) - y.sum())
    out = ImageMetrics(status="ok", n_normal=n_no, n_anomaly=n_an)
    if len(y):
        tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
        out.confusion = {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}
        p, r, f, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
        out.precision, out.recall, out.f1 = _r(p), _r(r), _r(f)
    if n_an and n_no:
        out.auroc, out.aupr = _r(roc_auc_score(y, s)), _r(average_precision_score(y, s))
    else:
        out.status, out.reason = (
            "skipped",
            f"AUROC needs normal and anomalous test images ({n_no} normal, {n_an} anomalous)",
        )
    return out


def per_defect(recs: list[PredictionRecord]) -> dict[str, dict[str, Any]]:
    normals = [r.score for r in recs if r.gt_label == "normal" and r.score is not None]
    out: dict[str, dict[str, Any]] = {}
    for dt in sorted({r.defect_type or "unspecified" for r in recs if r.gt_label == "anomaly"}):
        group = [
            r
            for r in recs
            if r.gt_label == "anomaly"
            and (r.defect_type or "unspecified") == dt
            and r.score is not None
        ]
        entry: dict[str, Any] = {
            "n": len(group),
            "recall": _r(np.mean([r.pred_label == "anomaly" for r in group])) if group else None,
        }
        if group and normals:
            y = [0] * len(normals) + [1] * len(group)
            entry["auroc"] = _r(roc_auc_score(y, normals + [r.score for r in group]))
        out[dt] = entry
    return out


@functools.lru_cache(maxsize=4096)
def _mask(path: str | None, size: int) -> np.ndarray:
    """Binary mask at ``size`` (cached: every model of a category is scored on the same masks)."""
    if path is None:
        return np.zeros((size, size), dtype=np.uint8)
    m = Image.open(path).convert("L").resize((size, size), Image.Resampling.NEAREST)
    return (np.asarray(m) > 0).astype(np.uint8)


def pixel_metrics(
    recs: list[PredictionRecord], masks: dict[str, str | None], maps: dict[str, np.ndarray]
) -> PixelMetrics:
    anomalous = [r for r in recs if r.gt_label == "anomaly" and r.error is None]
    if not maps:
        return PixelMetrics(status="skipped", reason="the model makes no anomaly maps")
    if not anomalous:
        return PixelMetrics(status="skipped", reason="no anomalous test image")
    no_mask = [r.image_id for r in anomalous if not masks.get(r.image_id)]
    if no_mask:
        return PixelMetrics(
            status="skipped",
            reason=f"{len(no_mask)} of {len(anomalous)} anomalous test images have no mask",
        )
    import torch
    from anomalib.metrics.aupro import _AUPRO

    scored = [r for r in recs if r.image_id in maps and r.gt_label in ("normal", "anomaly")]
    side = min(next(iter(maps.values())).shape[0], MAX_PIXEL_SIDE)
    preds, targets = [], []
    for r in scored:
        m = torch.from_numpy(maps[r.image_id].astype(np.float32))[None, None]
        if m.shape[-1] != side:
            m = torch.nn.functional.interpolate(
                m, size=(side, side), mode="bilinear", align_corners=False
            )
        preds.append(m[0, 0])
        targets.append(
            torch.from_numpy(
                _mask(masks.get(r.image_id) if r.gt_label == "anomaly" else None, side)
            )
        )
    p, t = torch.stack(preds), torch.stack(targets)
    auroc = roc_auc_score(t.flatten().numpy(), p.flatten().numpy())
    aupro = _AUPRO(fpr_limit=0.3)
    aupro.update(p, t.int())
    return PixelMetrics(
        status="ok", auroc=_r(auroc), aupro=_r(float(aupro.compute())), resolution=side
    )


def compute_metrics(
    recs: list[PredictionRecord],
    masks: dict[str, str | None],
    maps: dict[str, np.ndarray],
    dataset: str,
    category: str,
    model: str,
) -> Metrics:
    return Metrics(
        dataset=dataset, category=category, model=model, model_id=recs[0].model_id if recs else "",
        n_images=len(recs), n_errors=sum(r.error is not None for r in recs),
        image=image_metrics(recs), per_defect_type=per_defect(recs), pixel=pixel_metrics(recs, masks, maps),
    )  # fmt: skip


def run_metrics(predictions: list[str], maps_files: list[str], table: str | Path, dataset: str, category: str,
                models: list[str], outs: list[str]) -> list[Metrics]:  # fmt: skip
    """Snakemake entry point: every model's predictions of one category + masks -> metrics.json each."""
    from safetensors.numpy import load_file

    from defectflow.standardize import read_standardized

    masks = {
        r["image_id"]: r["mask_path"] for r in read_standardized(table) if r["category"] == category
    }
    done = []
    for pred, maps_file, model, out in zip(predictions, maps_files, models, outs, strict=True):
        recs = read_predictions(pred)
        maps = {
            k: v.astype(np.float32) for k, v in load_file(str(maps_file)).items() if k != "_empty"
        }
        m = compute_metrics(recs, masks, maps, dataset, category, model)
        data = m.model_dump(mode="json")
        validate("metrics", data, where=str(out))
        write_json_atomic(out, data)
        pixel = m.pixel.auroc if m.pixel.status == "ok" else m.pixel.reason
        log.info(
            "%s/%s/%s: image AUROC %s, F1 %s, pixel %s",
            dataset,
            category,
            model,
            m.image.auroc,
            m.image.f1,
            pixel,
        )
        done.append(m)
    return done
