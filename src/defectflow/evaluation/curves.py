"""Binary ranking curves and their summaries in numpy: ROC, AUROC, average precision, the best
F1 and its threshold.

Results equal scikit-learn's (``roc_auc_score``, ``average_precision_score``, the best point of
``precision_recall_curve``; the tests compare them on tied and untied scores), without importing
it: scikit-learn pulls in scipy.stats and pandas, about a second of start-up in every
calibrate, metrics and report job.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Counts(NamedTuple):
    """Cumulative counts at each distinct score, highest first: a sample is called positive when
    its score is >= ``thresholds[i]``."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    negatives: int


def counts(y: np.ndarray | list, s: np.ndarray | list) -> Counts:
    """True and false positives at every distinct score of ``s`` (labels ``y``: 1 anomalous)."""
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels for {len(s)} scores")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, bool)
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    return Counts(s[last], tp, fp, int(y.sum()), int((~y).sum()))


def roc_curve(y, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds), from (0, 0) at +inf."""
    c = counts(y, s)
    if not c.positives or not c.negatives:
        raise ValueError("a ROC curve needs both classes")
    fpr = np.r_[0.0, c.fp / c.negatives]
    tpr = np.r_[0.0, c.tp / c.positives]
    return fpr, tpr, np.r_[np.inf, c.thresholds]


def roc_auc(y, s) -> float:
    """Area under the ROC curve (ties count half, as the trapezoid between distinct scores)."""
    fpr, tpr, _ = roc_curve(y, s)
    return float(np.trapezoid(tpr, fpr))


def average_precision(y, s) -> float:
    """Precision at each distinct score weighted by the recall it adds (no interpolation)."""
    c = counts(y, s)
    if not c.positives:
        raise ValueError("average precision needs at least one positive")
    precision = c.tp / (c.tp + c.fp)
    recall = c.tp / c.positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def best_f1(y, s) -> tuple[float, float]:
    """The best F1 a threshold ``score >= t`` reaches, and that ``t`` (the lowest ``t`` among
    equal F1s, as scikit-learn's curve order gives)."""
    c = counts(y, s)
    if not c.positives:
        raise ValueError("F1 needs at least one positive")
    f = 2 * c.tp / (c.tp + c.fp + c.positives)  # one division: equal F1s are equal floats
    i = len(f) - 1 - int(np.argmax(f[::-1]))
    return float(f[i]), float(c.thresholds[i])


def confusion(y, pred) -> dict[str, int]:
    """tp, fp, tn, fn of binary predictions."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(pred).astype(bool)
    return {
        "tp": int((y & p).sum()),
        "fp": int((~y & p).sum()),
        "tn": int((~y & ~p).sum()),
        "fn": int((y & ~p).sum()),
    }
