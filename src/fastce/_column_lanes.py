"""16 rows at a time in vector registers: the float32 math of the short-row column walk.

A block of short rows (C <= 32 classes) is walked down its columns: the
block is transposed into a scratch with one row per class (see
kernels._walk_columns), and a row of the block is a lane.  A loop over
rows whose inner loop runs over a run-time number of classes does not
vectorise, and one loop per class over the rows (what LLVM does
vectorise) keeps every per-row accumulator in memory, read and written
once per class.  Here 16 rows are one vector value, carried from class to
class in registers: ``Rows`` (16 float32, one 512-bit register or two
256-bit ones) for the scores and their exps, ``fastce._lanes.Lanes``
(16 float64) for the sums, and ``Mask`` (16 booleans) for comparisons.

Every operation is the IEEE operation of the scalar code it stands for,
lane by lane, with no fast-math flag: ``exp_difference`` gives the bits of
fastce._vecmath.exp_difference_f32 (tests/test_column_lanes.py).

The same vectors serve two more walks: the finish of a block of short
rows in registers (kernels._logit_columns_f32 with ``finish``: float64
Lanes arithmetic, with ``log_positive`` and ``reciprocal`` giving the bits
of fastce._vecmath's), and a long row's exps, 16 entries at a time read
straight from the scores (``load_scores``, kernels._exp_sums_f32).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from fastce import _lanes as lanes
from fastce._config import LEAF_OPTIONS, kernel_step
from fastce._lanes import (
    _LANE_NUMBERS,
    _READABLE,
    _VECTOR,
    LANES,
    _broadcast_int64,
    _vector_pointer,
    _widen,
    lane_by_lane,
    lanes_type,
    masked_load,
)
from fastce._vecmath import (
    _BIASED_FLOOR,
    _EXP_F32_G,
    _EXPONENT_ONE,
    _LN2_HI,
    _LN2_HI_F32,
    _LN2_LO,
    _LN2_LO_F32,
    _LOG2E_F32,
    _MANTISSA_MASK,
    _ROUNDER_F32,
    _SQRT2,
    ATANH_SERIES,
    EXP_BIAS_F32,
    inline_into_callers,
)

_ROWS = ir.VectorType(ir.FloatType(), LANES)
_MASK = ir.VectorType(ir.IntType(1), LANES)
_WORDS = ir.VectorType(ir.IntType(32), LANES)


class RowsType(types.Type):
    """16 float32 values, one per row of a block, in a vector register."""

    def __init__(self):
        super().__init__(name=f"Rows{LANES}xfloat32")


class MaskType(types.Type):
    """16 booleans, one per lane."""

    def __init__(self):
        super().__init__(name=f"Mask{LANES}")


class KeysType(types.Type):
    """16 int32 order keys (fastce._vecmath.order_key of float32 bits), one per lane."""

    def __init__(self):
        super().__init__(name=f"Keys{LANES}xint32")


rows_type = RowsType()
mask_type = MaskType()
keys_type = KeysType()


@register_model(RowsType)
class _RowsModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _ROWS)


@register_model(MaskType)
class _MaskModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _MASK)


@register_model(KeysType)
class _KeysModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _WORDS)


add = intrinsic(lane_by_lane("fadd", rows_type))
add.__doc__ = "a + b lane by lane."
sub = intrinsic(lane_by_lane("fsub", rows_type))
sub.__doc__ = "a - b lane by lane."
mul = intrinsic(lane_by_lane("fmul", rows_type))
mul.__doc__ = "a * b lane by lane."
divide = intrinsic(lane_by_lane("fdiv", rows_type))
divide.__doc__ = "a / b lane by lane."
# The same on Lanes (16 float64): the per-row finish of a block's logits (see log_positive).
sub_wide = intrinsic(lane_by_lane("fsub"))
sub_wide.__doc__ = "a - b lane by lane (Lanes)."
divide_wide = intrinsic(lane_by_lane("fdiv"))
divide_wide.__doc__ = "a / b lane by lane (Lanes)."


def _vector_call(name, n_args, typingctx, args):
    """The signature and codegen of the LLVM intrinsic ``name``.v16f32 on ``n_args`` Rows."""
    if len(args) != n_args or any(a != rows_type for a in args):
        return None

    def codegen(context, builder, signature, values):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_ROWS, [_ROWS] * n_args),
                                                  f"{name}.v{LANES}f32")
        return builder.call(function, values)

    return rows_type(*args), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c lane by lane, one rounding (llvm.fma, as fastce._vecmath.fma)."""
    return _vector_call("llvm.fma", 3, typingctx, (a, b, c))


@intrinsic
def maxnum(typingctx, a, b):
    """max(a, b) lane by lane, ignoring a NaN operand (llvm.maxnum, as fastce._vecmath.maxnum)."""
    return _vector_call("llvm.maxnum", 2, typingctx, (a, b))


def _splat(vector, vector_type, element_type):
    """An @intrinsic typer: a float ``value`` (cast to ``element_type``) in every lane of ``vector_type``."""

    def typer(typingctx, value):
        if not isinstance(value, types.Float):
            return None

        def codegen(context, builder, signature, args):
            scalar = context.cast(builder, args[0], signature.args[0], element_type)
            one = builder.insert_element(ir.Constant(vector, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))

        return vector_type(value), codegen

    typer.__name__ = typer.__qualname__ = f"splat_{element_type}"
    return typer


splat = intrinsic(_splat(_ROWS, rows_type, types.float32))
splat.__doc__ = "``value`` (a float, rounded to float32) in every lane of a Rows."
splat_wide = intrinsic(_splat(_VECTOR, lanes_type, types.float64))
splat_wide.__doc__ = "``value`` (a float64) in every lane of a Lanes."


def _is_row(values, start, dtype):
    return (isinstance(values, types.Array) and values.ndim == 1 and values.layout == "C" and values.dtype == dtype
            and isinstance(start, types.Integer))


@intrinsic
def load(typingctx, values, start):
    """values[start:start + 16] of a contiguous 1-D float32 array with room (no bounds check)."""
    if not _is_row(values, start, types.float32):
        return None

    def codegen(context, builder, signature, args):
        pointer = _vector_pointer(context, builder, signature.args[0], args[0], signature.args[1], args[1])
        return builder.load(pointer, align=4)

    return rows_type(values, start), codegen


def _staged_pointer(context, builder, signature, args):
    """A pointer to 16 float32 at float32 index ``args[1]`` of the memory of a contiguous 1-D float32 or float64
    array ``args[0]`` (a float64 scratch holds twice as many float32), or of a ``stack_rows`` buffer."""
    if isinstance(signature.args[0], types.CPointer):
        data = args[0]
    else:
        buffer = context.make_array(signature.args[0])(context, builder, args[0])
        data = builder.bitcast(buffer.data, ir.FloatType().as_pointer())
    index = context.cast(builder, args[1], signature.args[1], types.intp)
    return builder.bitcast(builder.gep(data, [index]), _ROWS.as_pointer())


def _is_stage(buffer, start):
    return ((buffer == types.CPointer(types.float32)
             or (isinstance(buffer, types.Array) and buffer.ndim == 1 and buffer.layout == "C"
                 and buffer.dtype in (types.float32, types.float64)))
            and isinstance(start, types.Integer))


# stack_rows' room: a block's columns (kernels.COLUMN_WALK_MAX_CLASSES) of 16 lanes each.
STACK_ROWS = 32


@intrinsic
def stack_rows(typingctx):
    """A pointer to STACK_ROWS x 16 float32 on the calling function's stack (its entry block), for ``stage``."""

    def codegen(context, builder, signature, args):
        room = cgutils.alloca_once(builder, ir.ArrayType(ir.FloatType(), STACK_ROWS * LANES))
        return builder.bitcast(room, ir.FloatType().as_pointer())

    return types.CPointer(types.float32)(), codegen


@intrinsic
def stage(typingctx, buffer, start, rows):
    """Store 16 float32 at float32 index ``start`` of a scratch's memory (float32 or float64: see
    _staged_pointer), no bounds check: the caller knows the room."""
    if not _is_stage(buffer, start) or rows != rows_type:
        return None

    def codegen(context, builder, signature, args):
        builder.store(args[2], _staged_pointer(context, builder, signature, args), align=4)
        return context.get_dummy_value()

    return types.void(buffer, start, rows_type), codegen


@intrinsic
def staged(typingctx, buffer, start):
    """The 16 float32 that ``stage`` stored at float32 index ``start``."""
    if not _is_stage(buffer, start):
        return None

    def codegen(context, builder, signature, args):
        return builder.load(_staged_pointer(context, builder, signature, args), align=4)

    return rows_type(buffer, start), codegen


def _is_score_matrix(scores, *indices):
    return (isinstance(scores, types.Array) and scores.ndim == 2 and scores.layout == "C"
            and scores.dtype in _READABLE and scores.dtype != types.float64
            and all(isinstance(i, types.Integer) for i in indices))


def _entry_pointer(context, builder, signature, args):
    """A pointer to 16 entries of a C-contiguous 2-D array ``args[0]`` from row ``args[1]``, column ``args[2]``.

    Computed from the row length (no reshape: numba's reshape of a 2-D array calls into its runtime)."""
    scores = context.make_array(signature.args[0])(context, builder, args[0])
    row_length = cgutils.unpack_tuple(builder, scores.shape, 2)[1]
    row = context.cast(builder, args[1], signature.args[1], types.intp)
    column = context.cast(builder, args[2], signature.args[2], types.intp)
    entry = builder.gep(scores.data, [builder.add(builder.mul(row, row_length), column)])
    return builder.bitcast(entry, ir.VectorType(context.get_value_type(signature.args[0].dtype), LANES).as_pointer())


@intrinsic
def load_scores(typingctx, scores, row, column):
    """scores[row, column:column + 16] as float32 (exact): float32 scores or a 16-bit float view (see
    fastce._lanes), C-contiguous; one vector load with no bounds check (the caller knows the room)."""
    if not _is_score_matrix(scores, row, column):
        return None

    def codegen(context, builder, signature, args):
        vector = builder.load(_entry_pointer(context, builder, signature, args), align=scores.dtype.bitwidth // 8)
        return _to_rows(builder, vector, scores.dtype)

    return rows_type(scores, row, column), codegen


@intrinsic
def load_scores_head(typingctx, scores, row, column, count):
    """scores[row, column:column + count] as float32 in the first ``count`` lanes (0 <= count <= 16), 0 in
    the others: a masked load, which reads only those entries (it may end at the array's end)."""
    if not _is_score_matrix(scores, row, column, count):
        return None

    def codegen(context, builder, signature, args):
        mask = builder.icmp_signed("<", _LANE_NUMBERS, _broadcast_int64(context, builder, args[3], signature.args[3]))
        vector = masked_load(context, builder, scores.dtype, _entry_pointer(context, builder, signature, args), mask)
        return _to_rows(builder, vector, scores.dtype)

    return rows_type(scores, row, column, count), codegen


@intrinsic
def head(typingctx, count):
    """The Mask of the first ``count`` lanes."""
    if not isinstance(count, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.icmp_signed("<", _LANE_NUMBERS, _broadcast_int64(context, builder, args[0], signature.args[0]))

    return mask_type(count), codegen


@intrinsic
def store_wide(typingctx, values, start, lanes):
    """values[start:start + 16] = lanes (16 float64); ``values`` a contiguous 1-D float64 array with room."""
    if not _is_row(values, start, types.float64) or lanes != lanes_type:
        return None

    def codegen(context, builder, signature, args):
        builder.store(args[2], _vector_pointer(context, builder, signature.args[0], args[0], signature.args[1],
                                               args[1]), align=8)
        return context.get_dummy_value()

    return types.void(values, start, lanes), codegen


@intrinsic
def _exponent_and_fraction(typingctx, x):
    """(e as a float, f) with x = 2**e * f, f in [1, 2), for positive normal float64 lanes (their bits)."""
    if x != lanes_type:
        return None

    def codegen(context, builder, signature, args):
        words = ir.VectorType(ir.IntType(64), LANES)
        bits = builder.bitcast(args[0], words)
        exponent = builder.sub(builder.lshr(bits, ir.Constant(words, [52] * LANES)),
                               ir.Constant(words, [1023] * LANES))
        fraction = builder.or_(builder.and_(bits, ir.Constant(words, [_MANTISSA_MASK] * LANES)),
                               ir.Constant(words, [_EXPONENT_ONE] * LANES))
        return cgutils.make_anonymous_struct(builder, [builder.sitofp(exponent, _VECTOR),
                                                       builder.bitcast(fraction, _VECTOR)])

    return types.UniTuple(lanes_type, 2)(lanes_type), codegen


@intrinsic
def widen(typingctx, rows):
    """The 16 float32 as float64 (exact)."""
    if rows != rows_type:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(args[0], _VECTOR)

    return lanes_type(rows_type), codegen


@intrinsic
def narrow(typingctx, lanes):
    """16 float64 rounded to float32 (exact for the values of float32 and 16-bit scores)."""
    if lanes != lanes_type:
        return None

    def codegen(context, builder, signature, args):
        return builder.fptrunc(args[0], _ROWS)

    return rows_type(lanes_type), codegen


def _comparison(operator, ordered=True):
    """An @intrinsic typer: the Mask of ``a operator b`` lane by lane, for two Rows or two Lanes: Python's
    float comparison (``ordered``: false with a NaN operand; else true with one, as ``!=`` is)."""

    def typer(typingctx, a, b):
        if a != b or a not in (rows_type, lanes_type):
            return None

        def codegen(context, builder, signature, args):
            compare = builder.fcmp_ordered if ordered else builder.fcmp_unordered
            return compare(operator, args[0], args[1])

        return mask_type(a, b), codegen

    typer.__name__ = typer.__qualname__ = f"rows_compare_{operator}"
    return typer


greater = intrinsic(_comparison(">"))
greater_equal = intrinsic(_comparison(">="))
less = intrinsic(_comparison("<"))
less_equal = intrinsic(_comparison("<="))
equal = intrinsic(_comparison("=="))
not_equal = intrinsic(_comparison("!=", ordered=False))


both = intrinsic(lane_by_lane("and_", mask_type))
both.__doc__ = "a and b, lane by lane."
either = intrinsic(lane_by_lane("or_", mask_type))
either.__doc__ = "a or b, lane by lane."


@intrinsic
def count(typingctx, mask):
    """The number of lanes where ``mask`` holds (an int64)."""
    if mask != mask_type:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], ir.IntType(LANES))
        population = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(LANES),
                                                                                     [ir.IntType(LANES)]),
                                                    f"llvm.ctpop.i{LANES}")
        return builder.zext(builder.call(population, [bits]), ir.IntType(64))

    return types.int64(mask_type), codegen


@intrinsic
def first_lane(typingctx, mask):
    """The number of the first lane where ``mask`` holds (an int64), 16 where none does (llvm.cttz)."""
    if mask != mask_type:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], ir.IntType(LANES))
        trailing = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(LANES),
                                                                                   [ir.IntType(LANES), ir.IntType(1)]),
                                                  f"llvm.cttz.i{LANES}")
        return builder.zext(builder.call(trailing, [bits, ir.Constant(ir.IntType(1), 0)]), ir.IntType(64))

    return types.int64(mask_type), codegen


@intrinsic
def where(typingctx, mask, a, b):
    """a where ``mask`` holds, else b, lane by lane (Rows, Lanes of float64, or Keys)."""
    if mask != mask_type or a != b or a not in (rows_type, lanes_type, keys_type):
        return None

    def codegen(context, builder, signature, args):
        return builder.select(args[0], args[1], args[2])

    return a(mask_type, a, a), codegen


@intrinsic
def order_keys(typingctx, rows):
    """fastce._vecmath.order_key(ordered_bits(v)) of every lane: int32 keys ordered as the floats are (-0.0 just
    below +0.0, NaN beyond +-inf by its sign)."""
    if rows != rows_type:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], _WORDS)
        sign = builder.ashr(bits, ir.Constant(_WORDS, [31] * LANES))
        return builder.xor(bits, builder.and_(sign, ir.Constant(_WORDS, [0x7FFFFFFF] * LANES)))

    return keys_type(rows_type), codegen


@intrinsic
def float_bits(typingctx, rows):
    """fastce._vecmath.ordered_bits of every lane: the float32 bits as int32 (ordered as the floats for x >= +0.0)."""
    if rows != rows_type:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _WORDS)

    return keys_type(rows_type), codegen


def _keys_constant(value):
    """An @intrinsic typer: the int32 ``value`` in every lane of a Keys."""

    def typer(typingctx):
        def codegen(context, builder, signature, args):
            return ir.Constant(_WORDS, [value] * LANES)

        return keys_type(), codegen

    typer.__name__ = typer.__qualname__ = f"keys_{'lowest' if value < 0 else 'highest'}"
    return typer


lowest_keys = intrinsic(_keys_constant(-(2**31)))
lowest_keys.__doc__ = "The smallest key (int32 -2**31: the float32 bits 0xFFFFFFFF, a negative NaN) in every lane."
highest_keys = intrinsic(_keys_constant(2**31 - 1))
highest_keys.__doc__ = "The largest int32 (2**31 - 1) in every lane."


def _larger(builder, a, b):
    return builder.select(builder.icmp_signed(">", a, b), a, b)


def _smaller(builder, a, b):
    return builder.select(builder.icmp_signed("<", a, b), a, b)


max_keys = intrinsic(lane_by_lane(_larger, keys_type))
max_keys.__doc__ = "The larger key lane by lane."
min_keys = intrinsic(lane_by_lane(_smaller, keys_type))
min_keys.__doc__ = "The smaller key lane by lane."


def _keys_reduction(name):
    """An @intrinsic typer: the int32 llvm.vector.reduce.``name`` (smax, smin) of the 16 keys."""

    def typer(typingctx, keys):
        if keys != keys_type:
            return None

        def codegen(context, builder, signature, args):
            function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), [_WORDS]),
                                                      f"llvm.vector.reduce.{name}.v{LANES}i32")
            return builder.call(function, args)

        return types.int32(keys_type), codegen

    typer.__name__ = typer.__qualname__ = f"keys_reduce_{name}"
    return typer


largest_key = intrinsic(_keys_reduction("smax"))
largest_key.__doc__ = "The largest of the 16 keys, an int32."
smallest_key = intrinsic(_keys_reduction("smin"))
smallest_key.__doc__ = "The smallest of the 16 keys, an int32."


@intrinsic
def _power_of_two(typingctx, t, bias):
    """2**(n + bias) per lane, n in the low bits of t = x log2(e) + 1.5 * 2**23 (see _vecmath._exp_reduced_f32)."""
    if t != rows_type or not isinstance(bias, types.IntegerLiteral):
        return None

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], _WORDS)
        bits = builder.add(bits, ir.Constant(_WORDS, [127 + bias.literal_value] * LANES))
        bits = builder.shl(bits, ir.Constant(_WORDS, [23] * LANES))
        return builder.bitcast(bits, _ROWS)

    return rows_type(rows_type, bias), codegen


_NEG_INF = np.float32(-np.inf)
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


@kernel_step(**LEAF_OPTIONS)
def exp_difference(z, m):
    """fastce._vecmath.exp_difference_f32 of every lane: (exp(z - m) * 2**EXP_BIAS_F32, z == m), the same bits.

    z <= m lane by lane; 0 at z == m, and below exp(-156); NaN flows through.
    """
    inline_into_callers()
    x = sub(z, m)
    back = sub(x, z)
    x_lo = sub(sub(z, sub(x, back)), add(m, back))  # x + x_lo == z - m exactly (TwoSum)
    top = greater_equal(x, splat(_ZERO))
    x = where(top, splat(_NEG_INF), x)
    # _exp_reduced_f32, lane by lane.
    t = fma(x, splat(_LOG2E_F32), splat(_ROUNDER_F32))
    n = sub(t, splat(_ROUNDER_F32))
    r = add(fma(n, splat(-_LN2_HI_F32), x), fma(n, splat(-_LN2_LO_F32), x_lo))
    g4, g3, g2, g1, g0 = _EXP_F32_G
    p = fma(splat(g4), r, splat(g3))
    p = fma(p, r, splat(g2))
    p = fma(p, r, splat(g1))
    p = fma(p, r, splat(g0))
    p = fma(p, r, splat(_ONE))
    p = fma(p, r, splat(_ONE))
    e = mul(p, _power_of_two(t, EXP_BIAS_F32))
    return where(less(x, splat(_BIASED_FLOOR)), splat(_ZERO), e), top


def _transposed(builder, rows):
    """The 16 x 16 transpose of 16 vectors (lane l of result i = lane i of vector l): four stages of
    two-vector shuffles, each swapping one bit of the row and lane numbers (vpermt2ps on AVX-512)."""
    rows = list(rows)
    step = LANES // 2
    while step:
        for i in range(LANES):
            if i & step:
                continue
            a, b = rows[i], rows[i + step]
            low = [lane if not lane & step else LANES + lane - step for lane in range(LANES)]
            high = [lane + step if not lane & step else LANES + lane for lane in range(LANES)]
            rows[i] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), LANES), low))
            rows[i + step] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), LANES), high))
        step //= 2
    return rows


def _to_rows(builder, vector, dtype):
    """16 scores of ``dtype`` (float32, or the 16-bit views of float16 and bfloat16) as float32, exactly."""
    return vector if dtype == types.float32 else builder.fptrunc(_widen(builder, vector, dtype), _ROWS)


def _all_lanes(builder, condition):
    """An i1 condition as a Mask: every lane, or none."""
    return builder.select(condition, ir.Constant(_MASK, [1] * LANES), ir.Constant(_MASK, [0] * LANES))


@intrinsic
def transpose_rows(typingctx, flat, first_row, n_rows, n_classes, first_class, columns, offset):
    """columns[first_class + c, offset + i] = scores[first_row + i, first_class + c] as float32, for i < 16 and
    c < 16 (a tile of the block), in vector registers: 16 row loads, a 16 x 16 transpose, up to 16 stores.

    ``flat``: the scores, C-contiguous, flattened (float32 or a 16-bit float view); ``n_classes``
    their row length C.  Rows i >= ``n_rows`` are not read (their lanes are stored as 0, into the scratch's
    padding), classes past C neither read nor stored.  ``columns``: a C-contiguous 2-D float32 scratch with
    room for ``offset + 16`` entries a row.
    """
    if not (isinstance(flat, types.Array) and flat.ndim == 1 and flat.layout == "C"
            and flat.dtype in _READABLE and flat.dtype != types.float64
            and isinstance(columns, types.Array) and columns.ndim == 2 and columns.layout == "C"
            and columns.dtype == types.float32
            and all(isinstance(t, types.Integer) for t in (first_row, n_rows, n_classes, first_class, offset))):
        return None
    sig = types.void(flat, first_row, n_rows, n_classes, first_class, columns, offset)

    def codegen(context, builder, signature, args):
        flat_value, first_row, n_rows, n_classes, first_class, columns_value, offset = args
        i64 = ir.IntType(64)

        def as_i64(value, value_type):
            return context.cast(builder, value, value_type, types.int64)

        first_row, n_rows, n_classes, first_class, offset = (
            as_i64(v, t) for v, t in zip((first_row, n_rows, n_classes, first_class, offset),
                                         (signature.args[1], signature.args[2], signature.args[3], signature.args[4],
                                          signature.args[6])))
        width = builder.sub(n_classes, first_class)
        starts = [builder.add(builder.mul(builder.add(first_row, ir.Constant(i64, i)), n_classes), first_class)
                  for i in range(LANES)]
        # A whole tile whose last row's 16 entries lie within the array: plain loads (their lanes past the
        # row's width read the next row, and are not stored).  Masked loads only for a tile that ends the
        # array or its block: on AVX2 a 16-lane masked load is two vmaskmovps, and on Zen 3 those, and the
        # masked stores, made the transpose 27% of a C = 10 evaluate (perf).
        size = cgutils.unpack_tuple(builder, context.make_array(signature.args[0])(context, builder,
                                                                                   flat_value).shape, 1)[0]
        whole = builder.and_(builder.icmp_signed("==", n_rows, ir.Constant(i64, LANES)),
                             builder.icmp_signed("<=", builder.add(starts[-1], ir.Constant(i64, LANES)), size))
        element = ir.VectorType(context.get_value_type(flat.dtype), LANES)
        with builder.if_else(whole, likely=True) as (plain, masked):
            with plain:
                plain_rows = [builder.load(_vector_pointer(context, builder, signature.args[0], flat_value,
                                                           types.int64, start), align=flat.dtype.bitwidth // 8)
                              for start in starts]
                plain_block = builder.block
            with masked:
                in_row = builder.icmp_signed("<", _LANE_NUMBERS,
                                             _broadcast_int64(context, builder, width, types.int64))
                masked_rows = []
                for i, start in enumerate(starts):
                    mask = builder.and_(in_row,
                                        _all_lanes(builder, builder.icmp_signed("<", ir.Constant(i64, i), n_rows)))
                    pointer = _vector_pointer(context, builder, signature.args[0], flat_value, types.int64, start)
                    masked_rows.append(masked_load(context, builder, flat.dtype, pointer, mask))
                masked_block = builder.block
        joined = []
        for a, b in zip(plain_rows, masked_rows):  # every phi first: LLVM wants them at the top of the block
            joined.append(builder.phi(element))
            joined[-1].add_incoming(a, plain_block)
            joined[-1].add_incoming(b, masked_block)
        rows = [_to_rows(builder, row, flat.dtype) for row in joined]
        scratch = context.make_array(signature.args[5])(context, builder, columns_value)
        row_length = cgutils.unpack_tuple(builder, scratch.shape, 2)[1]
        # A column of the tile is stored whole or not at all: a branch (the same way for every tile of a
        # block) and a plain store, where a masked store with a uniform mask was two vmaskmovps on AVX2.
        for c, column in enumerate(_transposed(builder, rows)):
            with builder.if_then(builder.icmp_signed("<", ir.Constant(i64, c), width), likely=True):
                start = builder.add(builder.mul(builder.add(first_class, ir.Constant(i64, c)), row_length), offset)
                pointer = builder.bitcast(builder.gep(scratch.data, [start]), _ROWS.as_pointer())
                builder.store(column, pointer, align=4)
        return context.get_dummy_value()

    return sig, codegen


@kernel_step(**LEAF_OPTIONS)
def log_positive(x):
    """fastce._vecmath.log_positive of every lane (positive normal float64 lanes), the same operations: the
    same bits."""
    inline_into_callers()
    one = splat_wide(1.0)
    e, f = _exponent_and_fraction(x)
    big = greater(f, splat_wide(_SQRT2))
    f = where(big, lanes.mul(f, splat_wide(0.5)), f)
    e = where(big, lanes.add(e, one), e)
    u = divide_wide(sub_wide(f, one), lanes.add(f, one))
    u2 = lanes.mul(u, u)
    c = ATANH_SERIES
    p = splat_wide(c[0])
    p = lanes.fma(p, u2, splat_wide(c[1]))
    p = lanes.fma(p, u2, splat_wide(c[2]))
    p = lanes.fma(p, u2, splat_wide(c[3]))
    p = lanes.fma(p, u2, splat_wide(c[4]))
    p = lanes.fma(p, u2, splat_wide(c[5]))
    p = lanes.fma(p, u2, splat_wide(c[6]))
    p = lanes.fma(p, u2, splat_wide(c[7]))
    p = lanes.fma(p, u2, splat_wide(c[8]))
    p = lanes.fma(p, u2, splat_wide(c[9]))
    p = lanes.fma(p, u2, splat_wide(c[10]))
    return lanes.fma(e, splat_wide(_LN2_HI), lanes.fma(e, splat_wide(_LN2_LO),
                                                        lanes.mul(lanes.mul(splat_wide(2.0), u), p)))


@kernel_step(**LEAF_OPTIONS)
def reciprocal(x):
    """fastce._vecmath.reciprocal of every lane (1 / x: a float32 division and two Newton steps), the same bits."""
    inline_into_callers()
    one = splat_wide(1.0)
    r = widen(divide(splat(1.0), narrow(x)))
    minus_x = lanes.mul(x, splat_wide(-1.0))
    r = lanes.fma(r, lanes.fma(minus_x, r, one), r)
    return lanes.fma(r, lanes.fma(minus_x, r, one), r)
