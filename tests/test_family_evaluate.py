"""evaluate's task inference: binary (1-D scores), multi-label, soft targets, one-hot; and the pitfalls."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from reference import multilabel_reference, soft_target_reference, to_float64
from support import FLOAT32_MATH_RTOL, loss_rtol, readonly, score_dtype_params

import fastce

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def binary_reference(y, z):
    x = to_float64(z)
    loss = [max(v, 0.0) - v * t + math.log1p(math.exp(-abs(v))) for v, t in zip(x.tolist(), y.tolist())]
    return math.fsum(loss) / len(loss)


# --------------------------------------------------------------------------- binary


@pytest.mark.parametrize("dtype", score_dtype_params())
def test_binary_logits_match_reference_and_sklearn(rng, dtype):
    z = rng.normal(scale=3.0, size=5000).astype(dtype)
    y = rng.integers(0, 2, 5000)
    m = fastce.evaluate(readonly(y.copy()), logits=readonly(z.copy()))
    assert m.task == "binary" and m.num_classes == 2 and m.from_logits and m.n == 5000
    # Precision follows the input: 16- and 32-bit logits with float32 math (each row within 4 float32 ulp;
    # the Brier terms too), float64 ones (and precision="float64") with float64 math.
    rtol = loss_rtol(dtype, 1e-12)
    assert m.cross_entropy == pytest.approx(binary_reference(y, z), rel=rtol)
    x = to_float64(z)
    p = 1.0 / (1.0 + np.exp(-x))
    assert m.cross_entropy == pytest.approx(sklearn_metrics.log_loss(y, p), rel=max(rtol, 1e-9))
    assert m.accuracy == np.mean((x > 0) == (y == 1))
    assert m.brier == pytest.approx(sklearn_metrics.brier_score_loss(y, p), rel=rtol)
    assert m.cross_entropy_bits == pytest.approx(m.cross_entropy / math.log(2), rel=1e-15)
    wide = fastce.evaluate(y, logits=z, precision="float64")
    assert wide.cross_entropy == pytest.approx(binary_reference(y, z), rel=1e-12)
    assert wide.brier == pytest.approx(sklearn_metrics.brier_score_loss(y, p), rel=1e-12)
    assert wide.accuracy == m.accuracy and wide.n == m.n


def test_binary_logits_parallel_weighted_and_thread_independent(rng):
    """Also: the multi-label, soft-target and torch-compatible doors give bit-identical results on 1 and 2 threads."""
    n = 300_000  # many blocks, run in parallel
    z = rng.normal(scale=2.0, size=n).astype(np.float32)
    y = rng.integers(0, 2, n)
    w = rng.uniform(0, 2, n)
    m = fastce.evaluate(y, logits=z, sample_weight=w)
    x = z.astype(np.float64)
    loss = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    assert m.cross_entropy == pytest.approx(np.dot(loss, w) / w.sum(), rel=FLOAT32_MATH_RTOL)  # float32 math
    wide = fastce.evaluate(y, logits=z, sample_weight=w, precision="float64")
    assert wide.cross_entropy == pytest.approx(np.dot(loss, w) / w.sum(), rel=1e-12)
    assert m.accuracy == pytest.approx(np.dot((x > 0) == (y == 1), w) / w.sum(), rel=1e-12)
    assert m.weight_sum == pytest.approx(w.sum(), rel=1e-14)
    code = (
        "import numba, numpy as np, fastce, json, sys\n"
        "rng = np.random.default_rng(1); n = 300_000\n"
        "z = rng.normal(size=n).astype(np.float32); y = rng.integers(0, 2, n)\n"
        "x = rng.normal(size=(40_000, 5)); t = (rng.random((40_000, 5)) < 0.3).astype(np.uint8)\n"
        "q = rng.random((40_000, 5)); q /= q.sum(axis=1, keepdims=True)\n"
        "out = []\n"
        "for t_ in (1, 2):\n"
        "    numba.set_num_threads(t_)\n"
        "    out.append([fastce.evaluate(y, logits=z).to_json(), fastce.evaluate(t, logits=x).to_json(),\n"
        "                fastce.evaluate(q, logits=x).to_json(), fastce.binary_cross_entropy_with_logits(x, t),\n"
        "                fastce.cross_entropy(x, q, label_smoothing=0.1)])\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    one, two = json.loads(done.stdout)
    assert one == two


def test_binary_tie_rule_and_infinite_logits():
    # z == 0 / p == 0.5 predict class 0 (the first index, as argmax)
    assert fastce.evaluate([0, 1], logits=np.array([0.0, 0.0])).accuracy == 0.5
    assert fastce.evaluate([0, 1], proba=np.array([0.5, 0.5])).accuracy == 0.5
    m = fastce.evaluate([1, 0, 1], logits=np.array([np.inf, -np.inf, 3.0]))
    assert m.accuracy == 1.0 and m.cross_entropy == pytest.approx(math.log1p(math.exp(-3.0)) / 3, rel=1e-14)
    assert fastce.evaluate([0, 1], logits=np.array([np.inf, 0.0])).cross_entropy == math.inf


def test_binary_nan_policies(rng):
    z = rng.normal(size=50)
    z[[4, 9]] = np.nan
    y = rng.integers(0, 2, 50)
    with pytest.raises(fastce.InputError, match=r"logits row 4 holds NaN") as info:
        fastce.evaluate(y, logits=z)
    assert info.value.row == 4
    with pytest.warns(fastce.OmittedRowsWarning, match="skipped 2 row"):
        m = fastce.evaluate(y, logits=z, nan_policy="omit")
    keep = np.setdiff1d(np.arange(50), [4, 9])
    # The same numbers as dropping the rows by hand, up to the last bits of the sums: an omitted
    # row leaves a zero term in its place, and rows are summed in SIMD lanes by position
    # (fastce._lanes).
    dropped = fastce.evaluate(y[keep], logits=z[keep]).to_dict()
    _assert_close_dicts(m.to_dict() | {"n_omitted": 0}, dropped)
    assert math.isnan(fastce.evaluate(y, logits=z, nan_policy="propagate").cross_entropy)


def _assert_close_dicts(got: dict, want: dict, path="") -> None:
    """Equal keys and integers; floats within 1e-13 relative (nested dicts compared the same way)."""
    assert got.keys() == want.keys(), path
    for key, value in want.items():
        if isinstance(value, dict):
            _assert_close_dicts(got[key], value, f"{path}{key}.")
        elif isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-13, nan_ok=True), f"{path}{key}"
        else:
            assert got[key] == value, f"{path}{key}"


def test_binary_proba(rng):
    p = rng.random(400)
    y = rng.integers(0, 2, 400)
    m = fastce.evaluate(y, proba=p)
    assert m.task == "binary" and not m.from_logits
    assert m.cross_entropy == pytest.approx(sklearn_metrics.log_loss(y, p), rel=1e-12)
    assert m.brier == pytest.approx(sklearn_metrics.brier_score_loss(y, p), rel=1e-12)
    assert m.accuracy == np.mean((p > 0.5) == (y == 1))


def test_binary_proba_outside_unit_interval_suggests_logits(rng):
    z = rng.normal(size=30)
    with pytest.raises(fastce.InputError, match=r"proba row \d+ holds a value (below 0|above 1).*logits=") as info:
        fastce.evaluate(rng.integers(0, 2, 30), proba=z)
    assert info.value.argument == "proba" and info.value.row is not None


def test_binary_labels_must_be_0_1():
    with pytest.raises(fastce.InputError, match=r"y_true row 0 is 2.*subtract 1") as info:
        fastce.evaluate([2, 1, 2], logits=np.zeros(3))
    assert info.value.argument == "y_true" and info.value.row == 0


# --------------------------------------------------------------------------- multi-label


@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "proba"])
@pytest.mark.parametrize("weighted", [False, True])
def test_multilabel_matches_reference_and_sklearn(rng, from_logits, weighted):
    n, c = 400, 6
    z = rng.normal(scale=2.0, size=(n, c))
    y = (rng.random((n, c)) < 0.35).astype(np.int8)
    scores = z if from_logits else 1.0 / (1.0 + np.exp(-z))
    w = rng.uniform(0.1, 2.0, n) if weighted else None
    kwargs = {"logits": scores} if from_logits else {"proba": scores}
    m = fastce.evaluate(readonly(y.copy()), sample_weight=w, **kwargs)
    ref = multilabel_reference(y, scores, from_logits=from_logits, sample_weight=w)
    assert m.task == "multilabel" and m.num_classes == c and m.n == n
    for key in ("cross_entropy", "hamming_accuracy", "subset_accuracy", "brier"):
        assert getattr(m, key) == pytest.approx(ref[key], rel=1e-12), key
    predicted = (z > 0).astype(np.int8)
    assert m.accuracy == m.subset_accuracy == pytest.approx(sklearn_metrics.accuracy_score(y, predicted, sample_weight=w), rel=1e-12)
    assert m.hamming_accuracy == pytest.approx(1 - sklearn_metrics.hamming_loss(y, predicted, sample_weight=w), rel=1e-12)
    p = 1.0 / (1.0 + np.exp(-z))
    # mean per-element BCE = scikit-learn's binary log loss over the flattened elements
    flat_w = None if w is None else np.repeat(w, c)
    assert m.cross_entropy == pytest.approx(sklearn_metrics.log_loss(y.ravel(), p.ravel(), sample_weight=flat_w), rel=1e-9)
    assert json.loads(m.to_json())["task"] == "multilabel"


def test_multilabel_bool_target_and_top_k_error(rng):
    z = rng.normal(size=(40, 4))
    y = rng.random((40, 4)) < 0.5
    assert fastce.evaluate(y, logits=z).to_dict() == fastce.evaluate(y.astype(np.float32), logits=z).to_dict()
    with pytest.raises(fastce.InputError, match="top_k") as info:
        fastce.evaluate(y, logits=z, top_k=(1, 2))
    assert info.value.argument == "top_k"


def test_multilabel_probabilities_outside_unit_interval(rng):
    y = (rng.random((20, 3)) < 0.5).astype(int)
    with pytest.raises(fastce.InputError, match=r"proba row \d+ holds a value .*logits") as info:
        fastce.evaluate(y, proba=rng.normal(size=(20, 3)))
    assert info.value.row is not None


# --------------------------------------------------------------------------- one-hot and soft targets


def test_one_hot_target_is_scored_as_multiclass(rng):
    z = rng.normal(size=(300, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 300)
    one_hot = np.eye(7, dtype=np.uint8)[labels]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: this is the categorical task it looks like
        m = fastce.evaluate(readonly(one_hot), logits=z, top_k=(1, 3))
    assert m.task == "multiclass"
    assert m.to_dict() == fastce.evaluate(labels, logits=z, top_k=(1, 3)).to_dict()


def test_soft_targets_entropy_plus_kl(rng):
    z = rng.normal(scale=2.0, size=(250, 5))
    q = rng.random((250, 5)) ** 2
    q /= q.sum(axis=1, keepdims=True)
    m = fastce.evaluate(readonly(q.copy()), logits=z)
    ref = soft_target_reference(q, z)
    assert m.task == "soft"
    for key in ("cross_entropy", "target_entropy", "kl_divergence", "accuracy"):
        assert getattr(m, key) == pytest.approx(ref[key], rel=1e-12), key
    assert m.cross_entropy == pytest.approx(m.target_entropy + m.kl_divergence, rel=1e-13)
    assert m.cross_entropy == pytest.approx(fastce.cross_entropy(z, q), rel=1e-14)
    # a perfect model of the targets: KL 0, cross-entropy = entropy
    perfect = fastce.evaluate(q, logits=np.log(q))
    assert perfect.kl_divergence == pytest.approx(0.0, abs=1e-14)
    with pytest.raises(fastce.InputError, match="logits="):
        fastce.evaluate(q, proba=q)


def test_two_d_target_with_values_outside_unit_interval(rng):
    with pytest.raises(fastce.InputError, match=r"y_true row 1 holds 2\.0 in column 0") as info:
        fastce.evaluate(np.array([[0, 1], [2, 0]]), logits=np.zeros((2, 2)))
    assert info.value.row == 1 and info.value.argument == "y_true"


# --------------------------------------------------------------------------- pitfalls, shared by every door


def test_one_based_labels_suggest_subtracting_one(rng):
    z = rng.normal(size=(10, 4))
    y = np.array([1, 2, 3, 4, 1, 2, 3, 4, 1, 2])
    for call in (
        lambda: fastce.evaluate(y, logits=z),
        lambda: fastce.cross_entropy(z, y),
        lambda: fastce.cross_entropy(z, y, label_smoothing=0.1),
        lambda: fastce.accuracy_score(y, z),
    ):
        with pytest.raises(fastce.InputError, match=r"y_true|target") as info:
            call()
        assert "subtract 1" in str(info.value) and info.value.row == 3


def test_unnormalized_probability_rows_warn(rng):
    p = rng.random((30, 4))
    with pytest.warns(fastce.FastCEWarning, match="do not sum to 1"):
        fastce.evaluate(rng.integers(0, 4, 30), proba=p)


def test_metrics_dict_and_json_carry_the_new_fields(rng):
    m = fastce.evaluate(rng.integers(0, 3, 20), logits=rng.normal(size=(20, 3)))
    d = m.to_dict()
    # fields of other tasks do not apply: left out (README, "JSON output")
    assert d["task"] == "multiclass" and "hamming_accuracy" not in d and "kl_divergence" not in d
    assert json.loads(m.to_json(allow_nan=True))["task"] == "multiclass"


def test_omit_warnings_point_at_the_caller(rng):
    z = rng.normal(size=(30, 3))
    z[4, 1] = np.nan
    multilabel = (rng.random((30, 3)) < 0.5).astype(int)
    soft = rng.random((30, 3))
    soft /= soft.sum(axis=1, keepdims=True)
    for y in (multilabel, soft):
        with pytest.warns(fastce.OmittedRowsWarning, match="skipped 1 row") as record:
            m = fastce.evaluate(y, logits=z, nan_policy="omit")
        assert record[0].filename == __file__ and m.n == 29 and m.n_omitted == 1
