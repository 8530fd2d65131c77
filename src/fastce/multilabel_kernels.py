"""Numba kernels behind ``diagnose`` for multi-label scores: per-label sums from one read of each block.

Each element of an (N, C) score array is its own yes/no question (``x`` a
logit or a probability of "yes", ``y`` the target; "yes" is the truth when
y > 0.5).  ``multilabel_blocks`` reads a slice of rows in fixed blocks
(``_config.block_rows(C)`` rows, counted from row 0, as ``kernels_binary``'s
multi-label kernel) and writes, per block, plain float64 sums into
``partials[b]`` and counters into ``counts[b]``; ``fold_partials`` then adds
the blocks, in block order, into double-double accumulators (see
``diagnostics_kernels._add``: 106 bits, exact while a sum's terms span less
than ~2^53 times its smallest term).  Blocks never depend on the thread
count, so neither do the results.

The element loss is the one ``evaluate`` sums (``kernels_binary.softplus_parts_in``:
logits through the stable softplus, in the math the precision picks;
probabilities with logs clamped at -100 as PyTorch).  A row holding a NaN score is skipped whole (``evaluate`` does
the same under ``nan_policy="omit"``); an infinite element loss (a +-inf logit
on the wrong side) is counted, never summed.

Float layout of one block's ``partials`` row (offsets: ``layout``):

    SPLIT    8 values over elements: weight and weighted loss of right
             answers, of wrong answers, of confidently wrong answers
             (p(right answer) < confident_below), of all (finite losses)
    CAL      n_bins x 3: weight, weighted confidence, weighted hits per bin
             of the element's confidence, p of the answer it predicts
    LABEL    C x 4: per label weight of positives (support), weight
             predicted positive, weight of true positives, weighted loss

Counters (``counts`` row): rows counted, elements with an infinite loss,
right, wrong and confidently wrong elements, then per label the number of
positives and of infinite losses.

Per-row outputs (slice-relative, for the worst rows): the row's loss (mean
over its labels, unweighted; NaN for a skipped row), its number of wrong
labels, and the label with its highest loss.
"""

from __future__ import annotations

import numpy as np

from fastce import kernels_binary as KB
from fastce._config import KERNEL_OPTIONS, kernel
from fastce._parallel import claim, new_claims, run_tasks
from fastce._vecmath import as_float64
from fastce.diagnostics_kernels import _add, confidence_bin

# SPLIT entries: the multi-class diagnostics' order (diagnostics_kernels.S_*)
S_W_RIGHT, S_L_RIGHT, S_W_WRONG, S_L_WRONG, S_W_CONFWRONG, S_L_CONFWRONG, S_W_ALL, S_L_ALL = range(8)
SPLIT_SIZE = 8
# LABEL columns
L_SUPPORT, L_PREDICTED, L_TRUE_POS, L_LOSS = range(4)
LABEL_COLUMNS = 4
# counters
N_ROWS, N_INF, N_RIGHT, N_WRONG, N_CONFWRONG = range(5)
N_SMALL = 5
# per label, after N_SMALL: positives, infinite losses
LABEL_COUNTS = 2


def layout(num_labels: int, n_bins: int) -> tuple[int, int, int]:
    """(offset of CAL, offset of LABEL, size) of a ``partials`` row."""
    cal = SPLIT_SIZE
    label = cal + 3 * n_bins
    return cal, label, label + LABEL_COLUMNS * num_labels


def count_size(num_labels: int) -> int:
    return N_SMALL + LABEL_COUNTS * num_labels


@kernel(**KERNEL_OPTIONS)
def _multilabel_blocks_tasks(scores, targets, row_weight, mode, confident_below, n_bins, nblocks, block_rows, partials,
                             counts, row_loss, row_wrong, row_worst, float32_math, claims, first_task, task_step):
    """The blocks of an (n, C) slice this thread claims (see fastce._parallel.claim and the module docstring).

    ``targets``: (n, C) float64, float32, uint8 or int64; ``row_weight``: (n,) or
    empty.  Two passes over a row: the first looks for a NaN score (the row
    is then skipped), the second adds its elements.  ``float32_math``: the
    logits' math, as evaluate's (kernels_binary.softplus_parts_in).
    """
    n_rows, n_cols = scores.shape
    weighted = row_weight.shape[0] != 0
    cal = SPLIT_SIZE
    lab = cal + 3 * n_bins
    while True:
        b = claim(claims)  # see fastce._parallel.claim
        if b >= nblocks:
            break
        part = partials[b]
        cnt = counts[b]
        for k in range(part.shape[0]):
            part[k] = 0.0
        for k in range(cnt.shape[0]):
            cnt[k] = 0
        for i in range(b * block_rows, min(n_rows, (b + 1) * block_rows)):
            nan = False
            for j in range(n_cols):
                x = as_float64(scores[i, j])
                nan = nan or x != x
            w = row_weight[i] if weighted else 1.0
            row_wrong[i] = 0
            row_worst[i] = 0
            if nan or w == 0.0:  # NaN: skipped, as evaluate's nan_policy="omit"; weight 0: adds nothing
                row_loss[i] = np.nan
                continue
            cnt[N_ROWS] += 1
            total = 0.0
            worst = -1.0
            wrong = 0
            for j in range(n_cols):
                x = as_float64(scores[i, j])
                y = KB.target_value(targets[i, j])
                raw = scores[i, j]
                e = KB.logit_exp(raw, float32_math) if mode == KB.MODE_LOGITS else 0.0
                neg_log_p, neg_log_q, p = KB.softplus_parts_in(raw, mode, e, float32_math)
                c = 1.0 - y
                loss = (0.0 if y == 0.0 else y * neg_log_p) + (0.0 if c == 0.0 else c * neg_log_q)
                truth = y > 0.5
                yes = x > 0.0 if mode == KB.MODE_LOGITS else x > 0.5
                right = yes == truth
                confidence = p if yes else 1.0 - p
                p_right = confidence if right else 1.0 - confidence
                total += loss
                if loss > worst:
                    worst = loss
                    row_worst[i] = j
                wl = w * loss
                infinite = wl == np.inf
                kept = 0.0 if infinite else wl
                if infinite:
                    cnt[N_INF] += 1
                    cnt[N_SMALL + LABEL_COUNTS * j + 1] += 1
                part[S_W_ALL] += w
                part[S_L_ALL] += kept
                if right:
                    cnt[N_RIGHT] += 1
                    part[S_W_RIGHT] += w
                    part[S_L_RIGHT] += kept
                else:
                    wrong += 1
                    cnt[N_WRONG] += 1
                    part[S_W_WRONG] += w
                    part[S_L_WRONG] += kept
                    if p_right < confident_below:
                        cnt[N_CONFWRONG] += 1
                        part[S_W_CONFWRONG] += w
                        part[S_L_CONFWRONG] += kept
                k = cal + 3 * confidence_bin(confidence, n_bins)
                part[k] += w
                part[k + 1] += w * confidence
                part[k + 2] += w if right else 0.0
                k = lab + LABEL_COLUMNS * j
                if truth:
                    cnt[N_SMALL + LABEL_COUNTS * j] += 1
                    part[k + L_SUPPORT] += w
                    part[k + L_TRUE_POS] += w if yes else 0.0
                part[k + L_PREDICTED] += w if yes else 0.0
                part[k + L_LOSS] += kept
            row_loss[i] = total / n_cols
            row_wrong[i] = wrong


def multilabel_blocks(scores, targets, row_weight, mode, confident_below, n_bins, nblocks, block_rows, partials, counts,
                      row_loss, row_wrong, row_worst, float32_math=None):
    """``_multilabel_blocks_tasks`` on the thread pool (see fastce._parallel)."""
    run_tasks(
        _multilabel_blocks_tasks,
        (scores, targets, row_weight, mode, confident_below, n_bins, nblocks, block_rows, partials, counts, row_loss,
         row_wrong, row_worst, float32_math, new_claims()),
        nblocks,
    )


@kernel(**KERNEL_OPTIONS)
def fold_partials(partials, block_counts, nblocks, hi, lo, counts):
    """Add the blocks' sums, in block order, into the double-double pairs (hi, lo), and the counters.

    Returns the number of non-finite block sums (weights so large that a
    block's sum overflowed): those are not added, and the caller refuses them.
    """
    nonfinite = 0
    for b in range(nblocks):
        for k in range(partials.shape[1]):
            x = partials[b, k]
            if x != 0.0:
                if np.isfinite(x):
                    _add(hi, lo, k, x)
                else:
                    nonfinite += 1
        for k in range(block_counts.shape[1]):
            counts[k] += block_counts[b, k]
    return nonfinite
