"""A long row's float64 exps 16 entries at a time in registers: the float64 step's fused form.

``kernels.exp_sums`` (float64 math: float64 scores, and ``precision="float64"``)
stores each chunk of a row's exps to a float64 scratch and sums them again,
in ``fastce._lanes``' order, with their squares: a second loop that reads
back every exp.  ``kernels.exp_sums_wide`` computes 16 exps at a time in a
``Lanes`` value (``exp_nonpositive_wide``: fastce._vecmath.exp_nonpositive's
operations, lane by lane, with no fast-math flag: the same bits) and adds
them where they are computed, in the same order: the same three sums, bit
for bit (tests/test_row_lanes.py), without the scratch's store, reload and
second loop.  This module holds the vector pieces; the step is
``kernels.exp_sums_wide``, beside ``exp_sums``.  Its live vectors (four lane sets, two exps in flight) fit
AVX-512's 32 registers, not AVX2's 16 (fastce._vecmath.STAGED_FORMS), where
``kernels.exp_sums`` stays.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from fastce import _column_lanes as column_lanes
from fastce import _lanes as lanes
from fastce._config import LEAF_OPTIONS, kernel_step
from fastce._lanes import _LANE_NUMBERS, _READABLE, _VECTOR, LANES, _broadcast_int64, _widen, lanes_type, masked_load
from fastce._vecmath import (
    _EXP_EVEN,
    _EXP_EVEN_TOP,
    _EXP_FLOOR,
    _EXP_ODD,
    _EXP_ODD_TOP,
    _LN2_HI,
    _LN2_LO,
    _LOG2E,
    _ROUNDER,
    inline_into_callers,
)

_WORDS = ir.VectorType(ir.IntType(64), LANES)


def _is_row_of(scores, *indices):
    return (isinstance(scores, types.Array) and scores.ndim == 2 and scores.layout == "C"
            and scores.dtype in _READABLE and all(isinstance(i, types.Integer) for i in indices))


@intrinsic
def load_row(typingctx, scores, row, column):
    """scores[row, column:column + 16] as float64 lanes (exact; 16-bit views decoded as fastce._lanes.load does),
    a C-contiguous 2-D array; one vector load with no bounds check (the caller knows the room)."""
    if not _is_row_of(scores, row, column):
        return None

    def codegen(context, builder, signature, args):
        pointer = column_lanes._entry_pointer(context, builder, signature, args)
        return _widen(builder, builder.load(pointer, align=scores.dtype.bitwidth // 8), scores.dtype)

    return lanes_type(scores, row, column), codegen


@intrinsic
def load_row_head(typingctx, scores, row, column, count):
    """scores[row, column:column + count] in the first ``count`` lanes (0 <= count <= 16), +0.0 in the others: a
    masked load, which reads only those entries (it may end at the array's end)."""
    if not _is_row_of(scores, row, column, count):
        return None

    def codegen(context, builder, signature, args):
        mask = builder.icmp_signed("<", _LANE_NUMBERS, _broadcast_int64(context, builder, args[3], signature.args[3]))
        pointer = column_lanes._entry_pointer(context, builder, signature, args)
        return _widen(builder, masked_load(context, builder, scores.dtype, pointer, mask), scores.dtype)

    return lanes_type(scores, row, column, count), codegen


@intrinsic
def _power_of_two(typingctx, t):
    """2**n per lane, n in the low bits of t = x log2(e) + 1.5 * 2**52 (see fastce._vecmath.exp_nonpositive)."""
    if t != lanes_type:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.add(builder.bitcast(args[0], _WORDS), ir.Constant(_WORDS, [1023] * LANES))
        return builder.bitcast(builder.shl(bits, ir.Constant(_WORDS, [52] * LANES)), _VECTOR)

    return lanes_type(lanes_type), codegen


@kernel_step(**LEAF_OPTIONS)
def exp_nonpositive_wide(z, m):
    """(exp_nonpositive(z - m) of every lane, 0 where z - m >= 0; the Mask of those lanes): the scalar step of
    kernels.exp_sums, the same bits.  NaN flows through (and is not at the max)."""
    inline_into_callers()
    x = column_lanes.sub_wide(z, m)
    top = column_lanes.greater_equal(x, column_lanes.splat_wide(0.0))
    x = column_lanes.where(top, column_lanes.splat_wide(-np.inf), x)
    # fastce._vecmath.exp_nonpositive, lane by lane.
    t = lanes.fma(x, column_lanes.splat_wide(_LOG2E), column_lanes.splat_wide(_ROUNDER))
    n = column_lanes.sub_wide(t, column_lanes.splat_wide(_ROUNDER))
    r = lanes.fma(n, column_lanes.splat_wide(-_LN2_HI), x)
    r = lanes.fma(n, column_lanes.splat_wide(-_LN2_LO), r)
    r2 = lanes.mul(r, r)
    e3, e2, e1, e0 = _EXP_EVEN
    o3, o2, o1, o0 = _EXP_ODD
    even = lanes.fma(column_lanes.splat_wide(_EXP_EVEN_TOP), r2, column_lanes.splat_wide(e3))
    odd = lanes.fma(column_lanes.splat_wide(_EXP_ODD_TOP), r2, column_lanes.splat_wide(o3))
    even = lanes.fma(even, r2, column_lanes.splat_wide(e2))
    odd = lanes.fma(odd, r2, column_lanes.splat_wide(o2))
    even = lanes.fma(even, r2, column_lanes.splat_wide(e1))
    odd = lanes.fma(odd, r2, column_lanes.splat_wide(o1))
    even = lanes.fma(even, r2, column_lanes.splat_wide(e0))
    odd = lanes.fma(odd, r2, column_lanes.splat_wide(o0))
    p = lanes.fma(odd, r, even)
    p = lanes.fma(p, r, column_lanes.splat_wide(1.0))
    p = lanes.fma(p, r, column_lanes.splat_wide(1.0))
    e = lanes.mul(p, _power_of_two(t))
    return column_lanes.where(column_lanes.less(x, column_lanes.splat_wide(_EXP_FLOOR)),
                              column_lanes.splat_wide(0.0), e), top
