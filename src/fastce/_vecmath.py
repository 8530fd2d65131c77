"""Scalar math written so that LLVM can vectorise the loops that call it.

Numba lowers ``math.exp`` to a call into libm, which keeps every loop that
uses it scalar (current llvmlite ships no SVML).  ``exp_nonpositive`` below is
plain arithmetic -- range reduction, a polynomial, and the power of two built
from integer bits -- so a loop over a row becomes AVX2/AVX-512 code.

Half-precision inputs: numba has no float16 or bfloat16 type on the CPU, so
the door passes those arrays as 16-bit integer views (float16 as uint16,
bfloat16 as int16) and ``as_float64`` decodes the bits here, in registers.
"""

from __future__ import annotations


import os

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from fastce._config import INLINE_OVERLOAD_OPTIONS, KERNEL_OPTIONS, OVERLOAD_OPTIONS, kernel_step


def _bitcast_typer(source, target):
    """An @intrinsic typer reinterpreting the bits of a ``source`` value as ``target``."""

    def typer(typingctx, value):
        if value != source:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    return typer


@intrinsic
def bits_to_float64(typingctx, bits):
    """Reinterpret the 64 bits of an int64 as a float64 (no conversion)."""
    return _bitcast_typer(types.int64, types.float64)(typingctx, bits)


@intrinsic
def _bits_to_float32(typingctx, bits):
    """Reinterpret the 32 bits of an int32 as a float32 (no conversion)."""
    return _bitcast_typer(types.int32, types.float32)(typingctx, bits)


@intrinsic
def _float32_to_bits(typingctx, value):
    """Reinterpret the 32 bits of a float32 as an int32 (no conversion)."""
    return _bitcast_typer(types.float32, types.int32)(typingctx, value)


@intrinsic
def float64_to_bits(typingctx, value):
    """Reinterpret the 64 bits of a float64 as an int64 (no conversion)."""
    return _bitcast_typer(types.float64, types.int64)(typingctx, value)


def _llvm_intrinsic_call(name, n_args):
    """An @intrinsic typer calling the LLVM intrinsic ``name``.{f32,f64} (no fast-math flags).

    All arguments share one float type: float32 if every argument is float32,
    else float64 (numba casts the arguments to it).
    """

    def typer(typingctx, *args):
        if not all(isinstance(a, types.Float) for a in args):
            return None
        single = all(a == types.float32 for a in args)
        float_type = types.float32 if single else types.float64
        llvm_type = ir.FloatType() if single else ir.DoubleType()
        sig = float_type(*([float_type] * n_args))

        def codegen(context, builder, signature, values):
            fnty = ir.FunctionType(llvm_type, [llvm_type] * n_args)
            fn = cgutils.get_or_insert_function(builder.module, fnty, f"{name}.{'f32' if single else 'f64'}")
            return builder.call(fn, values)

        return sig, codegen

    return typer


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma): exact Horner steps, and vectorisable."""
    return _llvm_intrinsic_call("llvm.fma", 3)(typingctx, a, b, c)


@intrinsic
def maxnum(typingctx, a, b):
    """max(a, b) ignoring a NaN operand (llvm.maxnum): LLVM vectorises this reduction."""
    return _llvm_intrinsic_call("llvm.maxnum", 2)(typingctx, a, b)


@intrinsic
def minnum(typingctx, a, b):
    """min(a, b) ignoring a NaN operand (llvm.minnum)."""
    return _llvm_intrinsic_call("llvm.minnum", 2)(typingctx, a, b)


@intrinsic
def add_reassoc(typingctx, a, b):
    """a + b marked reassociable, on this one instruction only.

    LLVM vectorises a floating-point sum only when it may reorder it.  Giving
    that permission to the accumulating add alone (instead of fastmath on the
    whole kernel) keeps NaN/inf semantics and the exact range reduction of
    exp/log intact.  The order chosen is fixed at compile time, so results
    are still deterministic and independent of the thread count.
    """
    sig = types.float64(types.float64, types.float64)

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1], flags=("reassoc", "nsz"))

    return sig, codegen


_LOG2E = 1.4426950408889634
# ln(2) split so that n * _LN2_HI is exact for |n| < 2**11 (Cody-Waite).
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10
# Below this, exp(x) < 1e-304: it cannot change a sum that already holds 1.
_EXP_FLOOR = -700.0


# Adding 1.5 * 2**52 rounds a float64 of magnitude < 2**51 to an integer, and
# the low bits of the sum are that integer: no float-to-int conversion needed.
_ROUNDER = 6755399441055744.0


# exp_nonpositive's g(r) = E(r**2) + r O(r**2) (see there): the leading coefficient of each chain, then the others
# from high degree to low (its Horner order).  fastce._row_lanes' 16-lane twin takes the same.
_EXP_EVEN_TOP, _EXP_ODD_TOP = 2.7620075879983367e-07, 2.5100375832561234e-08
_EXP_EVEN = (2.4801521322368692e-05, 0.0013888888917196719, 0.041666666666624164, 0.5000000000000001)
_EXP_ODD = (2.7557268480310024e-06, 0.00019841269863040545, 0.008333333333330065, 0.16666666666666669)


@kernel_step(**KERNEL_OPTIONS)
def exp_nonpositive(x):
    """exp(x) for x <= 0, to about 1 ulp; NaN stays NaN, x < -700 gives 0.

    Used for exp(z - max(z)), where the max element contributes exactly 1.0, so
    values under exp(-700) are far below the rounding of the sum (and a -inf
    logit, a masked class, contributes exactly 0).

    Range reduction x = n ln2 + r, |r| <= ln2/2, with n rounded by the
    1.5 * 2**52 trick and 2**n built from the integer bits of that sum: only
    floating-point and integer arithmetic on well-defined values (a float-to-int
    conversion of NaN would be undefined), so NaN simply flows through.
    """
    t = fma(x, _LOG2E, _ROUNDER)
    n = t - _ROUNDER
    r = fma(n, -_LN2_HI, x)
    r = fma(n, -_LN2_LO, r)
    # exp(r) = 1 + r + r**2 g(r), g of degree 9 interpolated at Chebyshev nodes
    # of [-ln2/2, ln2/2] in 60-digit arithmetic: 1.6e-17 relative error with
    # the coefficients rounded to float64 (degree 11 in all; the Taylor series
    # needs degree 13 for the same).
    # g in two Horner chains in r**2, g = E(r**2) + r O(r**2): a dependency
    # chain of r**2, 4 FMAs and the combining FMA instead of Horner's 9 FMAs,
    # for one extra multiply.  On cores with
    # 16 vector registers (AVX2) and 4-cycle FMAs, plain Horner was bound by
    # that chain's latency (5.1 against 4.0 cycles per exp on Zen 3, in a
    # micro-benchmark of the exp-and-sum leaf not kept in the repository), and
    # Estrin's extra multiplies cost more than they gained (4.6).  The last two steps stay Horner's: they decide the
    # rounding of the result.
    r2 = r * r
    e3, e2, e1, e0 = _EXP_EVEN
    o3, o2, o1, o0 = _EXP_ODD
    even = fma(_EXP_EVEN_TOP, r2, e3)
    odd = fma(_EXP_ODD_TOP, r2, o3)
    even = fma(even, r2, e2)
    odd = fma(odd, r2, o2)
    even = fma(even, r2, e1)
    odd = fma(odd, r2, o1)
    even = fma(even, r2, e0)
    odd = fma(odd, r2, o0)
    p = fma(odd, r, even)
    p = fma(p, r, 1.0)
    p = fma(p, r, 1.0)
    # 2**n: the low bits of t hold n; shifting by 52 drops the rest of t's bits.
    scale = bits_to_float64((float64_to_bits(t) + 1023) << 52)
    return 0.0 if x < _EXP_FLOOR else p * scale


# float32 twins of the constants above.  Plain Python floats would turn
# float32 arithmetic into float64 (numba's typing), so each is a np.float32.
_LOG2E_F32 = np.float32(1.4426950408889634)
# The float32 nearest ln(2) (24 bits): with an FMA, x - n * _LN2_HI_F32 is
# exact for the reduced x (its exact value is a multiple of 2**-25 below 1).
_LN2_HI_F32 = np.float32(0.6931471824645996)
_LN2_LO_F32 = np.float32(-1.9046542121259336e-09)
_ROUNDER_F32 = np.float32(12582912.0)  # 1.5 * 2**23, see _ROUNDER
_ONE_F32 = np.float32(1.0)
_ZERO_F32 = np.float32(0.0)
# exp(r) = 1 + r + r**2 g(r) on |r| <= ln2/2, g of degree 4 interpolated at
# Chebyshev nodes in 60-digit arithmetic, coefficients rounded to float32:
# 9.7e-9 relative (0.08 ulp).  Degree 3 (a degree-5 exp) gives 4.1e-7, 3.4 ulp.
_EXP_F32_G = (
    np.float32(0.0013926175888627768),
    np.float32(0.008363173343241215),
    np.float32(0.041666556149721146),
    np.float32(0.16666577756404877),
    np.float32(0.5),
)
# exp_nonpositive_f32 builds 2**(n + 32) (a normal float32 down to n = -158)
# and multiplies by 2**-32 once: results in the subnormal range round once,
# correctly, and below -104 (exp < 2**-150) the result is 0.
_SUBNORMAL_BIAS = 32
_F32_FLOOR = np.float32(-104.0)
_TWO_M32 = np.float32(2.0**-32)
# exp_difference_f32: exp(x) * 2**100, normal down to x = -156 (n = -226) and at
# most 2**100 * sqrt(2): the kernels sum these in float64 and scale the sum
# by 2**-100 (exact), so terms far below float32's normal range keep their
# digits (a row whose loss is 1e-40 keeps a float32 ulp relative error).
EXP_BIAS_F32 = 100
_BIASED_FLOOR = np.float32(-156.0)


@kernel_step(**KERNEL_OPTIONS)
def _exp_reduced_f32(x, x_lo, bias):
    """(p, scale) with exp(x + x_lo) = p * scale * 2**-bias, in float32 arithmetic only.

    x, x_lo float32, x + x_lo the argument (x_lo a correction below x's
    ulp, see exp_difference_f32), -(150 + bias) ln 2 < x <= 0.  Cody-Waite:
    x = n ln2 + r, the high product exact (see _LN2_HI_F32), x_lo added to
    the small low-order term, so r has one rounding (2**-26 absolute).
    n rounded by the 1.5 * 2**23 trick, as in exp_nonpositive.
    """
    t = fma(x, _LOG2E_F32, _ROUNDER_F32)
    n = t - _ROUNDER_F32
    r = fma(n, -_LN2_HI_F32, x) + fma(n, -_LN2_LO_F32, x_lo)
    g4, g3, g2, g1, g0 = _EXP_F32_G
    p = fma(g4, r, g3)
    p = fma(p, r, g2)
    p = fma(p, r, g1)
    p = fma(p, r, g0)
    p = fma(p, r, _ONE_F32)
    p = fma(p, r, _ONE_F32)
    # 2**(n + bias) from the low bits of t (int32 arithmetic: the shift drops t's high bits).
    scale = _bits_to_float32(np.int32(np.int32(_float32_to_bits(t) + np.int32(127 + bias)) << np.int32(23)))
    return p, scale


@kernel_step(**KERNEL_OPTIONS)
def exp_nonpositive_f32(x):
    """exp(x) for a float32 x <= 0, to 1 float32 ulp, in float32 arithmetic; NaN stays NaN, x < -104 gives 0.

    The float32 twin of exp_nonpositive: twice the SIMD lanes, a degree-6
    polynomial instead of 11.  Subnormal results (x < -87.3) are rounded
    once from a normal intermediate (see _SUBNORMAL_BIAS).
    """
    p, scale = _exp_reduced_f32(x, _ZERO_F32, _SUBNORMAL_BIAS)
    return _ZERO_F32 if x < _F32_FLOOR else (p * scale) * _TWO_M32


_NEG_INF_F32 = np.float32(-np.inf)


@kernel_step(**KERNEL_OPTIONS)
def exp_difference_f32(z, m):
    """(exp(z - m) * 2**EXP_BIAS_F32, z == m) for float32 z <= m, in float32 arithmetic; 0 at z == m.

    For the sums of exp(z - max) of a row: the entries at the max are
    counted apart (``top``) and contribute 0 here.  z - m is rounded to
    float32 with its rounding error kept (Knuth's TwoSum, six operations,
    no branch) and fed to the exp: without it, exp would carry that
    rounding (up to 2**-18 absolute for |z - m| near 100, a relative error
    of 2**-18: 25 float32 ulp in a confident row's loss, measured).  The
    result is 0 below exp(-156); NaN flows through (inf - inf, a NaN entry).
    One function rather than three: each numba function adds to the cold
    compile.
    """
    x = z - m
    back = x - z
    x_lo = (z - (x - back)) - (m + back)  # x + x_lo == z - m exactly (NaN/inf if not finite: discarded)
    top = x >= _ZERO_F32
    x = _NEG_INF_F32 if top else x
    p, scale = _exp_reduced_f32(x, x_lo, EXP_BIAS_F32)
    return (_ZERO_F32 if x < _BIASED_FLOOR else p * scale), top


_SQRT2 = 1.4142135623730951
_MANTISSA_MASK = (1 << 52) - 1
_EXPONENT_ONE = 1023 << 52


# atanh_series' coefficients 1 / (2k + 1), k = 10 down to 0 (its Horner order; fastce._column_lanes takes them too).
ATANH_SERIES = (0.047619047619047616, 0.05263157894736842, 0.058823529411764705, 0.06666666666666667,
                0.07692307692307693, 0.09090909090909091, 0.1111111111111111, 0.14285714285714285, 0.2,
                0.3333333333333333, 1.0)


@kernel_step(**KERNEL_OPTIONS)
def atanh_series(u2):
    """sum_{k=0}^{10} u2**k / (2k + 1), so that log((1 + u) / (1 - u)) = 2 u atanh_series(u * u).

    For |u| <= 0.172 (the reduced ranges of the logs here) the next term is below 1e-18.
    """
    c = ATANH_SERIES
    p = c[0]
    p = fma(p, u2, c[1])
    p = fma(p, u2, c[2])
    p = fma(p, u2, c[3])
    p = fma(p, u2, c[4])
    p = fma(p, u2, c[5])
    p = fma(p, u2, c[6])
    p = fma(p, u2, c[7])
    p = fma(p, u2, c[8])
    p = fma(p, u2, c[9])
    p = fma(p, u2, c[10])
    return p


@kernel_step(**KERNEL_OPTIONS)
def log_positive(x):
    """log(x) for a normal positive float64, to about 1 ulp, in plain arithmetic.

    x = 2**e * f with f in [sqrt(1/2), sqrt(2)); log f = 2 atanh(u) with
    u = (f - 1) / (f + 1), |u| <= 0.172, summed as an odd series.  Callers
    never pass zero, subnormals, inf or NaN through a result they keep.
    """
    bits = float64_to_bits(x)
    e = (bits >> 52) - 1023
    f = bits_to_float64((bits & _MANTISSA_MASK) | _EXPONENT_ONE)
    big = f > _SQRT2
    f = f * 0.5 if big else f
    e = e + 1 if big else e
    u = (f - 1.0) / (f + 1.0)
    u2 = u * u
    p = atanh_series(u2)
    ef = np.float64(e)
    return fma(ef, _LN2_HI, fma(ef, _LN2_LO, 2.0 * u * p))


@kernel_step(**KERNEL_OPTIONS)
def reciprocal(x):
    """1 / x for a positive normal float64 within float32's range, to about 1 ulp, without a float64 division.

    A float32 division (2**-24) refined by two Newton steps with FMAs
    (2**-48, then the float64 rounding).  On AVX-512 a float64 division
    occupies the divider for 16 cycles per 8 lanes, the float32 one for 5:
    the short-row kernel's logits finish took three float64 divisions per
    row, which bounded it.
    """
    r = np.float64(np.float32(1.0) / np.float32(x))
    r = fma(r, fma(-x, r, 1.0), r)
    return fma(r, fma(-x, r, 1.0), r)


@kernel_step(**KERNEL_OPTIONS)
def log1p_nonnegative(a):
    """log(1 + a) for a >= 0 without losing the low bits of a (NaN stays NaN)."""
    u = 1.0 + a
    # (u - 1) - a is the rounding error of 1 + a; dividing by u corrects log(u).
    corrected = log_positive(u) - ((u - 1.0) - a) / u
    return a if u == 1.0 else corrected


def _host_has(feature: str) -> bool:
    """Whether the CPU numba compiles for has ``feature`` (LLVM's name: "f16c", "avx512f").

    numba compiles with NUMBA_CPU_FEATURES when it is set (NUMBA_CPU_NAME=generic
    sets it to "", a portable build) and with the host's features otherwise
    (numba.core.codegen): the same rule here.
    """
    try:
        from numba.core import config

        if config.CPU_FEATURES is not None:
            return f"+{feature}" in config.CPU_FEATURES.split(",")
        import llvmlite.binding as llvm

        return bool(llvm.get_host_cpu_features().get(feature, False))
    except Exception:  # pragma: no cover - feature query unavailable
        return False


# x86 CPUs since 2012 convert half floats in hardware (vcvtph2ps, 8 or 16 per
# instruction).  Without F16C, LLVM would call a compiler-rt helper that
# numba's JIT may not provide, so the bit decoder below is used instead.
HAS_F16C = _host_has("f16c")
# 32 vector registers of 512 bits (AVX-512) or 16 of 256 (AVX2): kernels whose
# explicit 16-lane vectors fit the one register file and spill from the other
# take a form per kind, the same operations in the same order (the same bits):
# one loop ("fused") with AVX-512, loops that each fit ("staged") without.
HAS_AVX512 = _host_has("avx512f")
# FASTCE_VECTOR_FORMS=fused or staged picks the forms whatever the host: for
# tests that run both on one machine, each with a numba cache of its own (the
# cache is keyed on the CPU's features, not on this choice).
STAGED_FORMS = {"fused": False, "staged": True}.get(os.environ.get("FASTCE_VECTOR_FORMS", ""), not HAS_AVX512)


@intrinsic
def _half_bits_to_float32(typingctx, bits):
    """Convert IEEE half-precision bits (a uint16) to float32 with LLVM's ``fpext half``."""
    if bits != types.uint16:
        return None
    sig = types.float32(bits)

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen


def as_float64(x):  # pragma: no cover - replaced by the overload in kernels
    return float(x)


def as_native(x):  # pragma: no cover - replaced by the overload in kernels
    return float(x)


@overload(as_native, jit_options=OVERLOAD_OPTIONS)
def _as_native_overload(x):
    """The narrowest float holding x exactly: float32 for 16/32-bit inputs, float64 for float64.

    Comparisons (max, rank) run in this type: exact, and twice as many SIMD
    lanes as float64 for float32 data.
    """
    if x == types.float64:
        return lambda x: x
    if x == types.float32:
        return lambda x: x
    if x == types.uint16 and HAS_F16C:
        return lambda x: _half_bits_to_float32(x)
    if x in (types.uint16, types.int16):
        return lambda x: np.float32(as_float64(x))
    raise TypingError(f"fastce kernels read float32, float64 or 16-bit float views, not {x}")


@overload(as_float64, jit_options=OVERLOAD_OPTIONS)
def _as_float64_overload(x):
    if isinstance(x, types.Float):
        return lambda x: np.float64(x)
    if x == types.uint16 and HAS_F16C:
        return lambda x: np.float64(_half_bits_to_float32(x))
    if x == types.uint16:
        # IEEE half: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits.
        def decode_float16(x):
            # One return point: numba's inliner mis-handles several (SSA warnings).
            h = np.int64(x)
            sign = (h >> 15) << 63
            exponent = (h >> 10) & 0x1F
            mantissa = h & 0x3FF
            # Normal numbers rebias the exponent; inf/NaN keep an all-ones one.
            biased = np.int64(0x7FF) if exponent == 0x1F else exponent + (1023 - 15)
            normal = bits_to_float64(sign | (biased << 52) | (mantissa << 42))
            # Zero and subnormals: mantissa * 2**-24, exact in float64.
            tiny = np.float64(mantissa) * 5.960464477539063e-08
            tiny = -tiny if sign != 0 else tiny
            return tiny if exponent == 0 else normal

        return decode_float16
    if x == types.int16:
        # bfloat16 is the top half of a float32.
        def decode_bfloat16(x):
            return np.float64(_bits_to_float32(np.int32((np.int64(x) & 0xFFFF) << 16)))  # int32 wraps

        return decode_bfloat16
    raise TypingError(f"fastce kernels read float32, float64 or 16-bit float views, not {x}")


def ordered_bits(x):  # pragma: no cover - replaced by the overload below
    return x


def from_ordered_bits(bits):  # pragma: no cover - replaced by the overload below
    return bits


# These three are compiled as small functions (measured as fast), not
# inlined by numba (``inline="always"``): with numba's IR inlining, using them
# in both the logits and the probability walks of one float64 kernel lost a
# "value below 0" count (tests/test_evaluate.py::test_proba_sign_bit_entries).
@overload(ordered_bits, jit_options=OVERLOAD_OPTIONS)
def _ordered_bits_overload(x):
    """The bits of a float32 / float64 as a signed integer of the same width.

    For x >= +0.0 (NaN with a clear sign bit above +inf) the integers are
    ordered as the floats are, so an integer max or min -- one SIMD
    instruction, where a float maxnum needs three to ignore NaN -- finds the
    extreme of non-negative data.  Any value with the sign bit set (negative,
    -0.0, a negative NaN) maps to a negative integer, which the caller takes
    as the sign to redo the reduction in floats.
    """
    if x == types.float32:
        return lambda x: _float32_to_bits(x)
    if x == types.float64:
        return lambda x: float64_to_bits(x)
    raise TypingError(f"ordered_bits takes float32 or float64, not {x}")


@overload(from_ordered_bits, jit_options=OVERLOAD_OPTIONS)
def _from_ordered_bits_overload(bits):
    if bits == types.int32:
        return lambda bits: _bits_to_float32(bits)
    if bits == types.int64:
        return lambda bits: bits_to_float64(bits)
    raise TypingError(f"from_ordered_bits takes int32 or int64, not {bits}")


def order_key(bits):  # pragma: no cover - replaced by the overload below
    return bits


@overload(order_key, jit_options=OVERLOAD_OPTIONS)
def _order_key_overload(bits):
    """ordered_bits of any float -> an integer ordered as the floats are (its own inverse).

    Negative values get their magnitude bits flipped, so that they sort
    below zero in reverse magnitude; -0.0 sorts just below +0.0 and NaN
    beyond +-inf (by its sign).  An integer max over these keys is one SIMD
    instruction per vector, with no NaN blend.
    """
    if bits == types.int32:
        def key32(bits):
            return np.int32(bits ^ (np.int32(bits >> np.int32(31)) & np.int32(0x7FFFFFFF)))

        return key32
    if bits == types.int64:
        def key64(bits):
            return bits ^ ((bits >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))

        return key64
    raise TypingError(f"order_key takes int32 or int64, not {bits}")


_WIDE_VECTORS = '"prefer-vector-width"="512"'


@intrinsic
def prefer_wide_vectors(typingctx):
    """Let LLVM use 512-bit vectors in the function being compiled (a no-op elsewhere).

    On AVX-512 hosts LLVM prefers 256-bit vectors by default; the float64
    exp/log loops of the kernels run ~1.4x faster with 512-bit ones (measured
    single-threaded: 1.24 -> 0.87 ns per float32 logit at C=1000).  The
    attribute only states a preference: hosts without AVX-512 keep their
    widest vectors.  llvmlite has no public API for string attributes, so
    this extends the set it accepts; if that ever fails, the kernels simply
    compile with the default width.
    """
    sig = types.void()

    def codegen(context, builder, signature, args):
        attributes = builder.function.attributes
        try:
            attributes._known = attributes._known | {_WIDE_VECTORS}
            attributes.add(_WIDE_VECTORS)
        except (AttributeError, TypeError, ValueError):  # pragma: no cover - llvmlite internals changed
            pass
        return context.get_dummy_value()

    return sig, codegen


def _inlining(attribute: str, unless: str, name: str, doc: str):
    """An @intrinsic giving the function being compiled the LLVM ``attribute`` (unless it has ``unless``)."""

    def typer(typingctx):
        def codegen(context, builder, signature, args):
            attributes = builder.function.attributes
            if unless not in attributes:
                attributes.add(attribute)
            return context.get_dummy_value()

        return types.void(), codegen

    typer.__name__ = typer.__qualname__ = name  # numba names an intrinsic after its typer
    typer.__doc__ = doc
    return intrinsic(typer)


compile_apart = _inlining("noinline", "alwaysinline", "compile_apart", """Keep the function being compiled out of its callers (LLVM ``noinline``).

With ``prefer_wide_vectors`` it makes a leaf whose loops get 512-bit
vectors while the caller keeps 256-bit ones: wide vectors speed up the
float64 exp/log loops but slow down the max/count reductions (measured),
and inlining would hand the leaf the caller's preference.  Never for a
function with reassociated sums (tests/test_one_copy.py).""")

inline_into_callers = _inlining("alwaysinline", "noinline", "inline_into_callers", """Have LLVM inline the function being compiled into its callers (``alwaysinline``).

For a per-row helper too large for LLVM's inlining threshold, whose call
would keep the caller's loop scalar, and for every function whose sums
LLVM may reassociate (tests/test_one_copy.py: one compiled copy runs).
Unlike numba's ``inline="always"``, the function is typed and lowered
once, not at every call site (compile time).""")


@intrinsic
def prefetch(typingctx, array, row, column):
    """Ask the CPU to bring ``array[row, column]``'s cache line into L1 ahead of its use (never faults).

    A hint (``llvm.prefetch``, read, locality 3: prefetcht0; locality 2,
    into L2, measured x0.94 against x0.88 for this one at C = 1000): no
    bounds check, no effect on any result.  See kernels._prefetch_next_row.
    """
    if not (isinstance(array, types.Array) and array.ndim == 2 and isinstance(row, types.Integer)
            and isinstance(column, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        indices = [context.cast(builder, value, kind, types.intp)
                   for value, kind in zip(args[1:], signature.args[1:])]
        pointer = cgutils.get_item_pointer2(context, builder, view.data, cgutils.unpack_tuple(builder, view.shape),
                                            cgutils.unpack_tuple(builder, view.strides), array_type.layout, indices)
        byte_pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        hint = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [byte_pointer.type, ir.IntType(32), ir.IntType(32), ir.IntType(32)]),
            "llvm.prefetch.p0",
        )
        i32 = ir.IntType(32)
        builder.call(hint, [byte_pointer, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(array, row, column), codegen


CACHE_LINE_BYTES = 64


def entries_per_line(array):  # pragma: no cover - replaced by the overload below
    return CACHE_LINE_BYTES // array.itemsize


@overload(entries_per_line, inline="always", jit_options=INLINE_OVERLOAD_OPTIONS)
def _entries_per_line_overload(array):
    """Entries of ``array`` in a 64-byte cache line, a compile-time constant of its type.

    Not ``array.itemsize``: read in a loop, that attribute made numba take
    and drop a reference to the array (two atomic operations on a counter
    both threads share) at every call of the row loops that prefetch.
    """
    if not isinstance(array, types.Array):
        return None
    step = max(1, CACHE_LINE_BYTES // (array.dtype.bitwidth // 8))
    return lambda array: step
