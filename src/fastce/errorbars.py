"""Error bars from mergeable sums: standard errors, intervals and paired tests.

Everything here works on a handful of exact sums a state already holds, never
on rows, so an error bar costs no pass over the data and merges like every
other statistic.  For a mean of per-row values x_i with row weights w_i
(w_i = 1 unweighted) the sums are

    W = sum w,  S = sum w x,  Q0 = sum w^2,  Q1 = sum w^2 x,  Q2 = sum w^2 x^2

and the standard error is the linearised (ratio-estimator) one,

    se^2 = n / (n - 1) * sum w^2 (x - mean)^2 / W^2,   mean = S / W,

which for unit weights is the textbook s / sqrt(n) with ddof = 1.  The
centred sum is expanded as Q2 - 2 mean Q1 + mean^2 Q0 and evaluated in exact
rational arithmetic from the exact accumulators, so the only rounding before
the final division is each row's float64 product (w^2 x^2) and the float64
sum inside each block of rows: no catastrophic cancellation however many rows
there are.  Those roundings leave se^2 off by at most about (block rows + 1)
float64 eps times Q2 / W^2, which shows only where the values are (nearly)
constant: two rows whose differences are both 1/3 give se 2.5e-9, not 0.

Only the standard library is used (statistics.NormalDist for quantiles,
math.lgamma / math.erfc): scipy is a test oracle, not a dependency.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from fastce.errors import InputError



@functools.cache
def _standard_normal():
    # statistics imports fractions and decimal (~20 ms of every `import fastce`, half of fastce's own import time
    # besides numba's), for the error bars only: imported at their first use.
    from statistics import NormalDist

    return NormalDist()


def check_level(level, name: str = "level") -> float:
    """A confidence level (or power) strictly between 0 and 1, a Python or numpy number, or an InputError (a
    ValueError) that says so; also refused: levels so near 1 that the normal quantile is not a finite number."""
    if isinstance(level, np.ndarray) and level.ndim == 0:
        level = level[()]
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, numbers.Real) or not 0.0 < float(level) < 1.0:
        raise InputError(f"{name}={level!r} must be a number strictly between 0 and 1, e.g. 0.95.", argument=name,
                         value=level)
    if not 0.5 + float(level) / 2.0 < 1.0:
        raise InputError(f"{name}={level!r} is too close to 1 for a finite normal quantile; pass at most 1 - 1e-15.",
                         argument=name, value=level)
    return float(level)


def normal_quantile(level: float) -> float:
    """z such that a standard normal lies in [-z, z] with probability ``level``."""
    return _standard_normal().inv_cdf(0.5 + check_level(level) / 2.0)


def centred_square_sum(weight: int, total: int, q0: int, q1: int, q2: int, scale: int) -> float:
    """sum w^2 (x - S/W)^2 from exact scaled integers (value = integer / scale).

    Arguments are the exact integers of W, S, Q0, Q1, Q2 (see module
    docstring), each the real value times ``scale``.  Returns a float64
    (0.0 when W is 0); tiny negative results of per-block rounding are
    clipped to 0.
    """
    if weight == 0:
        return 0.0
    # The integers are ~1100-bit (scaled by 2**1126), and most low bits are 0: dividing all five and the
    # scale by their common power of two changes no value (each term of the numerator and the denominator
    # carries three of the factors) and makes the products below small (~16 -> ~2 us a call).
    common = weight | total | q0 | q1 | q2
    shift = min((common & -common).bit_length() - 1, scale.bit_length() - 1)
    if shift > 0:
        weight, total, q0, q1, q2, scale = (weight >> shift, total >> shift, q0 >> shift, q1 >> shift, q2 >> shift,
                                            scale >> shift)
    # (Q2 W^2 - 2 S W Q1 + S^2 Q0) / W^2, all scaled by `scale` once.
    numerator = q2 * weight * weight - 2 * total * weight * q1 + total * total * q0
    try:
        # Python's int / int is correctly rounded, as float(Fraction(...)) is (which divides the same way
        # after reducing by a gcd of these ~3300-bit integers: 16% of a 10-row evaluate's time, cProfile).
        return max(0.0, numerator / (weight * weight * scale))
    except OverflowError:  # an exact sum beyond float64: the error is that large
        return math.inf if numerator > 0 else 0.0


def squares_underflow(n: int, q0: int, q2: int, total: int, scale: int) -> bool:
    """Whether a standard error's exact sums of ``n`` rows' squared weights (``q0 / scale``) or squared weighted
    values (``q2 / scale``, sum (w x)^2; ``total``: sum w x) may be off by more than 2**-40 of themselves: their
    terms below float64's normal range, each keeping only its bits above 2**-1075.  Every weight below ~1e-154
    (1e-200 gave a q0 of 0), or every weighted value (1e-153 times losses of 1e-11 gave a q2 of 0): the error,
    which scales with them, is then unknown; it had been 0, and a paired test's p 0.  A q2 of 0 with a total of 0
    is values of 0, whose error is 0."""
    tiny = n * scale
    return n > 0 and (q0 << 1030 < tiny or (q2 << 1030 < tiny and (q2 != 0 or total != 0)))


# The warning of squares_underflow (every door's standard errors).
SMALL_WEIGHTS = ("standard errors are unknown (NaN): the squares of the weighted per-row values fall below "
                 "float64's range (weights, or weights times the rows' values, below ~1e-154 on every row), and "
                 "weights that small also round the means (every product of a weight and a loss below ~1e-308). "
                 "Only ratios of sample_weight matter: multiply it by a large constant (1 / its maximum, say).")


def standard_error(n: int, weight_sum: float, centred: float) -> float:
    """sqrt(n / (n - 1) * centred) / weight_sum; NaN below two rows."""
    if n < 2 or not weight_sum > 0.0:
        return math.nan
    if not math.isfinite(centred):
        return math.inf if centred > 0 else math.nan
    return math.sqrt(n / (n - 1) * centred) / weight_sum


def normal_interval(estimate: float, stderr: float, level: float = 0.95) -> tuple[float, float]:
    """estimate -/+ z * stderr (the CLT interval)."""
    z = normal_quantile(level)
    if math.isnan(estimate) or math.isnan(stderr):
        return (math.nan, math.nan)
    if math.isinf(stderr):
        return (-math.inf, math.inf)
    return (estimate - z * stderr, estimate + z * stderr)


def wilson_interval(p: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``p`` observed over ``n`` (possibly effective) trials.

    Unlike p -/+ z sqrt(p(1-p)/n) it stays inside [0, 1] and does not
    collapse to a point at p = 0 or 1.  For weighted rows callers pass Kish's
    effective sample size (sum w)^2 / sum w^2 as ``n``.
    """
    z = normal_quantile(level)
    if not n > 0.0 or math.isnan(p):
        return (math.nan, math.nan)
    z2 = z * z
    centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n)
    half = z * math.sqrt(max(0.0, p * (1.0 - p)) / n + z2 / (4.0 * n * n)) / (1.0 + z2 / n)
    # The interval holds p, and reaches 0 or 1 when p does (rounding left 13 right rows of 13 at
    # (0.77, 0.9999999999999999)).
    return (0.0 if p == 0.0 else min(p, max(0.0, centre - half)), 1.0 if p == 1.0 else max(p, min(1.0, centre + half)))


def two_sided_normal_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z (the paired z-test's p-value)."""
    if math.isnan(z):
        return math.nan
    return math.erfc(abs(z) / math.sqrt(2.0))


def _log_binomial_half_pmf(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2.0)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = tiny if abs(d) < tiny else d
    d = 1.0 / d
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def binomial_half_cdf(n: int, k: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), accurate in the far tail (no summation of n terms)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if n <= 2000:
        # Exact enough and simple: sum the terms from the tail inwards in logs.
        logs = [_log_binomial_half_pmf(n, j) for j in range(k + 1)]
        top = max(logs)
        return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))
    # P(X <= k) = I_{1/2}(n - k, k + 1), the regularised incomplete beta.
    a, b, x = float(n - k), float(k + 1), 0.5
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1.0 - x)
    if x < (a + 1.0) / (a + b + 2.0):
        value = math.exp(log_front) * _betacf(a, b, x) / a
    else:
        value = 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b
    return min(1.0, max(0.0, value))


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: a binomial test of the discordant counts at p = 1/2.

    ``only_a`` rows right under A only, ``only_b`` right under B only.  Equal
    to ``scipy.stats.binomtest(only_b, only_a + only_b, 0.5).pvalue`` (for p
    = 1/2 the two-sided test doubles the smaller tail).
    """
    n = int(only_a) + int(only_b)
    if n == 0:
        return 1.0
    smaller = min(int(only_a), int(only_b))
    if 2 * smaller == n:
        return 1.0
    return min(1.0, 2.0 * binomial_half_cdf(n, smaller))


def minimum_detectable_difference(stderr: float, *, level: float = 0.95, power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at ``level`` detects with probability ``power``.

    (z_{1 - alpha/2} + z_{power}) * stderr: the usual normal-approximation
    power formula for a paired difference with this standard error.
    """
    power = check_level(power, "power")
    return (normal_quantile(level) + _standard_normal().inv_cdf(power)) * stderr


def error_of_sums(n: int, weight: int, total: int, q0: int, q1: int, q2: int, *, scale_down: float = 1.0) -> float:
    """Standard error of the mean ``total / weight`` from the exact accumulators' scaled integers.

    ``q0 = sum w^2``, ``q1 = sum w v``, ``q2 = sum v^2`` of the rows'
    contributions ``v = w x`` (see the module docstring), each an integer
    of ``_exactsum`` (the sum times 2**OFFSET: ``_exactsum.to_ints``); the
    error is divided by ``scale_down`` (a mean over C elements per row: C).
    """
    from fastce import _exactsum

    scale = 1 << _exactsum.OFFSET
    centred = centred_square_sum(weight, total, q0, q1, q2, scale)
    return standard_error(n, weight / scale, centred) / scale_down
