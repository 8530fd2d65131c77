"""Numba kernels for element-wise binary cross-entropy: multi-label (N, C) and 1-D binary.

Every element is an independent yes/no question: ``x`` is a logit (or a
probability of "yes"), ``y`` the target in [0, 1].  Same layering as
``kernels``: the kernels only compute and *report* what they see (NaN
scores, probabilities outside [0, 1], targets outside [0, 1], soft or one-hot
target rows) in per-block counters; the door decides what is an error.

Per-block outputs, ``fsums`` columns:

    S_LOSS      sum over counted rows of row_weight * sum_j w_ij * loss_ij
    S_BRIER     sum of row_weight * sum_j (p_ij - y_ij)**2
    S_HITS      sum of row_weight * (elements predicted right)
    S_SUBSET    sum of row_weight over rows with every element right
    S_ARGMAX    sum of row_weight over one-hot target rows whose argmax is the hot class
    S_WEIGHT    sum of row_weight over counted rows
    S_W2 ... S_SUBSET_Q  second moments of the rows' contributions v (the
                terms above, per row) behind the standard errors
                (``fastce.errorbars``): sum rw^2, then for the loss
                sum rw v and sum v^2, and for Brier, hits and subset hits
                sum rw^2 x and sum rw^2 x^2 of the unweighted row value x
                (a subset hit is 0 or 1: one column)
    S_MIN, S_MAX  smallest and largest score (probabilities: the range check)

``icounts`` columns: counted rows, rows holding NaN, elements with an infinite
loss, probabilities below 0 / above 1, targets outside [0, 1] (or NaN),
targets strictly between 0 and 1 (soft), one-hot target rows (all 0/1,
exactly one 1), then the first row (slice-relative) of each reported kind.

Blocks are fixed runs of rows; their sums are merged exactly in block order by
``fold_blocks``, so the results never depend on the thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from fastce import kernels as K
from fastce._config import INLINE_OVERLOAD_OPTIONS, KERNEL_OPTIONS, OVERLOAD_OPTIONS, kernel, kernel_step
from fastce._exactsum import exact_add_at, normalize_at
from fastce._parallel import claim, new_claims, run_tasks
from fastce._vecmath import (
    _ONE_F32,
    _ZERO_F32,
    EXP_BIAS_F32,
    _exp_reduced_f32,
    as_float64,
    as_native,
    atanh_series,
    exp_nonpositive,
    fma,
    inline_into_callers,
    log_positive,
    maxnum,
    minnum,
    prefer_wide_vectors,
)

MODE_LOGITS = 0
MODE_PROBA = 1

# The core layout (kernels.py), written by binary_logits_blocks.  numba freezes
# these globals into the compiled code, and its cache is keyed on this file
# alone: a change of that layout must come with a change here (it recompiles).
K_ROWS, K_NONFINITE, K_INF_LOSS = K.C_ROWS, K.C_NONFINITE, K.C_INF_LOSS
K_FIRST_NONFINITE, K_FIRST_INF_LOSS = K.FIRST_NONFINITE, K.FIRST_INF_LOSS

S_LOSS, S_BRIER, S_HITS, S_SUBSET, S_ARGMAX, S_WEIGHT = range(6)
S_W2, S_LOSS_Q1, S_LOSS_Q2, S_BRIER_Q1, S_BRIER_Q2, S_HITS_Q1, S_HITS_Q2, S_SUBSET_Q = range(6, 14)
S_MIN, S_MAX = 14, 15
NUM_SUMS = 16
EXACT_SUMS = 14  # columns [0, EXACT_SUMS) are summed exactly

N_ROWS, N_NONFINITE, N_INF_LOSS, N_BELOW0, N_ABOVE1, N_BAD_TARGET, N_SOFT, N_ONE_HOT = range(8)
FIRST_NONFINITE, FIRST_INF_LOSS, FIRST_BELOW0, FIRST_ABOVE1, FIRST_BAD_TARGET = range(8, 13)
NUM_COUNTS = 13
FIRST_COLUMNS = 8  # columns >= this hold first rows
# Columns of bce_blocks' row_values: a row's mean element loss (NaN where the row is not counted), mean
# (p - y)**2, share of elements right, and subset hit (1.0 when every element is right).  Their weighted means
# over the counted rows are MultilabelState.finalize's four means (MultilabelState.GROUPED_MEANS).
V_LOSS, V_BRIER, V_HAMMING, V_SUBSET = range(4)
ROW_VALUES = 4


# Below exp(-100) torch clamps log p to -100; any p under that gives the same loss.
_TINY = 1e-300


_SQRT2_MINUS_1 = 0.41421356237309503
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10


@njit(inline="always", **KERNEL_OPTIONS)
def softplus_tail_and_sigmoid(x):
    """(log1p(exp(-|x|)), sigmoid(x)), to a few ulps, in plain arithmetic (vectorisable).

    With e = exp(-|x|) in [0, 1]: log(1 + e) = k ln 2 + 2 atanh(u), with
    k = 0, u = e / (2 + e) while 1 + e <= sqrt(2), else k = 1,
    u = (e - 1) / (e + 3); |u| <= 0.172 either way and e is never rounded
    away.  sigmoid(x) = 1 / (1 + e) (x >= 0) or e / (1 + e).  The two
    quotients share one division: 1 / (a b) times b or a.
    """
    return softplus_tail_and_sigmoid_of_exp(x, exp_minus_abs(x))


@njit(inline="always", **KERNEL_OPTIONS)
def exp_minus_abs(x):
    """exp(-|x|) as softplus_tail_and_sigmoid takes it, down to float64's smallest (subnormal) numbers.

    exp_nonpositive stops at exp(-700); beyond, exp(-|x|) is exp(-|x| / 2)
    squared (one rounding more: a few ulp).  It had been 0 there, which the
    loss of a right answer, log1p(exp(-|x|)) ~ exp(-|x|), then was too: 0
    for 3.6e-305 at x = 701, and times a pos_weight of 1e300, 0 for 3.6e-5.
    Past |x| ~ 745 the square underflows to 0, as exp(-|x|) does.
    """
    a = abs(x)
    big = a >= 700.0
    half = exp_nonpositive(-(0.5 * a if big else a))
    return half * half if big else half


@njit(inline="always", **KERNEL_OPTIONS)
def softplus_tail_and_sigmoid_of_exp(x, e):
    """softplus_tail_and_sigmoid(x) given e = exp_minus_abs(x)."""
    big = e > _SQRT2_MINUS_1
    num = e - 1.0 if big else e
    den = e + 3.0 if big else e + 2.0
    one_e = 1.0 + e
    r = 1.0 / (den * one_e)
    u = num * (one_e * r)
    s = den * r  # 1 / (1 + e)
    u2 = u * u
    p = atanh_series(u2)
    k = 1.0 if big else 0.0
    tail = fma(k, _LN2_HI, fma(k, _LN2_LO, 2.0 * u * p))
    return tail, (s if x >= 0.0 else e * s)


# Inlined by numba, as the helpers above and below: LLVM kept this
# tuple-returning helper out of line, which left the 1-D binary row loop
# scalar and 4x slower (tests/test_vectorised.py checks the loop).
@njit(inline="always", **KERNEL_OPTIONS)
def element_loss(x, y, pos_w, mode):
    """(loss, (p - y)**2, predicts "yes") of one element, in float64.

    Logits: ``pos_w * y * softplus(-x) + (1 - y) * softplus(x)`` with
    ``softplus(t) = max(t, 0) + log1p(exp(-|x|))`` (never overflows); a term
    whose coefficient is 0 is left out, so +-inf logits give their limits
    (0 or inf) instead of 0 * inf.  Probabilities: PyTorch's
    ``-(y * max(log p, -100) + (1 - y) * max(log(1 - p), -100))``.
    "Yes" is x > 0 (logits) or p > 0.5: a tie goes to "no".  NaN stays NaN.
    """
    if mode == MODE_LOGITS:
        tail, p = softplus_tail_and_sigmoid(x)
        neg_log_p = (-x if x < 0.0 else 0.0) + tail
        neg_log_q = (x if x > 0.0 else 0.0) + tail
        positive = x > 0.0
    else:
        p = x
        neg_log_p = -max(math.log(max(p, _TINY)), -100.0)
        neg_log_q = -max(math.log1p(-min(p, 1.0)), -100.0)
        positive = p > 0.5
    b = pos_w * y
    c = 1.0 - y
    loss = (0.0 if b == 0.0 else b * neg_log_p) + (0.0 if c == 0.0 else c * neg_log_q)
    loss = x if x != x else loss
    d = p - y
    return loss, d * d, positive


# exp(-|x|) * 2**EXP_BIAS_F32 is a normal float32 while |x| <= 156; beyond, it is taken as 0 (a loss below
# 2.4e-68, as the multi-class float32 path: kernels._exp_sums_f32).
_BIASED_CEILING_F32 = np.float32(156.0)
_UNBIAS = K._UNBIAS  # 2**-EXP_BIAS_F32, as the multi-class float32 path unscales its exps


@njit(inline="always", **KERNEL_OPTIONS)
def logit_loss_f32(x, is_one):
    """(loss, (p - y)**2, predicts "yes") of a float32 logit ``x`` of class 1 and a 0/1 label (``is_one``),
    float32 math where it is the cost; loss and square returned as float64.

    The float32 twin of element_loss for 1-D binary logits (precision follows the input).  With
    e = exp(-|x|), the loss is ``log1p(e)`` when the prediction is right, ``|x| + log1p(e)`` when wrong.
    e is the float32 exp (exp(-|x|) * 2**100, a normal float32 down to exp(-156), 0 beyond; its 0.93 ulp
    are most of the loss's error), unscaled exactly in float64; log1p(e) is softplus_tail_and_sigmoid's
    atanh series, in float64 but with the division replaced by a float32 one refined by a Newton step
    (_vecmath.reciprocal's way; a float64 division costs 16 cycles per 8 lanes on AVX-512, the float32 one
    5) and the series cut to degree 4 (2e-9 relative: enough for a float32-accurate loss).  |p - y|, for
    Brier, is e / (1 + e) for a right prediction and 1 / (1 + e) for a wrong one (no cancellation in
    p - y), the reciprocal taken as r.  NaN stays NaN; +-inf logits give their limits.  Accuracy: benchmarks/accuracy.py.
    """
    return logit_loss_f32_of_exp(x, is_one, logit_exp_f32(x))


@njit(inline="always", **KERNEL_OPTIONS)
def logit_exp_f32(x):
    """exp(-|x|) of a float32 logit as logit_loss_f32 takes it: the float32 exp, unscaled exactly in float64."""
    return np.float64(biased_exp_f32(x)) * _UNBIAS  # exact


@njit(inline="always", **KERNEL_OPTIONS)
def biased_exp_f32(x):
    """exp(-|x|) * 2**EXP_BIAS_F32 of a float32 logit, a float32 (logit_exp_f32 before its exact unscaling)."""
    a = abs(x)
    scaled, scale = _exp_reduced_f32(-a, _ZERO_F32, EXP_BIAS_F32)
    return _ZERO_F32 if a > _BIASED_CEILING_F32 else scaled * scale  # exp(-a) * 2**100


@njit(inline="always", **KERNEL_OPTIONS)
def tail_and_reciprocal_f32(e):
    """(log1p(e), 1 / (1 + e)) of e = logit_exp_f32(x), as logit_loss_f32 takes them (see there): the atanh
    series of degree 4 and the reciprocals by a float32 division refined by a Newton step, in float64."""
    big = e > _SQRT2_MINUS_1
    num = e - 1.0 if big else e  # exact
    den = e + 3.0 if big else e + 2.0  # one rounding at most (2**-53 relative), once e < 2**-28
    r = np.float64(_ONE_F32 / np.float32(den))
    r = fma(r, fma(-den, r, 1.0), r)  # 1 / den to 2**-46
    u = num * r
    u2 = u * u
    series = fma(fma(fma(fma(1.0 / 9.0, u2, 1.0 / 7.0), u2, 0.2), u2, 1.0 / 3.0), u2, 1.0)
    k = 1.0 if big else 0.0
    tail = fma(k, _LN2_HI, fma(k, _LN2_LO, 2.0 * u * series))
    one_e = 1.0 + e
    s = np.float64(_ONE_F32 / np.float32(one_e))
    s = fma(s, fma(-one_e, s, 1.0), s)  # 1 / (1 + e), as r
    return tail, s


@njit(inline="always", **KERNEL_OPTIONS)
def logit_loss_f32_of_exp(x, is_one, e):
    """logit_loss_f32(x, is_one) given e = logit_exp_f32(x)."""
    a = abs(x)
    tail, s = tail_and_reciprocal_f32(e)
    positive = x > _ZERO_F32
    hit = positive == is_one
    d = e * s if hit else s
    loss = tail if hit else np.float64(a) + tail
    return loss, d * d, positive


def _float64_logit_math(value_type, float32_math) -> bool:
    """Whether 1-D binary logits of numba type ``value_type`` take float64 math (see _logit_element_overload):
    float64 logits, or ``float32_math`` None (precision="float64")."""
    return isinstance(float32_math, types.NoneType) or value_type == types.float64


def logit_element(x, label, float32_math):  # pragma: no cover - replaced by the overload below
    return 0.0, 0.0, False


@overload(logit_element, jit_options=OVERLOAD_OPTIONS)
def _logit_element_overload(x, label, float32_math):
    """(loss, (p - y)**2, predicts "yes") of a 1-D binary logit ``x`` (a kernel view's entry) and its 0/1 label.

    Precision follows the input, decided when numba compiles: ``float32_math`` None (or float64 logits)
    takes element_loss's float64 math, any other value (the doors pass True) logit_loss_f32's float32
    math.  A type, not a runtime flag, so that each compiled kernel holds one of the two loops.  LLVM
    inlines it (inline_into_callers): a call would keep the row loop scalar.
    """
    if _float64_logit_math(x, float32_math):
        def float64_math(x, label, float32_math):
            inline_into_callers()
            return element_loss(as_float64(x), np.float64(label), 1.0, MODE_LOGITS)

        return float64_math

    def float32_math_of_input(x, label, float32_math):
        inline_into_callers()
        return logit_loss_f32(as_native(x), label == 1)

    return float32_math_of_input


def logit_exps(logits, start, stop, float32_math, exps, exps32):  # pragma: no cover - replaced by the overload
    return None


@overload(logit_exps, jit_options=OVERLOAD_OPTIONS)
def _logit_exps_overload(logits, start, stop, float32_math, exps, exps32):
    """exps[i - start] = logit_exp_f32(logits[i]) for i in [start, stop) where logit_element takes float32
    math (see there); nothing where it takes float64 math (logit_element_after_exps then ignores ``exps``).

    As logit_exps_into: the float32 exps into ``exps32`` (float32, at least stop - start long, not
    overlapping ``exps``) in a loop of float32 values only, then widened and unscaled in a loop of their
    own.  In one loop, LLVM sized the vectors by the float64 stores and, for some hosts' cost models
    (numba's host CPU "rocketlake", an AVX-512 Xeon guest), took 4 lanes: the float32 exp on xmm registers
    (tests/test_vectorised.py::test_binary_logit_loop_is_packed_simd).  The same values."""
    if _float64_logit_math(logits.dtype, float32_math):
        def float64_math(logits, start, stop, float32_math, exps, exps32):
            inline_into_callers()
            return None

        return float64_math

    def float32_math_of_input(logits, start, stop, float32_math, exps, exps32):
        inline_into_callers()
        for i in range(start, stop):
            exps32[np.uint64(i - start)] = biased_exp_f32(as_native(logits[np.uint64(i)]))
        for r in range(stop - start):
            exps[np.uint64(r)] = np.float64(exps32[np.uint64(r)]) * _UNBIAS  # exact: logit_exp_f32's value
        return None

    return float32_math_of_input


def logit_element_after_exps(x, label, float32_math, exps, r):  # pragma: no cover - replaced by the overload below
    return 0.0, 0.0, False


@overload(logit_element_after_exps, jit_options=OVERLOAD_OPTIONS)
def _logit_element_after_exps_overload(x, label, float32_math, exps, r):
    """logit_element(x, label, float32_math), its float32 math's exp taken from exps[r] (logit_exps')."""
    if _float64_logit_math(x, float32_math):
        def float64_math(x, label, float32_math, exps, r):
            inline_into_callers()
            return logit_element(x, label, float32_math)

        return float64_math

    def float32_math_of_input(x, label, float32_math, exps, r):
        inline_into_callers()
        return logit_loss_f32_of_exp(as_native(x), label == 1, exps[r])

    return float32_math_of_input


def logit_exp(x, float32_math):  # pragma: no cover - replaced by the overload below
    return 0.0


@overload(logit_exp, jit_options=OVERLOAD_OPTIONS)
def _logit_exp_overload(x, float32_math):
    """exp(-|x|) of a logit ``x`` (a kernel view's entry of (n, C) multi-label logits) in the math
    ``float32_math`` picks (see _float64_logit_math): exp_minus_abs's float64 exp, or logit_exp_f32's float32
    one (unscaled exactly in float64).  softplus_parts_in takes it."""
    if _float64_logit_math(x, float32_math):
        def float64_math(x, float32_math):
            inline_into_callers()
            return exp_minus_abs(as_float64(x))

        return float64_math

    def float32_math_of_input(x, float32_math):
        inline_into_callers()
        return logit_exp_f32(as_native(x))

    return float32_math_of_input


def logit_exps_into(flat, size, float32_math, exps32, exps):  # pragma: no cover - replaced by the overload below
    return None


@overload(logit_exps_into, jit_options=OVERLOAD_OPTIONS)
def _logit_exps_into_overload(flat, size, float32_math, exps32, exps):
    """exps[e] = logit_exp(flat[e], float32_math) for e < size, as loops LLVM vectorises on AVX2 too: the
    float32 exps into ``exps32`` (float32, at least ``size`` long) in a loop of float32 values only, then widened
    and unscaled in a loop of their own (in one loop, a float64 store sized the vectors by float64 and LLVM left
    the float32 exp scalar on AVX2, as kernels.two_class_exps found)."""
    if _float64_logit_math(flat.dtype, float32_math):
        def float64_math(flat, size, float32_math, exps32, exps):
            inline_into_callers()
            for e in range(size):
                exps[e] = logit_exp(flat[e], float32_math)  # exp_minus_abs: one loop of float64 values already

        return float64_math

    def float32_math_of_input(flat, size, float32_math, exps32, exps):
        inline_into_callers()
        for e in range(size):
            exps32[e] = biased_exp_f32(as_native(flat[e]))
        for e in range(size):
            exps[e] = np.float64(exps32[e]) * _UNBIAS  # exact: logit_exp_f32's value

    return float32_math_of_input


def softplus_parts_in(raw, mode, e, float32_math):  # pragma: no cover - replaced by the overload below
    return 0.0, 0.0, 0.0


@overload(softplus_parts_in, jit_options=OVERLOAD_OPTIONS)
def _softplus_parts_in_overload(raw, mode, e, float32_math):
    """softplus_parts_of_exp(x, mode, e) of a kernel view's entry ``raw`` (x its float64 value), e =
    logit_exp(raw, float32_math) for logits, in the math ``float32_math`` picks: float64 math, or (16- and
    32-bit logits, ``float32_math`` True) log1p(e) and 1 / (1 + e) as logit_loss_f32 takes them
    (tail_and_reciprocal_f32), each element's loss within a few float32 ulp (benchmarks/accuracy.py).
    Probabilities (``mode`` MODE_PROBA) take float64 math either way; the doors pass float32_math None
    for them, so that probabilities compile one kernel."""
    if _float64_logit_math(raw, float32_math):
        def float64_math(raw, mode, e, float32_math):
            inline_into_callers()
            return softplus_parts_of_exp(as_float64(raw), mode, e)

        return float64_math

    def float32_math_of_input(raw, mode, e, float32_math):
        inline_into_callers()
        x = as_float64(raw)
        if mode != MODE_LOGITS:
            return softplus_parts_of_exp(x, mode, e)
        tail, s = tail_and_reciprocal_f32(e)
        # p = sigmoid(x): 1 / (1 + e) for x >= 0, e / (1 + e) below (as softplus_tail_and_sigmoid_of_exp).
        return (-x if x < 0.0 else 0.0) + tail, (x if x > 0.0 else 0.0) + tail, (s if x >= 0.0 else e * s)

    return float32_math_of_input


def target_value(t):  # pragma: no cover - replaced by the overload below
    return float(t)


@overload(target_value, inline="always", jit_options=INLINE_OVERLOAD_OPTIONS)
def _target_value_overload(t):
    # uint8 and int64 targets (0/1 indicators: bool viewed as uint8, scikit-learn's int64 label-indicator
    # matrices) are plain numbers; floats go through as_float64 (which reads 16-bit ints as half floats).
    if t in (types.uint8, types.int64):
        return lambda t: np.float64(t)
    return lambda t: as_float64(t)


@njit(inline="always", **KERNEL_OPTIONS)
def softplus_parts(x, mode):
    """(-log p, -log(1 - p), p) of one element, p = sigmoid(x) (logits) or x itself.

    Probabilities: logs clamped at -100 as PyTorch; log(1 - p) keeps the
    digits of a small p (the rounding of 1 - p is corrected as in log1p).
    Plain arithmetic throughout, so the loop calling it vectorises.
    """
    return softplus_parts_of_exp(x, mode, exp_minus_abs(x) if mode == MODE_LOGITS else 0.0)


@njit(inline="always", **KERNEL_OPTIONS)
def softplus_parts_of_exp(x, mode, e):
    """softplus_parts(x, mode) given e = exp_minus_abs(x) for logits (ignored for probabilities)."""
    if mode == MODE_LOGITS:
        tail, p = softplus_tail_and_sigmoid_of_exp(x, e)
        return (-x if x < 0.0 else 0.0) + tail, (x if x > 0.0 else 0.0) + tail, p
    log_p = log_positive(x if x > _TINY else _TINY)
    u = 1.0 - x
    safe_u = u if u > _TINY else _TINY
    log_q = log_positive(safe_u) - ((u - 1.0) + x) / safe_u
    log_p = log_p if log_p > -100.0 else -100.0
    log_q = log_q if (log_q > -100.0 and u > 0.0) else -100.0
    return -log_p, -log_q, x


# The fast path's per-element counts, summed per row in one int64: hits, infinite losses, soft targets and
# targets equal to 1, 16 bits each (so rows of fewer than _PACK_LIMIT elements); and its flags, OR-ed per row.
_PACK_LIMIT = 1 << 16
_F_NAN, _F_BELOW0, _F_ABOVE1, _F_BAD = 1, 2, 4, 8
# Rows of the fast path's scratch (float64): weighted loss (0 where infinite), plain loss, (p - y)^2, and the
# row weight of each element; then (int64) the packed counts and the flags.
_LW, _PLAIN, _D2, _W = range(4)


@kernel_step(**KERNEL_OPTIONS)
def _reset_block(fsums, icounts, b):
    K.reset_counters(fsums, icounts, b, FIRST_COLUMNS)
    fsums[b, S_MIN] = np.inf
    fsums[b, S_MAX] = -np.inf


@kernel_step(**KERNEL_OPTIONS)
def _count_row(fsums, icounts, b, i, mode, n_cols, rw, row_loss, row_brier, hits, inf, below, above, bad, soft,
               ones, argmax_hit):
    """A counted row's counters and sums, the same for both paths: its out-of-range entries (probabilities), bad
    targets and infinite losses (each with its first row), then its block sums and second moments.

    ``argmax_hit``: the scores' first maximum is the hot class (used when the target row is one-hot).
    """
    inline_into_callers()
    if mode == MODE_PROBA:
        if below:
            K._note(icounts, b, N_BELOW0, FIRST_BELOW0, i)
        if above:
            K._note(icounts, b, N_ABOVE1, FIRST_ABOVE1, i)
    if bad:
        K._note(icounts, b, N_BAD_TARGET, FIRST_BAD_TARGET, i)
    if inf:
        if icounts[b, N_INF_LOSS] == 0:
            icounts[b, FIRST_INF_LOSS] = i
        icounts[b, N_INF_LOSS] += inf
    one_hot = ones == 1 and soft == 0 and not bad
    icounts[b, N_ROWS] += 1
    icounts[b, N_SOFT] += soft
    icounts[b, N_ONE_HOT] += one_hot
    fsums[b, S_LOSS] += row_loss
    fsums[b, S_BRIER] += rw * row_brier
    fsums[b, S_HITS] += rw * hits
    fsums[b, S_SUBSET] += rw if hits == n_cols else 0.0
    fsums[b, S_ARGMAX] += rw if (one_hot and argmax_hit) else 0.0
    fsums[b, S_WEIGHT] += rw
    rw2 = rw * rw
    fsums[b, S_W2] += rw2
    fsums[b, S_LOSS_Q1] += rw * row_loss
    fsums[b, S_LOSS_Q2] += row_loss * row_loss
    fsums[b, S_BRIER_Q1] += rw2 * row_brier
    fsums[b, S_BRIER_Q2] += rw2 * (row_brier * row_brier)
    fsums[b, S_HITS_Q1] += rw2 * hits
    fsums[b, S_HITS_Q2] += rw2 * (hits * hits)
    fsums[b, S_SUBSET_Q] += rw2 if hits == n_cols else 0.0


@kernel(**KERNEL_OPTIONS)
def _bce_fast_tasks(scores, targets, row_weight, mode, logits, proba, row_values, nblocks, block_rows, fsums,
                    icounts, float32_math, claims, first_task, task_step):
    """_bce_blocks_tasks for rows weighted by row only, block by block with _bce_block_fast.

    A kernel of its own, so that a first use compiles only the path it takes
    (each adds ~2 s to a first multi-label call).  ``logits`` and ``proba``:
    the mode as types (True, or None for the other mode; see
    kernels.general_tokens), so that each mode's kernel types only its own
    element loop.  ``float32_math``: True (16- and 32-bit logits in float32
    math, see softplus_parts_in) or None (float64 math), a type as well.
    """
    floats = np.empty((4, block_rows * scores.shape[1]))
    ints = np.empty((2, block_rows * scores.shape[1]), dtype=np.int64)
    # The float32 exps of float32 math (see logit_exps_into); unused by float64 math and probabilities.
    exps32 = np.empty(block_rows * scores.shape[1] if float32_math is not None else 0, dtype=np.float32)
    sums, counts = K.block_totals(fsums, icounts)  # the block's, in the thread's own row (see there)
    while True:
        b = claim(claims)  # see fastce._parallel.claim
        if b >= nblocks:
            break
        _reset_block(sums, counts, 0)
        start = b * block_rows
        stop = min(start + block_rows, scores.shape[0])
        _bce_block_fast(scores, targets, row_weight, mode, logits, proba, row_values, 0, start, stop, sums, counts,
                        floats, ints, float32_math, exps32)
        K.store_block(sums, counts, fsums, icounts, b)


@kernel_step(**KERNEL_OPTIONS)
def _element_terms(flat, flat_targets, weights, has_row, size, mode, lw, plain, d2, packed, flags, float32_math,
                   exps32):
    """_bce_block_fast's flat loop: every element's weighted loss (0 where infinite), plain loss, (p - y)^2,
    packed counts and flags, without branches or reductions (it vectorises)."""
    prefer_wide_vectors()
    inline_into_callers()  # so that each call's constant mode prunes the other mode's math
    if mode == MODE_LOGITS:
        # The exps first, in a loop of their own, parked in ``plain`` (each element's loss overwrites its exp
        # below), as kernels._two_class_loop: in one loop each 8 elements' exp, division and series made a
        # dependency chain longer than the core overlapped from one group of elements to the next.
        logit_exps_into(flat, size, float32_math, exps32, plain)
    # The loop under a test of ``has_row``, once on each side: inlined there, each copy knows the flag.  With
    # the flag tested inside one loop, LLVM read every element's weight by a masked vector load, and the loop
    # stalled on it (tests/test_vectorised.py::test_multilabel_fast_loop_reads_no_weight_without_row_weights).
    if has_row:
        _element_loop(flat, flat_targets, weights, has_row, size, mode, lw, plain, d2, packed, flags, float32_math)
    else:
        _element_loop(flat, flat_targets, weights, has_row, size, mode, lw, plain, d2, packed, flags, float32_math)


@kernel_step(**KERNEL_OPTIONS)
def _element_loop(flat, flat_targets, weights, has_row, size, mode, lw, plain, d2, packed, flags, float32_math):
    """_element_terms' loop over the elements (their exps in ``plain`` for logits)."""
    prefer_wide_vectors()
    inline_into_callers()
    for e in range(size):
        x = as_float64(flat[e])
        y = target_value(flat_targets[e])
        neg_log_p, neg_log_q, p = softplus_parts_in(flat[e], mode, plain[e] if mode == MODE_LOGITS else 0.0,
                                                    float32_math)
        c = 1.0 - y
        loss = (0.0 if y == 0.0 else y * neg_log_p) + (0.0 if c == 0.0 else c * neg_log_q)
        loss = x if x != x else loss
        w = weights[e] if has_row else 1.0
        weighted = 0.0 if w == 0.0 else w * loss
        infinite = weighted == np.inf
        lw[e] = 0.0 if infinite else weighted
        plain[e] = loss
        d = p - y
        d2[e] = d * d
        predicted = x > 0.0 if mode == MODE_LOGITS else x > 0.5
        packed[e] = (np.int64(predicted == (y > 0.5)) + (np.int64(infinite) << 16)
                     + (np.int64((y > 0.0) & (y < 1.0)) << 32) + (np.int64(y == 1.0) << 48))
        flags[e] = (np.int64(x != x) * _F_NAN + np.int64(x < 0.0) * _F_BELOW0 + np.int64(x > 1.0) * _F_ABOVE1
                    + np.int64(not ((y >= 0.0) & (y <= 1.0))) * _F_BAD)


# Inlined by numba into its one caller: compiled on its own it was optimised and code-generated twice
# (see kernels._walk_short_block); a first multi-label evaluate compiles 0.6 s sooner (4.1 -> 3.5 s).
@njit(inline="always", **KERNEL_OPTIONS)
def _bce_block_fast(scores, targets, row_weight, mode, logits, proba, row_values, b, start, stop, fsums, icounts,
                    floats, ints, float32_math, exps32):
    """Block b of _bce_blocks_tasks without column, element or positive-class weights: the same numbers.

    The general path walks each row's elements with some 25 operations and
    as many running counters: a scalar loop (11-13 ns an element in cache).
    Here one flat loop over the block's elements, without branches or
    reductions (it vectorises), writes each element's weighted loss, plain
    loss, (p - y)^2, packed counts and flags; then each row sums its
    elements' terms in the general path's order (j = 0, 1, ...), so every
    sum is the general path's, bit for bit, and the argmax and the hot class
    are found only for rows whose target is one-hot.
    """
    prefer_wide_vectors()
    n_cols = scores.shape[1]
    has_row = row_weight.shape[0] != 0
    keep_values = row_values.shape[0] != 0
    size = (stop - start) * n_cols
    flat = scores[start:stop].reshape(size)
    flat_targets = targets[start:stop].reshape(size)
    lw, plain, d2, weights = floats[_LW], floats[_PLAIN], floats[_D2], floats[_W]
    packed, flags = ints[0], ints[1]
    if has_row:
        for r in range(stop - start):
            w = row_weight[start + r]
            for j in range(n_cols):
                weights[r * n_cols + j] = w
    if mode == MODE_PROBA:  # the range check's extremes, in a loop of their own
        low = np.inf
        high = -np.inf
        for e in range(size):
            x = as_float64(flat[e])
            low = minnum(low, x)
            high = maxnum(high, x)
        fsums[b, S_MIN] = low
        fsums[b, S_MAX] = high
    # One loop per mode, the mode a constant in each (inlined by LLVM): with a run-time mode LLVM computed both
    # modes' math for every element and selected (3.8 against ~2 ns an element).  Under two "is not None" tests
    # of the mode's types, which numba prunes before typing: a kernel types one loop, not both (each a compile of
    # its own, since the constant is a literal: 0.65 s of a first multi-label call).
    if logits is not None:
        _element_terms(flat, flat_targets, weights, has_row, size, MODE_LOGITS, lw, plain, d2, packed, flags,
                       float32_math, exps32)
    if proba is not None:
        _element_terms(flat, flat_targets, weights, has_row, size, MODE_PROBA, lw, plain, d2, packed, flags,
                       float32_math, exps32)
    for i in range(start, stop):
        base = (i - start) * n_cols
        row_loss = 0.0
        row_brier = 0.0
        counts = np.int64(0)
        row_flags = np.int64(0)
        for j in range(n_cols):
            row_loss += lw[base + j]
            row_brier += d2[base + j]
            counts += packed[base + j]
            row_flags |= flags[base + j]
        hits = counts & 0xFFFF
        inf = (counts >> 16) & 0xFFFF
        soft = (counts >> 32) & 0xFFFF
        ones = counts >> 48
        rw = row_weight[i] if has_row else 1.0
        if keep_values:
            plain_loss = 0.0
            for j in range(n_cols):
                plain_loss += plain[base + j]
            row_values[i, V_LOSS] = np.nan if row_flags & _F_NAN else plain_loss / n_cols
            row_values[i, V_BRIER] = row_brier / n_cols
            row_values[i, V_HAMMING] = hits / n_cols
            row_values[i, V_SUBSET] = 1.0 if hits == n_cols else 0.0
        if row_flags & _F_NAN:
            K._note(icounts, b, N_NONFINITE, FIRST_NONFINITE, i)
            continue
        bad = (row_flags & _F_BAD) != 0
        argmax_hit = False
        if ones == 1 and soft == 0 and not bad:
            # A one-hot target: as the general path, the hot class and the first maximum of the scores.
            hot = -1
            best = as_native(scores[i, 0])
            best_j = 0
            for j in range(n_cols):
                hot = j if target_value(targets[i, j]) == 1.0 else hot
                v = as_native(scores[i, j])
                best_j = j if v > best else best_j
                best = v if v > best else best
            argmax_hit = best_j == hot
        _count_row(fsums, icounts, b, i, mode, n_cols, rw, row_loss, row_brier, hits, inf,
                   (row_flags & _F_BELOW0) != 0, (row_flags & _F_ABOVE1) != 0, bad, soft, ones, argmax_hit)


@kernel(**KERNEL_OPTIONS)
def _bce_blocks_tasks(scores, targets, row_weight, col_weight, full_weight, pos_weight, mode, element_losses,
                      row_values, nblocks, block_rows, fsums, icounts, float32_math, claims, first_task, task_step):
    """Per-block sums of element-wise binary cross-entropy over an (n, C) slice.

    ``targets``: (n, C), float64, float32, uint8 or int64.  Weights multiply each
    element's loss: ``row_weight`` (n,), ``col_weight`` (C,), ``full_weight``
    (n, C), each empty when absent; ``pos_weight`` (C,) multiplies the
    positive term (logits only; empty when absent).  A zero weight removes the
    element, even when its loss is infinite.  ``element_losses`` (empty, or
    (n, C)) receives each element's weighted loss.  Accuracy, Brier and the
    one-hot bookkeeping use the row weight only.  A row holding a NaN score is
    not counted (reported in N_NONFINITE).

    Each block first runs the exp / log of all its elements in one flat,
    vectorised loop (the block is contiguous), then walks its rows for the
    weights, targets, sums and counters, which need no transcendental math.
    ``float32_math``: logits' math, as _bce_fast_tasks' (softplus_parts_in).
    """
    n_rows = scores.shape[0]
    n_cols = scores.shape[1]
    has_row = row_weight.shape[0] != 0
    has_col = col_weight.shape[0] != 0
    has_full = full_weight.shape[0] != 0
    has_pos = pos_weight.shape[0] != 0
    keep = element_losses.shape[0] != 0
    keep_values = row_values.shape[0] != 0
    while True:
        b = claim(claims)  # see fastce._parallel.claim
        if b >= nblocks:
            break
        prefer_wide_vectors()
        _reset_block(fsums, icounts, b)
        start = b * block_rows
        stop = min(start + block_rows, n_rows)
        size = (stop - start) * n_cols
        flat = scores[start:stop].reshape(size)
        neg_log_p = np.empty(size)
        neg_log_q = np.empty(size)
        prob = np.empty(size)
        # One loop per mode, no test inside: LLVM vectorises each.
        if mode == MODE_LOGITS:
            for e in range(size):
                nlp, nlq, p = softplus_parts_in(flat[e], MODE_LOGITS, logit_exp(flat[e], float32_math), float32_math)
                neg_log_p[e] = nlp
                neg_log_q[e] = nlq
                prob[e] = p
        else:
            low = np.inf
            high = -np.inf
            for e in range(size):
                x = as_float64(flat[e])
                nlp, nlq, p = softplus_parts(x, MODE_PROBA)
                neg_log_p[e] = nlp
                neg_log_q[e] = nlq
                prob[e] = p
                low = minnum(low, x)
                high = maxnum(high, x)
            fsums[b, S_MIN] = low
            fsums[b, S_MAX] = high
        for i in range(start, stop):
            base = (i - start) * n_cols
            row_loss = 0.0
            plain_loss = 0.0  # unweighted, infinite terms included: the row's value for row_values
            row_brier = 0.0
            hits = 0
            nan = 0
            inf = 0
            below = 0
            above = 0
            bad = 0
            soft = 0
            ones = 0
            hot = -1
            best = as_native(scores[i, 0])
            best_j = 0
            rw = row_weight[i] if has_row else 1.0
            for j in range(n_cols):
                x = as_float64(scores[i, j])
                y = target_value(targets[i, j])
                pw = pos_weight[j] if has_pos else 1.0
                positive_term = pw * y
                negative_term = 1.0 - y
                loss = (0.0 if positive_term == 0.0 else positive_term * neg_log_p[base + j]) + (
                    0.0 if negative_term == 0.0 else negative_term * neg_log_q[base + j]
                )
                loss = x if x != x else loss
                plain_loss += loss
                w = rw
                if has_col:
                    w *= col_weight[j]
                if has_full:
                    w *= full_weight[i, j]
                weighted = 0.0 if w == 0.0 else w * loss
                if keep:
                    element_losses[i, j] = weighted
                infinite = weighted == np.inf
                inf += infinite
                row_loss += 0.0 if infinite else weighted
                d = prob[base + j] - y
                row_brier += d * d
                predicted = x > 0.0 if mode == MODE_LOGITS else x > 0.5
                hits += predicted == (y > 0.5)
                nan += x != x
                below += x < 0.0
                above += x > 1.0
                # & instead of and: short-circuits are branches in this hot loop
                bad += not ((y >= 0.0) & (y <= 1.0))
                soft += (y > 0.0) & (y < 1.0)
                ones += y == 1.0
                hot = j if y == 1.0 else hot
                v = as_native(scores[i, j])
                best_j = j if v > best else best_j
                best = v if v > best else best
            if keep_values:
                row_values[i, V_LOSS] = np.nan if nan else plain_loss / n_cols
                row_values[i, V_BRIER] = row_brier / n_cols
                row_values[i, V_HAMMING] = hits / n_cols
                row_values[i, V_SUBSET] = 1.0 if hits == n_cols else 0.0
            if nan:
                K._note(icounts, b, N_NONFINITE, FIRST_NONFINITE, i)
                continue
            _count_row(fsums, icounts, b, i, mode, n_cols, rw, row_loss, row_brier, hits, inf, below, above, bad != 0,
                       soft, ones, best_j == hot)


def bce_blocks(scores, targets, row_weight, col_weight, full_weight, pos_weight, mode, element_losses, row_values,
               nblocks, block_rows, fsums, icounts, float32_math=None):
    """``_bce_blocks_tasks`` on the thread pool (see fastce._parallel); rows weighted by row only (no column,
    element or positive-class weights, no element losses kept) take its fast twin, _bce_fast_tasks.
    ``float32_math``: True for float32 math on 16- and 32-bit logits (see softplus_parts_in), None for float64
    math (and for probabilities)."""
    if (col_weight.shape[0] == 0 and full_weight.shape[0] == 0 and pos_weight.shape[0] == 0
            and element_losses.shape[0] == 0 and scores.shape[1] < _PACK_LIMIT):
        logits = True if mode == MODE_LOGITS else None
        proba = None if logits else True
        run_tasks(_bce_fast_tasks, (scores, targets, row_weight, mode, logits, proba, row_values, nblocks, block_rows,
                                   fsums, icounts, float32_math, new_claims()), nblocks)
        return
    args = (scores, targets, row_weight, col_weight, full_weight, pos_weight, mode, element_losses, row_values,
            nblocks, block_rows, fsums, icounts, float32_math, new_claims())
    run_tasks(_bce_blocks_tasks, args, nblocks)


@kernel(**KERNEL_OPTIONS)
def fold_blocks(fsums, icounts, nblocks, row_offset, sums_acc, minmax, counts, n_exact, first_column):
    """Fold per-block results in block order: exact sums, range, counters.

    Columns [0, n_exact) of ``fsums`` go to the exact accumulators
    ``sums_acc``; columns ``n_exact`` and ``n_exact + 1`` (when present) are a
    min and a max.  ``icounts`` columns before ``first_column`` are added;
    the others keep the earliest row (``row_offset`` added), -1 for none.
    Returns the number of blocks whose float sums overflowed.
    """
    overflowed = 0
    has_range = fsums.shape[1] >= n_exact + 2
    for b in range(nblocks):
        for c in range(n_exact):
            value = fsums[b, c]
            if not math.isfinite(value):
                overflowed += 1
            exact_add_at(sums_acc, c, value)
        if has_range:
            minmax[0] = min(minmax[0], fsums[b, n_exact])
            minmax[1] = max(minmax[1], fsums[b, n_exact + 1])
        for c in range(first_column):
            counts[c] += icounts[b, c]
        for c in range(first_column, icounts.shape[1]):
            row = icounts[b, c]
            if row >= 0:
                row += row_offset
            if row >= 0 and (counts[c] < 0 or row < counts[c]):
                counts[c] = row
    for a in range(n_exact):
        normalize_at(sums_acc, a)
    return overflowed


@kernel_step(**KERNEL_OPTIONS)
def _binary_logit_block(logits, labels, sample_weight, row_losses, start, stop, keep, weighted, float32_math, terms):
    """The per-row terms of rows [start, stop) into ``terms`` (kernels' T_ rows); (rows counted, infinite losses,
    nonzero when a label is neither 0 nor 1, counted rows predicted right).

    A function of its own, with one plain loop per case and no flag tested
    inside a loop, so that LLVM vectorises each.  The block sums are then
    taken from the terms by kernels.store_sums (fastce._lanes: an order
    written in the source, the same bits on every machine).
    """
    prefer_wide_vectors()  # 512-bit float64 lanes on AVX-512 hosts (see _vecmath)
    if keep:
        return _binary_logit_loop(logits, labels, sample_weight, row_losses, start, stop, weighted, True,
                                  float32_math, terms)
    if weighted:
        return _binary_logit_loop(logits, labels, sample_weight, row_losses, start, stop, True, False, float32_math,
                                  terms)
    return _binary_logit_loop(logits, labels, sample_weight, row_losses, start, stop, False, False, float32_math,
                              terms)


# Inlined by numba: each call site passes constant flags, and the inlined
# copy is a loop without a flag test, which LLVM vectorises.
@njit(inline="always", **KERNEL_OPTIONS)
def _binary_logit_loop(logits, labels, sample_weight, row_losses, start, stop, weighted, keep, float32_math, terms):
    """The loop of _binary_logit_block (flags constant per call site).

    A NaN logit gives its row weight 0: it adds nothing to any sum.  A zero
    weight removes the row, even when its loss is infinite; infinite
    weighted losses are counted apart and left out of the loss sums.
    Labels other than 0 and 1 are reported (the door's range check, when
    it left that check to the kernel: readers.BinaryReader.validate_once):
    the labels' bits OR-ed, one instruction a vector (counting them, two
    compares and a masked add, made the kernel 13-15% slower), then every bit but
    the lowest; nonzero when some label is neither 0 nor 1.
    """
    n_ok = 0
    n_inf = 0
    n_hit = 0
    label_bits = 0
    # Float32 math: the exps first, in a loop of their own, parked in the loss row (each row's loss overwrites
    # its exp below), as kernels._two_class_loop: in one loop each 8 rows' exp, division and series made one
    # dependency chain longer than the core overlapped from one group of rows to the next.
    exps = terms[K.T_LOSS]
    # The float32 exps staged in the Brier row (its float32 view), which the loop below writes only after
    # they are widened into ``exps``.
    logit_exps(logits, start, stop, float32_math, exps, terms[K.T_BRIER].view(np.float32))
    # Unsigned indices: with signed ones LLVM kept numba's negative-index
    # wraparound and read every logit, label and weight with a gather.
    for i in range(start, stop):
        r = np.uint64(i - start)
        u = np.uint64(i)
        x = as_native(logits[u])
        y = labels[u]
        loss, sq, positive = logit_element_after_exps(x, y, float32_math, exps, r)
        ok = x == x
        w = sample_weight[u] if weighted else 1.0
        w = w if ok else 0.0
        weighted_loss = 0.0 if w == 0.0 else w * loss
        infinite = weighted_loss == np.inf
        if keep:
            row_losses[u] = weighted_loss if ok else np.nan
        n_ok += ok
        n_inf += infinite
        label_bits |= y
        hit = positive == (y == 1)
        n_hit += hit & ok
        terms[K.T_LOSS, r] = 0.0 if infinite else weighted_loss
        terms[K.T_BRIER, r] = 2.0 * w * sq if ok else 0.0
        # Second moments (kernels.M_W2...): rows not counted or of infinite loss add nothing.
        w2 = w * w
        kept = 0.0 if (infinite or w == 0.0) else loss
        brier = 2.0 * sq if ok else 0.0
        terms[K.T_W2LOSS2, r] = w2 * (kept * kept)
        terms[K.T_W2BRIER2, r] = w2 * (brier * brier)
        if weighted:
            # Without weights w is 0 or 1 (w^2 = w): binary_logit_block_sums takes the weight and hit sums from
            # the counts (exact) and the w^2 sums from the terms above (kernels.store_sums' unit_weights).
            terms[K.T_WEIGHT, r] = w
            terms[K.T_HIT, r] = w if hit else 0.0
            terms[K.T_HIT2, r] = w2 if hit else 0.0
            terms[K.T_W2, r] = w2
            terms[K.T_W2LOSS, r] = w2 * kept
            terms[K.T_W2BRIER, r] = w2 * brier
    return n_ok, n_inf, label_bits & ~1, n_hit


# compare's copy of the loop (binary_logit_pair_block): the same terms, bit for bit, and each row's pair
# inputs.  Its rows lie a literal BINARY_TERM_ROW apart in one flat array: LLVM then sees that they never
# overlap and vectorises the loop without run-time alias checks (with a row stride known only at run time,
# the four more stores needed more checks than it allows and the loop went scalar, as kernels._two_class_block's
# did).  BINARY_BLOCK_ROWS: _accumulate_family.BINARY_LOGIT_BLOCK_ROWS, which asserts it.
BINARY_BLOCK_ROWS = 8192
BINARY_TERM_ROW = BINARY_BLOCK_ROWS + K.SCRATCH_PAD
_T_WEIGHT, _T_LOSS, _T_BRIER, _T_HIT, _T_HIT2 = K.T_WEIGHT, K.T_LOSS, K.T_BRIER, K.T_HIT, K.T_HIT2
_T_W2, _T_W2LOSS, _T_W2LOSS2, _T_W2BRIER, _T_W2BRIER2 = K.T_W2, K.T_W2LOSS, K.T_W2LOSS2, K.T_W2BRIER, K.T_W2BRIER2
_N_TERMS = K.N_TERMS
_IN_LOSS, _IN_BRIER, _IN_RANK, _IN_P_TRUE = K.IN_LOSS, K.IN_BRIER, K.IN_RANK, K.IN_P_TRUE


@kernel_step(**KERNEL_OPTIONS)
def binary_logit_pair_block(logits, labels, sample_weight, start, stop, float32_math, terms):
    """_binary_logit_block for compare's kernel: the same terms, and each row's pair inputs (compare_kernels:
    loss, Brier term, rank, p(true class); NaN for a row not counted) in the rows N_TERMS + IN_* of
    ``terms`` ((N_TERMS + PAIR_INPUTS, BINARY_TERM_ROW)); (rows counted, infinite losses, counted rows predicted
    right)."""
    prefer_wide_vectors()
    cells = terms.reshape(terms.shape[0] * BINARY_TERM_ROW)
    if sample_weight.shape[0] != 0:
        return _binary_logit_pair_loop(logits, labels, sample_weight, start, stop, True, float32_math, cells)
    return _binary_logit_pair_loop(logits, labels, sample_weight, start, stop, False, float32_math, cells)


@njit(inline="always", **KERNEL_OPTIONS)
def _binary_logit_pair_loop(logits, labels, sample_weight, start, stop, weighted, float32_math, cells):
    """_binary_logit_loop's rows (the same operations: the same terms, bit for bit), stored flat, with the
    pair inputs.  Kept apart from evaluate's loop, which this form made slower (measured in cache)."""
    n_ok = 0
    n_inf = 0
    n_hit = 0
    for i in range(start, stop):
        r = np.uint64(i - start)
        u = np.uint64(i)  # unsigned: see _binary_logit_loop
        x = as_native(logits[u])
        y = labels[u]
        loss, sq, positive = logit_element(x, y, float32_math)
        ok = x == x
        w = sample_weight[u] if weighted else 1.0
        w = w if ok else 0.0
        weighted_loss = 0.0 if w == 0.0 else w * loss
        infinite = weighted_loss == np.inf
        hit = positive == (y == 1)
        kept = 0.0 if (infinite or w == 0.0) else loss
        brier = 2.0 * sq if ok else 0.0
        n_ok += ok
        n_inf += infinite
        n_hit += hit & ok
        w2 = w * w
        cells[np.uint64(_T_WEIGHT * BINARY_TERM_ROW) + r] = w
        cells[np.uint64(_T_LOSS * BINARY_TERM_ROW) + r] = 0.0 if infinite else weighted_loss
        cells[np.uint64(_T_BRIER * BINARY_TERM_ROW) + r] = 2.0 * w * sq if ok else 0.0
        cells[np.uint64(_T_HIT * BINARY_TERM_ROW) + r] = w if hit else 0.0
        cells[np.uint64(_T_HIT2 * BINARY_TERM_ROW) + r] = w2 if hit else 0.0
        cells[np.uint64(_T_W2 * BINARY_TERM_ROW) + r] = w2
        cells[np.uint64(_T_W2LOSS * BINARY_TERM_ROW) + r] = w2 * kept
        cells[np.uint64(_T_W2LOSS2 * BINARY_TERM_ROW) + r] = w2 * (kept * kept)
        cells[np.uint64(_T_W2BRIER * BINARY_TERM_ROW) + r] = w2 * brier
        cells[np.uint64(_T_W2BRIER2 * BINARY_TERM_ROW) + r] = w2 * (brier * brier)
        nan = np.nan
        cells[np.uint64((_N_TERMS + _IN_LOSS) * BINARY_TERM_ROW) + r] = loss if ok else nan
        cells[np.uint64((_N_TERMS + _IN_BRIER) * BINARY_TERM_ROW) + r] = brier if ok else nan
        cells[np.uint64((_N_TERMS + _IN_RANK) * BINARY_TERM_ROW) + r] = (0.0 if hit else 1.0) if ok else nan
        # p(true class) = 1 - |p - y|: for compare's confidently wrong rows (binary_row_stats alike).
        cells[np.uint64((_N_TERMS + _IN_P_TRUE) * BINARY_TERM_ROW) + r] = 1.0 - math.sqrt(sq) if ok else nan
    return n_ok, n_inf, n_hit


@kernel(**KERNEL_OPTIONS)
def _binary_logits_blocks_tasks(logits, labels, sample_weight, top_k, row_losses, nblocks, block_rows, fsums, icounts,
                                float32_math, bad_labels, claims, first_task, task_step):
    """Per-block sums in the core layout (``kernels``) for 1-D logits of class 1 and 0/1 labels.

    The twin of ``kernels.binary_proba_blocks`` for logits: the loss is
    ``max(z, 0) - z y + log1p(exp(-|z|))``, the prediction is class 1 when
    z > 0 (z == 0 goes to class 0, as p == 0.5 does for probabilities), the
    Brier sum is the two-column one, 2 (sigmoid(z) - y)**2.  +-inf logits
    are legal; a NaN logit makes its row non-finite.  The row loops are
    branch-free, one per case (weights or not, per-row losses or not), so
    that LLVM vectorises them; the first NaN or infinite-loss row of a block
    is looked up again only when there is one.  ``bad_labels[b]``: nonzero
    when a label of block b is neither 0 nor 1 (the caller raises then).
    """
    n_rows = logits.shape[0]
    keep = row_losses.shape[0] != 0
    weighted = sample_weight.shape[0] != 0
    terms = np.empty((K.N_TERMS, block_rows + K.SCRATCH_PAD))
    while True:
        b = claim(claims)  # see fastce._parallel.claim
        if b >= nblocks:
            break
        start = b * block_rows
        stop = min(start + block_rows, n_rows)
        n_ok, n_inf, bad_labels[b], n_hit = _binary_logit_block(logits, labels, sample_weight, row_losses, start,
                                                                stop, keep, weighted, float32_math, terms)
        binary_logit_block_sums(logits, labels, sample_weight, top_k, b, start, stop, n_ok, n_inf, n_hit, terms,
                                fsums, icounts)


@kernel_step(**KERNEL_OPTIONS)
def binary_logit_block_sums(logits, labels, sample_weight, top_k, b, start, stop, n_ok, n_inf, n_hit, terms, fsums,
                            icounts):
    """Block b's sums and counters (the core layout) from the terms of _binary_logit_block, its rows counted
    ``n_ok``, infinite losses ``n_inf`` and counted rows predicted right ``n_hit``: the first NaN or
    infinite-loss row is looked up only when there is one; the sums by kernels.binary_block_sums (shared with
    the probabilities' blocks)."""
    weighted = sample_weight.shape[0] != 0
    K._reset_block(fsums, icounts, b)
    n_nan = (stop - start) - n_ok
    if n_nan:
        icounts[b, K_NONFINITE] = n_nan
        for i in range(start, stop):
            if as_float64(logits[i]) != as_float64(logits[i]):
                icounts[b, K_FIRST_NONFINITE] = i
                break
    if n_inf:
        icounts[b, K_INF_LOSS] = n_inf
        n_true = 0  # rows whose loss itself is infinite (an infinite logit on the wrong side)
        for i in range(start, stop):
            x = as_float64(logits[i])
            if abs(x) == np.inf and (x > 0.0) != (labels[i] == 1):
                w = sample_weight[i] if weighted else 1.0
                if w != 0.0:
                    if n_true == 0:
                        icounts[b, K_FIRST_INF_LOSS] = i
                    n_true += 1
        if n_true < n_inf:
            # A finite loss overflowing with its weight: the weights are too large, as in kernels._finish_block.
            icounts[b, K.C_OVERFLOW] += 1
            icounts[b, K.FIRST_OVERFLOW] = start
    icounts[b, K_ROWS] = n_ok
    K.binary_block_sums(sample_weight, top_k, b, stop - start, n_ok, n_hit, terms, fsums)


@njit(inline="always", **KERNEL_OPTIONS)
def _binary_row(scores, labels, i, from_logits, proba_eps, float32_math):
    """(counted, loss, (p - y)**2, hit, p(true class)) of row i of 1-D binary scores, by the binary kernels'
    own formulas (logit_element for logits, in the math ``float32_math`` picks; scikit-learn's clipped log loss
    for probabilities)."""
    y = np.int64(labels[i])
    if from_logits:
        x = as_native(scores[i])
        loss, sq, positive = logit_element(x, y, float32_math)
        ok = x == x
        p_true = 1.0 - math.sqrt(sq)  # 1 - |p - y|, as compare's kernel (binary_logit_pair_block)
    else:
        p = as_float64(scores[i])
        ok = p - p == 0.0
        loss, sq, positive, p_true = K.binary_proba_element(p, y, proba_eps)  # evaluate's, bit for bit
    return ok, loss, sq, positive == (y == 1), p_true


def binary_row_stats(scores, labels, from_logits, proba_eps, float32_math, stats):
    """_binary_row_stats with ``float32_math`` a truth value (see kernels.math_token)."""
    _binary_row_stats(scores, labels, from_logits, proba_eps, K.math_token(float32_math), stats)


@kernel(**KERNEL_OPTIONS)
def _binary_row_stats(scores, labels, from_logits, proba_eps, float32_math, stats):
    """Each row's per-row statistics (columns kernels.S_*) as the two-column multi-class kernel states them.

    S_LOSS (NaN where the row is not counted), p(true class), p(predicted
    class), the two-column Brier term 2 (p - y)**2 and the rank of the true
    class (0 or 1; a tie predicts "no").  For compare's models of mixed
    dtypes (its paired sums).
    """
    nan = np.nan
    for i in range(scores.shape[0]):
        ok, loss, sq, hit, p_true = _binary_row(scores, labels, i, from_logits, proba_eps, float32_math)
        stats[i, K.S_LOSS] = loss if ok else nan
        stats[i, K.S_P_TRUE] = p_true if ok else nan
        stats[i, K.S_P_TOP] = (p_true if hit else 1.0 - p_true) if ok else nan
        stats[i, K.S_BRIER] = 2.0 * sq
        stats[i, K.S_RANK] = (0.0 if hit else 1.0) if ok else nan


def binary_logits_blocks(logits, labels, sample_weight, top_k, row_losses, nblocks, block_rows, fsums, icounts,
                         float32_math, bad_labels):
    """``_binary_logits_blocks_tasks`` on the thread pool (see fastce._parallel); ``float32_math``: see
    logit_element (None: float64 math); ``bad_labels`` (nblocks int64): nonzero for a block with a label
    neither 0 nor 1."""
    if bad_labels.shape[0] < nblocks:
        raise ValueError(f"bad_labels has {bad_labels.shape[0]} entries for {nblocks} blocks")
    run_tasks(_binary_logits_blocks_tasks,
              (logits, labels, sample_weight, top_k, row_losses, nblocks, block_rows, fsums, icounts,
               K.math_token(float32_math), bad_labels, new_claims()),
              nblocks)
