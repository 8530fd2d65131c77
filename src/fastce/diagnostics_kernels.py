"""Numba fold of per-row diagnostics into bin and class accumulators.

``kernels.score_blocks`` reads the scores (in parallel) and leaves, for one
slice of rows, each row's loss, p(true class), p(predicted class) and
predicted class.  ``fold_bins`` folds those per-row values, in parallel over
the kernel's blocks of rows (``_config.block_rows``, counted from row 0, as
the State's sums), into per-block float64 sums that it adds *exactly*
(``_exactsum``), like the State's; ``fold_classes`` scatters them
into the per-class sums and the confusion matrix, in parallel over class
ranges, each cell in row order.  Without weights every weight is 1: the
weights summed per class are row counts, tallied as integers and added
once a call (exact either way, so the same bits as weights of 1).  So the
loss split, calibration and histograms are the same bits from every door
(one ``diagnose``, any split into ``Evaluator.update`` calls, merges, the
command) and any thread count.

The per-class sums and confusion cells (O(C) and O(C^2): too many for exact
accumulators) are double-double pairs (sum, compensation), renormalised
after every addition: 106 bits, so a sum is exact, and again the same from
every door, while it stays below 2^105 times the finest ulp of its terms
(about 2^53 times its smallest term: always for counts of unweighted rows);
past that a door's last bit may differ.  Up to three classes a cell takes
one addition a kernel block (the float64 sum of the block's rows, in row
order, from every door), not one a row (see class_parts).
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
import threading

import numpy as np
from numba import njit

from fastce._config import KERNEL_OPTIONS, LEAF_OPTIONS, kernel, kernel_step
from fastce._exactsum import NUM_LIMBS, exact_add_at, normalize_at
from fastce._parallel import claim, new_claims, run_tasks, strides
from fastce._vecmath import bits_to_float64, float64_to_bits

# SPLIT entries
S_W_RIGHT, S_L_RIGHT, S_W_WRONG, S_L_WRONG, S_W_CONFWRONG, S_L_CONFWRONG, S_W_ALL, S_L_ALL = range(8)
SPLIT_SIZE = 8
# CLASS columns
K_SUPPORT, K_LOSS, K_PREDICTED, K_HITS = range(4)
CLASS_COLUMNS = 4
# counts
N_ROWS, N_RIGHT, N_WRONG, N_CONFWRONG, N_INF = range(5)
N_PER_CLASS = 5

# Loss histogram, on exact binary edges: bin 0 is [0, 2**LOSS_LOG2_MIN), then
# LOSS_PER_OCTAVE bins per power of two (edges 2**e * (1 + m / LOSS_PER_OCTAVE),
# so each bin is at most 12.5% wide) up to 2**LOSS_LOG2_MAX, then one bin for
# [2**LOSS_LOG2_MAX, inf].  The bin comes from the float's exponent and top
# mantissa bits: no log, no rounding at the edges.
LOSS_LOG2_MIN = -27  # 7.5e-9 nats
LOSS_LOG2_MAX = 10  # 1024 nats
LOSS_MANTISSA_BITS = 3
LOSS_PER_OCTAVE = 1 << LOSS_MANTISSA_BITS
LOSS_BINS = 2 + (LOSS_LOG2_MAX - LOSS_LOG2_MIN) * LOSS_PER_OCTAVE


def loss_bin_edges() -> np.ndarray:
    """The LOSS_BINS + 1 edges of the loss histogram (first 0, last inf)."""
    k = np.arange((LOSS_LOG2_MAX - LOSS_LOG2_MIN) * LOSS_PER_OCTAVE + 1)
    octave, step = np.divmod(k, LOSS_PER_OCTAVE)
    inner = np.ldexp(1.0 + step / LOSS_PER_OCTAVE, LOSS_LOG2_MIN + octave)
    return np.concatenate([[0.0], inner, [np.inf]])


# The per-row helpers of the diagnostics folds stay inlined by numba (called
# once per row in scalar loops, where a call would cost as much as the work).
@njit(inline="always", **KERNEL_OPTIONS)
def _add(acc, lo, index, x):
    """(acc, lo)[index] += x as a double-double: TwoSum, then renormalised so that |lo| <= ulp(acc) / 2.

    Renormalising keeps the pair a 106-bit number, so the sum stays exact
    (whatever the order of the additions) while its terms span < ~106 bits.
    """
    a = acc[index]
    t = a + x
    x_part = t - a
    e = (a - (t - x_part)) + (x - x_part) + lo[index]
    hi = t + e  # Fast2Sum (|t| >= |e|)
    lo[index] = e - (hi - t)
    acc[index] = hi


@njit(inline="always", **KERNEL_OPTIONS)
def confidence_bin(confidence, n_bins):
    """Bin k holds (k/B, (k+1)/B]; 0 goes to bin 0 (computed as ceil(c B) - 1)."""
    k = np.int64(math.ceil(confidence * n_bins)) - 1
    return min(max(k, 0), n_bins - 1)


@njit(inline="always", **KERNEL_OPTIONS)
def loss_bin(loss):
    if not loss >= 2.0**LOSS_LOG2_MIN:
        return 0
    if loss >= 2.0**LOSS_LOG2_MAX:
        return LOSS_BINS - 1
    bits = float64_to_bits(loss)
    octave = ((bits >> 52) & 0x7FF) - 1023 - LOSS_LOG2_MIN
    step = (bits >> (52 - LOSS_MANTISSA_BITS)) & (LOSS_PER_OCTAVE - 1)
    return 1 + octave * LOSS_PER_OCTAVE + step


N_SMALL_COUNTS = N_PER_CLASS  # counters of the parallel part (the per-class ones are serial)


@njit(inline="always", **KERNEL_OPTIONS)
def _row_values(labels, weights, stats, pred, r, weighted):
    """(counted, label, predicted, w, loss, weighted loss, p_true, p_top) of row r."""
    loss = stats[r, 0]
    w = weights[r] if weighted else 1.0
    counted = loss == loss and w != 0.0  # NaN: non-finite scores, skipped; weight 0: removed
    wl = 0.0 if (loss == np.inf or not counted) else w * loss
    return counted, labels[r], pred[r], w, loss, wl, stats[r, 1], stats[r, 2]


@njit(inline="always", **KERNEL_OPTIONS)
def _masked(x, mask):
    """x where ``mask`` has every bit set, +0.0 where it is 0: a select LLVM cannot make a branch of."""
    return bits_to_float64(float64_to_bits(x) & mask)


# Entries of the flat accumulator a row adds to in _fold_bins_tasks: 3 calibration, 2 p(true), 2 loss; of
# those, the sums (confidence, loss, loss), the others being weights (row counts without weights).
ROW_BIN_ENTRIES = 7
ROW_BIN_SUMS = 3


@kernel_step(**LEAF_OPTIONS)
def _flush(part, k, acc, nonfinite):
    """Add a block's float64 sum part[k] exactly into acc[k] and clear it; count it instead if not finite."""
    x = part[k]
    if x != 0.0:
        if math.isfinite(x):
            exact_add_at(acc, k, x)
        else:
            nonfinite += 1
        part[k] = 0.0
    return nonfinite


@kernel(**KERNEL_OPTIONS)
def _fold_bins_tasks(labels, weights, stats, pred, confident_below, layout, block_rows, n_chunks, partials, touched,
                     tallies, exact, counts, nonfinite, losses, claims, first_task, task_step):
    """Per block of ``block_rows`` rows, in parallel: the loss split, calibration and histograms.

    The slice starts at a block boundary (the drivers cut reads there), so
    chunk c is the kernel's block c of the slice: the same rows whatever the
    door.  A block's sums are plain float64 sums in ``partials[first_task]``
    (zero between blocks), each then added exactly (``_exactsum``) into this
    stride's accumulators ``exact[first_task]`` and cleared: every entry, or,
    when a block has fewer than layout[6] / ROW_BIN_ENTRIES rows, only those
    its rows touched (listed in ``touched[first_task]``).
    Exact sums do not depend on the order of their terms, so the strides'
    accumulators add up to the same bits for any thread count, and for any
    split of the blocks between strides: each stride claims its blocks (see
    fastce._parallel.claim; ``first_task`` names its buffers).  Before, each
    block wrote all layout[6] entries (689: 32-row blocks at C = 1000 cleared
    and scanned ~21 entries a row) and one thread added them exactly after.
    Without weights every weight is 1, so four of a row's seven entries
    (a calibration bin's weight and hits, the histograms' weights) are row
    counts: tallied as integers in ``tallies[first_task]`` and added
    exactly once a call, the same integers the blocks' float64 sums of
    1.0 held (exact below 2**53), so the same bits; a block flushes only
    the bins' sums (one thread, fold_bins alone: 11.3-11.5 -> 10.1-10.8 ns a row at
    C = 100, 37.1-37.8 -> 27.2-28.2 ns at C = 1000, where 32-row blocks flushed
    up to seven listed entries a row).
    Counters go to ``counts[first_task]`` (stored once), sums that were not finite (a
    weight so large that a block's sum overflowed) are counted in
    ``nonfinite[first_task]``, not added.  Each row's loss is copied to
    ``losses``: the class fold and the worst rows read that (8 bytes a row)
    instead of a column of ``stats`` (its rows are 40 bytes).
    """
    n_bins, hist_bins = layout[1], layout[2]
    cal, ptrue, lossh = layout[3], layout[4], layout[5]
    weighted = weights.shape[0] != 0
    n_rows = labels.shape[0]
    part = partials[first_task]
    listed = touched[first_task]
    tally = tallies[first_task]
    acc = exact[first_task]
    part[:] = 0.0  # this stride's scratch: reused between calls (see scratch)
    tally[:] = 0
    acc[:] = 0
    # List the entries a block touches when that is shorter than all of them (short blocks of long rows).
    # Without weights only the bins' sums are flushed a block (their counts are in tally): fewer of both.
    listing = ((ROW_BIN_ENTRIES if weighted else ROW_BIN_SUMS) * block_rows
               < (part.shape[0] if weighted else SPLIT_SIZE + n_bins + (part.shape[0] - ptrue) // 2))
    bad = np.int64(0)  # not a literal 0: that types a second compile of _flush
    all_rows = all_right = all_wrong = all_confident = all_inf = 0
    while True:
        c = claim(claims)  # see fastce._parallel.claim
        if c >= n_chunks:
            break
        # The counters and the loss split in locals, stored once a block: in memory, every row's
        # read-modify-write of them waited on the last one, and the counters of neighbouring blocks (one
        # per thread) share cache lines.  The same additions in the same order: the same sums.
        # The row counts in float64 too (exact: a block has at most 512 rows): as integers, beside the
        # pointers, LLVM kept them on the stack, a store and a load each a row.
        rows = right_rows = confident_rows = inf_rows = 0.0
        w_all = l_all = w_right = l_right = w_wrong = l_wrong = w_confident = l_confident = 0.0
        n_listed = 0
        for row in range(c * block_rows, min(n_rows, (c + 1) * block_rows)):
            r = np.uint64(row)  # unsigned: no wraparound test on the five arrays read (see below)
            losses[r] = stats[r, 0]
            counted, label, predicted, w, loss, wl, p_true, p_top = _row_values(labels, weights, stats, pred, r, weighted)
            if not counted:
                continue
            # Branch-free: right and wrong rows interleave unpredictably (a mispredicted branch a row), and
            # LLVM made a branch of the selects that "w if right else 0.0" wrote; masks on the bits it cannot.
            # A masked term is the term or +0.0, as the selects gave: adding +0.0 leaves a sum's bits as they
            # are (these start at +0.0, and so are never -0.0).
            right = predicted == label
            confident = (predicted != label) & (p_true < confident_below)
            right_mask = -np.int64(right)  # all bits set for a right row
            wrong_mask = ~right_mask
            confident_mask = -np.int64(confident)
            rows += 1.0
            inf_rows += _masked(1.0, -np.int64(loss == np.inf))
            w_all += w
            l_all += wl
            right_rows += _masked(1.0, right_mask)
            w_right += _masked(w, right_mask)
            l_right += _masked(wl, right_mask)
            w_wrong += _masked(w, wrong_mask)
            l_wrong += _masked(wl, wrong_mask)
            confident_rows += _masked(1.0, confident_mask)
            w_confident += _masked(w, confident_mask)
            l_confident += _masked(wl, confident_mask)
            # Unsigned indices: numba cannot tell these are not negative, and a signed one costs a wraparound test.
            k = cal + 3 * confidence_bin(p_top, n_bins)
            k2 = ptrue + 2 * confidence_bin(p_true, hist_bins)
            k3 = lossh + 2 * loss_bin(loss)
            part[np.uint64(k + 1)] += w * p_top
            part[np.uint64(k2 + 1)] += wl
            part[np.uint64(k3 + 1)] += wl
            if weighted:
                part[np.uint64(k)] += w
                part[np.uint64(k + 2)] += _masked(w, right_mask)
                part[np.uint64(k2)] += w
                part[np.uint64(k3)] += w
            else:
                # Every weight 1: these four entries are row counts, kept as integers and added once a call
                # (see the docstring).
                tally[np.uint64(k)] += 1
                tally[np.uint64(k + 2)] += right
                tally[np.uint64(k2)] += 1
                tally[np.uint64(k3)] += 1
            if listing:
                listed[n_listed] = k + 1
                listed[n_listed + 1] = k2 + 1
                listed[n_listed + 2] = k3 + 1
                n_listed += ROW_BIN_SUMS
                if weighted:
                    listed[n_listed] = k
                    listed[n_listed + 1] = k + 2
                    listed[n_listed + 2] = k2
                    listed[n_listed + 3] = k3
                    n_listed += 4
        part[S_W_ALL], part[S_L_ALL] = w_all, l_all
        part[S_W_RIGHT], part[S_L_RIGHT] = w_right, l_right
        part[S_W_WRONG], part[S_L_WRONG] = w_wrong, l_wrong
        part[S_W_CONFWRONG], part[S_L_CONFWRONG] = w_confident, l_confident
        if listing:
            for k in range(SPLIT_SIZE):
                bad = _flush(part, k, acc, bad)
            # An entry listed twice is 0 the second time (cleared by the first flush): added once.
            for t in range(n_listed):
                bad = _flush(part, listed[t], acc, bad)
        elif weighted:
            for k in range(part.shape[0]):
                bad = _flush(part, k, acc, bad)
        else:  # the split, then the bins' sums (their counts are in tally)
            for k in range(SPLIT_SIZE):
                bad = _flush(part, k, acc, bad)
            for k in range(cal + 1, ptrue, 3):
                bad = _flush(part, k, acc, bad)
            for k in range(ptrue + 1, part.shape[0], 2):
                bad = _flush(part, k, acc, bad)
        all_rows += np.int64(rows)
        all_right += np.int64(right_rows)
        all_wrong += np.int64(rows - right_rows)
        all_confident += np.int64(confident_rows)
        all_inf += np.int64(inf_rows)
    if not weighted:
        for k in range(tally.shape[0]):
            if tally[k]:
                exact_add_at(acc, k, float(tally[k]))
    # Limbs back in [0, 2**32): the strides' accumulators can then be added as integers (see add_exact).
    for k in range(acc.shape[0]):
        normalize_at(acc, k)
    counts[first_task, N_ROWS], counts[first_task, N_RIGHT], counts[first_task, N_WRONG] = all_rows, all_right, all_wrong
    counts[first_task, N_CONFWRONG], counts[first_task, N_INF] = all_confident, all_inf
    nonfinite[first_task] = bad


# Per Python thread: the folds' scratch, kept from call to call (see scratch).
_SCRATCH = threading.local()


def scratch(name: str, shape: tuple, dtype=np.float64, *, zeroed: bool = False) -> np.ndarray:
    """The calling thread's scratch array ``name`` of ``shape``: a view of the first rows of one kept from
    call to call, made (zeroed, if asked) when none of that dtype, trailing shape and length is there yet.

    Fresh buffers each call (~0.8 MB of bin sums at two threads, 17 calls a
    diagnose of 1 GiB) cost page faults from both threads at once, and
    np.zeros' pages, read before written, a copy-on-write fault and a TLB
    flush on every CPU each: over 7% of diagnose's samples at C = 1000
    (perf).  The kernels zero what they use of a plain one, and leave a
    zeroed one zeroed, so nothing depends on what an earlier call left.
    """
    cached = getattr(_SCRATCH, name, None)
    if (cached is None or cached.dtype != dtype or cached.shape[1:] != tuple(shape[1:])
            or cached.shape[0] < shape[0]):
        cached = np.zeros(shape, dtype=dtype) if zeroed else np.empty(shape, dtype=dtype)
        setattr(_SCRATCH, name, cached)
    return cached[: shape[0]]


def fold_bins(labels, weights, stats, pred, confident_below, layout, block_rows, n_chunks, exact, counts, losses):
    """Fold the slice's rows into the exact accumulators ``exact`` and the counters ``counts[:N_SMALL_COUNTS]``,
    and copy their losses (``stats[:, 0]``) to ``losses``.

    Runs ``_fold_bins_tasks`` on the thread pool (see fastce._parallel), one
    set of accumulators per stride, then adds those into ``exact`` (exact, so
    the same bits for any thread count).  Returns the number of block sums
    that were not finite (not added: the caller refuses them).
    """
    n_strides = strides(n_chunks)  # run_tasks' strides: first_task < n_strides
    size = exact.shape[0]
    partials = scratch("bin_partials", (n_strides, size))
    touched = scratch("bin_touched", (n_strides, ROW_BIN_ENTRIES * block_rows), np.int64)
    tallies = scratch("bin_tallies", (n_strides, size), np.int64)
    parts = scratch("bin_parts", (n_strides, size, NUM_LIMBS), np.int64)
    part_counts = np.empty((n_strides, N_SMALL_COUNTS), dtype=np.int64)
    nonfinite = np.empty(n_strides, dtype=np.int64)
    run_tasks(_fold_bins_tasks,
              (labels, weights, stats, pred, confident_below, layout, block_rows, n_chunks, partials, touched, tallies,
               parts,
               part_counts, nonfinite, losses, new_claims()),
              n_chunks)
    add_exact(exact, parts)
    counts[:N_SMALL_COUNTS] += part_counts.sum(axis=0)
    return int(nonfinite.sum())


@kernel(**KERNEL_OPTIONS)
def add_exact(exact, parts):
    """Add the normalised accumulators ``parts[s]`` into ``exact`` (integer adds: exact) and normalise."""
    for k in range(exact.shape[0]):
        for s in range(parts.shape[0]):
            for limb in range(exact.shape[1]):
                exact[k, limb] += parts[s, k, limb]
        normalize_at(exact, k)


# The per-class sums and the confusion matrix are scattered by class ranges:
# task p of P owns classes [p*C/P, (p+1)*C/P) and scans every row, so each cell
# still receives its additions in row order, from one task (no race, and the
# same sums for any number of threads).  P is CLASS_PARTS, or C up to
# ONE_CLASS_PARTS_MAX classes: one class a task (see class_parts).
CLASS_PARTS = 2
ONE_CLASS_PARTS_MAX = 3
# Up to this many classes the dense confusion matrix (2 x 8 bytes a cell: 1 MB at 256) stays in cache.
DIRECT_CONFUSION_CLASSES = 256


def class_parts(n_classes: int) -> int:
    """Tasks of the class folds: one a class up to ONE_CLASS_PARTS_MAX classes, else CLASS_PARTS.

    A task that owns one class sums its rows in registers, one partial a
    kernel block (see _sum_classes_tasks); added row by row into the
    class's double-double, every row of a binary problem fell in one of two
    cells, a chain of dependent adds through memory that made diagnose up to
    24x evaluate at C = 2.
    """
    return n_classes if n_classes <= ONE_CLASS_PARTS_MAX else CLASS_PARTS


# The two class folds, weighted and not, are kernels of their own (chosen by fold_classes), with no helper
# functions of their own: a first call compiles only the one it runs, and each numba function costs its
# own compile (the first diagnose's compile grew by 0.4 s with helpers for each step).
@kernel(**KERNEL_OPTIONS)
def _sum_classes_tasks(labels, weights, losses, pred, layout, acc, lo, counts, wrong, n_parts, block_rows,
                       first_task, task_step):
    """Weighted rows: the per-class sums and the dense confusion matrix (see CLASS_PARTS).

    Every sum is a double-double (see ``_add`` and the module docstring).
    Each part first lists, in row order, the rows whose true class is its
    own and those whose predicted class is (branch-free loops), then adds
    each list's rows: testing both classes of every row against the part's
    range mispredicted often (one thread, both parts, in-process A/B:
    x0.87 at C = 100, 18.4 ns a row before; x0.91 at C = 1000).  Each cell
    still receives its additions in row order: the same sums.

    A part of one class (C <= ONE_CLASS_PARTS_MAX, see class_parts) sums
    each kernel block's rows (``block_rows``, counted from row 0 as
    fold_bins' blocks: the same blocks from every door) in float64
    registers, in row order, and adds each cell's partial once a block
    that touched it: weight, loss and hits of its class, and the confusion
    cells of its class with each of the (at most two) others.

    ``wrong`` is None unless the dense matrix is too big to take wrong rows
    as they come (see fold_classes): then each part lists them in
    ``wrong[part]`` and adds them sorted by cell (``_add_confusions``).
    numba prunes the branches on ``wrong is not None`` before typing, so the
    kernel compiled for None has no sort: it took 0.7 s of every first
    diagnose's compile, at any C.
    """
    n_classes, cls, conf = layout[0], layout[6], layout[7]
    n_rows = labels.shape[0]
    direct = conf >= 0 and wrong is None  # a dense matrix that takes wrong rows as they come (see fold_classes)
    by_label = np.empty(n_rows, dtype=np.int64)
    by_prediction = np.empty(n_rows, dtype=np.int64)
    for part in range(first_task, n_parts, task_step):
        first = part * n_classes // n_parts
        stop = (part + 1) * n_classes // n_parts
        n_label = n_prediction = 0
        for r in range(n_rows):
            by_label[n_label] = r
            n_label += (labels[r] >= first) & (labels[r] < stop)
            by_prediction[n_prediction] = r
            n_prediction += (pred[r] >= first) & (pred[r] < stop)
        if stop - first == 1:
            row = cls + CLASS_COLUMNS * first
            # The (at most two) other classes, and this class's confusion cells with them.
            other_a = 1 if first == 0 else 0
            other_b = 3 - first - other_a
            cell_a = np.uint64(conf + n_classes * first + other_a)
            cell_b = np.uint64(conf + n_classes * first + other_b)
            # Block by block: each cell's partial over the block's counted rows, in row order, added once.
            i = 0
            while i < n_prediction:
                block_end = (by_prediction[i] // block_rows + 1) * block_rows
                predicted_sum = 0.0
                any_row = False
                while i < n_prediction and by_prediction[i] < block_end:
                    r = np.uint64(by_prediction[i])
                    i += 1
                    w = weights[r]
                    if losses[r] == losses[r] and w != 0.0:  # counted (see _row_values)
                        predicted_sum += w
                        any_row = True
                if any_row:
                    _add(acc, lo, np.uint64(row + K_PREDICTED), predicted_sum)
            n_counted = 0
            i = 0
            while i < n_label:
                block_end = (by_label[i] // block_rows + 1) * block_rows
                support = loss_sum = hits = confused_a = confused_b = 0.0
                any_row = any_hit = any_a = any_b = False
                while i < n_label and by_label[i] < block_end:
                    r = np.uint64(by_label[i])
                    i += 1
                    predicted, w, loss = pred[r], weights[r], losses[r]
                    if not (loss == loss and w != 0.0):  # not counted (see _row_values)
                        continue
                    any_row = True
                    n_counted += 1
                    support += w
                    loss_sum += 0.0 if loss == np.inf else w * loss
                    if predicted == first:
                        hits += w
                        any_hit = True
                    elif direct and predicted == other_a:
                        confused_a += w
                        any_a = True
                    elif direct:
                        confused_b += w
                        any_b = True
                if any_row:
                    _add(acc, lo, np.uint64(row + K_SUPPORT), support)
                    _add(acc, lo, np.uint64(row + K_LOSS), loss_sum)
                if any_hit:
                    _add(acc, lo, np.uint64(row + K_HITS), hits)
                if any_a:
                    _add(acc, lo, cell_a, confused_a)
                if any_b:
                    _add(acc, lo, cell_b, confused_b)
            counts[np.uint64(N_PER_CLASS + first)] += n_counted
            continue
        # Unsigned indices (see _count_classes_tasks).
        for i in range(n_prediction):
            r = np.uint64(by_prediction[i])
            w = weights[r]
            if losses[r] == losses[r] and w != 0.0:  # counted (see _row_values)
                _add(acc, lo, np.uint64(cls + CLASS_COLUMNS * pred[r] + K_PREDICTED), w)
        listed = 0
        for i in range(n_label):
            r = np.uint64(by_label[i])
            label, predicted, w, loss = labels[r], pred[r], weights[r], losses[r]
            if not (loss == loss and w != 0.0):  # not counted (see _row_values)
                continue
            wl = 0.0 if loss == np.inf else w * loss
            row = cls + CLASS_COLUMNS * label
            counts[np.uint64(N_PER_CLASS + label)] += 1
            _add(acc, lo, np.uint64(row + K_SUPPORT), w)
            _add(acc, lo, np.uint64(row + K_LOSS), wl)
            if predicted == label:
                _add(acc, lo, np.uint64(row + K_HITS), w)
            elif direct:
                _add(acc, lo, np.uint64(conf + n_classes * label + predicted), w)
            elif wrong is not None:
                wrong[part, listed] = r
                listed += 1
        if wrong is not None:
            _add_confusions(labels, pred, weights, wrong[part, :listed], n_classes, conf, acc, lo)


# tally columns (_count_classes_tasks): rows per true class, right rows per class
T_SUPPORT, T_HITS = range(2)


@kernel(**KERNEL_OPTIONS)
def _count_classes_tasks(labels, losses, pred, layout, acc, lo, counts, tally, predictions, cells, wrong, n_parts,
                         block_rows, first_task, task_step):
    """Unit weights: ``_sum_classes_tasks``' sums, the weights counted as integers.

    Every weight is 1, so a class's support, predictions and hits are row
    counts: part p counts support and hits in ``tally`` rows ``first + p`` ..
    ``stop - 1 + p``, and every row's prediction in ``predictions[p]`` (all
    classes, read for its own: no branch, and no counter that the rows of
    other parts' classes all add to, one read-modify-write waiting on the
    last, as a shared row for them had: fold_classes alone, one thread,
    6.2-6.4 -> 5.3-5.9 ns a row at C = 100, 9.7-10.1 -> 8.6-9.0 at
    C = 1000), and adds each count once, when the slice is done.  Counts
    below 2**53 are exact, so that adds the same as one 1.0 a row: the same
    bits.  Only the loss and the confusion cells are added row by row, in
    row order (or, when ``wrong`` is not None, sorted by cell: see
    ``_sum_classes_tasks``).  Each part leaves its tally rows zeroed.  With
    the unsigned indices below, x0.73-0.75 at C = 100 and x0.95 at
    C = 1000 (two threads, in-process A/B against adding 1.0 a row).
    The dense confusion matrix's off-diagonal cells are counts too: part p
    counts its labels' cells in ``cells[p * n_cells:]`` (label - first, then
    predicted; left zeroed) and adds each once.  A double-double add a wrong
    row was over a quarter of this fold at C = 100 with random scores.
    A part of one class (see class_parts) keeps its counts in registers and
    adds its loss one partial a kernel block, as ``_sum_classes_tasks``.
    """
    n_classes, cls, conf = layout[0], layout[6], layout[7]
    n_rows = labels.shape[0]
    n_cells = cells.shape[0] // n_parts
    direct = n_cells != 0  # fold_classes gives the cells only to a dense matrix taking wrong rows as they come
    by_label = np.empty(n_rows, dtype=np.int64)
    for part in range(first_task, n_parts, task_step):
        first = part * n_classes // n_parts
        stop = (part + 1) * n_classes // n_parts
        own_cells = part * n_cells - first * n_classes  # cells[own_cells + label * C + predicted]
        seen = predictions[part]
        seen[:] = 0
        n_label = 0
        listed = 0
        if stop - first == 1:
            n_predicted = 0
            for r in range(n_rows):
                counted = losses[r] == losses[r]
                n_predicted += counted & (pred[r] == first)
                by_label[np.uint64(n_label)] = r
                n_label += counted & (labels[r] == first)
            other_a = 1 if first == 0 else 0  # the first other class (see _sum_classes_tasks)
            n_hits = n_wrong_a = 0
            i = 0
            while i < n_label:  # block by block, as _sum_classes_tasks
                block_end = (by_label[i] // block_rows + 1) * block_rows
                loss_sum = 0.0
                while i < n_label and by_label[i] < block_end:
                    r = np.uint64(by_label[i])
                    i += 1
                    loss = losses[r]
                    loss_sum += 0.0 if loss == np.inf else loss
                    predicted = pred[r]
                    n_hits += predicted == first
                    n_wrong_a += predicted == other_a
                _add(acc, lo, np.uint64(cls + CLASS_COLUMNS * first + K_LOSS), loss_sum)
            if direct:  # the wrong rows' cells: the other classes, at most two
                cells[np.uint64(own_cells + n_classes * first + other_a)] += n_wrong_a
                if n_classes == 3:
                    other_b = 3 - first - other_a
                    cells[np.uint64(own_cells + n_classes * first + other_b)] += n_label - n_hits - n_wrong_a
            t = np.uint64(first + part)
            tally[t, T_SUPPORT] = n_label
            seen[first] = n_predicted
            tally[t, T_HITS] = n_hits
        else:
            # Unsigned indices where numba cannot tell they are not negative: a signed one costs a wraparound test.
            for r in range(n_rows):
                counted = losses[r] == losses[r]  # NaN: not counted (non-finite scores, ignored labels)
                predicted = pred[r]
                seen[np.uint64(predicted if counted else 0)] += counted
                by_label[np.uint64(n_label)] = r
                n_label += counted & (labels[r] >= first) & (labels[r] < stop)
            for i in range(n_label):
                r = np.uint64(by_label[i])
                label, predicted, loss = labels[r], pred[r], losses[r]
                _add(acc, lo, np.uint64(cls + CLASS_COLUMNS * label + K_LOSS), 0.0 if loss == np.inf else loss)
                right = predicted == label
                t = np.uint64(label + part)
                tally[t, T_SUPPORT] += 1
                tally[t, T_HITS] += right
                # Branch-free (right and wrong rows interleave unpredictably): a right row adds 0 to its
                # diagonal cell here, which the flush below skips, and is listed but not kept.
                if direct:
                    cells[np.uint64(own_cells + n_classes * label + predicted)] += not right
                elif wrong is not None:
                    wrong[part, listed] = r
                    listed += not right
        if direct:
            for cell in range(first * n_classes, stop * n_classes):
                at = np.uint64(own_cells + cell)
                if cells[at]:
                    _add(acc, lo, np.uint64(conf + cell), float(cells[at]))
                    cells[at] = 0
        for c in range(first, stop):
            row = cls + CLASS_COLUMNS * c
            t = np.uint64(c + part)
            support, predicted_rows, hits = tally[t, T_SUPPORT], seen[c], tally[t, T_HITS]
            if support:
                counts[N_PER_CLASS + c] += support
                _add(acc, lo, row + K_SUPPORT, float(support))
            if predicted_rows:
                _add(acc, lo, row + K_PREDICTED, float(predicted_rows))
            if hits:
                _add(acc, lo, row + K_HITS, float(hits))
            tally[t, T_SUPPORT] = tally[t, T_HITS] = 0
        if wrong is not None:
            _add_confusions(labels, pred, np.empty(0), wrong[part, :listed], n_classes, conf, acc, lo)


@kernel_step(**KERNEL_OPTIONS)
def _add_confusions(labels, pred, weights, rows, n_classes, conf, acc, lo):
    """The dense confusion matrix's off-diagonal cells: the weights of ``rows`` (wrong, counted, labels of this
    task's classes, in row order), added in the order of their cells.

    The diagonal cell's additions are K_HITS's, the same ones in the same
    order (DiagnosticsState.section reads it from there).  Off it, a stable
    sort by cell keeps each cell's additions in row order (the same sums as
    adding row by row) while the matrix (16 MB at C = 1000, out of cache
    after each slice's read) is walked in address order: 20% less time in
    fold_classes at C = 1000 (cProfile of diagnose, 268k rows).
    """
    weighted = weights.shape[0] != 0
    codes = np.empty(rows.shape[0], dtype=np.int64)
    for i in range(rows.shape[0]):
        codes[i] = n_classes * labels[rows[i]] + pred[rows[i]]
    order = stable_order(codes, n_classes * n_classes)
    for i in range(order.shape[0]):
        r = rows[order[i]]
        _add(acc, lo, conf + codes[order[i]], weights[r] if weighted else 1.0)


_RADIX_BITS = 11  # 2048 buckets: the counts stay in L1


@kernel(**KERNEL_OPTIONS)
def stable_order(codes, bound):
    """The stable sorting permutation of ``codes`` (integers in [0, bound)): codes[order] ascends, equal codes
    in their original order -- np.argsort(codes, kind="stable")'s result.

    An LSD radix sort, _RADIX_BITS bits a pass (two passes for C = 1000's
    million cells).  numba's mergesort argsort cost 0.9 s of every first
    diagnose's compile, and 10x the time (in cache, codes below 10^6: 3.6
    against 51 ns a code for 10^4 codes, 9.4 against 98 for 2 x 10^5).
    """
    n = codes.shape[0]
    order = np.arange(n)
    spare = np.empty(n, dtype=np.int64)
    counts = np.empty(1 << _RADIX_BITS, dtype=np.int64)
    mask = (1 << _RADIX_BITS) - 1
    shift = 0
    while (bound - 1) >> shift > 0 or shift == 0:
        counts[:] = 0
        for i in range(n):
            counts[(codes[i] >> shift) & mask] += 1
        total = 0
        for d in range(counts.shape[0]):
            total, counts[d] = total + counts[d], total
        for i in range(n):
            j = order[i]
            digit = (codes[j] >> shift) & mask
            spare[counts[digit]] = j
            counts[digit] += 1
        order, spare = spare, order
        shift += _RADIX_BITS
    return order


@kernel_step(**LEAF_OPTIONS)
def _heap_push(heap_loss, heap_row, size, x, r):
    """Offer (x, r) to the heap of the k = heap_loss.shape[0] largest values; its new size.

    The root is the weakest kept: the smallest value, and of equal values
    the last index.  Offered in index order, an entry enters a full heap only
    with a value above the root's: a tie loses, as it comes after the entries kept.
    """
    if size < heap_loss.shape[0]:
        at = size  # sift the new entry up from the last leaf
        size += 1
        while at > 0:
            parent = (at - 1) // 2
            if not _weaker(x, r, heap_loss[parent], heap_row[parent]):
                break
            heap_loss[at], heap_row[at] = heap_loss[parent], heap_row[parent]
            at = parent
        heap_loss[at], heap_row[at] = x, r
    elif x > heap_loss[0]:
        at = 0  # the new entry replaces the root and sifts down
        while True:
            child = 2 * at + 1
            if child >= size:
                break
            if child + 1 < size and _weaker(heap_loss[child + 1], heap_row[child + 1], heap_loss[child],
                                            heap_row[child]):
                child += 1
            if not _weaker(heap_loss[child], heap_row[child], x, r):
                break
            heap_loss[at], heap_row[at] = heap_loss[child], heap_row[child]
            at = child
        heap_loss[at], heap_row[at] = x, r
    return size


@kernel(**KERNEL_OPTIONS)
def worst_rows(loss, weights, k, floor):
    """The rows (in heap order: the caller sorts them) of the k largest losses above ``floor``, ties to the lower
    row, among the rows counted (loss not NaN, weight not 0; ``weights`` empty for unit weights): the worst rows
    of a slice.

    One pass with a heap of k (see _heap_push).  It replaced numpy's mask,
    flatnonzero, gather and partition over every row of the slice (4.3 ms a
    call at 671k rows, diagnose at C = 100).
    """
    weighted = weights.shape[0] != 0
    heap_loss = np.empty(k)
    heap_row = np.empty(k, dtype=np.int64)
    size = np.int64(0)  # not a literal 0: that types a second compile of _heap_push
    for r in range(loss.shape[0]):
        x = loss[r]
        if not x > floor or (weighted and weights[r] == 0.0):  # NaN fails the comparison
            continue
        size = _heap_push(heap_loss, heap_row, size, x, r)
    # Not sorted here: numba's np.sort compiled its quicksort for 1.1 s of every first diagnose
    # (benchmarks/cold_start.py --doors: 3.95 s with it), and the insertion sort that replaced it was quadratic in
    # the k kept (worst_k = 2**20 over 262k rows: 11 s); numpy's sort of the result costs nothing to compile.
    return heap_row[:size].copy()


@kernel(**KERNEL_OPTIONS)
def heaviest_cells(matrix, k):
    """(codes i * C + j, weights) of the k heaviest off-diagonal cells of the C x C ``matrix`` with a weight
    above 0, heaviest first, ties to the lower code: the report's top confusions.

    One pass with a heap of k (see _heap_push), in place of numpy's mask,
    flatnonzero, partition and lexsort over the C^2 cells (6-7 ms a report
    at C = 1000).
    """
    n = matrix.shape[0]
    heap_weight = np.empty(k)
    heap_code = np.empty(k, dtype=np.int64)
    size = np.int64(0)  # not a literal 0: that types a second compile of _heap_push
    # Only a cell above this can enter: 0 until the heap is full, then its root's weight (a later cell
    # of equal weight loses the tie).  Most cells fail this one compare.
    bar = 0.0
    for i in range(n):
        for j in range(n):
            x = matrix[i, j]
            if x > bar and i != j:  # NaN fails the comparison
                size = _heap_push(heap_weight, heap_code, size, x, i * n + j)
                if size == k:
                    bar = heap_weight[0]
    # Heaviest first, equal weights in code order: an insertion sort of the k kept (each moves ahead of the
    # weaker ones before it).
    codes = heap_code[:size].copy()
    weights = heap_weight[:size].copy()
    for a in range(1, size):
        b = a
        while b > 0 and _weaker(weights[b - 1], codes[b - 1], weights[b], codes[b]):
            weights[b - 1], weights[b] = weights[b], weights[b - 1]
            codes[b - 1], codes[b] = codes[b], codes[b - 1]
            b -= 1
    return codes, weights


@njit(inline="always", **KERNEL_OPTIONS)
def _weaker(loss_a, row_a, loss_b, row_b):
    """Row a ranks below row b among the worst rows: a smaller loss, or the same loss and a later row."""
    return loss_a < loss_b or (loss_a == loss_b and row_a > row_b)


def fold_classes(labels, weights, losses, pred, layout, acc, lo, counts, block_rows):
    """The per-class sums and dense confusion matrix, on the thread pool (see fastce._parallel): row by row
    with weights, counted without; one partial a kernel block (``block_rows``, rows numbered from a block
    boundary) in a part of one class (see class_parts)."""
    # A dense matrix that stays in cache takes its wrong rows as they come (row order: the same sums as sorted
    # by cell, see _add_confusions, whose sort cost more than the adds at C = 100); a bigger one gets each
    # part's wrong rows listed in ``wrong`` and sorted by cell.
    n_classes = int(layout[0])
    n_parts = class_parts(n_classes)
    sorted_cells = layout[7] >= 0 and n_classes > DIRECT_CONFUSION_CLASSES
    wrong = np.empty((n_parts, labels.shape[0]), dtype=np.int64) if sorted_cells else None
    if weights.shape[0]:
        run_tasks(_sum_classes_tasks, (labels, weights, losses, pred, layout, acc, lo, counts, wrong, n_parts,
                                       block_rows), n_parts)
    else:
        tally = scratch("class_tally", (n_classes + n_parts, 2), np.int64, zeroed=True)
        predictions = scratch("class_predictions", (n_parts, n_classes), np.int64)  # zeroed by the kernel
        # Each part's confusion cells (its labels' rows of the matrix): see _count_classes_tasks.
        direct = layout[7] >= 0 and not sorted_cells
        n_cells = (n_classes // n_parts + 1) * n_classes if direct else 0
        cells = scratch("class_cells", (n_parts * n_cells,), np.int64, zeroed=True)
        run_tasks(_count_classes_tasks, (labels, losses, pred, layout, acc, lo, counts, tally, predictions, cells,
                                         wrong, n_parts, block_rows), n_parts)


@kernel(**KERNEL_OPTIONS)
def pair_sums(codes, hi, lo):
    """Double-double sums (see ``_add``) of the (hi, lo) weights of each run of equal, sorted ``codes``.

    Returns (unique codes, hi, lo): the sparse confusion table's sums, exact
    (so independent of how its rows were split and merged) in ``_add``'s range.
    """
    n = codes.shape[0]
    out_codes = np.empty(n, dtype=np.int64)
    out_hi = np.zeros(n)
    out_lo = np.zeros(n)
    m = -1
    for i in range(n):
        if m < 0 or codes[i] != out_codes[m]:
            m += 1
            out_codes[m] = codes[i]
        _add(out_hi, out_lo, m, hi[i])
        _add(out_hi, out_lo, m, lo[i])
    return out_codes[: m + 1], out_hi[: m + 1], out_lo[: m + 1]
