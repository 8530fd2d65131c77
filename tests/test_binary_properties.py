"""Hypothesis: 1-D binary logits against a long-double reference, every dtype and precision.

The 1-D binary kernel has two maths (kernels_binary.logit_element: float32 for
16- and 32-bit logits, float64 for float64 ones and precision="float64") and
leaves the labels' range check to its read (readers.BinaryReader.validate_once).
Each draw puts special values (NaN, +-inf, +-0, the largest finite, subnormals)
at random rows, a bad label at a random row or none, over one or several
kernel calls.
"""

from __future__ import annotations

import math
import warnings
from unittest import mock

import numpy as np
import pytest
from support import BFLOAT16, loss_rtol

import fastce
from fastce import _config
from fastce.errors import FastCEWarning, InputError, OmittedRowsWarning

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)] + ([BFLOAT16] if BFLOAT16 else [])
LABEL_DTYPES = [np.int8, np.uint8, np.int32, np.int64, np.uint64, np.bool_]


def _specials(dtype):
    info = np.finfo(np.float32 if dtype == BFLOAT16 else dtype)
    tiny = float(info.smallest_subnormal) if dtype != BFLOAT16 else 1e-40
    # The largest finite float32 (float16's for float16): float64's own maximum would overflow the block sums
    # of a few such rows, a limit of every path (the multi-class property tests stop at 1e30 likewise).
    largest = min(float(info.max), float(np.finfo(np.float32).max)) if dtype != BFLOAT16 else 3e38
    return [np.nan, np.inf, -np.inf, 0.0, -0.0, largest, -tiny, tiny,
            100.0, -100.0, 160.0, -160.0, 88.0, -88.0, 0.8813735]


def _reference(z, y, w):
    """(loss, Brier, accuracy) means over the counted rows (not NaN) in long double; loss inf when a row's is."""
    x = z.astype(np.float32 if z.dtype != np.float64 else np.float64).astype(np.longdouble)
    keep = ~np.isnan(x)
    x, y, w = x[keep], y[keep].astype(np.int64), w[keep]
    a = np.abs(x)
    e = np.exp(-a)
    right = (x > 0) == (y == 1)
    with np.errstate(invalid="ignore"):
        loss = np.where(right, 0, a) + np.log1p(e)
    d = np.where(right, e / (1 + e), 1 / (1 + e))
    total = w.sum()
    if total == 0:
        return math.nan, math.nan, math.nan, int(keep.sum())
    if np.isinf(loss[w > 0]).any():
        mean_loss = math.inf
    else:
        mean_loss = float((w * loss).sum() / total)
    return mean_loss, float((w * 2 * d * d).sum() / total / 2), float((w * right).sum() / total), int(keep.sum())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_binary_logits_against_long_double(data):
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    n = data.draw(st.sampled_from([1, 2, 17, 300, 8191, 8193, 20_000]), label="n")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    precision = data.draw(st.sampled_from(["input", "float64"]), label="precision")
    weighted = data.draw(st.booleans(), label="weighted")
    label_dtype = data.draw(st.sampled_from(LABEL_DTYPES), label="label_dtype")
    per_call = data.draw(st.sampled_from([None, 1, 2]), label="blocks_per_call")
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-3, 2.3)
    x = rng.normal(scale=scale, size=n)
    specials = _specials(dtype)
    for _ in range(data.draw(st.integers(0, 6), label="n_specials")):
        x[rng.integers(0, n)] = specials[rng.integers(0, len(specials))]
    with np.errstate(over="ignore"):
        z = x.astype(dtype)
    if data.draw(st.booleans(), label="strided"):
        wide = np.zeros(3 * n, dtype=dtype)
        wide[::3] = z
        z = wide[::3]
    y = rng.integers(0, 2, n).astype(label_dtype)
    w = rng.uniform(0, 2, n) if weighted else None
    bad_row = data.draw(st.sampled_from([None, 0, n - 1, int(rng.integers(0, n))]), label="bad_row")
    if bad_row is not None and label_dtype != np.bool_:
        y = y.copy()
        y[bad_row] = 2 if label_dtype in (np.uint8, np.uint64) else rng.choice([-1, 2, 5])
    else:
        bad_row = None
    patch = mock.patch.object(_config, "BLOCKS_PER_CALL", per_call) if per_call else mock.patch.object(
        _config, "BLOCKS_PER_CALL", _config.BLOCKS_PER_CALL)
    with patch, warnings.catch_warnings():
        warnings.simplefilter("ignore", OmittedRowsWarning)
        warnings.simplefilter("ignore", FastCEWarning)  # e.g. standard errors of losses near the float64 maximum
        call = lambda: fastce.evaluate(y, logits=z, sample_weight=w, precision=precision, nan_policy="omit")  # noqa: E731
        if bad_row is not None:
            first_bad = int(np.flatnonzero((y.astype(np.int64) != 0) & (y.astype(np.int64) != 1))[0])
            with pytest.raises(InputError) as info:
                call()
            assert info.value.row == first_bad and info.value.argument == "y_true"
            return
        ones = np.ones(n) if w is None else w
        z_values = np.asarray(z)
        loss, brier, accuracy, counted = _reference(z_values, y, ones)
        if counted == 0 or ones[~np.isnan(z_values.astype(np.float64))].sum() == 0:
            return  # nothing counted: evaluate's own error or NaN, covered elsewhere
        m = call()
    math_dtype = np.float64 if precision == "float64" else dtype
    assert m.n == counted and m.n_omitted == n - counted
    if math.isinf(loss):
        assert m.cross_entropy == math.inf
    else:
        # float32 math: a loss below exp(-156) ~ 2.4e-68 is 0 (kernels_binary.logit_loss_f32; within a float32 ulp)
        floor = 1e-300 if math_dtype == np.float64 else 2.5e-68
        assert m.cross_entropy == pytest.approx(loss, rel=loss_rtol(math_dtype, 1e-13), abs=floor)
    assert m.accuracy == pytest.approx(accuracy, rel=1e-12, abs=1e-15)
    assert m.brier == pytest.approx(brier, rel=loss_rtol(math_dtype, 1e-12), abs=1e-15)
    if precision == "input" and w is None:
        # the Evaluator checks the labels at the door: the same numbers
        ev = fastce.Evaluator(task="binary", nan_policy="omit")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OmittedRowsWarning)
            warnings.simplefilter("ignore", FastCEWarning)
            ev.update(y, z)
            assert ev.result() == m


def test_float64_binary_losses_of_right_answers_beyond_700_are_exp_of_minus_x():
    # exp(-|x|) was cut to 0 from |x| = 700: a right answer's loss, log1p(exp(-x)) = exp(-x) there, was 0 for
    # 3.6e-305 at x = 701, and times pos_weight=1e300 0 for 3.6e-5 (torch and mpmath: 3.627e-05).
    x = np.array([699.0, 700.0, 701.0, 705.5, 708.0, 708.5, 720.0, 744.0, 745.1, 746.0, 1000.0, 1e300, np.inf])
    expected = np.array([math.exp(-v) for v in x])  # libm's exp, within an ulp in the normal range
    for sign, label in ((1.0, 1), (-1.0, 0)):
        losses = fastce.binary_cross_entropy_with_logits(sign * x, np.full(x.size, float(label)), reduction="none")
        normal = expected >= np.finfo(np.float64).tiny
        np.testing.assert_allclose(losses[normal], expected[normal], rtol=4e-16, atol=0)
        # Subnormal results carry fewer bits: within a few of their last place.
        np.testing.assert_allclose(losses[~normal], expected[~normal], rtol=0, atol=4 * 5e-324)
        assert (losses[x >= 746.0] == 0.0).all()
        weighted = fastce.binary_cross_entropy_with_logits(np.array([sign * 701.0]), np.array([float(label)]),
                                                           pos_weight=np.array([1e300]) if label else None,
                                                           weight=None if label else np.array([1e300]))
        assert weighted == pytest.approx(1e300 * math.exp(-701.0), rel=1e-14)
    with pytest.warns(FastCEWarning, match="squares of the weighted per-row values"):  # losses ~1e-305: squares 0
        m = fastce.evaluate(np.array([1, 0]), logits=np.array([701.0, -701.0]))
    assert m.cross_entropy == pytest.approx(math.exp(-701.0), rel=1e-14)
    assert math.isnan(m.stderr["cross_entropy"])
