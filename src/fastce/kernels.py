"""Numba kernels: one read of each row of scores, partial sums per block.

Layering: the kernels know nothing of validation or policies.  They assume
labels were range-checked at the door, and they *report* what they see
(non-finite rows, probabilities outside [0, 1], rows not summing to one) in
per-block counters; the API layer decides whether that is an error, a warning
or a skipped row.

Each parallel kernel call handles ``nblocks`` consecutive blocks of
``block_rows`` rows starting at ``row0``.  Block ``b`` writes its sums to
``fsums[b]`` and its counters to ``icounts[b]``; nothing else is shared
between threads, and the caller folds the blocks into a ``State`` in block
order (exactly, see ``_exactsum``), so the result never depends on how many
threads ran.

Per-block outputs (column indices below):

fsums:   weight sum, weighted loss sum, min score, max score, then one
         weighted "true class ranked < k" sum per requested k.
icounts: rows counted, non-finite rows, rows with infinite loss, ignored rows,
         rows with a value < 0, rows with a value > 1, rows not summing to 1,
         then the first row (global index, -1 if none) of each of the last
         five kinds except ignored rows.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from fastce._config import KERNEL_OPTIONS, PARALLEL_OPTIONS
from fastce._exactsum import exact_add, normalize
from fastce._vecmath import as_float64, exp_nonpositive

# fsums columns
F_WEIGHT, F_LOSS, F_MIN, F_MAX, F_TOPK = 0, 1, 2, 3, 4
# icounts columns
C_ROWS, C_NONFINITE, C_INF_LOSS, C_IGNORED, C_BELOW0, C_ABOVE1, C_UNNORMALIZED = range(7)
FIRST_NONFINITE, FIRST_INF_LOSS, FIRST_BELOW0, FIRST_ABOVE1, FIRST_UNNORMALIZED = range(7, 12)
NUM_ICOUNTS = 12
# Counters that pair with a "first row" column.
FIRST_OF = {
    C_NONFINITE: FIRST_NONFINITE,
    C_INF_LOSS: FIRST_INF_LOSS,
    C_BELOW0: FIRST_BELOW0,
    C_ABOVE1: FIRST_ABOVE1,
    C_UNNORMALIZED: FIRST_UNNORMALIZED,
}

# Mode flags for the score kernel.
MODE_LOGITS = 0
MODE_PROBA = 1

NO_LABEL = np.iinfo(np.int64).min


@njit(inline="always", **KERNEL_OPTIONS)
def _row_weight(i, label, sample_weight, class_weight):
    weight = 1.0
    if sample_weight.shape[0] != 0:
        weight = np.float64(sample_weight[i])
    if class_weight.shape[0] != 0:
        weight *= np.float64(class_weight[label])
    return weight


@njit(inline="always", **KERNEL_OPTIONS)
def _note(icounts, b, counter, first_column, row):
    if icounts[b, counter] == 0:
        icounts[b, first_column] = row
    icounts[b, counter] += 1


@njit(**PARALLEL_OPTIONS)
def score_blocks(
    scores,
    labels,
    sample_weight,
    class_weight,
    ignore_label,
    top_k,
    ties_to_last,
    mode,
    proba_eps,
    sum_tolerance,
    row_losses,
    row0,
    nblocks,
    block_rows,
    fsums,
    icounts,
):
    """Per-block sums for an (N, C) score matrix, rows [row0, row0 + nblocks*block_rows).

    mode MODE_LOGITS: loss = logsumexp(z) - z[y], computed with the row max
    subtracted; -inf entries are masked classes; a row holding NaN or +inf (or
    only -inf) is non-finite.
    mode MODE_PROBA: loss = -log(clip(p[y], eps, 1 - eps)) (scikit-learn's
    log_loss); also counts rows with values outside [0, 1] and rows whose sum
    differs from 1 by more than ``sum_tolerance``.

    The true class's rank is the number of classes ahead of it: strictly
    higher scores, plus equal scores at a lower index (``ties_to_last``
    False: numpy/torch argmax, first index wins) or at a higher index (True:
    scikit-learn's top_k_accuracy_score).  A row is top-k correct when its
    rank is below k.  ``row_losses`` (empty, or length N) receives each row's
    weighted loss (NaN for non-finite rows, 0 for ignored rows).
    """
    n_rows = scores.shape[0]
    n_classes = scores.shape[1]
    n_k = top_k.shape[0]
    keep_losses = row_losses.shape[0] != 0
    for b in prange(nblocks):
        start = row0 + b * block_rows
        stop = min(start + block_rows, n_rows)
        for c in range(fsums.shape[1]):
            fsums[b, c] = 0.0
        fsums[b, F_MIN] = np.inf
        fsums[b, F_MAX] = -np.inf
        for c in range(icounts.shape[1]):
            icounts[b, c] = 0
        for c in range(FIRST_NONFINITE, NUM_ICOUNTS):
            icounts[b, c] = -1
        weight_sum = 0.0
        loss_sum = 0.0
        for i in range(start, stop):
            label = np.int64(labels[i])
            if label == ignore_label:
                icounts[b, C_IGNORED] += 1
                if keep_losses:
                    row_losses[i] = 0.0
                continue
            target = as_float64(scores[i, label])
            # Pass 1 (reads memory): the row max, and for probabilities the
            # range and the sum.  NaN fails every comparison here and is
            # caught through the sum below.
            row_max = -np.inf
            row_min = np.inf
            row_sum = 0.0
            for j in range(n_classes):
                v = as_float64(scores[i, j])
                row_max = v if v > row_max else row_max
                if mode == MODE_PROBA:
                    row_min = v if v < row_min else row_min
                    row_sum += v
            # Pass 2 (row is in cache): exp-sum and rank of the true class.
            ahead = 0
            exp_sum = 0.0
            for j in range(n_classes):
                v = as_float64(scores[i, j])
                if mode == MODE_LOGITS:
                    exp_sum += exp_nonpositive(v - row_max)
                tie_ahead = (j < label) != ties_to_last and j != label
                ahead += (v > target) or (v == target and tie_ahead)
            if mode == MODE_LOGITS:
                # NaN anywhere, +inf anywhere (inf - inf) or an all -inf row
                # (-inf - -inf) all make the sum NaN.
                if exp_sum != exp_sum:
                    _note(icounts, b, C_NONFINITE, FIRST_NONFINITE, i)
                    if keep_losses:
                        row_losses[i] = np.nan
                    continue
                loss = (row_max - target) + math.log(exp_sum)
            else:
                if not (row_sum - row_sum == 0.0):  # NaN or inf somewhere
                    _note(icounts, b, C_NONFINITE, FIRST_NONFINITE, i)
                    if keep_losses:
                        row_losses[i] = np.nan
                    continue
                if row_min < 0.0:
                    _note(icounts, b, C_BELOW0, FIRST_BELOW0, i)
                if row_max > 1.0:
                    _note(icounts, b, C_ABOVE1, FIRST_ABOVE1, i)
                if abs(row_sum - 1.0) > sum_tolerance:
                    _note(icounts, b, C_UNNORMALIZED, FIRST_UNNORMALIZED, i)
                fsums[b, F_MIN] = min(fsums[b, F_MIN], row_min)
                fsums[b, F_MAX] = max(fsums[b, F_MAX], row_max)
                p = min(max(target, proba_eps), 1.0 - proba_eps)
                loss = -math.log(p)
            weight = _row_weight(i, label, sample_weight, class_weight)
            icounts[b, C_ROWS] += 1
            weight_sum += weight
            weighted = weight * loss
            if keep_losses:
                row_losses[i] = weighted
            if weight != 0.0:
                if weighted == np.inf:
                    _note(icounts, b, C_INF_LOSS, FIRST_INF_LOSS, i)
                else:
                    loss_sum += weighted
            for k in range(n_k):
                if ahead < top_k[k]:
                    fsums[b, F_TOPK + k] += weight
        fsums[b, F_WEIGHT] = weight_sum
        fsums[b, F_LOSS] = loss_sum


@njit(**PARALLEL_OPTIONS)
def binary_proba_blocks(
    proba,
    labels,
    sample_weight,
    top_k,
    proba_eps,
    row_losses,
    row0,
    nblocks,
    block_rows,
    fsums,
    icounts,
):
    """Per-block sums for 1-D probabilities of class 1 (scikit-learn's binary log_loss).

    Equivalent to the two-column matrix [1 - p, p]: loss is
    -log(clip(p if y == 1 else 1 - p)); the prediction is class 1 when
    p > 1 - p (argmax, first index wins); every row is top-k correct for k >= 2
    (the columns of ``fsums`` follow ``top_k``).
    """
    n_rows = proba.shape[0]
    keep_losses = row_losses.shape[0] != 0
    for b in prange(nblocks):
        start = row0 + b * block_rows
        stop = min(start + block_rows, n_rows)
        for c in range(fsums.shape[1]):
            fsums[b, c] = 0.0
        fsums[b, F_MIN] = np.inf
        fsums[b, F_MAX] = -np.inf
        for c in range(icounts.shape[1]):
            icounts[b, c] = 0
        for c in range(FIRST_NONFINITE, NUM_ICOUNTS):
            icounts[b, c] = -1
        weight_sum = 0.0
        loss_sum = 0.0
        correct = 0.0
        for i in range(start, stop):
            p = as_float64(proba[i])
            if not (p - p == 0.0):
                _note(icounts, b, C_NONFINITE, FIRST_NONFINITE, i)
                if keep_losses:
                    row_losses[i] = np.nan
                continue
            if p < 0.0:
                _note(icounts, b, C_BELOW0, FIRST_BELOW0, i)
            if p > 1.0:
                _note(icounts, b, C_ABOVE1, FIRST_ABOVE1, i)
            fsums[b, F_MIN] = min(fsums[b, F_MIN], p)
            fsums[b, F_MAX] = max(fsums[b, F_MAX], p)
            label = np.int64(labels[i])
            q = p if label == 1 else 1.0 - p
            q = min(max(q, proba_eps), 1.0 - proba_eps)
            loss = -math.log(q)
            weight = 1.0
            if sample_weight.shape[0] != 0:
                weight = np.float64(sample_weight[i])
            icounts[b, C_ROWS] += 1
            weight_sum += weight
            if keep_losses:
                row_losses[i] = weight * loss
            loss_sum += weight * loss
            predicted = 1 if p > 1.0 - p else 0
            if predicted == label:
                correct += weight
        fsums[b, F_WEIGHT] = weight_sum
        fsums[b, F_LOSS] = loss_sum
        for k in range(top_k.shape[0]):
            fsums[b, F_TOPK + k] = correct if top_k[k] == 1 else weight_sum


@njit(**KERNEL_OPTIONS)
def fold_blocks(fsums, icounts, nblocks, row_offset, sums_acc, minmax, counts):
    """Fold per-block results into a state, in block order.

    ``row_offset`` is added to the block's row numbers (kernels number rows
    within the slice they were given).

    ``sums_acc`` rows are exact accumulators for fsums columns F_WEIGHT,
    F_LOSS and the top-k columns (in that order); ``minmax`` holds [min, max];
    ``counts`` holds the NUM_ICOUNTS counters (first-row columns keep the
    earliest row seen, -1 for none).
    """
    n_topk = fsums.shape[1] - F_TOPK
    for b in range(nblocks):
        exact_add(sums_acc[0], fsums[b, F_WEIGHT])
        if not math.isfinite(fsums[b, F_LOSS]):
            # The block's finite losses overflowed float64 when summed.
            counts[C_INF_LOSS] += 1
        exact_add(sums_acc[1], fsums[b, F_LOSS])
        for k in range(n_topk):
            exact_add(sums_acc[2 + k], fsums[b, F_TOPK + k])
        minmax[0] = min(minmax[0], fsums[b, F_MIN])
        minmax[1] = max(minmax[1], fsums[b, F_MAX])
        for c in range(FIRST_NONFINITE):
            counts[c] += icounts[b, c]
        for c in range(FIRST_NONFINITE, NUM_ICOUNTS):
            row = icounts[b, c]
            if row >= 0:
                row += row_offset
            if row >= 0 and (counts[c] < 0 or row < counts[c]):
                counts[c] = row
    for a in range(sums_acc.shape[0]):
        normalize(sums_acc[a])
