"""Statistics for an ablation-sweep report: a mean across seeds and a difference between two configs, each with
a Student's t interval (Welch's for unpaired differences) and, for differences, a two-sided p-value.

Standard library + numpy only, so a report needs no SciPy at run time (the tests check the numbers against SciPy).
Non-finite values (failed or diverged runs) are dropped; an interval from fewer than 2 seeds is nan.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from plm_jax.errors import UserError

_CF_EPS, _CF_TINY = 1e-15, 1e-300
_CORNISH_FISHER_DF = 1e5  # above this t_quantile uses the expansion about the normal quantile (error << 1e-12)
# t_cdf's relative error is ~df * 1e-16 (I_x(df/2, 1/2) is that sensitive to x); from 1e9 on, the normal CDF is as
# close (~1e-7 for |t| < 5). Sweeps over seeds have df < 1000.
_NORMAL_CDF_DF = 1e9


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (Numerical Recipes' betacf, modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
    h = d
    for m in range(1, 1000 + 20 * int(math.sqrt(max(a, b)))):  # worst case needs O(sqrt(max(a, b))) terms
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > _CF_TINY else _CF_TINY
            h *= d * c
        if abs(d * c - 1.0) < _CF_EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge for a={a}, b={b}, x={x}")


def _log_beta(a: float, b: float) -> float:
    """log B(a, b); for a large, lgamma(a) - lgamma(a + b) by Stirling's series, which lgamma would cancel away."""
    small, big = min(a, b), max(a, b)
    if big < 100.0:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    s = lambda x: 1 / (12 * x) - 1 / (360 * x**3) + 1 / (1260 * x**5)  # next term: < 1e-17 for x >= 100
    total = big + small
    return (math.lgamma(small) - (big - 0.5) * math.log1p(small / big) - small * math.log(total) + small
            + s(big) - s(total))


def _betainc(a: float, b: float, x: float, y: float, log_x: float, log_y: float) -> float:
    """Regularized incomplete beta I_x(a, b); y = 1 - x and the logs are passed in so that no side loses digits."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    front = math.exp(a * log_x + b * log_y - _log_beta(a, b))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def _t_sf(t: float, df: float) -> float:
    """Upper tail P(T > t) of Student's t, accurate in the tail (no 1 - cdf cancellation) for p-values."""
    if math.isinf(df) or df > _NORMAL_CDF_DF:
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    r = t * t / df  # x = 1 / (1 + r), y = r / (1 + r)
    if math.isnan(t) or r == 0.0:
        return 0.5 + t
    log_x = -math.log1p(r)
    if math.isinf(r):  # |t| > ~1e154: the tail's leading term, (df / t^2)^(df/2) / (df B), is exact in doubles
        tail = math.exp(0.5 * df * (math.log(df) - 2 * math.log(abs(t))) - math.log(df) - _log_beta(0.5 * df, 0.5))
    else:
        tail = 0.5 * _betainc(0.5 * df, 0.5, 1.0 / (1.0 + r), r / (1.0 + r), log_x, math.log(r) + log_x)
    return tail if t >= 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t with (possibly non-integer) df, from the regularized incomplete beta function."""
    if not df > 0:
        raise UserError(f"df must be > 0, got {df}")
    return _t_sf(-t, df)


def _t_pdf(t: float, df: float) -> float:
    """Density of Student's t: the derivative for the Newton steps in t_quantile."""
    return math.exp(-0.5 * (df + 1.0) * math.log1p(t * t / df) - 0.5 * math.log(df) - _log_beta(0.5 * df, 0.5))


def _cornish_fisher(z: float, df: float) -> float:
    """t quantile from the normal quantile z by the expansion in 1/df (Abramowitz & Stegun 26.7.5), for large df."""
    z2 = z * z
    g = (z * (z2 + 1) / 4, z * ((5 * z2 + 16) * z2 + 3) / 96, z * (((3 * z2 + 19) * z2 + 17) * z2 - 15) / 384,
         z * ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) / 92160)
    return z + sum(gk / df ** (k + 1) for k, gk in enumerate(g))


def t_quantile(p: float, df: float) -> float:
    """Inverse CDF of Student's t for any df > 0 (Welch's df is not an integer), to ~1e-12 relative."""
    if not df > 0:
        raise UserError(f"df must be > 0, got {df}")
    if not 0.0 <= p <= 1.0:
        raise UserError(f"p must be in [0, 1], got {p}")
    if p in (0.0, 1.0):
        return math.copysign(math.inf, p - 0.5)
    if p == 0.5:
        return 0.0
    if math.isinf(df):
        return NormalDist().inv_cdf(p)
    if df > _CORNISH_FISHER_DF:
        return _cornish_fisher(NormalDist().inv_cdf(p), df)
    q, sign = (p, -1.0) if p < 0.5 else (1.0 - p, 1.0)  # solve P(T > t) = q for t > 0
    lo, hi = 0.0, max(1.0, _cornish_fisher(-NormalDist().inv_cdf(q), max(df, 4.0)))
    while _t_sf(hi, df) > q:  # heavy tails (df ~ 1) can put the root far beyond the normal-based guess
        lo, hi = hi, 2.0 * hi
    t = hi
    for _ in range(200):  # Newton, falling back to bisection whenever a step leaves the bracket
        f = _t_sf(t, df) - q
        if f == 0.0:
            break
        lo, hi = (t, hi) if f > 0 else (lo, t)
        pdf = _t_pdf(t, df)
        new = t + f / pdf if pdf > 0 else math.nan  # the density underflows far out in a heavy tail
        new = new if lo < new < hi else 0.5 * (lo + hi)
        done = abs(new - t) <= 1e-14 * new or hi - lo <= 1e-15 * hi
        t = new
        if done:
            break
    return sign * t


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its t interval. n: the finite values behind it (seeds; pairs for a paired difference;
    a's seeds for an unpaired one, with b's in n_b). df is 0 when there is no interval (n < 2)."""

    estimate: float
    low: float
    high: float
    n: int
    df: float
    confidence: float
    p_value: float = math.nan  # two-sided, for differences (H0: no difference); nan for a mean or when undefined
    n_b: int | None = None

    @property
    def includes_zero(self) -> bool:
        """Whether zero is plausible; True also for an undefined (nan) interval, which can rule nothing out."""
        return not (self.low > 0 or self.high < 0)

    def format(self, digits: int = 4, signed: bool = False) -> str:
        """'0.1234 [0.1001, 0.1467]' (signed: '+0.1234 [...]'): the estimate and the interval for a report table."""
        spec = f"{'+' if signed else ''}.{digits}f"
        return f"{self.estimate:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    def __str__(self) -> str:
        return self.format()


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """The values as a flat float64 array without nan/inf: failed runs do not count as seeds."""
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def _mean_var(x: np.ndarray) -> tuple[float, float]:
    """Mean and sample variance (ddof=1); exactly (value, 0) for equal values, which np.mean can round off."""
    return (float(x[0]), 0.0) if x.min() == x.max() else (float(x.mean()), float(x.var(ddof=1)))


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise UserError(f"confidence must be in (0, 1), got {confidence}")


def _t_interval(estimate: float, se: float, df: float, confidence: float, with_p: bool, **counts: int) -> Interval:
    """estimate +- t * se, and with_p the two-sided p-value against estimate == 0."""
    if se == 0.0:  # zero variance: the interval collapses and the difference is certain
        p = (0.0 if estimate != 0.0 else 1.0) if with_p else math.nan
        return Interval(estimate, estimate, estimate, df=df, confidence=confidence, p_value=p, **counts)
    half = t_quantile(0.5 + 0.5 * confidence, df) * se
    p = 2.0 * _t_sf(abs(estimate) / se, df) if with_p else math.nan
    return Interval(estimate, estimate - half, estimate + half, df=df, confidence=confidence, p_value=p, **counts)


def _one_sample(x: np.ndarray, confidence: float, with_p: bool) -> Interval:
    """t interval of the mean of finite values x (nan below 2 values): a mean, or a paired difference."""
    _check_confidence(confidence)
    n = int(x.size)
    if n < 2:
        return Interval(float(x.mean()) if n else math.nan, math.nan, math.nan, n=n, df=0.0, confidence=confidence)
    mean, var = _mean_var(x)
    return _t_interval(mean, math.sqrt(var / n), n - 1.0, confidence, with_p, n=n)


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Mean across seeds with a t interval (sample std, ddof=1): how precisely the seeds pin a config's score."""
    return _one_sample(_finite(values), confidence, with_p=False)


def difference_interval(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, confidence: float = 0.95,
                        paired: bool = False) -> Interval:
    """mean(b) - mean(a) with a Welch (or, paired by seed, a paired) t interval and p-value: is b really better?"""
    if paired:
        a_all, b_all = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
        if a_all.size != b_all.size:
            raise UserError(f"a paired difference needs one value per seed in both configs, got {a_all.size} "
                             f"values in a and {b_all.size} in b")
        return _one_sample(_finite(b_all - a_all), confidence, with_p=True)  # a seed failed in either drops out
    _check_confidence(confidence)
    xa, xb = _finite(a), _finite(b)
    na, nb = int(xa.size), int(xb.size)
    if na < 2 or nb < 2:
        estimate = float(xb.mean() - xa.mean()) if na and nb else math.nan
        return Interval(estimate, math.nan, math.nan, n=na, df=0.0, confidence=confidence, n_b=nb)
    (mean_a, var_a), (mean_b, var_b) = _mean_var(xa), _mean_var(xb)
    va, vb = var_a / na, var_b / nb
    # Welch-Satterthwaite df; with both variances 0 it is 0/0, and the pooled df stands in (zero-width interval).
    df = (va + vb) ** 2 / (va * va / (na - 1) + vb * vb / (nb - 1)) if va + vb > 0 else na + nb - 2.0
    return _t_interval(mean_b - mean_a, math.sqrt(va + vb), df, confidence, True, n=na, n_b=nb)
