"""Statistics for comparing configurations over seeds, with scipy doing the distributions.

- `describe`: n, mean, sample standard deviation (n − 1), and a confidence interval for the mean
  from Student's t (the right interval for the handful of seeds a study runs).
- `welch`: Welch's unequal-variances t-test between two configurations.
- `bootstrap`: a percentile bootstrap of the difference of means, with a two-sided p-value read
  off the bootstrap distribution (fixed seed: the same study gives the same report).
- `holm`: Holm–Bonferroni adjusted p-values, because a summary tests the best configuration
  against every other one at once.
- `median_time_to_target`: AlgoPerf's convention — a seed that never reached the target counts
  as an infinite time, so the median is "not reached" (None) when half or more did not reach it.

Degenerate inputs answer None instead of a number that would mislead: a mean of nothing, a
spread or interval from one seed, a test between groups that have no spread at all.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats  # type: ignore[import-untyped]

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Described:
    n: int
    mean: float | None
    std: float | None  # sample standard deviation (ddof=1); None for n < 2
    ci_low: float | None  # Student's t interval for the mean; None for n < 2
    ci_high: float | None
    median: float | None
    min: float | None
    max: float | None


def _finite(values: Sequence[float | None]) -> np.ndarray:
    array = np.array([v for v in values if v is not None], dtype=np.float64)
    return array[np.isfinite(array)]


def describe(values: Sequence[float | None], confidence: float = CONFIDENCE) -> Described:
    """Summary of the finite values (None, NaN and ±inf are left out and not counted)."""
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Described(0, None, None, None, None, None, None, None)
    mean = float(x.mean())
    if n == 1:
        return Described(1, mean, None, None, None, mean, mean, mean)
    std = float(x.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Described(
        n=n,
        mean=mean,
        std=std,
        ci_low=mean - half,
        ci_high=mean + half,
        median=float(np.median(x)),
        min=float(x.min()),
        max=float(x.max()),
    )


@dataclass(frozen=True)
class Test:
    """A two-sided comparison of group a against group b."""

    method: str  # "welch" | "bootstrap"
    difference: float  # mean(a) − mean(b)
    p_value: float
    statistic: float | None = None  # Welch's t
    df: float | None = None  # Welch–Satterthwaite degrees of freedom
    ci_low: float | None = None  # interval for the difference (bootstrap)
    ci_high: float | None = None


def welch(a: Sequence[float | None], b: Sequence[float | None]) -> Test | None:
    x, y = _finite(a), _finite(b)
    if len(x) < 2 or len(y) < 2:
        return None
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    if vx + vy == 0:
        return None  # no spread in either group: the t statistic is undefined
    result = scipy_stats.ttest_ind(x, y, equal_var=False)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    return Test(
        method="welch",
        difference=float(x.mean() - y.mean()),
        p_value=float(result.pvalue),
        statistic=float(result.statistic),
        df=float(df),
    )


def bootstrap(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    resamples: int = 10_000,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Test | None:
    """Percentile bootstrap of mean(a) − mean(b), each group resampled on its own. The p-value
    is twice the smaller share of bootstrap differences on either side of zero."""
    x, y = _finite(a), _finite(b)
    if len(x) < 2 or len(y) < 2:
        return None
    result = scipy_stats.bootstrap(
        (x, y),
        lambda u, v, axis: u.mean(axis=axis) - v.mean(axis=axis),
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    differences = result.bootstrap_distribution
    below = float(np.mean(differences <= 0))
    above = float(np.mean(differences >= 0))
    return Test(
        method="bootstrap",
        difference=float(x.mean() - y.mean()),
        p_value=min(1.0, 2 * min(below, above)),
        ci_low=float(result.confidence_interval.low),
        ci_high=float(result.confidence_interval.high),
    )


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni step-down adjustment, in the input's order (None stays None)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def median_time_to_target(times: Sequence[float | None]) -> float | None:
    """Median over seeds of the time (or steps) to reach the target; a seed that did not reach
    it (None) counts as infinitely slow. None when the median itself is "not reached"."""
    if not times:
        return None
    array = np.array([math.inf if t is None else t for t in times], dtype=np.float64)
    median = float(np.median(array))
    return None if math.isinf(median) or math.isnan(median) else median
