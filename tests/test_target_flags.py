"""The kind of an (N, C) target matrix (fastce.tasks.chunk_flags, fastce._target_flags): the parallel kernel gives
numpy's answer -- all 0/1, rows summing to 1, the first entry outside [0, 1] -- for every dtype, layout and
special value at every position, and the doors that read a target in chunks (files, dask) agree with it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastce import _target_flags, tasks, validation
from fastce.errors import InputError
from support import BFLOAT16

SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -1e-300, 1.0 + 2**-52, 2.0, 0.5, 5e-324, -1.0]


@pytest.fixture(params=["kernel", "numpy"], autouse=True)
def path(request, monkeypatch):
    """Every test runs twice: through the kernel (every size) and through numpy's small-array path (every size)."""
    monkeypatch.setattr(_target_flags, "SMALL_ELEMENTS", 0 if request.param == "kernel" else 1 << 62)
    return request.param


def _reference(rows: np.ndarray, dtype) -> tuple[bool, bool] | tuple[int, int, float]:
    """numpy's rule (tasks.chunk_flags before the kernel): (binary, one), or the first bad (row, col, value)."""
    tolerance = 1e-8 + math.sqrt(validation.float_eps(dtype))
    part = np.asarray(rows, dtype=np.float64)
    bad = ~((part >= 0.0) & (part <= 1.0))
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        return row, col, float(part[row, col])
    return bool(((part == 0.0) | (part == 1.0)).all()), bool((np.abs(part.sum(axis=1) - 1.0) <= tolerance).all())


def _ours(rows: np.ndarray, dtype):
    try:
        return tasks.chunk_flags(0, rows, dtype)
    except InputError as error:
        assert error.argument == "y_true"
        return error.row, int(str(error).split(" in column ")[1].split(";")[0]), error.value


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x == y or (x != x and y != y) for x, y in zip(a, b))


DTYPES = [np.float32, np.float64, np.float16, np.uint8, np.bool_, np.int16, np.uint16, np.int64, np.int32,
          np.dtype(">f4"), np.dtype(">i8")] + ([BFLOAT16] if BFLOAT16 is not None else [])


def _layouts(a: np.ndarray):
    """The array as given, Fortran-ordered, and as every other row of one twice as tall (strided)."""
    yield "C", a
    yield "F", np.asfortranarray(a)
    tall = np.repeat(a, 2, axis=0)
    yield "strided", tall[::2]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kinds_of_clean_targets_match_numpy(dtype):
    rng = np.random.default_rng(0)
    n, c = 300, 37  # 37: a row is one pair of 16-lane loads and a 5-entry head
    one_hot = np.eye(c)[rng.integers(0, c, n)]
    multi = (rng.random((n, c)) < 0.3).astype(np.float64)
    soft = rng.random((n, c))
    soft /= soft.sum(axis=1, keepdims=True)
    for name, values in [("one-hot", one_hot), ("multi", multi), ("soft", soft), ("zeros", np.zeros((n, c)))]:
        if np.dtype(dtype).kind in "biu" and name == "soft":
            continue
        target = values.astype(dtype)
        for layout, array in _layouts(target):
            assert _same(_ours(array, target.dtype), _reference(array, target.dtype)), (name, layout)
    kinds = {name: tasks.target_kind(values.astype(dtype)) for name, values in
             [("one-hot", one_hot), ("multi", multi)]}
    assert kinds == {"one-hot": tasks.ONE_HOT, "multi": tasks.MULTILABEL}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16] + ([BFLOAT16] if BFLOAT16 is not None else []),
                         ids=str)
@pytest.mark.parametrize("n_cols", [2, 5, 16, 33, 64])
def test_every_special_value_at_every_position(dtype, n_cols):
    """Each special value at each column of a row in the middle of a long array (other threads' rows before and
    after it), in soft, one-hot and multi-hot rows: the kernel reports what numpy does."""
    rng = np.random.default_rng(n_cols)
    n = 4096 // n_cols + 50
    soft = rng.random((n, n_cols))
    soft /= soft.sum(axis=1, keepdims=True)
    bases = [soft, np.eye(n_cols)[rng.integers(0, n_cols, n)], (rng.random((n, n_cols)) < 0.5) * 1.0]
    for base in bases:
        for value in SPECIAL:
            for col in range(n_cols):
                target = base.astype(dtype)
                target[n // 2, col] = value
                assert _same(_ours(target, target.dtype), _reference(target, target.dtype)), (value, col)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), c=st.integers(1, 70), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1),
       n_special=st.integers(0, 3), scale=st.sampled_from([1.0, 1.0 + 1e-3, 0.999]))
def test_random_targets_match_numpy(n, c, dtype, seed, n_special, scale):
    rng = np.random.default_rng(seed)
    kind = rng.integers(3)
    if kind == 0:
        values = rng.random((n, c))
        values = values / values.sum(axis=1, keepdims=True) * scale
    elif kind == 1:
        values = np.eye(c)[rng.integers(0, c, n)]
    else:
        values = (rng.random((n, c)) < 0.4) * 1.0
    for _ in range(n_special):
        values[rng.integers(n), rng.integers(c)] = SPECIAL[rng.integers(len(SPECIAL))]
    with np.errstate(invalid="ignore", over="ignore"):
        target = values.astype(dtype)
    for layout, array in _layouts(target):
        assert _same(_ours(array, target.dtype), _reference(array, target.dtype)), layout


def test_the_error_names_the_first_bad_entry_and_is_independent_of_threads():
    import numba

    rng = np.random.default_rng(1)
    target = rng.random((20000, 50)).astype(np.float32)
    target[15000, 7] = -0.25
    target[12345, 3] = np.nan  # the first one in row order
    target[19999, 49] = 3.0
    for threads in (1, 2):
        previous = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            with pytest.raises(InputError, match=r"y_true row 12345 holds nan in column 3") as info:
                tasks.target_kind(target)
        finally:
            numba.set_num_threads(previous)
        assert info.value.row == 12345


def test_chunks_give_the_whole_arrays_kind():
    """Files and dask read a target a chunk at a time: the same kind, and the same row in an error."""
    rng = np.random.default_rng(2)
    soft = rng.random((1000, 12))
    soft /= soft.sum(axis=1, keepdims=True)
    soft[700] *= 1.001  # one row off by 1e-3: multi-label, whole or in chunks
    for target in (soft, soft.astype(np.float32)):
        chunks = [(lo, target[lo:lo + 128]) for lo in range(0, 1000, 128)]
        assert tasks.kind_of_chunks(chunks, target.dtype) == tasks.target_kind(target) == tasks.MULTILABEL
    target = soft.copy()
    target[555, 4] = 1.5
    with pytest.raises(InputError, match=r"y_true row 555 holds 1\.5 in column 4"):
        tasks.kind_of_chunks([(lo, target[lo:lo + 100]) for lo in range(0, 1000, 100)], target.dtype)


def test_row_sum_order_is_written_in_the_source():
    """A float row's sum is _lanes' ordered sum (the same bits on every machine, by the kernel and by numpy's
    small-array path): a tolerance exactly at a row's distance from 1 takes it in, the next float below leaves it
    out."""
    from fastce import _lanes

    rng = np.random.default_rng(3)
    for c in (1, 15, 16, 17, 31, 32, 33, 47, 48, 49, 100):
        row = rng.random(c) * 2.0 ** rng.integers(-40, 0, c)
        row /= row.sum()
        expected = _lanes.ordered_sum(np.ascontiguousarray(row), c)
        tolerance = abs(expected - 1.0)  # exactly at the edge: in with this tolerance, out just below it
        assert _target_flags.target_flags(row[None, :], tolerance)[1]
        if tolerance > 0:
            assert not _target_flags.target_flags(row[None, :], np.nextafter(tolerance, 0.0))[1]


def test_target_is_not_modified_and_nothing_full_size_is_allocated(path):
    if path == "numpy":
        pytest.skip("numpy's path copies: it serves small arrays only")
    import tracemalloc

    rng = np.random.default_rng(4)
    target = rng.random((200_000, 20)).astype(np.float32)
    before = target.copy()
    tasks.target_kind(target)  # compiled
    tracemalloc.start()
    tasks.target_kind(target)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(target, before)
    assert peak < target.nbytes // 20, peak


def test_one_hot_labels_of_many_chunks_are_each_rows_class(path):
    """tasks.one_hot_labels takes the argmax a chunk of rows at a time, a stride of chunks per thread: every
    row's class, whatever the dtype and the thread count."""
    import numba

    if path == "numpy":
        pytest.skip("one_hot_labels has one path")
    rng = np.random.default_rng(5)
    n, c = 70_001, 48  # 3.4M entries: four chunks, the last one short
    classes = rng.integers(0, c, n)
    for dtype in [np.float32, np.uint8] + ([BFLOAT16] if BFLOAT16 is not None else []):
        target = np.zeros((n, c), dtype=dtype)
        target[np.arange(n), classes] = 1
        for threads in (1, 2):
            previous = numba.get_num_threads()
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            try:
                assert np.array_equal(tasks.one_hot_labels(target), classes), (dtype, threads)
            finally:
                numba.set_num_threads(previous)
