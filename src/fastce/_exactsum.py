"""Exact (error-free) accumulation of float64 values in fixed point.

Every finite float64 is an integer multiple of 2**-1126 (we leave 52 bits of
room below the smallest subnormal), so a sum of float64 values can be held
exactly as a wide integer split into 32-bit limbs stored in int64 slots.
Adding is integer addition, so merging two accumulators is exact, associative
and commutative: the merged result does not depend on the order in which
blocks, threads, streaming updates or Dask partitions are combined.  Only the
final conversion to float64 rounds, once, correctly (Python's int division).

Kernels add one value per block of rows (not per row), so the cost is
negligible next to reading the block.
"""

from __future__ import annotations

import math

import numpy as np

from fastce._config import KERNEL_OPTIONS, LEAF_OPTIONS, kernel_step
from fastce._vecmath import float64_to_bits

LIMB_BITS = 32
# Scale exponent: value = integer * 2**-OFFSET.
OFFSET = 1126
# 2**1024 * 2**1126 needs 2150 bits = 68 limbs; 2 more hold carries and sign.
NUM_LIMBS = 70
_LIMB_MASK = (1 << LIMB_BITS) - 1
_FRACTION_MASK = (1 << 52) - 1


def new_accumulators(count: int) -> np.ndarray:
    """``count`` zeroed accumulators, one per row of the returned array."""
    return np.zeros((count, NUM_LIMBS), dtype=np.int64)


@kernel_step(**KERNEL_OPTIONS)
def _limbs_of(value):
    """(limb, low, middle, high) with value * 2**OFFSET = (low + middle * 2**32 + high * 2**64) * 2**(32 limb).

    For a finite nonzero float64; each part below 2**32 in magnitude, with
    the value's sign.  From the value's bits: value = (-1)**sign * mantissa
    * 2**(max(biased, 1) - 1075), the mantissa with its implicit bit when
    ``biased`` (the exponent field) is not 0.  math.frexp, used before, is
    a call into numba's C helpers: an add cost 11 ns with it, 4 ns with the
    bits (one thread, 2**20 adds spread over 200 accumulators, ad hoc
    timing).  Subnormals keep their mantissa unshifted where frexp
    normalised it: the limbs may differ until ``normalize``, the integer
    they hold does not.
    """
    bits = float64_to_bits(value)
    biased = (bits >> 52) & 0x7FF
    mantissa = (bits & _FRACTION_MASK) | (np.int64(biased != 0) << 52)
    position = max(biased, 1) + (OFFSET - 1075)  # the smallest subnormal is 2**52 units
    limb = position // LIMB_BITS
    shift = position - limb * LIMB_BITS
    low = (mantissa & ((np.int64(1) << (LIMB_BITS - shift)) - 1)) << shift
    rest = mantissa >> (LIMB_BITS - shift)
    sign = np.int64(-1) if bits < 0 else np.int64(1)
    return limb, sign * low, sign * (rest & _LIMB_MASK), sign * (rest >> LIMB_BITS)


@kernel_step(**LEAF_OPTIONS)
def exact_add_at(accs, k, value):
    """Add the finite float64 ``value`` to the accumulator ``accs[k]`` (a row of limbs); skip a zero or a
    non-finite one (callers count those themselves: see kernels.fold_blocks).

    Each call adds less than 2**32 in magnitude to at most three limbs, so
    ``normalize_at`` must run at least once every 2**30 calls; the drivers
    call it after every kernel call.  A row index, not a view of the row,
    and no references (LEAF_OPTIONS): a view or a call takes one on
    ``accs``, an atomic operation on a counter every thread adding to the
    same buffer shares.  A kernel step, compiled once for every kernel's
    fold: with an @njit exact_add and normalize of row views (each with a
    Python entry and machine code of its own, and a copy a literal row
    number), the fold machinery of a first ``evaluate`` compiled in 1.2 s,
    now in 0.6-0.8 s (numba's compile events).
    """
    if value == 0.0 or not math.isfinite(value):
        return
    limb, low, middle, high = _limbs_of(value)
    accs[k, limb] += low
    accs[k, limb + 1] += middle
    accs[k, limb + 2] += high


def normalize(accs: np.ndarray) -> None:
    """Propagate carries, in place, so that every limb but the last of each accumulator lies in [0, 2**32):
    normalize_at for Python callers (merges, JSON), on one accumulator (1-D) or a 2-D array of them.

    numpy, a pass a limb position at a time for all accumulators together: a
    carry moves up one limb a pass (an arithmetic shift: floor division, so
    negative limbs too); the sum of two normalised accumulators usually
    needs one or two (a carry through limbs of 2**32 - 1 one more each).
    No numba: a first merge compiles nothing for it (an @njit normalize took
    0.07-0.2 s of a first ``compare``); a merge of two States takes
    19-30 us instead of 10 (a /tmp timing), next to the kernel call before it.
    """
    rows = accs[np.newaxis] if accs.ndim == 1 else accs  # views: the carries land in ``accs``
    while True:
        carry = rows[:, :-1] >> LIMB_BITS
        if not carry.any():
            return
        rows[:, :-1] -= carry << LIMB_BITS
        rows[:, 1:] += carry


@kernel_step(**LEAF_OPTIONS)
def normalize_at(accs, k):
    """normalize(accs[k]) in a kernel, without a view of row k (see exact_add_at)."""
    for i in range(accs.shape[1] - 1):
        carry = accs[k, i] >> LIMB_BITS
        accs[k, i] -= carry << LIMB_BITS
        accs[k, i + 1] += carry


def to_int(acc: np.ndarray) -> int:
    """The exact scaled integer held by one accumulator."""
    low = acc[:-1]
    if low.size and low.min() >= 0 and low.max() <= _LIMB_MASK:
        # Normalised (every limb but the last in [0, 2**32): as the drivers leave them): the limbs are the
        # integer's little-endian 32-bit digits.  A Python loop over the 70 limbs cost diagnose's report
        # 1.7 ms at C = 1000.
        return int.from_bytes(low.astype("<u4").tobytes(), "little") + (int(acc[-1]) << (LIMB_BITS * low.shape[0]))
    total = 0
    for i in range(acc.shape[0] - 1, -1, -1):
        total = (total << LIMB_BITS) + int(acc[i])
    return total


def to_ints(accs: np.ndarray) -> list[int]:
    """to_int of each accumulator (row) of ``accs``, the normalisation checked and the digits taken once for all.

    A state's finalisation reads some twenty accumulators: one by one, their
    checks and conversions (four numpy calls each) took over a quarter of
    a small ``evaluate``'s time (cProfile, 10 rows: ~160 of ~610 us).
    """
    low = accs[:, :-1]
    # Every limb but the last in [0, 2**32) exactly when their bitwise OR is (a negative limb sets the sign bit).
    if not low.size or int(np.bitwise_or.reduce(low, axis=None)) >> LIMB_BITS:
        return [to_int(acc) for acc in accs]
    digits = low.astype("<u4").tobytes()  # row-major: each row's little-endian 32-bit digits in turn
    width = 4 * low.shape[1]
    top = LIMB_BITS * low.shape[1]
    return [int.from_bytes(digits[i * width:(i + 1) * width], "little") + (int(accs[i, -1]) << top)
            for i in range(accs.shape[0])]


def int_to_float(total: int) -> float:
    """The sum held as the exact scaled integer ``total`` (see to_int), correctly rounded to float64 (inf on
    overflow)."""
    try:
        return total / (1 << OFFSET)
    except OverflowError:
        return math.inf if total > 0 else -math.inf


def to_float(acc: np.ndarray) -> float:
    """The accumulated sum, correctly rounded to float64 (inf on overflow)."""
    return int_to_float(to_int(acc))


def to_hex(acc: np.ndarray) -> str:
    """Compact, exact text form for JSON state files."""
    total = to_int(acc)
    return ("-" if total < 0 else "") + hex(abs(total))


def from_hex(text: str) -> np.ndarray:
    """Inverse of :func:`to_hex`; raises ValueError on malformed text."""
    total = int(text, 16)
    acc = np.zeros(NUM_LIMBS, dtype=np.int64)
    negative = total < 0
    magnitude = -total if negative else total
    if magnitude.bit_length() > LIMB_BITS * (NUM_LIMBS - 1):
        raise ValueError("exact sum out of range")
    for i in range(NUM_LIMBS):
        acc[i] = magnitude & _LIMB_MASK
        magnitude >>= LIMB_BITS
    if negative:
        acc = -acc
        normalize(acc)
    return acc
