"""fastce.cross_entropy against torch.nn.functional.cross_entropy and the reference."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from support import loss_rtol, readonly
from reference import cross_entropy_reference

import fastce

torch = pytest.importorskip("torch")
F = torch.nn.functional

N, C = 300, 13
EPS = np.finfo(np.float64).eps


def torch_ce(x, t, weight=None, ignore_index=-100, reduction="mean"):
    xt = torch.from_numpy(np.array(x))
    wt = None if weight is None else torch.from_numpy(np.asarray(weight, dtype=x.dtype))
    out = F.cross_entropy(
        xt, torch.from_numpy(np.asarray(t, dtype=np.int64)), weight=wt, ignore_index=ignore_index, reduction=reduction
    )
    return out.numpy().astype(np.float64) if reduction == "none" else float(out)


def tolerances(dtype):
    # torch computes in the input's precision, fastce in float64
    return dict(rel=1e-12, abs=1e-13) if dtype == np.float64 else dict(rel=2e-6, abs=2e-6)


@pytest.fixture
def data(rng):
    x = rng.normal(scale=2.5, size=(N, C))
    t = rng.integers(0, C, size=N)
    return x, t


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, -100, 4])
def test_matches_torch(data, rng, dtype, reduction, weighted, ignore):
    x, t = data
    x = x.astype(dtype)
    t = t.copy()
    ignore_index = -100 if ignore is None else ignore
    if ignore is not None:
        t[rng.random(N) < 0.2] = ignore
    w = rng.uniform(0.1, 3.0, size=C) if weighted else None
    expected = torch_ce(x, t, w, ignore_index, reduction)
    got = fastce.cross_entropy(readonly(x), readonly(t), weight=w, ignore_index=ignore_index, reduction=reduction)
    if reduction == "none":
        assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (N,)
        np.testing.assert_allclose(got, expected, rtol=tolerances(dtype)["rel"], atol=tolerances(dtype)["abs"])
        assert (got[t == ignore_index] == 0.0).all()
    else:
        assert type(got) is float
        assert got == pytest.approx(expected, **tolerances(dtype))
    # and the float64 reference, on the same (exactly widened) values
    ref = cross_entropy_reference(x, t, weight=w, ignore_index=ignore_index, reduction=reduction)
    if reduction == "none":
        np.testing.assert_allclose(got, ref, rtol=loss_rtol(dtype, 1e-12), atol=4 * C * EPS)
    else:
        assert got == pytest.approx(ref, rel=loss_rtol(dtype, 1e-12))


def test_per_row_losses_within_ulps_of_reference(rng):
    # logits over a wide range; per-row losses agree to ~1e-12 relative, plus
    # an absolute C*eps for log(sum) when the sum is close to 1.
    x = rng.normal(scale=30.0, size=(400, 37))
    x[::5] *= 1e-6
    t = rng.integers(0, 37, size=400)
    got = fastce.cross_entropy(x, t, reduction="none")
    ref = cross_entropy_reference(x, t, reduction="none")
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=4 * 37 * EPS)
    assert math.fsum(got) == pytest.approx(fastce.cross_entropy(x, t, reduction="sum"), rel=1e-13)


def test_mean_divides_by_sum_of_target_class_weights():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    t = np.array([0, 1, 1])
    w = np.array([2.0, 0.5])
    per_row = fastce.cross_entropy(x, t, weight=w, reduction="none")
    assert fastce.cross_entropy(x, t, weight=w) == pytest.approx(per_row.sum() / (2.0 + 0.5 + 0.5), rel=1e-15)
    assert fastce.cross_entropy(x, t, weight=w) == pytest.approx(torch_ce(x, t, w), rel=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masked_classes_and_neg_inf_target_like_torch(rng, dtype):
    x = rng.normal(size=(50, 6)).astype(dtype)
    x[rng.random((50, 6)) < 0.3] = -np.inf
    x[:, 0] = rng.normal(size=50)  # never a fully masked row
    t = rng.integers(0, 6, size=50)
    assert np.isneginf(x[np.arange(50), t]).any()  # some targets are masked: infinite loss
    for reduction in ("none", "sum", "mean"):
        got = fastce.cross_entropy(x, t, reduction=reduction)
        expected = torch_ce(x, t, reduction=reduction)
        if reduction == "none":
            assert np.array_equal(np.isinf(got), np.isinf(expected))
            finite = np.isfinite(expected)
            np.testing.assert_allclose(got[finite], expected[finite], **_np_tol(dtype))
        else:
            assert got == expected == math.inf


def _np_tol(dtype):
    tol = tolerances(dtype)
    return dict(rtol=tol["rel"], atol=tol["abs"])


def test_huge_logits_like_torch():
    x = np.array([[1e30, 0.0, -1e30], [0.0, 1e30, 1e30], [-1e30, -1e30, -1e30]])
    t = np.array([1, 2, 0])
    np.testing.assert_allclose(
        fastce.cross_entropy(x, t, reduction="none"), torch_ce(x, t, reduction="none"), rtol=1e-15
    )


def test_every_target_ignored():
    x = np.zeros((4, 3))
    t = np.full(4, -100)
    with pytest.warns(fastce.FastCEWarning, match="ignore_index"):
        got = fastce.cross_entropy(x, t)
    assert math.isnan(got) and math.isnan(torch_ce(x, t))
    assert fastce.cross_entropy(x, t, reduction="sum") == 0.0 == torch_ce(x, t, reduction="sum")
    assert np.array_equal(fastce.cross_entropy(x, t, reduction="none"), np.zeros(4))


@pytest.mark.parametrize("label_dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint64])
def test_target_dtypes_and_ignore_index(data, label_dtype):
    x, t = data
    t = t.copy()
    t[::3] = 7
    expected = torch_ce(x, t, ignore_index=7, reduction="none")
    got = fastce.cross_entropy(x, t.astype(label_dtype), ignore_index=7, reduction="none")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)
    # the default ignore_index (-100) cannot occur in unsigned labels and is harmless
    fastce.cross_entropy(x, t.astype(label_dtype))


def test_uint8_ignore_index_255():
    x = np.array([[1.0, 2.0], [3.0, 0.0], [0.5, 0.5]])
    t = np.array([1, 255, 0], dtype=np.uint8)
    assert fastce.cross_entropy(x, t, ignore_index=255) == pytest.approx(torch_ce(x, t, ignore_index=255), rel=1e-14)


def test_tensor_inputs(data):
    x, t = data
    xt = torch.from_numpy(x.astype(np.float32)).requires_grad_(True)
    expected = float(F.cross_entropy(xt, torch.from_numpy(t)).detach())
    assert fastce.cross_entropy(xt, torch.from_numpy(t)) == pytest.approx(expected, rel=2e-6)


def test_nan_policies(data):
    x, t = data
    x = x.copy()
    x[[5, 17], 2] = np.nan
    x[40, :] = np.inf
    x = readonly(x)
    with pytest.raises(fastce.InputError, match=r"input row 5\b.*nan_policy"):
        fastce.cross_entropy(x, t)
    assert math.isnan(fastce.cross_entropy(x, t, nan_policy="propagate"))
    assert math.isnan(torch_ce(x, t))
    rows = fastce.cross_entropy(x, t, reduction="none", nan_policy="propagate")
    assert np.isnan(rows[[5, 17, 40]]).all() and np.isfinite(np.delete(rows, [5, 17, 40])).all()
    keep = np.setdiff1d(np.arange(N), [5, 17, 40])
    with pytest.warns(fastce.OmittedRowsWarning, match="3 row"):
        omitted = fastce.cross_entropy(x, t, nan_policy="omit")
    assert omitted == pytest.approx(fastce.cross_entropy(x[keep], t[keep]), rel=1e-13)


def test_does_not_mutate_inputs(data):
    x, t = data
    w = np.linspace(0.5, 2.0, C)
    copies = x.copy(), t.copy(), w.copy()
    for reduction in ("none", "mean", "sum"):
        fastce.cross_entropy(x, t, weight=w, reduction=reduction)
    assert np.array_equal(x, copies[0]) and np.array_equal(t, copies[1]) and np.array_equal(w, copies[2])


def test_class_weight_zero_row_finite_loss():
    x = np.array([[0.0, 3.0, 1.0], [2.0, 1.0, 0.0]])
    t = np.array([1, 0])
    w = np.array([1.0, 0.0, 1.0])
    for reduction in ("none", "sum", "mean"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastce.FastCEWarning)
            got = fastce.cross_entropy(x, t, weight=w, reduction=reduction)
        np.testing.assert_allclose(got, torch_ce(x, t, w, reduction=reduction), rtol=1e-14)


def test_class_weight_zero_removes_a_masked_target_row():
    """Documented difference: torch gives NaN (0 * inf); fastce drops a zero-weight row.

    The per-row losses, the sum and the mean stay consistent with each other.
    """
    x = np.array([[0.0, -np.inf, 1.0], [2.0, 1.0, 0.0]])
    t = np.array([1, 0])
    w = np.array([1.0, 0.0, 1.0])
    rows = fastce.cross_entropy(x, t, weight=w, reduction="none")
    total = fastce.cross_entropy(x, t, weight=w, reduction="sum")
    mean = fastce.cross_entropy(x, t, weight=w, reduction="mean")
    assert math.isnan(torch_ce(x, t, w, reduction="sum"))
    assert rows[0] == 0.0
    assert total == rows.sum() == pytest.approx(torch_ce(x[1:], t[1:], w, reduction="sum"), rel=1e-12)
    assert mean == pytest.approx(torch_ce(x[1:], t[1:], w, reduction="mean"), rel=1e-12)
