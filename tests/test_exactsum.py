"""fastce._exactsum: every float64 added is held exactly, and the one rounding is correct.

The reference is Python's exact rationals: the accumulator must hold the
sum of the values as Fractions, scaled by 2**OFFSET, for any mix of signs,
exponents (subnormals and the largest finite values included) and zeros.
"""

from __future__ import annotations

import math
import sys
from fractions import Fraction

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from fastce import _exactsum

# Values from every part of the float64 range, subnormals and the extremes included.
FINITE = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [5e-324, -5e-324, 2.2250738585072014e-308, 2.225073858507201e-308, -2.225073858507201e-308,
     sys.float_info.max, -sys.float_info.max, 1.0, -1.0, 0.5, 2.0 ** 52 + 1, -0.0, 0.0]
)


@njit
def _add_all(accs, k, values):
    """The kernels' own steps (callable only from compiled code): each value added, then the row normalised."""
    for v in values:
        _exactsum.exact_add_at(accs, k, v)
    _exactsum.normalize_at(accs, k)


def _accumulate(values) -> np.ndarray:
    accs = _exactsum.new_accumulators(3)
    _add_all(accs, 1, np.array(values, dtype=np.float64))
    assert not accs[0].any() and not accs[2].any()  # only row k is touched
    return accs[1]


@given(st.lists(FINITE, max_size=60))
def test_sums_exactly(values):
    acc = _accumulate(values)
    exact = sum((Fraction(v) for v in values), Fraction(0))
    assert Fraction(_exactsum.to_int(acc), 2 ** _exactsum.OFFSET) == exact
    # The one rounding to float64 is the correct one (overflowing sums give inf).
    try:
        expected = float(exact)
    except OverflowError:
        expected = math.inf if exact > 0 else -math.inf
    assert _exactsum.to_float(acc) == expected


@given(st.lists(FINITE, min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_order_does_not_matter(values, random):
    """Normalised limbs are unique: any order of the same adds gives the same limbs."""
    shuffled = list(values)
    random.shuffle(shuffled)
    assert np.array_equal(_accumulate(values), _accumulate(shuffled))


def test_skips_non_finite_values():
    """Callers count non-finite values themselves; the accumulator ignores them."""
    assert np.array_equal(_accumulate([1.5, math.inf, -math.inf, math.nan, 2.5]), _accumulate([4.0]))


def test_subnormal_and_largest_values_land_in_range():
    """The smallest subnormal is 2**52 units above the accumulator's bottom; the largest value fits its top."""
    tiny = _accumulate([5e-324])
    assert _exactsum.to_int(tiny) == 2 ** (_exactsum.OFFSET - 1074)
    huge = _accumulate([sys.float_info.max, sys.float_info.max])
    assert _exactsum.to_int(huge) == 2 * Fraction(sys.float_info.max) * 2 ** _exactsum.OFFSET
    assert _exactsum.to_float(huge) == math.inf
    assert _exactsum.to_float(_accumulate([sys.float_info.max, -sys.float_info.max, -1e-300])) == -1e-300


@given(st.lists(st.integers(-(2 ** 40), 2 ** 40), min_size=_exactsum.NUM_LIMBS, max_size=_exactsum.NUM_LIMBS))
def test_to_int_of_any_limbs(limbs):
    """Normalised or not (the fast path reads normalised limbs as digits), the integer is sum(limb * 2**(32 i))."""
    acc = np.array(limbs, dtype=np.int64)
    expected = sum(int(v) << (_exactsum.LIMB_BITS * i) for i, v in enumerate(limbs))
    assert _exactsum.to_int(acc) == expected
    normalised = acc.copy()
    _exactsum.normalize(normalised)
    assert _exactsum.to_int(normalised) == expected
    assert normalised[:-1].min() >= 0 and normalised[:-1].max() < 2 ** _exactsum.LIMB_BITS
    # The Python callers' normalize and the kernels' normalize_at: the same limbs.
    in_rows = np.stack([acc, acc])
    _normalize_row(in_rows, 1)
    assert np.array_equal(in_rows[1], normalised) and np.array_equal(in_rows[0], acc)


@njit
def _normalize_row(accs, k):
    _exactsum.normalize_at(accs, k)


@given(st.lists(st.lists(st.integers(-(2 ** 40), 2 ** 40), min_size=_exactsum.NUM_LIMBS,
                         max_size=_exactsum.NUM_LIMBS), min_size=1, max_size=6), st.booleans())
def test_to_ints_is_to_int_of_each_row(rows, normalise):
    """The batch conversion (one check, one digit copy for all rows) gives each row's to_int, normalised or not."""
    accs = np.array(rows, dtype=np.int64)
    expected = [_exactsum.to_int(acc) for acc in accs]
    if normalise:
        _exactsum.normalize(accs)  # all rows in one call (the merges' form), each the same integer
        assert all(np.array_equal(acc, _normalised(row)) for acc, row in zip(accs, rows))
    assert _exactsum.to_ints(accs) == expected


def _normalised(limbs):
    acc = np.array(limbs, dtype=np.int64)
    _exactsum.normalize(acc)
    return acc


@given(st.integers(-(2 ** 2300), 2 ** 2300) | st.integers(-(2 ** 60), 2 ** 60))
def test_int_to_float_is_the_scaled_integer_correctly_rounded(total):
    """Any scaled integer, the float64 range and beyond it: the rational total / 2**OFFSET, rounded once."""
    exact = Fraction(total, 2 ** _exactsum.OFFSET)
    try:
        expected = float(exact)
    except OverflowError:
        expected = math.inf if exact > 0 else -math.inf
    assert _exactsum.int_to_float(total) == expected
