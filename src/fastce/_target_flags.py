"""One parallel pass over an (N, C) target matrix: what ``tasks`` needs to tell its kind.

For each row: whether every entry is 0 or 1, whether the row sums to 1
within a tolerance, and where the first entry outside [0, 1] (or NaN) lies.
numpy took eight passes over each chunk for the same answer (a float64
copy, two comparisons, their ``and``, ``==`` twice, the row sums), on one
thread: 76 ms of a 256 MiB float32 target, 30-40% of an ``evaluate`` of
soft or multi-label targets with the default ``task="auto"``.

A float row's sum is float64 in the order of ``fastce._lanes`` (the same
bits on every machine); an integer row's is exact.  So the same rows give
the same kind whatever the machine, the thread count or the chunks a door
reads (files and dask read a target a chunk at a time).
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import overload

from fastce import _lanes as lanes
from fastce import _parallel
from fastce._config import KERNEL_OPTIONS, OVERLOAD_OPTIONS, kernel
from fastce._vecmath import as_float64, inline_into_callers

# Columns of the flags array (one row per stride): rows not all 0/1, rows whose sum is off, first bad entry.
NOT_BINARY, NOT_ONE, FIRST_BAD = range(3)
# Entries a claimed task covers, about (whole rows, one at least).
TASK_ELEMENTS = 1 << 16


def _entry(x):  # pragma: no cover - replaced by the overload below
    return float(x)


@overload(_entry, jit_options=OVERLOAD_OPTIONS)
def _entry_overload(x):
    """A target entry as float64: floats (and the 16-bit float views) as the kernels read them, integers exactly
    up to 2**53 (larger ones are outside [0, 1] either way)."""
    if isinstance(x, types.Float) or x in (types.uint16, types.int16):
        return lambda x: as_float64(x)
    return lambda x: np.float64(x)


def _row_sum(flat, start, count):  # pragma: no cover - replaced by the overload below
    return float(sum(flat[start:start + count]))


@overload(_row_sum, jit_options=OVERLOAD_OPTIONS)
def _row_sum_overload(flat, start, count):
    """flat[start:start + count] summed: floats in fastce._lanes' order (two 16-lane sets, 32 entries a step);
    integers (0 and 1 here: every entry was checked) exactly, as an integer count."""
    if flat.dtype in lanes._READABLE:
        def ordered(flat, start, count):
            inline_into_callers()  # a call a row was a tenth of the pass at C = 100
            a, b = lanes.add_values_at(flat, start, count, lanes.zero(), lanes.zero())
            return lanes.finish(a, b)

        return ordered

    def exact(flat, start, count):
        total = 0
        for j in range(count):
            total += np.int64(flat[np.uint64(start + j)])
        return np.float64(total)

    return exact


@kernel(**KERNEL_OPTIONS)
def _flags_tasks(targets, tolerance, task_rows, n_tasks, flags, claims, first_task, task_step):
    """Stride ``first_task``'s counts in ``flags[first_task]``: rows not all 0/1, rows whose sum differs from 1
    by more than ``tolerance`` (or is NaN), and the flat index (row * C + column) of the first entry outside
    [0, 1] in the tasks it claimed, N * C if none.  ``targets``: C-contiguous."""
    n_rows, n_cols = targets.shape
    flat = targets.reshape(n_rows * n_cols)
    none = n_rows * n_cols
    not_binary = not_one = 0
    first_bad = none
    while first_bad == none:  # tasks are claimed in increasing order: past a bad entry, none can come first
        task = _parallel.claim(claims)
        if task >= n_tasks:
            break
        for i in range(task * task_rows, min(n_rows, (task + 1) * task_rows)):
            row = i * n_cols
            # Counts only (integer reductions, no branch: LLVM vectorises the loop).
            outside = off_binary = 0
            for j in range(n_cols):
                v = _entry(flat[np.uint64(row + j)])  # unsigned: no wraparound test (it kept the loop scalar)
                outside += not ((v >= 0.0) & (v <= 1.0))
                off_binary += (v != 0.0) & (v != 1.0)
            if outside:
                for j in range(n_cols):
                    v = _entry(flat[row + j])
                    if not ((v >= 0.0) & (v <= 1.0)):
                        first_bad = row + j
                        break
                break
            not_binary += off_binary != 0
            not_one += not (abs(_row_sum(flat, row, n_cols) - 1.0) <= tolerance)
    flags[first_task, NOT_BINARY] = not_binary
    flags[first_task, NOT_ONE] = not_one
    flags[first_task, FIRST_BAD] = first_bad


def target_flags(targets: np.ndarray, tolerance: float) -> tuple[bool, bool, int]:
    """(every entry 0 or 1, every row sums to 1 within ``tolerance``, flat index row * C + column of the first
    entry outside [0, 1] or NaN, -1 if none) of a 2-D array of numbers (a float, bfloat16, integer or bool dtype).

    When an entry is outside [0, 1], the two flags cover only some of the
    rows before it.  A C-contiguous array of a dtype the kernel reads is
    read in place, on every thread; any other layout or dtype a chunk of
    rows at a time, each copied (bounded memory) to one it reads.
    """
    if targets.size < SMALL_ELEMENTS:
        return _small_flags(targets, tolerance)
    view = _kernel_view(targets)
    if view is not None:
        return _flags(view, tolerance)
    n_rows, n_cols = targets.shape
    step = max(1, CHUNK_ELEMENTS // max(1, n_cols))
    dtype = _readable_dtype(targets.dtype)
    binary = one = True
    for start in range(0, n_rows, step):
        chunk = _kernel_view(np.ascontiguousarray(targets[start:start + step], dtype=dtype))
        chunk_binary, chunk_one, bad = _flags(chunk, tolerance)
        binary, one = binary and chunk_binary, one and chunk_one
        if bad >= 0:
            return binary, one, start * n_cols + bad
    return binary, one, -1


# Below this many entries numpy answers (_small_flags): the kernel's first compile for a dtype (0.3-0.7 s) would
# cost a small target's first call more than numpy's passes ever do.
SMALL_ELEMENTS = 1 << 16


def _small_flags(targets: np.ndarray, tolerance: float) -> tuple[bool, bool, int]:
    """target_flags by numpy, the kernel's answer bit for bit: the row sums in fastce._lanes' order (IEEE
    additions element by element, in the same order: the same bits).  For small arrays (one float64 copy)."""
    values = np.asarray(targets, dtype=np.float64)
    bad = ~((values >= 0.0) & (values <= 1.0))
    if bad.any():
        return False, False, int(np.flatnonzero(bad.reshape(-1))[0])
    one = bool((np.abs(_ordered_row_sums(values) - 1.0) <= tolerance).all())
    return bool(((values == 0.0) | (values == 1.0)).all()), one, -1


def _ordered_row_sums(values: np.ndarray) -> np.ndarray:
    """Each row's sum as _lanes.ordered_sum adds it: lane sets A and B, 32 entries a step, the rest into A 16 at a
    time (lanes past the row's end add +0.0: no change), then A + B and the pairwise tree."""
    n_rows, n_cols = values.shape
    width = lanes.LANES
    a = np.zeros((n_rows, width))
    b = np.zeros((n_rows, width))
    whole = n_cols - n_cols % (2 * width)
    for j in range(0, whole, 2 * width):
        a += values[:, j:j + width]
        b += values[:, j + width:j + 2 * width]
    for j in range(whole, n_cols, width):
        count = min(width, n_cols - j)
        a[:, :count] += values[:, j:j + count]
    total = a + b
    while total.shape[1] > 1:
        half = total.shape[1] // 2
        total = total[:, :half] + total[:, half:]
    return total[:, 0]


# Rows copied at a time (about this many entries) for a layout or dtype the kernel does not read in place.
CHUNK_ELEMENTS = 1 << 20


def _kernel_view(targets: np.ndarray):
    """``targets`` as the kernel reads it, without a copy (16-bit floats as their bits, bool as uint8), or None."""
    dtype = targets.dtype
    if targets.ndim != 2 or not targets.flags.c_contiguous or not dtype.isnative:
        return None
    if dtype.name == "bfloat16":
        return targets.view(np.int16)
    if dtype == np.float16:
        return targets.view(np.uint16)
    if dtype == np.bool_:
        return targets.view(np.uint8)
    if (dtype.kind == "f" and dtype.itemsize in (4, 8)) or (dtype.kind in "iu" and dtype.itemsize != 2):
        return targets  # (16-bit integers would be read as 16-bit float bits: they are copied to int32)
    return None


def _readable_dtype(dtype: np.dtype) -> np.dtype:
    """The native dtype a chunk of ``dtype`` entries is copied to (the same values)."""
    if dtype.name == "bfloat16" or dtype.kind == "b":
        return dtype
    if dtype.kind in "iu":
        return np.dtype(np.int32) if dtype.itemsize == 2 else dtype.newbyteorder("=")
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return dtype.newbyteorder("=")
    return np.dtype(np.float64)


def _flags(view: np.ndarray, tolerance: float) -> tuple[bool, bool, int]:
    n_rows, n_cols = view.shape
    task_rows = max(1, TASK_ELEMENTS // max(1, n_cols))
    n_tasks = -(-n_rows // task_rows)
    flags = np.empty((_parallel.strides(n_tasks), 3), dtype=np.int64)
    _parallel.run_tasks(_flags_tasks, (view, float(tolerance), task_rows, n_tasks, flags, _parallel.new_claims()),
                        n_tasks)
    first_bad = int(flags[:, FIRST_BAD].min())
    return (not flags[:, NOT_BINARY].any(), not flags[:, NOT_ONE].any(),
            -1 if first_bad == n_rows * n_cols else first_bad)


def compile_kernel(dtype) -> None:
    """Run the kernel once on a few rows of ``dtype`` (compiling it, for ``fastce warmup``: small targets never
    reach it)."""
    rows = np.zeros((4, 3), dtype=dtype)
    view = _kernel_view(rows)
    _flags(view if view is not None else _kernel_view(rows.astype(_readable_dtype(rows.dtype))), 0.5)
