"""The summary statistics against scipy and against published numbers, on fixed inputs."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from models import stats

# Wikipedia's first worked example of Welch's t-test: t = -2.46, ν ≈ 24.99, p = 0.021.
A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


def test_describe_matches_r_t_test_interval() -> None:
    # R: t.test(1:5) → 95 percent confidence interval 1.036757 4.963243
    d = stats.describe([1, 2, 3, 4, 5])
    assert (d.n, d.mean, d.median, d.min, d.max) == (5, 3.0, 3.0, 1.0, 5.0)
    assert d.std == pytest.approx(math.sqrt(2.5))
    assert d.ci_low == pytest.approx(1.036757, abs=1e-6)
    assert d.ci_high == pytest.approx(4.963243, abs=1e-6)


def test_describe_matches_scipy_on_seed_accuracies() -> None:
    values = [0.9908, 0.9897, 0.9915]
    d = stats.describe(values)
    low, high = scipy_stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values)
    )
    assert d.ci_low == pytest.approx(low) and d.ci_high == pytest.approx(high)
    assert d.std == pytest.approx(np.std(values, ddof=1))


def test_describe_leaves_out_what_is_not_a_number_and_refuses_one_seed_intervals() -> None:
    d = stats.describe([0.5, None, float("nan"), float("inf")])
    assert (d.n, d.mean, d.std, d.ci_low, d.ci_high) == (1, 0.5, None, None, None)
    assert stats.describe([]).mean is None


def test_welch_matches_scipy_and_the_published_example() -> None:
    test = stats.welch(A1, A2)
    reference = scipy_stats.ttest_ind(A1, A2, equal_var=False)
    assert test is not None
    assert test.statistic == pytest.approx(reference.statistic)
    assert test.p_value == pytest.approx(reference.pvalue)
    assert test.df == pytest.approx(reference.df)
    assert (round(test.statistic, 2), round(test.df, 2), round(test.p_value, 3)) == (
        -2.46,
        24.99,
        0.021,
    )
    assert test.difference == pytest.approx(np.mean(A1) - np.mean(A2))


def test_welch_is_undefined_without_spread_or_seeds() -> None:
    assert stats.welch([1.0, 1.0], [2.0, 2.0]) is None
    assert stats.welch([1.0], [2.0, 3.0]) is None


def test_bootstrap_interval_matches_scipy_and_the_p_value_agrees_with_welch() -> None:
    test = stats.bootstrap(A1, A2, resamples=5000, seed=3)
    reference = scipy_stats.bootstrap(
        (np.array(A1), np.array(A2)),
        lambda u, v, axis: u.mean(axis=axis) - v.mean(axis=axis),
        n_resamples=5000,
        method="percentile",
        rng=np.random.default_rng(3),
    )
    assert test is not None
    assert test.ci_low == pytest.approx(reference.confidence_interval.low)
    assert test.ci_high == pytest.approx(reference.confidence_interval.high)
    assert test.ci_high < 0  # A1 is lower: the interval excludes no difference
    assert 0.0 < test.p_value < 0.05
    same = stats.bootstrap(A1, A1, resamples=2000)
    assert same is not None and same.ci_low < 0 < same.ci_high and same.p_value > 0.5


def test_holm_adjustment_on_fixed_numbers() -> None:
    # Sorted 0.01, 0.02, 0.03, 0.04 → 4·0.01, 3·0.02, max(2·0.03, 0.06), max(0.04, 0.06).
    adjusted = stats.holm([0.04, 0.01, None, 0.03, 0.02])
    assert adjusted == pytest.approx([0.06, 0.04, None, 0.06, 0.06])
    assert stats.holm([0.9, 0.8]) == [1.0, 1.0]


@pytest.mark.parametrize(
    ("times", "median"),
    [
        ([10.0, 20.0, 30.0], 20.0),
        ([10.0, None, 30.0], 30.0),  # the slow seed that never arrived pushes the median up
        ([10.0, None, None], None),  # most seeds never reached the target
        ([10.0, 20.0, None, None], None),  # half: the median is the mean of 20 and ∞
        ([], None),
    ],
)
def test_median_time_to_target_counts_not_reached_as_infinite(
    times: list[float | None], median: float | None
) -> None:
    assert stats.median_time_to_target(times) == median
