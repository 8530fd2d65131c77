"""fastce.evaluate against the float64 reference and against scikit-learn.

Tolerances: scores are widened exactly to float64 and every computation is in
float64, so the reference matches to rtol 1e-9 whatever the input dtype.
Oracles that compute in the input's precision (scikit-learn on float32) get
rtol 2e-6.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tracemalloc
import warnings

import numpy as np
import pytest
from support import BFLOAT16, FLOAT32_MATH_RTOL, loss_rtol, readonly, score_dtype_params
from reference import evaluate_reference, row_brier

import fastce
from fastce import _config

RTOL = 1e-9
N_SMALL, C_SMALL = 257, 11


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def assert_matches_reference(metrics, ref, rtol=RTOL, float32_math=False):
    """``float32_math``: logits computed with float32 math (16- and 32-bit logits of three classes or more):
    the loss and Brier terms within a few float32 ulp (support.FLOAT32_MATH_RTOL)."""
    brier_rtol = max(1e-12, FLOAT32_MATH_RTOL) if float32_math else 1e-12
    rtol = max(rtol, FLOAT32_MATH_RTOL) if float32_math else rtol
    assert metrics.n == ref["n"]
    assert metrics.n_omitted == ref["n_omitted"]
    assert metrics.weight_sum == pytest.approx(ref["weight_sum"], rel=1e-12)
    if math.isnan(ref["cross_entropy"]):
        assert math.isnan(metrics.cross_entropy)
    else:
        assert metrics.cross_entropy == pytest.approx(ref["cross_entropy"], rel=rtol, abs=1e-300)
    assert set(metrics.top_k_accuracy) == set(ref["top_k_accuracy"])
    for k, expected in ref["top_k_accuracy"].items():
        got = metrics.top_k_accuracy[k]
        if math.isnan(expected):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(expected, rel=1e-12, abs=1e-15), k
    assert metrics.accuracy == metrics.top_k_accuracy[1] or math.isnan(metrics.accuracy)
    if math.isnan(ref["brier"]):
        assert math.isnan(metrics.brier)
    else:
        assert metrics.brier == pytest.approx(ref["brier"], rel=brier_rtol, abs=1e-15)


@pytest.fixture
def problem(rng):
    logits = rng.normal(scale=3.0, size=(N_SMALL, C_SMALL))
    labels = rng.integers(0, C_SMALL, size=N_SMALL)
    return logits, labels


# -- against the reference ------------------------------------------------------


@pytest.mark.parametrize("dtype", score_dtype_params())
def test_logits_match_reference_every_dtype(problem, dtype):
    logits, labels = problem
    x = logits.astype(dtype)
    m = fastce.evaluate(labels, logits=x, top_k=(1, 2, 5))
    assert_matches_reference(m, evaluate_reference(labels, logits=x, top_k=(1, 2, 5)), float32_math=dtype != np.float64)
    assert m.num_classes == C_SMALL and m.from_logits


@pytest.mark.parametrize("dtype", score_dtype_params())
def test_proba_match_reference_every_dtype(problem, dtype):
    logits, labels = problem
    p = softmax(logits).astype(dtype)
    # Rows of low-precision probabilities do not sum to 1 within scikit-learn's
    # tolerance; the warning about it is part of the contract and tested elsewhere.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastce.FastCEWarning)
        m = fastce.evaluate(labels, proba=p, top_k=(1, 3))
    assert not m.from_logits
    assert_matches_reference(m, evaluate_reference(labels, proba=p, top_k=(1, 3)))


@pytest.mark.parametrize("dtype", score_dtype_params())
@pytest.mark.parametrize("num_classes", [2, 3, 4, 5, 8, 10, 11, 32])
def test_short_row_widths_match_reference(rng, dtype, num_classes):
    """Short rows are copied into a transposed block, with code specialised for some
    widths (2, 3, 4, 8, 10): every width against the reference, over several
    blocks and a partial one, with ties and masked classes in the mix."""
    n = 3 * _config.block_rows(num_classes) + 77
    logits = rng.normal(scale=3.0, size=(n, num_classes))
    logits[::5] = np.round(logits[::5])  # ties
    logits[1::9, 0] = -np.inf  # masked classes
    labels = rng.integers(0, num_classes, size=n)
    x = logits.astype(dtype)
    with pytest.warns(fastce.TopKWarning) if num_classes == 2 else warnings.catch_warnings():  # top-2 of 2 is 1
        m = fastce.evaluate(labels, logits=x, top_k=(1, 2))
    assert_matches_reference(m, evaluate_reference(labels, logits=x, top_k=(1, 2)), float32_math=dtype != np.float64)
    p = softmax(np.where(np.isinf(logits), -30.0, logits)).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastce.FastCEWarning)  # low-precision rows may not sum to 1
        m = fastce.evaluate(labels, proba=p, top_k=(1, 2))
    assert_matches_reference(m, evaluate_reference(labels, proba=p, top_k=(1, 2)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_classes_equal_the_general_path_bit_for_bit(rng, dtype):
    """Two classes take one exp per row (kernels._exp_columns); a third, masked class
    (-inf: its exp is exactly 0) sends the same rows through the general loops.
    Per-row losses, p(true), p(predicted) and every metric must agree to the bit,
    over ties, NaN and infinite entries, and a -inf true class."""
    n = 2 * _config.block_rows(2) + 45
    z = rng.normal(scale=4.0, size=(n, 2))
    z[::7, 1] = z[::7, 0]  # ties at the max
    z[3::11, 0] = -np.inf  # a masked class
    z[5::13, 1] = np.nan
    z[6::17, 0] = np.inf
    z[8::19] = -np.inf  # every class masked
    labels = rng.integers(0, 2, size=n)
    two = z.astype(dtype)
    three = np.concatenate([two, np.full((n, 1), -np.inf, dtype=dtype)], axis=1)
    # Both maths: float64 (precision="float64"), and the input's (float32 math for float32 logits, two
    # classes as three), the same bits for two and three classes in each, and each within its bound.
    loss2 = fastce.cross_entropy(two, labels, reduction="none", nan_policy="propagate", precision="float64")
    loss3 = fastce.cross_entropy(three, labels, reduction="none", nan_policy="propagate", precision="float64")
    np.testing.assert_array_equal(loss2, loss3)
    loss2_input = fastce.cross_entropy(two, labels, reduction="none", nan_policy="propagate")
    loss3_input = fastce.cross_entropy(three, labels, reduction="none", nan_policy="propagate")
    np.testing.assert_array_equal(loss2_input, loss3_input)
    np.testing.assert_allclose(loss3_input, loss3, rtol=loss_rtol(dtype, 0.0), atol=0)
    assert np.array_equal(np.isnan(loss3_input), np.isnan(loss3))
    assert np.isnan(loss2).any() and np.isinf(loss2).any()  # the special rows were there
    finite = np.isfinite(loss2)
    with pytest.warns(fastce.TopKWarning):  # top-2 of two classes is 1 by construction
        r2 = fastce.diagnose(labels[finite], logits=two[finite], top_k=(1, 2), worst_k=n, precision="float64")
    r3 = fastce.diagnose(labels[finite], logits=three[finite], top_k=(1, 2), worst_k=n, precision="float64")
    assert r2.worst == r3.worst  # rows, true and predicted class, p(true), p(pred), loss
    m2, m3 = r2.metrics, r3.metrics
    assert (m2.cross_entropy, m2.accuracy, m2.top_k_accuracy) == (m3.cross_entropy, m3.accuracy, m3.top_k_accuracy)
    assert 2 * m2.brier == m3.brier  # scikit-learn halves the Brier score of two classes
    # The input's math: the two-class kernel (its float32 exps for float32 logits) against rows of three classes.
    with pytest.warns(fastce.TopKWarning):
        r2 = fastce.diagnose(labels[finite], logits=two[finite], top_k=(1, 2), worst_k=n)
    r3 = fastce.diagnose(labels[finite], logits=three[finite], top_k=(1, 2), worst_k=n)
    assert r2.worst == r3.worst
    m2, m3 = r2.metrics, r3.metrics
    assert (m2.cross_entropy, m2.accuracy, m2.top_k_accuracy) == (m3.cross_entropy, m3.accuracy, m3.top_k_accuracy)
    assert 2 * m2.brier == m3.brier


def test_weighted_matches_reference(problem, rng):
    logits, labels = problem
    w = rng.uniform(0.0, 3.0, size=N_SMALL)
    w[::7] = 0.0
    m = fastce.evaluate(labels, logits=logits, sample_weight=w, top_k=(1, 4))
    ref = evaluate_reference(labels, logits=logits, sample_weight=w, top_k=(1, 4))
    assert_matches_reference(m, ref)
    assert m.n == N_SMALL  # zero-weight rows are still rows


def test_integer_sample_weight_equals_repeating_rows(problem):
    logits, labels = problem
    w = np.arange(N_SMALL) % 4
    m = fastce.evaluate(labels, logits=logits, sample_weight=w)
    rep = np.repeat(np.arange(N_SMALL), w)
    m2 = fastce.evaluate(labels[rep], logits=logits[rep])
    assert m.weight_sum == m2.weight_sum == w.sum()
    assert m.cross_entropy == pytest.approx(m2.cross_entropy, rel=1e-13)
    assert m.accuracy == m2.accuracy  # exact: integer weights sum exactly


def test_top_k_int_and_k_beyond_classes(problem):
    logits, labels = problem
    m = fastce.evaluate(labels, logits=logits, top_k=3)
    assert set(m.top_k_accuracy) == {1, 3}
    with pytest.warns(fastce.TopKWarning, match=f"'k' \\({C_SMALL}\\) greater than or equal to 'n_classes'"):
        m = fastce.evaluate(labels, logits=logits, top_k=(C_SMALL, C_SMALL + 5, 2, 2))
    assert list(m.top_k_accuracy) == [1, 2, C_SMALL, C_SMALL + 5]
    assert m.top_k_accuracy[C_SMALL] == 1.0 and m.top_k_accuracy[C_SMALL + 5] == 1.0
    values = [m.top_k_accuracy[k] for k in sorted(m.top_k_accuracy)]
    assert values == sorted(values)


def test_hand_computed_example():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], dtype=np.float32)
    m = fastce.evaluate(np.array([0, 1]), logits=logits, top_k=(1, 2))
    z = logits.astype(np.float64)
    l0 = np.log(np.exp(z[0]).sum()) - z[0, 0]
    l1 = np.log(np.exp(z[1]).sum()) - z[1, 1]
    assert m.cross_entropy == pytest.approx((l0 + l1) / 2, rel=FLOAT32_MATH_RTOL)  # float32 logits: float32 math
    wide = fastce.evaluate(np.array([0, 1]), logits=logits, top_k=(1, 2), precision="float64")
    assert wide.cross_entropy == pytest.approx((l0 + l1) / 2, rel=1e-14)
    assert m.accuracy == 0.5 and m.top_k_accuracy[2] == 1.0
    assert m.n == 2 and m.weight_sum == 2.0


def test_single_class_and_single_row():
    m = fastce.evaluate([0, 0, 0], logits=np.array([[5.0], [-3.0], [1e30]]))
    assert m.cross_entropy == 0.0 and m.accuracy == 1.0
    m = fastce.evaluate([2], logits=np.array([[0.0, 0.0, 0.0, 0.0]]), top_k=(1, 2, 3))
    assert m.cross_entropy == pytest.approx(math.log(4), rel=1e-15)
    # Ties: the first index wins, so class 2 of four equal scores has rank 2.
    assert dict(m.top_k_accuracy) == {1: 0.0, 2: 0.0, 3: 1.0}


# -- numerics ----------------------------------------------------------------


def test_ties_first_index_wins_like_numpy_and_torch(rng):
    logits = rng.integers(-2, 3, size=(500, 6)).astype(np.float32)
    labels = rng.integers(0, 6, size=500)
    m = fastce.evaluate(labels, logits=logits, top_k=(1, 2, 3))
    assert m.accuracy == np.mean(np.argmax(logits, axis=1) == labels)
    # top-k by rank with a stable descending order (lower index first among ties)
    order = np.argsort(-logits, axis=1, kind="stable")
    for k in (2, 3):
        expected = np.mean([labels[i] in order[i, :k] for i in range(500)])
        assert m.top_k_accuracy[k] == expected
    torch = pytest.importorskip("torch")
    assert m.accuracy == (torch.from_numpy(logits).argmax(dim=1).numpy() == labels).mean()


@pytest.mark.parametrize("big", [1e30, -1e30, 1e300, 3e38])
def test_huge_logits(big):
    logits = np.array([[big, 0.0, -big], [0.0, big, big], [big, big - big * 1e-15, 0.0]])
    labels = np.array([0, 2, 1])
    if abs(big) > 1e154:  # per-row losses whose squares overflow: the error bars are unknown, and said so
        with pytest.warns(fastce.FastCEWarning, match="standard errors are unknown"):
            m = fastce.evaluate(labels, logits=logits)
        assert math.isnan(m.stderr["cross_entropy"])
    else:
        m = fastce.evaluate(labels, logits=logits)
    ref = evaluate_reference(labels, logits=logits)
    assert_matches_reference(m, ref)
    assert math.isfinite(m.cross_entropy)


def test_huge_logits_float32():
    logits = np.array([[1e30, 0.0, -1e30], [-1e30, -1e30, 1e30], [3e38, -3e38, 0]], dtype=np.float32)
    labels = np.array([0, 0, 2])
    m = fastce.evaluate(labels, logits=logits)
    assert_matches_reference(m, evaluate_reference(labels, logits=logits))
    assert m.cross_entropy == pytest.approx((2e30 + 3e38) / 3, rel=1e-6)


def test_large_range_and_tiny_losses():
    logits = np.array([[0.0, -800.0, -1e5], [50.0, 0.0, -50.0], [1e-300, 0.0, 5e-324]])
    labels = np.array([0, 0, 0])
    m = fastce.evaluate(labels, logits=logits)
    assert_matches_reference(m, evaluate_reference(labels, logits=logits))


def test_masked_classes_with_neg_inf(rng):
    logits = rng.normal(size=(100, 8))
    mask = rng.random((100, 8)) < 0.4
    mask[:, 0] = False  # never the whole row
    logits[mask] = -np.inf
    labels = np.zeros(100, dtype=np.int64)
    m = fastce.evaluate(labels, logits=logits, top_k=(1, 3))
    assert math.isfinite(m.cross_entropy)
    assert_matches_reference(m, evaluate_reference(labels, logits=logits, top_k=(1, 3)))
    # -inf columns contribute exp(-inf) = 0: the same as dropping them
    row = logits[0][np.isfinite(logits[0])]
    single = fastce.evaluate([0], logits=row[None, :])
    assert single.cross_entropy == pytest.approx(fastce.evaluate([0], logits=logits[:1]).cross_entropy, rel=1e-15)


def test_neg_inf_target_gives_infinite_loss_like_torch():
    logits = np.array([[0.0, -np.inf, 1.0], [2.0, 1.0, 0.0]])
    with pytest.warns(fastce.TopKWarning):
        m = fastce.evaluate([1, 0], logits=logits, top_k=(1, 2, 3))
    assert m.cross_entropy == math.inf and m.perplexity == math.inf
    assert m.accuracy == 0.5 and m.top_k_accuracy[3] == 1.0
    # weight 0 on that row: it no longer counts
    m = fastce.evaluate([1, 0], logits=logits, sample_weight=[0.0, 1.0])
    assert math.isfinite(m.cross_entropy)
    torch = pytest.importorskip("torch")
    t = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.tensor([1, 0]))
    assert math.isinf(t.item())


def test_neg_inf_target_ranks_with_masked_ties():
    # The true class is masked, like two others: ties at -inf, first index wins.
    logits = np.array([[-np.inf, 0.0, -np.inf, -np.inf]])
    with pytest.warns(fastce.TopKWarning):
        m = fastce.evaluate([2], logits=logits, top_k=(1, 2, 3, 4))
    assert dict(m.top_k_accuracy) == {1: 0.0, 2: 0.0, 3: 1.0, 4: 1.0}


@pytest.mark.filterwarnings("ignore::fastce.FastCEWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_classes", [5, 40, 300])  # column walk and row walk
def test_proba_sign_bit_entries(rng, dtype, num_classes):
    """The probability extremes are integer reductions over the float bits;
    entries with the sign bit set (-0.0, negatives, a negative NaN) take the
    float path.  -0.0 is a valid probability; -0.25 is reported with its value."""
    labels = rng.integers(0, num_classes, size=600)
    p = softmax(rng.normal(scale=2.0, size=(600, num_classes))).astype(dtype)
    zeros = np.where(p < 1e-3, dtype(0.0), p)  # rows stay near 1 within the tolerance
    signed = zeros.copy()
    signed[zeros == 0.0] = -0.0
    assert np.signbit(signed).any()
    # (Zeroed entries leave rows short of 1: that warning is not the point here.)
    assert fastce.evaluate(labels, proba=signed, top_k=(1, 2)) == fastce.evaluate(labels, proba=zeros, top_k=(1, 2))
    bad = zeros.copy()
    bad[123, 1] = -0.25
    bad[123, 0] = -0.0  # the smallest signed integer: an integer min alone would report -0
    bad[400, 2] = -0.125
    with pytest.raises(fastce.InputError, match=r"proba row 123 holds a value below 0 \(extreme value -0.25;"):
        fastce.evaluate(labels, proba=bad)
    nan = zeros.copy()
    nan[77, 3] = -np.nan  # a NaN with its sign bit set
    assert np.signbit(nan[77, 3])
    with pytest.raises(fastce.InputError, match=r"proba row 77"):
        fastce.evaluate(labels, proba=nan)


def test_proba_clipping_matches_sklearn_eps():
    p = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    m = fastce.evaluate([1, 1, 0], proba=p)
    eps = np.finfo(np.float64).eps
    assert m.cross_entropy == pytest.approx((-math.log(eps) - math.log(1 - eps) + math.log(2)) / 3, rel=1e-14)
    p32 = p.astype(np.float32)
    m32 = fastce.evaluate([1, 1, 0], proba=p32)
    eps32 = float(np.finfo(np.float32).eps)
    assert m32.cross_entropy == pytest.approx((-math.log(eps32) - math.log(1 - eps32) + math.log(2)) / 3, rel=1e-14)


def test_unnormalized_proba_warns(problem):
    logits, labels = problem
    p = softmax(logits) * 0.9
    with pytest.warns(fastce.FastCEWarning, match="do not sum to 1"):
        m = fastce.evaluate(labels, proba=p)
    assert_matches_reference(m, evaluate_reference(labels, proba=p))


def test_integer_scores_are_accepted():
    logits = np.array([[3, 1, 0], [0, 0, 5]], dtype=np.int32)
    m = fastce.evaluate([0, 2], logits=logits)
    assert_matches_reference(m, evaluate_reference([0, 2], logits=logits.astype(np.float64)))


# -- layouts, label dtypes, containers ---------------------------------------


def _layouts(x, tmp_path):
    """The same values in every memory layout the contract names."""
    wide = np.zeros((2 * x.shape[0], 3 * x.shape[1]), dtype=x.dtype)
    wide[::2, ::3] = x
    mm = np.memmap(tmp_path / "scores.bin", dtype=x.dtype, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    del mm
    return {
        "C": np.ascontiguousarray(x),
        "F": np.asfortranarray(x),
        "strided": wide[::2, ::3],
        "readonly": readonly(np.array(x)),
        "readonly-F": readonly(np.asfortranarray(x)),
        "memmap": np.memmap(tmp_path / "scores.bin", dtype=x.dtype, mode="r", shape=x.shape),
        "memmap-rw": np.memmap(tmp_path / "scores.bin", dtype=x.dtype, mode="r+", shape=x.shape),
    }


@pytest.mark.parametrize("dtype", score_dtype_params())
def test_every_layout_gives_bit_identical_results(problem, dtype, tmp_path):
    logits, labels = problem
    x = logits.astype(dtype)
    results = {}
    for name, view in _layouts(x, tmp_path).items():
        assert np.array_equal(np.asarray(view, dtype=np.float64), x.astype(np.float64))
        results[name] = fastce.evaluate(labels, logits=view, top_k=(1, 3)).to_dict()
    assert all(r == results["C"] for r in results.values()), results
    assert_matches_reference(
        fastce.evaluate(labels, logits=x, top_k=(1, 3)), evaluate_reference(labels, logits=x, top_k=(1, 3)),
        float32_math=x.dtype != np.float64,
    )


@pytest.mark.parametrize(
    "label_dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
)
def test_every_integer_label_dtype(problem, label_dtype):
    logits, labels = problem
    expected = fastce.evaluate(labels, logits=logits, top_k=(1, 2)).to_dict()
    assert fastce.evaluate(labels.astype(label_dtype), logits=logits, top_k=(1, 2)).to_dict() == expected
    swapped = labels.astype(np.dtype(label_dtype).newbyteorder())
    assert fastce.evaluate(swapped, logits=logits, top_k=(1, 2)).to_dict() == expected


def test_strided_and_column_labels(problem):
    logits, labels = problem
    expected = fastce.evaluate(labels, logits=logits).to_dict()
    wide = np.zeros(3 * N_SMALL, dtype=np.int32)
    wide[::3] = labels
    assert fastce.evaluate(wide[::3], logits=logits).to_dict() == expected
    assert fastce.evaluate(labels[:, None], logits=logits).to_dict() == expected
    assert fastce.evaluate(labels.tolist(), logits=logits.tolist()).to_dict() == expected


def test_big_endian_scores(problem):
    logits, labels = problem
    expected = fastce.evaluate(labels, logits=logits).to_dict()
    assert fastce.evaluate(labels, logits=logits.astype(">f8")).to_dict() == expected
    f16 = logits.astype(np.float16)
    assert (
        fastce.evaluate(labels, logits=f16.astype(">f2")).to_dict() == fastce.evaluate(labels, logits=f16).to_dict()
    )


def test_pandas_inputs(problem):
    pd = pytest.importorskip("pandas")
    logits, labels = problem
    expected = fastce.evaluate(labels, logits=logits).to_dict()
    got = fastce.evaluate(pd.Series(labels), logits=pd.DataFrame(logits), sample_weight=pd.Series(np.ones(N_SMALL)))
    assert got.to_dict() == expected


def test_torch_tensor_inputs(problem):
    torch = pytest.importorskip("torch")
    logits, labels = problem
    expected = fastce.evaluate(labels, logits=logits.astype(np.float32)).to_dict()
    t = torch.from_numpy(logits.astype(np.float32)).requires_grad_(True)
    assert fastce.evaluate(torch.from_numpy(labels), logits=t).to_dict() == expected


def test_torch_bfloat16_tensor(problem):
    torch = pytest.importorskip("torch")
    logits, labels = problem
    t = torch.from_numpy(logits.astype(np.float32)).to(torch.bfloat16)
    m = fastce.evaluate(labels, logits=t)
    x = t.float().numpy()
    assert_matches_reference(m, evaluate_reference(labels, logits=x), float32_math=True)


# -- block and call boundaries -------------------------------------------------


def test_short_rows_take_fewer_longer_kernel_calls(monkeypatch):
    """Without per-row buffers a kernel call holds at least CALL_MIN_SCORES scores (up to 8 x BLOCKS_PER_CALL
    blocks): 4096 blocks of two-class rows instead of 512; the same bits as calls of 512 blocks."""
    from fastce._accumulate import blocks_per_call

    c_order = np.zeros((10, 2), dtype=np.float32)
    assert blocks_per_call([c_order], _config.block_rows(2)) == 8 * _config.BLOCKS_PER_CALL
    assert blocks_per_call([np.zeros((10, 100), dtype=np.float32)], _config.block_rows(100)) == _config.BLOCKS_PER_CALL
    assert blocks_per_call([c_order], _config.block_rows(2), min_rows=_config.FOLD_MIN_ROWS) == _config.BLOCKS_PER_CALL
    assert blocks_per_call([np.asfortranarray(c_order)], _config.block_rows(2)) <= _config.BLOCKS_PER_CALL  # copied
    rng = np.random.default_rng(7)
    n = 3 * _config.BLOCKS_PER_CALL * _config.block_rows(2) + 17  # four calls of 512 blocks, one of 4096
    z = rng.standard_normal((n, 2), dtype=np.float32)
    y = rng.integers(0, 2, n)
    w = rng.uniform(0, 2, n)
    longer = [fastce.evaluate(y, logits=z).to_json(), fastce.evaluate(y, logits=z, sample_weight=w).to_json()]
    monkeypatch.setattr(_config, "CALL_MIN_SCORES", 0)
    assert longer == [fastce.evaluate(y, logits=z).to_json(), fastce.evaluate(y, logits=z, sample_weight=w).to_json()]


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of a few rows and few blocks per kernel call: many blocks and calls on small data."""
    monkeypatch.setattr(_config, "BLOCK_ELEMENTS", 24)
    monkeypatch.setattr(_config, "BLOCKS_PER_CALL", 3)
    monkeypatch.setattr(_config, "CALL_MIN_SCORES", 0)  # calls of exactly that many blocks


def test_results_do_not_depend_on_blocking(problem, rng, tiny_blocks):
    logits, labels = problem
    w = rng.uniform(0, 2, size=N_SMALL)
    m = fastce.evaluate(labels, logits=logits, sample_weight=w, top_k=(1, 2))
    assert_matches_reference(m, evaluate_reference(labels, logits=logits, sample_weight=w, top_k=(1, 2)), rtol=1e-12)


def test_first_bad_row_is_reported_across_blocks_and_calls(problem, tiny_blocks):
    logits, labels = problem
    x = logits.copy()
    x[200, 3] = np.nan
    x[77, 0] = np.inf
    x[250, 1] = np.nan
    with pytest.raises(fastce.InputError, match=r"logits row 77\b") as info:
        fastce.evaluate(labels, logits=readonly(x))
    assert info.value.row == 77
    with pytest.warns(fastce.OmittedRowsWarning, match=r"skipped 3 row\(s\).*first: row 77"):
        m = fastce.evaluate(labels, logits=x, nan_policy="omit")
    assert m.n_omitted == 3 and m.n == N_SMALL - 3


# -- nan_policy ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["logits", "proba"])
def test_nan_policy_omit_and_propagate(problem, kind):
    logits, labels = problem
    x = logits.copy() if kind == "logits" else softmax(logits)
    bad_rows = [3, 4, 100, N_SMALL - 1]
    x[3, 0] = np.nan
    x[4, :] = np.inf
    x[100, 5] = np.nan
    x[N_SMALL - 1, 2] = np.inf
    if kind == "logits":
        x[50, :] = -np.inf  # a row of only -inf is non-finite too
        bad_rows.append(50)
    x = readonly(x)
    with pytest.warns(fastce.OmittedRowsWarning, match=rf"skipped {len(bad_rows)} row"):
        m = fastce.evaluate(labels, nan_policy="omit", top_k=(1, 2), **{kind: x})
    ref = evaluate_reference(labels, nan_policy="omit", top_k=(1, 2), **{kind: x})
    assert m.n_omitted == len(bad_rows) and m.n == N_SMALL - len(bad_rows)
    assert_matches_reference(m, ref)
    keep = np.setdiff1d(np.arange(N_SMALL), bad_rows)
    clean = fastce.evaluate(labels[keep], top_k=(1, 2), **{kind: x[keep]})
    # Skipped rows leave zeros in the blocks' vector sums: equal to rounding, not bit for bit.
    assert clean.cross_entropy == pytest.approx(m.cross_entropy, rel=1e-14)
    assert dict(clean.top_k_accuracy) == dict(m.top_k_accuracy)

    p = fastce.evaluate(labels, nan_policy="propagate", top_k=(1, 2), **{kind: x})
    assert math.isnan(p.cross_entropy) and math.isnan(p.accuracy)
    assert all(math.isnan(v) for v in p.top_k_accuracy.values())
    assert p.n_omitted == 0


def test_omit_with_every_row_bad_raises():
    x = np.full((3, 2), np.nan)
    with pytest.raises(fastce.InputError, match="no rows left"), pytest.warns(fastce.OmittedRowsWarning):
        fastce.evaluate([0, 1, 0], logits=x, nan_policy="omit")


# -- the Metrics object ----------------------------------------------------------


def test_metrics_object(problem):
    logits, labels = problem
    m = fastce.evaluate(labels, logits=logits, top_k=(1, 5))
    assert isinstance(m, fastce.Metrics)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.cross_entropy = 0.0
    with pytest.raises(TypeError):
        m.top_k_accuracy[1] = 1.0
    assert m.cross_entropy_bits == pytest.approx(m.cross_entropy / math.log(2), rel=1e-15)
    assert m.perplexity == pytest.approx(math.exp(m.cross_entropy), rel=1e-15)
    d = m.to_dict()
    assert d["n"] == N_SMALL and d["weight_sum"] == float(N_SMALL) and d["n_omitted"] == 0
    assert d["cross_entropy"] == m.cross_entropy and d["top_k_accuracy"] == {1: m.accuracy, 5: m.top_k_accuracy[5]}
    assert d["cross_entropy_bits"] == m.cross_entropy_bits and d["perplexity"] == m.perplexity
    assert json.loads(m.to_json())["top_k_accuracy"]["5"] == m.top_k_accuracy[5]
    assert type(d["n"]) is int and type(d["cross_entropy"]) is float
    huge = fastce.evaluate([1], logits=np.array([[0.0, -1e4]]))
    assert huge.perplexity == math.inf and huge.cross_entropy == pytest.approx(1e4)


# -- scikit-learn oracles ------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_log_loss_matches_sklearn(rng, dtype, weighted):
    metrics = pytest.importorskip("sklearn.metrics")
    n, c = 400, 7
    p = softmax(rng.normal(scale=4.0, size=(n, c))).astype(dtype)
    p[:5] = np.eye(c, dtype=dtype)[:5]  # hits the clip on both sides
    labels = rng.integers(0, c, size=n)
    w = rng.uniform(0, 2, size=n) if weighted else None
    expected = metrics.log_loss(labels, p, labels=np.arange(c), sample_weight=w)
    got = fastce.evaluate(labels, proba=p, sample_weight=w).cross_entropy
    assert got == pytest.approx(expected, rel=1e-9 if dtype == np.float64 else 2e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_accuracy_matches_sklearn_with_ties(rng, weighted):
    metrics = pytest.importorskip("sklearn.metrics")
    n, c = 600, 5
    logits = rng.integers(0, 3, size=(n, c)).astype(np.float32)  # many ties
    labels = rng.integers(0, c, size=n)
    w = rng.uniform(0, 2, size=n) if weighted else None
    expected = metrics.accuracy_score(labels, logits.argmax(axis=1), sample_weight=w)
    assert fastce.evaluate(labels, logits=logits, sample_weight=w).accuracy == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_top_k_matches_sklearn_without_ties(rng, weighted):
    metrics = pytest.importorskip("sklearn.metrics")
    n, c = 500, 9
    # a random permutation per row: no ties, so both tie rules agree
    scores = np.argsort(rng.random((n, c)), axis=1).astype(np.float64) + rng.normal(size=(n, 1))
    labels = rng.integers(0, c, size=n)
    w = rng.uniform(0, 2, size=n) if weighted else None
    m = fastce.evaluate(labels, logits=scores, sample_weight=w, top_k=(1, 2, 3, 8))
    for k in (1, 2, 3, 8):
        expected = metrics.top_k_accuracy_score(labels, scores, k=k, labels=np.arange(c), sample_weight=w)
        assert m.top_k_accuracy[k] == pytest.approx(expected, rel=1e-12), k


# -- memory: no copy of the scores -----------------------------------------------

MEM_N, MEM_C = 200_000, 100


@pytest.fixture(scope="module")
def big_problem():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((MEM_N, MEM_C), dtype=np.float32)
    labels = rng.integers(0, MEM_C, size=MEM_N).astype(np.int32)
    return x, labels


def _layout_for_memory(x, labels, layout):
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "f16":
        x = x.astype(np.float16)
    elif layout == "strided":
        x = x[:, ::2]
        labels = labels % x.shape[1]
    return x, labels


def _peak_evaluate(x, labels):
    fastce.evaluate(labels[:1000], logits=x[:1000], top_k=(1, 5))  # compile outside the measurement
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        m = fastce.evaluate(labels, logits=x, top_k=(1, 5))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return m, peak


@pytest.mark.parametrize(
    "layout",
    ["C", "f16", "F", "strided"],
)
def test_memory_no_copy_of_scores(big_problem, layout):
    x, labels = _layout_for_memory(*big_problem, layout)
    nbytes = x.shape[0] * x.shape[1] * x.itemsize
    m, peak = _peak_evaluate(x, labels)
    # Labels are converted per slice (int64, <= 8 bytes/row), the rest is O(blocks);
    # F-order/strided scores are copied to C order one short kernel call at a time.
    assert peak < 0.05 * nbytes + 16 * MEM_N + _config.COPY_BYTES_PER_CALL, (peak, nbytes)
    assert m.n == MEM_N and math.isfinite(m.cross_entropy)
    if layout == "C":
        # standard normal logits: E[loss] ~ log(C) + 1/2
        assert m.cross_entropy == pytest.approx(math.log(MEM_C) + 0.5, rel=0.02)


@pytest.mark.parametrize("layout", ["F", "strided"])
def test_memory_non_contiguous_copy_is_bounded_per_call(big_problem, layout, monkeypatch):
    """Whatever the driver copies is one kernel call's rows at most, never all N rows."""
    x, labels = _layout_for_memory(*big_problem, layout)
    expected = fastce.evaluate(labels, logits=x, top_k=(1, 5))
    monkeypatch.setattr(_config, "BLOCKS_PER_CALL", 8)
    monkeypatch.setattr(_config, "CALL_MIN_SCORES", 0)  # calls of exactly that many blocks
    rows_per_call = 8 * _config.block_rows(x.shape[1])
    m, peak = _peak_evaluate(x, labels)
    assert peak < 2 * rows_per_call * x.shape[1] * x.itemsize + 16 * MEM_N, (peak, rows_per_call)
    assert peak < 0.1 * x.shape[0] * x.shape[1] * x.itemsize
    # the call size changes where blocks fall between calls, never the blocks: same bits
    assert m.to_dict() == expected.to_dict()


@pytest.mark.skipif(BFLOAT16 is None, reason="ml_dtypes not installed")
def test_memory_no_copy_bfloat16(big_problem):
    x, labels = big_problem
    x = x[:50_000].astype(BFLOAT16)
    fastce.evaluate(labels[:100], logits=x[:100])
    tracemalloc.start()
    try:
        fastce.evaluate(labels[:50_000], logits=x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.05 * x.nbytes + 16 * 50_000


# -- Brier score -------------------------------------------------------------------


@pytest.mark.parametrize("n_classes", [2, 3, 40])
@pytest.mark.parametrize("weighted", [False, True])
def test_brier_matches_sklearn(rng, n_classes, weighted):
    from sklearn.metrics import brier_score_loss

    z = rng.normal(scale=2.0, size=(500, n_classes))
    y = rng.integers(0, n_classes, size=500)
    y[:n_classes] = np.arange(n_classes)  # every class present, as scikit-learn needs
    w = rng.uniform(0.0, 3.0, size=500) if weighted else None
    p = softmax(z)
    expected = brier_score_loss(y, p if n_classes > 2 else p[:, 1], sample_weight=w)
    assert fastce.evaluate(y, proba=p, sample_weight=w).brier == pytest.approx(expected, rel=1e-12)
    assert fastce.evaluate(y, logits=z, sample_weight=w).brier == pytest.approx(expected, rel=1e-12)


def test_brier_of_confident_rows_keeps_its_digits():
    # p(true) = 1 - 1e-12: Brier per row ~ 2e-24.  Forming 1 - p(true) naively
    # from the softmax would leave nothing but rounding noise.
    delta = 27.631021115928547  # log(1e12)
    z = np.array([[delta, 0.0, -np.inf], [0.0, delta, 0.0]])
    y = np.array([0, 1])
    e = np.exp(-delta)
    rows = [(e / (1 + e)) ** 2 + (e / (1 + e)) ** 2, 2 * (e / (1 + 2 * e)) ** 2 + (2 * e / (1 + 2 * e)) ** 2]
    assert fastce.evaluate(y, logits=z).brier == pytest.approx(sum(rows) / 2, rel=1e-12)


def test_brier_with_masked_true_class_and_ties():
    z = np.array([[-np.inf, 1.0, 1.0], [2.0, 2.0, -np.inf], [0.0, 0.0, 0.0]])
    y = np.array([0, 1, 2])
    expected = np.mean([row_brier(softmax(z[i : i + 1])[0], y[i]) for i in range(3)])
    assert fastce.evaluate(y, logits=z).brier == pytest.approx(expected, rel=1e-13)
    assert fastce.evaluate(y, logits=z).brier == pytest.approx((1.5 + 0.5 + 2 / 3) / 3, rel=1e-13)


def test_brier_is_nan_under_propagate_and_in_to_dict(problem):
    logits, labels = problem
    bad = logits.copy()
    bad[3, 2] = np.nan
    assert math.isnan(fastce.evaluate(labels, logits=bad, nan_policy="propagate").brier)
    d = fastce.evaluate(labels, logits=logits).to_dict()
    assert 0.0 < d["brier"] < 2.0
