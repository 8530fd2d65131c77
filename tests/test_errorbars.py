"""Standard errors and intervals on Metrics, against a numpy reference written from the formulas
(and scipy for the distribution functions)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import fastce
import reference as ref
from fastce import errorbars


def se_reference(x, w=None):
    """sqrt(n/(n-1) * sum w^2 (x - mean)^2) / sum w (ratio estimator; s/sqrt(n) for unit weights)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=np.float64)
    mean = (w * x).sum() / w.sum()
    n = x.shape[0]
    return math.sqrt(n / (n - 1) * (w * w * (x - mean) ** 2).sum()) / w.sum()


def wilson_reference(p, n, z):
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def per_row(y, z, *, from_logits=True):
    z64 = ref.to_float64(z)
    eps = ref.dtype_eps(z.dtype)
    losses, briers, hits = [], [], []
    for row, label in zip(z64, y):
        losses.append(ref.row_loss_logits(row, label) if from_logits else ref.row_loss_proba(row, label, eps))
        briers.append(ref.row_brier(ref.row_probabilities(row, from_logits=from_logits), label))
        hits.append(ref.row_rank(row, label))
    return np.array(losses), np.array(briers), np.array(hits)


@pytest.mark.parametrize("n_classes", [2, 10, 40])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("from_logits", [True, False])
def test_stderr_matches_the_formula(n_classes, weighted, from_logits):
    rng = np.random.default_rng(n_classes + 10 * weighted + 100 * from_logits)
    n = 3000  # several blocks at every C here
    z = (rng.standard_normal((n, n_classes)) * 2).astype(np.float32)
    if not from_logits:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        z = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    y = rng.integers(0, n_classes, n)
    w = rng.random(n) * 3 if weighted else None
    top_k = (1, 2) if n_classes > 2 else (1,)
    kwargs = {"logits": z} if from_logits else {"proba": z}
    m = fastce.evaluate(y, sample_weight=w, top_k=top_k, **kwargs)
    losses, briers, ranks = per_row(y, z, from_logits=from_logits)
    half = 0.5 if n_classes == 2 else 1.0
    assert m.stderr["cross_entropy"] == pytest.approx(se_reference(losses, w), rel=1e-9)
    assert m.stderr["cross_entropy_bits"] == pytest.approx(se_reference(losses, w) / math.log(2), rel=1e-9)
    assert m.stderr["brier"] == pytest.approx(half * se_reference(briers, w), rel=1e-9)
    for k in top_k:
        assert m.stderr["top_k_accuracy"][k] == pytest.approx(se_reference(ranks < k, w), rel=1e-9)
    assert m.stderr["accuracy"] == m.stderr["top_k_accuracy"][1]
    ww = np.ones(n) if w is None else w
    assert m.n_effective == pytest.approx(ww.sum() ** 2 / (ww**2).sum(), rel=1e-12)
    if not weighted:
        # Unweighted: the textbook s / sqrt(n), ddof = 1.
        assert m.stderr["cross_entropy"] == pytest.approx(np.std(losses, ddof=1) / math.sqrt(n), rel=1e-9)
        assert m.n_effective == n


def test_binary_tasks_carry_stderr():
    rng = np.random.default_rng(3)
    n = 5000
    y = rng.integers(0, 2, n)
    x = rng.standard_normal(n) * 2
    w = rng.random(n)
    m = fastce.evaluate(y, logits=x, sample_weight=w)
    loss = np.logaddexp(0, x) - x * y
    assert m.task == "binary"
    assert m.stderr["cross_entropy"] == pytest.approx(se_reference(loss, w), rel=1e-9)
    assert m.stderr["accuracy"] == pytest.approx(se_reference(((x > 0) == (y == 1)), w), rel=1e-9)
    p = 1 / (1 + np.exp(-x))
    assert m.stderr["brier"] == pytest.approx(se_reference((p - y) ** 2, w), rel=1e-8)
    mp = fastce.evaluate(y, proba=p)
    q = np.clip(np.where(y == 1, p, 1 - p), np.finfo(np.float64).eps, 1 - np.finfo(np.float64).eps)
    assert mp.stderr["cross_entropy"] == pytest.approx(se_reference(-np.log(q)), rel=1e-9)


# Exact scaled integers as the accumulators hold them: a value times 2**OFFSET (most low bits 0), or any integer.
_SCALE = 1 << 1126
_SCALED = st.integers(-(2 ** 80), 2 ** 80).map(lambda v: v << 1060) | st.integers(-(2 ** 1200), 2 ** 1200)


@given(_SCALED.filter(lambda w: w > 0) | st.just(0), _SCALED, _SCALED, _SCALED, _SCALED)
def test_centred_square_sum_is_the_exact_rational_correctly_rounded(weight, total, q0, q1, q2):
    """The common power of two taken out first, the value is still (Q2 W^2 - 2 S W Q1 + S^2 Q0) / (W^2 scale),
    rounded once, clipped below at 0 (inf where beyond float64)."""
    from fractions import Fraction

    got = errorbars.centred_square_sum(weight, total, q0, q1, q2, _SCALE)
    if weight == 0:
        assert got == 0.0
        return
    exact = Fraction(q2 * weight * weight - 2 * total * weight * q1 + total * total * q0, weight * weight * _SCALE)
    try:
        expected = max(0.0, float(exact))
    except OverflowError:
        expected = math.inf if exact > 0 else 0.0
    assert got == expected


def test_intervals():
    rng = np.random.default_rng(4)
    n, c = 2000, 5
    z = rng.standard_normal((n, c))
    y = rng.integers(0, c, n)
    m = fastce.evaluate(y, logits=z, top_k=(1, 3))
    zq = stats.norm.ppf(0.975)
    low, high = m.interval("cross_entropy")
    assert (low, high) == pytest.approx((m.cross_entropy - zq * m.stderr["cross_entropy"],
                                         m.cross_entropy + zq * m.stderr["cross_entropy"]), rel=1e-12)
    assert m.interval("perplexity") == pytest.approx((math.exp(low), math.exp(high)), rel=1e-12)
    bits = m.interval("cross_entropy_bits")
    assert bits == pytest.approx((low / math.log(2), high / math.log(2)), rel=1e-12)
    assert m.interval("accuracy") == pytest.approx(wilson_reference(m.accuracy, n, zq), rel=1e-12)
    z90 = stats.norm.ppf(0.95)
    assert m.interval("top_k_accuracy", 0.90, k=3) == pytest.approx(
        wilson_reference(m.top_k_accuracy[3], n, z90), rel=1e-12
    )
    lo, hi = m.interval("brier", level=0.99)
    assert lo < m.brier < hi
    with pytest.raises(ValueError, match="level"):
        m.interval("accuracy", level=95)
    with pytest.raises(ValueError, match="k=5"):
        m.interval("top_k_accuracy", k=5)
    with pytest.raises(ValueError, match="no interval for 'f1'"):
        m.interval("f1")


def test_wilson_stays_inside_unit_interval_at_the_extremes():
    assert errorbars.wilson_interval(1.0, 50)[1] == 1.0
    low, high = errorbars.wilson_interval(0.0, 50)
    assert low == 0.0 and 0.0 < high < 0.1


def test_weighted_accuracy_interval_uses_kish_effective_size():
    rng = np.random.default_rng(5)
    n = 1000
    z = rng.standard_normal((n, 3))
    y = rng.integers(0, 3, n)
    w = np.where(rng.random(n) < 0.5, 1.0, 4.0)
    m = fastce.evaluate(y, logits=z, sample_weight=w)
    n_eff = w.sum() ** 2 / (w**2).sum()
    assert m.interval("accuracy") == pytest.approx(wilson_reference(m.accuracy, n_eff, stats.norm.ppf(0.975)))


def test_stderr_is_identical_for_any_split_and_thread_count():
    rng = np.random.default_rng(6)
    n, c = 7000, 30
    z = rng.standard_normal((n, c)).astype(np.float32)
    y = rng.integers(0, c, n)
    w = rng.random(n)
    whole = fastce.evaluate(y, logits=z, sample_weight=w, top_k=(1, 5))
    ev = fastce.Evaluator(c, top_k=(1, 5))
    for start, stop in ((0, 1), (1, 1234), (1234, 5000), (5000, n)):
        ev.update(y[start:stop], z[start:stop], sample_weight=w[start:stop])
    assert dict(ev.result().stderr) == dict(whole.stderr)
    assert ev.result().n_effective == whole.n_effective


def test_infinite_loss_gives_infinite_stderr_and_nan_policy_propagate_nan():
    z = np.array([[0.0, -np.inf], [1.0, 0.0], [0.0, 2.0]])
    m = fastce.evaluate(np.array([1, 0, 1]), logits=z)
    assert m.cross_entropy == math.inf and m.stderr["cross_entropy"] == math.inf
    assert math.isfinite(m.stderr["accuracy"])
    z = np.array([[np.nan, 0.0], [1.0, 0.0], [0.0, 2.0]])
    m = fastce.evaluate(np.array([1, 0, 1]), logits=z, nan_policy="propagate")
    assert math.isnan(m.stderr["cross_entropy"]) and math.isnan(m.stderr["accuracy"])


def test_one_row_has_no_stderr():
    m = fastce.evaluate(np.array([0]), logits=np.array([[1.0, 0.0]]))
    assert math.isnan(m.stderr["cross_entropy"])


def test_stderr_survives_the_state_json_round_trip():
    rng = np.random.default_rng(7)
    z = rng.standard_normal((600, 4))
    y = rng.integers(0, 4, 600)
    ev = fastce.Evaluator(4)
    ev.update(y, z)
    again = fastce.Evaluator.from_state_dict(ev.state_dict())
    assert again.result() == ev.result()
    assert dict(again.result().stderr) == dict(ev.result().stderr)


@settings(max_examples=60)
@given(st.integers(0, 400), st.integers(0, 400))
def test_mcnemar_is_scipys_exact_binomial_test(only_a, only_b):
    expected = stats.binomtest(only_b, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    assert errorbars.mcnemar_exact_p(only_a, only_b) == pytest.approx(expected, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("n, k", [(2001, 900), (5000, 2400), (10**6, 499_000), (10**7, 4_990_000), (3000, 1499)])
def test_binomial_tail_for_large_counts(n, k):
    assert errorbars.binomial_half_cdf(n, k) == pytest.approx(stats.binom.cdf(k, n, 0.5), rel=1e-6)


def test_normal_quantile_and_p_value():
    assert errorbars.normal_quantile(0.95) == pytest.approx(stats.norm.ppf(0.975), rel=1e-12)
    assert errorbars.two_sided_normal_p(2.5) == pytest.approx(2 * stats.norm.sf(2.5), rel=1e-12)
    assert errorbars.minimum_detectable_difference(0.01) == pytest.approx(
        (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * 0.01, rel=1e-12
    )


def clustered_reference(x, groups, w=None):
    """sqrt(G/(G-1) * sum_g (sum_{i in g} w_i (x_i - mean))^2) / sum w."""
    x = np.asarray(x, dtype=np.float64)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=np.float64)
    mean = (w * x).sum() / w.sum()
    ids = np.unique(groups)
    per_group = np.array([(w[groups == g] * (x[groups == g] - mean)).sum() for g in ids])
    return math.sqrt(len(ids) / (len(ids) - 1) * (per_group**2).sum()) / w.sum()


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sorted_groups", [False, True])
def test_clustered_stderr_matches_the_formula(weighted, sorted_groups):
    rng = np.random.default_rng(8 + weighted + 2 * sorted_groups)
    n, c = 4000, 12
    z = rng.standard_normal((n, c))  # float64 math: the formula to 1e-9 (float32 math: tests/test_float32_math.py)
    y = rng.integers(0, c, n)
    groups = rng.integers(-50, 250, n).astype(np.int32)
    if sorted_groups:
        groups.sort()
    w = rng.random(n) if weighted else None
    m = fastce.evaluate(y, logits=z, groups=groups, sample_weight=w, top_k=(1, 3))
    plain = fastce.evaluate(y, logits=z, sample_weight=w, top_k=(1, 3))
    losses, briers, ranks = per_row(y, z)
    assert m.n_groups == np.unique(groups).size
    assert m.stderr["cross_entropy"] == pytest.approx(clustered_reference(losses, groups, w), rel=1e-9)
    assert m.stderr["brier"] == pytest.approx(clustered_reference(briers, groups, w), rel=1e-9)
    assert m.stderr["top_k_accuracy"][3] == pytest.approx(clustered_reference(ranks < 3, groups, w), rel=1e-9)
    # The means are evaluate's, bit for bit; only the errors change.
    assert (m.cross_entropy, m.accuracy, m.brier) == (plain.cross_entropy, plain.accuracy, plain.brier)
    # Wilson over the effective size the clustered error implies.
    p, se = m.accuracy, m.stderr["accuracy"]
    assert m.interval("accuracy") == pytest.approx(wilson_reference(p, p * (1 - p) / se**2, stats.norm.ppf(0.975)))


def test_one_group_per_row_is_the_plain_error_and_correlated_groups_widen_it():
    rng = np.random.default_rng(9)
    n, c = 3000, 5
    z = rng.standard_normal((n, c))
    y = rng.integers(0, c, n)
    plain = fastce.evaluate(y, logits=z)
    each = fastce.evaluate(y, logits=z, groups=np.arange(n))
    assert each.stderr["cross_entropy"] == pytest.approx(plain.stderr["cross_entropy"], rel=1e-9)
    # Rows repeated in blocks of 10 (perfectly correlated within a group): ~sqrt(10) wider.
    zz, yy = np.repeat(z[:300], 10, axis=0), np.repeat(y[:300], 10)
    wide = fastce.evaluate(yy, logits=zz, groups=np.repeat(np.arange(300), 10))
    narrow = fastce.evaluate(yy, logits=zz)
    assert wide.stderr["cross_entropy"] / narrow.stderr["cross_entropy"] == pytest.approx(math.sqrt(10), rel=0.05)


def test_groups_errors():
    z = np.zeros((4, 3))
    y = np.array([0, 1, 2, 0])
    with pytest.raises(fastce.InputError, match="one id per row"):
        fastce.evaluate(y, logits=z, groups=[1, 2])
    with pytest.raises(fastce.InputError, match="integer ids"):
        fastce.evaluate(y, logits=z, groups=np.array(["a", "b", "c", "d"]))


@pytest.mark.parametrize("weighted", [False, True])
def test_multilabel_errors_take_rows_as_units(weighted):
    rng = np.random.default_rng(16)
    n, c = 3000, 6
    y = (rng.random((n, c)) < 0.4).astype(np.int64)
    z = rng.standard_normal((n, c)) + (2 * y - 1)
    w = rng.random(n) if weighted else None
    m = fastce.evaluate(y, logits=z, sample_weight=w)
    assert m.task == "multilabel"
    element = np.logaddexp(0, z) - z * y  # per-element BCE from logits
    p = 1 / (1 + np.exp(-z))
    hits = (z > 0) == (y == 1)
    rows = {
        "cross_entropy": element.mean(axis=1), "brier": ((p - y) ** 2).mean(axis=1),
        "hamming_accuracy": hits.mean(axis=1), "subset_accuracy": hits.all(axis=1) * 1.0,
    }
    for name, x in rows.items():
        assert m.stderr[name] == pytest.approx(se_reference(x, w), rel=1e-8), name
    assert m.stderr["accuracy"] == m.stderr["subset_accuracy"]
    low, high = m.interval("hamming_accuracy")
    assert low < m.hamming_accuracy < high
    assert m.interval("subset_accuracy") == m.interval("accuracy")


def test_soft_target_errors():
    rng = np.random.default_rng(17)
    n, c = 2000, 5
    z = rng.standard_normal((n, c))
    t = rng.dirichlet(np.ones(c), n)
    m = fastce.evaluate(t, logits=z)
    assert m.task == "soft"
    log_p = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
    ce = -(t * log_p).sum(axis=1)
    entropy = -(t * np.log(t)).sum(axis=1)
    agree = np.argmax(z, axis=1) == np.argmax(t, axis=1)
    assert m.stderr["cross_entropy"] == pytest.approx(se_reference(ce), rel=1e-8)
    assert m.stderr["target_entropy"] == pytest.approx(se_reference(entropy), rel=1e-8)
    assert m.stderr["kl_divergence"] == pytest.approx(se_reference(ce - entropy), rel=1e-6)
    assert m.stderr["accuracy"] == pytest.approx(se_reference(agree), rel=1e-9)
    assert m.interval("kl_divergence")[0] < m.kl_divergence < m.interval("kl_divergence")[1]
    with pytest.raises(ValueError, match="no interval for 'brier' in a 'soft' result"):
        m.interval("brier")


# -- edges a bug hunt found (each once gave a number that was not the statistic's) -------------------------------


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95, 0.99, 0.999])
def test_wilson_reaches_zero_and_one_with_the_proportion(level):
    # Rounding left 13 right rows of 13 at (0.77, 0.9999999999999999): an interval without its estimate.
    for n in range(1, 400):
        assert errorbars.wilson_interval(1.0, float(n), level)[1] == 1.0
        assert errorbars.wilson_interval(0.0, float(n), level)[0] == 0.0
        p = 1.0 / n
        low, high = errorbars.wilson_interval(p, float(n), level)
        assert low <= p <= high
    m = fastce.evaluate(np.zeros(13, dtype=np.int64), logits=np.tile([1.0, 0.0], (13, 1)))
    low, high = m.interval("accuracy")
    assert m.accuracy == 1.0 and low < 1.0 and high == 1.0


def test_clustered_accuracy_interval_of_one_group_is_unknown_not_the_rows_own():
    rng = np.random.default_rng(3)
    z, y = rng.standard_normal((1000, 3)), rng.integers(0, 3, 1000)
    m = fastce.evaluate(y, logits=z, groups=np.zeros(1000, dtype=np.int64))
    assert math.isnan(m.stderr["top_k_accuracy"][1])
    assert all(math.isnan(x) for x in m.interval("accuracy"))
    assert all(math.isnan(x) for x in m.interval("cross_entropy"))


def test_levels_are_checked_as_input_and_numpy_numbers_are_numbers():
    m = fastce.evaluate(np.array([0, 1, 1, 0]), logits=np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]]))
    assert m.interval("accuracy", np.float64(0.9)) == m.interval("accuracy", 0.9)
    assert m.interval("accuracy", np.array(0.9)) == m.interval("accuracy", 0.9)
    assert m.interval("accuracy", np.float32(0.9))[0] == pytest.approx(m.interval("accuracy", 0.9)[0], rel=1e-6)
    for bad in (1.5, 0.0, True, "0.95", 0.9999999999999999, np.array([0.9])):
        with pytest.raises(fastce.InputError, match="level="):
            m.interval("accuracy", bad)
    for bad in (2.0, np.float32(1.0)):
        with pytest.raises(fastce.InputError, match="power="):
            errorbars.minimum_detectable_difference(0.1, power=bad)
    with pytest.raises(fastce.InputError, match="no interval for 'f1'"):
        m.interval("f1")


def test_loss_correlation_of_identical_models_is_one():
    rng = np.random.default_rng(5)
    for n in (2, 3, 700):
        z, y = rng.standard_normal((n, 4)), rng.integers(0, 4, n)
        assert fastce.compare(y, logits={"A": z, "B": z.copy()}).correlation("A", "B") == 1.0
        assert fastce.compare(y, logits={"A": z, "B": -z}).correlation("A", "B") >= -1.0


def test_confidently_wrong_rows_with_an_infinite_loss_carry_an_unknown_share():
    # The kernel adds 0 for a row whose loss difference is not finite; the share was reported as 0.
    z = np.array([[-np.inf, 1.0, 0.0], [3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    y = np.array([0, 0, 1, 2])
    c = fastce.compare(y, logits={"A": z, "B": np.zeros((4, 3))})
    cw = c.confidently_wrong("A", "B")
    assert cw["rows"] == 1 and math.isnan(cw["loss_difference"]) and math.isnan(cw["loss_difference_share"])
    assert math.isnan(c.delta("B", "A", "cross_entropy").estimate)


def test_weights_too_small_to_square_give_unknown_errors_not_zero():
    # Only ratios of sample_weight matter, yet weights of 1e-200 have squares of 0 in float64: every standard
    # error was 0 and every paired test p = 0 ("larger than its error bar"). Now NaN with a warning (as weights
    # too large to square); down to ~1e-154 the errors are the unscaled ones, and clustered errors are exact.
    rng = np.random.default_rng(8)
    n = 40
    y = rng.integers(0, 3, n)
    z = rng.normal(size=(n, 3))
    other = z + 0.1 * rng.normal(size=z.shape)
    w = rng.random(n) + 0.1
    target = (rng.random((n, 4)) > 0.5).astype(float)
    multilabel = rng.normal(size=(n, 4))
    groups = np.arange(n) % 5

    def errors(scale):
        m = fastce.evaluate(y, logits=z, sample_weight=w * scale)
        d = fastce.compare(y, logits={"A": z, "B": other}, sample_weight=w * scale).delta("B", "A")
        ml = fastce.evaluate(target, logits=multilabel, sample_weight=w * scale)
        clustered = fastce.evaluate(y, logits=z, sample_weight=w * scale, groups=groups)
        return m.stderr["cross_entropy"], m.n_effective, d.stderr, d.p_value, ml.stderr["cross_entropy"], \
            clustered.stderr["cross_entropy"]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unscaled = errors(1.0)
        assert all(math.isfinite(e) and e > 0 for e in unscaled)
        np.testing.assert_allclose(errors(2.0 ** -500), unscaled, rtol=1e-12)
    for scale in (1e-160, 1e-200, 1e-300):
        with pytest.warns(fastce.FastCEWarning, match="squares of the weighted per-row values fall below"):
            small = errors(scale)
        assert all(math.isnan(e) for e in small[:5])
        assert math.isclose(small[5], unscaled[5], rel_tol=1e-12)


def test_weighted_values_too_small_to_square_give_unknown_errors_and_zero_losses_a_zero_error():
    # Weights of 1e-153 square fine (1e-306), but times confident rows' losses of ~1e-11 the squares (1e-328)
    # underflow: the loss's error was exactly 0, with no warning, and compare printed p < 0.001.
    rng = np.random.default_rng(5)
    n = 2000
    y = rng.integers(0, 3, n)
    z = rng.normal(size=(n, 3))
    z[np.arange(n), y] += 25.0  # confident and right: losses ~1e-11
    other = z + 0.01 * rng.normal(size=z.shape)
    w = rng.uniform(0.5, 1.5, n)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unscaled = fastce.evaluate(y, logits=z, sample_weight=w).stderr["cross_entropy"]
        assert unscaled > 0
    with pytest.warns(fastce.FastCEWarning, match="squares of the weighted per-row values"):
        m = fastce.evaluate(y, logits=z, sample_weight=w * 1e-153)
        d = fastce.compare(y, logits={"A": z, "B": other}, sample_weight=w * 1e-153).delta("B", "A")
    assert math.isnan(m.stderr["cross_entropy"]) and math.isnan(d.stderr) and math.isnan(d.p_value)
    assert math.isfinite(m.stderr["top_k_accuracy"][1])  # hits of 1 square fine: that error stays known
    # Losses of exactly 0 on every row: sums of squares of 0 are exact, and so is their error of 0.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zero = fastce.evaluate(np.zeros(10, np.int64), logits=np.tile([0.0, -np.inf, -np.inf], (10, 1)))
    assert zero.cross_entropy == 0.0 and zero.stderr["cross_entropy"] == 0.0
