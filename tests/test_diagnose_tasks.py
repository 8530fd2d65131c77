"""fastce.diagnose for the binary and multi-label tasks, against plain float64 numpy references."""

from __future__ import annotations

import json
import math

import numba
import numpy as np
import pytest
from reference import reference_calibration

import fastce
from fastce import _config, diagnose_tasks, validation
from fastce.errors import InputError, OmittedRowsWarning
from fastce.multilabel_report import (
    MultilabelDiagnosticsState,
    MultilabelOptions,
    MultilabelReport,
    read_multilabel_diagnostics,
)


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


# -- binary ------------------------------------------------------------------------------------


@pytest.fixture(params=["logits", "proba"])
def binary(request, rng):
    n = 4000
    z = rng.normal(scale=3.0, size=n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-0.7 * z))).astype(np.int64)
    z[:3] = [0.0, 40.0, -40.0]  # a tie (class 0) and two confidently right or wrong rows
    if request.param == "logits":
        return request.param, y, z, np.stack([np.zeros(n), z], axis=1)
    p = 1.0 / (1.0 + np.exp(-z))
    return request.param, y, p, np.stack([1.0 - p, p], axis=1)


def close(a, b, rel=1e-12):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=rel, atol=1e-300, equal_nan=True)


def assert_reports_match(r, ref):
    for group in ("correct", "wrong", "confidently_wrong"):
        assert r.loss_split[group]["rows"] == ref.loss_split[group]["rows"]
        for key in ("weight", "row_share", "loss_share", "mean_loss"):
            close(r.loss_split[group][key], ref.loss_split[group][key])
    close(r.loss_split["worst_1pct_loss_share"], ref.loss_split["worst_1pct_loss_share"])
    assert [w["row"] for w in r.worst] == [w["row"] for w in ref.worst]
    for key in ("p_true", "p_predicted", "loss"):
        close([w[key] for w in r.worst], [w[key] for w in ref.worst])
    for key in ("ece", "rms", "mce", "mean_confidence", "accuracy"):
        close(r.calibration[key], ref.calibration[key])
    close(r.calibration["bins"]["weight"], ref.calibration["bins"]["weight"])
    for key in ("support", "predicted", "recall", "precision", "f1", "mean_loss"):
        close(r.classes[key], ref.classes[key])
    close(r.confusion, ref.confusion)
    close(r.histograms["loss"]["weight"], ref.histograms["loss"]["weight"])
    close(r.histograms["p_true"]["weight"], ref.histograms["p_true"]["weight"])


@pytest.mark.parametrize("weighted", [False, True])
def test_binary_matches_two_column_report_and_evaluate(binary, weighted, rng):
    kind, y, s, two = binary
    w = rng.uniform(0.0, 2.0, size=y.size) if weighted else None
    y0, s0 = y.copy(), s.copy()
    r = fastce.diagnose(y, **{kind: s}, sample_weight=w)
    assert np.array_equal(y, y0) and np.array_equal(s, s0)  # inputs not modified
    assert r.metrics.task == "binary"
    assert r.metrics == fastce.evaluate(y, **{kind: s}, sample_weight=w)
    assert_reports_match(r, fastce.diagnose(y, **{kind: two}, sample_weight=w))
    assert r.confusion.shape == (2, 2)


def test_binary_against_numpy_reference(rng):
    n = 3000
    z = rng.normal(scale=2.0, size=n)
    y = (rng.random(n) < 0.4).astype(np.int64)
    r = fastce.diagnose(y, logits=z, n_bins=10, worst_k=7)
    p1 = 1.0 / (1.0 + np.exp(-z))
    pred = (z > 0).astype(np.int64)
    p_true = np.where(y == 1, p1, 1.0 - p1)
    loss = np.logaddexp(0.0, z) - y * z
    conf = np.where(pred == 1, p1, 1.0 - p1)
    right = pred == y
    assert r.loss_split["wrong"]["rows"] == int((~right).sum())
    close(r.loss_split["wrong"]["loss_share"], loss[~right].sum() / loss.sum(), rel=1e-10)
    worst = np.lexsort((np.arange(n), -loss))[:7]
    assert [w["row"] for w in r.worst] == worst.tolist()
    close([w["p_true"] for w in r.worst], p_true[worst], rel=1e-10)
    ece, rms, mce = reference_calibration(conf, right, np.ones(n), 10)
    close([r.calibration["ece"], r.calibration["rms"], r.calibration["mce"]], [ece, rms, mce], rel=1e-10)
    confusion = np.zeros((2, 2))
    np.add.at(confusion, (y, pred), 1.0)
    assert np.array_equal(r.confusion, confusion)


def test_binary_plus_inf_logit_and_float32(rng):
    z = np.array([np.inf, -np.inf, 2.0, -1.0, np.inf], dtype=np.float32)
    y = np.array([1, 0, 1, 1, 0])
    r = fastce.diagnose(y, logits=z)
    assert r.metrics == fastce.evaluate(y, logits=z)
    assert r.loss_split["infinite_loss_rows"] == 1  # row 4: z = +inf, true class 0
    assert r.worst[0]["row"] == 4 and r.worst[0]["loss"] == math.inf
    assert r.loss_split["correct"]["rows"] == 3


def test_binary_independent_of_chunk_size_and_threads(binary, monkeypatch, rng):
    kind, y, s, _ = binary
    w = rng.uniform(0.5, 1.5, size=y.size)
    reference = fastce.diagnose(y, **{kind: s}, sample_weight=w).to_json()
    for rows in (1, 512, 1000, 3 * 512):
        monkeypatch.setattr(diagnose_tasks, "BINARY_CHUNK_ROWS", rows)
        assert fastce.diagnose(y, **{kind: s}, sample_weight=w).to_json() == reference
    monkeypatch.undo()
    _same_for_one_and_two_threads(lambda: fastce.diagnose(y, **{kind: s}, sample_weight=w).to_json(), reference)


def test_binary_json_text_and_errors(rng):
    z = rng.normal(scale=4.0, size=500)
    y = (z + rng.normal(size=500) > 0).astype(np.int64)
    r = fastce.diagnose(y, logits=z)
    data = strict_json(r.to_json())
    assert data["metrics"]["task"] == "binary"
    text = str(r)
    assert "nats per row" in text and "confusion" in text and "Calibration" in text
    with pytest.raises(InputError, match="0 or 1"):
        fastce.diagnose(np.full(500, 2), logits=z)
    with pytest.raises(InputError, match="not probabilities"):
        fastce.diagnose(y, proba=z)
    z[7] = np.nan
    with pytest.raises(InputError, match="row 7"):
        fastce.diagnose(y, logits=z)
    with pytest.warns(OmittedRowsWarning):
        omitted = fastce.diagnose(y, logits=z, nan_policy="omit")
    assert omitted.metrics.n == 499 and omitted.loss_split["correct"]["rows"] + omitted.loss_split["wrong"]["rows"] == 499


# -- multi-label -------------------------------------------------------------------------------


def multilabel_reference(y, *, logits=None, proba=None, w=None):
    """Per-label and per-element numbers from the definitions, in float64 numpy."""
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[0]
    w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
    if logits is not None:
        z = np.asarray(logits, dtype=np.float64)
        p = 1.0 / (1.0 + np.exp(-z))
        loss = np.logaddexp(0.0, z) - y * z
        yes = z > 0
    else:
        p = np.asarray(proba, dtype=np.float64)
        loss = -(y * np.maximum(np.log(p), -100.0) + (1 - y) * np.maximum(np.log1p(-p), -100.0))
        yes = p > 0.5
    truth = y > 0.5
    conf = np.where(yes, p, 1.0 - p)
    right = yes == truth
    ww = np.broadcast_to(w[:, None], y.shape)
    return {
        "label_loss": (w[:, None] * loss).sum(axis=0) / w.sum(),
        "row_loss": loss.mean(axis=1),
        "calibration": reference_calibration(conf.ravel(), right.ravel(), ww.ravel(), 15),
        "wrong_share": (ww * loss)[~right].sum() / (ww * loss).sum(),
        "yes": yes,
        "truth": truth,
        "support": (w[:, None] * truth).sum(axis=0),
    }


@pytest.fixture(params=["logits", "proba"])
def multilabel(request, rng):
    n, c = 2500, 6
    z = rng.normal(scale=2.0, size=(n, c)) + np.array([-2.0, -1.0, 0.0, 1.0, 2.0, -5.0])
    y = (rng.random((n, c)) < 1.0 / (1.0 + np.exp(-0.8 * z))).astype(np.uint8)
    y[0] = [1, 1, 0, 0, 1, 0]
    if request.param == "logits":
        return request.param, y, z
    return request.param, y, 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize("weighted", [False, True])
def test_multilabel_against_reference(multilabel, weighted, rng):
    from sklearn.metrics import precision_recall_fscore_support

    kind, y, s = multilabel
    w = rng.uniform(0.0, 2.0, size=y.shape[0]) if weighted else None
    y0, s0 = y.copy(), s.copy()
    r = fastce.diagnose(y, **{kind: s}, sample_weight=w, worst_k=9)
    assert np.array_equal(y, y0) and np.array_equal(s, s0)
    assert isinstance(r, MultilabelReport)
    assert r.metrics == fastce.evaluate(y, **{kind: s}, sample_weight=w)
    ref = multilabel_reference(y, **{kind: s}, w=w)
    precision, recall, f1, support = precision_recall_fscore_support(
        ref["truth"].astype(int), ref["yes"].astype(int), average=None, zero_division=0, sample_weight=w
    )
    close(r.labels["precision"], precision, rel=1e-12)
    close(r.labels["recall"], recall, rel=1e-12)
    close(r.labels["f1"], f1, rel=1e-12)
    close(r.labels["support"], support, rel=1e-12)
    assert np.array_equal(r.labels["positives"], ref["truth"].sum(axis=0))
    close(r.labels["mean_loss"], ref["label_loss"], rel=1e-9)
    close(r.labels["loss_share"], ref["label_loss"] / ref["label_loss"].sum(), rel=1e-9)
    close(r.labels["mean_loss"].mean(), r.metrics.cross_entropy, rel=1e-12)
    close(r.labels["macro_f1"], f1.mean(), rel=1e-12)
    ece, rms, mce = ref["calibration"]
    close([r.calibration["ece"], r.calibration["rms"], r.calibration["mce"]], [ece, rms, mce], rel=1e-9)
    close(r.calibration["accuracy"], r.metrics.hamming_accuracy, rel=1e-12)
    close(r.loss_split["wrong"]["loss_share"], ref["wrong_share"], rel=1e-9)
    kept = np.arange(y.shape[0]) if w is None else np.flatnonzero(w > 0)
    worst = kept[np.lexsort((kept, -ref["row_loss"][kept]))][:9]
    assert [x["row"] for x in r.worst] == worst.tolist()
    close([x["loss"] for x in r.worst], ref["row_loss"][worst], rel=1e-9)
    assert [x["wrong_labels"] for x in r.worst] == (ref["yes"] != ref["truth"])[worst].sum(axis=1).tolist()
    assert r.accuracy == {"subset": r.metrics.subset_accuracy, "hamming": r.metrics.hamming_accuracy}


def test_multilabel_independent_of_threads_and_chunks(multilabel, rng):
    kind, y, s = multilabel
    y, s = np.tile(y, (8, 1)), np.tile(s, (8, 1))  # 20,000 rows: 4 blocks of 5461 rows
    w = rng.uniform(0.5, 1.5, size=y.shape[0])
    reference = fastce.diagnose(y, **{kind: s}, sample_weight=w).to_json()
    _same_for_one_and_two_threads(lambda: fastce.diagnose(y, **{kind: s}, sample_weight=w).to_json(), reference)
    view = validation.scores(s, kind).view
    opts = MultilabelOptions(num_labels=y.shape[1])
    whole = read_multilabel_diagnostics(view, y, w, from_logits=kind == "logits", options=opts)
    for rows in (1, 1000, 5461):
        small = read_multilabel_diagnostics(view, y, w, from_logits=kind == "logits", options=opts, rows_per_call=rows)
        assert small.to_dict() == whole.to_dict()
    # Merging the states of two parts (cut at a block boundary) gives the whole.
    cut = 2 * _config.block_rows(y.shape[1])
    a = read_multilabel_diagnostics(view[:cut], y[:cut], w[:cut], from_logits=kind == "logits", options=opts)
    b = read_multilabel_diagnostics(view[cut:], y[cut:], w[cut:], from_logits=kind == "logits", options=opts)
    merged = a.merge(b).to_dict()
    assert merged["worst"] == whole.to_dict()["worst"] and merged["counts"] == whole.to_dict()["counts"]
    np.testing.assert_allclose(np.add(merged["hi"], merged["lo"]), whole.hi + whole.lo, rtol=1e-15)
    assert MultilabelDiagnosticsState.from_dict(strict_json(json.dumps(whole.to_dict()))).to_dict() == whole.to_dict()


def test_multilabel_json_and_text(rng):
    n, c = 3000, 8
    z = rng.normal(scale=1.0, size=(n, c))
    z[:, 3] *= 40.0  # label 3: very confident, often wrong: it carries the loss
    y = (rng.random((n, c)) < 0.5).astype(np.int64)
    z[:, 7] = -3.0  # never predicted positive
    r = fastce.diagnose(y, logits=z)
    data = strict_json(r.to_json())
    assert data["task"] == "multilabel" and data["metrics"]["task"] == "multilabel"
    text = str(r)
    assert "nats per label" in text and "much lower than the Hamming accuracy" in text
    assert "Label 3 carries" in text
    assert "never predicted positive (7)" in text
    assert r.labels["highest_loss"][0]["label"] == 3
    assert "%" not in text.split("Cross-entropy is")[1].split(".")[0]  # the loss in nats, never a percent


def test_multilabel_nan_inf_and_options(rng):
    z = rng.normal(size=(40, 3))
    y = (rng.random((40, 3)) < 0.5).astype(np.uint8)
    y[:, 0] = 1
    z[5, 1] = np.nan
    with pytest.raises(InputError, match="row 5"):
        fastce.diagnose(y, logits=z)
    with pytest.warns(OmittedRowsWarning):
        r = fastce.diagnose(y, logits=z, nan_policy="omit")
    assert r.metrics.n == 39 and 5 not in [w["row"] for w in r.worst]
    z[5, 1] = 0.0
    z[9, 0] = -np.inf  # label 0 of row 9 is positive: an infinite loss
    r = fastce.diagnose(y, logits=z)
    assert r.metrics.cross_entropy == math.inf and r.labels["mean_loss"][0] == math.inf
    assert r.worst[0]["row"] == 9 and r.worst[0]["worst_label"] == 0
    strict_json(r.to_json())
    assert "infinite" in str(r)
    with pytest.raises(InputError, match="top_k"):
        fastce.diagnose(y, logits=z, top_k=(1, 2))


def test_soft_targets_refused(rng):
    z = rng.normal(size=(10, 4))
    t = rng.dirichlet(np.ones(4), size=10)
    with pytest.raises(InputError, match="diagnose supports multi-class, binary and multi-label targets"):
        fastce.diagnose(t, logits=z)


def test_one_hot_targets_are_multiclass(rng):
    z = rng.normal(size=(50, 4))
    labels = rng.integers(0, 4, size=50)
    a = fastce.diagnose(np.eye(4)[labels], logits=z)
    b = fastce.diagnose(labels, logits=z)
    assert a.to_json() == b.to_json()


def _same_for_one_and_two_threads(call, reference) -> None:
    """``call()`` returns ``reference`` on one thread and on two (the thread count is restored)."""
    threads = numba.get_num_threads()
    try:
        for t in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(t)
            assert call() == reference
    finally:
        numba.set_num_threads(threads)


def test_infinite_losses_make_their_groups_and_classes_means_infinite():
    # They are left out of the loss sums (their count kept): a group or class made only of such rows had a mean
    # loss of 0.0, and the class ranked last among the highest-loss ones.
    y = np.array([0, 1, 1])
    r = fastce.diagnose(y, logits=np.array([[-np.inf, 0.0], [0.0, 2.0], [0.0, 1.0]]))
    assert r.loss_split["wrong"]["mean_loss"] == math.inf == r.loss_split["confidently_wrong"]["mean_loss"]
    assert math.isfinite(r.loss_split["correct"]["mean_loss"])
    assert r.classes["mean_loss"][0] == math.inf and math.isfinite(r.classes["mean_loss"][1])
    assert r.classes["highest_loss"][0]["class"] == 0
    b = fastce.diagnose(np.array([1, 0, 1]), logits=np.array([-np.inf, -1.0, 2.0]))
    assert b.classes["mean_loss"][1] == math.inf and b.loss_split["wrong"]["mean_loss"] == math.inf
    # More infinite rows than worst_k lists: the classes not shown infinite are unknown, not finite.
    y = np.array([0, 0, 1, 2, 2])
    z = np.array([[-np.inf, 0, 0], [-np.inf, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]])
    r = fastce.diagnose(y, logits=z, worst_k=1)
    assert r.classes["mean_loss"][0] == math.inf and np.isnan(r.classes["mean_loss"][1:]).all()
    assert r.classes["mean_loss"].tolist()[1:] != [0.0, 0.0]
    # Multi-label: 0/1 targets, an infinite loss is a wrong answer; soft ones may give it to a right answer.
    m = fastce.diagnose(np.array([[1, 0], [0, 1], [1, 1]], np.uint8), logits=np.array([[-np.inf, -1.0], [-2.0, 1.0],
                                                                                       [1.0, 1.0]]))
    assert m.loss_split["wrong"]["mean_loss"] == math.inf and math.isfinite(m.loss_split["correct"]["mean_loss"])
    s = fastce.diagnose(np.array([[0.7, 0], [0, 1], [1, 1]], np.float32),
                        logits=np.array([[np.inf, -1.0], [-2.0, 1.0], [1.0, 1.0]]), task="multilabel")
    assert all(math.isnan(s.loss_split[g]["mean_loss"]) for g in ("correct", "wrong", "confidently_wrong"))
    assert "nan" in s.to_json() and "NaN" not in s.to_json()


def test_a_nan_multilabel_target_is_named_as_a_target_by_diagnose():
    # The diagnostics' sums went NaN first and were refused as losses overflowing float64 (blaming the scores).
    y = np.array([[0, np.nan], [1, 0]])
    for call in (lambda: fastce.evaluate(y, logits=np.zeros((2, 2)), task="multilabel"),
                 lambda: fastce.diagnose(y, logits=np.zeros((2, 2)), task="multilabel")):
        with pytest.raises(fastce.InputError, match=r"y_true row 0 holds nan in column 1, outside \[0, 1\] \(or NaN\)"):
            call()


def test_the_evaluator_names_the_task_that_takes_a_later_soft_batch():
    ev = fastce.Evaluator()
    ev.update(np.eye(3)[[0, 1]], np.zeros((2, 3)))
    with pytest.raises(fastce.InputError, match="pass task='soft'"):
        ev.update(np.full((2, 3), 1 / 3), np.zeros((2, 3)))
