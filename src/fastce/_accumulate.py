"""Drive the kernels over an array, a bounded number of blocks at a time.

The only code that calls the parallel kernels.  Inputs are already validated
kernel views (see ``validation``); the result is a fresh :class:`State` for
the rows of this array, ready to be merged into a running one.
"""

from __future__ import annotations

import numpy as np

from fastce import _config
from fastce import kernels as K
from fastce.state import State

_EMPTY_F64 = np.empty(0, dtype=np.float64)


def _run(kernel, leading_args, n_rows, state, block_rows, row_losses):
    """Call ``kernel`` over all rows in calls of at most BLOCKS_PER_CALL blocks."""
    n_cols = K.F_TOPK + len(state.top_k)
    max_blocks = min(_config.BLOCKS_PER_CALL, max(1, -(-n_rows // block_rows)))
    fsums = np.empty((max_blocks, n_cols), dtype=np.float64)
    icounts = np.empty((max_blocks, K.NUM_ICOUNTS), dtype=np.int64)
    losses = _EMPTY_F64 if row_losses is None else row_losses
    rows_per_call = max_blocks * block_rows
    for row0 in range(0, n_rows, rows_per_call):
        nblocks = -(-min(rows_per_call, n_rows - row0) // block_rows)
        with _config.PARALLEL_LOCK:
            kernel(*leading_args, losses, row0, nblocks, block_rows, fsums, icounts)
        K.fold_blocks(fsums, icounts, nblocks, state.sums, state.minmax, state.counts)
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
    """State of an (N, C) score matrix (logits or probabilities) and its labels."""
    n_rows, n_classes = scores.shape
    state = State.empty(n_classes, top_k, from_logits=from_logits, ties_to_last=ties_to_last)
    leading = (
        scores,
        labels,
        _EMPTY_F64 if sample_weight is None else sample_weight,
        _EMPTY_F64 if class_weight is None else class_weight,
        np.int64(ignore_label),
        np.asarray(state.top_k, dtype=np.int64),
        bool(ties_to_last),
        K.MODE_LOGITS if from_logits else K.MODE_PROBA,
        float(proba_eps),
        float(sum_tolerance),
    )
    return _run(K.score_blocks, leading, n_rows, state, _config.block_rows(n_classes), row_losses)


def accumulate_binary_proba(proba, labels, *, top_k, sample_weight=None, proba_eps: float, row_losses=None) -> State:
    """State of 1-D probabilities of class 1 and 0/1 labels."""
    state = State.empty(2, top_k, from_logits=False)
    leading = (
        proba,
        labels,
        _EMPTY_F64 if sample_weight is None else sample_weight,
        np.asarray(state.top_k, dtype=np.int64),
        float(proba_eps),
    )
    return _run(K.binary_proba_blocks, leading, proba.shape[0], state, _config.MAX_BLOCK_ROWS, row_losses)
