"""Numba kernel for cross-entropy against a target *distribution*.

Two PyTorch cases share it: soft (probability) targets, an (N, C) matrix,
and class-index targets with ``label_smoothing``.  Per row it reads the
logits once from memory (the row max), then from cache: the log-sum-exp and
``d_j = -log softmax(z)_j = (max - z_j) + log(sum exp(z - max))``, a sum of
two non-negative terms, so no cancellation even for huge logits.

* soft targets ``t`` (smoothed: ``q = t * (1 - eps) + eps / C``):
  ``loss = sum_j w_j q_j d_j``; also the entropy ``-sum q log q`` and the
  divergence ``KL(q || softmax z) = sum_j q_j (log q_j + d_j)`` (unweighted),
  so that cross-entropy = entropy + KL when no class weights are given.
* class index ``y`` with smoothing ``eps``:
  ``loss = (1 - eps) w_y d_y + (eps / C) sum_j w_j d_j``; the denominator of
  PyTorch's mean is ``w_y`` (the smoothing term is divided by it too).

A term whose coefficient is 0 is left out (no 0 * inf for masked classes
that carry no target mass).  Rows with NaN or +inf logits, or only -inf,
are non-finite and not counted.  Same block / exact-fold scheme as the other
kernels (``kernels_binary.fold_blocks``).

Two kernels: rows of more than 48 classes one at a time (``_soft_blocks_tasks``:
each row's sums in fastce._lanes' order), shorter ones 64 rows at a time down
their columns (``_soft_short_tasks``: each row's sums from column 0 up, in
loops over rows that vectorise).
"""

from __future__ import annotations

import numpy as np

from fastce import _lanes as lanes
from fastce import kernels as K
from fastce._config import KERNEL_OPTIONS, LEAF_OPTIONS, kernel, kernel_step
from fastce._parallel import claim, new_claims, run_tasks
from fastce._vecmath import (
    as_float64,
    as_native,
    compile_apart,
    exp_nonpositive,
    from_ordered_bits,
    inline_into_callers,
    log1p_nonnegative,
    log_positive,
    maxnum,
    order_key,
    ordered_bits,
    prefer_wide_vectors,
)

S_LOSS, S_DENOM, S_ENTROPY, S_KL, S_HITS = range(5)
# Sums of squares of the per-row values (finite ones), behind the standard errors (fastce.errorbars).
S_LOSS2, S_ENTROPY2, S_KL2 = range(5, 8)
NUM_SUMS = 8

N_ROWS, N_NONFINITE, N_INF_LOSS, N_IGNORED, N_BAD_TARGET, N_UNNORMALIZED = range(6)
FIRST_NONFINITE, FIRST_INF_LOSS, FIRST_BAD_TARGET, FIRST_UNNORMALIZED = range(6, 10)
NUM_COUNTS = 10
FIRST_COLUMNS = 6
# Columns of soft_blocks' row_values (soft targets): a row's loss (NaN, in every column, where the row is not
# counted), target entropy, KL divergence and argmax agreement (1.0 or 0.0): SoftState.GROUPED_MEANS row by row.
V_LOSS, V_ENTROPY, V_KL, V_HIT = range(4)
ROW_VALUES = 4


@kernel_step(**KERNEL_OPTIONS)
def _smoothing_sum(scores, i, n_cols, m, lse, class_weight, weighted, buffer):
    """sum_j w_j ((m - z_j) + lse) of row i (0 for a zero weight), in the lanes order of fastce._lanes.

    The terms a chunk of EXP_CHUNK at a time into ``buffer``, then summed in
    lanes carried from chunk to chunk.
    """
    a = lanes.zero()
    b = lanes.zero()
    first = 0
    while first < n_cols:
        count = min(K.EXP_CHUNK, n_cols - first)
        for j in range(count):
            u = np.uint64(first + j)  # unsigned: a signed index kept numba's wraparound (gathers)
            w_j = class_weight[u] if weighted else 1.0
            d = (m - as_float64(scores[i, u])) + lse
            buffer[j] = 0.0 if w_j == 0.0 else w_j * d
        a, b = lanes.add_values(buffer, count, a, b)
        first += count
    return lanes.finish(a, b)


@kernel_step(**KERNEL_OPTIONS)
def _row_max_lse(scores, i, n_cols, float32_math, exp_chunk64):
    """(max, argmax, log sum exp(z - max)) of logit row i; the last is NaN for NaN, +inf and all--inf rows.

    Pass 1 (from memory), in the input's precision: max and argmax.  Pass 2
    (from cache): the exp-sum of the entries below the max, in the lanes
    order of fastce._lanes (the same bits on every machine); NaN, +inf and
    all--inf rows make it NaN (see kernels._logits_row).  With
    ``float32_math`` (16- and 32-bit logits, precision="input"; rows of up to
    48 classes take _soft_short_tasks, see soft_blocks) rows take the float32 exps of the
    multi-class kernel (kernels._exp_sums_f32: each within a float32 ulp,
    summed in float64).
    """
    # The max as an integer reduction over order-preserving keys (vectorised, see kernels._logits_row), then
    # its first column; tracking the argmax in the max's loop kept it scalar (2.4 ns a score with the exps).
    top_key = order_key(ordered_bits(as_native(scores[i, 0])))
    for j in range(n_cols):
        top_key = max(top_key, order_key(ordered_bits(as_native(scores[i, j]))))
    native_top = from_ordered_bits(order_key(top_key))
    best = max(K._first_index_of(scores, i, n_cols, native_top), 0)  # -1 (a NaN max: the row is not counted)
    m = np.float64(native_top)
    rest, _, at_max = K._row_exp_sums(scores, i, n_cols, m, native_top, float32_math, exp_chunk64)
    rest += at_max - 1.0
    return m, best, (rest if rest != rest else log1p_nonnegative(rest))


# Rows of the soft-target row's scratch (see _new_soft_scratch): per-entry terms of a chunk of EXP_CHUNK entries.
_LOSS, _ENTROPY, _KL, _TOTAL = range(4)


@kernel_step(**KERNEL_OPTIONS)
def _new_soft_scratch():
    return np.empty((4, K.EXP_SCRATCH))


@kernel_step(**LEAF_OPTIONS)
def _top_target_key(targets, i, first, count, top):
    """The largest of ``top`` and the order keys of targets[i, first:first + count] (see kernels._logits_row).

    A function of its own: optimised here, the loop is vectorised (packed int64 maxima); written in
    _soft_target_row, it stayed a scalar loop of compares and branches (a fifth of that row's time at
    C = 100, perf)."""
    compile_apart()
    for j in range(count):
        top = max(top, order_key(ordered_bits(as_float64(targets[i, np.uint64(first + j)]))))
    return top


@kernel_step(**KERNEL_OPTIONS)
def _soft_target_row(scores, targets, i, m, lse, smoothing, class_weight, weighted, terms):
    """(loss, entropy, KL, target sum, bad target, target argmax) of row i against soft target row i.

    ``m`` and ``lse`` the row's max and log-sum-exp (``_row_max_lse``); the
    target smoothed as q = t (1 - smoothing) + smoothing / C.  A chunk of
    EXP_CHUNK entries at a time: one loop writes every entry's terms into
    ``terms`` (plain arithmetic, no branch: it vectorises; the log of q is
    _vecmath.log_positive's, math.log kept the loop scalar at 8 ns a score),
    then each sum runs in the lanes order of fastce._lanes (the same bits
    on every machine).  Terms of q = 0 are left out (0, never 0 * inf).
    """
    prefer_wide_vectors()  # 512-bit vectors on AVX-512 hosts: the terms' float64 log (see kernels.exp_sums)
    n_cols = scores.shape[1]
    spread = smoothing / n_cols
    loss_a, loss_b, ent_a, ent_b = lanes.zero(), lanes.zero(), lanes.zero(), lanes.zero()
    kl_a, kl_b, tot_a, tot_b = lanes.zero(), lanes.zero(), lanes.zero(), lanes.zero()
    bad = np.int64(0)
    top = np.int64(-(2**63))
    first = 0
    while first < n_cols:
        count = min(K.EXP_CHUNK, n_cols - first)
        # Integer reductions only, each in a loop of its own: LLVM vectorises a loop of one reduction (see
        # kernels._logits_row); with both, this loop stayed scalar (half the row's time at C = 100, perf).
        for j in range(count):
            t = as_float64(targets[i, np.uint64(first + j)])
            bad += np.int64(not ((t >= 0.0) & (t < np.inf)))
        top = _top_target_key(targets, i, first, count, top)
        for j in range(count):  # no reduction: every entry's terms
            c = np.uint64(first + j)
            t = as_float64(targets[i, c])
            q = t * (1.0 - smoothing) + spread
            d = (m - as_float64(scores[i, c])) + lse
            wq = q * class_weight[c] if weighted else q
            terms[_LOSS, j] = 0.0 if wq == 0.0 else wq * d
            positive = q > 0.0
            # (A subnormal q's log is off by up to ~35, in a term q log q below 1e-305: nothing a sum keeps.)
            log_q = log_positive(q if positive else 1.0)
            terms[_ENTROPY, j] = -(q * log_q) if positive else 0.0
            terms[_KL, j] = q * (log_q + d) if positive else 0.0
            terms[_TOTAL, j] = t
        loss_a, loss_b = lanes.add_values(terms[_LOSS], count, loss_a, loss_b)
        ent_a, ent_b = lanes.add_values(terms[_ENTROPY], count, ent_a, ent_b)
        kl_a, kl_b = lanes.add_values(terms[_KL], count, kl_a, kl_b)
        tot_a, tot_b = lanes.add_values(terms[_TOTAL], count, tot_a, tot_b)
        first += count
    # The target's argmax: the first entry at its max (NaN targets are bad rows, reported anyway).
    target_max = from_ordered_bits(order_key(top))
    target_best = max(K._first_index_of(targets, i, n_cols, target_max), 0)
    return (lanes.finish(loss_a, loss_b), lanes.finish(ent_a, ent_b), lanes.finish(kl_a, kl_b),
            lanes.finish(tot_a, tot_b), bad != 0, target_best)


@kernel(**KERNEL_OPTIONS)
def _soft_blocks_tasks(scores, targets, labels, class_weight, smoothing, ignore_label, sum_tolerance, float32_math,
                       row_losses, row_values, nblocks, block_rows, fsums, icounts, claims, first_task, task_step):
    """Per-block sums over rows [0, nblocks * block_rows) of an (n, C) logit slice, C > SHORT_MAX_CLASSES (see
    _soft_short_tasks for shorter rows; any width works here, tests force it).

    ``targets`` (n, C) soft targets, or empty (0, 0) with ``labels`` (n,)
    class indices (``ignore_label`` rows skipped).  ``class_weight`` (C,) or
    empty.  ``row_losses`` (empty or (n,)) receives each row's loss (NaN for
    non-finite rows, 0 for ignored ones); ``row_values`` (empty, or (n,
    ROW_VALUES), soft targets only) each row's values (see ROW_VALUES), for
    the clustered and paired errors of groups= and compare.  Target rows with a negative, NaN
    or infinite value are counted in N_BAD_TARGET; rows whose sum differs
    from 1 by more than ``sum_tolerance`` in N_UNNORMALIZED.
    """
    n_rows = scores.shape[0]
    n_cols = scores.shape[1]
    soft = targets.shape[0] != 0
    weighted = class_weight.shape[0] != 0
    spread = smoothing / n_cols
    exp_chunk64 = np.empty(K.EXP_SCRATCH)  # a row's exps or smoothing terms, a chunk at a time
    terms = _new_soft_scratch()  # a soft-target row's terms, a chunk at a time
    per_row = np.empty((_ROW_FIELDS, _SHORT_ROWS))  # a group of rows' values, for _finish_rows
    flags = np.empty(_SHORT_ROWS, dtype=np.int64)
    sums, counts = K.block_totals(fsums, icounts)
    while True:
        b = claim(claims)  # see fastce._parallel.claim
        if b >= nblocks:
            break
        prefer_wide_vectors()
        K.reset_counters(sums, counts, 0, FIRST_COLUMNS)
        start = b * block_rows
        stop = min(start + block_rows, n_rows)
        for first in range(start, stop, _SHORT_ROWS):
            count = min(_SHORT_ROWS, stop - first)
            for r in range(count):
                i = first + r
                label = np.int64(0)
                if not soft:
                    label = np.int64(labels[i])
                    if label == ignore_label:
                        flags[r] = _F_IGNORED
                        continue
                m, best, lse = _row_max_lse(scores, i, n_cols, float32_math, exp_chunk64)
                loss, denom, entropy, kl, total, bad, target_best = 0.0, 1.0, 0.0, 0.0, 0.0, False, np.int64(0)
                if lse == lse:
                    if soft:
                        loss, entropy, kl, total, bad, target_best = _soft_target_row(
                            scores, targets, i, m, lse, smoothing, class_weight, weighted, terms
                        )
                    else:
                        w_y = class_weight[label] if weighted else 1.0
                        d_y = (m - as_float64(scores[i, label])) + lse
                        nll = 0.0 if w_y == 0.0 else w_y * d_y
                        loss = 0.0 if smoothing == 1.0 else (1.0 - smoothing) * nll
                        if smoothing > 0.0:
                            loss += spread * _smoothing_sum(scores, i, n_cols, m, lse, class_weight, weighted,
                                                            exp_chunk64)
                        denom = w_y
                per_row[_LSE, r] = lse
                per_row[_R_LOSS, r] = loss
                per_row[_R_DENOM, r] = denom
                per_row[_R_ENTROPY, r] = entropy
                per_row[_R_KL, r] = kl
                per_row[_R_TOTAL, r] = total
                hit = best == (target_best if soft else label)
                flags[r] = (_F_BAD if bad else 0) | (_F_HIT if hit else 0)
            _finish_rows(sums, counts, first, count, soft, per_row, flags, sum_tolerance, row_losses, row_values)
        K.store_block(sums, counts, fsums, icounts, b)


@kernel_step(**KERNEL_OPTIONS)
def _finish_rows(sums, counts, first, count, soft, per_row, flags, sum_tolerance, row_losses, row_values):
    """Rows first .. first + count - 1: their counters, block sums and per-row outputs, from ``per_row``
    (columns 0 .. count - 1: _LSE, _R_LOSS, _R_DENOM, _R_ENTROPY, _R_KL, _R_TOTAL) and ``flags`` (_F_* bits),
    the same for both kernels.  A NaN log-sum-exp is a non-finite row (not counted); _F_HIT: the logits'
    argmax is the target's (soft) or the label (class indices); _F_IGNORED: the label is ignore_label.

    A call a group of rows: a call a row (numba-inlined or not) took the reference counts of the four arrays
    it was passed, eight atomic operations a row (NRT_incref / NRT_decref: 40% of label smoothing's time at
    C = 4, perf).
    """
    inline_into_callers()
    keep = row_losses.shape[0] != 0
    keep_values = row_values.shape[0] != 0
    for r in range(count):
        i = first + r
        lse, loss, denom = per_row[_LSE, r], per_row[_R_LOSS, r], per_row[_R_DENOM, r]
        hit = (flags[r] & _F_HIT) != 0
        if flags[r] & _F_IGNORED:
            counts[0, N_IGNORED] += 1
            if keep:
                row_losses[i] = 0.0
            continue
        if lse != lse:
            if counts[0, N_NONFINITE] == 0:
                counts[0, FIRST_NONFINITE] = i
            counts[0, N_NONFINITE] += 1
            if keep:
                row_losses[i] = np.nan
            if keep_values:
                for c in range(ROW_VALUES):
                    row_values[i, c] = np.nan
            continue
        if soft:
            entropy, kl, total = per_row[_R_ENTROPY, r], per_row[_R_KL, r], per_row[_R_TOTAL, r]
            if flags[r] & _F_BAD:
                if counts[0, N_BAD_TARGET] == 0:
                    counts[0, FIRST_BAD_TARGET] = i
                counts[0, N_BAD_TARGET] += 1
            if not abs(total - 1.0) <= sum_tolerance:
                if counts[0, N_UNNORMALIZED] == 0:
                    counts[0, FIRST_UNNORMALIZED] = i
                counts[0, N_UNNORMALIZED] += 1
            if keep_values:
                row_values[i, V_LOSS] = loss
                row_values[i, V_ENTROPY] = entropy
                row_values[i, V_KL] = kl
                row_values[i, V_HIT] = 1.0 if hit else 0.0
            sums[0, S_ENTROPY] += entropy
            sums[0, S_ENTROPY2] += entropy * entropy
            kept_kl = kl if kl < np.inf else 0.0
            sums[0, S_KL] += kept_kl
            sums[0, S_KL2] += kept_kl * kept_kl
        if keep:
            row_losses[i] = loss
        counts[0, N_ROWS] += 1
        if loss == np.inf:
            if counts[0, N_INF_LOSS] == 0:
                counts[0, FIRST_INF_LOSS] = i
            counts[0, N_INF_LOSS] += 1
        else:
            sums[0, S_LOSS] += loss
            sums[0, S_LOSS2] += loss * loss
        sums[0, S_DENOM] += denom
        sums[0, S_HITS] += hit


# Rows of up to this many classes take _soft_short_tasks: faster than the row-by-row kernel up to ~56 classes,
# as fast at 64 (one thread, float32 logits, ns a score, walk / row by row: C = 16 soft 5.5 / 13.6, smoothing 2.8
# / 7.3; C = 32 4.9 / 7.2, 2.4 / 3.4; C = 48 4.7 / 5.9, 2.2 / 2.7; C = 64 4.7 / 4.8, 2.3 / 2.0; C = 100 5.5 / 4.5).
SHORT_MAX_CLASSES = 48
# _soft_short_tasks walks this many rows of a block at a time (their columns: 2 x 48 x 64 float64, 48 KiB).
_SHORT_ROWS = 64
# Rows of the kernels' per-row scratch (float64): max, exp sum, entries at the max, log-sum-exp, then the sums of
# the target terms (loss, entropy, KL, target), the targets' max, and the row's denominator (w_y; 1 for soft
# targets); and the bits of its flags (int64), for _finish_rows.
_M, _REST, _AT_MAX, _LSE, _R_LOSS, _R_ENTROPY, _R_KL, _R_TOTAL, _R_TMAX, _R_DENOM = range(10)
_ROW_FIELDS = 10
_F_BAD, _F_HIT, _F_IGNORED = 1, 2, 4


@kernel(**KERNEL_OPTIONS)
def _soft_short_tasks(scores, targets, labels, class_weight, smoothing, ignore_label, sum_tolerance, row_losses,
                      row_values, nblocks, block_rows, fsums, icounts, claims, first_task, task_step):
    """_soft_blocks_tasks for rows of at most SHORT_MAX_CLASSES classes (float64 math), _SHORT_ROWS rows at a time
    walked down their columns: every loop runs over rows (it vectorises), where the row-by-row kernel ran a few
    entries a loop (scalar remainders, and a row's fixed costs: 23 ns a score at C = 10 against 1.4 for
    evaluate's labels).

    The same statistics, each row's sums taken column by column from column 0 (the order of the multi-class
    column walk, kernels._exp_columns; long rows sum in fastce._lanes' order): the exp sum, then for soft
    targets the loss, entropy, KL and target sums, for label smoothing the smoothing sum.  The max and the
    targets' max are the first entries at the max (strict comparisons, column by column): the argmaxes of
    _row_max_lse and _soft_target_row.  NaN, +inf and all--inf rows get a NaN exp sum, as there.
    """
    n_rows = scores.shape[0]
    n_cols = scores.shape[1]
    soft = targets.shape[0] != 0
    weighted = class_weight.shape[0] != 0
    spread = smoothing / n_cols
    columns = np.empty((n_cols, _SHORT_ROWS))  # the rows' logits, a row per class
    target_columns = np.empty((n_cols if soft else 0, _SHORT_ROWS))
    per_row = np.empty((_ROW_FIELDS, _SHORT_ROWS))
    best = np.empty(_SHORT_ROWS, dtype=np.int64)
    target_best = np.empty(_SHORT_ROWS, dtype=np.int64)
    bad = np.empty(_SHORT_ROWS, dtype=np.int64)
    flags = np.empty(_SHORT_ROWS, dtype=np.int64)
    sums, counts = K.block_totals(fsums, icounts)
    while True:
        b = claim(claims)  # see fastce._parallel.claim
        if b >= nblocks:
            break
        prefer_wide_vectors()
        K.reset_counters(sums, counts, 0, FIRST_COLUMNS)
        start = b * block_rows
        stop = min(start + block_rows, n_rows)
        for first in range(start, stop, _SHORT_ROWS):
            count = min(_SHORT_ROWS, stop - first)
            _short_logit_columns(scores, first, count, columns, per_row, best)
            if soft:
                _short_target_columns(targets, first, count, columns, target_columns, per_row, smoothing, spread,
                                      class_weight, weighted, target_best, bad)
            elif smoothing > 0.0:
                _short_smoothing_sums(count, columns, per_row, class_weight, weighted)
            for r in range(count):
                i = first + r
                if soft:
                    per_row[_R_DENOM, r] = 1.0
                    flags[r] = (_F_BAD if bad[r] != 0 else 0) | (_F_HIT if best[r] == target_best[r] else 0)
                    continue
                label = np.int64(labels[i])
                if label == ignore_label:
                    flags[r] = _F_IGNORED
                    continue
                lse = per_row[_LSE, r]
                loss, denom = 0.0, 1.0
                if lse == lse:
                    m = per_row[_M, r]
                    w_y = class_weight[label] if weighted else 1.0
                    d_y = (m - as_float64(scores[i, label])) + lse
                    nll = 0.0 if w_y == 0.0 else w_y * d_y
                    loss = 0.0 if smoothing == 1.0 else (1.0 - smoothing) * nll
                    if smoothing > 0.0:
                        loss += spread * per_row[_R_LOSS, r]  # the smoothing sum
                    denom = w_y
                per_row[_R_LOSS, r] = loss
                per_row[_R_DENOM, r] = denom
                flags[r] = _F_HIT if best[r] == label else 0
            _finish_rows(sums, counts, first, count, soft, per_row, flags, sum_tolerance, row_losses, row_values)
        K.store_block(sums, counts, fsums, icounts, b)


@kernel_step(**KERNEL_OPTIONS)
def _short_logit_columns(scores, first, count, columns, per_row, best):
    """Rows first .. first + count - 1 of the logits into ``columns`` (a row per class, float64), and per row the
    max (``per_row[_M]``), its first column (``best``), and log-sum-exp (``per_row[_LSE]``; NaN for NaN, +inf and
    all--inf rows) as _row_max_lse's, the exps summed from column 0 up."""
    inline_into_callers()
    n_cols = scores.shape[1]
    for r in range(count):
        for j in range(n_cols):
            columns[j, r] = as_float64(scores[first + r, j])
    m, rest, at_max, lse = per_row[_M], per_row[_REST], per_row[_AT_MAX], per_row[_LSE]
    for r in range(count):
        m[r] = columns[0, r]
        best[r] = 0
    for j in range(1, n_cols):
        for r in range(count):
            v = columns[j, r]
            # The first entry at the max; a NaN entry never replaces it (its row's exp sum is NaN below).
            above = (v > m[r]) | (m[r] != m[r])
            best[r] = j if above else best[r]
            m[r] = v if above else m[r]
    for r in range(count):
        rest[r] = 0.0
        at_max[r] = 0.0
    for j in range(n_cols):
        for r in range(count):
            x = columns[j, r] - m[r]
            top = x >= 0.0
            rest[r] += exp_nonpositive(-np.inf if top else x)
            at_max[r] += 1.0 if top else 0.0
    for r in range(count):
        total = rest[r] + (at_max[r] - 1.0)
        lse[r] = total if total != total else log1p_nonnegative(total)


@kernel_step(**KERNEL_OPTIONS)
def _short_smoothing_sums(count, columns, per_row, class_weight, weighted):
    """Per row of a walk of short rows (see _short_logit_columns), _smoothing_sum's sum_j w_j ((m - z_j) + lse)
    (0 for a zero weight) into ``per_row[_R_LOSS]``, from column 0 up."""
    inline_into_callers()
    m, lse, total = per_row[_M], per_row[_LSE], per_row[_R_LOSS]
    for r in range(count):
        total[r] = 0.0
    for j in range(columns.shape[0]):
        w_j = class_weight[j] if weighted else 1.0
        for r in range(count):
            d = (m[r] - columns[j, r]) + lse[r]
            total[r] += 0.0 if w_j == 0.0 else w_j * d


@kernel_step(**KERNEL_OPTIONS)
def _short_target_columns(targets, first, count, columns, target_columns, per_row, smoothing, spread, class_weight,
                          weighted, target_best, bad):
    """Per row of a walk of short rows (see _short_logit_columns, which filled ``columns`` and ``per_row``' max
    and log-sum-exp): _soft_target_row's sums (loss, entropy, KL, target total), bad-target count and target
    argmax, each sum from column 0 up."""
    inline_into_callers()
    n_cols = targets.shape[1]
    for r in range(count):
        for j in range(n_cols):
            target_columns[j, r] = as_float64(targets[first + r, j])
    m, lse = per_row[_M], per_row[_LSE]
    loss, entropy, kl, total, top = (per_row[_R_LOSS], per_row[_R_ENTROPY], per_row[_R_KL], per_row[_R_TOTAL],
                                     per_row[_R_TMAX])
    for r in range(count):
        loss[r] = 0.0
        entropy[r] = 0.0
        kl[r] = 0.0
        total[r] = 0.0
        bad[r] = 0
        top[r] = target_columns[0, r]
        target_best[r] = 0
    for j in range(n_cols):
        w_j = class_weight[j] if weighted else 1.0
        for r in range(count):
            t = target_columns[j, r]
            bad[r] += np.int64(not ((t >= 0.0) & (t < np.inf)))
            above = t > top[r]
            target_best[r] = j if above else target_best[r]
            top[r] = t if above else top[r]
            q = t * (1.0 - smoothing) + spread
            d = (m[r] - columns[j, r]) + lse[r]
            wq = q * w_j if weighted else q
            loss[r] += 0.0 if wq == 0.0 else wq * d
            positive = q > 0.0
            log_q = log_positive(q if positive else 1.0)
            entropy[r] += -(q * log_q) if positive else 0.0
            kl[r] += q * (log_q + d) if positive else 0.0
            total[r] += t


def soft_blocks(scores, targets, labels, class_weight, smoothing, ignore_label, sum_tolerance, float32_math,
                row_losses, row_values, nblocks, block_rows, fsums, icounts):
    """``_soft_blocks_tasks`` on the thread pool (see fastce._parallel); rows of at most SHORT_MAX_CLASSES classes
    take ``_soft_short_tasks`` (float64 math: the float32 exps' leaf took 0.5 s of a first call at C = 10 and
    short rows gain nothing from it)."""
    # The math as a type (True or None: see kernels._row_exp_sums), so that the kernel compiles one exp leaf.
    if scores.shape[1] <= SHORT_MAX_CLASSES:
        run_tasks(_soft_short_tasks, (scores, targets, labels, class_weight, smoothing, ignore_label, sum_tolerance,
                                      row_losses, row_values, nblocks, block_rows, fsums, icounts, new_claims()),
                  nblocks)
        return
    float32_math = K.math_token(float32_math)
    args = (scores, targets, labels, class_weight, smoothing, ignore_label, sum_tolerance, float32_math, row_losses,
            row_values, nblocks, block_rows, fsums, icounts, new_claims())
    run_tasks(_soft_blocks_tasks, args, nblocks)
