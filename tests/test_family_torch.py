"""Binary cross-entropy, soft targets and label smoothing against PyTorch and the float64 reference."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from reference import bce_reference, soft_cross_entropy_reference
from support import BFLOAT16, readonly, score_dtype_params

import fastce

torch = pytest.importorskip("torch")
F = torch.nn.functional

N, C = 120, 5


def tensor(array, dtype=None):
    array = np.asarray(array if dtype is None else np.asarray(array).astype(dtype))
    if BFLOAT16 is not None and array.dtype == BFLOAT16:
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(array.copy())


def as_numpy(t):
    return t.float().numpy().astype(np.float64) if t.dtype == torch.bfloat16 else t.numpy().astype(np.float64)


def tol(dtype):
    """torch computes in the input's precision, fastce in float64 of the exactly widened values."""
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return dict(rtol=1e-10, atol=1e-13)
    if dtype == np.float32:
        return dict(rtol=2e-5, atol=1e-6)
    return dict(rtol=2e-2, atol=2e-2)  # float16 / bfloat16: torch rounds every step to 8-11 bits


@pytest.fixture
def logits(rng):
    return rng.normal(scale=3.0, size=(N, C))


@pytest.fixture
def targets(rng):
    return (rng.random((N, C)) < 0.3).astype(np.float64)


# --------------------------------------------------------------------------- binary cross-entropy


WEIGHTS = {
    "none": None,
    "scalar": np.float64(0.7),
    "column": np.linspace(0.5, 2.0, C),
    "row": np.linspace(0.1, 1.9, N)[:, None],
    "element": np.abs(np.sin(np.arange(N * C))).reshape(N, C),
    "one-by-c": np.linspace(0.5, 2.0, C)[None, :],
}


@pytest.mark.parametrize("weight", list(WEIGHTS), ids=list(WEIGHTS))
@pytest.mark.parametrize("pos", [False, True], ids=["no-pos", "pos"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_with_logits_matches_torch_and_reference(logits, targets, weight, pos, reduction):
    w = WEIGHTS[weight]
    pw = np.linspace(0.5, 3.0, C) if pos else None
    got = fastce.binary_cross_entropy_with_logits(
        readonly(logits.copy()), readonly(targets.copy()), weight=w, pos_weight=pw, reduction=reduction
    )
    expected = F.binary_cross_entropy_with_logits(
        tensor(logits), tensor(targets), weight=None if w is None else torch.as_tensor(np.asarray(w)),
        pos_weight=None if pw is None else tensor(pw), reduction=reduction,
    )
    ref = bce_reference(logits, targets, weight=w, pos_weight=pw, reduction=reduction)
    if reduction == "none":
        assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (N, C)
        np.testing.assert_allclose(got, as_numpy(expected), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-300)
    else:
        assert type(got) is float
        assert got == pytest.approx(float(expected), rel=1e-10)
        assert got == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("weight", ["none", "column", "row", "element"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_probabilities_match_torch_and_reference(logits, rng, weight, reduction):
    p = 1.0 / (1.0 + np.exp(-logits))
    p[0, :3] = [0.0, 1.0, 1e-50]  # log clamped at -100, as torch
    soft = rng.random((N, C))  # soft targets are allowed
    w = WEIGHTS[weight]
    got = fastce.binary_cross_entropy(p, soft, weight=w, reduction=reduction)
    expected = F.binary_cross_entropy(
        tensor(p), tensor(soft), weight=None if w is None else torch.as_tensor(np.asarray(w)), reduction=reduction
    )
    ref = bce_reference(p, soft, weight=w, reduction=reduction, from_logits=False)
    np.testing.assert_allclose(got, as_numpy(expected) if reduction == "none" else float(expected), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("dtype", score_dtype_params())
def test_dtypes_one_dimensional(rng, dtype):
    z = rng.normal(scale=2.0, size=300).astype(dtype)
    y = (rng.random(300) < 0.4).astype(dtype)
    got = fastce.binary_cross_entropy_with_logits(z, y)
    assert got == pytest.approx(float(F.binary_cross_entropy_with_logits(tensor(z), tensor(y)).double()), **_approx(dtype))
    # against the reference on the same (exactly widened) values: float64 accuracy whatever the dtype
    assert got == pytest.approx(bce_reference(z, y), rel=1e-12)
    p = (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(dtype)
    got_p = fastce.binary_cross_entropy(p, y, reduction="none")
    assert got_p.shape == (300,)
    np.testing.assert_allclose(got_p, bce_reference(p, y, reduction="none", from_logits=False), rtol=1e-12, atol=1e-14)


def _approx(dtype):
    t = tol(dtype)
    return dict(rel=t["rtol"], abs=t["atol"])


def test_infinite_logits_give_their_limits():
    """Documented difference: torch returns NaN for some of these; fastce the mathematical limit."""
    z = np.array([np.inf, np.inf, -np.inf, -np.inf, 800.0, -800.0])
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    got = fastce.binary_cross_entropy_with_logits(z, y, reduction="none")
    assert got.tolist() == [0.0, math.inf, math.inf, 0.0, 0.0, 0.0]
    torch_says = F.binary_cross_entropy_with_logits(tensor(z), tensor(y), reduction="none").numpy()
    assert math.isnan(torch_says[0]) and torch_says[1] == math.inf and torch_says[4] == 0.0
    assert fastce.binary_cross_entropy_with_logits(z, y) == math.inf
    assert fastce.binary_cross_entropy_with_logits(z[[0, 3, 4, 5]], y[[0, 3, 4, 5]]) == 0.0
    # a zero weight removes an infinite element
    assert fastce.binary_cross_entropy_with_logits(z, y, weight=np.array([1, 0, 0, 1, 1, 1.0])) == 0.0


def test_nan_policies(logits, targets):
    x = logits.copy()
    x[[7, 30], 2] = np.nan
    with pytest.raises(fastce.InputError, match=r"input row 7 holds NaN .*2 such row.*nan_policy") as info:
        fastce.binary_cross_entropy_with_logits(x, targets)
    assert info.value.row == 7 and info.value.argument == "input"
    assert math.isnan(fastce.binary_cross_entropy_with_logits(x, targets, nan_policy="propagate"))
    rows = fastce.binary_cross_entropy_with_logits(x, targets, reduction="none", nan_policy="propagate")
    assert np.isnan(rows[7, 2]) and np.isfinite(rows[7, [0, 1, 3, 4]]).all()
    keep = np.setdiff1d(np.arange(N), [7, 30])
    with pytest.warns(fastce.OmittedRowsWarning, match="skipped 2 row"):
        omitted = fastce.binary_cross_entropy_with_logits(x, targets, nan_policy="omit")
    assert omitted == pytest.approx(fastce.binary_cross_entropy_with_logits(logits[keep], targets[keep]), rel=1e-14)


def test_one_hot_targets_warn_with_both_accuracies(rng):
    z = rng.normal(size=(200, 10))
    one_hot = np.eye(10)[rng.integers(0, 10, 200)]
    hamming = np.mean((z > 0) == (one_hot > 0.5))
    argmax = np.mean(z.argmax(axis=1) == one_hot.argmax(axis=1))
    with pytest.warns(fastce.FastCEWarning, match=r"exactly one 1 among 10 columns.*cross_entropy") as record:
        fastce.binary_cross_entropy_with_logits(z, one_hot)
    message = str(record[0].message)
    assert f"{hamming:.4f}" in message and f"{argmax:.4f}" in message
    assert record[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastce.binary_cross_entropy_with_logits(z, (rng.random((200, 10)) < 0.2).astype(float))  # multi-label: quiet
        fastce.binary_cross_entropy_with_logits(z[:, 0], one_hot[:, 0])  # 1-D binary: quiet


@pytest.mark.parametrize(
    "call,pattern,argument,row",
    [
        (lambda x, y: fastce.binary_cross_entropy(x, y), r"input row 0 holds a value (below 0|above 1).*logits", "input", 0),
        (lambda x, y: fastce.binary_cross_entropy_with_logits(x, y * 2), r"target row \d+ holds 2 in column \d+, outside \[0, 1\]", "target", None),
        (lambda x, y: fastce.binary_cross_entropy_with_logits(x, y[:-1]), r"target has shape .*; it must have the input's shape", "target", None),
        (lambda x, y: fastce.binary_cross_entropy_with_logits(x, y, weight=np.ones(3)), r"weight of shape \(3,\) does not broadcast", "weight", None),
        (lambda x, y: fastce.binary_cross_entropy_with_logits(x, y, weight=-np.ones(C)), r"weight\[0\] is -1\.0; weights must be finite and non-negative", "weight", None),
        (lambda x, y: fastce.binary_cross_entropy_with_logits(x, y, pos_weight=np.ones((2, C))), r"pos_weight must hold one weight per class", "pos_weight", None),
        (lambda x, y: fastce.binary_cross_entropy_with_logits(x, y, reduction="avg"), r"reduction='avg'", "reduction", None),
        (lambda x, y: fastce.binary_cross_entropy(x[:, :, None], y), r"input must have shape", "input", None),
    ],
)
def test_bad_input(logits, targets, call, pattern, argument, row):
    x, y = readonly(logits.copy()), readonly(targets.copy())
    with pytest.raises(fastce.InputError, match=pattern) as info:
        call(x, y)
    assert info.value.argument == argument
    if row is not None:
        assert info.value.row == row
    assert np.array_equal(x, logits) and np.array_equal(y, targets)


def test_bool_and_integer_targets_and_layouts(logits, targets):
    expected = fastce.binary_cross_entropy_with_logits(logits, targets)
    assert fastce.binary_cross_entropy_with_logits(logits, targets.astype(bool)) == expected
    assert fastce.binary_cross_entropy_with_logits(logits, targets.astype(np.int32)) == expected
    assert fastce.binary_cross_entropy_with_logits(np.asfortranarray(logits), np.asfortranarray(targets)) == expected
    big = np.zeros((N, 2 * C))
    big[:, ::2] = logits
    assert fastce.binary_cross_entropy_with_logits(big[:, ::2], targets) == expected
    assert fastce.binary_cross_entropy_with_logits(logits.tolist(), targets.tolist()) == expected
    assert fastce.binary_cross_entropy_with_logits(tensor(logits), tensor(targets)) == expected


# --------------------------------------------------------------------------- soft targets, label smoothing


def _soft(rng, n=N, c=C):
    q = rng.random((n, c)) ** 3
    return q / q.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_label_smoothing_matches_torch(logits, rng, smoothing, weighted, ignore, reduction):
    t = rng.integers(0, C, N)
    ignore_index = -100 if ignore is None else ignore
    if ignore is not None:
        t[::4] = ignore  # also a valid class: ignored all the same, as torch does
    w = np.linspace(0.2, 2.0, C) if weighted else None
    got = fastce.cross_entropy(logits, t, weight=w, ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
    expected = F.cross_entropy(
        tensor(logits), torch.from_numpy(t), weight=None if w is None else tensor(w), ignore_index=ignore_index,
        reduction=reduction, label_smoothing=smoothing,
    )
    ref = soft_cross_entropy_reference(logits, t, weight=w, ignore_index=ignore_index, reduction=reduction,
                                       label_smoothing=smoothing)
    np.testing.assert_allclose(got, as_numpy(expected) if reduction == "none" else float(expected), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_soft_targets_match_torch(logits, rng, smoothing, weighted, reduction):
    q = _soft(rng)
    w = np.linspace(0.2, 2.0, C) if weighted else None
    got = fastce.cross_entropy(logits, q, weight=w, reduction=reduction, label_smoothing=smoothing)
    expected = F.cross_entropy(tensor(logits), tensor(q), weight=None if w is None else tensor(w), reduction=reduction,
                               label_smoothing=smoothing)
    ref = soft_cross_entropy_reference(logits, q, weight=w, reduction=reduction, label_smoothing=smoothing)
    np.testing.assert_allclose(got, as_numpy(expected) if reduction == "none" else float(expected), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_soft_targets_other_dtypes(logits, rng, dtype):
    x = logits.astype(dtype)
    q = _soft(rng).astype(np.float32)
    got = fastce.cross_entropy(x, q, label_smoothing=0.05)
    assert got == pytest.approx(float(F.cross_entropy(tensor(x).float(), tensor(q), label_smoothing=0.05)), rel=1e-5)
    assert got == pytest.approx(soft_cross_entropy_reference(x, q, label_smoothing=0.05), rel=1e-12)


def test_soft_target_edge_cases(rng):
    x = np.array([[0.0, -np.inf, 2.0], [1.0, 1.0, 1.0]])
    q = np.array([[0.5, 0.0, 0.5], [0.2, 0.3, 0.5]])
    # a masked class with no target mass contributes 0 (torch: 0 * -inf = NaN)
    got = fastce.cross_entropy(x, q, reduction="none")
    assert np.isfinite(got).all()
    assert math.isnan(float(F.cross_entropy(tensor(x), tensor(q), reduction="none")[0]))
    np.testing.assert_allclose(got, soft_cross_entropy_reference(x, q, reduction="none"), rtol=1e-14)
    # ...but label smoothing puts mass on it: infinite, as torch
    assert fastce.cross_entropy(x, q, label_smoothing=0.1) == math.inf
    with pytest.raises(fastce.InputError, match=r"target row 1 holds a negative.*probabilities") as info:
        fastce.cross_entropy(x, np.array([[0.5, 0.0, 0.5], [1.2, -0.2, 0.0]]))
    assert info.value.row == 1
    with pytest.warns(fastce.FastCEWarning, match=r"1 row\(s\) of target do not sum to 1 \(first: row 0\)"):
        fastce.cross_entropy(x, np.array([[0.5, 0.0, 0.4], [0.2, 0.3, 0.5]]))
    for bad in (-0.1, 1.5, "0.1", True):
        with pytest.raises(fastce.InputError, match="label_smoothing"):
            fastce.cross_entropy(x, q, label_smoothing=bad)


def test_soft_target_nan_policies(logits, rng):
    x = logits.copy()
    x[9, 1] = np.nan
    q = _soft(rng)
    with pytest.raises(fastce.InputError, match=r"input row 9 holds NaN"):
        fastce.cross_entropy(x, q)
    assert math.isnan(fastce.cross_entropy(x, q, nan_policy="propagate"))
    keep = np.setdiff1d(np.arange(N), [9])
    with pytest.warns(fastce.OmittedRowsWarning):
        assert fastce.cross_entropy(x, q, nan_policy="omit") == pytest.approx(fastce.cross_entropy(logits[keep], q[keep]), rel=1e-14)


def test_every_row_ignored_with_smoothing(logits):
    t = np.full(N, -100)
    with pytest.warns(fastce.FastCEWarning, match="ignore_index"):
        assert math.isnan(fastce.cross_entropy(logits, t, label_smoothing=0.1))
    assert math.isnan(float(F.cross_entropy(tensor(logits), torch.from_numpy(t), label_smoothing=0.1)))


def test_nothing_is_mutated(logits, targets, rng):
    q = _soft(rng)
    t = rng.integers(0, C, N)
    w = np.linspace(0.5, 2.0, C)
    copies = [a.copy() for a in (logits, targets, q, t, w)]
    fastce.binary_cross_entropy_with_logits(logits, targets, weight=w, pos_weight=w, reduction="none")
    fastce.cross_entropy(logits, q, weight=w, reduction="none", label_smoothing=0.2)
    fastce.cross_entropy(logits, t, weight=w, label_smoothing=0.2)
    for before, after in zip(copies, (logits, targets, q, t, w)):
        assert np.array_equal(before, after)


def test_loss_overflow_and_top_k_warnings_name_the_callers_line():
    # They named lines inside fastce (torch_compat.py, torch_binary.py, compare.py, dask.py): a fixed stack depth.
    import warnings

    import dask.array as da

    import fastce.dask

    rng = np.random.default_rng(9)
    z = rng.normal(size=(40, 3)) * 3e307
    y = rng.integers(0, 3, 40)
    soft = np.eye(3)[y] * 0.9 + 0.1 / 3
    calls = {
        "sum": lambda: fastce.cross_entropy(z, y, reduction="sum"),
        "soft": lambda: fastce.cross_entropy(z, soft),
        "kdim": lambda: fastce.cross_entropy(z.reshape(20, 2, 3).transpose(0, 2, 1), y.reshape(20, 2)),
        "bce": lambda: fastce.binary_cross_entropy_with_logits(z, (soft > 0.5).astype(np.float64)),
        "compare top-k": lambda: fastce.compare(y, logits={"A": z / 1e307, "B": -z / 1e307}, top_k=(1, 3)),
        "dask compare top-k": lambda: fastce.dask.compare(da.from_array(y, 20), logits={
            "A": da.from_array(z / 1e307, (20, 3)), "B": da.from_array(-z / 1e307, (20, 3))}, top_k=(1, 3)),
    }
    for name, call in calls.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        assert caught, name
        for w in caught:
            assert w.filename == __file__, (name, w.filename, str(w.message)[:80])
