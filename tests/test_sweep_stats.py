"""Sweep statistics: Student's t quantiles/CDF, mean and difference intervals and p-values, checked against SciPy."""

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats

from plm_jax.sweep.stats import Interval, difference_interval, mean_interval, t_cdf, t_quantile

PS = (0.5, 0.9, 0.975, 0.995, 0.025, 1e-4)
DFS = (1, 2, 2.7, 3, 5, 10.3, 30, 200, 1e6)


def _scores(seed: int, n: int, mean: float = 0.8, std: float = 0.02) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, std, n)


@pytest.mark.parametrize("df", DFS)
def test_t_quantile_matches_scipy(df):
    for p in PS:
        assert t_quantile(p, df) == pytest.approx(scipy.stats.t.ppf(p, df), rel=1e-7, abs=1e-12), p


@pytest.mark.parametrize("df", (0.4, 1, 2.7, 10.3, 99.5, 1e3, 5e4, 1e5, 2e5, 1e8, 1e12))
def test_t_quantile_and_cdf_far_tails_and_large_df(df):
    for p in (1e-12, 1e-6, 0.3, 0.7, 0.999, 1 - 1e-9):
        q = t_quantile(p, df)
        assert q == pytest.approx(scipy.stats.t.ppf(p, df), rel=1e-10), p
        assert t_cdf(q, df) == pytest.approx(p, rel=1e-9), p
    for t in (-40.0, -3.0, -0.7, 0.0, 0.2, 2.5, 12.0):
        # I_x(df/2, 1/2) is so sensitive to x that a double x costs ~df * 1e-16 (the module's comment says so).
        rel = 1e-9 if df <= 1e6 else 1e-7
        assert t_cdf(t, df) == pytest.approx(scipy.stats.t.cdf(t, df), rel=rel, abs=1e-300), t


def test_t_quantile_limits_and_errors():
    assert t_quantile(0.975, math.inf) == pytest.approx(scipy.stats.norm.ppf(0.975), rel=1e-12)
    assert t_quantile(0.5, 3) == 0.0 and t_quantile(0.0, 3) == -math.inf and t_quantile(1.0, 3) == math.inf
    assert t_quantile(0.1, 4) == pytest.approx(-t_quantile(0.9, 4), rel=1e-14)
    assert t_cdf(math.inf, 2) == 1.0 and t_cdf(-math.inf, 2) == 0.0 and t_cdf(0.0, 2) == 0.5
    for bad_df in (0, -1, math.nan):
        with pytest.raises(ValueError, match="df must be > 0"):
            t_quantile(0.9, bad_df)
    with pytest.raises(ValueError, match="p must be in"):
        t_quantile(1.5, 3)


@pytest.mark.parametrize("n", (2, 3, 5, 20))
@pytest.mark.parametrize("confidence", (0.95, 0.9))
def test_mean_interval_matches_scipy(n, confidence):
    x = _scores(n, n)
    iv = mean_interval(x, confidence)
    low, high = scipy.stats.t.interval(confidence, n - 1, loc=x.mean(), scale=scipy.stats.sem(x))
    assert iv.estimate == pytest.approx(x.mean(), rel=1e-12)
    assert (iv.low, iv.high) == pytest.approx((low, high), rel=1e-9)
    assert iv.n == n and iv.df == n - 1 and iv.confidence == confidence and math.isnan(iv.p_value)
    assert mean_interval(list(x), confidence) == iv  # lists work as well as arrays


@pytest.mark.parametrize("na, nb, std_b", [(2, 2, 0.02), (3, 5, 0.05), (5, 5, 0.01), (4, 20, 0.1), (20, 3, 0.02)])
def test_unpaired_difference_matches_welch_ttest(na, nb, std_b):
    a, b = _scores(10 + na, na), _scores(20 + nb, nb, mean=0.81, std=std_b)
    ref = scipy.stats.ttest_ind(b, a, equal_var=False)
    for confidence in (0.95, 0.8):
        iv = difference_interval(a, b, confidence)
        ci = ref.confidence_interval(confidence)
        assert iv.estimate == pytest.approx(b.mean() - a.mean(), rel=1e-12)
        assert (iv.low, iv.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
        assert iv.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        assert iv.df == pytest.approx(ref.df, rel=1e-12) and (iv.n, iv.n_b) == (na, nb)


@pytest.mark.parametrize("n", (2, 3, 5, 20))
def test_paired_difference_matches_ttest_rel(n):
    a = _scores(30 + n, n)
    b = a + _scores(40 + n, n, mean=0.005, std=0.01)  # seed effects shared by both configs
    ref = scipy.stats.ttest_rel(b, a)
    for confidence in (0.95, 0.99):
        iv = difference_interval(a, b, confidence, paired=True)
        ci = ref.confidence_interval(confidence)
        assert (iv.estimate, iv.low, iv.high) == pytest.approx(((b - a).mean(), ci.low, ci.high), rel=1e-9)
        assert iv.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        assert iv.n == n and iv.df == n - 1 and iv.n_b is None


def test_includes_zero_agrees_with_scipy():
    a, b = _scores(1, 5), _scores(2, 5)  # one distribution: the interval straddles 0
    ci = scipy.stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert ci.low < 0 < ci.high
    assert difference_interval(a, b).includes_zero and mean_interval(b - a).includes_zero

    c = _scores(3, 5, mean=0.9, std=0.01)  # clearly better than a
    ci = scipy.stats.ttest_ind(c, a, equal_var=False).confidence_interval(0.95)
    assert 0 < ci.low
    assert not difference_interval(a, c).includes_zero and not difference_interval(c, a).includes_zero
    paired_ci = scipy.stats.ttest_rel(c, a).confidence_interval(0.95)
    assert 0 < paired_ci.low and not difference_interval(a, c, paired=True).includes_zero


def test_single_seed_and_empty_give_nan_intervals():
    iv = mean_interval([0.81])
    assert iv.estimate == 0.81 and math.isnan(iv.low) and math.isnan(iv.high) and iv.n == 1 and iv.df == 0
    assert iv.includes_zero  # one seed cannot rule zero out
    assert str(iv) == "0.8100 [nan, nan]"
    empty = mean_interval([])
    assert math.isnan(empty.estimate) and math.isnan(empty.low) and empty.n == 0
    d = difference_interval([0.8], [0.9, 0.91])
    assert d.estimate == pytest.approx(0.105) and math.isnan(d.low) and math.isnan(d.p_value)
    assert (d.n, d.n_b) == (1, 2)
    d = difference_interval([0.8, 0.82], [0.9, 0.91], paired=True)
    assert not math.isnan(d.low)
    d = difference_interval([0.8, math.nan], [0.9, 0.91], paired=True)
    assert d.estimate == pytest.approx(0.1) and math.isnan(d.high) and d.n == 1


def test_nan_and_inf_values_are_ignored():
    x = _scores(5, 6)
    with_failures = np.concatenate([x[:3], [math.nan], x[3:], [math.inf]])
    assert mean_interval(with_failures) == mean_interval(x) and mean_interval(with_failures).n == 6
    y = _scores(6, 4, mean=0.82)
    assert difference_interval(with_failures, [*y, math.nan]) == difference_interval(x, y)
    a, b = np.array([0.80, 0.81, math.nan, 0.79, 0.80]), np.array([0.82, math.nan, 0.83, 0.80, 0.83])
    keep = np.isfinite(a) & np.isfinite(b)  # a seed that failed in either config drops out of the pairs
    iv = difference_interval(a, b, paired=True)
    ref = scipy.stats.ttest_rel(b[keep], a[keep])
    assert (iv.low, iv.high) == pytest.approx(tuple(ref.confidence_interval()), rel=1e-9) and iv.n == 3


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # SciPy, on constant data
def test_zero_variance():
    iv = mean_interval([0.1, 0.1, 0.1])  # np.mean would give 0.10000000000000002 here
    assert (iv.estimate, iv.low, iv.high, iv.n, iv.df) == (0.1, 0.1, 0.1, 3, 2)
    d = difference_interval([0.25, 0.25, 0.25], [0.5, 0.5])
    assert (d.estimate, d.low, d.high, d.p_value) == (0.25, 0.25, 0.25, 0.0) and not d.includes_zero
    same = difference_interval([0.25, 0.25], [0.25, 0.25, 0.25])
    assert (same.estimate, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0) and same.includes_zero
    a = np.array([0.25, 0.5, 0.75])
    p = difference_interval(a, a + 0.125, paired=True)  # a constant per-seed gain
    assert (p.estimate, p.low, p.high, p.p_value) == (0.125, 0.125, 0.125, 0.0)
    # Only one group constant: Welch is still defined, and SciPy agrees.
    b = _scores(7, 4)
    ref = scipy.stats.ttest_ind(b, [0.75] * 3, equal_var=False)
    iv = difference_interval([0.75] * 3, b)
    assert (iv.low, iv.high, iv.p_value) == pytest.approx((*ref.confidence_interval(), ref.pvalue), rel=1e-9)


def test_paired_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match=r"got 3 values in a and 4 in b"):
        difference_interval([0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4], paired=True)
    difference_interval([0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4])  # unpaired: any lengths


def test_bad_confidence_raises():
    for confidence in (0.0, 1.0, 95):
        with pytest.raises(ValueError, match="confidence"):
            mean_interval([0.1, 0.2], confidence)
        with pytest.raises(ValueError, match="confidence"):
            difference_interval([0.1, 0.2], [0.3, 0.4], confidence, paired=True)


def test_interval_format_and_frozen():
    iv = Interval(0.12344, 0.10006, 0.14671, n=5, df=4.0, confidence=0.95)
    assert str(iv) == "0.1234 [0.1001, 0.1467]" == iv.format()
    assert iv.format(digits=2) == "0.12 [0.10, 0.15]"
    assert not iv.includes_zero and Interval(0.01, -0.01, 0.03, 5, 4.0, 0.95).includes_zero
    with pytest.raises(dataclasses.FrozenInstanceError):
        iv.low = 0.0
