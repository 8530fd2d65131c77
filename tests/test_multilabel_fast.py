"""The multi-label kernel's fast path (row weights only) gives the general path's numbers, bit for bit.

``kernels_binary._bce_block_fast`` computes each element's terms in one
vectorised loop and sums them per row in the general path's order; the
general path (column, element or positive-class weights) still walks each
row element by element.  Column weights of 1.0 multiply every weight by 1.0
exactly, so they send the same rows through the general path with the same
numbers: every sum, counter, extreme and first row must agree, whatever the
scores (NaN, infinities, huge, tiny, out of [0, 1]) and targets (soft, bad).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastce import _accumulate_family as AF
from fastce import kernels_binary as KB

_SCORES = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, 0.5, 1e300, -1e300, 1e-300, 745.0, -745.0, 2.0, -0.5]
_TARGETS = [0.0, 1.0, 0.25, np.nan, -1.0, 2.0, np.inf]


def _sums(scores, targets, *, from_logits, weights, general, keep_values, precision="input"):
    values = []

    def keep(start, stop, part):
        values.append((start, part.copy()))

    ones = np.ones(scores.shape[1]) if general else None
    sums = AF.accumulate_bce(scores, targets, from_logits=from_logits, row_weight=weights, col_weight=ones,
                             on_rows=keep if keep_values else None,
                             float32_math=AF.multilabel_float32_math(scores, from_logits, precision))
    return sums, values


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 40),
    c=st.integers(1, 12),
    from_logits=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    target_dtype=st.sampled_from([np.float64, np.float32, np.uint8]),
    weighted=st.booleans(),
    precision=st.sampled_from(["input", "float64"]),
)
def test_fast_path_equals_the_general_path(data, n, c, from_logits, dtype, target_dtype, weighted, precision):
    """Either math (float32 logits with precision="input" take float32 math in both paths)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    scores = 3 * rng.standard_normal((n, c)) if from_logits else rng.random((n, c))
    targets = (rng.random((n, c)) < 0.4).astype(np.float64)
    for _ in range(data.draw(st.integers(0, 8))):
        row, col = data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, c - 1))
        if data.draw(st.booleans()):
            scores[row, col] = data.draw(st.sampled_from(_SCORES))
        elif target_dtype != np.uint8:
            targets[row, col] = data.draw(st.sampled_from(_TARGETS))
    if data.draw(st.booleans()):  # a one-hot row: the argmax path
        row = data.draw(st.integers(0, n - 1))
        targets[row] = 0.0
        targets[row, data.draw(st.integers(0, c - 1))] = 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        scores = scores.astype(dtype)
        targets = targets.astype(target_dtype)
    weights = None
    if weighted:
        weights = rng.random(n) * 3
        weights[rng.random(n) < 0.2] = 0.0
        weights[rng.random(n) < 0.1] = 1e300
    fast, fast_values = _sums(scores, targets, from_logits=from_logits, weights=weights, general=False,
                              keep_values=True, precision=precision)
    general, general_values = _sums(scores, targets, from_logits=from_logits, weights=weights, general=True,
                                    keep_values=False, precision=precision)
    assert np.array_equal(fast.sums, general.sums)
    assert np.array_equal(fast.counts, general.counts)
    assert np.array_equal(fast.minmax, general.minmax, equal_nan=True)
    assert np.array_equal(fast.nonfinite, general.nonfinite)
    # Per-row values (groups=, compare): the means of each row's elements.
    values = np.concatenate([part for _, part in fast_values])
    with np.errstate(all="ignore"):
        y = targets.astype(np.float64)
        hits = ((scores.astype(np.float64) > (0.0 if from_logits else 0.5)) == (y > 0.5)).sum(axis=1)
    assert np.array_equal(values[:, KB.V_HAMMING], hits / c)
    assert np.array_equal(values[:, KB.V_SUBSET], (hits == c).astype(float))
    nan_rows = np.isnan(scores.astype(np.float64)).any(axis=1)
    good_targets = ((y >= 0.0) & (y <= 1.0)).all(axis=1)  # (NaN targets make a NaN loss: a bad row anyway)
    assert np.isnan(values[nan_rows, KB.V_LOSS]).all()
    assert not np.isnan(values[~nan_rows & good_targets, KB.V_LOSS]).any()


def test_rows_of_more_elements_than_the_packed_counts_take_the_general_path():
    """Per-row counts are packed 16 bits each: rows of 65536 elements or more go the general way."""
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((2, 1 << 16)).astype(np.float32)
    targets = (rng.random((2, 1 << 16)) < 0.5).astype(np.uint8)
    fast, _ = _sums(scores, targets, from_logits=True, weights=None, general=False, keep_values=False)
    general, _ = _sums(scores, targets, from_logits=True, weights=None, general=True, keep_values=False)
    assert np.array_equal(fast.sums, general.sums) and np.array_equal(fast.counts, general.counts)
    assert fast.counts[KB.N_ROWS] == 2


@pytest.mark.parametrize("from_logits", [True, False])
def test_fast_path_is_used_by_the_multilabel_task(from_logits):
    """evaluate's multi-label read (the fast path: no column weights) matches the formulas."""
    import fastce
    from test_groups_tasks import multilabel_rows

    rng = np.random.default_rng(6)
    z = 2 * rng.standard_normal((3000, 7))
    y = (rng.random((3000, 7)) < 0.3).astype(np.int8)
    s = z if from_logits else 1 / (1 + np.exp(-z))
    m = fastce.evaluate(y, **{"logits" if from_logits else "proba": s}, task="multilabel")
    loss, brier, hamming, subset = multilabel_rows(y, s, from_logits=from_logits)
    assert m.cross_entropy == pytest.approx(loss.mean(), rel=1e-12)
    assert m.brier == pytest.approx(brier.mean(), rel=1e-12)
    assert m.hamming_accuracy == pytest.approx(hamming.mean(), rel=1e-15)
    assert m.subset_accuracy == pytest.approx(subset.mean(), rel=1e-15)
