"""precision= through every door: the input's math (float32 for 16/32-bit scores) or float64, the same from each."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import fastce
from fastce import cli
from fastce.errors import InputError


@pytest.fixture(scope="module")
def long_rows():
    rng = np.random.default_rng(3)
    z = (4 * rng.standard_normal((3000, 100))).astype(np.float32)
    y = rng.integers(0, 100, 3000)
    return y, z


def _reference(y, z):
    z = z.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return (lse - z[np.arange(len(y)), y]).mean()


def test_both_precisions_are_accurate_and_differ_only_in_float32_bits(long_rows):
    y, z = long_rows
    fast = fastce.evaluate(y, logits=z, top_k=(1, 5))
    exact = fastce.evaluate(y, logits=z, top_k=(1, 5), precision="float64")
    ref = _reference(y, z)
    assert exact.cross_entropy == pytest.approx(ref, rel=1e-14)
    assert fast.cross_entropy == pytest.approx(ref, rel=5e-7)  # 4 float32 ulp per row
    assert fast.accuracy == exact.accuracy and fast.top_k_accuracy == exact.top_k_accuracy  # comparisons are exact
    assert fastce.evaluate(y, logits=z.astype(np.float64)) == fastce.evaluate(y, logits=z.astype(np.float64),
                                                                              precision="float64")


def _eval_command_json(tmp_path, y, z, precision) -> str:
    """What ``fastce eval --json --precision ...`` prints for labels ``y`` and logits ``z`` saved as .npy files."""
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "z.npy", z)
    out = io.StringIO()
    argv = ["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--json",
            "--no-progress", "--precision", precision]
    assert cli.main(argv, out=out, err=io.StringIO()) == 0
    return out.getvalue()


@pytest.mark.parametrize("precision", ["input", "float64"])
def test_every_door_follows_precision(long_rows, precision, tmp_path):
    y, z = long_rows
    expected = fastce.evaluate(y, logits=z, precision=precision)
    ev = fastce.Evaluator(precision=precision)
    ev.update(y[:1234], z[:1234])
    ev = fastce.Evaluator.from_state_dict(json.loads(json.dumps(ev.state_dict())))
    ev.update(y[1234:], z[1234:])
    assert ev.precision == precision and ev.result() == expected
    assert fastce.diagnose(y, logits=z, precision=precision).metrics == expected
    assert _eval_command_json(tmp_path, y, z, precision) == expected.to_json() + "\n"
    loss = fastce.cross_entropy(z, y, precision=precision)
    assert loss == pytest.approx(expected.cross_entropy, rel=1e-15)
    da = pytest.importorskip("dask.array")
    from fastce import dask as fastce_dask

    assert fastce_dask.evaluate(y, logits=da.from_array(z, chunks=(700, 100)), precision=precision) == expected


def test_streams_of_other_precisions_do_not_merge_and_bad_values_are_refused(long_rows, tmp_path):
    y, z = long_rows
    a, b = fastce.Evaluator(), fastce.Evaluator(precision="float64")
    a.update(y, z)
    b.update(y, z)
    with pytest.raises(ValueError, match="different settings"):
        a.merge(b)
    for call in (lambda: fastce.evaluate(y, logits=z, precision="float32"),
                 lambda: fastce.Evaluator(precision="half"),
                 lambda: fastce.cross_entropy(z, y, precision="double")):
        with pytest.raises(InputError, match="precision=.* is not one of"):
            call()
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "z.npy", z)
    state = tmp_path / "run.state"
    argv = ["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--no-progress",
            "--state", str(state)]
    assert cli.main(argv + ["--precision", "float64"], out=io.StringIO(), err=io.StringIO()) == 0
    err = io.StringIO()
    assert cli.main(argv, out=io.StringIO(), err=err) == 2
    assert "differs in: options precision" in err.getvalue()


def test_soft_targets_follow_precision_too():
    """Soft targets and label smoothing over long rows: float32 exps for 16/32-bit logits by default (each
    row within a few float32 ulp), float64 ones with precision="float64"; the comparisons stay exact."""
    from scipy.special import log_softmax

    rng = np.random.default_rng(4)
    z = (4 * rng.standard_normal((2000, 100))).astype(np.float32)
    t = np.exp(log_softmax(rng.standard_normal((2000, 100)), axis=1))
    log_q = log_softmax(z.astype(np.float64), axis=1)
    ref_loss = -(t * log_q).sum(1).mean()
    ref_kl = (t * (np.log(t) - log_q)).sum(1).mean()
    fast = fastce.evaluate(t, logits=z)
    exact = fastce.evaluate(t, logits=z, precision="float64")
    assert exact.cross_entropy == pytest.approx(ref_loss, rel=1e-13)
    assert exact.kl_divergence == pytest.approx(ref_kl, rel=1e-12)
    assert fast.cross_entropy == pytest.approx(ref_loss, rel=5e-7)
    assert fast.kl_divergence == pytest.approx(ref_kl, rel=5e-6)  # a difference of two means: a few ulp more
    assert fast.cross_entropy != exact.cross_entropy  # the float32 exps are in use
    assert fast.accuracy == exact.accuracy and fast.target_entropy == exact.target_entropy
    # The PyTorch door, soft targets and label smoothing, each precision.
    labels = rng.integers(0, 100, 2000)
    for precision, rel in (("input", 5e-7), ("float64", 1e-13)):
        assert fastce.cross_entropy(z, t, precision=precision) == pytest.approx(ref_loss, rel=rel)
        smooth = fastce.cross_entropy(z, labels, label_smoothing=0.1, precision=precision)
        nll = -log_q[np.arange(2000), labels]
        assert smooth == pytest.approx((0.9 * nll - 0.1 * log_q.mean(1)).mean(), rel=rel)


@pytest.mark.parametrize("precision", ["input", "float64"])
def test_binary_logits_follow_precision_through_every_door(precision, tmp_path):
    """1-D binary logits: float32 math for 16/32-bit ones by default (kernels_binary.logit_loss_f32), float64 math
    with precision="float64"; evaluate, Evaluator, diagnose, groups=, compare, the command and Dask agree bit for bit."""
    rng = np.random.default_rng(8)
    z = (3 * rng.standard_normal(30_000)).astype(np.float32)
    y = rng.integers(0, 2, z.size)
    expected = fastce.evaluate(y, logits=z, precision=precision)
    other = fastce.evaluate(y, logits=z, precision="float64" if precision == "input" else "input")
    assert expected.cross_entropy != other.cross_entropy and expected.accuracy == other.accuracy
    assert expected.cross_entropy == pytest.approx(other.cross_entropy, rel=5e-7)
    ev = fastce.Evaluator(precision=precision)
    ev.update(y[:12_345], z[:12_345])
    ev.update(y[12_345:], z[12_345:])
    assert ev.result() == expected
    assert fastce.diagnose(y, logits=z, precision=precision).metrics == expected
    grouped = fastce.evaluate(y, logits=z, precision=precision, groups=np.arange(z.size) // 10)
    assert grouped.cross_entropy == expected.cross_entropy and grouped.n_groups == z.size // 10
    if precision == "input":  # compare has no precision= (the input's): its states are evaluate's
        pair = fastce.compare(y, logits={"a": z, "b": z[::-1].copy()})
        assert pair.metrics["a"] == expected
        mixed = fastce.compare(y, logits={"a": z, "b": z.astype(np.float64)})  # dtypes apart: per-row statistics
        assert mixed.metrics["a"] == expected
        assert mixed.delta("b", "a", "cross_entropy").estimate == pytest.approx(
            fastce.evaluate(y, logits=z.astype(np.float64)).cross_entropy - expected.cross_entropy, abs=1e-12)
    assert _eval_command_json(tmp_path, y, z, precision) == expected.to_json() + "\n"
    da = pytest.importorskip("dask.array")
    from fastce import dask as fastce_dask

    assert fastce_dask.evaluate(y, logits=da.from_array(z, chunks=7000), precision=precision) == expected
