"""A threshold's stated false-alarm rate holds on exchangeable normals, says when it cannot be
stated, and a batch that flags more than it allows raises the production alarm."""

from __future__ import annotations

import numpy as np
import pytest

from defectflow.config import ThresholdConfig
from defectflow.false_alarms import (
    FalseAlarmRate,
    check_batch,
    conformal_threshold,
    count_interval,
    needed_n,
    stated_rate,
)
from defectflow.models.thresholds import calibrate


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_conformal_threshold_realized_rate_is_within_its_stated_interval(alpha):
    """Over many calibration sets the realized rate on fresh normals averages at most the target
    and falls inside the stated 90% interval about 90% of the time."""
    rng = np.random.default_rng(7)
    n, realized, inside = 300, [], 0
    for _ in range(400):
        value, rate = conformal_threshold(rng.gamma(2.0, 1.0, n), alpha)
        fresh = rng.gamma(2.0, 1.0, 20000)
        r = float((fresh >= value).mean())
        realized.append(r)
        inside += rate.low <= r <= rate.high
        assert rate.target == alpha and rate.n == n and rate.attainable
    assert np.mean(realized) <= alpha + 0.003
    assert np.mean(realized) > alpha * 0.6  # not conservative to uselessness
    assert 0.83 <= inside / 400 <= 0.96


def test_the_realized_count_on_a_test_set_is_within_the_allowed_range_90_percent_of_the_time():
    rng = np.random.default_rng(3)
    inside = 0
    for _ in range(400):
        value, rate = conformal_threshold(rng.normal(0, 1, 200), 0.05)
        lo, hi = count_interval(rate, 150)
        inside += lo <= int((rng.normal(0, 1, 150) >= value).sum()) <= hi
    assert 0.85 <= inside / 400 <= 0.99


def test_too_few_normals_for_the_target_says_how_many_are_needed():
    value, rate = conformal_threshold(np.arange(36.0), 0.01)
    assert not rate.attainable and value == 35.0
    assert needed_n(0.01) == 99 and "at least 99 normal images" in rate.note
    assert rate.expected == pytest.approx(1 / 37, abs=1e-6)
    t = calibrate(
        [
            {"image_id": f"n{i}", "label": "normal", "score": float(i), "fold": i % 5}
            for i in range(36)
        ],
        ThresholdConfig(policy="fpr", fpr=0.01),
        folds=5,
    )
    assert t.false_alarms is not None and not t.false_alarms.attainable


def test_every_policy_states_its_rate_from_the_normals_below_it():
    normal = np.linspace(0, 1, 101)
    rate = stated_rate(normal, 0.5)
    assert rate.rank == 51 and rate.expected == pytest.approx(51 / 102, abs=1e-6)
    assert stated_rate(normal, -1).expected == 1.0  # every normal flagged


def test_the_production_alarm_fires_on_a_shifted_batch_and_stays_quiet_otherwise():
    rng = np.random.default_rng(11)
    value, rate = conformal_threshold(rng.normal(0, 1, 500), 0.05)
    quiet = 0
    for _ in range(300):
        batch = rng.normal(0, 1, 400)
        quiet += not check_batch(int((batch >= value).sum()), 400, rate).alarm
    assert quiet >= 298  # an unchanged line: the alarm (p < 0.001) almost never fires
    shifted = rng.normal(0.7, 1, 400)  # new lighting: every score a bit higher
    c = check_batch(int((shifted >= value).sum()), 400, rate)
    assert c.alarm and "no longer holds" in c.message and c.p_value < 0.001
    # the same batch, when the user says a fifth of the parts are defective, is allowed
    assert not check_batch(int((shifted >= value).sum()), 400, rate, 0.2).alarm
    assert not check_batch(5, 10, None).alarm  # no stated rate: not checked, never an alarm


def test_a_model_delivered_before_stated_rates_keeps_its_id_and_states_none():
    """infer_config.json written by the release before `false_alarms` existed (demo patchcore):
    it verifies (same digest, same model id) and its batches are not checked."""
    from conftest import REPO

    from defectflow.artifacts.infer_config import read_infer_config

    cfg = read_infer_config(REPO / "tests/data/infer_config_before_false_alarms.json")
    assert cfg.threshold.false_alarms is None and cfg.digest.startswith("58d35d4e82ca")
    assert check_batch(3, 10, cfg.threshold.false_alarms).message.startswith("not checked")


def test_the_alarm_with_an_expected_defect_rate_is_the_exact_mixture():
    """With defects expected, the chance of a batch's flags on an unchanged line is the mixture of
    defects (binomial) and false alarms (beta-binomial); checked against its exact sum."""
    from scipy import stats

    from defectflow.false_alarms import batch_p_value

    rate = stated_rate(np.arange(100.0), 95.0)
    a, b = rate.n + 1 - rate.rank, rate.rank
    m = 200
    for flagged, d in ((40, 0.1), (60, 0.1), (80, 0.2)):
        exact = sum(
            stats.binom.pmf(good, m, 1 - d)
            * stats.betabinom.sf(flagged - (m - good) - 1, good, a, b)
            for good in range(m + 1)
        )
        assert batch_p_value(flagged, m, rate, d) == pytest.approx(exact, rel=0.01)


def test_the_batch_message_says_within_only_when_the_share_is_within_what_it_quotes():
    """14 of 18 flagged with 50% defects expected: above the quoted 4.9% + 50%, so never
    'within'; stated_rate is the expected rate the report states, the interval's top beside it."""
    rate = FalseAlarmRate(
        target=0.05, expected=0.02, low=0.001, high=0.049, n=60, rank=59, attainable=True
    )
    b = check_batch(14, 18, rate, 0.5)
    assert b.flagged_fraction > b.allowed_fraction and "within" not in b.message
    assert b.stated_rate == 0.02 and b.stated_high == 0.049
    assert "p = " in b.message and "alarm below 0.001" in b.message
    quiet = check_batch(1, 100, rate)
    assert not quiet.alarm and "within the stated false-alarm rate (2.0%" in quiet.message
    loud = check_batch(40, 100, rate)
    assert loud.alarm and "more than the stated" in loud.message
