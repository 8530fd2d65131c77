"""Numba fold of per-row diagnostics into bin and class accumulators.

``kernels.score_blocks`` reads the scores (in parallel) and leaves, for one
slice of rows, each row's loss, p(true class), p(predicted class) and
predicted class.  ``fold_rows`` walks those per-row values once, serially and
in row order, into the accumulators of a ``DiagnosticsState``: the order of
the additions is fixed by the rows alone, so the result does not depend on
the number of threads.

Every float accumulator is a pair (sum, compensation) updated with
Neumaier's algorithm, so a bin summed over 10^9 rows keeps ~16 digits.
Layout of the flat float accumulator (offsets in ``layout``):

    SPLIT    8 values: weight and weighted loss of correct rows, of wrong
             rows, of confidently wrong rows, and of all rows (finite losses)
    CAL      n_bins x 3: weight, weighted confidence, weighted hits per
             confidence bin (bin k holds confidences in (k/B, (k+1)/B])
    PTRUE    hist_bins x 2: weight and weighted loss per p(true) bin
    LOSS     LOSS_BINS x 2: weight and weighted loss per loss bin
    CLASS    C x 4: per true class weight (support), weighted loss; per
             predicted class weight; weight of correct rows per class
    CONF     C x C weighted confusion matrix (true, predicted), or nothing

Integer counters (``counts``): rows, correct rows, wrong rows, confidently
wrong rows, rows with an infinite loss, then rows per true class.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from fastce._config import KERNEL_OPTIONS

# SPLIT entries
S_W_RIGHT, S_L_RIGHT, S_W_WRONG, S_L_WRONG, S_W_CONFWRONG, S_L_CONFWRONG, S_W_ALL, S_L_ALL = range(8)
SPLIT_SIZE = 8
# CLASS columns
K_SUPPORT, K_LOSS, K_PREDICTED, K_HITS = range(4)
CLASS_COLUMNS = 4
# counts
N_ROWS, N_RIGHT, N_WRONG, N_CONFWRONG, N_INF = range(5)
N_PER_CLASS = 5

# Loss histogram: bin 0 is [0, 1e-8), then LOSS_PER_DECADE bins per decade up
# to 1e3, then one bin for [1e3, inf].
LOSS_LOG10_MIN = -8
LOSS_LOG10_MAX = 3
LOSS_PER_DECADE = 20
LOSS_BINS = 2 + (LOSS_LOG10_MAX - LOSS_LOG10_MIN) * LOSS_PER_DECADE


def loss_bin_edges() -> np.ndarray:
    """The LOSS_BINS + 1 edges of the loss histogram (first 0, last inf)."""
    inner = 10.0 ** (LOSS_LOG10_MIN + np.arange(LOSS_BINS - 1) / LOSS_PER_DECADE)
    return np.concatenate([[0.0], inner, [np.inf]])


@njit(inline="always", **KERNEL_OPTIONS)
def _add(acc, lo, index, x):
    """acc[index] += x with Neumaier's compensation kept in lo[index]."""
    s = acc[index]
    t = s + x
    if abs(s) >= abs(x):
        lo[index] += (s - t) + x
    else:
        lo[index] += (x - t) + s
    acc[index] = t


@njit(inline="always", **KERNEL_OPTIONS)
def confidence_bin(confidence, n_bins):
    """Bin k holds (k/B, (k+1)/B]; 0 goes to bin 0 (computed as ceil(c B) - 1)."""
    k = np.int64(math.ceil(confidence * n_bins)) - 1
    return min(max(k, 0), n_bins - 1)


@njit(inline="always", **KERNEL_OPTIONS)
def loss_bin(loss):
    if not loss >= 10.0**LOSS_LOG10_MIN:
        return 0
    if loss >= 10.0**LOSS_LOG10_MAX:
        return LOSS_BINS - 1
    k = np.int64(math.floor((math.log10(loss) - LOSS_LOG10_MIN) * LOSS_PER_DECADE)) + 1
    return min(max(k, 1), LOSS_BINS - 2)


@njit(**KERNEL_OPTIONS)
def fold_rows(labels, weights, stats, pred, confident_below, layout, acc, lo, counts):
    """Fold one slice's per-row diagnostics (see module docstring) into the accumulators.

    ``layout`` = [n_classes, n_bins, hist_bins, CAL, PTRUE, LOSS, CLASS, CONF]
    offsets (CONF = -1: no dense confusion matrix).  Rows with a NaN loss
    (non-finite scores, skipped) and rows of weight 0 are not folded.
    """
    n_classes, n_bins, hist_bins = layout[0], layout[1], layout[2]
    cal, ptrue, lossh, cls, conf = layout[3], layout[4], layout[5], layout[6], layout[7]
    weighted = weights.shape[0] != 0
    for r in range(labels.shape[0]):
        loss = stats[r, 0]
        if loss != loss:
            continue
        w = weights[r] if weighted else 1.0
        if w == 0.0:
            continue
        label = labels[r]
        predicted = pred[r]
        p_true = stats[r, 1]
        p_top = stats[r, 2]
        right = predicted == label
        infinite = loss == np.inf
        wl = 0.0 if infinite else w * loss
        counts[N_ROWS] += 1
        counts[N_PER_CLASS + label] += 1
        counts[N_INF] += infinite
        if right:
            counts[N_RIGHT] += 1
            _add(acc, lo, S_W_RIGHT, w)
            _add(acc, lo, S_L_RIGHT, wl)
        else:
            counts[N_WRONG] += 1
            _add(acc, lo, S_W_WRONG, w)
            _add(acc, lo, S_L_WRONG, wl)
            if p_true < confident_below:
                counts[N_CONFWRONG] += 1
                _add(acc, lo, S_W_CONFWRONG, w)
                _add(acc, lo, S_L_CONFWRONG, wl)
        _add(acc, lo, S_W_ALL, w)
        _add(acc, lo, S_L_ALL, wl)
        k = confidence_bin(p_top, n_bins)
        _add(acc, lo, cal + 3 * k, w)
        _add(acc, lo, cal + 3 * k + 1, w * p_top)
        if right:
            _add(acc, lo, cal + 3 * k + 2, w)
        k = confidence_bin(p_true, hist_bins)
        _add(acc, lo, ptrue + 2 * k, w)
        _add(acc, lo, ptrue + 2 * k + 1, wl)
        k = loss_bin(loss)
        _add(acc, lo, lossh + 2 * k, w)
        _add(acc, lo, lossh + 2 * k + 1, wl)
        row = cls + CLASS_COLUMNS * label
        _add(acc, lo, row + K_SUPPORT, w)
        _add(acc, lo, row + K_LOSS, wl)
        _add(acc, lo, cls + CLASS_COLUMNS * predicted + K_PREDICTED, w)
        if right:
            _add(acc, lo, row + K_HITS, w)
        if conf >= 0:
            _add(acc, lo, conf + n_classes * label + predicted, w)
