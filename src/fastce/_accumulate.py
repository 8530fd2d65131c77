"""Drive the kernels over an array, a bounded number of rows at a time.

The only code that calls the parallel kernels.  Inputs are validated arrays
(see ``validation``); the result is a fresh :class:`State` for the rows of
this array, ready to be merged into a running one.

Each kernel call gets a slice of at most ``BLOCKS_PER_CALL`` blocks.  Labels
and weights are converted to int64 / float64 one slice at a time, so the
kernels are compiled for few types and no N-sized copy is ever made.
"""

from __future__ import annotations

import numba
import numpy as np

from fastce import _config
from fastce import kernels as K
from fastce.state import State

_EMPTY_F64 = np.empty(0, dtype=np.float64)


def _slice(array, start, stop, dtype):
    if array is None:
        return _EMPTY_F64 if dtype == np.float64 else None
    return np.asarray(array[start:stop], dtype=dtype)


def _run(call, n_rows, row_elements, state, block_rows, labels, sample_weight, row_losses):
    """Run ``call(start, stop, labels, weights, losses, nblocks, fsums, icounts)`` over all rows."""
    # Waking the thread pool costs more than a small input takes to read; the
    # per-block results do not depend on the thread count, so run it on one.
    serial = n_rows * row_elements < _config.SERIAL_BELOW_ELEMENTS
    n_cols = K.F_TOPK + len(state.top_k)
    max_blocks = min(_config.BLOCKS_PER_CALL, max(1, -(-n_rows // block_rows)))
    fsums = np.empty((max_blocks, n_cols), dtype=np.float64)
    icounts = np.empty((max_blocks, K.NUM_ICOUNTS), dtype=np.int64)
    rows_per_call = max_blocks * block_rows
    for start in range(0, n_rows, rows_per_call):
        stop = min(start + rows_per_call, n_rows)
        nblocks = -(-(stop - start) // block_rows)
        labels_part = np.asarray(labels[start:stop], dtype=np.int64)
        weights_part = _slice(sample_weight, start, stop, np.float64)
        losses_part = _EMPTY_F64 if row_losses is None else row_losses[start:stop]
        with _config.PARALLEL_LOCK:
            threads = numba.get_num_threads()
            if serial and threads > 1:
                numba.set_num_threads(1)
            try:
                call(start, stop, labels_part, weights_part, losses_part, nblocks, fsums, icounts)
            finally:
                if serial and threads > 1:
                    numba.set_num_threads(threads)
        K.fold_blocks(fsums, icounts, nblocks, start, state.sums, state.minmax, state.counts)
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
) -> State:
    """State of an (N, C) score matrix (kernel view: see validation.scores) and its labels."""
    n_rows, n_classes = scores.shape
    state = State.empty(n_classes, top_k, from_logits=from_logits, ties_to_last=ties_to_last)
    class_weight = _EMPTY_F64 if class_weight is None else np.asarray(class_weight, dtype=np.float64)
    ks = np.asarray(state.top_k, dtype=np.int64)
    mode = K.MODE_LOGITS if from_logits else K.MODE_PROBA
    block_rows = _config.block_rows(n_classes)

    def call(start, stop, labels_part, weights_part, losses_part, nblocks, fsums, icounts):
        # A few tasks per thread balance the load; results do not depend on it.
        blocks_per_task = max(1, -(-nblocks // (4 * numba.get_num_threads())))
        K.score_blocks(
            scores[start:stop], labels_part, weights_part, class_weight, np.int64(ignore_label), ks,
            bool(ties_to_last), mode, float(proba_eps), float(sum_tolerance), losses_part,
            nblocks, block_rows, blocks_per_task, fsums, icounts,
        )

    return _run(call, n_rows, n_classes, state, block_rows, labels, sample_weight, row_losses)


def accumulate_binary_proba(proba, labels, *, top_k, sample_weight=None, proba_eps: float, row_losses=None) -> State:
    """State of 1-D probabilities of class 1 and 0/1 labels."""
    state = State.empty(2, top_k, from_logits=False)
    ks = np.asarray(state.top_k, dtype=np.int64)
    block_rows = _config.MAX_BLOCK_ROWS

    def call(start, stop, labels_part, weights_part, losses_part, nblocks, fsums, icounts):
        K.binary_proba_blocks(
            proba[start:stop], labels_part, weights_part, ks, float(proba_eps), losses_part,
            0, nblocks, block_rows, fsums, icounts,
        )

    return _run(call, proba.shape[0], 1, state, block_rows, labels, sample_weight, row_losses)
