"""Calibrated p-values of raw scores against out-of-sample good scores, and their combination.

A member model's raw score means nothing to another model; its p-value against that model's own
out-of-sample scores of good parts (leave-one-out, see ``models.train.cross_fit``) does: the
share of good parts that score at least as high. Summing ``-log p`` over members (Fisher's
statistic, halved) gives one score in which a member that sees a defect clearly counts without
any member's scale dominating. Its own threshold rests on the same statistic computed for every
training good part out of sample (its p-values against the other good parts' scores), so the
combination is calibrated like any other model, not by Fisher's chi-square (members are
dependent: they share the backbone).

Numpy only: the delivered model imports this.
"""

from __future__ import annotations

import numpy as np


def tail_scale(ref: np.ndarray) -> float:
    """Scale of the exponential tail beyond the highest good score: the mean excess of the good
    scores above their median (the maximum-likelihood scale of an exponential upper half)."""
    ref = np.asarray(ref, np.float64)
    med = float(np.median(ref))
    above = ref[ref > med] - med
    scale = float(above.mean()) if len(above) else 0.0
    return max(scale, 1e-12 * max(1.0, abs(med)))


def neg_log_pvalues(scores: np.ndarray, ref: np.ndarray, scale: float | None = None) -> np.ndarray:
    """``-log p`` of each score against the sorted good scores ``ref`` (n of them).

    Within the good scores, p is the conformal p-value ``(1 + #{ref >= s}) / (n + 1)`` made
    continuous by linear interpolation between neighbouring good scores (ties would throw away
    the order of scores between them). Beyond the highest good score, where the empirical
    p-value is stuck at ``1/(n+1)``, it decays exponentially with ``scale`` (:func:`tail_scale`):
    a defect far beyond every good part counts more than one just beyond. Below the lowest good
    score it goes on linearly with the same scale (below 0 further down): the order of low scores is
    kept (most pixels of a map are there). Strictly increasing in the score.
    """
    ref = np.sort(np.asarray(ref, np.float64))
    s = np.asarray(scores, np.float64)
    n = len(ref)
    if n == 0:
        return np.zeros_like(s)
    scale = tail_scale(ref) if scale is None else scale
    # survival count: n at or below the lowest good score, 0 at the highest, linear between
    if n > 1:
        above = np.interp(s, ref, np.arange(n - 1, -1, -1, dtype=np.float64))
    else:
        above = np.zeros_like(s)
    p = (1.0 + above) / (n + 1.0)
    nlp = -np.log(p)
    beyond = s > ref[-1]
    nlp[beyond] = np.log(n + 1.0) + (s[beyond] - ref[-1]) / scale
    below = s < ref[0]
    nlp[below] = np.log((n + 1.0) / n) + (s[below] - ref[0]) / scale
    return nlp


def loo_neg_log_pvalues(ref: np.ndarray) -> np.ndarray:
    """``-log p`` of each good score against the other good scores: what a new good part's
    score gets against all of them (exchangeable with it). Each score its own fold of
    :func:`out_of_fold_neg_log_pvalues`."""
    folds = np.arange(len(ref))
    return out_of_fold_neg_log_pvalues(ref, folds, ref, folds)


def out_of_fold_neg_log_pvalues(
    scores: np.ndarray, folds: np.ndarray, ref: np.ndarray, ref_folds: np.ndarray
) -> np.ndarray:
    """``-log p`` of each score against the good scores of the other folds only: for a training
    good part (or a synthetic defect made from one), the good parts its own fold's model was
    calibrated without."""
    scores, folds = np.asarray(scores, np.float64), np.asarray(folds)
    ref, ref_folds = np.asarray(ref, np.float64), np.asarray(ref_folds)
    out = np.empty(len(scores))
    for f in np.unique(folds):
        rows = folds == f
        out[rows] = neg_log_pvalues(scores[rows], ref[ref_folds != f])
    return out


def fisher(members: list[np.ndarray]) -> np.ndarray:
    """Fisher's statistic (halved): the sum of the members' ``-log p``."""
    return np.sum(np.stack(members), axis=0)
