"""The fused float64 step of long rows (kernels.exp_sums_wide, fastce._row_lanes): the bits of kernels.exp_sums.

Its exp is fastce._vecmath.exp_nonpositive lane by lane, and its three
sums (the exps below the max, their squares, the entries at the max) are
exp_sums' bit for bit, for every score dtype that float64 math reads
(float64, float32, float16 and bfloat16 views), rows of every length
around the vectors' and the chunks' boundaries, and every special value at
every column position.  AVX-512 kernels take it (AVX2 ones keep exp_sums:
tests/test_reproducible.py compares the two builds' results).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numba import njit

from fastce import _column_lanes as CL
from fastce import _row_lanes as RL
from fastce import kernels as K
from fastce._lanes import LANES
from fastce._vecmath import STAGED_FORMS, exp_nonpositive


@njit
def _both_steps(scores, maxima, chunk):
    """(exp_sums, exp_sums_wide) of every row: columns 0-2 and 3-5."""
    out = np.empty((scores.shape[0], 6))
    for i in range(scores.shape[0]):
        out[i, 0], out[i, 1], out[i, 2] = K.exp_sums(scores, i, scores.shape[1], maxima[i], chunk)
        out[i, 3], out[i, 4], out[i, 5] = K.exp_sums_wide(scores, i, scores.shape[1], maxima[i])
    return out


def _same_bits(a, b):
    """The same bits, NaN for NaN: which NaN a non-finite row's sums hold (+NaN from a NaN entry, x86's -NaN from
    inf - inf) depends on which operand an addition meets first, and is no result (the row is flagged
    non-finite either way); hypothesis found [inf, NaN, ...] summing to -NaN in one step and +NaN in the other."""
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    return np.array_equal(nan_a, nan_b) and np.array_equal(a[~nan_a].view(np.uint64), b[~nan_b].view(np.uint64))


def _views(rows64, dtype):
    """(the kernel's view of ``rows64`` as ``dtype``, the float64 values it holds)."""
    if dtype == "float64":
        return rows64, rows64
    with np.errstate(over="ignore"):  # 1e300 and the like: inf in the narrow dtypes
        narrow, half = rows64.astype(np.float32), rows64.astype(np.float16)
    if dtype == "float32":
        return narrow, narrow.astype(np.float64)
    if dtype == "float16":
        return half.view(np.uint16), half.astype(np.float64)
    bits = (narrow.view(np.uint32) >> 16).astype(np.uint16)  # bfloat16: truncated float32
    return bits.view(np.int16), (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def _maxima(values):
    with np.errstate(invalid="ignore"):
        return np.max(np.where(np.isnan(values), -np.inf, values), axis=1)


def _check(rows64, dtype, maxima=None):
    view, values = _views(rows64, dtype)
    maxima = _maxima(values) if maxima is None else maxima
    out = _both_steps(np.ascontiguousarray(view), maxima, np.zeros(K.EXP_SCRATCH))
    assert _same_bits(out[:, :3].copy(), out[:, 3:].copy())
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("n_classes", [1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 100,
                                       1000, 1023, 1024, 1025, 1040, 1055, 1056, 1057, 2048, 2065])
def test_the_same_three_sums_as_exp_sums(dtype, n_classes):
    rng = np.random.default_rng(n_classes)
    scale = rng.choice([0.05, 1.0, 8.0, 60.0, 500.0], size=(24, 1))
    rows = rng.standard_normal((24, n_classes)) * scale
    rows[0] = 0.0  # every entry at the max
    rows[1, ::2] = rows[1].max() if n_classes > 1 else rows[1]  # ties at the max
    out = _check(rows, dtype)
    _, values = _views(rows, dtype)
    # And they are the sums: against numpy's float64 exps (not the same order: a few ulp), none below exp(-700).
    m = _maxima(values)
    x = values - m[:, None]
    at_max = x >= 0.0
    terms = np.where(at_max | (x < -700.0), 0.0, np.exp(x))
    np.testing.assert_allclose(out[:, 3], terms.sum(axis=1), rtol=1e-13, atol=0)
    np.testing.assert_allclose(out[:, 4], (terms * terms).sum(axis=1), rtol=1e-13, atol=0)
    np.testing.assert_array_equal(out[:, 5], at_max.sum(axis=1))


SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, -1e300, 1e300, -745.0, -709.0, -700.5, -699.9, 5e-324]


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("n_classes", [5, 16, 33, 70, 1030])
def test_every_special_value_at_every_column(dtype, n_classes):
    rng = np.random.default_rng(7)
    positions = range(n_classes) if n_classes <= 70 else [0, 1, 15, 16, 31, 32, 512, 1023, 1024, 1025, 1029]
    rows = []
    for value in SPECIALS:
        for column in positions:
            row = rng.standard_normal(n_classes) * 3
            row[column] = value
            rows.append(row)
    _check(np.array(rows), dtype)


@pytest.mark.parametrize("row_max", [np.nan, np.inf, -np.inf, 0.0, 1e300])
def test_maxima_that_are_not_finite_or_not_the_rows(row_max):
    rows = np.random.default_rng(3).standard_normal((6, 300))
    _check(rows, "float64", np.full(6, row_max))


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 140)),
                  elements=st.floats(allow_nan=True, allow_infinity=True, width=64)))
@settings(max_examples=200, deadline=None)
def test_any_row_the_same_bits(rows):
    _check(rows, "float64")


@njit
def _lane_exps(z, m):
    """exp_nonpositive_wide of 16 entries at a time, spilled through a float64 store."""
    e = np.empty_like(z)
    top = np.empty(z.shape, dtype=np.bool_)
    for g in range(0, z.shape[1], LANES):
        ez, tz = RL.exp_nonpositive_wide(RL.load_row(z, 0, g), CL.splat_wide(m))
        lanes_out = np.empty(LANES)
        CL.store_wide(lanes_out, 0, ez)
        ones = np.empty(LANES)
        CL.store_wide(ones, 0, CL.where(tz, CL.splat_wide(1.0), CL.splat_wide(0.0)))
        for lane in range(LANES):
            e[0, g + lane] = lanes_out[lane]
            top[0, g + lane] = ones[lane] == 1.0
    return e, top


@njit
def _scalar_exps(z, m):
    e = np.empty_like(z)
    top = np.empty(z.shape, dtype=np.bool_)
    for j in range(z.shape[1]):
        x = z[0, j] - m
        top[0, j] = x >= 0.0
        e[0, j] = exp_nonpositive(-np.inf if top[0, j] else x)
    return e, top


@pytest.mark.parametrize("m", [0.0, 2.5, -30.0, np.inf, -np.inf, np.nan])
def test_the_lane_exp_is_the_scalar_exp(m):
    rng = np.random.default_rng(1)
    z = np.concatenate([m - np.exp(rng.uniform(-40, 6.6, 16 * 600)), rng.standard_normal(16 * 100) * 300,
                        np.array(SPECIALS * 4)])[None, :]
    got, got_top = _lane_exps(z, m)
    want, want_top = _scalar_exps(z, m)
    assert _same_bits(got, want)
    np.testing.assert_array_equal(got_top, want_top)


@njit
def _float64_row_step(scores, maxima, chunk):
    return K._row_exp_sums(scores, 0, scores.shape[1], maxima[0], maxima[0], None, chunk)


def test_avx512_kernels_take_the_fused_step():
    # The overload picks by the host's register file: the fused step on AVX-512, exp_sums on AVX2.
    scores = np.random.default_rng(0).standard_normal((2, 100))
    _float64_row_step(scores, scores.max(axis=1), np.zeros(K.EXP_SCRATCH))
    ir = next(iter(_float64_row_step.inspect_llvm().values()))
    takes_wide = "exp_sums_wide" in ir
    assert takes_wide == (not STAGED_FORMS)
