"""Drive the kernels over an array, a bounded number of rows at a time.

The only code that calls the parallel kernels.  Inputs are validated arrays
(see ``validation``); the result is a fresh :class:`State` for the rows of
this array, ready to be merged into a running one.

Each kernel call gets a slice of at most ``BLOCKS_PER_CALL`` blocks.  Labels
and weights are converted to int64 / float64 one slice at a time, so the
kernels are compiled for few types and no N-sized copy is ever made.
"""

from __future__ import annotations

import contextlib

import numpy as np

from fastce import _config, _parallel, _transpose
from fastce import kernels as K
from fastce.state import State

def kernel_input(array: np.ndarray, dtype=None) -> np.ndarray:
    """A read-only, C-contiguous view of ``array`` (a bounded copy only where needed).

    numba compiles a kernel per argument type, and layout (C/F/strided) and
    writeability are part of the type.  Handing every input over as a
    read-only C-contiguous array keeps it to one compiled kernel per score
    dtype, which is what keeps the first call (and CI) short.  Slices that
    are not C-contiguous (F-order, strided) are copied -- one kernel call's
    worth of rows at most, never the whole array -- which is also faster than
    reading an F-ordered row with a stride.  Unaligned data (a buffer read
    at an odd offset) is copied the same way: alignment is part of the type
    too, and aligned loads of unaligned data would be wrong.
    """
    view = np.asarray(array, dtype=dtype)
    if not view.flags.c_contiguous or not view.flags.aligned:
        # A fresh copy, C-ordered and aligned; a large column-major slice (F order, a transposed sample of
        # PyTorch's class-axis-1 layout) in tiles on every thread (fastce._transpose: numpy's copy was 1 GB/s).
        view = (_transpose.copy_to_c_order(view) if view.flags.aligned and _transpose.column_major(view)
                else np.array(view, order="C"))
    view = view.view()
    view.flags.writeable = False
    return view


# The math of the score kernels: the input's own precision (float32 math for
# 16- and 32-bit scores), or float64 for every input.
PRECISIONS = ("input", "float64")


def float32_math(precision: str, view_dtype) -> bool:
    """Whether scores of this kernel-view dtype take float32 math under ``precision``: "input" for 16- and 32-bit
    scores (the kernel view of 16-bit floats is a 16-bit integer view: every non-float64 view is 16 or 32 bits)."""
    return precision == "input" and view_dtype != np.float64

_EMPTY_F64 = kernel_input(np.empty(0, dtype=np.float64))
_NO_ROW_LOSSES = np.empty(0, dtype=np.float64)  # written by kernels: stays writable
_NO_ROW_STATS = np.empty((0, K.ROW_STATS_COLUMNS), dtype=np.float64)
_NO_ROW_PRED = np.empty(0, dtype=np.int64)


def _slice(array, start, stop, dtype):
    if array is None:
        return _EMPTY_F64
    return kernel_input(array[start:stop], dtype)


@contextlib.contextmanager
def threads_for(n_elements: int):
    """Hold the kernel lock (_config.PARALLEL_LOCK) for a kernel call over ``n_elements`` scores.

    Waking the thread pool costs more than a small input takes to read; the
    per-block results do not depend on the thread count, so such an input
    runs on one thread.
    """
    with _config.PARALLEL_LOCK:
        if n_elements < _config.SERIAL_BELOW_ELEMENTS:
            with _parallel.serial():
                yield
        else:
            yield


def fold_call(state: State, fsums, icounts, nblocks: int, row_offset: int, block_rows: int) -> None:
    """Add one kernel call's block sums and counters to ``state`` (its rows numbered from ``row_offset``)."""
    state.moment_overflows += K.fold_blocks(fsums, icounts, nblocks, row_offset, block_rows, state.sums, state.minmax,
                                            state.counts)


def blocks_per_call(score_arrays, block_rows: int, *, min_rows: int = 0) -> int:
    """Blocks of rows per kernel call over these (N, C) or (N,) score arrays: BLOCKS_PER_CALL, or fewer when
    kernel_input copies their slices (not C-ordered, or unaligned), so that the copy stays small.

    ``min_rows``: with C-ordered arrays, up to 4 x BLOCKS_PER_CALL blocks so that a call holds at least that
    many rows (see FOLD_MIN_ROWS); without it (no per-row buffers), up to 8 x BLOCKS_PER_CALL blocks so that
    a call holds at least CALL_MIN_SCORES scores.
    """
    first = score_arrays[0]
    row_elements = first.shape[1] if first.ndim == 2 else 1
    if all(a.flags.c_contiguous and a.flags.aligned for a in score_arrays):
        if min_rows:
            return max(_config.BLOCKS_PER_CALL, min(-(-min_rows // block_rows), 4 * _config.BLOCKS_PER_CALL))
        # No per-row buffers: at least CALL_MIN_SCORES scores a call (short rows: fewer, longer calls).
        enough = -(-_config.CALL_MIN_SCORES // (block_rows * row_elements))
        return max(_config.BLOCKS_PER_CALL, min(enough, 8 * _config.BLOCKS_PER_CALL))
    call_bytes = _config.COPY_BYTES_PER_CALL // (block_rows * row_elements * first.itemsize)
    return max(1, min(_config.BLOCKS_PER_CALL, call_bytes))


def _run(call, n_rows, row_elements, state, block_rows, labels, sample_weight, row_losses, max_blocks_per_call=None):
    """Run ``call(start, stop, labels, weights, losses, nblocks, fsums, icounts)`` over all rows."""
    n_cols = K.fsums_columns(len(state.top_k))
    max_blocks = min(max_blocks_per_call or _config.BLOCKS_PER_CALL, max(1, -(-n_rows // block_rows)))
    fsums = np.empty((max_blocks, n_cols), dtype=np.float64)
    icounts = np.empty((max_blocks, K.NUM_ICOUNTS), dtype=np.int64)
    rows_per_call = max_blocks * block_rows
    for start in range(0, n_rows, rows_per_call):
        stop = min(start + rows_per_call, n_rows)
        nblocks = -(-(stop - start) // block_rows)
        labels_part = kernel_input(labels[start:stop], np.int64)
        weights_part = _slice(sample_weight, start, stop, np.float64)
        losses_part = _NO_ROW_LOSSES if row_losses is None else row_losses[start:stop]
        with threads_for(n_rows * row_elements):
            call(start, stop, labels_part, weights_part, losses_part, nblocks, fsums, icounts)
        fold_call(state, fsums, icounts, nblocks, start, block_rows)
    state.rows_seen += n_rows
    return state


def accumulate_matrix(
    scores,
    labels,
    *,
    top_k,
    from_logits: bool,
    sample_weight=None,
    class_weight=None,
    ignore_label: int = K.NO_LABEL,
    ties_to_last: bool = False,
    proba_eps: float = 0.0,
    sum_tolerance: float = np.inf,
    row_losses=None,
    on_rows=None,
    row_stats=None,
    precision: str = "input",
    on_bad_labels=None,
) -> State:
    """State of an (N, C) score matrix (kernel view: see validation.scores) and its labels.

    ``precision``: ``"input"`` computes float16, bfloat16 and float32 scores
    with float32 math (each row's loss within a few float32 ulp) and float64
    scores with float64 math; ``"float64"`` forces float64 math for any input.

    ``on_rows(start, labels, weights, stats, pred)``, if given, is called
    after each kernel call with that slice's per-row diagnostics (see
    ``kernels.score_blocks``: ``stats`` columns kernels.S_LOSS ... S_RANK;
    ``pred`` the argmax); the buffers are reused, one call's rows at a time,
    so they never grow with N.  ``row_stats``, if given instead, is an
    (N, kernels.ROW_STATS_COLUMNS) array the kernel fills in place (no argmax).

    ``on_bad_labels``: the labels' range check, when the caller left it to
    the kernel (raises its error; see ``kernels.score_blocks``); run once
    at most.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; pass one of {', '.join(map(repr, PRECISIONS))}")
    use_float32 = float32_math(precision, scores.dtype)
    n_rows, n_classes = scores.shape
    state = State.empty(n_classes, top_k, from_logits=from_logits, ties_to_last=ties_to_last)
    class_weight = _EMPTY_F64 if class_weight is None else kernel_input(class_weight, np.float64)
    ks = kernel_input(np.asarray(state.top_k, dtype=np.int64))
    mode = K.MODE_LOGITS if from_logits else K.MODE_PROBA
    block_rows = _config.block_rows(n_classes)

    buffers = []  # per-row diagnostics of one call, allocated at the first (largest) call
    unchecked = [on_bad_labels]  # the range check, until it has run once

    def check_labels():
        check, unchecked[0] = unchecked[0], None
        check()

    def call(start, stop, labels_part, weights_part, losses_part, nblocks, fsums, icounts):
        # Tasks claimed by whichever thread is free (see fastce._parallel.claim); results do not depend on it.
        blocks_per_task = _parallel.blocks_per_task(nblocks)
        stats, pred = _NO_ROW_STATS, _NO_ROW_PRED
        if row_stats is not None:
            stats = row_stats[start:stop]
        if on_rows is not None:
            if not buffers:
                buffers.extend((np.empty((stop - start, K.ROW_STATS_COLUMNS)), np.empty(stop - start, dtype=np.int64)))
            stats, pred = buffers[0][: stop - start], buffers[1][: stop - start]
        K.score_blocks(
            kernel_input(scores[start:stop]), labels_part, weights_part, class_weight, np.int64(ignore_label), ks,
            bool(ties_to_last), mode, float(proba_eps), float(sum_tolerance), losses_part, stats, pred,
            nblocks, block_rows, blocks_per_task, fsums, icounts, use_float32,
            None if unchecked[0] is None else check_labels,
        )
        if on_rows is not None:
            on_rows(start, labels_part, weights_part, stats, pred)

    # Reads that fold each call's per-row values (diagnose) pay a fixed cost per call besides the rows: three
    # dispatches to the thread pool (~0.1 ms each here), the bins' exact accumulators, O(C) class work.  At
    # C = 1000 a call of BLOCKS_PER_CALL blocks holds 16k rows: 2048 blocks cut diagnose by 7% (C = 32000: 8%).
    min_rows = _config.FOLD_MIN_ROWS if on_rows is not None else 0
    return _run(call, n_rows, n_classes, state, block_rows, labels, sample_weight, row_losses,
                blocks_per_call([scores], block_rows, min_rows=min_rows))


def accumulate_binary_proba(proba, labels, *, top_k, sample_weight=None, proba_eps: float, row_losses=None,
                            on_rows=None) -> State:
    """State of 1-D probabilities of class 1 and 0/1 labels; ``on_rows(start, stop, labels, weights)``, if given,
    after each kernel call, on that call's rows."""
    state = State.empty(2, top_k, from_logits=False, task="binary")
    ks = kernel_input(np.asarray(state.top_k, dtype=np.int64))
    block_rows = _config.MAX_BLOCK_ROWS

    def call(start, stop, labels_part, weights_part, losses_part, nblocks, fsums, icounts):
        K.binary_proba_blocks(
            kernel_input(proba[start:stop]), labels_part, weights_part, ks, float(proba_eps), losses_part,
            0, nblocks, block_rows, fsums, icounts,
        )
        if on_rows is not None:
            on_rows(start, stop, labels_part, weights_part)

    return _run(call, proba.shape[0], 1, state, block_rows, labels, sample_weight, row_losses)
