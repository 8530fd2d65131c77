"""Numba kernels: one read of each row of scores, partial sums per block.

Layering: the kernels know nothing of validation or policies.  They assume
labels were range-checked at the door (except the 1-D binary logit kernel,
which reports labels other than 0 and 1 itself: kernels_binary,
readers.BinaryReader.validate_once), and they *report* what they see
(non-finite rows, probabilities outside [0, 1], rows not summing to one) in
per-block counters; the API layer decides whether that is an error, a warning
or a skipped row.

Each parallel kernel call handles the ``nblocks`` consecutive blocks of
``block_rows`` rows of the slice it is given.  Block ``b`` writes its sums to
``fsums[b]`` and its counters to ``icounts[b]``; nothing else is shared
between threads, and the caller folds the blocks into a ``State`` in block
order (exactly, see ``_exactsum``), so the result never depends on how many
threads ran.

Per-block outputs (column indices below):

fsums:   weight sum, weighted loss sum, min score, max score, weighted Brier
         sum (the full multiclass sum of squares), then one weighted
         "true class ranked < k" sum per requested k.
icounts: rows counted, non-finite rows, rows with infinite loss, ignored rows,
         rows with a value < 0, rows with a value > 1, rows not summing to 1,
         logits rows that look like probabilities (every entry in [0, 1],
         summing to 1 within ``sum_tolerance``), those of them whose max is
         exactly 1 (one-hot: no evidence either way), blocks whose weight, Brier
         or top-k sum overflowed (counted by fold_blocks, not the kernels),
         then the first row (index within the slice, -1 if none; fold_blocks
         adds the slice's offset) of each kind but ignored and
         probability-like rows.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from fastce import _column_lanes as column_lanes
from fastce import _lanes as lanes
from fastce import _parallel
from fastce import _row_lanes as row_lanes
from fastce._config import (INLINE_OVERLOAD_OPTIONS, KERNEL_OPTIONS, LEAF_OPTIONS, MAX_BLOCK_ROWS, kernel,
                            kernel_step)
from fastce._exactsum import exact_add_at, normalize_at
from fastce._parallel import claim, new_claims, run_tasks
from fastce._vecmath import (
    EXP_BIAS_F32,
    HAS_AVX512,
    STAGED_FORMS,
    add_reassoc,
    as_float64,
    as_native,
    compile_apart,
    entries_per_line,
    exp_difference_f32,
    exp_nonpositive,
    from_ordered_bits,
    inline_into_callers,
    log_positive,
    maxnum,
    minnum,
    order_key,
    ordered_bits,
    prefer_wide_vectors,
    prefetch,
    reciprocal,
)

# fsums columns
F_WEIGHT, F_LOSS, F_MIN, F_MAX, F_BRIER, F_TOPK = 0, 1, 2, 3, 4, 5
# Rows of State.sums (exact accumulators): weight, loss, Brier, then top-k.
SUMS_WEIGHT, SUMS_LOSS, SUMS_BRIER, SUMS_TOPK = 0, 1, 2, 3
# After the n_k top-k columns (of fsums, and rows of State.sums) come the
# second moments behind the standard errors (fastce.errorbars), at offsets
# from F_TOPK + n_k (SUMS_TOPK + n_k): sum w^2, sum w^2 loss, sum w^2 loss^2,
# sum w^2 brier, sum w^2 brier^2, then one sum w^2 hit per k.  Rows whose
# loss is infinite are left out of the loss moments, as out of the loss sum.
M_W2, M_W2LOSS, M_W2LOSS2, M_W2BRIER, M_W2BRIER2, M_W2TOPK = 0, 1, 2, 3, 4, 5
# Per-row diagnostics (row_stats columns): unweighted loss, p(true class),
# p(predicted class), Brier term (the full multiclass sum), rank of the true class.
S_LOSS, S_P_TRUE, S_P_TOP, S_BRIER, S_RANK = range(5)
# The row of _logit_columns_f32's ``outputs`` that holds the argmax (its rank is in ``rank``), and the first of
# the scratch rows (see _new_scratch) that hold those outputs for a block finished in registers: high ... e_true,
# which the finishing leaf neither reads nor writes.
OUT_PRED = S_RANK
OUTPUT_ROWS = 8
ROW_STATS_COLUMNS = 5
# Rows of compare's per-block pair inputs (see compare_kernels): a row's
# unweighted loss (NaN where not counted), Brier term, rank, p(true class).
IN_LOSS, IN_BRIER, IN_RANK, IN_P_TRUE = range(4)
PAIR_INPUTS = 4


def fsums_columns(n_k: int) -> int:
    """Width of the per-block float sums for ``n_k`` top-k values."""
    return F_TOPK + n_k + M_W2TOPK + n_k


def exact_sums_count(n_k: int) -> int:
    """Number of exact accumulators of a State with ``n_k`` top-k values."""
    return SUMS_TOPK + n_k + M_W2TOPK + n_k
# icounts[b, C_ROWS] of a block score_tasks_two_class left to the general path.
RARE_BLOCK = -1
# icounts columns
(C_ROWS, C_NONFINITE, C_INF_LOSS, C_IGNORED, C_BELOW0, C_ABOVE1, C_UNNORMALIZED, C_PROBA_LIKE, C_ONE_HOT_LIKE,
 C_OVERFLOW) = range(10)
FIRST_NONFINITE, FIRST_INF_LOSS, FIRST_BELOW0, FIRST_ABOVE1, FIRST_UNNORMALIZED, FIRST_OVERFLOW = range(10, 16)
NUM_ICOUNTS = 16

# Mode flags for the score kernel.
MODE_LOGITS = 0
MODE_PROBA = 1

NO_LABEL = np.iinfo(np.int64).min


# Up to this many classes, blocks are walked one class at a time (see _walk_columns).
COLUMN_WALK_MAX_CLASSES = 32
# _logit_columns_f32's staged form keeps a group's exps, every class of a short row, on the stack.
assert column_lanes.STACK_ROWS >= COLUMN_WALK_MAX_CLASSES, "raise _column_lanes.STACK_ROWS with the short rows' width"

# Scratch rows are padded by this many elements (see score_blocks): 3 cache
# lines, so that consecutive rows of a 4 KiB-multiple length start in
# different L1 sets.
SCRATCH_PAD = 24

# Per-row status in a block's scratch.
ROW_OK, ROW_NONFINITE, ROW_IGNORED = 0, 1, 2


# Inlined by numba: its callers pass module constants, which numba types as literals, so a standalone
# _note was compiled once per (counter, column) pair: 0.1 s each, 0.5 s of a first evaluate.
@njit(inline="always", **KERNEL_OPTIONS)
def _note(icounts, b, counter, first_column, row):
    if icounts[b, counter] == 0:
        icounts[b, first_column] = row
    icounts[b, counter] += 1


@kernel_step(**LEAF_OPTIONS)
def _reset_block(fsums, icounts, b):
    reset_counters(fsums, icounts, b, FIRST_NONFINITE)
    fsums[b, F_MIN] = np.inf
    fsums[b, F_MAX] = -np.inf


@njit(inline="always", **KERNEL_OPTIONS)
def block_totals(fsums, icounts):
    """A thread's own sums and counters for the block it is on (one row each, as fsums' and icounts'), stored
    into the shared arrays when the block is done (store_block).  Updated row by row in the shared arrays,
    the blocks two threads work on at once share cache lines (an icounts row of the soft-target layout is 80
    bytes): soft targets at C = 8 took 292-308 ms on 2 threads that way, 237-280 ms with these."""
    return np.empty((1, fsums.shape[1])), np.empty((1, icounts.shape[1]), dtype=np.int64)


@njit(inline="always", **KERNEL_OPTIONS)
def store_block(sums, counts, fsums, icounts, b):
    """Block b's sums and counters, done, from the thread's own row (block_totals) into the shared arrays."""
    for c in range(fsums.shape[1]):
        fsums[b, c] = sums[0, c]
    for c in range(icounts.shape[1]):
        icounts[b, c] = counts[0, c]


# Inlined by numba: callers pass their layout's constant, a literal (see _note).
@njit(inline="always", **KERNEL_OPTIONS)
def reset_counters(fsums, icounts, b, first_row_columns):
    """Block b's sums to 0, its counters to 0 and its first-row columns (``first_row_columns`` on) to -1 (no
    row yet): every task's block layout (kernels, kernels_binary, kernels_soft) starts so."""
    for c in range(fsums.shape[1]):
        fsums[b, c] = 0.0
    for c in range(first_row_columns):
        icounts[b, c] = 0
    for c in range(first_row_columns, icounts.shape[1]):
        icounts[b, c] = -1


# The per-row helpers of long rows (_place_ties, _logits_row,
# _proba_row, _probability_like_row, _first_index_of) are inlined by LLVM
# (inline_into_callers: out of line, LLVM did not inline them and the
# long-row kernel was 25% slower at C = 100) and take no references
# (LEAF_OPTIONS).  They used to be inlined by numba, which binds each array
# argument to a new variable: a reference taken and dropped per array per
# row, atomic operations on counters both threads share.  Without them
# (and without those of the exp leaves): C = 100 float32 logits x0.80,
# probabilities x0.90, C = 1000 x0.96 (in-process A/B, 2 threads, AVX-512).
@kernel_step(**LEAF_OPTIONS)
def _place_ties(scores, i, n_classes, label, ties_to_last, native_target, ahead, equal):
    """The classes ahead of the true one, from the counts of higher (``ahead``) and equal scores.

    The counts are compared in the input's own precision (exact, and more
    SIMD lanes) and taken in int32 (twice the lanes of int64: a 3x faster
    loop, measured), in the row's first loop (_logits_row, _proba_row).

    When no score equals the true class's but its own (a NaN target: none
    at all), there is no tie to place.  Real-valued scores rarely tie, and
    the tie loop, over a variable stretch of the row with a scalar
    remainder, cost ~15% of a row at C = 100 (benchmarks/kernel_timing.py).
    """
    inline_into_callers()
    if equal <= 1:
        return np.int64(ahead)
    # Equal scores rank ahead on one side of the true class only.
    tie_start, tie_stop = (label + 1, n_classes) if ties_to_last else (0, label)
    for j in range(tie_start, tie_stop):
        # An unsigned index: numba's negative-index wraparound would turn this
        # loop's loads into gathers (seen in the assembly).
        ahead = np.int32(ahead + np.int32(as_native(scores[i, np.uint64(j)]) == native_target))
    return np.int64(ahead)


# Rows of at least this many 64-byte cache lines (1 KiB) have the next
# row's lines prefetched while their exps are computed (see _prefetch_next_row).
PREFETCH_ROW_LINES = 16


@njit(inline="always", **KERNEL_OPTIONS)
def _prefetch_next_row(scores, i, first, count):
    """Prefetch entries first .. first + count of row i + 1 (long rows only; a hint, no effect on results).

    A long row is read from memory by its first loop (max and rank) and then
    from cache by the exp and sum loops, during which a thread asks memory
    for nothing: the hardware prefetcher stops at the end of the row.
    Asking for the next row's lines chunk by chunk as the exps of this one
    are computed overlaps the two (in-process A/B of 71f2e48 against
    fba99ae, whose other changes barely touch long rows; 2 threads, 0.5-1
    GiB, repeated: float32 logits x0.92-0.96 at C = 1000, x0.91 at C = 32000;
    float64 x0.68; probabilities x0.88-0.96 at C = 1000).
    One burst per chunk here: spread over the exp loop in groups of 64 or 256
    entries it was slower (x1.12-1.22).  The explicit-vector steps
    (_exp_sums_f32 and its staged form, exp_sums_wide) spread theirs instead,
    the next row's lines at each 32 (staged: 16) columns as those are
    computed: faster there (2026-12-07, Zen 4, 128 MiB, one thread: float32
    C = 1000 / 32000 0.60-0.62 / 0.72-0.74 -> 0.51-0.63 / 0.48, float64
    1.44-1.47 / 1.31-1.35 -> 1.02-1.03 / 0.96 ns a score; see docs/performance.md).
    Rows under PREFETCH_ROW_LINES are left to the hardware prefetcher: at
    C = 100 this cost 7-13% and reaching further ahead gained nothing.
    """
    if prefetches_next_row(scores, i):
        prefetch_columns(scores, i + 1, first, count)


@njit(inline="always", **KERNEL_OPTIONS)
def prefetches_next_row(scores, i):
    """Whether row i's steps prefetch row i + 1: a next row, and rows of at least PREFETCH_ROW_LINES lines."""
    return scores.shape[1] >= PREFETCH_ROW_LINES * entries_per_line(scores) and i + 1 < scores.shape[0]


@njit(inline="always", **KERNEL_OPTIONS)
def prefetch_columns(scores, row, first, count):
    """Prefetch the lines of entries first .. first + count of ``row`` (a hint, no effect on results)."""
    for j in range(first, first + count, entries_per_line(scores)):
        prefetch(scores, row, j)


@kernel_step(**LEAF_OPTIONS)
def exp_sums(scores, i, n_classes, row_max, exp_chunk64):
    """(sum of exp(z - max) below the max, sum of their squares, entries at the max) of row i.

    The exps a chunk of EXP_CHUNK at a time into ``exp_chunk64`` (float64, in
    L1), then summed in lanes (fastce._lanes: the order is the source's,
    the same on every machine and in every compiled copy).  512-bit vectors
    on AVX-512 hosts: the float64 exp runs ~1.4x faster with them.
    """
    prefer_wide_vectors()
    compile_apart()  # kept out of its callers, so it keeps its 512-bit vectors
    rest, rest_b, squares, squares_b = lanes.zero(), lanes.zero(), lanes.zero(), lanes.zero()
    at_max = 0
    first = 0
    while first < n_classes:
        count = min(EXP_CHUNK, n_classes - first)
        _prefetch_next_row(scores, i, first, count)
        for j in range(count):
            x = as_float64(scores[i, np.uint64(first + j)]) - row_max
            top = x >= 0.0
            exp_chunk64[j] = exp_nonpositive(-np.inf if top else x)
            at_max += np.int64(top)
        rest, rest_b, squares, squares_b = lanes.add_values_and_squares(exp_chunk64, count, rest, rest_b, squares,
                                                                        squares_b)
        first += count
    return lanes.finish(rest, rest_b), lanes.finish(squares, squares_b), np.float64(at_max)


@kernel_step(**LEAF_OPTIONS)
def exp_sums_wide(scores, i, n_classes, row_max):
    """exp_sums' three sums, the same bits, 16 exps at a time in registers (fastce._row_lanes), each added to
    the lane sets where it is computed: no chunk of exps stored and summed again.

    The order is exp_sums': each chunk of EXP_CHUNK entries in pairs of
    16-entry vectors into lane sets A and B, what is left into A, the last
    vector padded with +0.0.  AVX-512 only (see _row_exp_sums).
    """
    prefer_wide_vectors()
    compile_apart()  # kept out of its callers, so it keeps its 512-bit vectors
    top = column_lanes.splat_wide(row_max)
    zero = lanes.zero()
    rest, rest_b, squares, squares_b = lanes.zero(), lanes.zero(), lanes.zero(), lanes.zero()
    at_max = 0
    ahead = prefetches_next_row(scores, i)  # spread over the loop (see _prefetch_next_row)
    first = 0
    while first < n_classes:
        count = min(EXP_CHUNK, n_classes - first)
        stop = first + count
        pairs = first + (count - count % (2 * lanes.LANES))
        for j in range(first, pairs, 2 * lanes.LANES):
            if ahead:  # the next row's lines at these columns, as these entries are computed
                prefetch_columns(scores, i + 1, j, 2 * lanes.LANES)
            e, at_top = row_lanes.exp_nonpositive_wide(row_lanes.load_row(scores, i, j), top)
            at_max += column_lanes.count(at_top)
            rest = lanes.add(rest, e)
            squares = lanes.add(squares, lanes.mul(e, e))
            e, at_top = row_lanes.exp_nonpositive_wide(row_lanes.load_row(scores, i, j + lanes.LANES), top)
            at_max += column_lanes.count(at_top)
            rest_b = lanes.add(rest_b, e)
            squares_b = lanes.add(squares_b, lanes.mul(e, e))
        for j in range(pairs, stop, lanes.LANES):
            left = min(lanes.LANES, stop - j)
            kept = column_lanes.head(left)
            e, at_top = row_lanes.exp_nonpositive_wide(row_lanes.load_row_head(scores, i, j, left), top)
            e = column_lanes.where(kept, e, zero)
            at_max += column_lanes.count(column_lanes.both(at_top, kept))
            rest = lanes.add(rest, e)
            squares = lanes.add(squares, lanes.mul(e, e))
        first = stop
    return lanes.finish(rest, rest_b), lanes.finish(squares, squares_b), np.float64(at_max)


# exp_sums takes a row's exps this many at a time (a float64 scratch of 8 KiB: L1); _exp_sums_f32 prefetches
# the next row this many entries at a time.
EXP_CHUNK = 1024
_UNBIAS = 2.0 ** -EXP_BIAS_F32
_UNBIAS_SQUARED = 2.0 ** (-2 * EXP_BIAS_F32)


# float32 lanes of a 512-bit vector.
_LANES_F32 = 16
# The length of the float64 chunk scratch of exp_sums and kernels_soft (EXP_CHUNK entries, and room).
EXP_SCRATCH = EXP_CHUNK + _LANES_F32


@kernel_step(**LEAF_OPTIONS)
def _f32_chunk_length(n_classes, first):
    """Entries of the float32 exps' chunk starting at ``first``: EXP_CHUNK, the last chunk taking up a remainder
    under 16 -- the chunks of lanes.add_values_and_squares' former calls.  The sums' order restarts its pairs of
    vectors at each chunk, so both forms (_exp_sums_f32, _exp_sums_f32_staged) take their chunks from here."""
    inline_into_callers()
    return n_classes - first if n_classes - first < EXP_CHUNK + _LANES_F32 else EXP_CHUNK


@kernel_step(**LEAF_OPTIONS)
def _exp_pair_f32(scores, i, j, top, rest, rest_b, squares, squares_b, at_max):
    """_exp_sums_f32's step over entries j .. j + 32 of row i: the first 16 into lane sets A, the next into B."""
    inline_into_callers()
    e, is_top = column_lanes.exp_difference(column_lanes.load_scores(scores, i, j), top)
    at_max += column_lanes.count(is_top)
    wide = column_lanes.widen(e)
    rest = lanes.add(rest, wide)
    squares = lanes.fma(wide, wide, squares)
    e, is_top = column_lanes.exp_difference(column_lanes.load_scores(scores, i, j + _LANES_F32), top)
    at_max += column_lanes.count(is_top)
    wide = column_lanes.widen(e)
    rest_b = lanes.add(rest_b, wide)
    squares_b = lanes.fma(wide, wide, squares_b)
    return rest, rest_b, squares, squares_b, at_max


@kernel_step(**LEAF_OPTIONS)
def _exp_sums_f32(scores, i, n_classes, native_max):
    """exp_sums with float32 math, for 16- and 32-bit scores (native_max a float32).

    Each exp(z - max) in float32 (16 SIMD lanes, a degree-6 polynomial),
    within 1 float32 ulp: z - max is rounded to float32 with its rounding
    error kept (exp_difference_f32) and fed to the exp.  The terms are summed in
    float64, so the sum keeps each term's relative error whatever C, and
    the row's loss ``(max - z_y) + log1p(rest)`` stays within a few float32
    ulp.  The exps carry a factor 2**EXP_BIAS_F32 (normal float32 down to
    exp(-156)), taken out of the float64 sums once per row (exactly).

    16 entries at a time in explicit vectors (fastce._column_lanes): the
    exps in float32, widened and added to the float64 lane sets of
    fastce._lanes in its order (pairs of vectors into sets A and B, what is
    left into A, the last vector padded with +0.0), each square added by an
    FMA (exact: a float32 squared).  The same bits as exps stored to a
    float32 chunk and summed by lanes.add_values_and_squares, its former
    form, without the store and reload, the second loop and its run-time
    alias checks (explicit vectors: LLVM sized a mixed float32 / float64
    loop by float64, 8 lanes).  The entries are taken by chunks of EXP_CHUNK
    only for the prefetch of the next row (_prefetch_next_row).  The entries
    at the max are counted from the comparison masks (a population count,
    in integer registers): a float32 vector of counts and its 1.0s held two
    more of the 32 vector registers, and LLVM spilled constants to the stack
    and reloaded them at once (two stalls of ~600 samples each at every
    call, perf); without them C = 100 went from 96-121 to 91-97 ns a row,
    C = 1000 from 534-590 to 514-524 (benchmarks/kernel_timing.py, three
    alternated runs, Zen 4).  Long rows only (n_classes > COLUMN_WALK_MAX_CLASSES).
    """
    prefer_wide_vectors()
    compile_apart()  # kept out of its callers, so it keeps its 512-bit vectors
    top = column_lanes.splat(native_max)
    zero32 = column_lanes.splat(0.0)
    rest, rest_b, squares, squares_b = lanes.zero(), lanes.zero(), lanes.zero(), lanes.zero()
    at_max = 0  # the entries at the max, counted from the masks (integer units: no vector register)
    first = 0
    ahead = prefetches_next_row(scores, i)  # spread over the loop (see _prefetch_next_row)
    while first < n_classes:
        count = _f32_chunk_length(n_classes, first)
        stop = first + count
        pairs = first + (count - count % (2 * _LANES_F32))
        if ahead:
            for j in range(first, pairs, 2 * _LANES_F32):
                prefetch_columns(scores, i + 1, j, 2 * _LANES_F32)  # the next row's lines at these columns
                rest, rest_b, squares, squares_b, at_max = _exp_pair_f32(scores, i, j, top, rest, rest_b, squares,
                                                                         squares_b, at_max)
        else:
            for j in range(first, pairs, 2 * _LANES_F32):
                rest, rest_b, squares, squares_b, at_max = _exp_pair_f32(scores, i, j, top, rest, rest_b, squares,
                                                                         squares_b, at_max)
        for j in range(pairs, stop, _LANES_F32):
            left = min(_LANES_F32, stop - j)
            e, is_top = column_lanes.exp_difference(column_lanes.load_scores_head(scores, i, j, left), top)
            kept = column_lanes.head(left)
            e = column_lanes.where(kept, e, zero32)
            at_max += column_lanes.count(column_lanes.both(is_top, kept))
            wide = column_lanes.widen(e)
            rest = lanes.add(rest, wide)
            squares = lanes.fma(wide, wide, squares)
        first = stop
    return lanes.finish(rest, rest_b) * _UNBIAS, lanes.finish(squares, squares_b) * _UNBIAS_SQUARED, np.float64(at_max)


@kernel_step(**LEAF_OPTIONS)
def _stage_exps_f32(scores, i, first, j, top, at_max, one32, scratch):
    """_exp_sums_f32_staged's step over entries first + j .. + 16 of row i: their exps staged, the ties counted."""
    inline_into_callers()
    e, is_top = column_lanes.exp_difference(column_lanes.load_scores(scores, i, first + j), top)
    column_lanes.stage(scratch, j, e)
    return column_lanes.where(is_top, column_lanes.add(at_max, one32), at_max)


@kernel_step(**LEAF_OPTIONS)
def _exp_sums_f32_staged(scores, i, n_classes, native_max, scratch):
    """_exp_sums_f32 in two loops a chunk, for cores with 16 vector registers (AVX2: _vecmath.STAGED_FORMS):
    the same bits (tests/test_column_lanes.py, tests/test_vector_forms.py).

    The fused loop holds the four float64 lane sets (16 x 4 float64: every
    256-bit register) beside the exp's constants and temporaries; on AVX2
    LLVM spilled them (233 instructions a 32 entries, 79 of them stack loads
    and stores, on Zen 3).  Here the exps go to ``scratch`` as float32 (its
    memory: ``exp_chunk64``, which float32 math leaves unused), padded with
    +0.0 to a whole vector, and a second loop adds them into the lane sets
    in the same order as _exp_sums_f32 (pairs of vectors into A and B, what
    is left into A): 0.64-0.65 instead of 0.79-0.83 ns an entry at C = 1000,
    0.95-0.98 instead of 1.24-1.25 at C = 100 (one thread, rows in L2, a
    /tmp micro-benchmark of this function against _exp_sums_f32, 3 rounds,
    Zen 3).  Long rows only.
    """
    prefer_wide_vectors()
    compile_apart()
    top = column_lanes.splat(native_max)
    zero32 = column_lanes.splat(0.0)
    one32 = column_lanes.splat(1.0)
    rest, rest_b, squares, squares_b = lanes.zero(), lanes.zero(), lanes.zero(), lanes.zero()
    at_max = zero32  # per lane, exact (counts below 2**24)
    ahead = prefetches_next_row(scores, i)  # spread over the loop (see _prefetch_next_row)
    first = 0
    while first < n_classes:
        count = _f32_chunk_length(n_classes, first)
        whole = count - count % _LANES_F32
        if ahead:
            for j in range(0, whole, _LANES_F32):
                prefetch_columns(scores, i + 1, first + j, _LANES_F32)  # the next row's lines at these columns
                at_max = _stage_exps_f32(scores, i, first, j, top, at_max, one32, scratch)
        else:
            for j in range(0, whole, _LANES_F32):
                at_max = _stage_exps_f32(scores, i, first, j, top, at_max, one32, scratch)
        if whole < count:
            left = count - whole
            e, is_top = column_lanes.exp_difference(column_lanes.load_scores_head(scores, i, first + whole, left), top)
            kept = column_lanes.head(left)
            at_max = column_lanes.where(column_lanes.both(is_top, kept), column_lanes.add(at_max, one32), at_max)
            column_lanes.stage(scratch, whole, column_lanes.where(kept, e, zero32))
        pairs = count - count % (2 * _LANES_F32)
        for j in range(0, pairs, 2 * _LANES_F32):
            wide = column_lanes.widen(column_lanes.staged(scratch, j))
            rest = lanes.add(rest, wide)
            squares = lanes.fma(wide, wide, squares)
            wide = column_lanes.widen(column_lanes.staged(scratch, j + _LANES_F32))
            rest_b = lanes.add(rest_b, wide)
            squares_b = lanes.fma(wide, wide, squares_b)
        for j in range(pairs, count, _LANES_F32):
            wide = column_lanes.widen(column_lanes.staged(scratch, j))
            rest = lanes.add(rest, wide)
            squares = lanes.fma(wide, wide, squares)
        first += count
    return (lanes.finish(rest, rest_b) * _UNBIAS, lanes.finish(squares, squares_b) * _UNBIAS_SQUARED,
            lanes.total(column_lanes.widen(at_max)))


def _row_exp_sums(scores, i, n_classes, row_max, native_max, float32_math, exp_chunk64):  # pragma: no cover
    return exp_sums(scores, i, n_classes, row_max, exp_chunk64)


@overload(_row_exp_sums, inline="always", jit_options=INLINE_OVERLOAD_OPTIONS)
def _row_exp_sums_overload(scores, i, n_classes, row_max, native_max, float32_math, exp_chunk64):
    """_exp_sums_f32 when ``float32_math`` is True (_exp_sums_f32_staged on AVX2 hosts); for float64 math (it is
    None, or the scores float64) exp_sums_wide on AVX-512 hosts, exp_sums on AVX2 ones (the same bits).

    Chosen by the token's type when numba compiles (see general_tokens): a
    kernel compiles one leaf.  Picking at run time compiled both, the
    float32 leaf 0.5-0.9 s and the float64 one (with its dispatch) 0.4-0.5 s
    of a first call at C = 100 (numba's compile events); the price is a kernel of its own (a few
    seconds, once) for precision="float64" on 16- and 32-bit logits.
    Inlined by numba: compiled apart, this dispatch cost 30 ns per row
    (C = 100: 1.46 against 1.17 ns per score, benchmarks/kernel_timing.py).
    """
    if scores.dtype == types.float64 or isinstance(float32_math, types.NoneType):  # None: float64 math
        if STAGED_FORMS or scores.layout != "C":  # AVX2 (see fastce._row_lanes), or rows the vectors cannot load
            return lambda scores, i, n_classes, row_max, native_max, float32_math, exp_chunk64: exp_sums(
                scores, i, n_classes, row_max, exp_chunk64
            )
        return lambda scores, i, n_classes, row_max, native_max, float32_math, exp_chunk64: exp_sums_wide(
            scores, i, n_classes, row_max
        )
    if STAGED_FORMS:  # AVX2: the staged form (see _exp_sums_f32_staged)
        return lambda scores, i, n_classes, row_max, native_max, float32_math, exp_chunk64: _exp_sums_f32_staged(
            scores, i, n_classes, native_max, exp_chunk64
        )
    return lambda scores, i, n_classes, row_max, native_max, float32_math, exp_chunk64: _exp_sums_f32(
        scores, i, n_classes, native_max
    )


@kernel_step(**LEAF_OPTIONS)
def _exp_columns(columns, high, target, n_classes, count, at_max, rest, squares, e_true):
    """Per row of a transposed block: entries at the max, sum of exp(z - max) over
    the others, and of their squares, and e_true = exp(target - max) (1 at the
    max), as _exp_true (a wide-vector leaf, see exp_sums)."""
    prefer_wide_vectors()
    compile_apart()
    if n_classes == 2:
        # One exp per row instead of three (one per column, one for the
        # target): of two entries one is the max and contributes 1, and the
        # other's exp is also the target's when the target is not the max.
        # The same values, bit for bit, as the general loops below (the max's
        # exp there is exactly 0 and the sums start at 0).
        for r in range(count):
            below0 = columns[0, r] - high[r]
            below1 = columns[1, r] - high[r]
            top0 = below0 >= 0.0
            top1 = below1 >= 0.0
            # The entry below the max.  Either difference NaN (a NaN entry, or
            # inf - inf at a +inf max, in either column) makes the row's sums
            # NaN, as the general loops do: selecting the other column alone
            # would pass [0, +inf] and [-inf, +inf] as valid rows.
            x = below1 if top0 else below0
            x = x if (below0 == below0) & (below1 == below1) else np.nan
            e = exp_nonpositive(-np.inf if x >= 0.0 else x)
            at_max[r] = (1.0 if top0 else 0.0) + (1.0 if top1 else 0.0)
            rest[r] = e
            squares[r] = e * e
            e_true[r] = 1.0 if target[r] - high[r] == 0.0 else e
        return
    # The first column starts the sums (the same bits as adding it to 0.0:
    # its terms are >= +0.0 or NaN), one pass fewer over the scratch.
    for r in range(count):
        x = columns[0, r] - high[r]
        top = x >= 0.0
        e = exp_nonpositive(-np.inf if top else x)
        at_max[r] = 1.0 if top else 0.0
        rest[r] = e
        squares[r] = e * e
    for j in range(1, n_classes):
        for r in range(count):
            x = columns[j, r] - high[r]
            top = x >= 0.0
            e = exp_nonpositive(-np.inf if top else x)
            at_max[r] += 1.0 if top else 0.0
            rest[r] += e
            squares[r] += e * e
    _exp_true_rows(target, high, count, e_true)


@kernel_step(**LEAF_OPTIONS)
def _rank_step(v, target, label, column, ahead, ties_to_last):
    """One class ``column`` (its index in every lane) of a group of rows: (ahead + 1 where the class ranks ahead of
    the true one, column + 1); ``v`` its scores, ``target`` and ``label`` the rows' true scores and classes.
    Equal scores rank ahead on one side of the true class only.  Both forms of _logit_columns_f32 take it."""
    inline_into_callers()
    one32 = column_lanes.splat(1.0)
    tie_ahead = column_lanes.greater(column, label) if ties_to_last else column_lanes.less(column, label)
    counted = column_lanes.either(column_lanes.greater(v, target),
                                  column_lanes.both(column_lanes.equal(v, target), tie_ahead))
    return (column_lanes.add(ahead, column_lanes.where(counted, one32, column_lanes.splat(0.0))),
            column_lanes.add(column, one32))


@kernel_step(**LEAF_OPTIONS)
def _logit_columns_f32(columns, target, label_column, n_classes, count, ties_to_last, high, rank, at_max, rest,
                       squares, e_true, finish, kept, sum_tolerance, unit_weights, row_weight, weight, terms,
                       outputs):
    """_walk_columns's statistics of a block of logits with float32 math, 16 rows at a time (fastce._column_lanes);
    with ``finish``, the block's whole finish as well.

    ``columns``: the block transposed, float32 (the scores' values, exact).
    high = row max (maxnum: a NaN entry is passed over; its row is caught
    by the sums), rank = entries ranked ahead of the target (greater, or
    equal on one side of the true class: exact comparisons), at_max =
    entries equal to the max, rest = sum of exp(z - max) over the others,
    squares = sum of their squares, e_true = exp(target - max), 1 at the max.

    Each exp as _exp_sums_f32 takes it (exp_difference: float32 math within
    1 float32 ulp, the TwoSum of z - max kept, a 2**EXP_BIAS_F32 factor),
    the sums in float64 from column 0 up, so that every row's loss stays
    within a few float32 ulp as on long rows.  Every accumulator of 16 rows
    stays in registers from class to class: one read of each column, where
    the float64 loops (one per class and statistic) read and wrote the
    block's scratch C times over (C = 10, one thread, /tmp stage timing:
    the whole walk of a block 16-21 -> 10-14 ns a row, with the transpose of
    _transpose_block_f32).  Rows count .. count + 15 of the scratch are
    computed and ignored (it is padded and zeroed, see _new_scratch).

    ``finish`` (a block finished in registers, see _logits_block_f32):
    instead of those statistics, the finish of _short_rows_status,
    _probability_like_columns, _finish_block and _losses for the same 16
    rows while they are in registers, with the same float64 operations in
    the same order (fastce._column_lanes' log_positive and reciprocal are
    _vecmath's, bit for bit): each row's weight (``row_weight``'s, 0 for a
    row not counted), rank, and the terms of _block_terms into ``weight``,
    ``rank`` and the rows of ``terms`` (T_W2, T_W2LOSS and T_W2BRIER only
    without ``unit_weights``), which the caller sums as _finish_block does.
    ``kept``: 1.0 for rows whose label is not the ignored one.  Returns
    (non-finite rows, rows with an infinite loss, probability-like rows,
    those with a max of 1, rows counted); the first two make the block rare
    (the caller then takes the general path, which records them).  Without
    ``finish``: zeros.

    ``outputs`` (with ``finish``; 0 rows: none): each row's statistics as
    _finish_block writes them for diagnose (its operations: the loss, p(true
    class) = e_true / (1 + rest), p(predicted) = 1 / (1 + rest), Brier) into
    its rows S_LOSS ... S_BRIER, and the argmax, the first column equal to
    the max (as _first_index_of), into row OUT_PRED; the rank is ``rank``.
    """
    prefer_wide_vectors()
    compile_apart()
    zero = lanes.zero()
    one = column_lanes.widen(column_lanes.splat(1.0))
    unbias = column_lanes.widen(column_lanes.splat(_UNBIAS))
    unbias_squared = lanes.mul(unbias, unbias)
    infinity = column_lanes.splat_wide(np.inf)
    tolerance = column_lanes.splat_wide(sum_tolerance)
    zero32 = column_lanes.splat(0.0)
    one32 = column_lanes.splat(1.0)
    keep_outputs = outputs.shape[0] != 0
    nonfinite = 0
    infinite = 0
    like = 0
    one_hot = 0
    counted = 0
    for g in range(0, count, lanes.LANES):
        target_g = column_lanes.narrow(lanes.load(target, g))
        label_g = column_lanes.narrow(lanes.load(label_column, g))
        top = column_lanes.load(columns[0], g)
        for j in range(1, n_classes):
            top = column_lanes.maxnum(top, column_lanes.load(columns[j], g))
        first = zero32  # the argmax (a row with a NaN, whose max may be none of its entries, is not finished here)
        if finish and keep_outputs:
            first = column_lanes.splat(-1.0)
            for j in range(n_classes):
                hit = column_lanes.both(column_lanes.equal(column_lanes.load(columns[j], g), top),
                                        column_lanes.less(first, zero32))
                first = column_lanes.where(hit, column_lanes.splat(np.float32(j)), first)
        # The counts in float32 (exact: at most 32), one masked add each; the sums in float64.
        ahead = zero32
        at = zero32
        total = zero
        squared = zero
        column = zero32
        if not STAGED_FORMS:
            for j in range(n_classes):
                v = column_lanes.load(columns[j], g)
                ahead, column = _rank_step(v, target_g, label_g, column, ahead, ties_to_last)
                e, is_top = column_lanes.exp_difference(v, top)
                at = column_lanes.add(at, column_lanes.where(is_top, one32, zero32))
                wide = column_lanes.widen(e)
                total = lanes.add(total, wide)
                squared = lanes.fma(wide, wide, squared)  # exact: a float32 squared
        else:
            # AVX2 (16 registers, _vecmath.STAGED_FORMS): the same values in three loops, each of which fits --
            # the ranks, the exps (staged on the stack), their float64 sums; in one loop LLVM spilled 51 values
            # a class (158 instructions a 16 rows).  In cache, one thread, Zen 3 (benchmarks/kernel_timing.py,
            # 3 alternated pairs): C = 10 22.3-22.7 -> 20.7-21.5 ns a row, C = 32 50.6-52.9 -> 46.5-46.6.
            for j in range(n_classes):
                ahead, column = _rank_step(column_lanes.load(columns[j], g), target_g, label_g, column, ahead,
                                           ties_to_last)
            stack = column_lanes.stack_rows()  # the group's exps (an alloca in the entry block: one for all)
            for j in range(n_classes):
                e, is_top = column_lanes.exp_difference(column_lanes.load(columns[j], g), top)
                at = column_lanes.add(at, column_lanes.where(is_top, one32, zero32))
                column_lanes.stage(stack, j * lanes.LANES, e)
            for j in range(n_classes):
                wide = column_lanes.widen(column_lanes.staged(stack, j * lanes.LANES))
                total = lanes.add(total, wide)
                squared = lanes.fma(wide, wide, squared)  # exact: a float32 squared
        e, is_top = column_lanes.exp_difference(target_g, top)
        high_g = column_lanes.widen(top)
        at_g = column_lanes.widen(at)
        rest_g = lanes.mul(total, unbias)
        squares_g = lanes.mul(squared, unbias_squared)
        e_true_g = column_lanes.where(is_top, one, lanes.mul(column_lanes.widen(e), unbias))
        column_lanes.store_wide(rank, g, column_lanes.widen(ahead))
        if not finish:
            column_lanes.store_wide(high, g, high_g)
            column_lanes.store_wide(at_max, g, at_g)
            column_lanes.store_wide(rest, g, rest_g)
            column_lanes.store_wide(squares, g, squares_g)
            column_lanes.store_wide(e_true, g, e_true_g)
            continue
        # _short_rows_status: the value, the rest with the extra max entries, and which rows count.
        in_block = column_lanes.head(count - g)
        kept_g = column_lanes.both(column_lanes.greater(lanes.load(kept, g), zero), in_block)
        value = column_lanes.sub_wide(high_g, lanes.load(target, g))
        rest_g = lanes.add(rest_g, column_lanes.sub_wide(at_g, one))
        ok = column_lanes.both(column_lanes.equal(rest_g, rest_g), kept_g)
        nonfinite += column_lanes.count(kept_g) - column_lanes.count(ok)  # a NaN rest: not finite
        counted += column_lanes.count(ok)
        w = column_lanes.where(ok, one if unit_weights else lanes.load(row_weight, g), zero)
        column_lanes.store_wide(weight, g, w)
        # _probability_like_columns, for the rows whose max is at most 1 (the others cannot be).
        candidate = column_lanes.both(ok, column_lanes.less_equal(high_g, one))
        if column_lanes.count(candidate):
            sums = column_lanes.widen(column_lanes.load(columns[0], g))
            lowest = column_lanes.load(columns[0], g)
            for j in range(1, n_classes):
                v = column_lanes.load(columns[j], g)
                sums = lanes.add(sums, column_lanes.widen(v))
                lowest = column_lanes.where(column_lanes.less(v, lowest), v, lowest)
            off_one = column_lanes.sub_wide(sums, one)
            off_one = column_lanes.where(column_lanes.less(off_one, zero),
                                         lanes.mul(off_one, column_lanes.splat_wide(-1.0)), off_one)  # abs
            is_like = column_lanes.both(candidate, column_lanes.both(column_lanes.less_equal(off_one, tolerance),
                                                                     column_lanes.greater_equal(lowest, zero32)))
            like += column_lanes.count(is_like)
            one_hot += column_lanes.count(column_lanes.both(is_like, column_lanes.equal(high_g, one)))
        # _finish_block and _losses: Brier and log1p.
        squares_g = lanes.add(squares_g, column_lanes.sub_wide(at_g, lanes.mul(e_true_g, e_true_g)))
        a = column_lanes.where(ok, rest_g, zero)
        u = lanes.add(one, a)
        inverse = column_lanes.reciprocal(u)
        off = column_lanes.where(column_lanes.equal(value, zero), rest_g,
                                 column_lanes.sub_wide(lanes.add(one, rest_g), e_true_g))
        brier = lanes.mul(lanes.mul(lanes.add(squares_g, lanes.mul(off, off)), inverse), inverse)
        corrected = column_lanes.sub_wide(column_lanes.log_positive(u),
                                          lanes.mul(column_lanes.sub_wide(column_lanes.sub_wide(u, one), a), inverse))
        loss = lanes.add(value, column_lanes.where(column_lanes.equal(u, one), a, corrected))
        # _block_terms: a zero weight removes the row (its loss may be anything).
        weighing = column_lanes.not_equal(w, zero)
        weighted = column_lanes.where(weighing, lanes.mul(w, loss), zero)
        is_infinite = column_lanes.equal(weighted, infinity)
        infinite += column_lanes.count(is_infinite)
        column_lanes.store_wide(terms[T_LOSS], g, column_lanes.where(is_infinite, zero, weighted))
        kept_brier = column_lanes.where(weighing, brier, zero)
        column_lanes.store_wide(terms[T_BRIER], g, lanes.mul(w, kept_brier))
        kept_loss = column_lanes.where(is_infinite, zero, column_lanes.where(weighing, loss, zero))
        w2 = lanes.mul(w, w)
        column_lanes.store_wide(terms[T_W2LOSS2], g, lanes.mul(w2, lanes.mul(kept_loss, kept_loss)))
        column_lanes.store_wide(terms[T_W2BRIER2], g, lanes.mul(w2, lanes.mul(kept_brier, kept_brier)))
        if not unit_weights:
            column_lanes.store_wide(terms[T_W2], g, w2)
            column_lanes.store_wide(terms[T_W2LOSS], g, lanes.mul(w2, kept_loss))
            column_lanes.store_wide(terms[T_W2BRIER], g, lanes.mul(w2, kept_brier))
        if keep_outputs:
            column_lanes.store_wide(outputs[S_LOSS], g, loss)
            column_lanes.store_wide(outputs[S_P_TRUE], g, column_lanes.divide_wide(e_true_g, lanes.add(one, rest_g)))
            column_lanes.store_wide(outputs[S_P_TOP], g, column_lanes.divide_wide(one, lanes.add(one, rest_g)))
            column_lanes.store_wide(outputs[S_BRIER], g, brier)
            column_lanes.store_wide(outputs[OUT_PRED], g, column_lanes.widen(first))
    return nonfinite, infinite, like, one_hot, counted


@kernel_step(**LEAF_OPTIONS)
def _exp_true_rows(target, high, count, e_true):
    """The loop of _exp_true, shared with _exp_columns (each a leaf with its own vector width)."""
    for r in range(count):
        x = target[r] - high[r]
        e_true[r] = 1.0 if x == 0.0 else exp_nonpositive(x)


@kernel_step(**LEAF_OPTIONS)
def _exp_true(target, high, count, e_true):
    """e_true[r] = exp(target - max), 1 at the max, for every row of a block (a wide-vector leaf)."""
    prefer_wide_vectors()
    compile_apart()
    _exp_true_rows(target, high, count, e_true)


@kernel_step(**LEAF_OPTIONS)
def _losses(proba_eps, count, status, value, rest, inverse, loss_of):
    """Per-row loss of a block: log1p / log in a wide-vector leaf (see exp_sums).

    Logits: ``inverse`` holds 1 / (1 + rest) (see _finish_block) for the
    correction term of log1p_nonnegative, in place of its float64 division
    (this loop, in cache: 1.10 -> 0.88 ns per row).  Rows whose ``status``
    is not OK get log1p(0) = 0.
    """
    prefer_wide_vectors()
    compile_apart()
    if proba_eps is not None:  # probabilities (see general_tokens)
        for r in range(count):
            ok = status[r] == ROW_OK
            loss_of[r] = -log_positive(value[r] if ok else 0.5)
        return
    for r in range(count):
        # log1p_nonnegative(a), its division by u = 1 + a replaced by a product.
        a = rest[r] if status[r] == ROW_OK else 0.0
        u = 1.0 + a
        corrected = log_positive(u) - ((u - 1.0) - a) * inverse[r]
        loss_of[r] = value[r] + (a if u == 1.0 else corrected)


@kernel_step(**LEAF_OPTIONS)
def _top_key_and_counts(scores, i, n_classes, native_target):
    """(the largest order key of row i, entries above ``native_target``, entries equal to it): the max and the
    rank's counts of a row in one loop, as LLVM vectorises it (float64 scores, and every score on AVX2 hosts: see
    _explicit_on_avx512), in int32 lanes as the keys for 16- and 32-bit scores."""
    inline_into_callers()
    top_key = order_key(ordered_bits(as_native(scores[i, 0])))
    ahead = np.int32(0)
    equal = np.int32(0)
    for j in range(n_classes):
        v = as_native(scores[i, j])
        top_key = max(top_key, order_key(ordered_bits(v)))
        ahead = np.int32(ahead + np.int32(v > native_target))
        equal = np.int32(equal + np.int32(v == native_target))
    return top_key, ahead, equal


@kernel_step(**LEAF_OPTIONS)
def _rank_counts(v, target, kept, ahead, equal):
    """(ahead, equal) plus the lanes of the Rows ``v`` above ``target`` and equal to it, among the lanes ``kept``
    (a Mask): population counts of the comparisons (the explicit rank loops' counts)."""
    inline_into_callers()
    return (ahead + column_lanes.count(column_lanes.both(column_lanes.greater(v, target), kept)),
            equal + column_lanes.count(column_lanes.both(column_lanes.equal(v, target), kept)))


@kernel_step(**LEAF_OPTIONS)
def _top_key_and_counts_f32(scores, i, n_classes, native_target):
    """_top_key_and_counts of 16- and 32-bit scores, 16 entries at a time in explicit vectors (fastce._column_lanes):
    the keys' max in a vector, the counts from the comparison masks by population counts (integer units), and
    the last entries in one masked vector.

    LLVM's vectorisation of the scalar loop counted in vector lanes (a
    mask-to-vector move and a subtraction per count and vector) and ended
    in a 256-bit loop and a scalar one (C = 100: 64 + 32 + 4 entries, the
    last four ~17 dependent instructions each).  The same results: keys
    and counts are exact, and the masked lanes add nothing (their keys the
    lowest, which the row's first entry's key is never below).
    """
    inline_into_callers()
    target = column_lanes.splat(native_target)
    every = column_lanes.head(_LANES_F32)
    lowest = column_lanes.lowest_keys()
    top = lowest
    ahead = equal = 0
    whole = n_classes - n_classes % _LANES_F32
    for j in range(0, whole, _LANES_F32):
        v = column_lanes.load_scores(scores, i, j)
        top = column_lanes.max_keys(top, column_lanes.order_keys(v))
        ahead, equal = _rank_counts(v, target, every, ahead, equal)
    if whole < n_classes:
        v = column_lanes.load_scores_head(scores, i, whole, n_classes - whole)
        kept = column_lanes.head(n_classes - whole)
        top = column_lanes.max_keys(top, column_lanes.where(kept, column_lanes.order_keys(v), lowest))
        ahead, equal = _rank_counts(v, target, kept, ahead, equal)
    return column_lanes.largest_key(top), np.int32(ahead), np.int32(equal)


def _explicit_on_avx512(scalar, explicit):
    """A function of (scores, i, n_classes, value) that calls ``explicit`` (a loop in explicit 16-entry vectors)
    for 16- and 32-bit scores on AVX-512 hosts, and ``scalar`` (the loop LLVM vectorises) for float64 scores and
    on AVX2 hosts, chosen by type when numba compiles (inlined by numba, as _row_exp_sums).

    The explicit loops take their counts and positions from comparison masks; without AVX-512's mask
    registers each of those first gathers the comparison's sign bits from two vectors, and the explicit
    loop was slower (an AVX2 build on the Zen 4, NUMBA_CPU_NAME=znver3 without AVX-512: the max and rank
    counts at C = 1000 693-720 against 656 ns a row, kernel_timing.py).
    """

    def choose(scores, i, n_classes, value):  # pragma: no cover - replaced by the overload below
        return scalar(scores, i, n_classes, value)

    @overload(choose, inline="always", jit_options=INLINE_OVERLOAD_OPTIONS)
    def _choose_overload(scores, i, n_classes, value):
        if scores.dtype == types.float64 or not HAS_AVX512:
            return lambda scores, i, n_classes, value: scalar(scores, i, n_classes, value)
        return lambda scores, i, n_classes, value: explicit(scores, i, n_classes, value)

    return choose


_row_top_key_and_counts = _explicit_on_avx512(_top_key_and_counts, _top_key_and_counts_f32)


@kernel_step(**LEAF_OPTIONS)
def _logits_row(scores, i, n_classes, target, label, ties_to_last, float32_math, exp_chunk64):
    """(max - target, sum of exp(z - max) over the non-max entries, rank,
    sum of the squared exp(z - max) over the non-max entries, number of max
    entries, max, ok).

    The first loop reads the row from memory; the others find it in cache.
    Each loop does one kind of work, because LLVM vectorises a loop with one
    max, or one count, or several float sums fed by the same selects, but
    not a mix of them (checked in the generated assembly).

    Entries equal to the max contribute exactly 1 each and are counted, not
    summed, so the sum of the others keeps all its digits for log1p: a
    confident row's tiny loss is accurate to the last bits (log of a sum
    that includes the 1.0 would round them away).
    """
    inline_into_callers()
    # In the input's own precision (exact, and more SIMD lanes): max and rank.
    # The max as an integer reduction over order-preserving keys of the
    # float bits: one cheap op per entry, and no serial NaN-blend chain in
    # the loop's scalar remainder (which cost as much as the vector part at
    # C ~ 100).  NaN entries map beyond +-inf; such rows are flagged anyway.
    native_target = as_native(scores[i, label])
    # The rank's counts (see _place_ties) ride along in the max's loop: one pass from memory instead of two
    # (C = 1000: 0.553-0.555 against 0.566-0.573 ns a score, kernel_timing.py).
    top_key, ahead, equal = _row_top_key_and_counts(scores, i, n_classes, native_target)
    native_max = from_ordered_bits(order_key(top_key))
    ahead = _place_ties(scores, i, n_classes, label, ties_to_last, native_target, ahead, equal)
    row_max = np.float64(native_max)
    # float64 sums of exp(z - max) below the max and of their squares.  A max
    # entry (x == 0) enters exp as -inf, giving exactly 0, and is counted.
    # NaN (a NaN entry, inf - inf, or -inf - -inf for a masked row) fails
    # "x >= 0", goes through exp and makes the sums NaN: that flags the row.
    rest, squares, at_max = _row_exp_sums(scores, i, n_classes, row_max, native_max, float32_math, exp_chunk64)
    shift = row_max - target
    rest += at_max - 1.0
    ok = rest == rest
    return shift, rest, ahead, squares, at_max, row_max, ok


@kernel_step(**LEAF_OPTIONS)
def _extremes_and_counts(scores, i, n_classes, native_target):
    """(the largest and the smallest ordered_bits of row i, entries above ``native_target``, entries equal to it)
    in one loop, as LLVM vectorises it (float64 scores, and every score on AVX2 hosts: see _explicit_on_avx512),
    the counts in int32 lanes as the float32 bits for 16- and 32-bit scores."""
    inline_into_callers()
    high = ordered_bits(as_native(scores[i, 0]))
    low = high
    ahead = np.int32(0)
    equal = np.int32(0)
    for j in range(n_classes):
        v = as_native(scores[i, j])
        bits = ordered_bits(v)
        high = max(high, bits)
        low = min(low, bits)
        ahead = np.int32(ahead + np.int32(v > native_target))
        equal = np.int32(equal + np.int32(v == native_target))
    return high, low, ahead, equal


@kernel_step(**LEAF_OPTIONS)
def _proba_scan(scores, i, n_classes, target_and_label):
    """(_extremes_and_counts, then _row_sums) of row i: its extremes' bits and rank counts against the true
    class's score, its sum and its sum of squares but the true class's; ``target_and_label``: (that score in
    the input's precision, the true class).  Two loops over the row, as LLVM vectorises them (float64
    scores, and every score on AVX2 hosts: see _explicit_on_avx512)."""
    inline_into_callers()
    native_target, label = target_and_label
    high, low, ahead, equal = _extremes_and_counts(scores, i, n_classes, native_target)
    total, squares = _row_sums(scores, i, n_classes, label)
    return high, low, ahead, equal, total, squares


@kernel_step(**LEAF_OPTIONS)
def _proba_scan_f32(scores, i, n_classes, target_and_label):
    """_proba_scan of 16- and 32-bit scores in one loop over the row, in explicit vectors: each 16 entries
    read once for the extremes and counts (the bits' maxima and minima in vectors, the counts by population
    counts, the last entries masked, as _top_key_and_counts_f32) and, widened to float64, for the sums,
    in _row_sums' lanes and order (fastce._lanes: 32 entries a step, lane sets A and B, the last entries 16 at a
    time into A, +0.0 past the row's end, the true class's square zeroed in its own group).  The same results,
    bit for bit.

    Before, the sums were a second loop (_row_sums, over the row in cache): 46-58% of the kernel's samples at
    C = 1000 (perf), LLVM keeping one lane set on the stack across its iterations (a store and a reload of
    it every 32 entries).  In cache, one thread (kernel_timing.py, 2 alternated pairs): C = 100 63 -> 31 ns
    a row, C = 1000 257-263 -> 149.
    """
    inline_into_callers()
    native_target, label = target_and_label
    target = column_lanes.splat(native_target)
    every = column_lanes.head(_LANES_F32)
    lowest = column_lanes.lowest_keys()
    highest = column_lanes.highest_keys()
    high, low = lowest, highest
    ahead = equal = 0
    total_a, total_b, squares_a, squares_b = lanes.zero(), lanes.zero(), lanes.zero(), lanes.zero()
    group = 2 * lanes.LANES
    whole = n_classes - n_classes % group
    at = label - label % group  # the label's group (never a group's start for label -1)
    for j in range(0, whole, group):
        _prefetch_next_row(scores, i, j, group)  # as _row_sums
        v = column_lanes.load_scores(scores, i, j)
        u = column_lanes.load_scores(scores, i, j + lanes.LANES)
        high = column_lanes.max_keys(column_lanes.max_keys(high, column_lanes.float_bits(v)),
                                     column_lanes.float_bits(u))
        low = column_lanes.min_keys(column_lanes.min_keys(low, column_lanes.float_bits(v)),
                                    column_lanes.float_bits(u))
        ahead, equal = _rank_counts(v, target, every, ahead, equal)
        ahead, equal = _rank_counts(u, target, every, ahead, equal)
        wide_v = column_lanes.widen(v)
        wide_u = column_lanes.widen(u)
        total_a = lanes.add(total_a, wide_v)
        total_b = lanes.add(total_b, wide_u)
        if j == at:
            wide_v = lanes.zero_lane(wide_v, label - j)
            wide_u = lanes.zero_lane(wide_u, label - j - lanes.LANES)
        squares_a = lanes.fma(wide_v, wide_v, squares_a)  # exact squares: _plus_squares' one FMA
        squares_b = lanes.fma(wide_u, wide_u, squares_b)
    for j in range(whole, n_classes, lanes.LANES):
        n = min(lanes.LANES, n_classes - j)
        v = column_lanes.load_scores_head(scores, i, j, n)  # +0.0 past the row's end
        kept = column_lanes.head(n)
        bits = column_lanes.float_bits(v)
        high = column_lanes.max_keys(high, column_lanes.where(kept, bits, lowest))
        low = column_lanes.min_keys(low, column_lanes.where(kept, bits, highest))
        ahead, equal = _rank_counts(v, target, kept, ahead, equal)
        wide_v = column_lanes.widen(v)
        total_a = lanes.add(total_a, wide_v)
        wide_v = lanes.zero_lane(wide_v, label - j)
        squares_a = lanes.fma(wide_v, wide_v, squares_a)
    return (column_lanes.largest_key(high), column_lanes.smallest_key(low), np.int32(ahead), np.int32(equal),
            lanes.finish(total_a, total_b), lanes.finish(squares_a, squares_b))


_row_proba_scan = _explicit_on_avx512(_proba_scan, _proba_scan_f32)


@kernel_step(**LEAF_OPTIONS)
def _proba_row(scores, i, n_classes, label, ties_to_last):
    """(max, min, sum, sum of squares but the true class's, rank of the true class) of a probability row.

    The extremes in the input's precision, the sums in float64 (_proba_scan:
    a loop of each kind, as LLVM vectorises them, see _logits_row; for 16-
    and 32-bit scores on AVX-512, _proba_scan_f32: one loop in explicit
    vectors, the same results).  The extremes are integer reductions over the
    float bits (see ordered_bits), exact for rows without a sign bit set --
    every valid row; other rows redo them in floats.  A NaN entry makes the
    sum NaN; an inf entry makes an extreme infinite.  The rank's counts
    (see _place_ties) ride along in the extremes' loop, in int32 lanes as the
    float32 bits: one pass over the row fewer (as _logits_row's).
    """
    inline_into_callers()
    native_target = as_native(scores[i, label])
    high, low, ahead, equal, total, squares = _row_proba_scan(scores, i, n_classes, (native_target, label))
    rank = _place_ties(scores, i, n_classes, label, ties_to_last, native_target, ahead, equal)
    native_max = from_ordered_bits(high)
    native_min = from_ordered_bits(low)
    if low < 0:
        # Rare (invalid input): a negative entry, -0.0 or a negative NaN.
        # Float extremes that ignore NaN, for the counters and the message.
        native_max = as_native(scores[i, 0])
        native_min = native_max
        for j in range(n_classes):
            v = as_native(scores[i, j])
            native_max = maxnum(native_max, v)
            native_min = minnum(native_min, v)
    return np.float64(native_max), np.float64(native_min), total, squares, rank


def _plus_squares(scores, acc, v):  # pragma: no cover - replaced by the overload below
    return lanes.add(acc, lanes.mul(v, v))


@overload(_plus_squares, inline="always", jit_options=INLINE_OVERLOAD_OPTIONS)
def _plus_squares_overload(scores, acc, v):
    """acc + v * v lane by lane, ``v`` entries of ``scores`` widened to float64: one FMA for 16- and 32-bit
    scores (their squares are exact in float64: the same bits), a product and a sum for float64 ones."""
    if scores.dtype == types.float64:
        return lambda scores, acc, v: lanes.add(acc, lanes.mul(v, v))
    return lambda scores, acc, v: lanes.fma(v, v, acc)


@kernel_step(**LEAF_OPTIONS)
def _row_sums(scores, i, n_classes, label):
    """(sum of row i, sum of its squares but column ``label``'s), in float64.

    Read straight from the row in the lanes order of fastce._lanes (see
    add_values_and_squares).  The true class's entry is zeroed before
    squaring in its own group only, behind a branch the predictor learns:
    a zeroing in every group cost 15% at C = 100 to 1000.  ``label`` in
    [0, n_classes), or -1 to leave every square in.
    """
    row = scores[i]
    total_a, total_b, squares_a, squares_b = lanes.zero(), lanes.zero(), lanes.zero(), lanes.zero()
    group = 2 * lanes.LANES
    whole = n_classes - n_classes % group
    at = label - label % group  # the label's group
    for j in range(0, whole, group):
        _prefetch_next_row(scores, i, j, group)  # the next row's lines as this one is summed
        v = lanes.load(row, j)
        u = lanes.load(row, j + lanes.LANES)
        total_a = lanes.add(total_a, v)
        total_b = lanes.add(total_b, u)
        if j == at:
            v = lanes.zero_lane(v, label - j)
            u = lanes.zero_lane(u, label - j - lanes.LANES)
        squares_a = _plus_squares(scores, squares_a, v)
        squares_b = _plus_squares(scores, squares_b, u)
    for j in range(whole, n_classes, lanes.LANES):
        v = lanes.load_head(row, j, min(lanes.LANES, n_classes - j))
        total_a = lanes.add(total_a, v)
        v = lanes.zero_lane(v, label - j)
        squares_a = _plus_squares(scores, squares_a, v)
    return lanes.finish(total_a, total_b), lanes.finish(squares_a, squares_b)


@njit(inline="always", **KERNEL_OPTIONS)
def _copy_fixed_width(scores, start, count, width, columns):
    """columns[j, r] = scores[start + r, j] for a block whose row width is the constant ``width``.

    Inlined by numba (``inline="always"``; IR inlining costs compile time at
    every call site, so only the helpers that measurably need it keep it)
    with a literal width, the inner loop unrolls and LLVM vectorises
    the row loop with shuffles (vshufps + vcvtps2pd for width 2, checked in
    the assembly); the general strided copy is scalar (or gathers, slower
    still).  6-12% faster at these widths (benchmarks/kernel_timing.py, A/B).
    Unsigned indices keep numba's negative-index test out of the addresses.
    """
    flat = scores.reshape(scores.shape[0] * scores.shape[1])
    base = np.uint64(start * width)
    for r in range(count):
        k = base + np.uint64(r * width)
        for j in range(width):
            columns[j, r] = as_float64(flat[k + np.uint64(j)])


@kernel_step(**LEAF_OPTIONS)
def _copy_columns(scores, start, count, n_classes, columns):
    """columns[j, r] = scores[start + r, j] as float64 (float64 scores: 16- and 32-bit ones are transposed by
    _transpose_block_f32).

    For the commonest short widths, a width known to the compiler (see
    _copy_fixed_width); else a scalar loop, row by row.
    """
    if n_classes == 2:
        _copy_fixed_width(scores, start, count, 2, columns)
    elif n_classes == 3:
        _copy_fixed_width(scores, start, count, 3, columns)
    elif n_classes == 4:
        _copy_fixed_width(scores, start, count, 4, columns)
    elif n_classes == 8:
        _copy_fixed_width(scores, start, count, 8, columns)
    elif n_classes == 10:
        _copy_fixed_width(scores, start, count, 10, columns)
    else:
        # Row by row: each line of the block read once.  A loop per class re-read the whole block (at
        # C = 32, 128 KiB of float64: more than L1) once per class (measured on float32 scores, before
        # they took _transpose_block_f32: 30.6 -> 17.2 ns a row at C = 32, one thread, /tmp stage timing).
        flat = scores.reshape(scores.shape[0] * n_classes)
        for r in range(count):
            k = np.uint64((start + r) * n_classes)
            for j in range(n_classes):
                columns[np.uint64(j), np.uint64(r)] = as_float64(flat[k + np.uint64(j)])


@kernel_step(**LEAF_OPTIONS)
def _transpose_block_f32(scores, start, count, columns):
    """columns[j, r] = scores[start + r, j] as float32, in tiles of 16 rows x 16 classes transposed in vector
    registers (fastce._column_lanes.transpose_rows): any width up to 32, 16- and 32-bit scores (exact).

    The scalar copies cost 3.5 ns a row at C = 10 (a width known to the
    compiler, see _copy_fixed_width) and 17 at C = 32 (one load and one
    store per entry), one thread: 1.8 and 7.1 here (/tmp stage timing).
    """
    n_classes = scores.shape[1]
    flat = scores.reshape(scores.shape[0] * n_classes)
    for g in range(0, count, column_lanes.LANES):
        for first_class in range(0, n_classes, column_lanes.LANES):
            column_lanes.transpose_rows(flat, start + g, min(column_lanes.LANES, count - g), n_classes, first_class,
                                        columns, g)


@njit(inline="always", **KERNEL_OPTIONS)
def _labels_in_range(labels, start, count, ignore_label, n_classes):
    """Every label of rows start .. start + count - 1 is in [0, n_classes) or the ignored one (NO_LABEL: none)."""
    bad = 0
    for r in range(count):
        label = np.int64(labels[np.uint64(start + r)])
        ignored = (label == ignore_label) & (ignore_label != NO_LABEL)
        known = ((label >= 0) & (label < n_classes)) | ignored
        bad += 0 if known else 1
    return bad == 0


@njit(inline="always", **KERNEL_OPTIONS)
def _labels_and_targets(scores, labels, start, count, ignore_label, label_of, target, label_column):
    """A block's labels (0 for ignored rows: a safe column), as floats too, and its true classes' scores."""
    # Unsigned indices throughout: numba's wraparound test for negative ones
    # keeps a loop scalar (seen in a perf profile of these loops).
    for r in range(count):
        label = np.int64(labels[np.uint64(start + r)])
        label_of[r] = 0 if label == ignore_label else label
        label_column[r] = np.float64(label_of[r])
    for r in range(count):
        target[r] = as_float64(scores[np.uint64(start + r), np.uint64(label_of[r])])


@kernel_step(**LEAF_OPTIONS)
def _walk_columns_narrow(scores, labels, start, count, n_classes, ignore_label, ties_to_last, logits, proba_eps,
                         float32_math, label_of, target, high, low, total, ahead, squares, e_true, rank, label_column,
                         columns, floats):
    """_walk_columns for 16- and 32-bit scores: the block transposed into float32 ``columns`` (exact) in tiles
    of 16 x 16 (_transpose_block_f32); then logits with float32 math take one leaf, 16 rows at a time
    (_logit_columns_f32; two classes too, as the two-class kernel's _two_class_exp_f32), and the rest
    (probabilities, float64 math) the float64 loops (_column_loops: the same bits as from a float64 copy)."""
    _labels_and_targets(scores, labels, start, count, ignore_label, label_of, target, label_column)
    _transpose_block_f32(scores, start, count, columns)
    if float32_math is not None:  # float32 math: logits only (see general_tokens)
        # Without finish, its arguments (kept ... terms) are not read: any arrays of the right types (``floats``:
        # the block's scratch, a 2-D one for ``terms``).
        _logit_columns_f32(columns, target, label_column, n_classes, count, ties_to_last, high, rank, low, total,
                           squares, e_true, False, total, 0.0, True, total, total, floats, floats[:0])
        for r in range(count):
            ahead[r] = np.int64(rank[r])
    else:
        _column_loops(n_classes, count, ties_to_last, logits, proba_eps, label_of, target, high, low, total, ahead,
                      squares, e_true, rank, label_column, columns)


@kernel_step(**LEAF_OPTIONS)
def _walk_columns(scores, labels, start, count, n_classes, ignore_label, ties_to_last, logits, proba_eps,
                  label_of, target, high, low, total, ahead, squares, e_true, rank, label_column, columns):
    """Per-row statistics of a block of short rows of float64 scores, one class at a time (16- and 32-bit
    scores: _walk_columns_narrow).

    For small C a loop along a row is too short to vectorise, so the block is
    first copied, transposed and widened to float64, into ``columns`` (C x
    block_rows, cache-resident), and every later loop runs down the rows
    (SIMD lanes = rows, unit stride).  Each loop writes one array, so that
    LLVM's alias checks stay few and it vectorises them.
    Logits: high = row max, total = sum of exp(z - max) over non-max entries,
    squares = sum of their squares, low = number of entries equal to the max,
    e_true = exp(target - max).
    Probabilities: high / low / total = row max / min / sum, squares = sum
    of p**2 over the classes but the true one.  Both: target = z[y] or
    p[y], ahead = rank of the true class.
    """
    _labels_and_targets(scores, labels, start, count, ignore_label, label_of, target, label_column)
    _copy_columns(scores, start, count, n_classes, columns)
    _column_loops(n_classes, count, ties_to_last, logits, proba_eps, label_of, target, high, low, total, ahead,
                  squares, e_true, rank, label_column, columns)


@kernel_step(**LEAF_OPTIONS)
def _column_loops(n_classes, count, ties_to_last, logits, proba_eps, label_of, target, high, low, total, ahead,
                  squares, e_true, rank, label_column, columns):
    """_walk_columns's statistics over the transposed block ``columns``, in float64: one loop per class and
    statistic.  ``columns`` float64, or float32 holding 16- or 32-bit scores exactly (each entry widened as
    it is read: the same values, the same bits)."""
    for r in range(count):
        high[r] = np.float64(columns[0, r])
    for j in range(1, n_classes):
        for r in range(count):
            high[r] = maxnum(high[r], np.float64(columns[j, r]))
    # The rank counted in float64 (exact for these counts) against the label
    # as a float: every operand is a float64 lane, so the loop vectorises
    # without the packing and widening of int64 and boolean masks, which cost
    # a quarter of the short-row kernel (perf profile at C = 2 and 10).
    # Column 0 starts the counts (as for the exps, see _exp_columns).
    for r in range(count):
        v = np.float64(columns[0, r])
        t = target[r]
        # Equal scores rank ahead on one side of the true class only.
        tie_ahead = 0.0 > label_column[r] if ties_to_last else 0.0 < label_column[r]
        rank[r] = 1.0 if (v > t) | ((v == t) & tie_ahead) else 0.0
    for j in range(1, n_classes):
        column = np.float64(j)
        for r in range(count):
            v = np.float64(columns[j, r])
            t = target[r]
            tie_ahead = column > label_column[r] if ties_to_last else column < label_column[r]
            rank[r] += 1.0 if (v > t) | ((v == t) & tie_ahead) else 0.0
    for r in range(count):
        ahead[r] = np.int64(rank[r])
    if proba_eps is not None:  # probabilities (see general_tokens)
        for r in range(count):
            low[r] = np.inf
            total[r] = 0.0
            squares[r] = 0.0
        for j in range(n_classes):
            for r in range(count):
                v = np.float64(columns[j, r])
                low[r] = minnum(low[r], v)
                total[r] += v
                squares[r] += 0.0 if j == label_of[r] else v * v
    if logits is not None:
        # The count of max entries, the sums of exp(z - max) over the others
        # and of their squares, and exp(target - max), in one wide-vector
        # leaf (see exp_sums).
        _exp_columns(columns, high, target, n_classes, count, low, total, squares, e_true)


def _narrow_like(example, value):  # pragma: no cover - replaced by the overload below
    return value


@overload(_narrow_like, inline="always", jit_options=INLINE_OVERLOAD_OPTIONS)
def _narrow_like_overload(example, value):
    """``value`` (a float64 holding a value of ``example``'s type exactly) in ``example``'s type."""
    if example == types.float32:
        return lambda example, value: np.float32(value)
    return lambda example, value: value


@kernel_step(**LEAF_OPTIONS)
def _first_index_of(scores, i, n_classes, value):
    """The first column of row i equal to ``value`` (the argmax, for the row max, a value of the row); -1 if none.

    A min-reduction over the whole row rather than an early exit: it
    vectorises, which matters for long rows (a scan stopping at the argmax
    is scalar and reads half the row on average).  Compared in the input's
    own precision with int32 columns: 16 lanes for 16- and 32-bit scores
    (float64 compares and int64 columns gave 8; at C = 32000 this scan of
    every wrong row cost diagnose ~8% over evaluate).
    """
    inline_into_callers()
    native_value = _narrow_like(as_native(scores[i, 0]), value)
    stop = np.int32(n_classes)
    first = stop
    for j in range(n_classes):
        first = min(first, np.int32(j) if as_native(scores[i, np.uint64(j)]) == native_value else stop)
    return np.int64(first) if first < stop else np.int64(-1)


@kernel_step(**LEAF_OPTIONS)
def _first_index_of_f32(scores, i, n_classes, value):
    """_first_index_of of 16- and 32-bit scores, 16 entries at a time in explicit vectors, stopping at the first
    vector that holds ``value`` (its first lane from the comparison mask): the argmax of a wrong row for
    diagnose, which read the whole row before (about half of it now, for an argmax anywhere), and no
    horizontal minimum.  The same result."""
    inline_into_callers()
    target = column_lanes.splat(_narrow_like(as_native(scores[i, 0]), value))
    found = np.int64(-1)
    j = 0
    while j < n_classes:
        left = min(_LANES_F32, n_classes - j)
        if left == _LANES_F32:
            hits = column_lanes.equal(column_lanes.load_scores(scores, i, j), target)
        else:
            hits = column_lanes.both(column_lanes.equal(column_lanes.load_scores_head(scores, i, j, left), target),
                                     column_lanes.head(left))
        lane = column_lanes.first_lane(hits)
        if lane < _LANES_F32:
            found = j + lane
            break
        j += _LANES_F32
    return found


_argmax_index = _explicit_on_avx512(_first_index_of, _first_index_of_f32)


@njit(inline="always", **KERNEL_OPTIONS)
def _probability_like_columns(columns, high, status, count, n_classes, sum_tolerance, lowest, total):
    """(rows, one-hot rows) of a walked block of logits that look like probabilities (see _probability_like_row).

    One compare per row (a row max above 1 settles it).  When some rows
    have a max <= 1 (small logits, e.g. two classes of scale ~1, often do),
    a vectorised pass of row sums over the columns, still in cache, which
    real logits almost never bring within the tolerance of 1; only the rows
    left check their minimum, one by one.  (Walking the candidate rows one
    by one instead, with a branch per row of the block, took 3% of the
    short-row kernel at C = 10, where about one row in a hundred has a max
    <= 1: perf.)  ``lowest`` and ``total`` are scratch rows the caller
    overwrites later.
    """
    candidates = 0
    for r in range(count):
        candidates += (status[r] == ROW_OK) & (high[r] <= 1.0)
    if candidates == 0:
        return 0, 0
    for r in range(count):
        total[r] = columns[0, r]
    for j in range(1, n_classes):
        for r in range(count):
            total[r] += columns[j, r]
    left = 0
    for r in range(count):
        lowest[r] = 1.0 if (status[r] == ROW_OK) & (high[r] <= 1.0) & (abs(total[r] - 1.0) <= sum_tolerance) else 0.0
        left += lowest[r] == 1.0
    if left == 0:
        return 0, 0
    like = 0
    one_hot = 0
    for r in range(count):
        if lowest[r] == 1.0:
            row_lowest = columns[0, r]
            for j in range(n_classes):
                row_lowest = min(row_lowest, columns[j, r])
            if row_lowest >= 0.0:
                like += 1
                one_hot += high[r] == 1.0
    return like, one_hot


@kernel_step(**LEAF_OPTIONS)
def _probability_like_row(scores, i, n_classes, sum_tolerance):
    """Whether a long logits row (with a max <= 1) holds only values in [0, 1] summing to 1.

    Such rows are almost certainly probabilities given as logits; the door
    warns when every row is one (and not all are one-hot, which hand-made
    logits and hard predictions are too).  The row is in cache (just walked).
    """
    inline_into_callers()
    lowest = as_float64(scores[i, 0])
    for j in range(n_classes):
        lowest = min(lowest, as_float64(scores[i, j]))
    # Label -1: no square left out.  An int64, not the literal -1: the literal would compile _row_sums again.
    total, _ = _row_sums(scores, i, n_classes, np.int64(-1))
    return (lowest >= 0.0) and abs(total - 1.0) <= sum_tolerance


@njit(inline="always", **KERNEL_OPTIONS)
def _row_weights(sample_weight, class_weight, start, count, label_of, row_weight):
    """Each row's weight, its sample weight (1 without) times its class's weight (1 without), into
    ``row_weight`` (unsigned indices: see _walk_columns)."""
    weighted_rows = sample_weight.shape[0] != 0
    weighted_classes = class_weight.shape[0] != 0
    for r in range(count):
        w = np.float64(sample_weight[np.uint64(start + r)]) if weighted_rows else 1.0
        if weighted_classes:
            w *= np.float64(class_weight[np.uint64(label_of[r])])
        row_weight[r] = w


@kernel_step(**LEAF_OPTIONS)
def _short_rows_status(labels, sample_weight, class_weight, start, count, ignore_label, proba_eps, sum_tolerance,
                       label_of, target, high, low, total, value, rest, status, weight, fsums, icounts, b):
    """The per-row status, loss inputs and weights of a block walked by columns.

    Vectorised loops over the block (no branch per row); the counters of rare
    rows (non-finite, probabilities out of range) are written by a second,
    scalar loop only when the block holds such rows.
    """
    weighted_rows = sample_weight.shape[0] != 0
    weighted_classes = class_weight.shape[0] != 0
    if proba_eps is None:  # logits
        for r in range(count):
            value[r] = high[r] - target[r]
            rest[r] = total[r] + (low[r] - 1.0)
        for r in range(count):
            ok = rest[r] == rest[r]
            status[r] = ROW_OK if ok else ROW_NONFINITE
    else:
        for r in range(count):
            # NaN anywhere makes the sum NaN; an inf entry makes the max or min infinite.
            ok = (total[r] == total[r]) & (high[r] - high[r] == 0.0) & (low[r] - low[r] == 0.0)
            status[r] = ROW_OK if ok else ROW_NONFINITE
        for r in range(count):
            value[r] = min(max(target[r], proba_eps), 1.0 - proba_eps)
    # Selects rather than branches, unsigned indices (see _walk_columns), and
    # the common unweighted case apart: these loops vectorise.
    for r in range(count):
        status[r] = ROW_IGNORED if np.int64(labels[np.uint64(start + r)]) == ignore_label else status[r]
    if weighted_rows or weighted_classes:
        _row_weights(sample_weight, class_weight, start, count, label_of, weight)
        for r in range(count):
            weight[r] = weight[r] if status[r] == ROW_OK else 0.0
    else:
        for r in range(count):
            weight[r] = 1.0 if status[r] == ROW_OK else 0.0
    bad = 0
    for r in range(count):
        bad += status[r] == ROW_NONFINITE
    if proba_eps is not None:
        lowest = np.inf
        highest = -np.inf
        for r in range(count):
            lowest = min(lowest, low[r] if status[r] == ROW_OK else np.inf)
        for r in range(count):
            highest = max(highest, high[r] if status[r] == ROW_OK else -np.inf)
        fsums[b, F_MIN] = lowest
        fsums[b, F_MAX] = highest
        for r in range(count):
            bad += (status[r] == ROW_OK) & (abs(total[r] - 1.0) > sum_tolerance)
        bad += (lowest < 0.0) | (highest > 1.0)
    if bad:
        for r in range(count):
            i = start + r
            if status[r] == ROW_NONFINITE:
                _note(icounts, b, C_NONFINITE, FIRST_NONFINITE, i)
            elif proba_eps is not None and status[r] == ROW_OK:
                if low[r] < 0.0:
                    _note(icounts, b, C_BELOW0, FIRST_BELOW0, i)
                if high[r] > 1.0:
                    _note(icounts, b, C_ABOVE1, FIRST_ABOVE1, i)
                if abs(total[r] - 1.0) > sum_tolerance:
                    _note(icounts, b, C_UNNORMALIZED, FIRST_UNNORMALIZED, i)


# Rows of a block's ``terms`` scratch: each block sum's per-row terms (see store_sums).
T_LOSS, T_BRIER, T_HIT, T_HIT2, T_W2, T_W2LOSS, T_W2LOSS2, T_W2BRIER, T_W2BRIER2, T_WEIGHT = range(10)
N_TERMS = 10
# Length of a row of _two_class_block's ``terms``, a literal (see there): every block fits.
TERM_ROW = MAX_BLOCK_ROWS + SCRATCH_PAD


@njit(inline="always", **KERNEL_OPTIONS)
def _kept_loss(w, loss):
    """A row's loss as its moments take it: 0 for a row not counted (w = 0) or whose weighted loss is infinite."""
    loss = loss if w != 0.0 else 0.0
    return 0.0 if w * loss == np.inf else loss


@njit(inline="always", **KERNEL_OPTIONS)
def _block_terms(count, weight, loss_of, brier, terms, unit_weights):
    """The per-row terms of a block's loss, Brier and moment sums (terms[T_LOSS ... T_W2BRIER2]).

    A zero weight removes the row, even when its loss is infinite (0 * inf
    would be NaN; PyTorch returns that NaN); an infinite weighted loss is
    left out of the loss sum (counted apart) and of the loss moments.  The
    expressions are _two_class_block's, bit for bit.  ``unit_weights``:
    the terms of M_W2, M_W2LOSS and M_W2BRIER are not written (store_sums
    copies those sums).

    One output a loop: the rows of ``terms`` and the inputs are rows of one
    scratch buffer, so LLVM vectorises a loop only behind run-time checks
    that no two of them overlap, and with the seven outputs of a single
    loop those checks passed its limit: that loop ran scalar (perf: 9% of
    the short-row kernel at C = 10, 3% of the long-row one at C = 100).
    """
    for r in range(count):
        w = weight[r]
        weighted = w * loss_of[r] if w != 0.0 else 0.0
        terms[T_LOSS, r] = 0.0 if weighted == np.inf else weighted
    for r in range(count):
        w = weight[r]
        terms[T_BRIER, r] = w * (brier[r] if w != 0.0 else 0.0)
    for r in range(count):
        w = weight[r]
        loss = _kept_loss(w, loss_of[r])
        terms[T_W2LOSS2, r] = (w * w) * (loss * loss)
    for r in range(count):
        w = weight[r]
        bri = brier[r] if w != 0.0 else 0.0
        terms[T_W2BRIER2, r] = (w * w) * (bri * bri)
    if unit_weights:
        return
    for r in range(count):
        terms[T_W2, r] = weight[r] * weight[r]
    for r in range(count):
        w = weight[r]
        terms[T_W2LOSS, r] = (w * w) * _kept_loss(w, loss_of[r])
    for r in range(count):
        w = weight[r]
        terms[T_W2BRIER, r] = (w * w) * (brier[r] if w != 0.0 else 0.0)


@njit(inline="always", **KERNEL_OPTIONS)
def has_unit_weights(sample_weight, class_weight):
    """No sample or class weights: every row weight is then 0 or 1 (see store_sums)."""
    return sample_weight.shape[0] == 0 and class_weight.shape[0] == 0


@njit(inline="always", **KERNEL_OPTIONS)
def store_sums(weight, terms, count, fsums, b, moments, unit_weights, loss_sum):
    """Block b's weight, loss, Brier and moment sums (see M_W2...), each an ordered_sum of its terms.

    fastce._lanes fixes the order in the source: the same bits in every
    compiled copy, on every machine, and from the general and two-class paths.
    ``loss_sum``: the ordered_sum of terms[T_LOSS] (the caller's).
    ``unit_weights``: no sample or class weights, so every row weight is 0
    or 1: then w^2 = w and the terms of M_W2, M_W2LOSS and M_W2BRIER are
    those of F_WEIGHT, F_LOSS and F_BRIER, row by row (see _block_terms):
    their sums are copied, not taken again (the same bits).
    """
    store_sums_of_weight(lanes.ordered_sum(weight, count), terms, count, fsums, b, moments, unit_weights, loss_sum)


@njit(inline="always", **KERNEL_OPTIONS)
def store_sums_of_weight(weight_sum, terms, count, fsums, b, moments, unit_weights, loss_sum):
    """store_sums given the block's weight sum (a caller that counted it: 0/1 weights sum to their count,
    exactly, which is the ordered_sum's bits)."""
    fsums[b, F_WEIGHT] = weight_sum
    fsums[b, F_LOSS] = loss_sum
    fsums[b, F_BRIER] = lanes.ordered_sum(terms[T_BRIER], count)
    if unit_weights:
        fsums[b, moments + M_W2] = fsums[b, F_WEIGHT]
        fsums[b, moments + M_W2LOSS] = loss_sum
        fsums[b, moments + M_W2BRIER] = fsums[b, F_BRIER]
    else:
        fsums[b, moments + M_W2] = lanes.ordered_sum(terms[T_W2], count)
        fsums[b, moments + M_W2LOSS] = lanes.ordered_sum(terms[T_W2LOSS], count)
        fsums[b, moments + M_W2BRIER] = lanes.ordered_sum(terms[T_W2BRIER], count)
    fsums[b, moments + M_W2LOSS2] = lanes.ordered_sum(terms[T_W2LOSS2], count)
    fsums[b, moments + M_W2BRIER2] = lanes.ordered_sum(terms[T_W2BRIER2], count)


@kernel_step(**KERNEL_OPTIONS)
def _new_scratch(block_rows, n_classes, scores):
    """A task's per-row scratch: 15 + N_TERMS float64 rows, 3 int64 rows and the transposed block of short rows
    (float64 for float64 scores, float32 for 16- and 32-bit ones: see _walk_by_columns).  Zeroed: the 16-row
    leaf of float32 math reads past a block's last row (see _logit_columns_f32).

    Rows (see the unpacking in the block functions): value (logits: max - target;
    proba: clipped p[y]), rest (logits: sum of exp over non-max entries),
    weight (0 for rows not counted), loss_of, brier, p_true, p_top, target,
    high, low, total, squares, e_true, rank (short rows: the true class's
    rank, counted in floats), label_column (short rows: the label as a
    float); ahead, label_of, status.
    """
    # Per-row scratch, one row of a 2-D buffer each.  The padding keeps the
    # rows from starting 4 KiB apart: loops touching several of them at
    # the same index would otherwise hit one L1 set and 4K-alias (block
    # rows are often 512 float64 = 4 KiB).  Same for the transposed block.
    floats = np.zeros((15 + N_TERMS, block_rows + SCRATCH_PAD))
    # int64 like the labels and as wide as the float64 scratch: loops that
    # mix them vectorise without packing (an int8 status kept the
    # ignored-label loop scalar, seen in a perf profile).
    integers = np.empty((3, block_rows + SCRATCH_PAD), dtype=np.int64)
    columns = np.zeros((min(n_classes, COLUMN_WALK_MAX_CLASSES), block_rows + SCRATCH_PAD),
                       dtype=_column_dtype(scores))
    return floats, integers, columns


def _column_dtype(scores):  # pragma: no cover - replaced by the overload below
    return np.float64


@overload(_column_dtype, inline="always", jit_options=INLINE_OVERLOAD_OPTIONS)
def _column_dtype_overload(scores):
    """The transposed block's dtype: float64 for float64 scores, float32 (exact) for 16- and 32-bit ones."""
    if scores.dtype == types.float64:
        return lambda scores: np.float64
    return lambda scores: np.float32



@kernel_step(**LEAF_OPTIONS)
def _logits_block_f32(labels, sample_weight, class_weight, ignore_label, ties_to_last, top_k, sum_tolerance, b,
                      start, count, floats, integers, columns, fsums, icounts, keep_outputs):
    """Block b of short logits rows (three classes or more, float32 math: see finishes_in_registers),
    transposed into ``columns`` with its targets and labels in ``floats`` and ``integers`` (by
    short_block_in_registers), walked and finished 16 rows at a time in registers (_logit_columns_f32 with
    ``finish``); False, with nothing written to fsums, icounts or the per-row outputs, for a rare block (a
    non-finite row or an infinite loss), which the general path (score_tasks_short) then walks and records.
    ``keep_outputs``: each row's statistics and argmax into the scratch rows OUTPUT_ROWS too (see
    _write_row_outputs, and compare's pair inputs).

    The general path (_walk_short_block, _finish_block) computes the same
    rows with the same operations from the block's scratch in some 25
    vectorised loops, each reading and writing rows of it: their loads and
    stores cost as much as the walk itself at C = 10.  The block sums are
    taken from the same terms by the same ordered sums (_top_k_sums,
    store_sums): the same fsums and icounts, bit for bit
    (tests/test_short_block_in_registers.py).  Compiled once for every
    score dtype (it sees the float32 block only).
    """
    row_weight, weight, kept = floats[0], floats[2], floats[5]  # row_weight, kept: free rows here
    target, high, low = floats[7], floats[8], floats[9]
    total, squares, e_true, rank, label_column = floats[10], floats[11], floats[12], floats[13], floats[14]
    terms = floats[15:]
    outputs = floats[OUTPUT_ROWS:OUTPUT_ROWS + (ROW_STATS_COLUMNS if keep_outputs else 0)]
    label_of = integers[1]
    for r in range(count):
        kept[r] = 0.0 if labels[np.uint64(start + r)] == ignore_label else 1.0
    unit_weights = has_unit_weights(sample_weight, class_weight)
    if not unit_weights:
        _row_weights(sample_weight, class_weight, start, count, label_of, row_weight)
    nonfinite, infinite, like, one_hot, counted = _logit_columns_f32(
        columns, target, label_column, columns.shape[0], count, ties_to_last, high, rank, low, total, squares, e_true,
        True, kept, sum_tolerance, unit_weights, row_weight, weight, terms, outputs)
    if nonfinite or infinite:
        return False
    moments = F_TOPK + top_k.shape[0]
    _top_k_sums(top_k, weight, rank, terms, count, fsums, b, moments, unit_weights)
    store_sums(weight, terms, count, fsums, b, moments, unit_weights, lanes.ordered_sum(terms[T_LOSS], count))
    icounts[b, C_ROWS] = counted
    icounts[b, C_IGNORED] = count - counted
    icounts[b, C_PROBA_LIKE] = like
    icounts[b, C_ONE_HOT_LIKE] = one_hot
    return True


def finishes_in_registers(scores, mode, float32_math) -> bool:
    """Whether a call's short-row blocks are finished in registers (score_tasks_in_registers, with or without
    per-row outputs): logits of three to COLUMN_WALK_MAX_CLASSES classes, 16- or 32-bit, in float32 math."""
    return mode == MODE_LOGITS and in_registers_shape(scores.shape[1], scores.dtype.itemsize, float32_math)


def in_registers_shape(n_classes: int, itemsize: int, float32_math) -> bool:
    """Logits rows of this width and kernel-view item size go to score_tasks_in_registers, which range-checks
    the labels as it reads them (see score_blocks' on_bad_labels)."""
    return bool(float32_math) and itemsize <= 4 and 2 < n_classes <= COLUMN_WALK_MAX_CLASSES


def _walk_by_columns(scores, labels, start, count, n_classes, ignore_label, ties_to_last, logits, proba_eps,
                     float32_math, label_of, target, high, low, total, ahead, squares, e_true, rank, label_column,
                     columns, floats):  # pragma: no cover - replaced by the overload below
    pass


@overload(_walk_by_columns, inline="always", jit_options=INLINE_OVERLOAD_OPTIONS)
def _walk_by_columns_overload(scores, labels, start, count, n_classes, ignore_label, ties_to_last, logits,
                              proba_eps, float32_math, label_of, target, high, low, total, ahead, squares, e_true,
                              rank, label_column, columns, floats):
    """_walk_columns (a float64 block: float64 scores) or _walk_columns_narrow (a float32 one), chosen when numba
    types the kernel: each dtype's kernel compiles one walk."""
    if columns.dtype == types.float64:
        def walk(scores, labels, start, count, n_classes, ignore_label, ties_to_last, logits, proba_eps,
                 float32_math, label_of, target, high, low, total, ahead, squares, e_true, rank, label_column, columns,
                 floats):
            _walk_columns(scores, labels, start, count, n_classes, ignore_label, ties_to_last, logits, proba_eps,
                          label_of, target, high, low, total, ahead, squares, e_true, rank, label_column, columns)
    else:
        def walk(scores, labels, start, count, n_classes, ignore_label, ties_to_last, logits, proba_eps,
                 float32_math, label_of, target, high, low, total, ahead, squares, e_true, rank, label_column, columns,
                 floats):
            _walk_columns_narrow(scores, labels, start, count, n_classes, ignore_label, ties_to_last, logits, proba_eps,
                                 float32_math, label_of, target, high, low, total, ahead, squares, e_true, rank,
                                 label_column, columns, floats)
    return walk


# Inlined by numba (typed in its caller, not compiled on its own): it only calls the walk's pieces, and a
# function compiled on its own is optimised and code-generated again inside every caller, with its callees
# (numba links them in).  A first short-row evaluate compiles 0.6-0.9 s sooner, each further dtype 0.6 s
# (benchmarks/cold_start.py).  Not for _finish_block (dtype-independent: compiled once, not per dtype) nor
# the walks' own loops (_walk_columns, _walk_long_block: both compiled slower inlined, measured).
@njit(inline="always", **KERNEL_OPTIONS)
def _walk_short_block(scores, labels, sample_weight, class_weight, ignore_label, ties_to_last, logits, proba_eps,
                      sum_tolerance, row_pred, b, start, count, floats, integers, columns, fsums, icounts,
                      float32_math):
    """Walk block b of short rows (C <= COLUMN_WALK_MAX_CLASSES) by columns into the scratch, for _finish_block.

    ``columns``: the transposed block, float64 for float64 scores, float32
    for 16- and 32-bit ones (see _new_scratch, _walk_by_columns).
    ``float32_math``: 16- and 32-bit logits in float32 arithmetic (each
    row's loss within a few float32 ulp).
    """
    n_classes = scores.shape[1]
    keep_pred = row_pred.shape[0] != 0  # the argmax: the diagnostics need it, comparisons do not
    value, rest, weight, loss_of, brier = floats[0], floats[1], floats[2], floats[3], floats[4]
    p_true, p_top, target, high, low = floats[5], floats[6], floats[7], floats[8], floats[9]
    total, squares, e_true, rank, label_column = floats[10], floats[11], floats[12], floats[13], floats[14]
    ahead, label_of, status = integers[0], integers[1], integers[2]
    _walk_by_columns(scores, labels, start, count, n_classes, ignore_label, ties_to_last, logits, proba_eps,
                     float32_math, label_of, target, high, low, total, ahead, squares, e_true, rank, label_column,
                     columns, floats)
    _short_rows_status(labels, sample_weight, class_weight, start, count, ignore_label, proba_eps, sum_tolerance,
                       label_of, target, high, low, total, value, rest, status, weight, fsums, icounts, b)
    if logits is not None:
        # loss_of and brier: scratch here, written for every row in _finish_block.
        icounts[b, C_PROBA_LIKE], icounts[b, C_ONE_HOT_LIKE] = _probability_like_columns(
            columns, high, status, count, n_classes, sum_tolerance, loss_of, brier
        )
    if keep_pred:
        for r in range(count):
            i = start + r
            if status[r] != ROW_OK:
                row_pred[i] = -1
            elif ahead[r] == 0 and not ties_to_last:
                row_pred[i] = label_of[r]
            else:
                row_pred[i] = _argmax_index(scores, i, n_classes, high[r])


@kernel_step(**LEAF_OPTIONS)
def _walk_long_block(scores, labels, sample_weight, class_weight, ignore_label, ties_to_last, logits, proba_eps,
                     sum_tolerance, row_pred, b, start, count, floats, integers, columns, fsums, icounts,
                     float32_math, exp_chunk64):
    """Walk block b of long rows row by row into the scratch (one read of each row)."""
    n_classes = scores.shape[1]
    keep_pred = row_pred.shape[0] != 0
    weighted_rows = sample_weight.shape[0] != 0
    weighted_classes = class_weight.shape[0] != 0
    value, rest, weight, loss_of, brier = floats[0], floats[1], floats[2], floats[3], floats[4]
    p_true, p_top, target, high, low = floats[5], floats[6], floats[7], floats[8], floats[9]
    total, squares, e_true, rank, label_column = floats[10], floats[11], floats[12], floats[13], floats[14]
    ahead, label_of, status = integers[0], integers[1], integers[2]
    for r in range(count):
        i = start + r
        label = np.int64(labels[i])
        if label == ignore_label:
            status[r] = ROW_IGNORED
            weight[r] = 0.0
            # finite scratch for the vector loops after the walk
            target[r] = high[r] = low[r] = squares[r] = 0.0
            if keep_pred:
                row_pred[i] = -1
            continue
        if logits is not None:  # (see general_tokens: numba compiles one of these two paths)
            row_target = as_float64(scores[i, label])
            shift, row_rest, row_ahead, row_squares, row_at_max, row_max, ok = _logits_row(
                scores, i, n_classes, row_target, label, ties_to_last, float32_math, exp_chunk64
            )
            if ok and row_max <= 1.0:  # rare for logits: one compare per row
                if _probability_like_row(scores, i, n_classes, sum_tolerance):
                    icounts[b, C_PROBA_LIKE] += 1
                    icounts[b, C_ONE_HOT_LIKE] += row_max == 1.0
            value[r] = shift
            rest[r] = row_rest
            ahead[r] = row_ahead
            squares[r] = row_squares
            target[r], high[r], low[r] = row_target, row_max, row_at_max
        if proba_eps is not None:
            row_target = as_float64(scores[i, label])
            row_max, row_min, row_sum, row_squares, ahead[r] = _proba_row(scores, i, n_classes, label, ties_to_last)
            target[r], high[r], squares[r] = row_target, row_max, row_squares
            # In this branch, where row_min is defined: testing it after
            # the branches join lost the "value below 0" count in the
            # float32 kernel (numba's SSA of a variable defined on one
            # path; tests/test_evaluate.py::test_proba_sign_bit_entries).
            # NaN anywhere makes the sum NaN; an inf entry makes the max or
            # min infinite.  (A finite sum may still overflow: that row is
            # then reported as not summing to one, not as non-finite.)
            ok = row_sum == row_sum and row_max - row_max == 0.0 and row_min - row_min == 0.0
            if ok:
                if row_min < 0.0:
                    _note(icounts, b, C_BELOW0, FIRST_BELOW0, i)
                if row_max > 1.0:
                    _note(icounts, b, C_ABOVE1, FIRST_ABOVE1, i)
                if abs(row_sum - 1.0) > sum_tolerance:
                    _note(icounts, b, C_UNNORMALIZED, FIRST_UNNORMALIZED, i)
                fsums[b, F_MIN] = min(fsums[b, F_MIN], row_min)
                fsums[b, F_MAX] = max(fsums[b, F_MAX], row_max)
            value[r] = min(max(row_target, proba_eps), 1.0 - proba_eps)
        if ok:
            status[r] = ROW_OK
            w = 1.0
            if weighted_rows:
                w = np.float64(sample_weight[i])
            if weighted_classes:
                w *= np.float64(class_weight[label])
            weight[r] = w
        else:
            status[r] = ROW_NONFINITE
            weight[r] = 0.0
            _note(icounts, b, C_NONFINITE, FIRST_NONFINITE, i)
        if keep_pred:
            # Only the diagnostics need the argmax itself; rank 0 (ties to
            # the first index) means it is the true class.
            if not ok:
                row_pred[i] = -1
            elif ahead[r] == 0 and not ties_to_last:
                row_pred[i] = label
            else:
                row_pred[i] = _argmax_index(scores, i, n_classes, row_max)


@njit(inline="always", **KERNEL_OPTIONS)
def _top_k_sums(top_k, weight, ahead, terms, count, fsums, b, moments, unit_weights):
    """Block b's top-k sums: the weights of the rows ranked below each k (``ahead``: the rank, an integer or
    an integral float), and their squares' (rows T_HIT, T_HIT2 of ``terms`` as scratch)."""
    for k in range(top_k.shape[0]):
        limit = top_k[k]
        for r in range(count):
            hit = weight[r] if ahead[r] < limit else 0.0
            terms[T_HIT, r] = hit
            terms[T_HIT2, r] = hit * weight[r]
        fsums[b, F_TOPK + k] = lanes.ordered_sum(terms[T_HIT], count)
        # Weights of 0 or 1: hit * w is the hit itself (see store_sums).
        fsums[b, moments + M_W2TOPK + k] = (fsums[b, F_TOPK + k] if unit_weights
                                            else lanes.ordered_sum(terms[T_HIT2], count))


@kernel_step(**LEAF_OPTIONS)
def _finish_block(n_classes, logits, proba_eps, top_k, row_losses, row_stats, b, start, count, floats, integers,
                  fsums, icounts, unit_weights):
    """The vectorised finish of block b over its scratch: losses, Brier, sums, moments and counters.

    ``unit_weights``: no sample or class weights (see store_sums).
    """
    n_k = top_k.shape[0]
    keep_losses = row_losses.shape[0] != 0
    keep_stats = row_stats.shape[0] != 0
    value, rest, weight, loss_of, brier = floats[0], floats[1], floats[2], floats[3], floats[4]
    p_true, p_top, target, high, low = floats[5], floats[6], floats[7], floats[8], floats[9]
    total, squares, e_true, rank, label_column = floats[10], floats[11], floats[12], floats[13], floats[14]
    terms = floats[15:]
    ahead, label_of, status = integers[0], integers[1], integers[2]
    inverse = total  # free after the walk: 1 / (1 + rest) of logits rows
    # Loops of one kind each (see _logits_row); weight[r] is 0 for
    # rows not counted, which keeps their scratch out of every sum.
    # Brier = sum_{j != y} p_j^2 + (1 - p_y)^2; from logits, with
    # e_j = exp(z_j - max) and S = 1 + rest, 1 - p_y is formed as
    # (S - e_y) / S without cancellation: when the true class holds
    # the max, S - e_y is ``rest`` itself.
    if logits is not None:  # (see general_tokens: numba compiles one of these two paths)
        # exp(z[y] - max) of every row in one wide-vector loop (a scalar
        # exp per row costs more than the row's other work at C ~ 100;
        # short rows have it from _walk_columns), then the true class's
        # own square out of the squares: it is a max entry (counted in
        # low = at_max) or one of those summed.
        if n_classes > COLUMN_WALK_MAX_CLASSES:
            _exp_true(target, high, count, e_true)
        for r in range(count):
            squares[r] += low[r] - e_true[r] * e_true[r]
        # 1 / S once per row, for the Brier term and log1p's correction
        # (see _losses): a float64 division each cost 2 cycles per row here.
        # Rows not OK (NaN rest) are not counted.
        for r in range(count):
            inverse[r] = reciprocal(1.0 + (rest[r] if status[r] == ROW_OK else 0.0))
        for r in range(count):
            total_r = 1.0 + rest[r]
            off = rest[r] if value[r] == 0.0 else total_r - e_true[r]
            brier[r] = ((squares[r] + off * off) * inverse[r]) * inverse[r]
        if keep_stats:
            for r in range(count):
                p_true[r] = e_true[r] / (1.0 + rest[r])
                p_top[r] = 1.0 / (1.0 + rest[r])
    if proba_eps is not None:
        for r in range(count):
            miss = 1.0 - target[r]
            brier[r] = squares[r] + miss * miss
        if keep_stats:
            for r in range(count):
                p_true[r] = target[r]
                p_top[r] = high[r]
    _losses(proba_eps, count, status, value, rest, inverse, loss_of)
    n_ok = 0
    n_ignored = 0
    n_inf = 0
    n_heavy = 0
    for r in range(count):
        n_ok += status[r] == ROW_OK
        n_ignored += status[r] == ROW_IGNORED
        # Infinite loss, or a finite one overflowing with its weight: left out of the loss sum, which is inf.
        weighted_inf = (weight[r] != 0.0) & (weight[r] * loss_of[r] == np.inf)
        n_inf += weighted_inf
        # The latter are weights too large (as weighted sums that overflow: the doors refuse them), not a row
        # whose loss is infinite (FIRST_INF_LOSS; a mean of inf, said of no row, or of the wrong one).
        n_heavy += weighted_inf & (loss_of[r] != np.inf)
    # Unsigned row indices in the per-row outputs: with signed ones LLVM kept
    # numba's negative-index wraparound, a scatter per vector of rows.
    if keep_losses:
        for r in range(count):
            ok = status[r] == ROW_OK
            w = weight[r]
            row_losses[np.uint64(start + r)] = (0.0 if w == 0.0 else w * loss_of[r]) if ok else (
                0.0 if status[r] == ROW_IGNORED else np.nan
            )
    if keep_stats:
        store_row_stats(row_stats, start, count, status, ROW_OK, loss_of, p_true, p_top, brier, ahead)
    moments = F_TOPK + n_k
    _top_k_sums(top_k, weight, ahead, terms, count, fsums, b, moments, unit_weights)
    _block_terms(count, weight, loss_of, brier, terms, unit_weights)
    store_sums(weight, terms, count, fsums, b, moments, unit_weights, lanes.ordered_sum(terms[T_LOSS], count))
    if n_inf:
        icounts[b, C_INF_LOSS] = n_inf
    if n_inf > n_heavy:
        # Rare: find the first row with an infinite loss for the message.
        for r in range(count):
            if weight[r] != 0.0 and loss_of[r] == np.inf:
                icounts[b, FIRST_INF_LOSS] = start + r
                break
    if n_heavy:
        icounts[b, C_OVERFLOW] += 1  # a block whose weighted sums overflow, from its first row (see fold_blocks)
        icounts[b, FIRST_OVERFLOW] = start
    icounts[b, C_ROWS] = n_ok
    icounts[b, C_IGNORED] = n_ignored


@kernel_step(**LEAF_OPTIONS)
def _two_class_exp(z0, z1):
    """As _exp_columns for two classes: the row's one exp (float64 math)."""
    high = maxnum(z0, z1)
    below0 = z0 - high
    below1 = z1 - high
    x = below1 if below0 >= 0.0 else below0
    x = x if (below0 == below0) & (below1 == below1) else np.nan
    return exp_nonpositive(-np.inf if x >= 0.0 else x)


@kernel_step(**LEAF_OPTIONS)
def _two_class_exp_f32(z0, z1):
    """_two_class_exp with float32 math (float32 z0, z1: the entries' values, exact), as
    _logit_columns_f32 takes a row of two classes: exp_difference_f32 of the entry below the max (the
    max's own exp is 0 there, its column sum the other's exp alone), with its factor 2**EXP_BIAS_F32.

    Either difference NaN (a NaN entry, or inf - inf at a +inf max) makes it NaN, as _two_class_exp:
    the general path's sum is NaN for those rows.
    """
    high = maxnum(z0, z1)
    below0 = z0 - high
    below1 = z1 - high
    e, _ = exp_difference_f32(z1 if below0 >= np.float32(0.0) else z0, high)
    return e if (below0 == below0) & (below1 == below1) else np.float32(np.nan)


def two_class_exps(flat, start, count, float32_math, exps32, cells):  # pragma: no cover - replaced by the overload
    pass


@overload(two_class_exps, inline="always", jit_options=INLINE_OVERLOAD_OPTIONS)
def _two_class_exps_overload(flat, start, count, float32_math, exps32, cells):
    """Each row's exp (rows start .. start + count - 1 of the two-class logits ``flat``) into the loss row of
    ``cells``, in the math its precision takes: float32 for 16- and 32-bit logits with ``float32_math`` True
    (_two_class_exp_f32, as the general path's _logit_columns_f32), float64 for float64 logits or
    ``float32_math`` None (_two_class_exp, as its _column_loops).  Chosen by the types when numba compiles, as
    _row_exp_sums.

    The float32 exps go through ``exps32`` (float32, at least ``count`` long) in a loop of float32 values only:
    widened in the same loop, LLVM left it scalar on AVX2 (a float64 store sized the vectors by float64).
    """
    if flat.dtype == types.float64 or isinstance(float32_math, types.NoneType):
        def float64_math(flat, start, count, float32_math, exps32, cells):
            for r in range(count):
                i = np.uint64(start + r)
                cells[np.uint64(T_LOSS * TERM_ROW) + np.uint64(r)] = _two_class_exp(
                    as_float64(flat[np.uint64(2) * i]), as_float64(flat[np.uint64(2) * i + np.uint64(1)]))

        return float64_math

    def float32_math_of_input(flat, start, count, float32_math, exps32, cells):
        for r in range(count):
            i = np.uint64(start + r)
            exps32[r] = _two_class_exp_f32(as_native(flat[np.uint64(2) * i]),
                                           as_native(flat[np.uint64(2) * i + np.uint64(1)]))
        for r in range(count):
            cells[np.uint64(T_LOSS * TERM_ROW) + np.uint64(r)] = np.float64(exps32[r]) * _UNBIAS  # exact

    return float32_math_of_input


@kernel_step(**LEAF_OPTIONS)
def _two_class_row(z0, z1, e, label, ignore_label, ties_to_last):
    """Everything _walk_columns, _short_rows_status and _finish_block compute for one row of
    two logits (float64 values of the input's entries), with the same operations in the same
    order, so that each row's loss, Brier term and rank are those of the general path, bit for bit;
    ``e``: the row's exp, two_class_exp of its entries (float32 or float64 math, as the general path's walk).

    Returns (ok, ignored, finite, loss, brier, other class ahead of the true one, row max, p(true class),
    p(predicted class)): ok means finite, not ignored and labelled 0 or 1.  Inlined into its callers by
    LLVM: called, it kept their loop scalar (and drops what a caller does not use, such as p(true class)
    for evaluate).
    """
    inline_into_callers()
    # A label other than 0, 1 and the ignored one (left unchecked by the door, see score_blocks' on_bad_labels)
    # makes its row neither counted nor ignored: its block is rare, and score_blocks checks the labels first.
    # NO_LABEL stands for "no ignored label": a row labelled so is not ignored but out of range.
    ignored = (label == ignore_label) & (ignore_label != NO_LABEL)
    known = (label == 0) | (label == 1) | ignored
    second = (label == 1) & ~ignored  # the true class is column 1 (ignored rows read column 0)
    target = z1 if second else z0
    other = z0 if second else z1
    high = maxnum(z0, z1)
    below0 = z0 - high
    below1 = z1 - high
    top0 = below0 >= 0.0
    top1 = below1 >= 0.0
    at_max = (1.0 if top0 else 0.0) + (1.0 if top1 else 0.0)
    e_true = 1.0 if target - high == 0.0 else e
    # As _short_rows_status.
    value = high - target
    rest = e + (at_max - 1.0)
    finite = rest == rest
    ok = finite & ~ignored & known
    # The rank as _walk_columns counts it: the other column is ahead when
    # higher, or equal on the winning side of a tie.
    tie_ahead = ties_to_last if not second else not ties_to_last
    ahead = (other > target) | ((other == target) & tie_ahead)
    # As _finish_block and _losses.
    squares = e * e + (at_max - e_true * e_true)
    a = rest if ok else 0.0
    inverse = reciprocal(1.0 + a)
    total = 1.0 + rest
    off = rest if value == 0.0 else total - e_true
    brier = ((squares + off * off) * inverse) * inverse
    u = 1.0 + a
    corrected = log_positive(u) - ((u - 1.0) - a) * inverse
    loss = value + (a if u == 1.0 else corrected)
    p_true = e_true / total  # as _pair_inputs reads it from the general path's scratch
    p_top = 1.0 / total  # as _finish_block's row statistics
    return ok, ignored, finite, loss, brier, ahead, high, p_true, p_top


@kernel_step(**LEAF_OPTIONS)
def _two_class_proba_row(p0, p1, label, ignore_label, ties_to_last, proba_eps):
    """_two_class_row for a row of two probabilities (float64 values of the input's entries): what
    _column_loops, _short_rows_status, _finish_block and _losses compute for it, with the same operations in
    the same order (the same bits).

    Returns (ok, ignored, loss, brier, other class ahead of the true one, row max, row min, row sum): ok means
    finite, not ignored and labelled 0 or 1.  A row that is OK but out of [0, 1] or off a sum of 1 makes its
    block rare (see _two_class_loop): the general path counts and names it.
    """
    inline_into_callers()
    ignored = (label == ignore_label) & (ignore_label != NO_LABEL)  # as _two_class_row
    known = (label == 0) | (label == 1) | ignored
    second = (label == 1) & ~ignored
    target = p1 if second else p0
    other = p0 if second else p1
    high = maxnum(p0, p1)
    low = minnum(minnum(np.inf, p0), p1)
    total = (0.0 + p0) + p1
    ok = (total == total) & (high - high == 0.0) & (low - low == 0.0) & ~ignored & known
    tie_ahead = ties_to_last if not second else not ties_to_last
    ahead = (other > target) | ((other == target) & tie_ahead)
    # The squares but the true class's, from 0 up in column order (ignored rows: column 0 is the "true" one).
    squares = (0.0 + (0.0 if not second else p0 * p0)) + (0.0 if second else p1 * p1)
    miss = 1.0 - target
    brier = squares + miss * miss
    loss = -log_positive(min(max(target, proba_eps), 1.0 - proba_eps) if ok else 0.5)
    return ok, ignored, loss, brier, ahead, high, low, total


@njit(inline="always", **KERNEL_OPTIONS)
def _two_class_row_weights(labels, sample_weight, class_weight, start, count, row_weight):
    """Each row's weight (sample weight times its class's weight) into ``row_weight``, in a loop of its own:
    a weight load under a run-time condition kept _two_class_loop scalar."""
    weighted_classes = class_weight.shape[0] != 0
    w0 = np.float64(class_weight[0]) if weighted_classes else 1.0
    w1 = np.float64(class_weight[1]) if weighted_classes else 1.0
    if sample_weight.shape[0] != 0:
        for r in range(count):
            w = np.float64(sample_weight[np.uint64(start + r)])
            row_weight[r] = w * (w1 if labels[np.uint64(start + r)] == 1 else w0) if weighted_classes else w
    else:
        for r in range(count):
            row_weight[r] = w1 if labels[np.uint64(start + r)] == 1 else w0


# Inlined by numba: each call site passes a constant ``weighted``, and the
# inlined copy is a loop without a flag test, which LLVM vectorises.
@njit(inline="always", **KERNEL_OPTIONS)
def _two_class_loop(flat, labels, ignore_label, ties_to_last, sum_tolerance, proba_eps, start, count, row_weight,
                    cells, weighted, pair_inputs, row_outputs):
    """_two_class_block's loop over its rows: the per-row terms into ``cells`` (rows T_... of TERM_ROW), and
    (rows OK + _COUNT_SCALE * rows ignored, probability-like rows + _COUNT_SCALE * those with a max of 1,
    counted rows ranked first).

    ``proba_eps`` (None: logits, whose exps are in the loss row; a float: probabilities, by
    _two_class_proba_row, with its clipping): for probabilities the second count is of the OK rows out of
    [0, 1] or off a sum of 1 (which make the block rare), and each OK row's min and max go to rows
    N_TERMS and N_TERMS + 1 of ``cells`` (+inf and -inf for the others), for the block's extremes.

    ``weighted`` False (no sample or class weights): every row weight is 0
    or 1, so the weight and hit sums are counts and the w^2 terms those of
    w (store_sums' unit_weights): only the loss, Brier and squared terms
    are written, four stores a row instead of ten.
    """
    ok_ignored = 0.0  # rows OK + _COUNT_SCALE * rows ignored
    flags = 0.0  # logits: probability-like rows + _COUNT_SCALE * those with a max of 1; probabilities: rare rows
    n_hit = 0
    # Each row's exp is in the loss row (see _two_class_block); its loss overwrites it.
    for r in range(count):
        i = np.uint64(start + r)
        label = np.int64(labels[i])
        z0 = as_float64(flat[np.uint64(2) * i])
        z1 = as_float64(flat[np.uint64(2) * i + np.uint64(1)])
        u = np.uint64(r)
        if proba_eps is None:  # logits (numba prunes the other branch: see general_tokens)
            e = cells[np.uint64(T_LOSS * TERM_ROW) + u]
            ok, ignored, finite, loss, brier, ahead, high, p_true, p_top = _two_class_row(z0, z1, e, label,
                                                                                         ignore_label, ties_to_last)
            # Probability-like rows (see _probability_like_columns).
            like = ok & (high <= 1.0) & (z0 >= 0.0) & (z1 >= 0.0) & (abs((z0 + z1) - 1.0) <= sum_tolerance)
            flagged = (1.0 if like else 0.0) + (_COUNT_SCALE if like & (high == 1.0) else 0.0)
        else:
            ok, ignored, loss, brier, ahead, high, low, total = _two_class_proba_row(z0, z1, label, ignore_label,
                                                                                    ties_to_last, proba_eps)
            cells[np.uint64(N_TERMS * TERM_ROW) + u] = low if ok else np.inf
            cells[np.uint64((N_TERMS + 1) * TERM_ROW) + u] = high if ok else -np.inf
            # As _short_rows_status's rare rows: out of [0, 1], or a sum off 1.
            flagged = 1.0 if ok & ((low < 0.0) | (high > 1.0) | (abs(total - 1.0) > sum_tolerance)) else 0.0
        if pair_inputs is not None:  # pruned by numba where pair_inputs is None
            cells[np.uint64((N_TERMS + IN_LOSS) * TERM_ROW) + u] = loss if ok else np.nan
            cells[np.uint64((N_TERMS + IN_BRIER) * TERM_ROW) + u] = brier if ok else np.nan
            cells[np.uint64((N_TERMS + IN_RANK) * TERM_ROW) + u] = (1.0 if ahead else 0.0) if ok else np.nan
            cells[np.uint64((N_TERMS + IN_P_TRUE) * TERM_ROW) + u] = p_true if ok else np.nan
        if row_outputs is not None:  # and these two, for the row statistics (see _two_class_block)
            cells[np.uint64((N_TERMS + PAIR_INPUTS) * TERM_ROW) + u] = p_top if ok else np.nan
            # The argmax, first index on ties (as _first_index_of): both entries are finite in a row counted.
            cells[np.uint64((N_TERMS + PAIR_INPUTS + 1) * TERM_ROW) + u] = (0.0 if z0 == high else 1.0) if ok else -1.0
        w = (row_weight[r] if weighted else 1.0) if ok else 0.0
        counted = w != 0.0
        # Infinite weighted losses make the loss sum infinite: the block is then rare.
        weighted_loss = w * loss if counted else 0.0
        bri = brier if counted else 0.0
        cells[np.uint64(T_LOSS * TERM_ROW) + u] = weighted_loss
        cells[np.uint64(T_BRIER * TERM_ROW) + u] = w * bri
        hit = 0.0 if ahead else w
        # The moments as _block_terms (no infinite w * loss here).
        w2 = w * w
        loss_m = loss if counted else 0.0
        cells[np.uint64(T_W2LOSS2 * TERM_ROW) + u] = w2 * (loss_m * loss_m)
        cells[np.uint64(T_W2BRIER2 * TERM_ROW) + u] = w2 * (bri * bri)
        if weighted:
            cells[np.uint64(T_WEIGHT * TERM_ROW) + u] = w
            cells[np.uint64(T_HIT * TERM_ROW) + u] = hit
            cells[np.uint64(T_HIT2 * TERM_ROW) + u] = hit * w
            cells[np.uint64(T_W2 * TERM_ROW) + u] = w2
            cells[np.uint64(T_W2LOSS * TERM_ROW) + u] = w2 * loss_m
            cells[np.uint64(T_W2BRIER * TERM_ROW) + u] = w2 * bri
        else:
            n_hit += counted & ~ahead
        # Counts: sums of small integers, exact in any order.
        ok_ignored = add_reassoc(ok_ignored, (1.0 if ok else 0.0) + (_COUNT_SCALE if ignored else 0.0))
        flags = add_reassoc(flags, flagged)
    return ok_ignored, flags, n_hit


# _two_class_block counts two kinds of rows in one float sum: one + _COUNT_SCALE * other
# (exact: blocks hold at most MAX_BLOCK_ROWS <= 2**20 rows).
_COUNT_SCALE = 2.0 ** 20


@kernel_step(**LEAF_OPTIONS)
def _two_class_block(scores, labels, sample_weight, class_weight, ignore_label, ties_to_last, top_k, sum_tolerance,
                     float32_math, proba_eps, b, start, count, row_weight, exps32, terms, fsums, icounts,
                     pair_inputs=None, row_outputs=None):
    """Block b of two-class logits (or probabilities: ``proba_eps`` a float, see _two_class_proba_row) in one
    vectorised loop over its rows; False (nothing written) for a rare block.

    The general short-row path (_walk_short_block, _finish_block) runs some
    30 loops over a block's scratch, each vectorised, and their loads and
    stores cost more than the math at two classes (10 ns per row in cache;
    this kernel: 5).  Every row is computed as there (_two_class_row, the
    same operations in the same order), its terms written to ``terms`` and
    summed as there (ordered_sum): a block's sums are the general path's,
    bit for bit.

    Rare blocks -- a non-finite row, or an infinite weighted loss; for
    probabilities also a row out of [0, 1] or off a sum of 1 -- are left to
    the general path (it records the first such row): False.
    Two classes: the true class's rank is 0 or 1, so top-k for k >= 2 is
    every counted row.  LLVM vectorises this loop only with few
    reductions: the counters are paired in one sum each (see _COUNT_SCALE)
    and the rare rows are found from the counts and the loss sum.

    ``pair_inputs`` (True in compare's kernel; None for evaluate, whose copy
    then has no such code): also each row's loss, Brier term, rank and
    p(true class) into ``terms`` rows N_TERMS + IN_LOSS ... IN_P_TRUE, NaN
    for rows not counted, as compare_kernels._pair_inputs reads them from the
    general path.  ``terms``: N_TERMS (+ PAIR_INPUTS) rows of TERM_ROW.

    ``row_outputs`` (None, or (row_stats, row_pred): diagnose's per-row
    statistics and argmax, as _finish_block and _walk_short_block write
    them, bit for bit): the pair inputs, p(predicted class) and the argmax
    into ``terms`` rows N_TERMS + IN_* ... N_TERMS + PAIR_INPUTS + 1 (which
    it must have), copied to the outputs when the block is not rare.
    """
    prefer_wide_vectors()
    inline_into_callers()  # one copy of its sums: see tests/test_one_copy.py
    flat = scores.reshape(scores.shape[0] * 2)  # a literal row width: see _copy_fixed_width
    # The terms' rows a literal TERM_ROW apart: LLVM then
    # sees that the rows' stores never overlap, where a run-time row stride
    # needs a run-time check per pair of rows -- with compare's pair inputs,
    # more checks than LLVM allows, and the loop stayed scalar.
    cells = terms.reshape(terms.shape[0] * TERM_ROW)
    unit = has_unit_weights(sample_weight, class_weight)
    # One copy of the loop per case, each without a flag test inside (see _two_class_loop).
    if row_outputs is not None:
        pair_inputs = True  # the pair inputs are four of the row statistics
    # The exps in a loop of their own, parked in the loss row (each row's
    # loss overwrites its exp in _two_class_loop): in one loop, each 8 rows'
    # exp, log and reciprocal made one dependency chain longer than the core
    # could overlap from one group of rows to the next (perf: the samples
    # along the log's Horner chain).  In cache, one thread, C = 2
    # (kernel_timing, 3 alternated pairs): 5.5-6.5 -> 4.9-6.1 ns a row.
    # Once for both copies of the loop below: one copy of it to compile.
    if proba_eps is None:  # logits (see general_tokens)
        two_class_exps(flat, start, count, float32_math, exps32, cells)
    if unit:
        ok_ignored, flags, n_hit = _two_class_loop(flat, labels, ignore_label, ties_to_last, sum_tolerance,
                                                          proba_eps, start, count, row_weight, cells, False,
                                                          pair_inputs, row_outputs)
    else:
        _two_class_row_weights(labels, sample_weight, class_weight, start, count, row_weight)
        ok_ignored, flags, n_hit = _two_class_loop(flat, labels, ignore_label, ties_to_last, sum_tolerance,
                                                          proba_eps, start, count, row_weight, cells, True,
                                                          pair_inputs, row_outputs)
    loss_sum = lanes.ordered_sum(terms[T_LOSS], count)
    n_ignored = math.floor(ok_ignored / _COUNT_SCALE)
    n_ok = ok_ignored - n_ignored * _COUNT_SCALE
    if n_ok + n_ignored != count or not math.isfinite(loss_sum):
        return False
    if proba_eps is not None:  # probabilities: rows out of range or off a sum of 1 are rare
        if flags != 0.0:
            return False
        # The extremes of the OK rows, as _short_rows_status (exact in any order).
        lowest = np.inf
        highest = -np.inf
        for r in range(count):
            lowest = min(lowest, terms[N_TERMS, r])
        for r in range(count):
            highest = max(highest, terms[N_TERMS + 1, r])
        fsums[b, F_MIN] = lowest
        fsums[b, F_MAX] = highest
    n_k = top_k.shape[0]
    moments = F_TOPK + n_k
    if unit:
        # Weights 0 or 1: the weight and hit sums are the counts (exactly the ordered sums' bits).
        store_sums_of_weight(np.float64(n_ok), terms, count, fsums, b, moments, True, loss_sum)
        hits = np.float64(n_hit)
        hits2 = hits
    else:
        store_sums(terms[T_WEIGHT], terms, count, fsums, b, moments, False, loss_sum)
        hits = lanes.ordered_sum(terms[T_HIT], count)
        hits2 = lanes.ordered_sum(terms[T_HIT2], count)
    for k in range(n_k):
        # Two classes: rank 0 or 1, so top-k for k >= 2 is every counted row
        # (the general path's terms for it are the weights and their squares).
        fsums[b, F_TOPK + k] = hits if top_k[k] == 1 else (fsums[b, F_WEIGHT] if top_k[k] > 1 else 0.0)
        fsums[b, moments + M_W2TOPK + k] = hits2 if top_k[k] == 1 else (fsums[b, moments + M_W2] if top_k[k] > 1
                                                                          else 0.0)
    icounts[b, C_ROWS] = np.int64(n_ok)
    icounts[b, C_IGNORED] = np.int64(n_ignored)
    if proba_eps is None:  # logits: the probability-like rows (see _probability_like_columns)
        n_one_hot = math.floor(flags / _COUNT_SCALE)
        icounts[b, C_PROBA_LIKE] = np.int64(flags - n_one_hot * _COUNT_SCALE)
        icounts[b, C_ONE_HOT_LIKE] = np.int64(n_one_hot)
    if row_outputs is not None:
        row_stats, row_pred = row_outputs
        for r in range(count):
            u = np.uint64(start + r)
            row_stats[u, S_LOSS] = terms[N_TERMS + IN_LOSS, r]
            row_stats[u, S_P_TRUE] = terms[N_TERMS + IN_P_TRUE, r]
            row_stats[u, S_P_TOP] = terms[N_TERMS + PAIR_INPUTS, r]
            row_stats[u, S_BRIER] = terms[N_TERMS + IN_BRIER, r]
            row_stats[u, S_RANK] = terms[N_TERMS + IN_RANK, r]
            row_pred[u] = np.int64(terms[N_TERMS + PAIR_INPUTS + 1, r])
    return True


@kernel(**KERNEL_OPTIONS)
def score_tasks_short(scores, labels, sample_weight, class_weight, ignore_label, top_k, ties_to_last, logits,
                      proba_eps, sum_tolerance, row_losses, row_stats, row_pred, nblocks, block_rows, blocks_per_task,
                      fsums, icounts, float32_math, blocks, claims, first_task, task_step):
    """The tasks of score_blocks (see there) for short rows that this thread claims (``claims``), by the general
    path (_walk_short_block, _finish_block).

    One thread's share of a call (see fastce._parallel.claim: the tasks go
    to whichever thread is free, ``first_task`` and ``task_step`` are not
    used).  ``blocks``: empty (blocks 0 .. nblocks - 1), or the blocks to
    walk, in tasks of ``blocks_per_task`` of them (the rare blocks that a
    fast kernel, score_tasks_two_class or score_tasks_in_registers, left).
    Short and long rows, and the fast paths, are kernels of their own, so
    that a first use compiles only the one it needs.
    """
    floats, integers, columns = _new_scratch(block_rows, scores.shape[1], scores)
    listed = blocks.shape[0]
    n_tasks = ((listed if listed else nblocks) + blocks_per_task - 1) // blocks_per_task
    while True:
        task = claim(claims)  # once this one's blocks are done: a faster thread takes more
        if task >= n_tasks:
            break
        first = task * blocks_per_task
        for k in range(first, min(listed if listed else nblocks, first + blocks_per_task)):
            b = blocks[k] if listed else k
            _reset_block(fsums, icounts, b)
            start = b * block_rows
            count = min(block_rows, scores.shape[0] - start)
            _walk_short_block(scores, labels, sample_weight, class_weight, ignore_label, ties_to_last, logits,
                              proba_eps, sum_tolerance, row_pred, b, start, count, floats, integers, columns, fsums,
                              icounts, float32_math)
            _finish_block(scores.shape[1], logits, proba_eps, top_k, row_losses, row_stats, b, start, count, floats,
                          integers, fsums, icounts, has_unit_weights(sample_weight, class_weight))


@kernel(**KERNEL_OPTIONS)
def score_tasks_in_registers(scores, labels, sample_weight, class_weight, ignore_label, top_k, ties_to_last,
                             sum_tolerance, row_losses, row_stats, row_pred, nblocks, block_rows, blocks_per_task,
                             fsums, icounts, claims, first_task, task_step):
    """score_tasks_short for the blocks finished in registers (see finishes_in_registers, _logits_block_f32).

    A rare block is left with ``icounts[b, C_ROWS] == RARE_BLOCK`` for
    score_blocks to hand to score_tasks_short.  A kernel of its own: the
    first evaluate of short float32 logits (nearly always without a rare
    block) compiles this one only, not the general path as well (C = 10,
    empty cache: 13.7-16.6 -> 4.7-5.4 s, benchmarks/cold_start.py;
    docs/performance.md "Start-up cost").
    """
    floats, integers, columns = _new_scratch(block_rows, scores.shape[1], scores)
    keep_outputs = row_stats.shape[0] != 0 or row_pred.shape[0] != 0
    n_tasks = (nblocks + blocks_per_task - 1) // blocks_per_task
    while True:
        task = claim(claims)  # see score_tasks_short
        if task >= n_tasks:
            break
        first_block = task * blocks_per_task
        for b in range(first_block, min(nblocks, first_block + blocks_per_task)):
            _reset_block(fsums, icounts, b)
            start = b * block_rows
            count = min(block_rows, scores.shape[0] - start)
            if short_block_in_registers(scores, labels, sample_weight, class_weight, ignore_label, ties_to_last,
                                        top_k, sum_tolerance, b, start, count, floats, integers, columns, fsums,
                                        icounts, keep_outputs):
                _write_row_outputs(floats, start, count, row_losses, row_stats, row_pred)
            else:
                icounts[b, C_ROWS] = RARE_BLOCK


# Steps without references (LEAF_OPTIONS), not inlined by numba: inlined into their reference-counting kernels,
# each view of the scratch they take (labels and targets, the outputs' rows) took and dropped a reference, atomic
# operations on counters both threads share: 3.8% of the C = 10 kernel's samples (perf, one thread), 0.1% now.
@kernel_step(**LEAF_OPTIONS)
def short_block_in_registers(scores, labels, sample_weight, class_weight, ignore_label, ties_to_last, top_k,
                             sum_tolerance, b, start, count, floats, integers, columns, fsums, icounts, keep_outputs):
    """Block b of score_tasks_in_registers (and of compare's kernel): its labels and targets into the scratch rows
    _walk_short_block reads them from (label_of, target, label_column), the block transposed, then
    _logits_block_f32 (True when it finished the block).  False at once, before a target is read, when a label is
    neither a class index nor the ignored one (the door may leave the range check to this kernel: see
    score_blocks' on_bad_labels)."""
    if not _labels_in_range(labels, start, count, ignore_label, scores.shape[1]):
        return False
    _labels_and_targets(scores, labels, start, count, ignore_label, integers[1], floats[7], floats[14])
    _transpose_block_f32(scores, start, count, columns)
    return _logits_block_f32(labels, sample_weight, class_weight, ignore_label, ties_to_last, top_k, sum_tolerance,
                             b, start, count, floats, integers, columns, fsums, icounts, keep_outputs)


@njit(inline="always", **KERNEL_OPTIONS)
def store_row_stats(row_stats, start, count, status, ok_status, loss, p_true, p_top, brier, rank):
    """Rows start .. start + count - 1 of ``row_stats`` (columns S_LOSS ... S_RANK) from a block's per-row
    values, NaN for the rows whose ``status`` is not ``ok_status`` (the general path's status codes, or the
    in-registers path's 1.0 for a counted row).  Unsigned row indices: with signed ones LLVM kept numba's
    negative-index wraparound, a scatter per vector of rows."""
    for r in range(count):
        ok = status[r] == ok_status
        u = np.uint64(start + r)
        row_stats[u, S_LOSS] = loss[r] if ok else np.nan
        row_stats[u, S_P_TRUE] = p_true[r] if ok else np.nan
        row_stats[u, S_P_TOP] = p_top[r] if ok else np.nan
        row_stats[u, S_BRIER] = brier[r] if ok else np.nan
        row_stats[u, S_RANK] = np.float64(rank[r]) if ok else np.nan


@kernel_step(**LEAF_OPTIONS)  # see short_block_in_registers
def _write_row_outputs(floats, start, count, row_losses, row_stats, row_pred):
    """A block finished in registers (with its outputs, for row_stats and row_pred): score_blocks' per-row
    outputs (each empty, or written here as _finish_block and _walk_short_block write them: every row of such
    a block is counted or ignored).  Unsigned row indices, as in _finish_block."""
    kept, rank, terms = floats[5], floats[13], floats[15:]
    outputs = floats[OUTPUT_ROWS:OUTPUT_ROWS + ROW_STATS_COLUMNS]
    if row_losses.shape[0] != 0:
        for r in range(count):
            # The weighted loss, 0 for a zero weight or an ignored row: the T_LOSS term (no infinite one here).
            row_losses[np.uint64(start + r)] = terms[T_LOSS, r]
    if row_stats.shape[0] != 0:
        # Every row of such a block is counted (kept: 1.0) or ignored.
        store_row_stats(row_stats, start, count, kept, 1.0, outputs[S_LOSS], outputs[S_P_TRUE], outputs[S_P_TOP],
                        outputs[S_BRIER], rank)
    if row_pred.shape[0] != 0:
        for r in range(count):
            row_pred[np.uint64(start + r)] = np.int64(outputs[OUT_PRED, r]) if kept[r] != 0.0 else -1


@kernel(**KERNEL_OPTIONS)
def score_tasks_two_class(scores, labels, sample_weight, class_weight, ignore_label, top_k, ties_to_last,
                          sum_tolerance, float32_math, proba_eps, row_losses, row_stats, row_pred, nblocks, block_rows,
                          blocks_per_task, fsums, icounts, claims, first_task, task_step):
    """score_tasks_short for two-class logits (or probabilities: ``proba_eps`` a float) with no per-row loss,
    by _two_class_block.

    A rare block (see there) is left with ``icounts[b, C_ROWS] == RARE_BLOCK``
    for score_blocks to hand to score_tasks_short: a kernel of its own, so
    that a first call compiles only what its rows need (the general path in
    this kernel cost 1.1 s more on a first call at C = 2).  ``row_stats``
    and ``row_pred``: None (evaluate; numba prunes their code), or both
    given (diagnose: see _two_class_block's row_outputs).
    """
    row_weight = np.empty(block_rows)
    exps32 = np.empty(block_rows, dtype=np.float32)  # see two_class_exps
    # See _two_class_block: its rows, and for diagnose the row statistics', for probabilities the extremes'.
    terms = np.empty((N_TERMS + (PAIR_INPUTS + 2 if row_stats is not None else (0 if proba_eps is None else 2)),
                      TERM_ROW))
    n_tasks = (nblocks + blocks_per_task - 1) // blocks_per_task
    while True:
        task = claim(claims)  # see score_tasks_short
        if task >= n_tasks:
            break
        first_block = task * blocks_per_task
        for b in range(first_block, min(nblocks, first_block + blocks_per_task)):
            _reset_block(fsums, icounts, b)
            start = b * block_rows
            count = min(block_rows, scores.shape[0] - start)
            if row_stats is None:
                done = _two_class_block(scores, labels, sample_weight, class_weight, ignore_label, ties_to_last,
                                        top_k, sum_tolerance, float32_math, proba_eps, b, start, count, row_weight,
                                        exps32, terms, fsums, icounts)
            else:
                done = _two_class_block(scores, labels, sample_weight, class_weight, ignore_label, ties_to_last,
                                        top_k, sum_tolerance, float32_math, proba_eps, b, start, count, row_weight,
                                        exps32, terms, fsums, icounts, None, (row_stats, row_pred))
            if not done:
                icounts[b, C_ROWS] = RARE_BLOCK


@kernel(**KERNEL_OPTIONS)
def score_tasks_long(scores, labels, sample_weight, class_weight, ignore_label, top_k, ties_to_last, logits,
                     proba_eps, sum_tolerance, row_losses, row_stats, row_pred, nblocks, block_rows, blocks_per_task,
                     fsums, icounts, float32_math, claims, first_task, task_step):
    """score_tasks_short's twin for long rows (C > COLUMN_WALK_MAX_CLASSES)."""
    floats, integers, columns = _new_scratch(block_rows, scores.shape[1], scores)
    exp_chunk64 = np.empty(EXP_SCRATCH)  # see exp_sums
    n_tasks = (nblocks + blocks_per_task - 1) // blocks_per_task
    while True:
        task = claim(claims)  # see score_tasks_short
        if task >= n_tasks:
            break
        first_block = task * blocks_per_task
        for b in range(first_block, min(nblocks, first_block + blocks_per_task)):
            _reset_block(fsums, icounts, b)
            start = b * block_rows
            count = min(block_rows, scores.shape[0] - start)
            _walk_long_block(scores, labels, sample_weight, class_weight, ignore_label, ties_to_last, logits,
                             proba_eps, sum_tolerance, row_pred, b, start, count, floats, integers, columns, fsums,
                             icounts, float32_math, exp_chunk64)
            _finish_block(scores.shape[1], logits, proba_eps, top_k, row_losses, row_stats, b, start, count, floats,
                          integers, fsums, icounts, has_unit_weights(sample_weight, class_weight))


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
    row_stats,
    row_pred,
    nblocks,
    block_rows,
    blocks_per_task,
    fsums,
    icounts,
    float32_math=False,
    on_bad_labels=None,
):
    """Per-block sums for an (N, C) score matrix, rows [0, nblocks * block_rows).

    mode MODE_LOGITS: loss = logsumexp(z) - z[y], computed with the row max
    subtracted; -inf entries are masked classes; a row holding NaN or +inf (or
    only -inf) is non-finite.
    mode MODE_PROBA: loss = -log(clip(p[y], eps, 1 - eps)) (scikit-learn's
    log_loss); also counts rows with values outside [0, 1] and rows whose sum
    differs from 1 by more than ``sum_tolerance``.  The Brier score uses the
    probabilities as given (softmax of the logits in MODE_LOGITS).  In
    MODE_LOGITS, rows in [0, 1] summing to 1 within ``sum_tolerance`` are
    counted in C_PROBA_LIKE (and C_ONE_HOT_LIKE when their max is 1): the
    door warns when every row looks like probabilities.

    The true class's rank is the number of classes ahead of it: strictly
    higher scores, plus equal scores at a lower index (``ties_to_last``
    False: numpy/torch argmax, first index wins) or at a higher index (True:
    scikit-learn's top_k_accuracy_score).  A row is top-k correct when its
    rank is below k.  ``row_losses`` (empty, or length N) receives each row's
    weighted loss (NaN for non-finite rows, 0 for ignored rows).
    ``row_stats`` (empty, or N x ROW_STATS_COLUMNS) and ``row_pred`` (empty,
    or N) receive, for the diagnostics and comparisons, each row's unweighted
    loss, p(true class), p(predicted class), Brier term and rank of the true
    class (columns S_LOSS ... S_RANK), and its predicted class (the argmax,
    first index on ties); NaN and -1 for non-finite and ignored rows.  Each
    is written only when given (the argmax costs a second look at the rows
    whose true class is not the top one).
    ``fsums`` has ``fsums_columns(len(top_k))`` columns (sums, top-k hits,
    then the second moments: see M_W2).
    ``float32_math`` (16- and 32-bit scores; ignored for float64 ones): the
    exps of logits rows in float32 arithmetic, each row's loss within a
    few float32 ulp (see _exp_sums_f32, _logit_columns_f32 and
    _two_class_exp_f32); False keeps float64 math.

    ``on_bad_labels``: the labels' range check, when the door left it to the
    kernel (Reader.validate_once): the two-class kernel and
    score_tasks_in_registers read every label, and a row labelled other than
    a class index or ``ignore_label`` makes its block rare (the latter
    before it reads a target by that label); the check is called (and
    raises the door's error) before the general path reads any rare block's
    labels, or before anything when neither fast kernel applies.

    Each block first walks its rows (one read of each) into per-row scratch,
    then a second, vectorised loop over the scratch takes the logs and sums.
    Blocks are grouped into tasks of ``blocks_per_task`` for the threads;
    the grouping changes nothing in the per-block results.
    """
    # Two-class logits without per-row losses, and with both or neither of the row statistics and the argmax
    # (evaluate, diagnose), and two-class probabilities without any (evaluate, log_loss): the two-class kernel.  Short logits of three classes or more in float32 math: the
    # kernel that finishes them in registers.  Each leaves its rare blocks to the general path.
    outputs = row_stats.shape[0] != 0
    two_class = scores.shape[1] == 2 and row_losses.shape[0] == 0 and (
        outputs == (row_pred.shape[0] != 0) if mode == MODE_LOGITS else not (outputs or row_pred.shape[0]))
    in_registers = not two_class and finishes_in_registers(scores, mode, float32_math)
    if on_bad_labels is not None and not (two_class or in_registers):
        on_bad_labels()
    n_tasks = -(-nblocks // blocks_per_task)
    # The general kernels take the mode and the math as types: see general_tokens.
    logits, eps, math = general_tokens(mode, proba_eps, float32_math)
    if two_class:
        stats, pred = (row_stats, row_pred) if outputs else (None, None)
        run_tasks(score_tasks_two_class,
                  (scores, labels, sample_weight, class_weight, ignore_label, top_k, ties_to_last, sum_tolerance,
                   math, eps, row_losses, stats, pred, nblocks, block_rows, blocks_per_task, fsums, icounts,
                   new_claims()),
                  n_tasks)
    elif in_registers:
        run_tasks(score_tasks_in_registers,
                  (scores, labels, sample_weight, class_weight, ignore_label, top_k, ties_to_last, sum_tolerance,
                   row_losses, row_stats, row_pred, nblocks, block_rows, blocks_per_task, fsums, icounts,
                   new_claims()), n_tasks)
    else:
        general = (scores, labels, sample_weight, class_weight, ignore_label, top_k, ties_to_last, logits, eps,
                   sum_tolerance, row_losses, row_stats, row_pred, nblocks, block_rows, blocks_per_task, fsums,
                   icounts, math)
        if scores.shape[1] <= COLUMN_WALK_MAX_CLASSES:
            run_tasks(score_tasks_short, general + (_ALL_BLOCKS, new_claims()), n_tasks)
        else:
            run_tasks(score_tasks_long, general + (new_claims(),), n_tasks)
        return
    # The rare blocks (a non-finite row, an infinite loss, or a label out of range: not checked yet): the general
    # path, once the labels are known to be in range.
    rare = np.flatnonzero(icounts[:nblocks, C_ROWS] == RARE_BLOCK)
    if rare.shape[0] == 0:
        return
    if on_bad_labels is not None:
        on_bad_labels()
    per_task = _parallel.blocks_per_task(rare.shape[0])
    run_tasks(score_tasks_short,
              (scores, labels, sample_weight, class_weight, ignore_label, top_k, ties_to_last, logits, eps,
               sum_tolerance, row_losses, row_stats, row_pred, nblocks, block_rows, per_task, fsums, icounts, math,
               rare.astype(np.int64), new_claims()), -(-rare.shape[0] // per_task))


def general_tokens(mode, proba_eps, float32_math):
    """The general kernels' mode and math as types: (logits, proba_eps, float32_math).

    ``logits`` True and ``proba_eps`` None for logits; ``logits`` None and
    ``proba_eps`` the float for probabilities; ``float32_math`` True (16-
    and 32-bit logits in float32 math) or None (float64 math, and
    probabilities).  numba prunes a branch on ``x is None`` (or ``is not
    None``) of an argument typed None before it types the function; on any
    other value it compiles both branches, and their callees.  So each path
    that calls functions of its own is written under ``if logits is not
    None`` or ``if proba_eps is not None``, not as an if / else (a few
    loops without calls are), and a first evaluate of float32 logits
    compiles no probability code and no float64 exps (C = 100: 7.0-9.1 ->
    5.9-7.1 s, five alternated pairs of benchmarks/cold_start.py --classes
    100, against a kernel that took both as values; three of them with
    _config.INLINE_OVERLOAD_OPTIONS too); probabilities compile no exps.
    The price:
    precision="float64" on 16- or 32-bit logits, or probabilities after
    logits, compile kernels of their own.
    """
    if mode == MODE_LOGITS:
        return True, None, math_token(float32_math)
    return None, float(proba_eps), None


def math_token(float32_math):
    """The kernels' ``float32_math`` from a truth value: True (float32 math) or None (float64 math).

    The kernels pick the math by the argument's type (kernels_binary.logit_element, _row_exp_sums,
    general_tokens), so a False would mean float32 math too: the Python entry points pass it through this.
    """
    return True if float32_math else None


# score_tasks_short's ``blocks`` for every block.
_ALL_BLOCKS = np.empty(0, dtype=np.int64)


@kernel(**KERNEL_OPTIONS)
def _binary_proba_blocks_tasks(proba, labels, sample_weight, top_k, proba_eps, row_losses, row0, nblocks, block_rows,
                               fsums, icounts, claims, first_task, task_step):
    """Per-block sums for 1-D probabilities of class 1 (scikit-learn's binary log_loss).

    Equivalent to the two-column matrix [1 - p, p]: loss is
    -log(clip(p if y == 1 else 1 - p)); the prediction is class 1 when
    p > 1 - p (argmax, first index wins); every row is top-k correct for k >= 2
    (the columns of ``fsums`` follow ``top_k``).  The Brier sum is the
    two-column one, 2 (p - y)^2.
    """
    n_rows = proba.shape[0]
    terms = np.empty((N_TERMS, block_rows + SCRATCH_PAD))
    while True:
        b = claim(claims)  # see fastce._parallel.claim
        if b >= nblocks:
            break
        start = row0 + b * block_rows
        binary_proba_block(proba, labels, sample_weight, top_k, proba_eps, row_losses, b, start,
                           min(start + block_rows, n_rows), fsums, icounts, terms)


@njit(inline="always", **KERNEL_OPTIONS)
def binary_proba_element(p, y, proba_eps):
    """(loss, (p - y)**2, predicts class 1, p(true class)) of a probability ``p`` of class 1 (float64) and its
    0/1 label: scikit-learn's clipped log loss, -log(clip(p_true, eps, 1 - eps)), by _vecmath.log_positive
    (about 1 ulp, plain arithmetic: math.log, a call to libm, kept the row loop scalar, half its time).  A
    non-finite p gives a loss of 0 (its row is not counted)."""
    p_true = p if y == 1 else 1.0 - p
    q = min(max(p_true, proba_eps), 1.0 - proba_eps)
    loss = -log_positive(q if p - p == 0.0 else 1.0)
    miss = p - y
    return loss, miss * miss, p > 1.0 - p, p_true


@kernel_step(**LEAF_OPTIONS)
def binary_proba_block(proba, labels, sample_weight, top_k, proba_eps, row_losses, b, start, stop, fsums, icounts,
                       terms):
    """Block b, rows [start, stop), of _binary_proba_blocks_tasks: each row's terms into ``terms`` (rows T_...,
    at least N_TERMS of ``stop - start`` entries), in a loop without branches (it vectorises), then the block's
    sums in fastce._lanes' order (store_sums: the same bits on every machine and thread count).
    """
    prefer_wide_vectors()  # 512-bit float64 lanes on AVX-512 hosts (see _vecmath)
    weighted = sample_weight.shape[0] != 0
    keep = row_losses.shape[0] != 0
    pair = False
    # One copy of the loop per case, each under tests that fix its flags (inlined there, each copy knows them:
    # see kernels_binary._element_terms; with a flag tested inside the loop LLVM kept it scalar, at the speed
    # of the libm-log loop it replaces).  The flags are run-time values, not constants, so that numba compiles
    # the loop once.
    loop = (proba, labels, sample_weight, row_losses, start, stop, proba_eps, terms, weighted, keep, pair)
    if keep and weighted:
        counts = _binary_proba_loop(*loop)
    elif keep:
        counts = _binary_proba_loop(*loop)
    elif weighted:
        counts = _binary_proba_loop(*loop)
    else:
        counts = _binary_proba_loop(*loop)
    n_ok, n_hit, n_below, n_above = counts
    _binary_proba_sums(proba, sample_weight, top_k, b, start, stop, fsums, icounts, terms, n_ok, n_hit, n_below,
                       n_above)


@kernel_step(**LEAF_OPTIONS)
def binary_proba_pair_block(proba, labels, sample_weight, top_k, proba_eps, b, start, stop, fsums, icounts, terms):
    """binary_proba_block for compare's kernel (compare_kernels): the same terms and sums, bit for bit, and each
    row's loss, Brier term, rank and p(true class) in rows N_TERMS + IN_* of ``terms`` (NaN for a row not
    counted).  A function of its own, so that evaluate's kernel compiles no copy of this loop."""
    prefer_wide_vectors()
    weighted = sample_weight.shape[0] != 0
    keep = False
    pair = True
    unused = terms[T_LOSS]  # the row losses' place: never written without ``keep``
    loop = (proba, labels, sample_weight, unused, start, stop, proba_eps, terms, weighted, keep, pair)
    counts = _binary_proba_loop(*loop) if weighted else _binary_proba_loop(*loop)  # a copy for each (see above)
    n_ok, n_hit, n_below, n_above = counts
    _binary_proba_sums(proba, sample_weight, top_k, b, start, stop, fsums, icounts, terms, n_ok, n_hit, n_below,
                       n_above)


@kernel_step(**LEAF_OPTIONS)
def _binary_proba_loop(proba, labels, sample_weight, row_losses, start, stop, proba_eps, terms, weighted, keep, pair):
    """binary_proba_block's and binary_proba_pair_block's loop (see there): (rows counted, counted rows predicted right, counted p < 0, counted
    p > 1).  A non-finite p gives its row weight 0: it adds nothing to any sum.  No float min or max here: LLVM
    keeps a loop with one scalar (see _binary_proba_sums)."""
    inline_into_callers()
    n_ok = n_hit = n_below = n_above = 0
    nan = np.nan
    for i in range(start, stop):
        r = np.uint64(i - start)
        u = np.uint64(i)  # unsigned: a signed index kept numba's wraparound (a gather per vector)
        p = as_float64(proba[u])
        y = np.int64(labels[u])
        loss, sq, positive, p_true = binary_proba_element(p, y, proba_eps)
        ok = p - p == 0.0
        w = sample_weight[u] if weighted else 1.0
        w = w if ok else 0.0
        hit = positive == (y == 1)
        n_ok += ok
        n_hit += hit & ok
        n_below += ok & (p < 0.0)
        n_above += ok & (p > 1.0)
        brier = 2.0 * sq if ok else 0.0
        weighted_loss = w * loss
        if keep:
            row_losses[u] = weighted_loss if ok else nan
        w2 = w * w
        terms[T_LOSS, r] = weighted_loss
        terms[T_BRIER, r] = w * brier
        terms[T_W2LOSS2, r] = w2 * (loss * loss)
        terms[T_W2BRIER2, r] = w2 * (brier * brier)
        if weighted or pair:
            terms[T_WEIGHT, r] = w
            terms[T_HIT, r] = w if hit else 0.0
            terms[T_HIT2, r] = w2 if hit else 0.0
            terms[T_W2, r] = w2
            terms[T_W2LOSS, r] = w2 * loss
            terms[T_W2BRIER, r] = w2 * brier
        if pair:
            terms[N_TERMS + IN_LOSS, r] = loss if ok else nan
            terms[N_TERMS + IN_BRIER, r] = brier if ok else nan
            terms[N_TERMS + IN_RANK, r] = (0.0 if hit else 1.0) if ok else nan
            terms[N_TERMS + IN_P_TRUE, r] = p_true if ok else nan
    return n_ok, n_hit, n_below, n_above


@kernel_step(**LEAF_OPTIONS)
def _binary_proba_sums(proba, sample_weight, top_k, b, start, stop, fsums, icounts, terms, n_ok, n_hit, n_below,
                       n_above):
    """Block b's sums and counters from _binary_proba_loop's terms and counts; the first row of each kind of
    bad value is looked up only when there is one; the sums by binary_block_sums."""
    _reset_block(fsums, icounts, b)
    count = stop - start
    if n_ok != count or n_below or n_above:
        for i in range(start, stop):
            p = as_float64(proba[i])
            if not (p - p == 0.0):
                _note(icounts, b, C_NONFINITE, FIRST_NONFINITE, i)
            elif p < 0.0:
                _note(icounts, b, C_BELOW0, FIRST_BELOW0, i)
            elif p > 1.0:
                _note(icounts, b, C_ABOVE1, FIRST_ABOVE1, i)
    icounts[b, C_ROWS] = n_ok
    # The finite p's extremes, as integer reductions over order keys (vectorised; -0.0 below +0.0), each loop
    # one reduction (LLVM vectorises a loop of one), from cache.
    low_key = order_key(ordered_bits(np.inf))
    for i in range(start, stop):
        p = as_float64(proba[np.uint64(i)])
        low_key = min(low_key, order_key(ordered_bits(p if p - p == 0.0 else np.inf)))
    high_key = order_key(ordered_bits(-np.inf))
    for i in range(start, stop):
        p = as_float64(proba[np.uint64(i)])
        high_key = max(high_key, order_key(ordered_bits(p if p - p == 0.0 else -np.inf)))
    fsums[b, F_MIN] = from_ordered_bits(order_key(low_key))
    fsums[b, F_MAX] = from_ordered_bits(order_key(high_key))
    if sample_weight.shape[0] != 0:
        # A clipped loss is finite: a weighted one beyond float64 means weights too large (as in _finish_block).
        for r in range(count):
            if terms[T_LOSS, r] == np.inf:
                icounts[b, C_OVERFLOW] += 1
                icounts[b, FIRST_OVERFLOW] = start
                break
    binary_block_sums(sample_weight, top_k, b, count, n_ok, n_hit, terms, fsums)


@kernel_step(**LEAF_OPTIONS)
def binary_block_sums(sample_weight, top_k, b, count, n_ok, n_hit, terms, fsums):
    """A 1-D binary block's weight, loss, Brier, top-k and moment sums from its rows' terms (rows T_..., ``count``
    entries) and counts: rows counted ``n_ok``, counted rows predicted right ``n_hit``; for logits
    (kernels_binary.binary_logit_block_sums) and probabilities (_binary_proba_sums).  Without sample weights
    every row weight is 0 or 1: the weight and hit sums are the counts (a sum of 0s and 1s is its count,
    exactly: the ordered sums' bits), and the loops write no weight or hit terms.  Two classes: every counted
    row is top-k right for k >= 2."""
    n_k = top_k.shape[0]
    moments = F_TOPK + n_k
    loss_sum = lanes.ordered_sum(terms[T_LOSS], count)
    if sample_weight.shape[0] != 0:
        store_sums(terms[T_WEIGHT], terms, count, fsums, b, moments, False, loss_sum)
        correct = lanes.ordered_sum(terms[T_HIT], count)
        w2_correct = lanes.ordered_sum(terms[T_HIT2], count)
    else:
        store_sums_of_weight(np.float64(n_ok), terms, count, fsums, b, moments, True, loss_sum)
        correct = np.float64(n_hit)
        w2_correct = correct
    for k in range(n_k):
        fsums[b, F_TOPK + k] = correct if top_k[k] == 1 else fsums[b, F_WEIGHT]
        fsums[b, moments + M_W2TOPK + k] = w2_correct if top_k[k] == 1 else fsums[b, moments + M_W2]


def binary_proba_blocks(proba, labels, sample_weight, top_k, proba_eps, row_losses, row0, nblocks, block_rows, fsums,
                        icounts):
    """``_binary_proba_blocks_tasks`` on the thread pool (see fastce._parallel)."""
    run_tasks(_binary_proba_blocks_tasks,
              (proba, labels, sample_weight, top_k, proba_eps, row_losses, row0, nblocks, block_rows, fsums, icounts,
               new_claims()),
              nblocks)


@kernel(**KERNEL_OPTIONS)
def fold_blocks(fsums, icounts, nblocks, row_offset, block_rows, sums_acc, minmax, counts):
    """Fold per-block results into a state, in block order.

    ``row_offset`` is added to the block's row numbers (kernels number rows
    within the slice they were given); ``block_rows`` numbers a block's first
    row.

    A non-finite block sum is never dropped: ``exact_add_at`` can only hold
    finite values, so a non-finite loss sum is counted in C_INF_LOSS (finite
    losses that overflowed: the state's loss is then inf), and a non-finite
    weight, Brier or top-k sum (weights so large that their float64 sum
    overflows) in C_OVERFLOW with the block's first row, for the door to
    refuse.

    ``sums_acc`` rows are exact accumulators for fsums columns F_WEIGHT,
    F_LOSS, F_BRIER, the top-k columns and the moments (in that order; see
    M_W2); ``minmax`` holds [min, max];
    ``counts`` holds the NUM_ICOUNTS counters (first-row columns keep the
    earliest row seen, -1 for none).  Returns the number of moment partials
    that were not finite (squared weights or losses beyond float64), which
    the caller keeps in the state: it makes the standard errors unknown.
    """
    n_topk = (fsums.shape[1] - F_TOPK - M_W2TOPK) // 2
    n_moments = M_W2TOPK + n_topk
    overflowed_moments = 0
    for b in range(nblocks):
        exact_add_at(sums_acc, np.int64(SUMS_WEIGHT), fsums[b, F_WEIGHT])
        if not math.isfinite(fsums[b, F_LOSS]):
            # The block's finite losses overflowed float64 when summed.
            counts[C_INF_LOSS] += 1
        exact_add_at(sums_acc, np.int64(SUMS_LOSS), fsums[b, F_LOSS])
        exact_add_at(sums_acc, np.int64(SUMS_BRIER), fsums[b, F_BRIER])
        finite = math.isfinite(fsums[b, F_WEIGHT]) and math.isfinite(fsums[b, F_BRIER])
        for k in range(n_topk):
            exact_add_at(sums_acc, SUMS_TOPK + k, fsums[b, F_TOPK + k])
            finite = finite and math.isfinite(fsums[b, F_TOPK + k])
        if not finite:
            first = row_offset + b * block_rows
            if counts[C_OVERFLOW] == 0 or first < counts[FIRST_OVERFLOW]:
                counts[FIRST_OVERFLOW] = first
            counts[C_OVERFLOW] += 1
        for m in range(n_moments):
            value = fsums[b, F_TOPK + n_topk + m]
            # Squared weights or losses beyond float64: the standard errors
            # of this state cannot be computed; the caller is told (a count).
            overflowed_moments += not math.isfinite(value)
            exact_add_at(sums_acc, SUMS_TOPK + n_topk + m, value)
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
        normalize_at(sums_acc, a)
    return overflowed_moments
