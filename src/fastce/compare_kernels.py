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
from numba import njit, prange

from fastce import kernels as K
from fastce._config import KERNEL_OPTIONS, PARALLEL_OPTIONS
from fastce._exactsum import exact_add, normalize

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


@njit(**PARALLEL_OPTIONS)
def pair_blocks(stats_a, stats_b, weights, top_k, confident_below, block_rows, fsums):
    """Per-block paired sums of rows [0, len(stats_a)) into ``fsums`` (one row per block).

    ``stats_a`` / ``stats_b``: per-row ``kernels.S_*`` columns of the two
    models (NaN loss: the row was not counted); ``weights``: the row
    weights, or empty for unit weights.
    """
    n_rows = stats_a.shape[0]
    weighted = weights.shape[0] != 0
    n_k = top_k.shape[0]
    nblocks = (n_rows + block_rows - 1) // block_rows
    for b in prange(nblocks):  # each block writes its own row of fsums: no thread sees another's
        for c in range(fsums.shape[1]):
            fsums[b, c] = 0.0
        for r in range(b * block_rows, min(n_rows, (b + 1) * block_rows)):
            loss_a = stats_a[r, S_LOSS]
            loss_b = stats_b[r, S_LOSS]
            if loss_a != loss_a or loss_b != loss_b:
                continue  # not counted under one of the models
            w = np.float64(weights[r]) if weighted else 1.0
            w2 = w * w
            fsums[b, P_ROWS] += 1.0
            fsums[b, P_W] += w
            fsums[b, P_W2] += w2
            if math.isinf(loss_a) or math.isinf(loss_b):
                fsums[b, P_INF_ROWS] += 1.0
            else:
                d = loss_b - loss_a
                fsums[b, P_FINITE_ROWS] += 1.0
                fsums[b, P_DL] += w * d
                fsums[b, P_W2DL] += w2 * d
                fsums[b, P_W2DL2] += w2 * (d * d)
                fsums[b, P_LA] += loss_a
                fsums[b, P_LB] += loss_b
                fsums[b, P_LA2] += loss_a * loss_a
                fsums[b, P_LB2] += loss_b * loss_b
                fsums[b, P_LAB] += loss_a * loss_b
            db = stats_b[r, S_BRIER] - stats_a[r, S_BRIER]
            fsums[b, P_DB] += w * db
            fsums[b, P_W2DB] += w2 * db
            fsums[b, P_W2DB2] += w2 * (db * db)
            right_a = stats_a[r, S_RANK] < 1.0
            right_b = stats_b[r, S_RANK] < 1.0
            d_loss = 0.0 if (math.isinf(loss_a) or math.isinf(loss_b)) else w * (loss_b - loss_a)
            if right_a and not right_b and stats_b[r, S_P_TRUE] < confident_below:
                fsums[b, P_CWB_ROWS] += 1.0
                fsums[b, P_CWB_W] += w
                fsums[b, P_CWB_DL] += d_loss
            if right_b and not right_a and stats_a[r, S_P_TRUE] < confident_below:
                fsums[b, P_CWA_ROWS] += 1.0
                fsums[b, P_CWA_W] += w
                fsums[b, P_CWA_DL] += d_loss
            for k in range(n_k):
                hit_a = stats_a[r, S_RANK] < top_k[k]
                hit_b = stats_b[r, S_RANK] < top_k[k]
                cell = BOTH_RIGHT if (hit_a and hit_b) else (
                    ONLY_A if hit_a else (ONLY_B if hit_b else BOTH_WRONG)
                )
                column = P_TABLE + TABLE_COLUMNS * k + 3 * cell
                fsums[b, column] += 1.0
                fsums[b, column + 1] += w
                fsums[b, column + 2] += w2
    return nblocks


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
