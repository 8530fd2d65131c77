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

import math

import numpy as np
from numba import njit, types
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from fastce._config import KERNEL_OPTIONS


@intrinsic
def _bits_to_float64(typingctx, bits):
    """Reinterpret the 64 bits of an int64 as a float64 (no conversion)."""
    if not isinstance(bits, types.Integer) or bits.bitwidth != 64:
        return None
    sig = types.float64(bits)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return sig, codegen


@intrinsic
def _bits_to_float32(typingctx, bits):
    """Reinterpret the 32 bits of an int32 as a float32 (no conversion)."""
    if not isinstance(bits, types.Integer) or bits.bitwidth != 32:
        return None
    sig = types.float32(bits)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return sig, codegen


_LOG2E = 1.4426950408889634
# ln(2) split so that n * _LN2_HI is exact for |n| < 2**11 (Cody-Waite).
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10
# Below this, exp(x) < 1e-304: it cannot change a sum that already holds 1.
_EXP_FLOOR = -700.0


@njit(inline="always", **KERNEL_OPTIONS)
def exp_nonpositive(x):
    """exp(x) for x <= 0, to about 1 ulp; NaN stays NaN, x < -700 gives ~0.

    Used for exp(z - max(z)), where the max element contributes exactly 1.0, so
    values under exp(-700) are far below the rounding of the sum.
    """
    # Written so that NaN fails the comparison and passes through unchanged.
    x = _EXP_FLOOR if x < _EXP_FLOOR else x
    n = math.floor(x * _LOG2E + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    # Taylor series to degree 13: |r| <= 0.347, so the tail is below 1e-17.
    p = 1.6059043836821613e-10
    p = p * r + 2.08767569878681e-09
    p = p * r + 2.505210838544172e-08
    p = p * r + 2.755731922398589e-07
    p = p * r + 2.7557319223985893e-06
    p = p * r + 2.48015873015873e-05
    p = p * r + 0.0001984126984126984
    p = p * r + 0.001388888888888889
    p = p * r + 0.008333333333333333
    p = p * r + 0.041666666666666664
    p = p * r + 0.16666666666666666
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # A NaN n would make the integer conversion undefined: use 0 instead (p
    # is NaN already, so the result stays NaN).
    k = np.int64(n) if n == n else np.int64(0)
    return p * _bits_to_float64((k + 1023) << 52)


def as_float64(x):  # pragma: no cover - replaced by the overload in kernels
    return float(x)


@overload(as_float64, inline="always", jit_options=KERNEL_OPTIONS)
def _as_float64_overload(x):
    if isinstance(x, types.Float):
        return lambda x: np.float64(x)
    if x == types.uint16:
        # IEEE half: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits.
        def decode_float16(x):
            h = np.int64(x)
            sign = (h >> 15) << 63
            exponent = (h >> 10) & 0x1F
            mantissa = h & 0x3FF
            if exponent == 0:
                # Zero or subnormal: mantissa * 2**-24, exact in float64.
                value = np.float64(mantissa) * 5.960464477539063e-08
                return -value if sign != 0 else value
            if exponent == 0x1F:
                # inf (mantissa 0) or NaN: rebuild with the float64 exponent.
                return _bits_to_float64(sign | (np.int64(0x7FF) << 52) | (mantissa << 42))
            return _bits_to_float64(sign | ((exponent + (1023 - 15)) << 52) | (mantissa << 42))

        return decode_float16
    if x == types.int16:
        # bfloat16 is the top half of a float32.
        def decode_bfloat16(x):
            return np.float64(_bits_to_float32((np.int32(x) & 0xFFFF) << 16))

        return decode_bfloat16
    raise TypingError(f"fastce kernels read float32, float64 or 16-bit float views, not {x}")
