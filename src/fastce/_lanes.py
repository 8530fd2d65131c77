"""Float64 sums whose order is written in the source: 16 lanes, the same bits everywhere.

A sum that LLVM may reassociate (``_vecmath.add_reassoc``) is as fast as the
machine allows, but its order is LLVM's choice: the vector width (AVX2 or
AVX-512), the interleaving, the remainder loop, and the context it was
optimised in.  The same rows then sum to different last bits on the two
machine kinds this project runs on, and in two compiled copies of one
function (tests/test_one_copy.py).

``Lanes`` is an LLVM vector of 16 float64 values, a numba type with a few
operations (``zero``, ``add``, ``mul``, ``fma``, ``load``, ``load_head``, ``zero_lane``, ``total``).  Arithmetic on it
is element-wise IEEE arithmetic with no fast-math flag, so no optimiser and
no instruction set may change its result: it compiles to two 512-bit or
four 256-bit registers and runs as fast as the reassociated loop (measured:
0.09 ns per float32 entry for a sum and a sum of squares, either form).

The order, for ``ordered_sum(values, count)``: two sets of 16 lanes, A and
B, start at +0.0.  The entries are taken in groups of 32, in increasing
position: lane ``l`` of A adds entry ``32 m + l`` of group m, lane ``l`` of B
entry ``32 m + 16 + l``.  What is left after the whole groups of 32 goes
into A, 16 at a time (the last 16 padded with +0.0, which changes no sum).
Then A + B lane by lane, and the lanes added pairwise: lane l and l + 8,
then l + 4, l + 2, l + 1.  The kernels' row sums follow the same rule.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils, errors
from numba.extending import intrinsic, models, register_model

from fastce._config import KERNEL_OPTIONS, LEAF_OPTIONS, kernel, kernel_step
from fastce._vecmath import HAS_F16C, inline_into_callers

LANES = 16
_VECTOR = ir.VectorType(ir.DoubleType(), LANES)


class LanesType(types.Type):
    """16 float64 values held in vector registers."""

    def __init__(self):
        super().__init__(name=f"Lanes{LANES}xfloat64")


lanes_type = LanesType()


@register_model(LanesType)
class _LanesModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VECTOR)


@intrinsic
def zero(typingctx):
    """Lanes of +0.0."""

    def codegen(context, builder, signature, args):
        return ir.Constant(_VECTOR, [0.0] * LANES)

    return lanes_type(), codegen


def lane_by_lane(instruction, vector_type=None):
    """An @intrinsic typer for ``instruction`` (the name of an llvmlite IRBuilder method, or a function of the
    builder and two values) applied lane by lane to two values of ``vector_type`` (Lanes by default;
    fastce._column_lanes passes its own), with no fast-math flag (IEEE arithmetic)."""
    vector_type = lanes_type if vector_type is None else vector_type
    if callable(instruction):
        apply, name = instruction, instruction.__name__.strip("_")
    else:
        apply, name = (lambda builder, a, b: getattr(builder, instruction)(a, b)), instruction.rstrip("_")

    def typer(typingctx, a, b):
        if a != vector_type or b != vector_type:
            return None

        def codegen(context, builder, signature, args):
            return apply(builder, args[0], args[1])

        return vector_type(vector_type, vector_type), codegen

    # numba names an intrinsic after its typer
    typer.__name__ = typer.__qualname__ = f"{vector_type.name}_{name}"
    return typer


add = intrinsic(lane_by_lane("fadd"))
add.__doc__ = "a + b lane by lane (IEEE, no fast-math flag)."
mul = intrinsic(lane_by_lane("fmul"))
mul.__doc__ = "a * b lane by lane (IEEE, no fast-math flag)."


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c lane by lane with one rounding (llvm.fma): where a * b is exact (a float32 squared, say),
    the bits of add(c, mul(a, b)) in one instruction instead of two."""
    if a != lanes_type or b != lanes_type or c != lanes_type:
        return None

    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3),
                                                  f"llvm.fma.v{LANES}f64")
        return builder.call(function, args)

    return lanes_type(lanes_type, lanes_type, lanes_type), codegen


# Element types ``load`` reads: floats, and the 16-bit views the kernels pass
# for float16 (uint16) and bfloat16 (int16) scores (see fastce._vecmath).
_READABLE = (types.float32, types.float64, types.uint16, types.int16)
_MASKED_LOAD_SUFFIX = {types.float32: "f32", types.float64: "f64", types.uint16: "i16", types.int16: "i16"}


def _check_readable(name, values, *indices):
    if not (isinstance(values, types.Array) and values.ndim == 1 and values.layout == "C"
            and values.dtype in _READABLE and all(isinstance(i, types.Integer) for i in indices)):
        raise errors.TypingError(f"lanes.{name} takes a contiguous 1-D float32/float64 (or 16-bit float view) "
                                 f"array and integers, not {values}, {indices}")


def _widen(builder, vector, dtype):
    """16 entries of ``dtype`` -> 16 float64, exactly (float16 and bfloat16 decoded from their bits)."""
    if dtype == types.float64:
        return vector
    if dtype == types.uint16 and not HAS_F16C:
        return _decode_half_bits(builder, vector)
    if dtype == types.uint16:  # IEEE half, converted by F16C's vcvtph2ps
        vector = builder.bitcast(vector, ir.VectorType(ir.HalfType(), LANES))
    elif dtype == types.int16:  # bfloat16: the top half of a float32
        wide = builder.zext(vector, ir.VectorType(ir.IntType(32), LANES))
        wide = builder.shl(wide, ir.Constant(ir.VectorType(ir.IntType(32), LANES), [16] * LANES))
        vector = builder.bitcast(wide, ir.VectorType(ir.FloatType(), LANES))
    return builder.fpext(vector, _VECTOR)


def _decode_half_bits(builder, bits):
    """16 IEEE half floats (their bits, <16 x i16>) -> 16 float64, exactly, with integer operations.

    For CPUs without F16C, where LLVM's ``fpext half`` calls a compiler-rt
    helper that numba's JIT does not provide (the process aborts): the
    vector form of _vecmath's scalar decoder, the same values.
    """
    words = ir.VectorType(ir.IntType(64), LANES)

    def constant(value):
        return ir.Constant(words, [value] * LANES)

    h = builder.zext(bits, words)
    sign = builder.shl(builder.lshr(h, constant(15)), constant(63))
    exponent = builder.and_(builder.lshr(h, constant(10)), constant(0x1F))
    mantissa = builder.and_(h, constant(0x3FF))
    # Normal numbers rebias the exponent; inf and NaN keep an all-ones one.
    special = builder.icmp_unsigned("==", exponent, constant(0x1F))
    biased = builder.select(special, constant(0x7FF), builder.add(exponent, constant(1023 - 15)))
    normal = builder.or_(builder.or_(sign, builder.shl(biased, constant(52))), builder.shl(mantissa, constant(42)))
    normal = builder.bitcast(normal, _VECTOR)
    # Zero and subnormals: mantissa * 2**-24, exact in float64, with the sign.
    tiny = builder.fmul(builder.uitofp(mantissa, _VECTOR), ir.Constant(_VECTOR, [2.0 ** -24] * LANES))
    tiny = builder.select(builder.icmp_unsigned("!=", sign, constant(0)),
                          builder.fsub(ir.Constant(_VECTOR, [-0.0] * LANES), tiny), tiny)
    return builder.select(builder.icmp_unsigned("==", exponent, constant(0)), tiny, normal)


def _vector_pointer(context, builder, array_type, array_value, start_type, start_value):
    array = context.make_array(array_type)(context, builder, array_value)
    index = context.cast(builder, start_value, start_type, types.intp)
    element = context.get_value_type(array_type.dtype)
    return builder.bitcast(builder.gep(array.data, [index]), ir.VectorType(element, LANES).as_pointer())


def _broadcast_int64(context, builder, value, value_type):
    scalar = context.cast(builder, value, value_type, types.int64)
    vector_type = ir.VectorType(ir.IntType(64), LANES)
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


_LANE_NUMBERS = ir.Constant(ir.VectorType(ir.IntType(64), LANES), list(range(LANES)))


@intrinsic
def load(typingctx, values, start):
    """values[start:start + 16] as float64 lanes (exact).

    The caller guarantees ``start + 16 <= len(values)`` (one vector load, no
    bounds check).
    """
    _check_readable("load", values, start)

    def codegen(context, builder, signature, args):
        pointer = _vector_pointer(context, builder, signature.args[0], args[0], signature.args[1], args[1])
        vector = builder.load(pointer, align=values.dtype.bitwidth // 8)
        return _widen(builder, vector, values.dtype)

    return lanes_type(values, start), codegen


@intrinsic
def load_head(typingctx, values, start, count):
    """values[start:start + count] in the first ``count`` lanes (0 <= count <= 16), +0.0 in the others.

    A masked load: only those ``count`` entries are read, so it may end
    exactly at the array's end.
    """
    _check_readable("load_head", values, start, count)

    def codegen(context, builder, signature, args):
        pointer = _vector_pointer(context, builder, signature.args[0], args[0], signature.args[1], args[1])
        mask = builder.icmp_signed("<", _LANE_NUMBERS, _broadcast_int64(context, builder, args[2], signature.args[2]))
        return _widen(builder, masked_load(context, builder, values.dtype, pointer, mask), values.dtype)

    return lanes_type(values, start, count), codegen


def masked_load(context, builder, dtype, pointer, mask):
    """The 16 entries of ``dtype`` at ``pointer`` where ``mask`` (<16 x i1>) holds, 0 elsewhere (llvm.masked.load:
    only those entries are read)."""
    vector_type = ir.VectorType(context.get_value_type(dtype), LANES)
    function = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(vector_type, [vector_type.as_pointer(), ir.IntType(32), mask.type, vector_type]),
        f"llvm.masked.load.v{LANES}{_MASKED_LOAD_SUFFIX[dtype]}.p0",
    )
    zeros = ir.Constant(vector_type, [0.0 if isinstance(dtype, types.Float) else 0] * LANES)
    return builder.call(function, [pointer, ir.Constant(ir.IntType(32), dtype.bitwidth // 8), mask, zeros])


@intrinsic
def zero_lane(typingctx, a, lane):
    """``a`` with lane number ``lane`` set to +0.0 (unchanged when ``lane`` is outside [0, 16))."""
    if a != lanes_type or not isinstance(lane, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        hit = builder.icmp_signed("==", _LANE_NUMBERS, _broadcast_int64(context, builder, args[1], signature.args[1]))
        return builder.select(hit, ir.Constant(_VECTOR, [0.0] * LANES), args[0])

    return lanes_type(lanes_type, lane), codegen


@intrinsic
def total(typingctx, a):
    """The lanes added pairwise: lane l + lane l + 8, then + 4, + 2, + 1 (a fixed tree)."""
    if a != lanes_type:
        return None

    def codegen(context, builder, signature, args):
        vector, width = args[0], LANES
        while width > 1:
            half = width // 2
            low = builder.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(ir.IntType(32), half),
                                                                     list(range(half))))
            high = builder.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(ir.IntType(32), half),
                                                                      list(range(half, width))))
            vector, width = builder.fadd(low, high), half
        return builder.extract_element(vector, ir.Constant(ir.IntType(32), 0))

    return types.float64(lanes_type), codegen


@njit(inline="always", **KERNEL_OPTIONS)
def add_values_and_squares(values, count, total_a, total_b, squares_a, squares_b):
    """The lane sets (A, B) of sum(values[:count]) and sum(values[:count]**2), added to the ones given.

    In the order of this module's docstring: two lane sets, so that each
    sum runs as 4 independent chains of 512-bit adds (8 of 256-bit ones),
    enough to hide the add latency (one set measured 1.4x slower at 100
    entries).  Carry the sets from call to call to sum a long row chunk by
    chunk; ``finish`` them.
    """
    whole = count - count % (2 * LANES)
    for j in range(0, whole, 2 * LANES):
        v = load(values, j)
        total_a = add(total_a, v)
        squares_a = add(squares_a, mul(v, v))
        v = load(values, j + LANES)
        total_b = add(total_b, v)
        squares_b = add(squares_b, mul(v, v))
    for j in range(whole, count, LANES):
        v = load_head(values, j, min(LANES, count - j))
        total_a = add(total_a, v)
        squares_a = add(squares_a, mul(v, v))
    return total_a, total_b, squares_a, squares_b


@kernel_step(**LEAF_OPTIONS)
def finish(a, b):
    """The sum held in lane sets A and B: A + B lane by lane, then the pairwise tree."""
    return total(add(a, b))


@kernel_step(**LEAF_OPTIONS)
def add_values(values, count, a, b):
    """The lane sets (A, B) of sum(values[:count]) added to the ones given (see add_values_and_squares)."""
    return add_values_at(values, 0, count, a, b)


@kernel_step(**LEAF_OPTIONS)
def add_values_at(values, start, count, a, b):
    """add_values of values[start:start + count] (no view made: the loads take the offset)."""
    inline_into_callers()  # into its callers' row loops (fastce._target_flags: a call a row)
    whole = count - count % (2 * LANES)
    for j in range(0, whole, 2 * LANES):
        a = add(a, load(values, start + j))
        b = add(b, load(values, start + j + LANES))
    for j in range(whole, count, LANES):
        a = add(a, load_head(values, start + j, min(LANES, count - j)))
    return a, b


@kernel(**LEAF_OPTIONS)
def ordered_sum(values, count):
    """values[0] + ... + values[count - 1] in the order of this module's docstring (float64).

    ``values`` a contiguous 1-D float64 or float32 array (or 16-bit float
    view).  The same bits for any compiler context, vector instruction set
    or caller.
    """
    a, b = add_values(values, count, zero(), zero())
    return finish(a, b)
