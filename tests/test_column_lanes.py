"""The 16-row float32 leaf of the short-row walk (fastce._column_lanes, kernels._logit_columns_f32), and the
16-entry float32 exp sums of long rows (kernels._exp_sums_f32).

Its exp is the scalar exp_difference_f32 lane by lane (the same bits), and
its per-row statistics match a float64 numpy reference: the max, rank and
count at the max exactly, the exp sums within a float32 ulp of the terms,
NaN where a row holds a NaN or an infinite max, for every special value at
every column position and blocks whose length is not a multiple of 16.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from fastce import _column_lanes as CL
from fastce import _lanes as lanes
from fastce import kernels as K
from fastce._lanes import LANES
from fastce._vecmath import EXP_BIAS_F32, as_native, exp_difference_f32, log_positive, reciprocal


@njit
def _vector_exps(z, m):
    e = np.empty_like(z)
    top = np.empty(z.shape, dtype=np.bool_)
    for g in range(0, z.size, LANES):
        ez, tz = CL.exp_difference(CL.load(z, g), CL.load(m, g))
        # Spill through the float64 store: widen (exact), then read back as float32.
        wide = np.empty(LANES)
        CL.store_wide(wide, 0, CL.widen(ez))
        ones = np.empty(LANES)
        CL.store_wide(ones, 0, CL.where(tz, CL.widen(CL.splat(1.0)), CL.widen(CL.splat(0.0))))
        for lane in range(LANES):
            e[g + lane] = np.float32(wide[lane])
            top[g + lane] = ones[lane] == 1.0
    return e, top


@njit
def _scalar_exps(z, m):
    e = np.empty_like(z)
    top = np.empty(z.shape, dtype=np.bool_)
    for i in range(z.size):
        e[i], top[i] = exp_difference_f32(z[i], m[i])
    return e, top


def test_vector_exp_is_the_scalar_exp_bit_for_bit():
    rng = np.random.default_rng(0)
    n = 16 * 40_000
    m = (rng.standard_normal(n) * 30).astype(np.float32)
    gap = np.concatenate([rng.uniform(0, 1, n // 4), rng.uniform(0, 200, n // 4), np.exp(rng.uniform(-40, 5, n // 4)),
                          rng.uniform(80, 160, n // 4)]).astype(np.float32)
    z = (m - gap).astype(np.float32)
    z[::97] = m[::97]  # at the max
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3e38, -3e38, 1e-45], dtype=np.float32)
    pairs = np.array([(a, b) for a in special for b in special], dtype=np.float32)
    z[:pairs.shape[0]], m[:pairs.shape[0]] = pairs[:, 0], pairs[:, 1]
    got, got_top = _vector_exps(z, m)
    want, want_top = _scalar_exps(z, m)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # NaN payloads too
    assert np.array_equal(got_top, want_top)


@njit
def _leaf(columns, target, label_column, n_classes, count, ties_to_last, out, unused):
    """The leaf's statistics into the 6 rows of ``out`` (without ``finish``: the general path's scratch; the
    finish's rows, ``unused``, are neither read nor written)."""
    K._logit_columns_f32(columns, target, label_column, n_classes, count, ties_to_last, out[0], out[1], out[2],
                         out[3], out[4], out[5], False, unused[0], 0.0, True, unused[0], unused[0], unused, unused[:0])


def _reference(z, y, ties_to_last):
    """(high, rank, at_max, rest, squares, e_true) per row, in float64."""
    z = z.astype(np.float64)
    n, c = z.shape
    with np.errstate(invalid="ignore"):
        high = np.nanmax(np.where(np.isnan(z), -np.inf, z), axis=1)
        high[np.isnan(z).all(axis=1)] = np.nan
        t = z[np.arange(n), y]
        column = np.arange(c)[None, :]
        tie = column > y[:, None] if ties_to_last else column < y[:, None]
        rank = ((z > t[:, None]) | ((z == t[:, None]) & tie)).sum(axis=1)
        x = z - high[:, None]
        top = x >= 0
        e = np.where(top, 0.0, np.exp(np.where(top, -np.inf, x)))
        at_max = top.sum(axis=1)
        rest, squares = e.sum(axis=1), (e * e).sum(axis=1)
        xt = t - high
        e_true = np.where(xt == 0, 1.0, np.exp(xt))
    return high, rank, at_max, rest, squares, e_true


@pytest.mark.parametrize("ties_to_last", [False, True])
@pytest.mark.parametrize("n_classes", [3, 5, 10, 17, 32])
def test_leaf_statistics_match_the_reference(n_classes, ties_to_last):
    rng = np.random.default_rng(n_classes)
    rows = 16 * 9 + 5  # a partial last vector
    z = (rng.standard_normal((rows, n_classes)) * 4).astype(np.float32)
    z[::4] = np.round(z[::4])  # ties, at the max too
    y = rng.integers(0, n_classes, rows)
    y[1::6] = z[1::6].argmax(axis=1)
    z[2::7, 0] = z[2::7, 1:].max(axis=1) + 60.0  # confident rows: tiny exps
    # Every special value at every column position, one row each.
    specials = [np.nan, np.inf, -np.inf]
    r = 3
    for value in specials:
        for j in range(n_classes):
            if r < rows:
                z[r, j] = value
                r += 7
    z[rows - 1] = -np.inf  # a fully masked row
    pad = K.SCRATCH_PAD
    columns = np.zeros((n_classes, rows + pad), dtype=np.float32)
    columns[:, :rows] = z.T
    target = np.zeros(rows + pad)
    target[:rows] = z[np.arange(rows), y]
    label_column = np.zeros(rows + pad)
    label_column[:rows] = y
    out = np.full((6, rows + pad), -7.0)
    unused = np.full((K.N_TERMS, rows + pad), -7.0)
    _leaf(columns, target, label_column, n_classes, rows, ties_to_last, out, unused)
    assert (unused == -7.0).all()
    high, rank, at_max, rest, squares, e_true = _reference(z, y, ties_to_last)
    got = out[:, :rows]
    np.testing.assert_array_equal(got[0], high)
    nan_row = np.isnan(z).any(axis=1) | np.isposinf(high) | np.isneginf(high)
    np.testing.assert_array_equal(got[1], rank)  # exact comparisons, NaN rows too (NaN ranks nothing)
    np.testing.assert_array_equal(got[2][~nan_row], at_max[~nan_row])
    assert np.isnan(got[3][nan_row]).all()  # the row is caught as non-finite by its sum
    ulp = 2.0**-23
    for k, want in ((3, rest), (4, squares), (5, e_true)):
        have = got[k][~nan_row]
        want = want[~nan_row]
        assert np.all(np.abs(have - want) <= 2.5 * ulp * np.abs(want)), k
    assert (got[3][~nan_row] >= 0).all() and (got[2][~nan_row] >= 1).all()


@njit
def _transpose(flat, n_rows, n_classes, columns):
    for g in range(0, n_rows, LANES):
        for first_class in range(0, n_classes, LANES):
            CL.transpose_rows(flat, g, min(LANES, n_rows - g), n_classes, first_class, columns, g)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("n_classes", [2, 3, 10, 16, 17, 32])
@pytest.mark.parametrize("n", [37, 48])
def test_transpose_rows_copies_every_entry_exactly_and_nothing_else(n_classes, dtype, n):
    """Tiles of 16 rows x 16 classes: every entry as float32 (special values too), the lanes of rows past
    the block zeroed in the padding, nothing written past it, and no read past the array (its last row).

    n = 37: two whole tiles of rows and 5 rows; 48: three whole tiles.  A whole tile takes plain loads
    unless its last row's 16 entries would pass the array's end (at n = 48, the last tile of rows
    narrower than 16 entries from ``first_class``), then masked ones: both ways, with special values in
    the first tile and the last.
    """
    from support import BFLOAT16

    if dtype == "bfloat16" and BFLOAT16 is None:
        pytest.skip("ml_dtypes not installed")
    rng = np.random.default_rng(n_classes)
    z = (rng.standard_normal((n, n_classes)) * 5).astype({"bfloat16": BFLOAT16}.get(dtype, dtype))
    z[0, 0], z[1, n_classes - 1], z[2, n_classes // 2] = np.nan, np.inf, -np.inf
    z[n - 1, n_classes - 1], z[n - 2, 0] = np.nan, -np.inf
    view = z.view(np.uint16) if dtype == "float16" else z.view(np.int16) if dtype == "bfloat16" else z
    columns = np.full((n_classes, 48 + 8), -7.0, dtype=np.float32)
    _transpose(view.reshape(-1), n, n_classes, columns)
    assert np.array_equal(columns[:, :n], z.astype(np.float32).T, equal_nan=True)
    assert (columns[:, n:48] == 0.0).all() and (columns[:, 48:] == -7.0).all()


@njit
def _chunked_exp_sums(scores, i, n_classes, native_max):
    """The former kernels._exp_sums_f32, the reference: each exp by the scalar exp_difference_f32 into a float32
    chunk, then the chunk's float64 sums by lanes.add_values_and_squares (the order of fastce._lanes)."""
    chunk = np.empty(K.EXP_CHUNK + LANES, np.float32)
    rest, rest_b, squares, squares_b = lanes.zero(), lanes.zero(), lanes.zero(), lanes.zero()
    at_max = 0
    first = 0
    while first < n_classes:
        count = n_classes - first if n_classes - first < K.EXP_CHUNK + LANES else K.EXP_CHUNK
        for j in range(count):
            chunk[j], top = exp_difference_f32(as_native(scores[i, first + j]), native_max)
            at_max += top
        rest, rest_b, squares, squares_b = lanes.add_values_and_squares(chunk, count, rest, rest_b, squares,
                                                                        squares_b)
        first += count
    unbias = 2.0 ** -EXP_BIAS_F32
    return (lanes.finish(rest, rest_b) * unbias, lanes.finish(squares, squares_b) * (unbias * unbias),
            np.float64(at_max))


@njit
def _fused_and_reference(scores, maxima):
    """Each row by the fused form, the staged one (both compiled whatever the host) and the reference."""
    got = np.empty((scores.shape[0], 3))
    staged = np.empty((scores.shape[0], 3))
    want = np.empty((scores.shape[0], 3))
    scratch = np.full(K.EXP_SCRATCH, np.nan)  # whatever an earlier row left: every entry read is written first
    for i in range(scores.shape[0]):
        got[i, 0], got[i, 1], got[i, 2] = K._exp_sums_f32(scores, i, scores.shape[1], maxima[i])
        staged[i, 0], staged[i, 1], staged[i, 2] = K._exp_sums_f32_staged(scores, i, scores.shape[1], maxima[i],
                                                                         scratch)
        want[i, 0], want[i, 1], want[i, 2] = _chunked_exp_sums(scores, i, scores.shape[1], maxima[i])
    return got, staged, want


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("n_classes", [33, 47, 48, 64, 100, 1039, 1040, 1041, 1055, 1056, 2048, 2080, 2100])
def test_long_row_exp_sums_are_the_chunked_scalar_ones_bit_for_bit(n_classes, dtype):
    """kernels._exp_sums_f32 (16 entries at a time in registers, no float32 chunk in memory) and its staged
    form (kernels._exp_sums_f32_staged, the AVX2 one: exps through a scratch) give the bits of
    the scalar exps summed chunk by chunk: every chunk length (EXP_CHUNK, the last one taking up a remainder
    under 16), partial last vectors, and NaN, +-inf, a tie at the max and a tiny gap at positions across the
    row (every position up to C = 100; the first, the chunk boundaries and the last beyond)."""
    from support import BFLOAT16

    if dtype == "bfloat16" and BFLOAT16 is None:
        pytest.skip("ml_dtypes not installed")
    rng = np.random.default_rng(n_classes)
    positions = (range(n_classes) if n_classes <= 100 else
                 sorted({0, 1, 15, 16, 31, 32, 1023, 1024, 1025, n_classes - 17, n_classes - 16, n_classes - 1}
                        & set(range(n_classes))))
    specials = [np.nan, np.inf, -np.inf, "tie", "gap"]
    rows = 4 + len(positions) * len(specials)
    z = (rng.standard_normal((rows, n_classes)) * 4).astype(np.float32)
    z[1] *= 30  # exps down to underflow
    z[2] = 0.25  # every entry at the max
    z[3] = -np.inf  # a masked row
    r = 4
    for special in specials:
        for p in positions:
            top = int(np.argmax(z[r]))
            if special == "tie":
                z[r, p] = z[r, top]
            elif special == "gap":
                z[r, p] = np.nextafter(z[r, top], np.float32(-np.inf))
            else:
                z[r, p] = special
            r += 1
    native = z.astype({"bfloat16": BFLOAT16}.get(dtype, dtype))
    with np.errstate(invalid="ignore"):
        maxima = native.astype(np.float32).max(axis=1)  # NaN rows: NaN, as the kernel's order keys make it
    view = native.view(np.uint16) if dtype == "float16" else native.view(np.int16) if dtype == "bfloat16" else native
    got, staged, want = _fused_and_reference(np.ascontiguousarray(view), maxima)
    for form in (got, staged):  # the fused form (AVX-512 hosts) and the staged one (AVX2): the same bits
        differ = form.view(np.int64) != want.view(np.int64)
        assert not differ.any(), np.argwhere(differ)[:5]


@njit
def _row_loops_both_ways(scores, targets):
    """Each row's (top key, entries above, entries equal to its target, largest bits, smallest bits, entries
    above, entries equal, first column at the max, first column at the target) by the explicit-vector loops
    (kernels._top_key_and_counts_f32 of logits, _proba_scan_f32 of probabilities, _first_index_of_f32) and by
    the scalar ones LLVM vectorises (_top_key_and_counts, _proba_scan, _first_index_of); and the probability
    scans' sum and sum of squares but the target's (explicit, scalar), the target's column taken as the label."""
    got = np.empty((scores.shape[0], 9), dtype=np.int64)
    want = np.empty((scores.shape[0], 9), dtype=np.int64)
    sums = np.empty((scores.shape[0], 4))  # the probability scans' sums: explicit, scalar
    for i in range(scores.shape[0]):
        target = as_native(scores[i, targets[i]])
        got[i, 0], got[i, 1], got[i, 2] = K._top_key_and_counts_f32(scores, i, scores.shape[1], target)
        want[i, 0], want[i, 1], want[i, 2] = K._top_key_and_counts(scores, i, scores.shape[1], target)
        got[i, 3], got[i, 4], got[i, 5], got[i, 6], sums[i, 0], sums[i, 1] = K._proba_scan_f32(
            scores, i, scores.shape[1], (target, targets[i]))
        want[i, 3], want[i, 4], want[i, 5], want[i, 6], sums[i, 2], sums[i, 3] = K._proba_scan(
            scores, i, scores.shape[1], (target, targets[i]))
        # the first column equal to the row's max (diagnose's argmax; -1 for a NaN max), and to the target
        top = np.float64(K.from_ordered_bits(K.order_key(np.int32(got[i, 0]))))
        got[i, 7], want[i, 7] = (K._first_index_of_f32(scores, i, scores.shape[1], top),
                                 K._first_index_of(scores, i, scores.shape[1], top))
        got[i, 8], want[i, 8] = (K._first_index_of_f32(scores, i, scores.shape[1], np.float64(target)),
                                 K._first_index_of(scores, i, scores.shape[1], np.float64(target)))
    return got, want, sums


SPECIAL_ENTRIES = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 3e38, -3e38, 1e-45, -1e-45]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("n_classes", [33, 34, 47, 48, 49, 63, 64, 100, 1000])
def test_row_max_and_rank_counts_are_the_scalar_loops(n_classes, dtype):
    """The long rows' max and rank counts in explicit 16-entry vectors with a masked last vector
    (kernels._top_key_and_counts_f32), the one-pass scan of probabilities (_proba_scan_f32: extremes, counts,
    and the float64 sums in _row_sums' lanes, the label's square left out) and the argmax (_first_index_of_f32,
    which stops at the first vector holding it) are the scalar loops' exactly, the sums bit for bit: every
    special value (NaN of either sign, +-inf, +-0, the extremes, the smallest subnormal) at every position up
    to C = 100 (spread beyond), as the target's entry (and label) and beside it, ties with the target, every
    row length modulo 16 (modulo 32, the sums' step: 0, 1, 2, 4, 8, 15, 16, 17, 31 left), rows all negative
    (the masked lanes must not count as +0.0), all positive (nor as the minimum), all NaN, all equal."""
    from support import BFLOAT16

    if dtype == "bfloat16" and BFLOAT16 is None:
        pytest.skip("ml_dtypes not installed")
    rng = np.random.default_rng(n_classes)
    positions = range(n_classes) if n_classes <= 100 else sorted({0, 1, 15, 16, 17, 500, n_classes - 17,
                                                                   n_classes - 16, n_classes - 1})
    base = (rng.standard_normal((5, n_classes)) * 4).astype(np.float32)
    base[1] = -np.abs(base[1]) - 1.0  # all negative
    base[2] = 0.25  # all equal
    base[3] = np.nan  # all NaN
    base[4] = np.abs(base[4]) + 0.5  # all positive
    rows, targets = [base], [rng.integers(0, n_classes, 5)]
    for special in SPECIAL_ENTRIES:
        block = np.concatenate([np.repeat(base[:2], len(positions), axis=0),
                                np.repeat(base[4:5], len(positions), axis=0)])
        p = np.tile(np.array(list(positions)), 3)
        block[np.arange(block.shape[0]), p] = special
        rows += [block, block]
        targets += [p, (p + 1) % n_classes]  # the special entry as the target (its own rank), and beside it
    tied = np.repeat(base[:1], n_classes, axis=0)
    tied[np.arange(n_classes), np.arange(n_classes)] = tied[0, 0]  # ties with the target, at every position
    rows.append(tied)
    targets.append(np.zeros(n_classes, dtype=np.int64))
    z = np.concatenate(rows)
    with np.errstate(over="ignore"):  # +-3e38 is +-inf in float16
        native = z.astype({"bfloat16": BFLOAT16}.get(dtype, dtype))
    view = native.view(np.uint16) if dtype == "float16" else native.view(np.int16) if dtype == "bfloat16" else native
    got, want, sums = _row_loops_both_ways(np.ascontiguousarray(view), np.concatenate(targets).astype(np.int64))
    differ = (got != want).any(axis=1)
    assert not differ.any(), (np.argwhere(differ)[:5], got[differ][:5], want[differ][:5])
    bits = sums.view(np.int64)  # the same bits (NaN sums included)
    differ = (bits[:, :2] != bits[:, 2:]).any(axis=1)
    assert not differ.any(), (np.argwhere(differ)[:5], sums[differ][:5])


@njit
def _lane_log_and_reciprocal(x, log_out, reciprocal_out):
    for g in range(0, x.size, LANES):
        v = lanes.load(x, g)
        CL.store_wide(log_out, g, CL.log_positive(v))
        CL.store_wide(reciprocal_out, g, CL.reciprocal(v))


@njit
def _scalar_log_and_reciprocal(x, log_out, reciprocal_out):
    for i in range(x.size):
        log_out[i] = log_positive(x[i])
        reciprocal_out[i] = reciprocal(x[i])


def test_lane_log_and_reciprocal_are_the_scalar_ones_bit_for_bit():
    """fastce._column_lanes.log_positive and reciprocal (the finish of short rows in registers) give the bits of
    _vecmath's, over the arguments the finish passes them (1 + a sum of exps: [1, 33]) and beyond: values just
    above 1, both sides of each reduction boundary (sqrt(2) times a power of two), powers of two."""
    rng = np.random.default_rng(3)
    boundaries = np.sqrt(2.0) * 2.0 ** np.arange(-3, 6)
    x = np.concatenate([
        1.0 + rng.random(4096) * 32.0,
        1.0 + np.exp(rng.uniform(-60, 0, 4096)),
        np.exp(rng.uniform(-700, 700, 4096)),
        np.nextafter(boundaries, 0.0), boundaries, np.nextafter(boundaries, np.inf),
        2.0 ** np.arange(-20, 21, dtype=np.float64), [1.0, np.nextafter(1.0, 2.0)],
    ])
    x = np.concatenate([x, np.ones(-x.size % LANES)])
    got_log, got_reciprocal, want_log, want_reciprocal = (np.empty_like(x) for _ in range(4))
    _lane_log_and_reciprocal(x, got_log, got_reciprocal)
    _scalar_log_and_reciprocal(x, want_log, want_reciprocal)
    assert np.array_equal(got_log.view(np.int64), want_log.view(np.int64))
    in_float32_range = (x > 1e-37) & (x < 1e37)  # reciprocal's domain (a float32 first guess)
    assert np.array_equal(got_reciprocal[in_float32_range].view(np.int64),
                          want_reciprocal[in_float32_range].view(np.int64))
