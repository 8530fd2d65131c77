"""kernels_soft's two kernels: rows of up to 48 classes walked down their columns, longer rows row by row.

Soft targets and label smoothing on short rows take ``_soft_short_tasks``
(kernels_soft.SHORT_MAX_CLASSES); every other row width takes
``_soft_blocks_tasks``.  Each is held to the float64 reference, to the other
(the row-by-row kernel forced onto short rows), on every special value at
every column, and to the same bits for any thread count and any split of the
rows.
"""

from __future__ import annotations

import decimal
import math
from decimal import Decimal

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastce
from fastce import kernels_soft
from reference import soft_cross_entropy_reference
from support import score_dtype_params

WIDTHS = (1, 2, 3, 7, 8, 16, 31, 32, 33, 48, 49)
SPECIALS = (math.nan, math.inf, -math.inf)


@pytest.fixture
def row_by_row(monkeypatch):
    """Every row width on the row-by-row kernel (none counts as short)."""
    monkeypatch.setattr(kernels_soft, "SHORT_MAX_CLASSES", 0)


def _logits(rng, n, c, dtype=np.float64):
    return (rng.normal(scale=4.0, size=(n, c))).astype(dtype)


def _soft(rng, n, c):
    return rng.dirichlet(np.ones(c), size=n)


def _special_rows(rng, c):
    """Clean rows, then one row per (special value, column) and per pair of specials at two columns."""
    rows = [rng.normal(scale=3.0, size=c) for _ in range(5)]
    for j in range(c):
        for value in SPECIALS:
            row = rng.normal(scale=3.0, size=c)
            row[j] = value
            rows.append(row)
            if c > 1:
                other = rng.normal(scale=3.0, size=c)
                other[j], other[(j + 1) % c] = value, -math.inf if value == math.inf else math.inf
                rows.append(other)
    return np.array(rows)


def _both_kernels(monkeypatch, call):
    """call() on the short-row kernel, then with every row on the row-by-row kernel."""
    short = call()
    monkeypatch.setattr(kernels_soft, "SHORT_MAX_CLASSES", 0)
    long = call()
    monkeypatch.undo()
    return short, long


@pytest.mark.parametrize("c", WIDTHS)
@pytest.mark.parametrize("dtype", score_dtype_params())
def test_soft_targets_match_the_reference(rng, c, dtype):
    z = _logits(rng, 700, c, dtype)  # more rows than a block of 512, not a multiple of the walk's 64
    q = _soft(rng, 700, c)
    got = fastce.cross_entropy(z, q, reduction="none")
    # Float32 math past the short rows (float16 / float32 logits, C > SHORT_MAX_CLASSES): within a few float32 ulp.
    rtol = 1e-12 if dtype == np.float64 or c <= kernels_soft.SHORT_MAX_CLASSES else 5e-7
    np.testing.assert_allclose(got, soft_cross_entropy_reference(z, q, reduction="none"), rtol=rtol, atol=1e-14)
    m = fastce.evaluate(q, logits=z, task="soft")
    expected_hits = np.mean(np.argmax(z.astype(np.float64), axis=1) == np.argmax(q, axis=1))
    assert m.accuracy == pytest.approx(expected_hits, abs=1e-15)
    entropy = -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0), axis=1)
    assert m.target_entropy == pytest.approx(entropy.mean(), rel=1e-12)
    assert m.kl_divergence == pytest.approx(got.mean() - entropy.mean(), rel=1e-9, abs=1e-12)
    assert m.cross_entropy == pytest.approx(got.mean(), rel=1e-14)


@pytest.mark.parametrize("c", WIDTHS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_label_smoothing_matches_the_reference(rng, c, weighted, smoothing):
    z = _logits(rng, 700, c)
    y = rng.integers(0, c, 700)
    y[::7] = -100
    w = rng.uniform(0.0, 2.0, c) if weighted else None
    if weighted and c > 1:
        w[c // 2] = 0.0  # a class weighted 0 adds nothing to the smoothing sum, even masked (-inf: 0, not 0 * inf)
        z[::5, c // 2] = -np.inf
    got = fastce.cross_entropy(z, y, weight=w, label_smoothing=smoothing, reduction="none")
    expected = soft_cross_entropy_reference(z, y, weight=w, label_smoothing=smoothing, reduction="none")
    # (the reference's z - logsumexp(z) loses ~1e-15 absolute: the atol)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    mean = fastce.cross_entropy(z, y, weight=w, label_smoothing=smoothing)
    assert mean == pytest.approx(soft_cross_entropy_reference(z, y, weight=w, label_smoothing=smoothing), rel=1e-13)


@pytest.mark.parametrize("c", WIDTHS)
def test_special_values_at_every_column_in_both_kernels(rng, monkeypatch, c):
    """NaN, +inf and all--inf rows are non-finite in both kernels; -inf alone is a masked class."""
    z = _special_rows(rng, c)
    q = _soft(rng, len(z), c)
    y = rng.integers(0, c, len(z))

    def losses():
        soft = fastce.cross_entropy(z, q, reduction="none", nan_policy="propagate")
        smooth = fastce.cross_entropy(z, y, reduction="none", nan_policy="propagate", label_smoothing=0.2)
        return soft, smooth

    (soft, smooth), (soft_long, smooth_long) = _both_kernels(monkeypatch, losses)
    np.testing.assert_allclose(soft, soft_long, rtol=1e-14, atol=0)
    np.testing.assert_allclose(smooth, smooth_long, rtol=1e-14, atol=0)
    np.testing.assert_array_equal(np.isnan(soft), np.isnan(soft_long))
    np.testing.assert_allclose(soft, soft_cross_entropy_reference(z, q, reduction="none"), rtol=1e-13)
    np.testing.assert_allclose(smooth, soft_cross_entropy_reference(z, y, reduction="none", label_smoothing=0.2),
                               rtol=1e-13)
    nonfinite = np.isnan(z).any(axis=1) | np.isposinf(z).any(axis=1) | np.isneginf(z).all(axis=1)
    np.testing.assert_array_equal(np.isnan(soft), nonfinite)
    with pytest.raises(fastce.InputError) as info:
        fastce.cross_entropy(z, q)
    assert info.value.row == int(np.flatnonzero(nonfinite)[0])


@pytest.mark.parametrize("c", (2, 5, 48, 49))
def test_both_kernels_report_the_same_counts_and_first_rows(rng, monkeypatch, c):
    """Argmax agreement (ties: the first column), bad and unnormalized target rows, infinite losses and the first
    row of each, in both kernels."""
    z = np.round(_logits(rng, 300, c))  # ties
    q = _soft(rng, 300, c)
    q[17, 0] += 0.01  # not summing to 1
    q[40] = np.eye(c)[c - 1]  # one-hot, on a class a -inf logit masks: an infinite loss
    z[40, c - 1] = -math.inf
    z[41] = 0.0  # every entry at the max: the first is the argmax

    def metrics():
        with pytest.warns(fastce.FastCEWarning, match=r"do not sum to 1 \(first: row 17\)"):
            m = fastce.evaluate(q, logits=z, task="soft")
        return m.to_dict()

    short, long = _both_kernels(monkeypatch, metrics)
    assert short.keys() == long.keys()
    assert short["accuracy"] == long["accuracy"]
    assert short["n"] == long["n"] == 300
    assert short["cross_entropy"] == math.inf == long["cross_entropy"]
    bad = q.copy()
    bad[123, c - 1] = -0.5

    def error_row():
        with pytest.raises(fastce.InputError) as info:
            fastce.evaluate(bad, logits=z, task="soft")
        return info.value.row

    assert _both_kernels(monkeypatch, error_row) == (123, 123)


@pytest.mark.parametrize("c", (2, 5, 49))
def test_tied_targets_take_their_first_class_and_sums_are_of_the_targets(rng, c):
    """The target's argmax is its first class at the max (numpy's argmax), and the sum-to-one check reads the
    targets as given, before smoothing (with label_smoothing=1 the smoothed rows always sum to 1)."""
    z = _logits(rng, 200, c)
    q = np.zeros((200, c))
    q[:, 0] = q[:, c - 1] = 0.5  # tied at the first and last class
    z[::2, 0] = 50.0  # the logits' argmax: class 0 on even rows, the last class on odd ones
    z[1::2, c - 1] = 50.0
    m = fastce.evaluate(q, logits=z, task="soft")
    assert m.accuracy == 0.5
    z[:, 0] = 100.0  # class 0 on every row
    assert fastce.evaluate(q, logits=z, task="soft").accuracy == 1.0
    q[17, 0] += 0.01
    with pytest.warns(fastce.FastCEWarning, match=r"do not sum to 1 \(first: row 17\)"):
        fastce.cross_entropy(z, q, label_smoothing=1.0)


@pytest.mark.parametrize("c", (3, 48))
def test_same_bits_for_any_thread_count_and_split(rng, c):
    z = _logits(rng, 5000, c, np.float32)
    q = _soft(rng, 5000, c)
    y = rng.integers(0, c, 5000)
    whole = fastce.evaluate(q, logits=z, task="soft").to_dict()
    smoothed = fastce.cross_entropy(z, y, label_smoothing=0.1, reduction="sum")
    evaluator = fastce.Evaluator(c, task="soft")
    for start in range(0, 5000, 613):
        evaluator.update(q[start:start + 613], z[start:start + 613])
    assert evaluator.result().to_dict() == whole
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert fastce.evaluate(q, logits=z, task="soft").to_dict() == whole
        assert fastce.cross_entropy(z, y, label_smoothing=0.1, reduction="sum") == smoothed
    finally:
        numba.set_num_threads(threads)


def _exact_soft_losses(z, q, smoothing):
    """sum_j q'_j (logsumexp(z) - z_j) per row, q' = q (1 - smoothing) + smoothing / C, in 50-digit decimals.

    logsumexp(z) - z_j = (max - z_j) + log(1 + s), s the sum of exp(z_k - max) past the first max: log(1 + s) by
    its series where s is tiny, so that the small losses of confident rows keep their digits too."""
    losses = []
    with decimal.localcontext() as context:
        context.prec = 50
        for row, target in zip(z.tolist(), q.tolist()):
            top = max(row)
            first = row.index(top)
            s = sum(((Decimal(v) - Decimal(top)).exp() for k, v in enumerate(row) if k != first), Decimal(0))
            log1p = s - s * s / 2 + s * s * s / 3 if s < Decimal("1e-20") else (1 + s).ln()
            c = len(row)
            terms = (Decimal(t) * (1 - Decimal(smoothing)) + Decimal(smoothing) / c for t in target)
            losses.append(float(sum(w * ((Decimal(top) - Decimal(v)) + log1p) for w, v in zip(terms, row) if w != 0)))
    return np.array(losses)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), c=st.integers(1, 52), n=st.integers(1, 60))
def test_random_rows_match_exact_losses(data, c, n):
    """Against 40-digit decimals (a float64 reference of z - logsumexp(z) loses the small losses of large
    logits), logits up to 1e4 in size with ties and zeros of either sign."""
    values = st.floats(-1e4, 1e4, allow_nan=False, width=32) | st.sampled_from([0.0, -0.0, 88.0, -745.0, 1e4])
    z = data.draw(hnp.arrays(np.float64, (n, c), elements=values))
    raw = data.draw(hnp.arrays(np.float64, (n, c), elements=st.floats(0.0, 1.0)))
    totals = raw.sum(axis=1, keepdims=True)
    q = np.where(totals > 0, raw / np.where(totals > 0, totals, 1.0), 1.0 / c)
    smoothing = data.draw(st.sampled_from([0.0, 0.05]))
    got = fastce.cross_entropy(z, q, reduction="none", label_smoothing=smoothing)
    np.testing.assert_allclose(got, _exact_soft_losses(z, q, smoothing), rtol=1e-13, atol=1e-300)
