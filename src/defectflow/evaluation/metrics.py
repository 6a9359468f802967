"""Image and pixel metrics from predictions and stored maps (numpy; no torch, no scikit-learn)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from defectflow.artifacts.infer_config import Threshold, read_infer_config
from defectflow.artifacts.metrics import (
    FalseAlarmCheck,
    ImageMetrics,
    Metrics,
    PixelMetrics,
    ScoreShift,
    write_metrics,
)
from defectflow.artifacts.predictions import PredictionRecord, read_predictions
from defectflow.artifacts.scores import read_maps, read_scores
from defectflow.artifacts.standardized import category_rows
from defectflow.evaluation.curves import average_precision, best_f1, confusion, roc_auc
from defectflow.false_alarms import count_interval
from defectflow.records import Label

log = logging.getLogger(__name__)

MAX_PIXEL_SIDE = 256


def _r(x: float) -> float:
    return round(float(x), 6)


def image_metrics(recs: list[PredictionRecord]) -> ImageMetrics:
    scored = [
        r for r in recs if r.score is not None and r.gt_label in (Label.NORMAL, Label.ANOMALY)
    ]
    y = np.array([r.gt_label == Label.ANOMALY for r in scored], dtype=int)
    s = np.array([r.score for r in scored], dtype=np.float64)
    pred = np.array([r.pred_label == Label.ANOMALY for r in scored], dtype=int)
    n_an, n_no = int(y.sum()), int(len(y) - y.sum())
    out = ImageMetrics(status="ok", n_normal=n_no, n_anomaly=n_an)
    if len(y):
        out.confusion = c = confusion(y, pred)
        tp, fp, fn = c["tp"], c["fp"], c["fn"]
        out.precision = _r(tp / (tp + fp) if tp + fp else 0.0)
        out.recall = _r(tp / (tp + fn) if tp + fn else 0.0)
        out.f1 = _r(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    if n_an and n_no:
        out.auroc, out.aupr = _r(roc_auc(y, s)), _r(average_precision(y, s))
        bf, bt = best_f1(y, s)
        out.best_f1, out.best_f1_threshold = _r(bf), _r(bt)
        out.f1_gap = _r(max(bf - (out.f1 or 0.0), 0.0))  # never -0.0
    else:
        out.status, out.reason = (
            "skipped",
            f"AUROC needs normal and anomalous test images ({n_no} normal, {n_an} anomalous)",
        )
    return out


def per_defect(recs: list[PredictionRecord]) -> dict[str, dict[str, Any]]:
    normals = [r.score for r in recs if r.gt_label == Label.NORMAL and r.score is not None]
    out: dict[str, dict[str, Any]] = {}
    anomalies = [r for r in recs if r.gt_label == Label.ANOMALY and r.score is not None]
    for dt in sorted({r.defect_type or "unspecified" for r in anomalies}):
        group = [r for r in anomalies if (r.defect_type or "unspecified") == dt]
        entry: dict[str, Any] = {
            "n": len(group),
            "recall": _r(np.mean([r.pred_label == Label.ANOMALY for r in group])),
        }
        if normals:
            y = [0] * len(normals) + [1] * len(group)
            entry["auroc"] = _r(roc_auc(y, normals + [r.score for r in group]))
        out[dt] = entry
    return out


@functools.lru_cache(maxsize=4096)
def _mask(path: str | None, size: int) -> np.ndarray:
    """Binary mask at ``size`` (cached: every model of a category is scored on the same masks)."""
    if path is None:
        return np.zeros((size, size), dtype=bool)
    m = Image.open(path).convert("L").resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(m) > 0


def pixel_curves(
    maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3
) -> tuple[float, float]:
    """Pixel AUROC and AUPRO from one sort of every pixel score.

    AUPRO: the area under the per-region-overlap curve up to ``fpr_limit`` false-positive rate,
    normalized to [0, 1] (Bergmann et al., MVTec AD); each connected defect region weighs the
    same whatever its size, FPR is over all normal pixels. Exact: every distinct score is a
    threshold (ties share one point). ``maps`` float ``[N, H, W]``; ``masks`` bool ``[N, H, W]``.
    """
    # lazy: scipy (0.3-0.5 s) only where it is used, not on every import of the module
    from scipy import ndimage

    region = np.zeros(masks.shape, dtype=np.int32)
    n_regions = 0
    for i in range(len(masks)):
        lab, n = ndimage.label(masks[i])
        region[i] = np.where(lab > 0, lab + n_regions, 0)
        n_regions += n
    scores = maps.ravel().astype(np.float32)
    reg = region.ravel()
    n_neg = int((reg == 0).sum())
    n_pos = len(reg) - n_neg
    if n_regions == 0 or n_neg == 0:
        return float("nan"), float("nan")
    order = np.argsort(-scores, kind="stable")
    s_sorted, r_sorted = scores[order], reg[order]
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # one point per distinct threshold
    fp = np.cumsum(r_sorted == 0)[last]
    tp = np.cumsum(r_sorted > 0)[last]
    fpr, tpr = np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]
    auroc = float(np.trapezoid(tpr, fpr))
    sizes = np.bincount(reg, minlength=n_regions + 1).astype(np.float64)
    d_pro = np.where(r_sorted > 0, 1.0 / (sizes[r_sorted] * n_regions), 0.0)
    pro = np.r_[0.0, np.cumsum(d_pro)[last]]
    cut = np.searchsorted(fpr, fpr_limit, side="right")
    if cut < len(fpr):  # interpolate the curve at fpr_limit
        f0, f1, p0, p1 = fpr[cut - 1], fpr[cut], pro[cut - 1], pro[cut]
        p_lim = p0 + (p1 - p0) * (fpr_limit - f0) / max(f1 - f0, 1e-12)
        fpr, pro = np.r_[fpr[:cut], fpr_limit], np.r_[pro[:cut], p_lim]
    return auroc, float(np.trapezoid(pro, fpr) / fpr_limit)


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """See :func:`pixel_curves`."""
    return pixel_curves(maps, masks, fpr_limit)[1]


def pixel_metrics(
    recs: list[PredictionRecord], masks: dict[str, str | None], maps: dict[str, np.ndarray]
) -> PixelMetrics:
    anomalous = [r for r in recs if r.gt_label == Label.ANOMALY and r.error is None]
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
    scored = [r for r in recs if r.image_id in maps and r.gt_label in (Label.NORMAL, Label.ANOMALY)]
    side = min(next(iter(maps.values())).shape[0], MAX_PIXEL_SIDE)
    preds, targets = [], []
    for r in scored:
        m = maps[r.image_id]
        if m.shape[0] != side:
            m = np.asarray(
                Image.fromarray(m.astype(np.float32)).resize(
                    (side, side), Image.Resampling.BILINEAR
                )
            )
        preds.append(m)
        targets.append(_mask(masks.get(r.image_id) if r.gt_label == Label.ANOMALY else None, side))
    auroc, pro = pixel_curves(np.stack(preds), np.stack(targets))
    return PixelMetrics(status="ok", auroc=_r(auroc), aupro=_r(pro), resolution=side)


def score_shift(calibration: np.ndarray, test: np.ndarray) -> ScoreShift:
    """Do the test normals score like the normals the threshold was calibrated on? (two-sample
    Kolmogorov-Smirnov; the direction by the medians)."""
    # lazy: scipy.stats (about 1 s) only where the check runs
    from scipy.stats import ks_2samp

    res = ks_2samp(calibration, test)
    differs = bool(res.pvalue < 0.01)
    higher = float(np.median(test)) > float(np.median(calibration))
    direction = ("higher" if higher else "lower") if differs else "alike"
    meaning = {
        "higher": "the test normals score higher than the normals the threshold was set on: "
        "expect more false alarms than stated (new conditions on the line, or too few or too "
        "uniform training images); recalibrate on normals of the current line",
        "lower": "the test normals score lower than the normals the threshold was set on (the "
        "cross-fit scores of few training images run high): expect fewer false alarms than "
        "stated and defects near the threshold missed; more training normals, or val normals "
        "from the line, bring the threshold down",
        "alike": "the test normals score like the calibration normals: the stated rate applies",
    }[direction]
    return ScoreShift(
        statistic=round(float(res.statistic), 6),
        p_value=float(f"{res.pvalue:.4g}"),
        differs=differs,
        direction=direction,
        meaning=meaning,
    )


def false_alarm_check(
    recs: list[PredictionRecord], calibration_normals: np.ndarray, t: Threshold
) -> FalseAlarmCheck:
    """The realized false-alarm rate on the test normals against the one the threshold states
    (its beta-binomial 90% interval for that many normals), and a test of the assumption under
    it (the test normals score like the calibration normals)."""
    scored = [r for r in recs if r.gt_label == Label.NORMAL and r.score is not None]
    if not scored:
        return FalseAlarmCheck(status="skipped", reason="no normal image in test")
    normal = np.array([r.score for r in scored], np.float64)
    flagged = sum(r.pred_label == Label.ANOMALY for r in scored)  # as delivered
    shift = score_shift(calibration_normals, normal) if len(calibration_normals) >= 2 else None
    if t.false_alarms is None:
        return FalseAlarmCheck(
            status="skipped",
            reason="the threshold states no false-alarm rate (edited by hand and sealed)",
            n_normal=len(normal),
            false_alarms=flagged,
            realized=round(flagged / len(normal), 6),
            shift=shift,
        )
    lo, hi = count_interval(t.false_alarms, len(normal))
    verdict = (
        "holds"
        if lo <= flagged <= hi
        else ("more false alarms than stated" if flagged > hi else "fewer false alarms than stated")
    )
    return FalseAlarmCheck(
        status="ok",
        stated=t.false_alarms,
        n_normal=len(normal),
        false_alarms=flagged,
        realized=round(flagged / len(normal), 6),
        allowed=[lo, hi],
        verdict=verdict,
        shift=shift,
    )


def compute_metrics(
    recs: list[PredictionRecord],
    masks: dict[str, str | None],
    maps: dict[str, np.ndarray],
    *,
    dataset: str,
    category: str,
    model: str,
    threshold: Threshold | None = None,
    calibration_normals: np.ndarray | None = None,
) -> Metrics:
    image = image_metrics(recs)
    if threshold is not None:
        image.threshold, image.threshold_policy = threshold.value, threshold.policy
    return Metrics(
        dataset=dataset,
        category=category,
        model=model,
        model_id=recs[0].model_id if recs else "",
        n_images=len(recs),
        n_errors=sum(r.error is not None for r in recs),
        image=image,
        per_defect_type=per_defect(recs),
        pixel=pixel_metrics(recs, masks, maps),
        false_alarms=false_alarm_check(
            recs,
            np.zeros(0) if calibration_normals is None else calibration_normals,
            threshold,
        )
        if threshold is not None
        else None,
    )


def run_metrics(
    predictions: str | Path,
    maps: list[str],
    infer_config: str | Path,
    *,
    crossfit: str | Path,
    table: str | Path,
    dataset: str,
    category: str,
    model: str,
    out: str | Path,
) -> Metrics:
    """Snakemake entry point: one model's predictions of one category + masks -> metrics.json;
    the calibration normals' scores (``crossfit``) for the false-alarm check."""

    masks = {r["image_id"]: r["mask_path"] for r in category_rows(table, category)}
    thr = read_infer_config(infer_config).threshold
    all_maps = {k: v for f in maps for k, v in read_maps(f).items()}
    m = compute_metrics(
        read_predictions(predictions),
        masks,
        all_maps,
        dataset=dataset,
        category=category,
        model=model,
        threshold=thr,
        calibration_normals=np.array(
            [r["score"] for r in read_scores(crossfit) if r["label"] != "anomaly"], np.float64
        ),
    )
    write_metrics(m, out)
    pixel = m.pixel.auroc if m.pixel.status == "ok" else m.pixel.reason
    fa = m.false_alarms
    if fa is not None and fa.status == "ok":
        log.info(
            "%s/%s/%s: false alarms on test normals %d of %d (%.1f%%), stated %.1f%% "
            "(90%%: %d-%d of %d): %s",
            dataset,
            category,
            model,
            fa.false_alarms,
            fa.n_normal,
            100 * (fa.realized or 0),
            100 * fa.stated.expected,  # type: ignore[union-attr]
            fa.allowed[0],
            fa.allowed[1],
            fa.n_normal,
            fa.verdict,
        )
    log.info(
        "%s/%s/%s: image AUROC %s, F1 %s (best possible %s), pixel %s",
        dataset,
        category,
        model,
        m.image.auroc,
        m.image.f1,
        m.image.best_f1,
        pixel,
    )
    return m
