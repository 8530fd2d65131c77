"""float32 math for 16- and 32-bit logits: the exp to 1 float32 ulp, each row's loss to 4.

The contract (DESIGN.md, "precision follows the input"): float16, bfloat16
and float32 logits are computed with float32 math, every row's loss within
4 float32 ulp of the exact value -- confident rows whose loss is tiny
included; ``precision="float64"`` forces float64 math.  The reference is
the same formula in plain float64 numpy (its own error, ~1e-13 relative at
C = 2000, is far below a float32 ulp).
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from support import BFLOAT16

import fastce
from fastce import _accumulate
from fastce._vecmath import exp_nonpositive_f32

ULP_BOUND = 4


@njit
def _exp_all(x):
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = exp_nonpositive_f32(x[i])
    return out


def ulp32(value: np.ndarray) -> np.ndarray:
    """The float32 ulp at each (float64) value: 2**-149 in the subnormal range."""
    return np.spacing(np.abs(value).astype(np.float32)).astype(np.float64)


def test_exp_nonpositive_f32_within_one_float32_ulp():
    rng = np.random.default_rng(0)
    x = np.concatenate([
        -rng.uniform(0, 1, 200_000), -rng.uniform(0, 104, 400_000),
        -rng.uniform(80, 104, 100_000),  # the subnormal range starts at -87.3
        -np.logspace(-40, 2, 50_000), -np.arange(0, 104.5, 0.5) * np.log(2),
    ]).astype(np.float32)
    got = _exp_all(x)
    assert got.dtype == np.float32
    exact = np.exp(x.astype(np.float64))
    errors = np.abs(got - exact) / ulp32(exact)
    assert errors.max() <= 1.0, (errors.max(), x[errors.argmax()])


def test_exp_nonpositive_f32_edges():
    special = np.array([0.0, -0.0, -np.inf, np.nan, -103.9, -104.0, -104.5, -1e30], dtype=np.float32)
    got = _exp_all(special)
    assert got[0] == 1.0 and got[1] == 1.0 and got[2] == 0.0 and np.isnan(got[3])
    assert got[4] == np.float32(2.0**-149)  # exp(-103.9) = 8.6e-46 rounds up to the least subnormal
    assert (got[5:] == 0.0).all()


def reference_losses(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(max - z_y) + log1p(sum of exp(z - max) below the max + ties - 1) in float64."""
    z = z.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    top = z == m
    rest = np.where(top, 0.0, np.exp(z - m)).sum(axis=1) + (top.sum(axis=1) - 1)
    return (m[:, 0] - z[np.arange(len(y)), y]) + np.log1p(rest)


def _rows(rng, n_rows: int, n_classes: int, kind: str):
    """(float32 logits, labels) of one kind of row."""
    z = rng.standard_normal((n_rows, n_classes)).astype(np.float32) * np.float32(3)
    y = rng.integers(0, n_classes, n_rows)
    if kind == "confident":
        # The true class far above the rest: losses from ~1e-3 down to ~1e-40
        # (below float32's normal range), all of whose digits must be kept.
        gap = rng.choice([8.0, 20.0, 45.0, 90.0], n_rows).astype(np.float32)
        z[np.arange(n_rows), y] = z.max(axis=1) + gap
    elif kind == "ties":
        z = np.round(z).astype(np.float32)  # several entries at the max, the label often among them
        y = np.where(rng.random(n_rows) < 0.5, z.argmax(axis=1), y)
    elif kind == "masked":
        true = z[np.arange(n_rows), y]
        z[rng.random(z.shape) < 0.3] = -np.inf
        z[np.arange(n_rows), y] = true  # a finite true class
    return z, y


@pytest.mark.parametrize("n_classes", [3, 10, 17, 32, 33, 100, 1030, 2000])  # <= 32: 16-row leaf; 1030, 2000: exp chunks
@pytest.mark.parametrize("kind", ["normal", "confident", "ties", "masked"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_row_losses_within_4_float32_ulp(n_classes, kind, dtype):
    if dtype == "bfloat16" and BFLOAT16 is None:
        pytest.skip("ml_dtypes not installed")
    rng = np.random.default_rng(n_classes)
    n_rows = 2000 if n_classes <= 100 else 300
    z, y = _rows(rng, n_rows, n_classes, kind)
    scores = z.astype({"float32": np.float32, "float16": np.float16, "bfloat16": BFLOAT16}[dtype])
    exact = reference_losses(scores, y)
    got = fastce.cross_entropy(scores, y, reduction="none")
    assert np.isfinite(exact).all()
    errors = np.abs(got - exact) / ulp32(exact)
    assert errors.max() <= ULP_BOUND, (errors.max(), exact[errors.argmax()], got[errors.argmax()])
    if kind == "confident" and dtype == "float32":
        assert exact.min() < 1e-35  # the tiny losses were tested


@pytest.mark.parametrize("n_classes", [100, 1000])
def test_precision_float64_forces_float64_math(n_classes):
    rng = np.random.default_rng(5)
    z, y = _rows(rng, 500, n_classes, "confident")
    exact = reference_losses(z, y)
    losses = np.zeros(len(y))
    _accumulate.accumulate_matrix(z, y, top_k=(1,), from_logits=True, row_losses=losses, precision="float64")
    np.testing.assert_allclose(losses, exact, rtol=1e-13, atol=0)
    with pytest.raises(ValueError, match="precision='float128'"):
        _accumulate.accumulate_matrix(z, y, top_k=(1,), from_logits=True, precision="float128")


def test_float32_math_keeps_the_flags_and_counts():
    """NaN and +inf rows are non-finite, -inf masked entries contribute nothing, as with float64 math."""
    rng = np.random.default_rng(9)
    z = rng.standard_normal((6, 50)).astype(np.float32)
    z[0, 3] = np.nan
    z[1, 4] = np.inf
    z[2, :] = -np.inf
    z[3, 10:] = -np.inf
    y = np.zeros(6, dtype=np.int64)
    y[2] = 1
    got = fastce.cross_entropy(z, y, reduction="none", nan_policy="propagate")
    assert np.isnan(got[:3]).all()
    np.testing.assert_allclose(got[3:], reference_losses(z[3:], y[3:]), rtol=ULP_BOUND * 2.0**-23)


def test_read_scores_passes_precision_through():
    """readers.read_scores (the kernel call every door shares) takes ``precision`` to the kernel."""
    from fastce import readers
    from fastce._accumulate import kernel_input

    rng = np.random.default_rng(3)
    z, y = _rows(rng, 300, 100, "confident")
    eps = float(np.finfo(np.float32).eps)
    states = {
        precision: readers.read_scores(kernel_input(z), y, None, top_k=(1,), from_logits=True, eps=eps,
                                       precision=precision)
        for precision in ("input", "float64")
    }
    for precision, state in states.items():
        losses = np.zeros(len(y))
        _accumulate.accumulate_matrix(z, y, top_k=(1,), from_logits=True, row_losses=losses, precision=precision)
        assert state.finalize().cross_entropy == pytest.approx(losses.mean(), rel=1e-15)
    assert states["input"].finalize().cross_entropy != states["float64"].finalize().cross_entropy
    assert readers.read_scores(kernel_input(z), y, None, top_k=(1,), from_logits=True, eps=eps).finalize() \
        .cross_entropy == states["input"].finalize().cross_entropy


# --------------------------------------------------------------------------- 1-D binary logits


def binary_reference(z: np.ndarray, y: np.ndarray):
    """(loss, 2 (p - y)**2) of 1-D logits in long double: log1p(e) for a right prediction (z > 0 predicts
    1), |z| + log1p(e) for a wrong one, e = exp(-|z|); |p - y| is e / (1 + e) or 1 / (1 + e)."""
    x = np.abs(z.astype(np.longdouble))
    e = np.exp(-x)
    right = (z > 0) == (y == 1)
    tail = np.log1p(e)
    loss = np.where(right, tail, x + tail)
    d = np.where(right, e / (1 + e), 1 / (1 + e))
    return loss, 2 * d * d


def _binary_rows(rng, kind: str, n: int = 20_000):
    if kind == "normal":
        z = rng.standard_normal(n) * 4
    elif kind == "confident":  # losses from ~1e-5 down to exp(-156) ~ 2.4e-68 (right) and large (wrong)
        z = rng.uniform(10, 156, n) * rng.choice([-1, 1], n)
    elif kind == "near-zero":  # the series' two ranges meet at exp(-|z|) = sqrt(2) - 1, |z| = 0.88
        z = np.concatenate([rng.uniform(-2, 2, n - 8), [0.0, -0.0, 0.8813735, -0.8813736, 1e-30, -1e-30, 1e-45,
                                                        np.log(2)]])
    else:  # spans: every binade from 2**-40 to 2**7
        z = np.exp2(rng.uniform(-40, 7.2, n)) * rng.choice([-1, 1], n)
    return z, rng.integers(0, 2, z.size)


@pytest.mark.parametrize("kind", ["normal", "confident", "near-zero", "binades"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_binary_row_losses_and_brier_within_4_float32_ulp(kind, dtype):
    """1-D binary logits (kernels_binary.logit_loss_f32): every row's loss and Brier term within 4 float32 ulp,
    the confident rows' tiny losses included; the same per-row values in compare's per-row statistics."""
    if dtype == "bfloat16" and BFLOAT16 is None:
        pytest.skip("ml_dtypes not installed")
    from fastce import kernels as K
    from fastce import kernels_binary as KB
    from fastce._accumulate import kernel_input
    from fastce._accumulate_family import accumulate_binary_logits

    z, y = _binary_rows(np.random.default_rng(len(kind)), kind)
    scores = z.astype({"float32": np.float32, "float16": np.float16, "bfloat16": BFLOAT16}[dtype])
    view = kernel_input(scores.view(np.int16) if dtype == "bfloat16" else
                        scores.view(np.uint16) if dtype == "float16" else scores)
    losses = np.zeros(z.size)
    state = accumulate_binary_logits(view, y, top_k=(1,), row_losses=losses)
    exact_loss, exact_brier = binary_reference(scores.astype(np.float32), y)
    errors = np.abs(losses - exact_loss) / ulp32(exact_loss)
    assert errors.max() <= ULP_BOUND, (errors.max(), scores[errors.argmax()], y[errors.argmax()])
    stats = np.empty((z.size, K.ROW_STATS_COLUMNS))
    KB.binary_row_stats(view, y, True, 0.0, True, stats)
    assert np.array_equal(stats[:, K.S_LOSS], losses)
    brier_errors = np.abs(stats[:, K.S_BRIER] - exact_brier) / ulp32(exact_brier)
    assert brier_errors.max() <= ULP_BOUND, (brier_errors.max(), scores[brier_errors.argmax()])
    # Relative too: the float32 ulp of a value below float32's range is 2**-149, which a loss of 0 would meet.
    # Above the floor of float32 math (exp(-156): a smaller loss or Brier term is 0), each keeps its digits.
    above = np.abs(scores.astype(np.float32)) <= 156
    relative = np.abs(losses - exact_loss)[above] / exact_loss[above]
    assert relative.max() <= ULP_BOUND * 2.0**-23, relative.max()
    brier_relative = np.abs(stats[:, K.S_BRIER] - exact_brier)[above] / exact_brier[above]
    assert brier_relative.max() <= ULP_BOUND * 2.0**-23, brier_relative.max()
    assert state.finalize().cross_entropy == pytest.approx(float(exact_loss.mean()), rel=ULP_BOUND * 2.0**-23)
    if kind == "confident" and dtype == "float32":
        assert exact_loss[above].min() < 1e-60  # the tiny losses were tested, relative error included


def test_binary_precision_float64_forces_float64_math():
    from fastce._accumulate_family import accumulate_binary_logits

    z, y = _binary_rows(np.random.default_rng(2), "confident")
    z = z.astype(np.float32)
    exact, _ = binary_reference(z, y)
    losses = {p: np.zeros(z.size) for p in ("input", "float64")}
    states = {p: accumulate_binary_logits(z, y, top_k=(1,), row_losses=losses[p], precision=p) for p in losses}
    np.testing.assert_allclose(losses["float64"], exact.astype(np.float64), rtol=1e-13, atol=0)
    assert not np.array_equal(losses["input"], losses["float64"])  # two maths, both accurate
    assert states["input"].finalize().accuracy == states["float64"].finalize().accuracy  # comparisons are exact
    with pytest.raises(ValueError, match="precision='float128'"):
        accumulate_binary_logits(z, y, top_k=(1,), precision="float128")


# --------------------------------------------------------------------------- multi-label (n, C) logits


def multilabel_reference(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each element's y softplus(-z) + (1 - y) softplus(z) in long double (a term of coefficient 0 left out)."""
    x = z.astype(np.longdouble)
    t = y.astype(np.longdouble)
    tail = np.log1p(np.exp(-np.abs(x)))
    positive = np.where(t == 0, 0, t * (np.maximum(-x, 0) + tail))
    negative = np.where(t == 1, 0, (1 - t) * (np.maximum(x, 0) + tail))
    return positive + negative


def _multilabel_case(kind: str, targets: str, n: int = 4000, c: int = 9):
    rng = np.random.default_rng(len(kind) + 10 * len(targets))
    z, _ = _binary_rows(rng, kind, n * c)
    z = rng.permutation(z)[: n * c].reshape(n, c)
    y = rng.random((n, c)) if targets == "soft" else (rng.random((n, c)) < 0.4).astype(np.float64)
    return z, y


@pytest.mark.parametrize("kind", ["normal", "confident", "near-zero", "binades"])
@pytest.mark.parametrize("targets", ["0/1", "soft"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_multilabel_element_losses_within_4_float32_ulp(kind, targets, dtype):
    """(n, C) multi-label logits take float32 math (kernels_binary.softplus_parts_in): every element's loss within
    4 float32 ulp and relative 4 * 2**-23 above float32 math's floor, in the general kernel (its per-element
    losses) and through evaluate's fast kernel (the mean)."""
    if dtype == "bfloat16" and BFLOAT16 is None:
        pytest.skip("ml_dtypes not installed")
    from fastce._accumulate import kernel_input
    from fastce._accumulate_family import accumulate_bce, multilabel_float32_math

    z, y = _multilabel_case(kind, targets)
    scores = z.astype({"float32": np.float32, "float16": np.float16, "bfloat16": BFLOAT16}[dtype])
    view = kernel_input(scores.view(np.int16) if dtype == "bfloat16" else
                        scores.view(np.uint16) if dtype == "float16" else scores)
    assert multilabel_float32_math(view, True, "input") is True
    losses = np.zeros(z.shape)
    accumulate_bce(view, y, from_logits=True, element_losses=losses, float32_math=True)
    exact = multilabel_reference(scores.astype(np.float32), y)
    errors = np.abs(losses - exact) / ulp32(exact)
    assert errors.max() <= ULP_BOUND, (errors.max(), scores.flat[errors.argmax()], y.flat[errors.argmax()])
    above = (np.abs(scores.astype(np.float32)) <= 156) & (exact > 0)
    relative = np.abs(losses - exact)[above] / exact[above]
    assert relative.max() <= ULP_BOUND * 2.0**-23, relative.max()
    metrics = fastce.evaluate(y, logits=scores, task="multilabel")
    assert metrics.cross_entropy == pytest.approx(float(exact.mean()), rel=ULP_BOUND * 2.0**-23)


def test_multilabel_precision_float64_forces_float64_math():
    z, y = _multilabel_case("normal", "soft")
    z32 = z.astype(np.float32)
    exact = float(multilabel_reference(z32, y).mean())
    default = fastce.evaluate(y, logits=z32, task="multilabel")
    wide = fastce.evaluate(y, logits=z32, task="multilabel", precision="float64")
    assert wide.cross_entropy == pytest.approx(exact, rel=1e-13)
    assert default.cross_entropy == pytest.approx(exact, rel=ULP_BOUND * 2.0**-23)
    assert default.cross_entropy != wide.cross_entropy  # two maths, both accurate
    assert default.hamming_accuracy == wide.hamming_accuracy  # comparisons are exact
    # diagnose reads the same elements in the same math: its per-label losses add up to evaluate's loss.
    for precision, metrics in (("input", default), ("float64", wide)):
        report = fastce.diagnose(y, logits=z32, task="multilabel", precision=precision)
        assert report.metrics.cross_entropy == metrics.cross_entropy
        per_label = float(np.mean(report.labels["mean_loss"]))  # every label has the same rows
        assert per_label == pytest.approx(metrics.cross_entropy, rel=1e-12)
