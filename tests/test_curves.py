"""defectflow.evaluation.curves against scikit-learn on tied and untied scores, and the jobs that use them
start without importing scikit-learn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from defectflow.evaluation import curves


def _cases():
    rng = np.random.default_rng(0)
    for n, decimals in ((12, None), (60, 1), (300, 2), (41, 0)):
        y = rng.random(n) < 0.3
        y[:2] = [True, False]
        s = rng.standard_normal(n) + 1.2 * y
        yield y.astype(int), (s if decimals is None else np.round(s, decimals))


@pytest.mark.parametrize("y,s", list(_cases()))
def test_ranking_summaries_equal_scikit_learn(y, s):
    assert curves.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert curves.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    prec, rec, thr = precision_recall_curve(y, s)
    f = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
    f1, t = curves.best_f1(y, s)
    assert f1 == pytest.approx(f[:-1].max(), abs=1e-12)
    # the threshold reaches that F1 with the rule `score >= t`
    pred = s >= t
    assert 2 * (pred & (y == 1)).sum() / (pred.sum() + y.sum()) == pytest.approx(f1)
    fpr, tpr, _ = curves.roc_curve(y, s)
    sk_fpr, sk_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    pred = s > np.median(s)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert curves.confusion(y, pred) == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def test_best_f1_takes_the_lowest_of_equal_thresholds_and_refuses_one_class():
    # thresholds 3 (tp 1, fp 0: F1 2/3) and 1 (tp 2, fp 2: F1 2/3): the lower one
    f1, t = curves.best_f1([1, 0, 0, 1], [3.0, 2.0, 2.0, 1.0])
    assert f1 == pytest.approx(2 / 3) and t == 1.0
    with pytest.raises(ValueError, match="both classes"):
        curves.roc_auc([0, 0], [1.0, 2.0])
    with pytest.raises(ValueError, match="labels"):
        curves.counts([0, 1, 1], [1.0, 2.0])


def test_calibrate_metrics_and_report_jobs_start_without_scikit_learn():
    code = (
        "import sys, defectflow.models.calibrate, defectflow.evaluation.metrics, defectflow.evaluation.report, "
        "defectflow.models.thresholds; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sklearn', 'scipy', 'pandas')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
