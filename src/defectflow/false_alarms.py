"""What a threshold promises about false alarms, from the normal scores it was calibrated on.

With ``n`` out-of-sample normal scores and a threshold at or above ``k`` of them, a new normal
image from the same distribution scores at or above the threshold with probability (its false-alarm
rate) distributed as ``Beta(n + 1 - k, k)`` over calibration sets (exchangeable scores; exact for
a threshold at the ``k``-th smallest score, conservative for one between two scores). The
conformal threshold for a target ``alpha`` is the ``ceil((n + 1)(1 - alpha))``-th smallest score:
its expected rate is at most ``alpha``.

Among ``m`` new normals the count of false alarms is then beta-binomial; a batch with more flagged
images than that allows (plus the defects one expects) is the alarm of a shifted line.

Pure numpy + math (no scipy): ``defectflow infer`` uses it.
"""

from __future__ import annotations

import collections
import functools
import math
import threading

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

LEVEL = 0.9  # the central interval stated everywhere (5% - 95%)
ALARM_P = 0.001  # a batch is flagged when a count this high has a smaller chance than this


class FalseAlarmRate(BaseModel):
    """The false-alarm rate a threshold states (``infer_config.json``, ``threshold``)."""

    model_config = ConfigDict(extra="forbid")
    target: float | None = Field(
        description="the rate asked for (policy fpr; normal_quantile: 1 - quantile); null: none"
    )
    expected: float = Field(
        description="expected false-alarm rate on new normals from the same line"
    )
    low: float = Field(description="5% quantile of the rate over calibration sets of this size")
    high: float = Field(description="95% quantile of the rate (what `defectflow infer` allows)")
    n: int = Field(description="out-of-sample normal scores the statement rests on")
    rank: int = Field(description="normal calibration scores at or below the threshold")
    attainable: bool = Field(
        default=True, description="false: too few normal scores to state the target rate"
    )
    note: str = Field(default="", description="what to do when the target is not attainable")


def conformal_rank(n: int, alpha: float) -> int:
    """``ceil((n + 1)(1 - alpha))``: the rank of the conformal threshold among ``n`` sorted
    scores; more than ``n`` when ``n`` is too small for ``alpha``."""
    return math.ceil((n + 1) * (1 - alpha) - 1e-9)


def needed_n(alpha: float) -> int:
    """The fewest normal scores for which a conformal threshold at ``alpha`` exists."""
    return math.ceil(1 / alpha - 1 - 1e-9)


@functools.lru_cache(maxsize=8)
def _log_factorials(m: int) -> np.ndarray:
    """log(j!) for j = 0..m."""
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, m + 1, dtype=np.float64)))])


def _log_binom_pmf(j: np.ndarray, m: int, p: float) -> np.ndarray:
    lf = _log_factorials(m)
    ji = j.astype(np.int64)
    return lf[m] - lf[ji] - lf[m - ji] + j * math.log(p) + (m - j) * math.log1p(-p)


def binom_sf(x: int, m: int, p: float) -> float:
    """P(X >= x) for X ~ Binomial(m, p)."""
    if x <= 0:
        return 1.0
    if x > m:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    j = np.arange(x, m + 1, dtype=np.float64)
    return float(min(1.0, np.exp(_log_binom_pmf(j, m, p)).sum()))


def beta_cdf(x: float, a: int, b: int) -> float:
    """P(Beta(a, b) <= x) for whole a, b >= 1 (= P(Binomial(a + b - 1, x) >= a))."""
    return binom_sf(a, a + b - 1, x)


def beta_quantile(q: float, a: int, b: int) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def stated_rate(
    normal: np.ndarray, value: float, target: float | None = None, level: float = LEVEL
) -> FalseAlarmRate:
    """What a threshold ``value`` promises, given the normal calibration scores it rests on."""
    normal = np.asarray(normal, np.float64)
    n = len(normal)
    k = int((normal <= value).sum())
    if n == 0 or k == 0:  # every calibration normal is flagged: nothing bounds the rate
        return FalseAlarmRate(target=target, expected=1.0, low=1.0, high=1.0, n=n, rank=k)
    a, b = n + 1 - k, k
    tail = (1 - level) / 2
    return FalseAlarmRate(
        target=target,
        expected=round(a / (n + 1), 6),
        low=round(beta_quantile(tail, a, b), 6),
        high=round(beta_quantile(1 - tail, a, b), 6),
        n=n,
        rank=k,
    )


def conformal_threshold(normal: np.ndarray, alpha: float) -> tuple[float, FalseAlarmRate]:
    """The conformal threshold for a target false-alarm rate ``alpha`` and what it states. With
    too few scores (fewer than :func:`needed_n`), the highest score, stated as unattainable."""
    s = np.sort(np.asarray(normal, np.float64))
    n = len(s)
    k = conformal_rank(n, alpha)
    if k <= n:
        value = float(s[k - 1])
        return value, stated_rate(s, value, alpha)
    value = float(s[-1])
    rate = stated_rate(s, value, alpha)
    note = (
        f"{n} normal scores state no rate below 1/(n+1) = {1 / (n + 1):.3g}; a false-alarm rate of "
        f"{alpha:g} needs at least {needed_n(alpha)} normal images (train normals, or val normals); "
        "the threshold is the highest normal score"
    )
    return value, rate.model_copy(update={"attainable": False, "note": note})


def _count_pmf(rate: FalseAlarmRate, m: int) -> np.ndarray:
    """P(j false alarms among m new normals), j = 0..m: beta-binomial(m, n + 1 - k, k)."""
    a, b = rate.n + 1 - rate.rank, rate.rank
    lf = _log_factorials(m + a + b)
    j = np.arange(m + 1)
    logp = (
        lf[m]
        - lf[j]
        - lf[m - j]
        + lf[j + a - 1]
        + lf[m - j + b - 1]
        - lf[m + a + b - 1]
        - (lf[a - 1] + lf[b - 1] - lf[a + b - 1])
    )
    return np.exp(logp)


def count_interval(rate: FalseAlarmRate, m: int, level: float = LEVEL) -> tuple[int, int]:
    """The central ``level`` interval of the count of false alarms among ``m`` new normals."""
    if rate.rank == 0 or rate.n == 0:
        return m, m
    cdf = np.cumsum(_count_pmf(rate, m))
    tail = (1 - level) / 2
    return int(np.searchsorted(cdf, tail)), int(np.searchsorted(cdf, 1 - tail))


def batch_p_value(
    flagged: int, scored: int, rate: FalseAlarmRate, defect_rate: float = 0.0
) -> float:
    """The chance of ``flagged`` or more flags among ``scored`` images of an unchanged line: each
    image flagged with probability p + d(1 - p) (a false alarm at the rate p, else a defect at the
    rate d), p drawn from the calibration's Beta (beta-binomial; with d > 0 a quadrature over p
    between the Beta's 1e-7 and 1 - 1e-7 quantiles): the spread of a threshold set on n scores
    is part of what is allowed."""
    if rate.rank == 0 or rate.n == 0:
        return 1.0
    if defect_rate == 0:
        return float(min(1.0, _count_pmf(rate, scored)[flagged:].sum()))
    if flagged <= 0:
        return 1.0
    a, b = rate.n + 1 - rate.rank, rate.rank
    p = np.linspace(beta_quantile(1e-7, a, b), beta_quantile(1 - 1e-7, a, b), 201)
    p = np.clip(p, 1e-12, 1 - 1e-12)
    logw = (a - 1) * np.log(p) + (b - 1) * np.log1p(-p)
    w = np.exp(logw - logw.max())
    q = p + defect_rate * (1 - p)  # each image flagged: a false alarm, else a defect
    lf = _log_factorials(scored)
    j = np.arange(flagged, scored + 1)
    logpmf = (lf[scored] - lf[j] - lf[scored - j])[None, :] + (
        j[None, :] * np.log(q)[:, None] + (scored - j)[None, :] * np.log1p(-q)[:, None]
    )
    tails = np.exp(logpmf).sum(axis=1)
    return float(min(1.0, (w * tails).sum() / w.sum()))


class BatchCheck(BaseModel):
    """A batch's flagged fraction against what the threshold's stated rate allows."""

    model_config = ConfigDict(extra="forbid")
    scored: int
    flagged: int
    flagged_fraction: float
    stated_rate: float | None = Field(
        description="the threshold's stated false-alarm rate (expected; as the report states it)"
    )
    stated_high: float | None = Field(
        default=None, description="the 95% quantile of that rate (the top of its 90% interval)"
    )
    expect_defect_rate: float = Field(description="defects the user expects in a batch")
    allowed_fraction: float | None = Field(
        description="the stated rate's 95% quantile + the expected defect rate"
    )
    p_value: float | None = Field(
        description="chance of this many flags or more if the line had not changed"
    )
    alarm: bool
    message: str


def check_batch(
    flagged: int, scored: int, rate: FalseAlarmRate | None, expect_defect_rate: float = 0.0
) -> BatchCheck:
    """An alarm when ``flagged`` of ``scored`` is more than an unchanged line gives: the chance of
    that many flags or more, each image a false alarm at the stated rate (drawn from its Beta) or
    else a defect at the expected rate, is below :data:`ALARM_P`. The message states the test and
    says "within" only when the flagged share is within what it quotes."""
    frac = flagged / scored if scored else 0.0
    if rate is None or scored == 0:
        why = "no stated false-alarm rate" if rate is None else "no image scored"
        return BatchCheck(
            scored=scored,
            flagged=flagged,
            flagged_fraction=round(frac, 6),
            stated_rate=None,
            expect_defect_rate=expect_defect_rate,
            allowed_fraction=None,
            p_value=None,
            alarm=False,
            message=f"not checked: {why}",
        )
    allowed = min(1.0, rate.high + expect_defect_rate)
    p = batch_p_value(flagged, scored, rate, expect_defect_rate)
    alarm = p < ALARM_P
    quoted = (
        f"the stated false-alarm rate ({rate.expected:.1%}, 90% interval {rate.low:.1%}-"
        f"{rate.high:.1%})"
        + (
            f" plus the expected defect rate ({expect_defect_rate:.1%})"
            if expect_defect_rate
            else ""
        )
    )
    test = f"chance of {flagged} or more flags on an unchanged line p = {p:.2g}; alarm below {ALARM_P:g}"
    head = f"{flagged} of {scored} images flagged ({frac:.1%})"
    if alarm:
        message = (
            f"{head}: more than {quoted} allow ({test}). If the line has changed (lighting, "
            "supplier, camera), the threshold no longer holds: look at the flagged images and "
            "recalibrate on new normals; if defects are simply more frequent, pass "
            "--expect-defect-rate"
        )
    elif frac > allowed:
        message = (
            f"{head}: above {quoted} (up to {allowed:.1%}), but not yet an alarm ({test}): "
            "too few images to tell a changed line from chance; watch the next ones"
        )
    else:
        message = f"{head}: within {quoted} ({test})"
    return BatchCheck(
        scored=scored,
        flagged=flagged,
        flagged_fraction=round(frac, 6),
        stated_rate=rate.expected,
        stated_high=rate.high,
        expect_defect_rate=expect_defect_rate,
        allowed_fraction=round(allowed, 6),
        p_value=float(f"{p:.4g}"),
        alarm=alarm,
        message=message,
    )


class RollingAlarm:
    """:func:`check_batch` over the last ``window`` scored images of a running stream (a service,
    a watched folder): where drift shows. Thread-safe."""

    def __init__(
        self, rate: FalseAlarmRate | None, window: int = 500, expect_defect_rate: float = 0.0
    ) -> None:
        self.rate, self.window, self.expect = rate, window, expect_defect_rate
        self._flags: collections.deque[bool] = collections.deque(maxlen=window)
        self._lock = threading.Lock()
        self._last: BatchCheck | None = None

    def add(self, flagged: bool) -> None:
        with self._lock:
            self._flags.append(flagged)
            self._last = None

    def check(self) -> BatchCheck:
        """The test over the window as it stands (cached until the next image)."""
        with self._lock:
            if self._last is None:
                self._last = check_batch(sum(self._flags), len(self._flags), self.rate, self.expect)
            return self._last
