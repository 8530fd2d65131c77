"""fastce._label_presence: the distinct values of large small-range integer label vectors in one parallel pass,
as ``np.unique`` gives them, for every integer dtype and layout it reads, and the numpy route for the rest."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastce import _label_presence as P
from fastce import _labels as L

N = P.MIN_LABELS + 123


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"])
def test_distinct_values_of_every_integer_dtype(dtype):
    rng = np.random.default_rng(1)
    high = min(np.iinfo(dtype).max, 1000)
    y = rng.integers(0, high, N).astype(dtype)
    y[rng.integers(0, N, 50)] = 3  # a value that occurs only a few times is still seen
    assert P.supports(y)
    values, low, top = P.present_values(y)
    expected = np.unique(y)
    assert values.dtype == y.dtype and np.array_equal(values, expected)
    assert (low, top) == (int(y.min()), int(y.max()))
    assert np.array_equal(L.unique_values(y), expected)


def test_gaps_and_the_edges_of_the_table():
    y = np.zeros(N, dtype=np.int64)
    y[::3] = P.SPAN - P.OFFSET - 1
    y[7] = 12345
    y[8] = -P.OFFSET
    values, low, high = P.present_values(y)
    assert values.tolist() == [-P.OFFSET, 0, 12345, P.SPAN - P.OFFSET - 1]
    assert (low, high) == (-P.OFFSET, P.SPAN - P.OFFSET - 1)


def test_scikit_learns_minus_one_and_one_labels():
    y = np.where(np.random.default_rng(6).random(N) < 0.3, -1, 1).astype(np.int32)
    assert np.array_equal(P.present_values(y)[0], np.array([-1, 1], dtype=np.int32))


@pytest.mark.parametrize("outside", [-P.OFFSET - 1, P.SPAN - P.OFFSET, np.iinfo(np.int64).min,
                                     np.iinfo(np.int64).max])
def test_values_outside_the_table_leave_the_numpy_route_the_right_answer(outside):
    y = np.random.default_rng(2).integers(0, 5, N)
    y[N // 2] = outside
    values, low, high = P.present_values(y)
    assert values is None and (low, high) == (int(y.min()), int(y.max()))
    assert np.array_equal(L.unique_values(y), np.unique(y))


def test_strided_and_read_only_vectors_are_read_in_place():
    base = np.random.default_rng(3).integers(0, 9, 2 * N)
    view = base[::2]
    assert np.array_equal(P.present_values(view)[0], np.unique(view))
    frozen = base.copy()
    frozen.flags.writeable = False
    assert np.array_equal(L.unique_values(frozen), np.unique(frozen))


def test_what_it_does_not_read_goes_the_numpy_way():
    rng = np.random.default_rng(4)
    for y in (rng.integers(0, 3, N).astype(np.uint64),  # values an int64 may not hold
              rng.integers(0, 3, N).astype(">i8"),  # foreign byte order
              rng.integers(0, 3, P.MIN_LABELS - 1)):  # small: numpy's passes, nothing compiled
        assert not P.supports(y)
        assert np.array_equal(L.unique_values(y), np.unique(y))


def test_any_thread_count_gives_the_same_values():
    y = np.random.default_rng(5).integers(0, 40, 3 * N)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = P.present_values(y)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = P.present_values(y)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one[0], many[0]) and one[1:] == many[1:]
