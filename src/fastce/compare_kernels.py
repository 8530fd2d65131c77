"""Numba fold of two models' per-row statistics into paired sums, per block of rows.

The score kernel (``kernels.score_blocks``) writes each row's loss, p(true
class), Brier term and rank of the true class (``row_stats``) while it reads
the scores; ``fastce.compare`` runs it over the same rows for every model and
hands pairs of those per-row buffers to :func:`pair_blocks`, which sums the
paired differences of every block of rows in row order.  The blocks are the
score kernel's, counted from row 0, and their float64 sums are added exactly
(``_exactsum``), so a comparison does not depend on threads or chunking.

Columns of a block's sums (``P_*``; then ``P_TABLE + 12 k`` for the k-th
top-k value: rows / weight / squared weight of the cells both right, only A
right, only B right, both wrong).  "Joint" rows are counted rows of both
models; d = (value under B) - (value under A).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from fastce import kernels as K
from fastce._config import KERNEL_OPTIONS
from fastce._exactsum import exact_add, normalize
from fastce._parallel import run_tasks
from fastce._vecmath import add_reassoc, inline_into_callers, prefer_wide_vectors

(
    P_ROWS,  # joint rows
    P_W,  # sum w over joint rows
    P_W2,  # sum w^2
    P_DL,  # sum w d(loss), rows where both losses are finite
    P_W2DL,  # sum w^2 d(loss)
    P_W2DL2,  # sum w^2 d(loss)^2
    P_DB,  # sum w d(Brier)
    P_W2DB,
    P_W2DB2,
    P_FINITE_ROWS,  # joint rows where both losses are finite
    P_INF_ROWS,  # joint rows with an infinite loss under A or B
    P_LA,  # unweighted sums over finite rows, for the correlation of the losses
    P_LB,
    P_LA2,
    P_LB2,
    P_LAB,
    P_CWB_ROWS,  # rows confidently wrong under B and right under A
    P_CWB_W,
    P_CWB_DL,  # their sum w d(loss)
    P_CWA_ROWS,  # rows confidently wrong under A and right under B
    P_CWA_W,
    P_CWA_DL,
    P_TABLE,
) = range(23)
TABLE_COLUMNS = 12  # per k: (rows, weight, weight^2) x (both right, only A, only B, both wrong)
BOTH_RIGHT, ONLY_A, ONLY_B, BOTH_WRONG = 0, 1, 2, 3


# The score kernel's per-row columns, as literals: numba freezes globals into
# the compiled code and keys its cache on this file alone, so a change of
# kernels.S_* must come with a change here (the assertion makes sure of it).
S_LOSS, S_P_TRUE, S_BRIER, S_RANK = 0, 1, 3, 4
assert (S_LOSS, S_P_TRUE, S_BRIER, S_RANK) == (K.S_LOSS, K.S_P_TRUE, K.S_BRIER, K.S_RANK)


def pair_columns(n_k: int) -> int:
    return P_TABLE + TABLE_COLUMNS * n_k


def pair_blocks(stats_a, stats_b, weights, top_k, confident_below, block_rows, fsums):
    """Per-block paired sums of rows [0, len(stats_a)) into ``fsums`` (one row per block); returns the block count.

    ``stats_a`` / ``stats_b``: per-row ``kernels.S_*`` columns of the two
    models (NaN loss: the row was not counted); ``weights``: the row
    weights, or empty for unit weights.  The blocks run on the thread pool
    (fastce._parallel).
    """
    nblocks = (stats_a.shape[0] + block_rows - 1) // block_rows
    run_tasks(_pair_tasks, (stats_a, stats_b, weights, top_k, confident_below, block_rows, fsums), nblocks)
    return nblocks


@njit(**KERNEL_OPTIONS)
def _pair_tasks(stats_a, stats_b, weights, top_k, confident_below, block_rows, fsums, first_task, task_step):
    """Blocks ``first_task, first_task + task_step, ...`` of pair_blocks (see there).

    Each block's columns are first copied into contiguous scratch rows
    (``columns``: loss, Brier, rank, p(true class) of A, then of B; unit
    weights or the block's weights): read in place, the per-row statistics
    are 5 floats apart, a stride LLVM does not vectorise.  The loops over the
    scratch are branch-free and vectorised (tests/test_vectorised.py).
    """
    n_rows = stats_a.shape[0]
    nblocks = (n_rows + block_rows - 1) // block_rows
    weighted = weights.shape[0] != 0
    columns = np.empty((9, block_rows))
    for b in range(first_task, nblocks, task_step):  # each block writes its own row of fsums: no thread sees another's
        lo = b * block_rows
        count = min(n_rows, lo + block_rows) - lo
        for r in range(count):
            columns[0, r] = stats_a[lo + r, S_LOSS]
            columns[1, r] = stats_a[lo + r, S_BRIER]
            columns[2, r] = stats_a[lo + r, S_RANK]
            columns[3, r] = stats_a[lo + r, S_P_TRUE]
            columns[4, r] = stats_b[lo + r, S_LOSS]
            columns[5, r] = stats_b[lo + r, S_BRIER]
            columns[6, r] = stats_b[lo + r, S_RANK]
            columns[7, r] = stats_b[lo + r, S_P_TRUE]
            columns[8, r] = np.float64(weights[lo + r]) if weighted else 1.0
        _pair_sums(columns, count, confident_below, fsums, b)
        for k in range(top_k.shape[0]):
            _pair_table(columns, count, np.float64(top_k[k]), fsums, b, P_TABLE + TABLE_COLUMNS * k)


@njit(**KERNEL_OPTIONS)
def _pair_sums(columns, count, confident_below, fsums, b):
    """The paired sums P_ROWS ... P_CWA_DL of a block's scratch (see _pair_tasks) into fsums[b].

    Loops of selects, no branch, each with at most 4 local (reassociable)
    sums: LLVM leaves a loop with more accumulators than vector registers
    scalar -- with 8 sums per loop two of three loops stayed scalar on
    AVX-512 (7.4 against 0.6 ns per row for the same sums in loops of 4,
    measured in cache).  A row not counted under one of the models (NaN
    loss) gets weight 0 and adds nothing; d = 0 where a loss is infinite.
    The scratch stays in cache.  A leaf with 512-bit vectors on AVX-512
    hosts (see _vecmath.prefer_wide_vectors).
    """
    prefer_wide_vectors()
    inline_into_callers()  # one copy of its sums: see tests/test_one_copy.py
    loss_a, brier_a, rank_a, p_true_a = columns[0], columns[1], columns[2], columns[3]
    loss_b, brier_b, rank_b, p_true_b = columns[4], columns[5], columns[6], columns[7]
    weight = columns[8]
    rows = w_sum = w2_sum = inf_rows = 0.0
    for r in range(count):
        joint = (loss_a[r] == loss_a[r]) & (loss_b[r] == loss_b[r])
        w = weight[r] if joint else 0.0
        infinite = joint & ((abs(loss_a[r]) == np.inf) | (abs(loss_b[r]) == np.inf))
        rows = add_reassoc(rows, 1.0 if joint else 0.0)
        w_sum = add_reassoc(w_sum, w)
        w2_sum = add_reassoc(w2_sum, w * w)
        inf_rows = add_reassoc(inf_rows, 1.0 if infinite else 0.0)
    finite_rows = dl = w2dl = w2dl2 = 0.0
    for r in range(count):
        finite = _both_finite(loss_a[r], loss_b[r])
        w = weight[r] if finite else 0.0
        w2 = w * w
        d = (loss_b[r] - loss_a[r]) if finite else 0.0
        finite_rows = add_reassoc(finite_rows, 1.0 if finite else 0.0)
        dl = add_reassoc(dl, w * d)
        w2dl = add_reassoc(w2dl, w2 * d)
        w2dl2 = add_reassoc(w2dl2, w2 * (d * d))
    la = lb = la2 = lb2 = 0.0
    for r in range(count):
        finite = _both_finite(loss_a[r], loss_b[r])
        a = loss_a[r] if finite else 0.0
        bb = loss_b[r] if finite else 0.0
        la = add_reassoc(la, a)
        lb = add_reassoc(lb, bb)
        la2 = add_reassoc(la2, a * a)
        lb2 = add_reassoc(lb2, bb * bb)
    lab = db = w2db = w2db2 = 0.0
    for r in range(count):
        joint = (loss_a[r] == loss_a[r]) & (loss_b[r] == loss_b[r])
        finite = _both_finite(loss_a[r], loss_b[r])
        w = weight[r] if joint else 0.0
        w2 = w * w
        lab = add_reassoc(lab, (loss_a[r] * loss_b[r]) if finite else 0.0)
        brier_d = (brier_b[r] - brier_a[r]) if joint else 0.0
        db = add_reassoc(db, w * brier_d)
        w2db = add_reassoc(w2db, w2 * brier_d)
        w2db2 = add_reassoc(w2db2, w2 * (brier_d * brier_d))
    cwb_rows, cwb_w, cwb_dl = _confidently_wrong_sums(loss_a, loss_b, rank_a, rank_b, p_true_b, weight, count,
                                                      confident_below)
    cwa_rows, cwa_w, cwa_dl = _confidently_wrong_sums(loss_b, loss_a, rank_b, rank_a, p_true_a, weight, count,
                                                      confident_below)
    fsums[b, P_ROWS], fsums[b, P_W], fsums[b, P_W2] = rows, w_sum, w2_sum
    fsums[b, P_DL], fsums[b, P_W2DL], fsums[b, P_W2DL2] = dl, w2dl, w2dl2
    fsums[b, P_DB], fsums[b, P_W2DB], fsums[b, P_W2DB2] = db, w2db, w2db2
    fsums[b, P_FINITE_ROWS], fsums[b, P_INF_ROWS] = finite_rows, inf_rows
    fsums[b, P_LA], fsums[b, P_LB], fsums[b, P_LA2], fsums[b, P_LB2], fsums[b, P_LAB] = la, lb, la2, lb2, lab
    # d is loss_b - loss_a whichever model is confidently wrong: the second sum is over (a - b), negated.
    fsums[b, P_CWB_ROWS], fsums[b, P_CWB_W], fsums[b, P_CWB_DL] = cwb_rows, cwb_w, cwb_dl
    fsums[b, P_CWA_ROWS], fsums[b, P_CWA_W], fsums[b, P_CWA_DL] = cwa_rows, cwa_w, -cwa_dl


@njit(inline="always", **KERNEL_OPTIONS)
def _both_finite(x, y):
    """Both losses counted (not NaN) and finite."""
    return (abs(x) < np.inf) & (abs(y) < np.inf)


@njit(**KERNEL_OPTIONS)
def _confidently_wrong_sums(loss_right, loss_wrong, rank_right, rank_wrong, p_true_wrong, weight, count,
                            confident_below):
    """(rows, weight, sum w (loss_wrong - loss_right)) of the joint rows right under one model and
    confidently wrong (true class not first, p(true) < confident_below) under the other: one loop of 3 sums."""
    prefer_wide_vectors()
    inline_into_callers()  # one copy of its sums: see tests/test_one_copy.py
    rows = w_sum = dl = 0.0
    for r in range(count):
        joint = (loss_right[r] == loss_right[r]) & (loss_wrong[r] == loss_wrong[r])
        finite = _both_finite(loss_right[r], loss_wrong[r])
        d = (loss_wrong[r] - loss_right[r]) if finite else 0.0
        cw = joint & (rank_right[r] < 1.0) & (rank_wrong[r] >= 1.0) & (p_true_wrong[r] < confident_below)
        w = weight[r] if cw else 0.0
        rows = add_reassoc(rows, 1.0 if cw else 0.0)
        w_sum = add_reassoc(w_sum, w)
        dl = add_reassoc(dl, w * d)
    return rows, w_sum, dl


@njit(**KERNEL_OPTIONS)
def _pair_table(columns, count, k, fsums, b, column):
    """The 2 x 2 table of "true class ranked < k" of a block's scratch into fsums[b, column:column + 12].

    Cells in the order BOTH_RIGHT, ONLY_A, ONLY_B, BOTH_WRONG, each (rows,
    weight, squared weight), one loop per cell (see _table_cell).
    """
    inline_into_callers()  # one copy of its sums: see tests/test_one_copy.py
    _table_cell(columns, count, k, True, True, fsums, b, column + 3 * BOTH_RIGHT)
    _table_cell(columns, count, k, True, False, fsums, b, column + 3 * ONLY_A)
    _table_cell(columns, count, k, False, True, fsums, b, column + 3 * ONLY_B)
    _table_cell(columns, count, k, False, False, fsums, b, column + 3 * BOTH_WRONG)


@njit(**KERNEL_OPTIONS)
def _table_cell(columns, count, k, a_right, b_right, fsums, b, at):
    """(rows, weight, squared weight) of the joint rows where "ranks the true class < k" is ``a_right``
    under A and ``b_right`` under B, into fsums[b, at:at + 3].

    One branch-free loop of 3 sums: with the 6 sums of two cells in one
    loop LLVM left it scalar (checked in the IR; tests/test_vectorised.py).
    """
    prefer_wide_vectors()
    inline_into_callers()  # one copy of its sums: see tests/test_one_copy.py
    loss_a, rank_a, loss_b, rank_b, weight = columns[0], columns[2], columns[4], columns[6], columns[8]
    a_wrong = not a_right
    b_wrong = not b_right
    rows = w_sum = w2_sum = 0.0
    for r in range(count):
        joint = (loss_a[r] == loss_a[r]) & (loss_b[r] == loss_b[r])
        w = weight[r]
        cell = joint & ((rank_a[r] < k) ^ a_wrong) & ((rank_b[r] < k) ^ b_wrong)
        rows = add_reassoc(rows, 1.0 if cell else 0.0)
        w_sum = add_reassoc(w_sum, w if cell else 0.0)
        w2_sum = add_reassoc(w2_sum, w * w if cell else 0.0)
    fsums[b, at], fsums[b, at + 1], fsums[b, at + 2] = rows, w_sum, w2_sum


@njit(**KERNEL_OPTIONS)
def fold_exact(fsums, nblocks, acc):
    """Add every block's sums exactly into ``acc`` (one accumulator per column), in block order.

    Returns the number of non-finite partials (they are not added): the
    caller reports them, never drops them silently.
    """
    nonfinite = 0
    for b in range(nblocks):
        for c in range(fsums.shape[1]):
            value = fsums[b, c]
            if math.isfinite(value):
                exact_add(acc[c], value)
            else:
                nonfinite += 1
    for c in range(acc.shape[0]):
        normalize(acc[c])
    return nonfinite
