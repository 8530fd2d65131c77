"""Hypothesis: fastce against the float64 reference on random shapes, dtypes,
layouts, label dtypes and nasty values.

Every score dtype is drawn in every layout: C order, F order, a general
strided view, and read-only arrays in C and F order (F read-only is what
np.asarray gives for a pandas DataFrame).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from unittest import mock

import numpy as np
import pytest
from support import BFLOAT16, loss_rtol
from reference import cross_entropy_reference, evaluate_reference

import fastce
from fastce import _config

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

LABEL_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
# float64 read-only F order is what np.asarray(pandas.DataFrame) gives.
LAYOUTS = ["C", "F", "strided", "readonly", "readonly-F"]
REGIMES = ["normal", "ties", "extreme", "wide", "masked", "tiny", "constant"]


def _max_finite(dtype) -> float:
    if dtype == BFLOAT16:
        return 3e38
    return float(np.finfo(dtype).max)


def make_values(rng, n, c, regime, dtype):
    """float64 values of the regime, representable (after rounding) in dtype."""
    big = min(1e30, _max_finite(dtype) / 2)
    if regime == "normal":
        x = rng.normal(scale=rng.choice([0.1, 1.0, 10.0]), size=(n, c))
    elif regime == "ties":
        x = rng.integers(-2, 3, size=(n, c)).astype(np.float64)
    elif regime == "extreme":
        x = rng.choice([-big, -1.0, 0.0, 1.0, big], size=(n, c))
    elif regime == "wide":
        x = rng.normal(size=(n, c)) * 10.0 ** rng.uniform(-5, math.log10(big), size=(n, c))
    elif regime == "masked":
        x = rng.normal(scale=3.0, size=(n, c))
        mask = rng.random((n, c)) < 0.5
        mask[np.arange(n), rng.integers(0, c, size=n)] = False  # never the whole row
        x[mask] = -np.inf
    elif regime == "tiny":
        x = rng.normal(scale=1e-6, size=(n, c))
    else:  # constant rows: every class tied
        x = np.repeat(rng.normal(size=(n, 1)), c, axis=1)
    with np.errstate(over="ignore"):
        return x.astype(dtype)


def lay_out(x, layout):
    if layout == "C":
        return np.ascontiguousarray(x)
    if layout == "F":
        return np.asfortranarray(x)
    if layout == "strided":
        wide = np.zeros((2 * x.shape[0] + 1, 3 * x.shape[1]), dtype=x.dtype)
        wide[1::2, ::3] = x
        return wide[1::2, ::3]
    out = np.array(x, order="F" if layout == "readonly-F" else "C")
    out.flags.writeable = False
    return out


@st.composite
def problems(draw, dtypes=None):
    dtypes = dtypes or [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)] + (
        [BFLOAT16] if BFLOAT16 is not None else []
    )
    dtype = draw(st.sampled_from(dtypes))
    layout = draw(st.sampled_from(LAYOUTS))
    n = draw(st.integers(1, 300))
    c = draw(st.integers(1, 40))
    regime = draw(st.sampled_from(REGIMES))
    seed = draw(st.integers(0, 2**32 - 1))
    label_dtype = draw(st.sampled_from(LABEL_DTYPES))
    rng = np.random.default_rng(seed)
    x = make_values(rng, n, c, regime, dtype)
    y = rng.integers(0, c, size=n).astype(label_dtype)
    return dict(x=x, scores=lay_out(x, layout), y=y, rng=rng, dtype=dtype, layout=layout, regime=regime)


@contextlib.contextmanager
def blocking(data):
    """The default blocks, or tiny ones: many blocks, kernel calls and thread tasks on small data."""
    elements = data.draw(st.sampled_from([None, 1, 7, 64, 300]), label="block_elements")
    if elements is None:
        yield
        return
    per_call = data.draw(st.integers(1, 4), label="blocks_per_call")
    with mock.patch.object(_config, "BLOCK_ELEMENTS", elements), mock.patch.object(
        _config, "BLOCKS_PER_CALL", per_call
    ), mock.patch.object(_config, "CALL_MIN_SCORES", 0):
        yield


def top_ks(c):
    return st.lists(st.integers(1, c + 2), min_size=0, max_size=4).map(tuple)


def assert_close(got, expected, rel, abs_=0.0):
    if math.isnan(expected):
        assert math.isnan(got)
    elif math.isinf(expected):
        assert got == expected
    else:
        assert got == pytest.approx(expected, rel=rel, abs=abs_)


def assert_metrics_match(m, ref, logits_dtype=np.float64):
    """``logits_dtype``: the dtype of the logits (float32 math for 16/32-bit ones); float64 for probabilities."""
    assert m.n == ref["n"]
    assert m.n_omitted == ref["n_omitted"]
    assert_close(m.weight_sum, ref["weight_sum"], 1e-12)
    assert_close(m.cross_entropy, ref["cross_entropy"], loss_rtol(logits_dtype, 1e-9), 1e-300)
    assert set(m.top_k_accuracy) == set(ref["top_k_accuracy"])
    for k, v in ref["top_k_accuracy"].items():
        assert_close(m.top_k_accuracy[k], v, 1e-12, 1e-15)
    assert_close(m.accuracy, ref["accuracy"], 1e-12, 1e-15)


def _evaluate_both(y, **kwargs):
    """(fastce result or InputError, reference result or ValueError)."""
    try:
        ref = evaluate_reference(y, **kwargs)
    except ValueError as exc:
        ref = exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastce.FastCEWarning)  # unnormalised rows, omitted rows
        try:
            got = fastce.evaluate(y, **kwargs)
        except fastce.InputError as exc:
            got = exc
    return got, ref


@SETTINGS
@given(data=st.data(), p=problems())
def test_evaluate_logits_matches_reference(data, p):
    y, scores = p["y"], p["scores"]
    c = scores.shape[1]
    top_k = data.draw(top_ks(c), label="top_k")
    weights = data.draw(st.sampled_from(["none", "uniform", "zeros-some", "integers"]), label="weights")
    w = None
    if weights != "none":
        rng = p["rng"]
        w = {
            "uniform": lambda: rng.uniform(0.0, 5.0, size=len(y)),
            "zeros-some": lambda: np.where(rng.random(len(y)) < 0.3, 0.0, rng.uniform(0.0, 1.0, size=len(y))),
            "integers": lambda: rng.integers(0, 4, size=len(y)).astype(np.int32),
        }[weights]()
    before = np.array(scores, copy=True), y.copy()
    with blocking(data):
        got, ref = _evaluate_both(y, logits=scores, sample_weight=w, top_k=top_k)
    if isinstance(ref, ValueError):
        # only a zero total weight (or non-finite rows from overflowing casts) can fail here
        assert isinstance(got, fastce.InputError), got
    else:
        assert not isinstance(got, Exception), got
        assert_metrics_match(got, ref, p["dtype"])
    assert np.array_equal(scores, before[0], equal_nan=True) and np.array_equal(y, before[1])


@SETTINGS
@given(data=st.data(), p=problems())
def test_evaluate_proba_matches_reference(data, p):
    x, y, dtype = p["x"], p["y"], p["dtype"]
    z = x.astype(np.float64)
    finite_max = np.where(np.isfinite(z), z, -np.inf).max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(z - finite_max)
        proba = (e / e.sum(axis=1, keepdims=True)).astype(dtype)
    scores = lay_out(proba, p["layout"])
    with blocking(data):
        got, ref = _evaluate_both(y, proba=scores, top_k=(1, 2))
    if isinstance(ref, ValueError):
        assert isinstance(got, fastce.InputError), got
    else:
        assert not isinstance(got, Exception), got
        assert_metrics_match(got, ref)
        assert not got.from_logits


@SETTINGS
@given(data=st.data(), p=problems(dtypes=[np.dtype(np.float32), np.dtype(np.float64)]))
def test_cross_entropy_matches_reference(data, p):
    y, scores, rng = p["y"].astype(np.int64), p["scores"], p["rng"]
    n, c = scores.shape
    ignore_index = data.draw(st.sampled_from([-100, -1, 0, c - 1]), label="ignore_index")
    if data.draw(st.booleans(), label="some ignored"):
        y = np.where(rng.random(n) < 0.25, ignore_index, y)
    weights = data.draw(st.sampled_from(["none", "positive", "some-zero"]), label="class weights")
    weight = None if weights == "none" else rng.uniform(0.1, 2.0, size=c)
    if weights == "some-zero":
        weight[rng.random(c) < 0.3] = 0.0  # zero-weight rows drop out, even with an infinite loss
    reduction = data.draw(st.sampled_from(["none", "mean", "sum"]), label="reduction")
    ref = cross_entropy_reference(scores, y, weight=weight, ignore_index=ignore_index, reduction=reduction)
    nonfinite = not np.isfinite(np.where(np.isneginf(scores), 0.0, scores)).all() or np.isneginf(scores).all(1).any()
    nan_policy = "propagate" if nonfinite else "raise"
    with warnings.catch_warnings(), blocking(data):
        warnings.simplefilter("ignore", fastce.FastCEWarning)  # every row ignored: mean is NaN
        got = fastce.cross_entropy(
            scores, y, weight=weight, ignore_index=ignore_index, reduction=reduction, nan_policy=nan_policy
        )
    if reduction == "none":
        assert got.dtype == np.float64 and got.shape == (n,)
        eps = np.finfo(np.float64).eps
        np.testing.assert_allclose(
            got, ref, rtol=loss_rtol(p["dtype"], 1e-12), atol=4 * c * eps * (1.0 if weight is None else 2.0)
        )
        assert (got[y == ignore_index] == 0.0).all()
    else:
        assert_close(got, ref, loss_rtol(p["dtype"], 1e-9), 1e-300)


@SETTINGS
@given(
    data=st.data(),
    p=problems(dtypes=[np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)]),
    policy=st.sampled_from(["raise", "omit", "propagate"]),
    kind=st.sampled_from(["nan", "posinf", "all-neginf"]),
    fraction=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
)
def test_nan_policies_match_reference(data, p, policy, kind, fraction):
    x, y, rng = p["x"].copy(), p["y"], p["rng"]
    n, c = x.shape
    bad = rng.random(n) < fraction
    cols = rng.integers(0, c, size=n)
    if kind == "nan":
        x[bad, cols[bad]] = np.nan
    elif kind == "posinf":
        x[bad, cols[bad]] = np.inf
    else:
        x[bad] = -np.inf
    scores = lay_out(x, p["layout"])
    with blocking(data):
        got, ref = _evaluate_both(y, logits=scores, nan_policy=policy)
    if isinstance(ref, ValueError):
        assert isinstance(got, fastce.InputError), got
        if policy == "raise" and bad.any() and isinstance(got, fastce.InputError) and got.row is not None:
            first = int(np.flatnonzero(_nonfinite_rows(scores))[0])
            assert got.row == first and f"row {first}" in str(got)
    else:
        assert not isinstance(got, Exception), got
        assert_metrics_match(got, ref, p["dtype"])
        if policy == "propagate" and _nonfinite_rows(scores).any():
            assert math.isnan(got.cross_entropy)


def _nonfinite_rows(scores):
    z = np.asarray(scores, dtype=np.float64)
    return np.isnan(z).any(1) | np.isposinf(z).any(1) | np.isneginf(z).all(1)


@pytest.mark.filterwarnings("ignore::fastce.TopKWarning")  # top-3 of <= 3 classes: warned about, and 1
@SETTINGS
@given(p=problems(dtypes=[np.dtype(np.float32), np.dtype(np.float64)]))
def test_row_order_and_duplication_do_not_matter(p):
    y, scores, rng = p["y"], p["scores"], p["rng"]
    if _nonfinite_rows(scores).any():
        return
    m = fastce.evaluate(y, logits=scores, top_k=(1, 3))
    perm = rng.permutation(len(y))
    m2 = fastce.evaluate(y[perm], logits=np.asarray(scores)[perm], top_k=(1, 3))
    assert m2.n == m.n
    assert_close(m2.cross_entropy, m.cross_entropy, 1e-12, 1e-300)
    assert m2.top_k_accuracy[3] == pytest.approx(m.top_k_accuracy[3], rel=1e-13)
    doubled = fastce.evaluate(np.concatenate([y, y]), logits=np.concatenate([scores, scores]), top_k=(1, 3))
    assert doubled.n == 2 * m.n and doubled.weight_sum == 2 * m.weight_sum
    assert_close(doubled.cross_entropy, m.cross_entropy, 1e-12, 1e-300)


@pytest.mark.skipif(BFLOAT16 is None, reason="ml_dtypes not installed")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("regime", ["normal", "extreme", "masked", "ties"])
def test_bfloat16_matches_reference(layout, regime):
    rng = np.random.default_rng(11)
    x = make_values(rng, 97, 13, regime, BFLOAT16)
    y = rng.integers(0, 13, size=97)
    scores = lay_out(x, layout)
    got, ref = _evaluate_both(y, logits=scores, top_k=(1, 2))
    assert_metrics_match(got, ref, BFLOAT16)
