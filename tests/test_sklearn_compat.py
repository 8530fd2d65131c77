"""fastce's scikit-learn drop-ins against scikit-learn itself, as the oracle.

Values: rtol 1e-9 for float64 inputs, 2e-6 for float32 ones (scikit-learn sums
float32 probabilities in float32; fastce sums them exactly in float64).
Errors: same exception class (fastce's are subclasses of scikit-learn's when
those differ) and the same message.  Warnings: the same user-facing warnings
(UserWarning, FutureWarning, DeprecationWarning and subclasses), in the same
order.  scikit-learn's own test suite is run against fastce in
test_sklearn_suite.py; these tests add random data, pandas, string labels
and the error paths one by one.
"""

from __future__ import annotations

import gc
import tracemalloc
import warnings

import numpy as np
import pytest

sklearn_metrics = pytest.importorskip("sklearn.metrics")
pd = pytest.importorskip("pandas")

import fastce  # noqa: E402

FUNCTIONS = ("log_loss", "accuracy_score", "top_k_accuracy_score")
RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 2e-6}
_API_WARNINGS = (UserWarning, FutureWarning, DeprecationWarning)


def _run(function, args, kwargs):
    """(result or exception, [(category, message)]) of one call, every warning recorded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            outcome = function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the oracle decides what is right
            outcome = exc
    shown = [(w.category, str(w.message)) for w in caught if issubclass(w.category, _API_WARNINGS)]
    return outcome, shown


def same_as_sklearn(name, *args, rtol=1e-9, **kwargs):
    """Call fastce's and scikit-learn's ``name``; assert the same value, error and warnings."""
    expected, expected_warnings = _run(getattr(sklearn_metrics, name), args, kwargs)
    got, got_warnings = _run(getattr(fastce, name), args, kwargs)
    if isinstance(expected, Exception):
        assert isinstance(got, Exception), f"scikit-learn raised {expected!r}, fastce returned {got!r}"
        assert isinstance(got, type(expected)), f"{type(got)} is not a {type(expected)}: {got}"
        assert str(got) == str(expected)
    else:
        assert not isinstance(got, Exception), f"fastce raised {got!r}, scikit-learn returned {expected!r}"
        assert type(got) is float
        if np.isnan(expected):
            assert np.isnan(got)
        else:
            assert got == pytest.approx(expected, rel=rtol, abs=1e-300)
    assert [m for _, m in got_warnings] == [m for _, m in expected_warnings]
    for (got_category, _), (expected_category, _) in zip(got_warnings, expected_warnings):
        assert issubclass(got_category, expected_category)
    return got


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_classes", [2, 3, 17])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_log_loss_values(rng, dtype, n_classes, weighted, normalize):
    n = 1000
    proba = softmax(rng.normal(scale=2.0, size=(n, n_classes))).astype(dtype)
    y = rng.integers(0, n_classes, size=n)
    weights = rng.uniform(0, 3, size=n) if weighted else None
    same_as_sklearn("log_loss", y, proba, normalize=normalize, sample_weight=weights, rtol=RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_loss_binary_1d_and_column(rng, dtype):
    n = 500
    p = rng.uniform(0, 1, size=n).astype(dtype)
    p[:3] = [0, 1, 0.5]  # clipped at eps and 1 - eps
    y = np.where(rng.uniform(size=n) < 0.5, "no", "yes")
    rtol = RTOL[np.dtype(dtype)]
    same_as_sklearn("log_loss", y, p, rtol=rtol)
    same_as_sklearn("log_loss", y, p[:, None], rtol=rtol)
    same_as_sklearn("log_loss", y, p, sample_weight=rng.uniform(size=n), normalize=False, rtol=rtol)


def test_log_loss_string_labels_and_unseen_classes(rng):
    names = np.array(["ant", "bee", "cat", "dog", "eel"])
    n = 400
    proba = softmax(rng.normal(size=(n, 5)))
    y = names[rng.integers(0, 3, size=n)]  # "dog" and "eel" never occur
    same_as_sklearn("log_loss", y, proba, labels=list(names))
    same_as_sklearn("log_loss", y.astype(object), proba, labels=names)
    same_as_sklearn("log_loss", list(y), proba, labels=names, sample_weight=rng.uniform(size=n))
    # Without labels=, the number of classes differs: same error.
    same_as_sklearn("log_loss", y, proba)


def test_log_loss_integer_labels_not_starting_at_zero(rng):
    n = 300
    proba = softmax(rng.normal(size=(n, 4)))
    same_as_sklearn("log_loss", rng.integers(10, 14, size=n), proba)
    same_as_sklearn("log_loss", rng.choice([-7, 3, 100, 2**40], size=n), proba)
    same_as_sklearn("log_loss", rng.integers(0, 3, size=n).astype(float), proba, labels=[0.0, 1.0, 2.0, 3.0])


def test_log_loss_multilabel_indicator(rng):
    n, c = 200, 4
    y = rng.integers(0, 2, size=(n, c))
    y[:5] = 0  # rows with no true class
    proba = rng.uniform(0.01, 1, size=(n, c))
    proba /= proba.sum(axis=1, keepdims=True)
    same_as_sklearn("log_loss", y, proba)
    same_as_sklearn("log_loss", y, proba, sample_weight=rng.uniform(size=n), normalize=False)


def test_log_loss_pandas(rng):
    n = 100
    proba = softmax(rng.normal(size=(n, 3)))
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, size=n)]
    frame = pd.DataFrame(proba, columns=["a", "b", "c"])
    weights = pd.Series(rng.uniform(size=n))
    same_as_sklearn("log_loss", pd.Series(y), frame, sample_weight=weights)
    same_as_sklearn("log_loss", pd.Series(y, dtype="string"), frame)
    same_as_sklearn("log_loss", pd.Series(y).astype("category"), frame)
    same_as_sklearn("log_loss", pd.Series(rng.integers(0, 3, size=n), dtype="Int64"), frame)
    same_as_sklearn("log_loss", pd.Series(y), frame.astype("float32"), rtol=2e-6)


def test_log_loss_integer_and_float16_probabilities():
    y = [0, 1, 1, 0]
    same_as_sklearn("log_loss", y, [[1, 0], [0, 1], [0, 1], [1, 0]])
    # scikit-learn computes in float16 (3 significant digits); fastce in float64.
    proba16 = np.array([[0.2, 0.8], [0.6, 0.4], [0.4, 0.6], [0.8, 0.2]], dtype=np.float16)
    same_as_sklearn("log_loss", y, proba16, rtol=2e-3)
    same_as_sklearn("log_loss", y, proba16[:, 1], rtol=2e-3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_accuracy_values(rng, dtype):
    n = 1000
    y = rng.integers(0, 5, size=n)
    pred = np.where(rng.uniform(size=n) < 0.6, y, rng.integers(0, 5, size=n))
    weights = rng.uniform(0, 2, size=n).astype(dtype)
    rtol = RTOL[np.dtype(dtype)]
    for normalize in (True, False):
        same_as_sklearn("accuracy_score", y, pred, normalize=normalize)
        same_as_sklearn("accuracy_score", y, pred, normalize=normalize, sample_weight=weights, rtol=rtol)
    names = np.array(["x", "y", "z", "w", "v"])
    same_as_sklearn("accuracy_score", names[y], names[pred])
    same_as_sklearn("accuracy_score", pd.Series(names[y]), list(names[pred]), sample_weight=pd.Series(weights))
    same_as_sklearn("accuracy_score", y.astype(float), pred.astype(np.int8))
    same_as_sklearn("accuracy_score", y[:, None], pred)


def test_accuracy_multilabel(rng):
    scipy_sparse = pytest.importorskip("scipy.sparse")
    y = rng.integers(0, 2, size=(300, 6))
    pred = y.copy()
    pred[rng.uniform(size=y.shape) < 0.05] ^= 1
    same_as_sklearn("accuracy_score", y, pred)
    same_as_sklearn("accuracy_score", scipy_sparse.csr_array(y), pred, sample_weight=rng.uniform(size=300))
    same_as_sklearn("accuracy_score", scipy_sparse.coo_matrix(y), scipy_sparse.csc_matrix(pred), normalize=False)
    same_as_sklearn("accuracy_score", y.astype(bool), pred.tolist())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_classes", [3, 10])
def test_top_k_values_with_ties(rng, dtype, n_classes):
    n = 1000
    # Few distinct values: many rows have ties across the k-th place.
    scores = rng.integers(0, 4, size=(n, n_classes)).astype(dtype)
    y = rng.integers(0, n_classes, size=n)
    weights = rng.uniform(0, 2, size=n)
    for k in range(1, n_classes + 1):
        same_as_sklearn("top_k_accuracy_score", y, scores, k=k)
        same_as_sklearn("top_k_accuracy_score", y, scores, k=k, sample_weight=weights, normalize=False)


def test_top_k_labels_strings_and_pandas(rng):
    n = 500
    names = np.array(["a", "b", "c", "d", "e"])
    scores = softmax(rng.normal(size=(n, 5)))
    y = names[rng.choice([0, 2, 4], size=n)]
    same_as_sklearn("top_k_accuracy_score", y, scores, k=2, labels=names)
    same_as_sklearn("top_k_accuracy_score", pd.Series(y), pd.DataFrame(scores), k=3, labels=list(names))
    same_as_sklearn("top_k_accuracy_score", y, scores, k=2)  # 3 classes in y_true, 5 columns: error
    y_int = rng.choice([1, 5, 9], size=n)
    same_as_sklearn("top_k_accuracy_score", y_int, scores[:, :3], k=1)
    same_as_sklearn("top_k_accuracy_score", y_int, scores, k=2, labels=[1, 3, 5, 7, 9])


def test_top_k_binary_scores(rng):
    n = 300
    y = rng.choice(["neg", "pos"], size=n)
    for scores in (rng.uniform(size=n), rng.normal(size=n), rng.normal(size=(n, 1))):
        for k in (1, 2):
            same_as_sklearn("top_k_accuracy_score", y, scores, k=k, sample_weight=rng.uniform(size=n))
    same_as_sklearn("top_k_accuracy_score", y[:3], [0.1, 0.9, 0.4], k=1, labels=["neg", "pos", "zzz"])


def test_top_k_tie_rule_matches_sklearn_not_argmax():
    """scikit-learn breaks ties towards the *higher* column index.

    fastce.top_k_accuracy_score follows it (ties_to_last); fastce.evaluate's
    top_k_accuracy follows numpy/torch argmax (lower index first), so the two
    differ exactly on rows with a tie across the k-th place.
    """
    scores = np.array([[5.0, 5.0, 1.0], [2.0, 2.0, 2.0], [0.0, 3.0, 3.0], [1.0, 0.0, 0.0]])
    y = np.array([0, 2, 1, 0])
    assert same_as_sklearn("top_k_accuracy_score", y, scores, k=1) == 0.5  # rows 1 and 3
    assert fastce.evaluate(y, logits=scores).accuracy == 0.75  # rows 0, 2 and 3 under argmax
    assert same_as_sklearn("top_k_accuracy_score", y, scores, k=2) == 1.0
    assert fastce.evaluate(y, logits=scores, top_k=2).top_k_accuracy[2] == 0.75  # row 1: {0, 1}


def test_accuracy_score_of_score_matrix_is_argmax(rng):
    """An extension: a 2-D float score matrix with class indices scores its row argmax."""
    n, c = 600, 7
    y = rng.integers(0, c, size=n)
    logits = rng.normal(size=(n, c))
    logits[:20] = 1.5  # all-tied rows: argmax takes the first index, as numpy
    weights = rng.uniform(size=n)
    for scores in (logits, logits.astype(np.float32), softmax(logits), np.asfortranarray(logits)):
        assert fastce.accuracy_score(y, scores) == sklearn_metrics.accuracy_score(y, scores.argmax(axis=1))
        expected = sklearn_metrics.accuracy_score(y, scores.argmax(axis=1), sample_weight=weights, normalize=False)
        got = fastce.accuracy_score(y, scores, sample_weight=weights, normalize=False)
        assert got == pytest.approx(expected, rel=1e-12)
    assert fastce.accuracy_score(y, pd.DataFrame(logits)) == sklearn_metrics.accuracy_score(y, logits.argmax(1))
    with pytest.raises(ValueError, match="Input y_pred contains NaN"):
        fastce.accuracy_score([0, 1], [[0.5, np.nan], [0.25, 0.75]])


# --------------------------------------------------------------------------- errors and warnings

_P2 = [[0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]
_P3 = [[0.2, 0.7, 0.1], [0.6, 0.2, 0.2], [0.6, 0.1, 0.3]]

LOG_LOSS_CASES = {
    "nan": (([0, 1, 1], [[0.2, 0.8], [np.nan, 0.4], [0.7, 0.3]]), {}),
    "inf": (([0, 1, 1], [[0.2, 0.8], [np.inf, 0.4], [0.7, 0.3]]), {}),
    "nan 1d": (([0, 1], [0.5, np.nan]), {}),
    "nan before labels": ((["a", "b", "c"], [[0.2, 0.8], [np.nan, 0.4], [0.7, 0.3]]), {}),
    "above 1": (([0, 1, 1], [[0.2, 1.8], [0.6, 0.4], [0.7, 0.3]]), {}),
    "below 0": (([0, 1, 1], [[0.2, 0.8], [-0.6, 0.4], [0.7, 0.3]]), {}),
    "above 1 float32": (([0, 1, 1], np.array([[0.2, 1.1], [0.6, 0.4], [0.7, 0.3]], dtype=np.float32)), {}),
    "range before length": (([0, 1], [[0.2, 1.8], [0.6, 0.4], [0.7, 0.3]]), {}),
    "length": (([0, 1], _P2), {}),
    "one label": (([2, 2, 2], _P2), {}),
    "one label given": (([2, 2, 2], _P2), {"labels": [2]}),
    "undeclared label": ((["a", "b", "c"], _P3), {"labels": ["a", "c", "d"]}),
    "unordered labels": ((["eggs", "spam", "ham"], np.eye(3)), {"labels": ["spam", "eggs", "ham"]}),
    "unordered and undeclared": ((["eggs", "spam", "x"], _P3), {"labels": ["spam", "eggs", "ham"]}),
    "duplicate labels": (([0, 1, 1], _P2), {"labels": [0, 1, 1]}),
    "class count": (([1, 0, 2], _P2), {}),
    "class count labels": (([1, 0, 1], _P2), {"labels": [0, 1, 2]}),
    "class count and unnormalized": (([1, 0, 2], [[0.3, 0.9], [0.6, 0.4], [0.4, 0.6]]), {}),
    "unnormalized": (([0, 1, 1], [[0.3, 0.9], [0.6, 0.4], [0.7, 0.3]]), {}),
    "continuous y_true": (([0.5, 1.5, 1.0], _P2), {}),
    "multioutput y_true": (([[0, 2], [1, 3], [2, 1]], _P2), {}),
    "multilabel with labels": (([[0, 1], [1, 1], [1, 0]], _P2), {"labels": [0, 1]}),
    "3d": (([0, 1], np.full((2, 2, 2), 0.5)), {}),
    "empty": (([], np.zeros((0, 2))), {}),
    "no columns": (([0, 1], np.zeros((2, 0))), {}),
    "strings": (([0, 1], [["a", "b"], ["c", "d"]]), {}),
    "complex": (([0, 1], np.array([[0.5, 0.5], [0.5, 0.5]]) + 0j), {}),
    "weights nan": (([0, 1, 1], _P2), {"sample_weight": [1.0, np.nan, 1.0]}),
    "weights inf": (([0, 1, 1], _P2), {"sample_weight": [1.0, np.inf, 1.0]}),
    "weights 2d": (([0, 1, 1], _P2), {"sample_weight": np.ones((3, 2))}),
    "weights length": (([0, 1, 1], _P2), {"sample_weight": [1.0, 1.0]}),
    "weights zero": (([0, 1, 1], _P2), {"sample_weight": [0.0, 0.0, 0.0]}),
    "weights sum zero": (([0, 1, 1], _P2), {"sample_weight": [1.0, -1.0, 0.0]}),
    "normalize": (([0, 1, 1], _P2), {"normalize": "yes"}),
    "labels scalar": (([0, 1, 1], _P2), {"labels": 3}),
    "y_true scalar": ((3, _P2), {}),
    "y_pred deprecated": (([0, 1, 1],), {"y_pred": _P2}),
    "y_pred and y_proba": (([0, 1, 1], _P2), {"y_pred": _P2}),
    "no y_proba": (([0, 1, 1],), {}),
}


@pytest.mark.parametrize("case", list(LOG_LOSS_CASES))
def test_log_loss_errors_and_warnings(case):
    args, kwargs = LOG_LOSS_CASES[case]
    same_as_sklearn("log_loss", *args, **kwargs)


ACCURACY_CASES = {
    "mix of types": ((["a", "b", "a"], [0.1, 0.2, 0.3]), {}),
    "multiclass vs multilabel": (([0, 1, 2], [[0, 1], [1, 1], [0, 0]]), {}),
    "strings vs numbers": ((np.array(["a", "b", "a"]), [0, 1, 0]), {}),
    "empty": (([], []), {}),
    "length": (([0, 1, 1], [0, 1]), {}),
    "nan": (([0, 1, 2], [0.0, np.nan, 1.0]), {}),
    "inf y_true": (([np.inf, 1, 2], [1, 2, 3]), {}),
    "multioutput": (([[0, 2], [1, 3]], [[0, 2], [1, 3]]), {}),
    "indicator widths": (([[0, 1], [1, 1]], [[0, 1, 0], [1, 1, 0]]), {}),
    "legacy multilabel": (([[1], [2], [0, 1]], [[1], [2], [0, 1]]), {}),
    "sparse multiclass": ((None, None), {}),  # filled in below
    "weights nan": (([0, 1, 1], [0, 1, 0]), {"sample_weight": [1.0, np.nan, 1.0]}),
    "weights complex": (([0, 1, 1], [0, 1, 0]), {"sample_weight": np.array([1 + 2j, 3 + 4j, 5 + 7j])}),
    "weights 2d": (([0, 1, 1], [0, 1, 0]), {"sample_weight": np.ones((3, 2))}),
    "weights zero": (([0, 1, 1], [0, 1, 0]), {"sample_weight": [0, 0, 0]}),
    "weights sum zero": (([0, 1, 1], [0, 1, 0]), {"sample_weight": [1, -1, 0]}),
    "normalize": (([0, 1], [0, 1]), {"normalize": 1}),
    "y_pred string": (([0, 1], "01"), {}),
}


@pytest.mark.parametrize("case", list(ACCURACY_CASES))
def test_accuracy_errors(case):
    args, kwargs = ACCURACY_CASES[case]
    if case == "sparse multiclass":
        scipy_sparse = pytest.importorskip("scipy.sparse")
        args = (scipy_sparse.csr_array(np.array([[0], [1], [2]])), [0, 1, 2])
    same_as_sklearn("accuracy_score", *args, **kwargs)


_S3 = [[0.2, 0.1, 0.7], [0.4, 0.3, 0.3], [0.3, 0.4, 0.3], [0.4, 0.5, 0.1]]

TOP_K_CASES = {
    "continuous y_true": (([0, 0.57, 1, 2], _S3), {}),
    "class count": (([0, 1, 2, 3], _S3), {}),
    "labels not unique": ((["c", "c", "a", "b"], _S3), {"labels": ["a", "b", "c", "c"]}),
    "labels not ordered": ((["c", "c", "a", "b"], _S3), {"labels": ["a", "c", "b"]}),
    "label count": (([0, 0, 1, 2], _S3), {"labels": [0, 1, 2, 3]}),
    "y_true outside labels": (([0, 0, 1, 2], _S3), {"labels": [0, 1, 3]}),
    "binary with 3 columns": (([0, 1], [[0.5, 0.2, 0.2], [0.3, 0.4, 0.2]]), {}),
    "1d scores multiclass": (([0, 1, 2], [0.5, 0.4, 0.8]), {}),
    "nan scores": (([0, 1, 2, 0], [[0.2, 0.1, 0.7], [0.4, np.nan, 0.3], [0.3, 0.4, 0.3], [0.4, 0.5, 0.1]]), {}),
    "-inf scores": (([0, 1, 2, 0], [[0.2, 0.1, 0.7], [0.4, -np.inf, 0.3], [0.3, 0.4, 0.3], [0.4, 0.5, 0.1]]), {}),
    "nan before class count": (([0, 1, 2, 3], [[0.2, 0.1, np.nan], *_S3[1:]]), {}),
    "nan and k too large": (([0, 1, 2, 0], [[0.2, np.nan, 0.7], *_S3[1:]]), {"k": 3}),
    "inf binary": (([0, 1], [np.inf, 1.0]), {}),
    "nan y_true": (([np.nan, 1, 2], _S3[:3]), {}),
    "k too large": (([0, 1, 2, 0], _S3), {"k": 3}),
    "k zero": (([0, 1, 2, 0], _S3), {"k": 0}),
    "k float": (([0, 1, 2, 0], _S3), {"k": 2.0}),
    "k bool": (([0, 1, 2, 0], _S3), {"k": True}),
    "length": (([0, 1, 2], _S3), {}),
    "string scores": (([0, 1], [["a", "b"], ["c", "d"]]), {}),
    "weights sum zero": (([0, 1, 2, 0], _S3), {"sample_weight": [1, -1, 0, 0]}),
    "weights nan": (([0, 1, 2, 0], _S3), {"sample_weight": [1, np.nan, 0, 0]}),
    "weights inf": (([0, 1, 2, 0], _S3), {"sample_weight": [1, np.inf, 1, 0], "normalize": False}),
    "weights 2d": (([0, 1, 2, 0], _S3), {"sample_weight": np.ones((4, 2))}),
    "y_true 2d": (([[0, 1], [1, 0], [2, 0], [0, 1]], _S3), {}),
    "3d scores": (([0, 1], np.zeros((2, 2, 2))), {}),
}


@pytest.mark.parametrize("case", list(TOP_K_CASES))
def test_top_k_errors_and_warnings(case):
    args, kwargs = TOP_K_CASES[case]
    same_as_sklearn("top_k_accuracy_score", *args, **kwargs)


def test_invalid_parameter_error_is_sklearns():
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError):
        fastce.log_loss([0, 1], [0.5, 0.5], normalize="yes")
    with pytest.raises(fastce.sklearn_compat.InvalidParameterError):
        fastce.top_k_accuracy_score([0, 1], [0.5, 0.5], k=0)


# --------------------------------------------------------------------------- memory


@pytest.mark.parametrize("function", ["log_loss", "top_k_accuracy_score", "accuracy_score"])
def test_no_n_by_c_temporary(function):
    """No (N, C) temporary: peak traced memory stays below N x C / 2 bytes.

    That is half of even a boolean (N, C) mask, and 1/16 of a float64 one-hot
    matrix.  numpy registers its allocations with tracemalloc, so a one-hot
    matrix, a clipped copy, an argsort or a float64 conversion of the scores
    would show; N-sized arrays (labels, weights) fit easily.
    """
    n, c = 200_000, 50
    rng = np.random.default_rng(0)
    proba = rng.uniform(0.5, 1.0, size=(n, c)).astype(np.float32)
    proba /= proba.sum(axis=1, keepdims=True)
    y = rng.integers(0, c, size=n)
    call = {
        "log_loss": lambda: fastce.log_loss(y, proba),
        "top_k_accuracy_score": lambda: fastce.top_k_accuracy_score(y, proba, k=5),
        "accuracy_score": lambda: fastce.accuracy_score(y, proba),
    }[function]
    call()  # compile first: numba's compiler allocates through Python
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"{function}: peak traced memory {peak / 1e6:.1f} MB")
    assert peak < n * c / 2, f"peak {peak / 1e6:.1f} MB"


# ----------------------------------------------------- narrow and wide label dtypes (issue 14, item 5)

_WIDE_LABEL_DTYPES = (np.int8, np.int16, np.uint8, np.uint16, np.int32, np.uint64)


def _wide_labels(dtype, rng, n: int, n_classes: int, *, consecutive: bool):
    """Labels of ``dtype`` spanning (nearly) its whole range: ``y - min`` overflows the dtype when signed."""
    info = np.iinfo(dtype)
    if consecutive:  # low..low+n_classes-1 around the middle of a signed range (crosses 0)
        low = -(n_classes // 2) if info.min < 0 else int(info.max) - n_classes + 1
        classes = np.arange(low, low + n_classes, dtype=object)
    else:
        classes = np.array(sorted({int(info.min) + 1, int(info.max) - 1, int(info.max)} | {0}), dtype=object)[:n_classes]
    y = np.array([classes[i] for i in rng.permutation(np.arange(n) % len(classes))], dtype=dtype)
    return y, len(classes)


@pytest.mark.parametrize("dtype", _WIDE_LABEL_DTYPES)
def test_wide_range_labels_of_narrow_dtypes(rng, dtype):
    # log_loss(np.array([-100, 100, 100, -100], np.int8), ...) crashed: int8 y - (-100) wrapped negative.
    y = np.array([-100, 100, 100, -100] if np.iinfo(dtype).min < 0 else [3, 250, 250, 3], dtype=dtype)
    p = np.array([0.2, 0.7, 0.9, 0.4])
    same_as_sklearn("log_loss", y, p)
    same_as_sklearn("brier_score_loss", y, p)
    same_as_sklearn("accuracy_score", y, y[::-1])
    n = 400
    for consecutive in (False, True):
        labels, c = _wide_labels(dtype, rng, n, 129 if consecutive and np.iinfo(dtype).bits == 8 else 3,
                                 consecutive=consecutive)
        proba = softmax(rng.normal(size=(n, c)))
        weights = rng.uniform(0, 2, size=n)
        same_as_sklearn("log_loss", labels, proba, sample_weight=weights)
        same_as_sklearn("brier_score_loss", labels, proba)
        same_as_sklearn("top_k_accuracy_score", labels, proba, k=2, sample_weight=weights)
        same_as_sklearn("accuracy_score", labels, labels[rng.permutation(n)])
        if c == 3:
            binary = labels[labels != labels.min()]
            same_as_sklearn("log_loss", binary, rng.uniform(size=binary.size))
            same_as_sklearn("top_k_accuracy_score", binary, rng.uniform(size=binary.size), k=1)


def test_narrow_labels_are_not_widened():
    """The shift to 0..C-1 stays in the labels' width (int8 -> uint8): labels that need it cost no
    N-sized int64 copy more than labels that do not (at most the N bytes of the shifted copy)."""
    n = 400_000

    def peak(low: int, high: int, function) -> int:
        y = np.where(np.arange(n) % 3 == 0, low, high).astype(np.int8)
        p = np.linspace(0.01, 0.99, n)
        call = {"log_loss": lambda: fastce.log_loss(y, p), "accuracy_score": lambda: fastce.accuracy_score(y, y),
                "top_k_accuracy_score": lambda: fastce.top_k_accuracy_score(y, p, k=1)}[function]
        call()  # compile outside the measurement
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            call()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    for function in ("log_loss", "accuracy_score", "top_k_accuracy_score"):
        assert peak(-100, 100, function) <= peak(0, 100, function) + n + 65536, function


# ------------------------------------------------------ half-precision score matrices (issue 14, item 8)


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_half_precision_score_matrices(rng, dtype_name):
    """bfloat16 (ml_dtypes, dtype.kind "V") and float16 scores work in every drop-in, as elsewhere in fastce.

    scikit-learn refuses bfloat16 and computes float16 in float16: the oracle
    is scikit-learn on the same values in float64 (exact conversions), with
    each drop-in's own clipping epsilon.
    """
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dtype = np.dtype(ml_dtypes.bfloat16) if dtype_name == "bfloat16" else np.dtype(np.float16)
    n, c = 300, 4
    proba = softmax(rng.normal(size=(n, c))).astype(dtype)
    wide = proba.astype(np.float64)
    y = rng.integers(0, c, size=n)
    weights = rng.uniform(0, 2, size=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # rounded rows do not sum to 1 (both sides warn)
        assert fastce.accuracy_score(y, proba) == sklearn_metrics.accuracy_score(y, np.argmax(wide, axis=1))
        assert fastce.accuracy_score(y, proba, sample_weight=weights) == pytest.approx(
            sklearn_metrics.accuracy_score(y, np.argmax(wide, axis=1), sample_weight=weights), rel=1e-12)
        for k in (1, 2, 3):
            assert fastce.top_k_accuracy_score(y, proba, k=k) == sklearn_metrics.top_k_accuracy_score(y, wide, k=k)
        # bfloat16: scikit-learn would compute in float64 (not one of its log_loss dtypes); float16 in float16.
        eps = np.finfo(np.float64 if dtype_name == "bfloat16" else np.float16).eps
        clipped = np.clip(wide, eps, 1 - eps)
        expected = -np.mean(np.log(clipped[np.arange(n), y]))
        assert fastce.log_loss(y, proba) == pytest.approx(expected, rel=1e-9)
        assert fastce.brier_score_loss(y, proba) == pytest.approx(sklearn_metrics.brier_score_loss(y, wide), rel=1e-9)
        binary = (y > 1).astype(np.int64)
        column = wide[:, 0]
        assert fastce.log_loss(binary, proba[:, 0]) == pytest.approx(
            sklearn_metrics.log_loss(binary, np.clip(column, eps, 1 - eps)), rel=1e-9)


# ------------------------------------------------------------ found by an adversarial hunt (each failed before)


@pytest.mark.parametrize("scale", [1e150, 1e155, 1e200, -1e200])
def test_scores_beyond_the_square_root_of_float64s_range(rng, scale):
    # The probability-mode read squares the scores for its Brier terms: past ~1.34e154 their block sums overflow,
    # which made every weighted sum of the state unknown, the hits included (NaN instead of the accuracy).
    proba = softmax(rng.normal(size=(40, 3)))
    y = rng.integers(0, 3, size=40)
    same_as_sklearn("top_k_accuracy_score", y, proba * scale, k=1)
    same_as_sklearn("top_k_accuracy_score", y, proba * scale, k=2)
    got = fastce.accuracy_score(y, proba * scale)
    assert got == np.mean((proba * scale).argmax(axis=1) == y)


def test_huge_weights_with_ordinary_scores(rng):
    logits = rng.normal(scale=10, size=(40, 3))
    y = rng.integers(0, 3, size=40)
    same_as_sklearn("top_k_accuracy_score", y, logits, k=1, sample_weight=np.full(40, 1e306))


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_top_k_of_integer_scores_beyond_2_to_the_53(dtype):
    # float64 rounds 2**53 + 1 to 2**53: a tie scikit-learn, comparing the integers, does not see.
    big = 2**53
    scores = np.array([[big + 1, big, 0], [0, big + 1, big], [0, 1, 2], [big + 3, big + 2, big + 1]], dtype=dtype)
    y = [0, 1, 2, 0]
    for k in (1, 2):
        assert same_as_sklearn("top_k_accuracy_score", y, scores, k=k) == 1.0
    same_as_sklearn("top_k_accuracy_score", [1, 0, 2, 1], scores, k=1)
    same_as_sklearn("top_k_accuracy_score", [1, 0, 2, 1], scores, k=1, sample_weight=[1.0, np.inf, 2.0, 3.0])


@pytest.mark.parametrize("weights", [[1, None, 2, 3], ["1", "2", "3", "4"], np.array([1, None, 2, 3], dtype=object)])
@pytest.mark.parametrize("normalize", [True, False])
def test_weights_numpy_cannot_average_are_refused(weights, normalize):
    # None read as NaN (a NaN or inf result) and strings read as numbers, where scikit-learn raises TypeError.
    y = [1, 0, 2, 2]
    proba = np.array([[0.2, 0.7, 0.1], [0.6, 0.2, 0.2], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]])
    same_as_sklearn("log_loss", y, proba, sample_weight=weights, normalize=normalize)
    same_as_sklearn("log_loss", [0, 1, 1, 0], proba[:, 0], sample_weight=weights, normalize=normalize)
    same_as_sklearn("brier_score_loss", y, proba, sample_weight=weights)
    same_as_sklearn("brier_score_loss", [0, 1, 1, 0], proba[:, 0], sample_weight=weights)
    # The score-matrix extension: scikit-learn's error on the class predictions.
    expected, _ = _run(sklearn_metrics.accuracy_score, (y, proba.argmax(axis=1)),
                       dict(sample_weight=weights, normalize=normalize))
    got, _ = _run(fastce.accuracy_score, (y, proba), dict(sample_weight=weights, normalize=normalize))
    assert isinstance(expected, Exception) and type(got) is type(expected), (got, expected)


def test_object_weights_of_numbers_are_read():
    y = [1, 0, 2, 2]
    proba = np.array([[0.2, 0.7, 0.1], [0.6, 0.2, 0.2], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]])
    same_as_sklearn("log_loss", y, proba, sample_weight=np.array([1, 2.5, 2, 3], dtype=object))


def test_mixed_object_labels_raise_sklearns_type_error():
    y = np.array([1, "a", 1, "a"], dtype=object)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    same_as_sklearn("log_loss", y, proba)
    same_as_sklearn("brier_score_loss", y, proba)
    same_as_sklearn("accuracy_score", y, y)


def test_negative_label_hint_only_where_ignore_index_exists():
    scores = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4]])
    with pytest.raises(ValueError) as caught:
        fastce.accuracy_score([-100, 0], scores)
    assert "ignore_index" not in str(caught.value)
    with pytest.raises(ValueError) as caught:
        fastce.compare([-100, 0], logits={"a": scores, "b": scores})
    assert "ignore_index" not in str(caught.value)
    with pytest.raises(ValueError, match="pass ignore_index=-100"):
        fastce.evaluate([-100, 0], logits=scores)
    for door in (fastce.evaluate, fastce.diagnose):  # 1-D binary scores: a task that refuses ignore_index
        with pytest.raises(ValueError) as caught:
            door([-1, 0], logits=np.array([0.5, -0.5]))
        assert "ignore_index" not in str(caught.value)


def _warned_line(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except ValueError:
            pass
    return [(w.filename, w.lineno) for w in caught if issubclass(w.category, (UserWarning, FutureWarning))]


def test_warnings_name_the_callers_line():
    unnormalized = np.array([[0.5, 0.6, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    here = __file__
    for call in (
        lambda: fastce.brier_score_loss([0, 1, 2], unnormalized),
        lambda: fastce.log_loss([0, 1, 2], unnormalized),
        lambda: fastce.brier_score_loss([0, 1, 2], unnormalized[:, :2]),  # class-count mismatch: warns, raises
        lambda: fastce.top_k_accuracy_score([0, 1, 2], unnormalized, k=3),
    ):
        lines = _warned_line(call)
        assert lines and all(f == here and line == call.__code__.co_firstlineno for f, line in lines), lines


def test_the_drop_ins_leave_the_warning_filters_alone():
    # warnings.catch_warnings swapped the process's filters: from several threads at once it left an "error"
    # filter for ComplexWarning behind (the host's own complex-to-float casts then raised).
    import sys
    import threading

    before = list(warnings.filters)
    with pytest.raises(ValueError, match="Complex data not supported"):
        fastce.accuracy_score([0, 1], np.array([0, 1 + 1j]))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: the race shows within a few hundred calls
    try:
        threads = [threading.Thread(target=lambda: [fastce.accuracy_score([0, 1, 1], [0, 1, 0]) for _ in range(1000)])
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert warnings.filters == before
