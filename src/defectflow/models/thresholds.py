"""Threshold calibration on out-of-sample scores, outside the model graph, and score
normalization (threshold -> 0.5).

The scores come from cross-fitting: every training normal is scored by a model that did not see
it (k folds over the train normals), so a normal-quantile threshold rests on as many normal
scores as there are training images instead of a handful of held-out ones. Val images (held
out, never fitted; by default carved from test when no val anomaly exists) are scored by the
delivered model; with labelled anomalies among them the threshold is F1-optimal on them.
Without them (good parts only) it is the conformal threshold for a false-alarm rate (``fpr``).
Every threshold states the false-alarm rate it implies on new normals (``false_alarms``).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

from defectflow.artifacts.infer_config import CatchRate, OperatingPoint, Threshold
from defectflow.config import ThresholdConfig
from defectflow.errors import ModelError
from defectflow.evaluation.curves import best_f1
from defectflow.false_alarms import beta_quantile, conformal_threshold, stated_rate

log = logging.getLogger(__name__)


def fingerprint(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def _f1_optimal(normal: np.ndarray, anomaly: np.ndarray) -> tuple[float, float]:
    """The F1-optimal threshold and its F1. Every threshold between the best one (a calibration
    score) and the next lower score gives the same F1 on the calibration scores; the midpoint
    keeps a margin on both sides (placed at the best score itself, the threshold misses new
    anomalies scoring a hair below the lowest one caught: on battery weld the midpoint halves
    the mean F1 gap on held-out images)."""

    scores = np.r_[normal, anomaly]
    y = np.r_[np.zeros(len(normal)), np.ones(len(anomaly))]
    f1, value = best_f1(y, scores)
    below = scores[scores < value]
    if len(below):
        value = float((below.max() + value) / 2)
    return value, f1


def calibrate(
    rows: list[dict[str, Any]],
    cfg: ThresholdConfig,
    folds: int,
    synthetic: list[dict[str, Any]] | None = None,
) -> Threshold:
    """Choose the threshold by ``cfg.policy`` from calibration score rows (``score``, ``label``,
    ``image_id``, ``fold``: the cross-fit fold of a training normal, -1 for a held-out image
    scored by the delivered model).

    ``f1_optimal`` rests on the held-out labelled images (val) when there are at least
    ``min_anomalies`` normal ones among them: they come from the distribution the model will see
    (a val carved from test shares its conditions and its share of defects), while out-of-fold
    scores of training normals run high where training images are few. With fewer held-out
    normals the cross-fitted ones join them. ``fpr`` and ``normal_quantile`` use every normal
    score: cross-fit scores of training normals and val normals, taken as exchangeable with the
    normals the model will see (the report checks that on test normals)."""
    held = [r for r in rows if r.get("fold", 0) < 0]
    held_normal = np.array([r["score"] for r in held if r["label"] != "anomaly"], np.float64)
    normal = np.array([r["score"] for r in rows if r["label"] != "anomaly"], dtype=np.float64)
    anomaly = np.array([r["score"] for r in rows if r["label"] == "anomaly"], dtype=np.float64)
    policy = cfg.policy
    if policy == "auto":
        policy = "f1_optimal" if len(anomaly) >= cfg.min_anomalies and len(normal) else "fpr"
    f1, rate = None, None
    calibration = "crossfit+val" if held else "crossfit"
    every_normal = normal  # the rate a threshold states rests on all of them, whatever set it
    if policy == "f1_optimal" and len(held_normal) >= cfg.min_anomalies:
        normal, calibration = held_normal, "val"
    if policy == "fixed":
        value = float(cfg.value)  # type: ignore[arg-type]  (the config requires it)
    elif policy == "f1_optimal":
        if not (len(anomaly) and len(normal)):
            raise ModelError(
                f"f1_optimal needs normal and anomalous calibration scores; there are {len(normal)} normal, "
                f"{len(anomaly)} anomalous (add labelled anomalies to the val split, or use normal_quantile)"
            )
        value, f1 = _f1_optimal(normal, anomaly)
    elif policy == "fpr":
        if not len(normal):
            raise ModelError("fpr needs normal calibration scores; there are none")
        value, rate = conformal_threshold(normal, cfg.fpr)
        if not rate.attainable:
            log.warning("threshold: %s", rate.note)
    else:
        if not len(normal):
            raise ModelError("normal_quantile needs normal calibration scores; there are none")
        value = float(np.quantile(normal, cfg.quantile, method="linear"))
    if rate is None and len(every_normal):
        target = 1 - cfg.quantile if policy == "normal_quantile" else None
        rate = stated_rate(every_normal, value, target)
    every = np.r_[normal, anomaly]
    low = float(min(every.min(), value)) if len(every) else 0.0
    spread = max(value - low, 1e-6 * max(abs(value), 1.0))
    stats = (
        {
            k: round(float(v), 6)
            for k, v in zip(
                ("min", "median", "p95", "max"), np.quantile(normal, [0, 0.5, 0.95, 1]), strict=True
            )
        }
        if len(normal)
        else {}
    )
    return Threshold(
        value=value,
        policy=policy,
        quantile=cfg.quantile if policy == "normal_quantile" else None,
        low=low,
        spread=spread,
        n_normal=len(normal),
        n_anomaly=len(anomaly),
        folds=folds,
        normal_scores=stats,
        calibration_ids_sha256=fingerprint([r["image_id"] for r in rows]),
        f1=f1,
        calibration=calibration,
        false_alarms=rate,
        catch_rate=catch_rate(value, synthetic or [], every_normal),
        tradeoff=tradeoff(every_normal, synthetic or []) or None,
    )


TRADEOFF_TARGETS = (0.01, 0.02, 0.05, 0.1, 0.2)


def _auroc(neg: np.ndarray, pos: np.ndarray) -> float | None:
    """P(positive > negative), ties counted half."""
    if not (len(neg) and len(pos)):
        return None
    neg = np.sort(neg)
    below = np.searchsorted(neg, pos, "left")
    at_or_below = np.searchsorted(neg, pos, "right")
    return float((below + (at_or_below - below) / 2).sum() / (len(neg) * len(pos)))


def catch_rate(
    value: float, synthetic: list[dict[str, Any]], normal: np.ndarray
) -> CatchRate | None:
    """The share of synthetic defects (rows: ``score``, ``family``) at or above ``value``, with
    a 90% Clopper-Pearson interval from their count, per family, and their AUROC against the
    out-of-sample good scores ``normal``."""
    if not synthetic:
        return None
    s = np.array([r["score"] for r in synthetic], np.float64)
    k, n = int((s >= value).sum()), len(s)
    fams: dict[str, list[float]] = {}
    for f in sorted({r["family"] for r in synthetic}):
        fs = np.array([r["score"] for r in synthetic if r["family"] == f])
        fams[f] = [
            float((fs >= value).sum()),
            float(len(fs)),
            round(float((fs >= value).mean()), 6),
        ]
    auc = _auroc(np.asarray(normal, np.float64), s)
    return CatchRate(
        expected=round(k / n, 6),
        low=round(beta_quantile(0.05, k, n - k + 1), 6) if k else 0.0,
        high=round(beta_quantile(0.95, k + 1, n - k), 6) if k < n else 1.0,
        flagged=k,
        n=n,
        by_family=fams,
        synthetic_auroc=None if auc is None else round(auc, 6),
    )


def tradeoff(normal: np.ndarray, synthetic: list[dict[str, Any]]) -> list[OperatingPoint]:
    """The conformal threshold at each of :data:`TRADEOFF_TARGETS` on the same normal scores,
    what it states and the share of synthetic defects it flags."""
    if not len(normal):
        return []
    s = np.array([r["score"] for r in synthetic], np.float64)
    out = []
    for target in TRADEOFF_TARGETS:
        value, rate = conformal_threshold(normal, target)
        out.append(
            OperatingPoint(
                target=target,
                value=value,
                expected_false_alarms=rate.expected,
                attainable=rate.attainable,
                catch_rate=round(float((s >= value).mean()), 6) if len(s) else None,
            )
        )
    return out


def follow_threshold(t: Threshold) -> Threshold:
    """The normalization of a hand-edited threshold: 0.5 at the new value wherever it is, 0 at
    the lowest calibration score; a value at or below that score keeps the calibrated spread
    (0 one spread below it), so the normalized scale never collapses. The calibrated value is
    ``low + spread``; where ``value`` differs, it was edited."""
    calibrated = t.low + t.spread
    if abs(t.value - calibrated) <= 1e-9 * max(1.0, abs(calibrated)):
        return t
    floor = t.low if t.low < calibrated else t.normal_scores.get("min", t.low)
    if t.value > floor:
        low, spread = floor, t.value - floor
    else:
        spread = t.spread
        low = t.value - spread
    return t.model_copy(  # the stated false-alarm rate was the calibrated value's, not this one's
        update={
            "low": low,
            "spread": max(spread, 1e-6 * max(abs(t.value), 1.0)),
            "false_alarms": None,
            "catch_rate": None,
            "tradeoff": None,
        }
    )
