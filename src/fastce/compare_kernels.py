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
from fastce._vecmath import add_reassoc

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
    """Blocks ``first_task, first_task + task_step, ...`` of pair_blocks (see there)."""
    n_rows = stats_a.shape[0]
    nblocks = (n_rows + block_rows - 1) // block_rows
    for b in range(first_task, nblocks, task_step):  # each block writes its own row of fsums: no thread sees another's
        lo = b * block_rows
        hi = min(n_rows, lo + block_rows)
        _pair_sums(stats_a, stats_b, weights, lo, hi, confident_below, fsums, b)
        for k in range(top_k.shape[0]):
            _pair_table(stats_a, stats_b, weights, lo, hi, np.float64(top_k[k]), fsums, b, P_TABLE + TABLE_COLUMNS * k)


@njit(**KERNEL_OPTIONS)
def _pair_sums(stats_a, stats_b, weights, lo, hi, confident_below, fsums, b):
    """The paired sums P_ROWS ... P_CWA_DL of rows [lo, hi) into fsums[b].

    One loop of selects, no branch, every sum a local (reassociable) float:
    LLVM vectorises it.  A row not counted under one of the models (NaN
    loss) gets weight 0 and adds nothing; d = 0 where a loss is infinite.
    """
    weighted = weights.shape[0] != 0
    rows = w_sum = w2_sum = dl = w2dl = w2dl2 = db = w2db = w2db2 = 0.0
    finite_rows = inf_rows = la = lb = la2 = lb2 = lab = 0.0
    cwb_rows = cwb_w = cwb_dl = cwa_rows = cwa_w = cwa_dl = 0.0
    for r in range(lo, hi):
        loss_a = stats_a[r, S_LOSS]
        loss_b = stats_b[r, S_LOSS]
        joint = (loss_a == loss_a) & (loss_b == loss_b)
        w = np.float64(weights[r]) if weighted else 1.0
        w = w if joint else 0.0
        w2 = w * w
        infinite = joint & ((abs(loss_a) == np.inf) | (abs(loss_b) == np.inf))
        finite = joint & ~infinite
        a = loss_a if finite else 0.0
        bb = loss_b if finite else 0.0
        d = bb - a
        brier_d = stats_b[r, S_BRIER] - stats_a[r, S_BRIER]
        brier_d = brier_d if joint else 0.0
        right_a = stats_a[r, S_RANK] < 1.0
        right_b = stats_b[r, S_RANK] < 1.0
        cwb = joint & right_a & ~right_b & (stats_b[r, S_P_TRUE] < confident_below)
        cwa = joint & right_b & ~right_a & (stats_a[r, S_P_TRUE] < confident_below)
        rows = add_reassoc(rows, 1.0 if joint else 0.0)
        w_sum = add_reassoc(w_sum, w)
        w2_sum = add_reassoc(w2_sum, w2)
        inf_rows = add_reassoc(inf_rows, 1.0 if infinite else 0.0)
        finite_rows = add_reassoc(finite_rows, 1.0 if finite else 0.0)
        dl = add_reassoc(dl, w * d)
        w2dl = add_reassoc(w2dl, w2 * d)
        w2dl2 = add_reassoc(w2dl2, w2 * (d * d))
        la = add_reassoc(la, a)
        lb = add_reassoc(lb, bb)
        la2 = add_reassoc(la2, a * a)
        lb2 = add_reassoc(lb2, bb * bb)
        lab = add_reassoc(lab, a * bb)
        db = add_reassoc(db, w * brier_d)
        w2db = add_reassoc(w2db, w2 * brier_d)
        w2db2 = add_reassoc(w2db2, w2 * (brier_d * brier_d))
        cwb_rows = add_reassoc(cwb_rows, 1.0 if cwb else 0.0)
        cwb_w = add_reassoc(cwb_w, w if cwb else 0.0)
        cwb_dl = add_reassoc(cwb_dl, w * d if cwb else 0.0)
        cwa_rows = add_reassoc(cwa_rows, 1.0 if cwa else 0.0)
        cwa_w = add_reassoc(cwa_w, w if cwa else 0.0)
        cwa_dl = add_reassoc(cwa_dl, w * d if cwa else 0.0)
    fsums[b, P_ROWS], fsums[b, P_W], fsums[b, P_W2] = rows, w_sum, w2_sum
    fsums[b, P_DL], fsums[b, P_W2DL], fsums[b, P_W2DL2] = dl, w2dl, w2dl2
    fsums[b, P_DB], fsums[b, P_W2DB], fsums[b, P_W2DB2] = db, w2db, w2db2
    fsums[b, P_FINITE_ROWS], fsums[b, P_INF_ROWS] = finite_rows, inf_rows
    fsums[b, P_LA], fsums[b, P_LB], fsums[b, P_LA2], fsums[b, P_LB2], fsums[b, P_LAB] = la, lb, la2, lb2, lab
    fsums[b, P_CWB_ROWS], fsums[b, P_CWB_W], fsums[b, P_CWB_DL] = cwb_rows, cwb_w, cwb_dl
    fsums[b, P_CWA_ROWS], fsums[b, P_CWA_W], fsums[b, P_CWA_DL] = cwa_rows, cwa_w, cwa_dl


@njit(**KERNEL_OPTIONS)
def _pair_table(stats_a, stats_b, weights, lo, hi, k, fsums, b, column):
    """The 2 x 2 table of "true class ranked < k" of rows [lo, hi) into fsums[b, column:column + 12].

    Cells in the order BOTH_RIGHT, ONLY_A, ONLY_B, BOTH_WRONG, each (rows,
    weight, squared weight); one branch-free loop (see _pair_sums).
    """
    weighted = weights.shape[0] != 0
    n0 = w0 = q0 = n1 = w1 = q1 = n2 = w2_ = q2 = n3 = w3 = q3 = 0.0
    for r in range(lo, hi):
        joint = (stats_a[r, S_LOSS] == stats_a[r, S_LOSS]) & (stats_b[r, S_LOSS] == stats_b[r, S_LOSS])
        w = np.float64(weights[r]) if weighted else 1.0
        hit_a = stats_a[r, S_RANK] < k
        hit_b = stats_b[r, S_RANK] < k
        both = joint & hit_a & hit_b
        only_a = joint & hit_a & ~hit_b
        only_b = joint & ~hit_a & hit_b
        neither = joint & ~hit_a & ~hit_b
        n0 = add_reassoc(n0, 1.0 if both else 0.0)
        w0 = add_reassoc(w0, w if both else 0.0)
        q0 = add_reassoc(q0, w * w if both else 0.0)
        n1 = add_reassoc(n1, 1.0 if only_a else 0.0)
        w1 = add_reassoc(w1, w if only_a else 0.0)
        q1 = add_reassoc(q1, w * w if only_a else 0.0)
        n2 = add_reassoc(n2, 1.0 if only_b else 0.0)
        w2_ = add_reassoc(w2_, w if only_b else 0.0)
        q2 = add_reassoc(q2, w * w if only_b else 0.0)
        n3 = add_reassoc(n3, 1.0 if neither else 0.0)
        w3 = add_reassoc(w3, w if neither else 0.0)
        q3 = add_reassoc(q3, w * w if neither else 0.0)
    cells = ((BOTH_RIGHT, n0, w0, q0), (ONLY_A, n1, w1, q1), (ONLY_B, n2, w2_, q2), (BOTH_WRONG, n3, w3, q3))
    for cell, n, wsum, qsum in cells:
        fsums[b, column + 3 * cell] = n
        fsums[b, column + 3 * cell + 1] = wsum
        fsums[b, column + 3 * cell + 2] = qsum


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
