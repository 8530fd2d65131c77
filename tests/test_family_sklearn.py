"""fastce.brier_score_loss against sklearn.metrics.brier_score_loss 1.9: values, errors, warnings."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from support import readonly

import fastce

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def outcome(function, *args, **kwargs):
    """(value or (error type, message), warning messages) of one call."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        try:
            value = function(*args, **kwargs)
        except Exception as exc:  # compared with scikit-learn's, type and message
            value = (type(exc).__name__, str(exc))
    return value, [str(w.message) for w in record]


def same_as_sklearn(*args, rel=1e-12, **kwargs):
    ours, our_warnings = outcome(fastce.brier_score_loss, *args, **kwargs)
    theirs, their_warnings = outcome(sklearn_metrics.brier_score_loss, *args, **kwargs)
    assert our_warnings == their_warnings
    if isinstance(theirs, float):
        assert type(ours) is float and ours == pytest.approx(theirs, rel=rel, abs=1e-15)
    else:
        assert ours == theirs


@pytest.fixture
def binary(rng):
    return rng.integers(0, 2, 60), rng.random(60), rng.random(60)


@pytest.fixture
def multiclass(rng):
    p = rng.random((60, 4))
    return rng.integers(0, 4, 60), p / p.sum(axis=1, keepdims=True), rng.random(60)


def test_binary_cases(binary):
    y, p, w = binary
    strings = np.array(["ham", "spam"])[y]
    for args, kwargs in [
        ((y, p), {}),
        ((y, p), {"sample_weight": w}),
        ((y + 3, p), {}),
        ((2 * y - 1, p), {}),
        ((y, 1 - p), {"pos_label": 0}),
        ((strings, p), {"pos_label": "spam"}),
        ((strings, p), {}),
        ((y, p), {"scale_by_half": False}),
        ((y, p[:, None]), {}),
        ((y, p > 0.5), {}),
        (([1], [0.4]), {}),
        ((["foo"], [0.4]), {"pos_label": "bar"}),
        ((y, p + 1), {}),
        ((y, p - 1), {}),
        ((y[1:], p), {}),
        ((np.arange(60) % 3, p), {}),
        ((y, p), {"sample_weight": np.zeros(60)}),
        ((y, np.where(np.arange(60) == 5, np.nan, p)), {}),
    ]:
        same_as_sklearn(*args, **kwargs)


def test_multiclass_cases(multiclass, rng):
    y, p, w = multiclass
    for args, kwargs in [
        ((y, p), {}),
        ((y, p), {"sample_weight": w}),
        ((y, p), {"scale_by_half": True}),
        ((y, p * 1.1), {}),
        ((y, p + 1), {}),
        ((y, p - 1), {}),
        ((y, p), {"labels": [0, 1, 2, 3]}),
        ((y, p), {"labels": [0, 1, 2, 3, 4]}),
        ((y, p[:, :3]), {}),
        ((y % 2, p[:, :2] / p[:, :2].sum(axis=1, keepdims=True)), {}),
        ((np.eye(4)[y], p), {}),
        (((rng.random((60, 4)) < 0.4).astype(int), p), {}),
        ((["eggs", "spam", "ham"], [[1, 0, 0], [0, 1, 0], [0, 1, 0]]), {"labels": ["eggs", "spam", "ham", "yams"]}),
        ((["eggs"], [[0.9, 0.1]]), {}),
        ((["eggs"], [[0.9, 0.1]]), {"labels": ["eggs", "ham"]}),
        ((y, np.where(np.arange(240).reshape(60, 4) == 9, np.nan, p)), {}),
    ]:
        same_as_sklearn(*args, **kwargs)
    # scikit-learn sums float32 in float32; fastce sums exactly
    same_as_sklearn(y, p.astype(np.float32), rel=1e-6)


def test_parameter_errors(binary):
    y, p, _ = binary
    for kwargs in ({"pos_label": [1]}, {"scale_by_half": "x"}, {"sample_weight": "a"}):
        same_as_sklearn(y, p, **kwargs)
    same_as_sklearn(y, "ab")


def test_invalid_inputs_of_sklearns_own_test():
    """scikit-learn's test_brier_score_loss_invalid_inputs, with the warning it emits expected."""
    with pytest.raises(ValueError, match=re.escape("The number of classes in labels is different")):
        with pytest.warns(UserWarning, match="ordered lexicographically"):
            fastce.brier_score_loss(["eggs", "spam", "ham"], [[1, 0, 0], [0, 1, 0], [0, 1, 0]],
                                    labels=["eggs", "spam", "ham", "yams"])
    with pytest.raises(ValueError, match=re.escape("should be binary according to the shape of y_prob")):
        fastce.brier_score_loss(np.array([0, 1, 2, 0]), np.array([0.8, 0.6, 0.4, 0.2]))


def test_matches_evaluate_and_does_not_mutate(multiclass):
    y, p, w = multiclass
    p = readonly(p)
    before = p.copy()
    assert fastce.brier_score_loss(y, p, sample_weight=w) == pytest.approx(
        fastce.evaluate(y, proba=p, sample_weight=w).brier, rel=1e-14
    )
    assert np.array_equal(p, before)
