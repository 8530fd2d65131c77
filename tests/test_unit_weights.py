"""Without sample or class weights the kernels copy the weight, loss, Brier and hit sums into the second
moments (sum w^2, w^2 loss, w^2 Brier, w^2 hits) instead of summing their terms again (kernels.store_sums):
every row weight is then 0 or 1, so w^2 = w row by row.

Weights of 1.0 send the same rows through the computed sums: every exact sum and counter of the State must
be the same, for each kernel (two-class block, short and long rows, probabilities, 1-D binary logits), with
rows left out (non-finite scores, ignored labels) and rows of infinite loss among them.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastce


def _scores(rng, n, n_classes, kind):
    z = rng.normal(scale=3.0, size=(n, n_classes) if n_classes else n)
    if kind == "proba":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    z = z.astype(np.float32)
    flat = z.reshape(-1)
    flat[rng.integers(0, flat.size, 5)] = np.nan  # rows not counted
    return z


def _state(y, scores, n_classes, kind, weights, class_weight, ignore_index):
    options = {"top_k": (1, 2, 5)} if n_classes and n_classes > 2 else {}
    evaluator = fastce.Evaluator(num_classes=n_classes or 2, from_logits=kind != "proba", nan_policy="omit",
                                 ignore_index=ignore_index, **options)
    evaluator.update(y, scores, sample_weight=weights)
    return evaluator.state()


@pytest.mark.parametrize("n_classes,kind", [(2, "logits"), (10, "logits"), (100, "logits"), (10, "proba"),
                                            (100, "proba"), (None, "logits")],
                         ids=["two-class", "short", "long", "short-proba", "long-proba", "binary-1d"])
def test_unweighted_sums_equal_those_of_unit_weights(n_classes, kind):
    rng = np.random.default_rng(5)
    n = 20_000 + 13
    z = _scores(rng, n, n_classes, kind)
    y = rng.integers(0, n_classes or 2, n)
    ignore_index = None
    if kind == "logits":  # rows of infinite loss: -inf at the true class
        rows = rng.integers(0, n, 7)
        if n_classes:
            z[rows, y[rows]] = -np.inf
        else:
            z[rows] = np.where(y[rows] == 1, -np.inf, np.inf)
    if n_classes and kind == "logits":
        ignore_index = -100
        y[rng.integers(0, n, 50)] = -100
    unweighted = _state(y, z, n_classes, kind, None, None, ignore_index)
    ones = _state(y, z, n_classes, kind, np.ones(n), None, ignore_index)
    np.testing.assert_array_equal(unweighted.counts, ones.counts)
    np.testing.assert_array_equal(unweighted.sums, ones.sums)
    if kind == "logits":
        assert unweighted.count("nonfinite_rows") > 0 and unweighted.count("inf_loss_rows") > 0
