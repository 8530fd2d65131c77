"""fastce._lanes: float64 sums in an order written in the source (see its docstring).

The numpy reference below follows the docstring's definition step by step;
the kernels' sums must equal it bit for bit for every length, element type
(float64, float32, float16 and bfloat16 views) and special value.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from fastce import _lanes as lanes

LANES = lanes.LANES


def reference_sum(values: np.ndarray) -> float:
    """The docstring's order: lane sets A and B over groups of 32, the rest 16 at a time into A, A + B, the tree."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is NaN, as in the kernels
        return _reference_sum(values)


def _reference_sum(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    a, b = np.zeros(LANES), np.zeros(LANES)
    whole = len(values) - len(values) % (2 * LANES)
    for j in range(0, whole, 2 * LANES):
        a = a + values[j:j + LANES]
        b = b + values[j + LANES:j + 2 * LANES]
    for j in range(whole, len(values), LANES):
        group = np.zeros(LANES)
        part = values[j:j + LANES]
        group[:len(part)] = part
        a = a + group
    lanes_ = a + b
    width = LANES
    while width > 1:
        width //= 2
        lanes_ = lanes_[:width] + lanes_[width:2 * width]
    return float(lanes_[0])


def as_view(values: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(the array the kernels read, its float64 values) for ``kind`` (overflow to inf is intended)."""
    with np.errstate(over="ignore"):
        return _as_view(values, kind)


def _as_view(values: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "float64":
        return values.copy(), values.copy()
    if kind == "float32":
        v = values.astype(np.float32)
        return v, v.astype(np.float64)
    if kind == "float16":
        v = values.astype(np.float16)
        return v.view(np.uint16), v.astype(np.float64)
    v = values.astype(ml_dtypes.bfloat16)
    return v.view(np.int16), v.astype(np.float64)


@njit
def sums_and_squares(values, count):
    a, b, c, d = lanes.zero(), lanes.zero(), lanes.zero(), lanes.zero()
    a, b, c, d = lanes.add_values_and_squares(values, count, a, b, c, d)
    return lanes.finish(a, b), lanes.finish(c, d)


@njit
def zeroed_lane(values, start, count, lane):
    return lanes.total(lanes.zero_lane(lanes.load_head(values, start, count), lane))


KINDS = ["float64", "float32", "float16", "bfloat16"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("count", [0, 1, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 100, 1000, 1023])
def test_ordered_sums_follow_the_documented_order(kind, count):
    rng = np.random.default_rng(count)
    decades = 3 if kind == "float16" else 6  # finite in every type: the sums of finite values
    raw = rng.standard_normal(count) * 10.0 ** rng.integers(-decades, decades, count)
    # An array of exactly ``count`` entries: the masked tail must not read past its end.
    view, values = as_view(raw, kind)
    view = np.ascontiguousarray(view)
    assert lanes.ordered_sum(view, count) == reference_sum(values)
    total, squares = sums_and_squares(view, count)
    assert total == reference_sum(values)
    assert squares == reference_sum(values * values)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-300, 1e300, np.inf, -np.inf, np.nan, 3.5, 1e-45]),
                min_size=0, max_size=80), st.sampled_from(KINDS))
def test_special_values_at_every_position(entries, kind):
    view, values = as_view(np.array(entries, dtype=np.float64), kind)
    got, want = lanes.ordered_sum(np.ascontiguousarray(view), len(entries)), reference_sum(values)
    assert got == want or (np.isnan(got) and np.isnan(want))


@pytest.mark.parametrize("lane", [-17, -1, 0, 5, 15, 16, 40])
def test_zero_lane_zeroes_one_lane_or_none(lane):
    values = np.arange(1.0, 17.0)
    expected = values.sum() - (values[lane] if 0 <= lane < LANES else 0.0)
    assert zeroed_lane(values, 0, LANES, lane) == expected


def test_load_head_reads_only_the_entries_asked_for():
    values = np.arange(1.0, 11.0)
    for count in range(0, 11):
        assert zeroed_lane(values[10 - count:], 0, count, -1) == values[10 - count:].sum()


def test_a_sum_does_not_depend_on_the_machine_or_the_caller():
    # The lanes have no fast-math flag: a float32 input summed in a caller
    # that LLVM inlines and one it calls give the same bits (and the bits of
    # the reference, which is plain numpy).
    rng = np.random.default_rng(7)
    values = rng.standard_normal(777)

    @njit
    def inlined(v):
        return lanes.ordered_sum(v, v.shape[0]) + 0.0

    assert inlined(values) == lanes.ordered_sum(values, 777) == reference_sum(values)


@intrinsic
def _decode_first_half(typingctx, bits, start):
    """The float64 of bits[start] decoded by _lanes._decode_half_bits (the path of CPUs without F16C)."""
    def codegen(context, builder, signature, args):
        pointer = lanes._vector_pointer(context, builder, signature.args[0], args[0], signature.args[1], args[1])
        decoded = lanes._decode_half_bits(builder, builder.load(pointer, align=2))
        return builder.extract_element(decoded, ir.Constant(ir.IntType(32), 0))

    return types.float64(bits, start), codegen


@njit
def _decode_all(bits, out):
    for i in range(out.shape[0]):
        out[i] = _decode_first_half(bits, i)


def test_the_half_decoder_without_f16c_is_exact_for_every_bit_pattern():
    bits = np.zeros(65536 + LANES, dtype=np.uint16)
    bits[:65536] = np.arange(65536, dtype=np.uint16)
    out = np.empty(65536)
    _decode_all(bits, out)
    want = bits[:65536].view(np.float16).astype(np.float64)
    same = (out.view(np.int64) == want.view(np.int64)) | (np.isnan(out) & np.isnan(want))
    assert same.all(), np.flatnonzero(~same)[:10]
