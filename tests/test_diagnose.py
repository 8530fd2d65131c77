"""fastce.diagnose against scikit-learn and an independent float64 numpy reference."""

from __future__ import annotations

import json
import math

import numba
import numpy as np
import pytest
from reference import reference_calibration, to_float64

import fastce
from fastce.diagnostics import DiagnosticsOptions, DiagnosticsState, read_with_diagnostics
from fastce.errors import InputError
from fastce.report import Report


def softmax(z):
    z = to_float64(z)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference_rows(y, *, logits=None, proba=None):
    """Per-row (loss, p_true, p_top, predicted) in plain float64 numpy."""
    if logits is not None:
        z = to_float64(logits)
        m = z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z - m).sum(axis=1)) + m[:, 0]
        loss = lse - z[np.arange(len(y)), y]
        p = softmax(z)
    else:
        p = to_float64(proba)
        eps = np.finfo(np.asarray(proba).dtype).eps
        loss = -np.log(np.clip(p[np.arange(len(y)), y], eps, 1 - eps))
    return loss, p[np.arange(len(y)), y], p.max(axis=1), p.argmax(axis=1), p


# 7 classes: 3000 rows in a few blocks; 500: blocks of 65 rows, whose bin sums are added entry by
# entry as listed (see diagnostics_kernels._fold_bins_tasks).
# 2 and 3: the class folds' parts of one class (diagnostics_kernels.class_parts).
@pytest.fixture(params=[("logits", 7), ("proba", 7), ("logits", 500), ("logits", 2), ("proba", 3)],
                ids=["logits", "proba", "logits-500", "logits-2", "proba-3"])
def problem(request, rng):
    kind, c = request.param
    n = 3000
    z = rng.normal(scale=3.0, size=(n, c))
    y = rng.integers(0, c, size=n)
    y[:c] = np.arange(c)
    w = rng.uniform(0.0, 2.0, size=n)
    # float64 logits: float64 math (float32 logits take float32 math: the tolerances here are float64's).
    scores = z if kind == "logits" else softmax(z)
    return kind, scores, y, w


@pytest.mark.parametrize("weighted", [False, True])
def test_matches_reference_and_sklearn(problem, weighted):
    from sklearn.metrics import brier_score_loss, confusion_matrix, f1_score, precision_recall_fscore_support

    kind, scores, y, w = problem
    c = scores.shape[1]
    w = w if weighted else None
    r = fastce.diagnose(y, **{kind: scores}, sample_weight=w, worst_k=15, n_bins=10)
    loss, p_true, p_top, pred, p = reference_rows(y, **{kind: scores})
    ww = np.ones(len(y)) if w is None else w
    right = pred == y

    # the metrics are evaluate's
    assert r.metrics == fastce.evaluate(y, **{kind: scores}, sample_weight=w)
    assert r.metrics.brier == pytest.approx(brier_score_loss(y, p, sample_weight=w), rel=1e-10)

    # loss split
    split = r.loss_split
    total = np.sum(ww * loss)
    assert split["correct"]["rows"] == right.sum() and split["wrong"]["rows"] == (~right).sum()
    assert split["correct"]["loss_share"] == pytest.approx(np.sum((ww * loss)[right]) / total, rel=1e-10)
    assert split["wrong"]["mean_loss"] == pytest.approx(np.sum((ww * loss)[~right]) / ww[~right].sum(), rel=1e-10)
    cw = ~right & (p_true < 0.01)
    assert split["confidently_wrong"]["rows"] == cw.sum()
    assert split["confidently_wrong"]["loss_share"] == pytest.approx(np.sum((ww * loss)[cw]) / total, rel=1e-10)
    assert split["confidently_wrong"]["row_share"] == pytest.approx(ww[cw].sum() / ww.sum(), rel=1e-10)

    # worst rows: highest loss first, ties to the lower row
    order = np.lexsort((np.arange(len(y)), -loss))[:15]
    assert [row["row"] for row in r.worst] == order.tolist()
    assert [row["true"] for row in r.worst] == y[order].tolist()
    assert [row["predicted"] for row in r.worst] == pred[order].tolist()
    np.testing.assert_allclose([row["loss"] for row in r.worst], loss[order], rtol=1e-9)
    np.testing.assert_allclose([row["p_true"] for row in r.worst], p_true[order], rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose([row["p_predicted"] for row in r.worst], p_top[order], rtol=1e-9)

    # calibration
    ece, rms, mce = reference_calibration(p_top, right, ww, 10)
    assert r.calibration["ece"] == pytest.approx(ece, rel=1e-9)
    assert r.calibration["rms"] == pytest.approx(rms, rel=1e-9)
    assert r.calibration["mce"] == pytest.approx(mce, rel=1e-9)
    assert np.sum(r.calibration["bins"]["weight"]) == pytest.approx(ww.sum(), rel=1e-12)

    # classes, confusion: scikit-learn
    cm = confusion_matrix(y, pred, labels=np.arange(c), sample_weight=w)
    np.testing.assert_allclose(r.confusion, cm, rtol=1e-12)
    prec, rec, f1, _ = precision_recall_fscore_support(y, pred, labels=np.arange(c), sample_weight=w, zero_division=0)
    np.testing.assert_allclose(np.nan_to_num(r.classes["precision"]), prec, rtol=1e-12)
    np.testing.assert_allclose(r.classes["recall"], rec, rtol=1e-12)
    np.testing.assert_allclose(np.nan_to_num(r.classes["f1"]), f1, rtol=1e-12)
    for average in ("macro", "weighted"):
        expected = f1_score(y, pred, average=average, sample_weight=w, zero_division=0)
        assert r.classes[f"{average}_f1"] == pytest.approx(expected, rel=1e-12)
    mean_loss = [np.sum((ww * loss)[y == k]) / ww[y == k].sum() for k in range(c)]
    np.testing.assert_allclose(r.classes["mean_loss"], mean_loss, rtol=1e-9)
    assert r.classes["highest_loss"][0]["class"] == int(np.argmax(mean_loss))

    # histograms
    hist = r.histograms["p_true"]
    k = np.clip(np.ceil(p_true * 20).astype(np.int64) - 1, 0, 19)
    np.testing.assert_allclose(hist["weight"], np.bincount(k, weights=ww, minlength=20), rtol=1e-12)
    edges = np.asarray(r.histograms["loss"]["edges"])
    counted = np.asarray(r.histograms["loss"]["weight"])
    k = np.clip(np.searchsorted(edges, loss, side="right") - 1, 0, counted.size - 1)
    expected = np.bincount(k, weights=ww, minlength=counted.size)
    # Rows within rounding of a bin edge may land on either side of it.
    near = np.abs(loss[:, None] / edges[None, 1:-1] - 1.0).min(axis=1) < 1e-12
    assert np.abs(counted - expected).sum() <= 2 * ww[near].sum() + 1e-9
    assert counted.sum() == pytest.approx(ww.sum(), rel=1e-12)
    summed = np.asarray(r.histograms["loss"]["loss"])
    expected = np.bincount(k, weights=ww * loss, minlength=counted.size)
    assert np.abs(summed - expected).sum() <= 2 * (ww * loss)[near].sum() + 1e-9 * total
    assert summed.sum() == pytest.approx(total, rel=1e-12)


def test_worst_share_exact_and_estimated_agree(rng):
    n, c = 5000, 5
    z = rng.normal(scale=4.0, size=(n, c))
    y = rng.integers(0, c, size=n)
    loss, *_ = reference_rows(y, logits=z)
    top = np.sort(loss)[::-1][:50]  # 1% of 5000 rows
    expected = top.sum() / loss.sum()
    exact = fastce.diagnose(y, logits=z, worst_k=60).loss_split
    assert exact["worst_1pct_exact"] and exact["worst_1pct_loss_share"] == pytest.approx(expected, rel=1e-12)
    estimated = fastce.diagnose(y, logits=z, worst_k=5).loss_split
    assert not estimated["worst_1pct_exact"]
    assert estimated["worst_1pct_loss_share"] == pytest.approx(expected, rel=0.12)


def test_worst_ties_go_to_the_lower_row():
    z = np.zeros((10, 3))
    z[:, 0] = 1.0
    y = np.array([1, 2, 1, 0, 2, 1, 0, 0, 1, 2])
    r = fastce.diagnose(y, logits=z, worst_k=4)
    assert [w["row"] for w in r.worst] == [0, 1, 2, 4]


# 500 classes: blocks of 65 rows, whose bin sums are added entry by entry as listed (see
# diagnostics_kernels._fold_bins_tasks); 12: every entry is visited.
@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "unit-weights"])
@pytest.mark.parametrize("rows, classes", [(40_000, 12), (6_000, 500), (40_000, 2), (30_000, 3)])
def test_results_do_not_depend_on_threads_or_blocking(rng, monkeypatch, rows, classes, weighted):
    z = rng.normal(size=(rows, classes)).astype(np.float32)
    y = rng.integers(0, classes, size=rows)
    w = rng.uniform(size=rows) if weighted else None
    first = fastce.diagnose(y, logits=z, sample_weight=w).to_json()
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = fastce.diagnose(y, logits=z, sample_weight=w).to_json()
    finally:
        numba.set_num_threads(threads)
    assert first == single
    from fastce import _config

    monkeypatch.setattr(_config, "BLOCKS_PER_CALL", 3)
    # Other slices regroup the bins' partial sums: equal to rounding; metrics and rows exactly.
    sliced = fastce.diagnose(y, logits=z, sample_weight=w)
    _assert_same_report(sliced, fastce.diagnose(y, logits=z, sample_weight=w))
    monkeypatch.undo()
    _assert_same_report(sliced, fastce.diagnose(y, logits=z, sample_weight=w))


# 7 and 100: the dense confusion matrix takes wrong rows as they come; 300 and 1000: sorted by cell.
# (at 300, 109-row blocks: the bins visit every entry; at 1000, 32-row blocks: only those listed)
@pytest.mark.parametrize("classes", [2, 3, 7, 100, 300, 1000])
def test_unit_weights_give_the_bits_of_no_weights(rng, classes):
    """Without weights the class fold counts rows as integers (diagnostics_kernels._count_classes_tasks);
    with weights of 1 it adds 1.0 a row.  Exact both ways: the same bits."""
    n = 6000
    z = rng.normal(scale=3.0, size=(n, classes)).astype(np.float32)
    z[5, 1] = np.nan  # a row left out
    z[9, 0] = -np.inf  # a masked class
    y = rng.integers(0, classes, size=n)
    z[11, y[11]] = -np.inf  # an infinite loss
    with pytest.warns(fastce.errors.OmittedRowsWarning, match="row 5"):
        plain = fastce.diagnose(y, logits=z, worst_k=10, nan_policy="omit")
    with pytest.warns(fastce.errors.OmittedRowsWarning, match="row 5"):
        ones = fastce.diagnose(y, logits=z, sample_weight=np.ones(n), worst_k=10, nan_policy="omit")
    a, b = plain.to_dict(), ones.to_dict()
    for name in ("loss_split", "calibration", "histograms", "classes", "worst"):
        assert json.dumps(a[name]) == json.dumps(b[name]), name
    assert plain.confusion.tobytes() == ones.confusion.tobytes()
    split = plain.loss_split
    assert plain.confusion.sum() == n - 1 and split["wrong"]["rows"] + split["correct"]["rows"] == n - 1


def test_sparse_confusions_match_dense(rng):
    z = rng.normal(size=(6000, 30))
    y = rng.integers(0, 30, size=6000)
    dense = fastce.diagnose(y, logits=z)
    sparse = fastce.diagnose(y, logits=z, dense_confusion_max=10)
    assert sparse.confusion is None and dense.confusion is not None
    assert sparse.top_confusions == dense.top_confusions
    assert sparse.confusion_error == 0.0


def test_stable_order_is_numpys_stable_argsort():
    """The radix sort behind the dense confusion matrix's adds (C > 256) orders as np.argsort(kind="stable"):
    any size (0 and 1 included), any bound (one pass, two, up to codes of 62 bits), many ties."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from fastce.diagnostics_kernels import stable_order

    @given(st.integers(0, 3000), st.sampled_from([1, 2, 7, 2048, 2049, 10**6, 2**40, 2**62]), st.integers(0, 2**32))
    @settings(max_examples=60, deadline=None)
    def check(n, bound, seed):
        codes = np.random.default_rng(seed).integers(0, bound, size=n)
        np.testing.assert_array_equal(stable_order(codes, bound), np.argsort(codes, kind="stable"))

    check()


def test_worst_rows_are_the_k_largest_losses_ties_to_the_lower_row():
    """The one-pass heap of the worst rows (diagnostics_kernels.worst_rows) against numpy's selection, written
    from the definition: rows counted (loss not NaN, weight not 0) with a loss above the floor, the k largest
    losses, ties to the lower row; with many ties, inf and NaN losses, zero weights and every floor."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from fastce.diagnostics_kernels import worst_rows

    def reference(loss, w, k, floor):
        counted = ~np.isnan(loss) & ((w != 0.0) if w.size else True) & (loss > floor)
        rows = np.flatnonzero(counted)
        order = np.lexsort((rows, -loss[rows]))[:k]  # loss descending, then row ascending
        return np.sort(rows[order])

    values = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, np.inf, np.nan])
    @given(st.lists(values, max_size=80), st.integers(1, 12), st.booleans(), st.integers(0, 2**32),
           st.sampled_from([-np.inf, 0.5, 1.0, np.inf]))
    @settings(max_examples=200, deadline=None)
    def check(losses, k, weighted, seed, floor):
        loss = np.array(losses, dtype=np.float64)
        w = np.random.default_rng(seed).choice([0.0, 1.0, 2.0], size=loss.size) if weighted else np.empty(0)
        np.testing.assert_array_equal(np.sort(worst_rows(loss, w, k, floor)), reference(loss, w, k, floor))

    check()


def test_heaviest_cells_are_the_top_confusions_ties_to_the_lower_code():
    """The one-pass heap of the report's top confusions (diagnostics_kernels.heaviest_cells) against numpy's
    selection from the definition: off-diagonal cells above 0, heaviest first, ties to the lower code; with
    many ties, inf, NaN, negative and zero cells, every k and square matrices from 0 x 0 up."""
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from fastce.diagnostics_kernels import heaviest_cells

    def reference(matrix, k):
        c = matrix.shape[0]
        flat = matrix.ravel()
        codes = np.flatnonzero(flat > 0)
        codes = codes[codes % (c + 1) != 0]
        order = np.lexsort((codes, -flat[codes]))[:k]
        return codes[order], flat[codes[order]]

    values = st.sampled_from([0.0, -1.0, 0.5, 1.0, 2.0, 3.0, np.inf, np.nan])
    @given(st.integers(0, 9), st.data(), st.integers(1, 25))
    @settings(max_examples=200, deadline=None)
    def check(c, data, k):
        matrix = np.array(data.draw(st.lists(values, min_size=c * c, max_size=c * c)), dtype=np.float64).reshape(c, c)
        before = matrix.copy()
        codes, weights = heaviest_cells(matrix, k)
        want_codes, want_weights = reference(matrix, k)
        np.testing.assert_array_equal(codes, want_codes)
        np.testing.assert_array_equal(weights, want_weights)
        np.testing.assert_array_equal(matrix, before)  # read only

    check()


def test_sparse_pair_table_is_bounded_and_its_error_bounded(rng):
    opts = DiagnosticsOptions(num_classes=50, dense_confusion_max=0, max_pairs=40)
    z = rng.normal(size=(20000, 50))
    y = rng.integers(0, 50, size=20000)
    from fastce import validation

    view = validation.scores(z, "logits").view
    state, diag = read_with_diagnostics(view, y, None, top_k=(1,), from_logits=True, eps=0.0, options=opts)
    assert diag.pair_codes.size <= 40 and diag.pair_error > 0
    _, _, _, pred, _ = reference_rows(y, logits=z)
    wrong = pred != y
    true_counts = np.bincount(y[wrong] * 50 + pred[wrong], minlength=2500)
    for code, weight in zip(diag.pair_codes, diag.pair_weights):
        assert weight <= true_counts[code] <= weight + diag.pair_error


def test_merge_and_json_round_trip(rng):
    z = rng.normal(size=(5000, 6))
    y = rng.integers(0, 6, size=5000)
    opts = DiagnosticsOptions(num_classes=6, worst_k=7)
    from fastce import validation

    def read(lo, hi):
        view = validation.scores(z[lo:hi], "logits").view
        return read_with_diagnostics(view, y[lo:hi], None, top_k=(1,), from_logits=True, eps=0.0, options=opts)

    s_all, d_all = read(0, 5000)
    s1, d1 = read(0, 1700)
    s2, d2 = read(1700, 5000)
    merged = d1.merge(d2)
    assert merged.worst["row"].tolist() == d_all.worst["row"].tolist()
    np.testing.assert_allclose(merged.values(), d_all.values(), rtol=1e-13, atol=1e-12)
    assert (merged.counts == d_all.counts).all()
    again = DiagnosticsState.from_dict(json.loads(json.dumps(merged.to_dict())))
    assert again.to_dict() == merged.to_dict()
    report = Report.from_states(s1.merge(s2), merged)
    assert report.metrics.n == 5000
    with pytest.raises(ValueError, match="malformed"):
        DiagnosticsState.from_dict({**merged.to_dict(), "acc": [1.0]})
    with pytest.raises(ValueError, match="different options"):
        merged.merge(DiagnosticsState.empty(DiagnosticsOptions(num_classes=6)))


def test_nan_rows_are_left_out_under_omit(rng):
    z = rng.normal(size=(200, 4))
    y = rng.integers(0, 4, size=200)
    z[[3, 50], 1] = np.nan
    with pytest.warns(fastce.OmittedRowsWarning):
        r = fastce.diagnose(y, logits=z, nan_policy="omit")
    assert r.metrics.n == 198 and np.sum(r.confusion) == 198
    assert all(w["row"] not in (3, 50) for w in r.worst)
    with pytest.raises(InputError, match="row 3"):
        fastce.diagnose(y, logits=z)


def test_infinite_loss_rows(rng):
    z = rng.normal(size=(50, 3))
    y = rng.integers(0, 3, size=50)
    z[7, y[7]] = -np.inf
    r = fastce.diagnose(y, logits=z)
    assert r.metrics.cross_entropy == math.inf
    assert r.loss_split["infinite_loss_rows"] == 1
    assert r.worst[0]["row"] == 7 and r.worst[0]["loss"] == math.inf and r.worst[0]["p_true"] == 0.0
    assert "infinite" in str(r)
    json.loads(r.to_json())


@pytest.mark.parametrize(
    "kwargs, argument",
    [({"n_bins": 0}, "n_bins"), ({"worst_k": -1}, "worst_k"), ({"confident_below": 0.0}, "confident_below"),
     ({"confident_below": 2}, "confident_below"), ({"hist_bins": 1.5}, "hist_bins")],
)
def test_bad_options_are_refused(kwargs, argument):
    with pytest.raises(InputError) as info:
        fastce.diagnose([0, 1], logits=np.eye(2), **kwargs)
    assert info.value.argument == argument


def test_text_and_json_explain_in_plain_words():
    # 99 rows right but 1 confidently wrong: high accuracy, loss dominated by one row.
    n = 100
    z = np.zeros((n, 3))
    z[:, 0] = 5.0
    y = np.zeros(n, dtype=np.int64)
    y[0] = 2
    z[0] = [12.0, 0.0, -6.0]
    r = fastce.diagnose(y, logits=z)
    text = str(r)
    assert "not a percentage" in text and "confidently wrong" in text
    assert "1.0% of rows are confidently wrong" in text
    data = json.loads(r.to_json())
    assert data["loss_split"]["confidently_wrong"]["rows"] == 1
    assert data["loss_split"]["confidently_wrong"]["loss_share"] > 0.9
    assert data["summary"] == r.summary()


def test_plots_are_written(tmp_path, rng):
    pytest.importorskip("matplotlib")
    z = rng.normal(size=(3000, 5)) * 2
    y = rng.integers(0, 5, size=3000)
    paths = fastce.diagnose(y, logits=z).plot(tmp_path / "plots")
    assert sorted(p.rsplit("/", 1)[-1] for p in paths) == ["confusion.png", "loss_histogram.png", "reliability.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_loss_histogram_says_why_it_is_empty(tmp_path):
    # Every loss below the first edge (or infinite): the plot was blank, its label promising a dashed mean.
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from fastce import plots

    report = fastce.diagnose(np.array([0, 1, 0]), logits=np.array([[50.0, 0.0], [0.0, 60.0], [70.0, 0.0]]))
    fig = plots._loss_histogram(plt, report)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 1 and "no loss between" in texts[0] and "3 of loss below" in texts[0]
    assert "dashed" not in fig.axes[0].get_xlabel() and not fig.axes[0].lines
    plt.close(fig)
    z = np.random.default_rng(0).normal(size=(500, 4))
    fig = plots._loss_histogram(plt, fastce.diagnose(np.arange(500) % 4, logits=z))
    assert not fig.axes[0].texts and "dashed: mean" in fig.axes[0].get_xlabel() and fig.axes[0].lines
    plt.close(fig)


def test_memory_does_not_grow_with_rows(rng, monkeypatch):
    import tracemalloc

    from fastce import _config

    monkeypatch.setattr(_config, "BLOCKS_PER_CALL", 16)  # 8192 rows per kernel call at C=32 ...
    monkeypatch.setattr(_config, "FOLD_MIN_ROWS", 8192)  # ... diagnose's too (by default up to 4x as many)
    z = rng.standard_normal((300_000, 32), dtype=np.float32)
    y = rng.integers(0, 32, size=300_000)
    fastce.diagnose(y[:1000], logits=z[:1000])  # compile outside the measurement

    def peak(n):
        tracemalloc.start()
        fastce.diagnose(y[:n], logits=z[:n])
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(100_000), peak(300_000)
    # Per-call buffers (loss, p(true), p(top), argmax) are one call's rows: 3x the rows, same memory.
    assert large < 1.2 * small + 100_000
    assert large < 0.05 * z.nbytes


# -- through the streaming Evaluator ------------------------------------------------


def _assert_same_report(a, b):
    """Bit for bit: every number of the report (JSON writes floats with repr, NaN as "nan")."""
    assert a.metrics == b.metrics
    assert a.to_json() == b.to_json()
    if a.confusion is not None:
        assert a.confusion.tobytes() == b.confusion.tobytes()


def test_evaluator_report_equals_diagnose_for_any_split(rng):
    z = rng.normal(scale=2.0, size=(7000, 9)).astype(np.float32)
    y = rng.integers(0, 9, size=7000)
    w = rng.uniform(size=7000)
    expected = fastce.diagnose(y, logits=z, sample_weight=w, worst_k=10)
    ev = fastce.Evaluator(9, diagnostics={"worst_k": 10})
    cuts = np.sort(rng.choice(np.arange(1, 7000), size=12, replace=False))
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, 7000]):
        ev.update(y[lo:hi], z[lo:hi], w[lo:hi])
    _assert_same_report(ev.report(), expected)
    assert ev.result() == expected.metrics
    # checkpoint through JSON, then go on
    again = fastce.Evaluator.from_state_dict(json.loads(json.dumps(ev.state_dict())))
    _assert_same_report(again.report(), expected)
    # merging two halves
    a = fastce.Evaluator(9, diagnostics={"worst_k": 10})
    b = fastce.Evaluator(9, diagnostics={"worst_k": 10})
    a.update(y[:3072], z[:3072], w[:3072])  # a whole number of blocks: exact (see Evaluator.merge)
    b.update(y[3072:], z[3072:], w[3072:])
    _assert_same_report(a.merge(b).report(), expected)


def test_evaluator_diagnostics_errors_leave_it_unchanged(rng):
    z = rng.normal(size=(100, 3))
    y = rng.integers(0, 3, size=100)
    ev = fastce.Evaluator(3, diagnostics=True)
    ev.update(y[:50], z[:50])
    before = json.dumps(ev.state_dict())
    bad = z[50:].copy()
    bad[5, 0] = np.nan
    with pytest.raises(InputError, match="row 55"):
        ev.update(y[50:], bad)
    assert json.dumps(ev.state_dict()) == before
    with pytest.raises(InputError, match="diagnostics=True"):
        fastce.Evaluator(3).report()
    with pytest.raises(InputError, match="unknown diagnostics option"):
        fastce.Evaluator(3, diagnostics={"bins": 3})
    with pytest.raises(ValueError, match="diagnostics"):
        fastce.Evaluator(3).merge(ev)


# -- the `fastce report` command ---------------------------------------------------------


def test_report_command_json_plots_and_resume(tmp_path, rng):
    import io

    from fastce import cli

    z = (rng.normal(size=(6000, 8)) * 2).astype(np.float32)
    y = rng.integers(0, 8, size=6000)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    expected = fastce.diagnose(y, logits=z, worst_k=5, n_bins=10)
    argv = ["report", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"),
            "--worst-k", "5", "--bins", "10", "--chunk-rows", "700", "--no-progress"]
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(argv + ["--json", "--state", str(tmp_path / "run.state")], out=out, err=err) == 0, err.getvalue()
    data = json.loads(out.getvalue())
    assert data["metrics"]["cross_entropy"] == expected.metrics.cross_entropy
    assert [w["row"] for w in data["worst"]] == [w["row"] for w in expected.worst]
    assert data["calibration"]["ece"] == pytest.approx(expected.calibration["ece"], rel=1e-12)
    np.testing.assert_allclose(data["confusion"], expected.confusion, rtol=1e-12)
    # rerunning with the finished checkpoint resumes (nothing left to read) and reports the same
    out2 = io.StringIO()
    assert cli.main(argv + ["--json", "--state", str(tmp_path / "run.state")], out=out2, err=io.StringIO()) == 0
    assert json.loads(out2.getvalue()) == data
    if __import__("importlib").util.find_spec("matplotlib"):
        out3, err3 = io.StringIO(), io.StringIO()
        assert cli.main(argv + ["--plots", str(tmp_path / "png")], out=out3, err=err3) == 0
        assert "confidently wrong" in out3.getvalue() and "reliability.png" in err3.getvalue()
        assert (tmp_path / "png" / "confusion.png").exists()
    bad = io.StringIO()
    assert cli.main(argv + ["--bins", "0"], out=io.StringIO(), err=bad) == 2
    assert "--bins" in bad.getvalue()


def test_warnings_name_the_callers_line(rng):
    z = rng.normal(size=(50, 3))
    y = rng.integers(0, 3, size=50)
    z[4, 1] = np.nan
    with pytest.warns(fastce.OmittedRowsWarning) as caught:
        fastce.diagnose(y, logits=z, nan_policy="omit")
    assert caught[0].filename == __file__
    ev = fastce.Evaluator(3, diagnostics=True, nan_policy="omit")
    ev.update(y, z)
    with pytest.warns(fastce.OmittedRowsWarning) as caught:
        ev.report()
    assert caught[0].filename == __file__
    p = softmax(z[5:]) * 1.5  # rows summing to 1.5, inside [0, 1]
    p = np.clip(p, 0.0, 1.0)
    with pytest.warns(fastce.FastCEWarning, match="do not sum to 1") as caught:
        fastce.diagnose(y[5:], proba=p)
    assert caught[0].filename == __file__


# -- classes seen only in rows of weight 0 (issue 14, item 3) ------------------------------


def _sklearn_class_table(y, pred, w):
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    labels = np.union1d(y, pred)  # scikit-learn's labels: whatever the weights
    prec, rec, f1, _ = precision_recall_fscore_support(y, pred, labels=labels, sample_weight=w, zero_division=0)
    return labels, prec, rec, f1, {
        average: f1_score(y, pred, average=average, sample_weight=w, zero_division=0)
        for average in ("macro", "weighted")
    }


def _assert_classes_match_sklearn(r, y, pred, w):
    labels, prec, rec, f1, averages = _sklearn_class_table(y, pred, w)
    for name, expected in (("precision", prec), ("recall", rec), ("f1", f1)):
        # fastce leaves an undefined ratio NaN where scikit-learn (zero_division=0) writes 0
        np.testing.assert_allclose(np.nan_to_num(r.classes[name][labels]), expected, rtol=1e-12, err_msg=name)
    for average, expected in averages.items():
        assert r.classes[f"{average}_f1"] == pytest.approx(expected, rel=1e-12, abs=1e-15), average


def test_f1_counts_classes_seen_only_in_zero_weight_rows():
    z = np.vstack([np.eye(3), [[3.0, 0.0, 0.0]]])
    y = np.array([0, 1, 2, 1])
    w = np.array([1.0, 1.0, 0.0, 1.0])
    r = fastce.diagnose(y, logits=z, sample_weight=w)
    assert r.classes["macro_f1"] == pytest.approx(4 / 9, rel=1e-15)  # scikit-learn: 0.444, not 0.667
    _assert_classes_match_sklearn(r, y, z.argmax(axis=1), w)
    # the same through the Evaluator, split so that the zero-weight row is alone in its update, and JSON
    ev = fastce.Evaluator(3, diagnostics=True)
    ev.update(y[:2], z[:2], w[:2])
    ev.update(y[2:3], z[2:3], w[2:3])
    ev.update(y[3:], z[3:], w[3:])
    again = fastce.Evaluator.from_state_dict(json.loads(json.dumps(ev.state_dict())))
    assert again.report().classes["macro_f1"] == r.classes["macro_f1"]


def test_f1_against_sklearn_with_zero_weights_property():
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60)
    @given(
        st.integers(2, 6).flatmap(
            lambda c: st.tuples(
                st.just(c),
                st.lists(
                    st.tuples(
                        st.integers(0, c - 1),  # true class
                        st.integers(0, c - 1),  # predicted class
                        st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.5]),  # weight, often zero
                    ),
                    min_size=1,
                    max_size=40,
                ),
            )
        )
    )
    def check(case):
        c, rows = case
        y = np.array([r[0] for r in rows])
        pred = np.array([r[1] for r in rows])
        w = np.array([r[2] for r in rows])
        hypothesis.assume(w.sum() > 0)
        z = np.eye(c)[pred] * 4.0  # argmax = pred
        r = fastce.diagnose(y, logits=z, sample_weight=w)
        _assert_classes_match_sklearn(r, y, pred, w)

    check()


# -- the confusion plot names classes by their ids (issue 14, item 13) ---------------------


def _confusion_axes(report):
    pytest.importorskip("matplotlib")
    from fastce import plots

    plt = plots._pyplot()
    fig = plots._confusion(plt, report)
    try:
        fig.canvas.draw()  # lay out, as savefig does
        ax = fig.axes[0]
        ticks = ([t.get_text() for t in ax.get_xticklabels()], [t.get_text() for t in ax.get_yticklabels()])
        title_artist = fig._suptitle if fig._suptitle is not None else ax.title
        title, colorbar = title_artist.get_text(), fig.axes[1]
        renderer = fig.canvas.get_renderer()
        title_box = title_artist.get_window_extent(renderer)
        bar_boxes = [t.get_window_extent(renderer) for t in colorbar.get_yticklabels() if t.get_text()]
        return ticks, title, title_box, bar_boxes, ax.get_images()[0].get_array().shape
    finally:
        plt.close(fig)


def test_confusion_plot_labels_are_class_ids(rng):
    # 100 classes, only 80..99 confused: the axes must read 80..99, not positions 0..n-1.
    n, c = 4000, 100
    y = rng.integers(0, c, size=n)
    z = np.full((n, c), -5.0)
    z[np.arange(n), y] = 5.0
    confused = np.flatnonzero(y >= 80)
    z[np.ix_(confused, np.arange(80, 100))] = 6.0 + rng.normal(size=(confused.size, 20))
    r = fastce.diagnose(y, logits=z)
    (xticks, yticks), title, title_box, bar_boxes, shape = _confusion_axes(r)
    expected = [str(k) for k in range(80, 100)]
    assert xticks == expected and yticks == expected
    assert shape == (20, 20) and "20 most confused of 100 classes" in title
    assert not any(title_box.overlaps(box) for box in bar_boxes)  # the title clears the colour bar's ticks
    # more than CONFUSION_PLOT_MAX confused classes: the ticks are the selected ids, in class order
    y = rng.integers(0, 150, size=6000)
    z = rng.normal(size=(6000, 150))
    (xticks, yticks), _, _, _, shape = _confusion_axes(fastce.diagnose(y, logits=z))
    ids = [int(t) for t in xticks]
    assert shape == (64, 64) and ids == sorted(ids) and len(set(ids)) == 64 and max(ids) >= 64 and xticks == yticks
    # few classes: all of them
    (xticks, _), _, _, _, _ = _confusion_axes(fastce.diagnose(y % 5, logits=z[:, :5]))
    assert xticks == ["0", "1", "2", "3", "4"]


# -- the same bits from every door (issue 14, item 17) -------------------------------------


@pytest.mark.parametrize("n_classes, kind, weighted", [
    (9, "logits", False), (9, "logits", True), (300, "logits", True), (40, "proba", True), (1500, "logits", False),
    (1500, "logits", True), (2, "logits", False), (2, "logits", True), (3, "proba", False), (3, "logits", True),
])
def test_every_door_gives_the_same_report_bits(rng, n_classes, kind, weighted):
    """diagnose, Evaluator over random splits into updates, JSON checkpoints, merges, all bit for bit.

    (The ECE of one update used to differ from diagnose's in the last bit: the
    bins were summed in chunks counted from each read's first row and merged
    with a rounding TwoSum; they are now the kernel's blocks, added exactly.)
    """
    from fastce import _config

    n = 5000
    z = rng.normal(scale=3.0, size=(n, n_classes)).astype(np.float32)
    z[17, min(3, n_classes - 1)] = -np.inf  # a masked class
    y = rng.integers(0, n_classes, size=n)
    w = rng.uniform(0.0, 3.0, size=n) if weighted else None
    w_at = (lambda lo, hi: None) if w is None else (lambda lo, hi: w[lo:hi])
    scores = z if kind == "logits" else softmax(z)
    options = {"worst_k": 12, "n_bins": 10}
    expected = fastce.diagnose(y, **{kind: scores}, sample_weight=w, **options)
    for split in range(3):
        ev = fastce.Evaluator(n_classes, from_logits=kind == "logits", diagnostics=options)
        cuts = np.sort(rng.choice(np.arange(1, n), size=1 + 4 * split, replace=False))
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, n]):
            ev.update(y[lo:hi], scores[lo:hi], w_at(lo, hi))
            if hi == cuts[0]:  # a checkpoint round trip on the way
                ev = fastce.Evaluator.from_state_dict(json.loads(json.dumps(ev.state_dict())))
        _assert_same_report(ev.report(), expected)
    # merges: self holds whole blocks (or other less than one), as for the metrics (see Evaluator.merge)
    block = _config.block_rows(n_classes)
    for cut in (block * (n // block // 2), n - block // 2 - 1):
        parts = [(0, cut), (cut, n)]
        evs = []
        for lo, hi in parts:
            e = fastce.Evaluator(n_classes, from_logits=kind == "logits", diagnostics=options)
            e.update(y[lo:hi], scores[lo:hi], w_at(lo, hi))
            evs.append(e)
        _assert_same_report(evs[0].merge(evs[1]).report(), expected)
    # three-way, merged in either association
    third = block * max(1, n // block // 3)
    def piece(lo, hi):
        e = fastce.Evaluator(n_classes, from_logits=kind == "logits", diagnostics=options)
        e.update(y[lo:hi], scores[lo:hi], w_at(lo, hi))
        return e
    left = piece(0, third).merge(piece(third, 2 * third)).merge(piece(2 * third, n))
    right = piece(0, third).merge(piece(third, 2 * third).merge(piece(2 * third, n)))
    _assert_same_report(left.report(), expected)
    _assert_same_report(right.report(), expected)


def test_report_command_json_is_diagnose_bit_for_bit(tmp_path, rng):
    import io

    from fastce import cli

    z = (rng.normal(size=(3000, 12)) * 2).astype(np.float32)
    y = rng.integers(0, 12, size=3000)
    w = rng.uniform(size=3000)
    for name, array in (("z", z), ("y", y), ("w", w)):
        np.save(tmp_path / f"{name}.npy", array)
    out, err = io.StringIO(), io.StringIO()
    argv = ["report", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--weights",
            str(tmp_path / "w.npy"), "--chunk-rows", "777", "--json", "--no-progress"]
    assert cli.main(argv, out=out, err=err) == 0, err.getvalue()
    assert out.getvalue() == fastce.diagnose(y, logits=z, sample_weight=w).to_json() + "\n"


def test_sparse_confusion_table_gives_the_same_bits_from_every_door(rng):
    # Above dense_confusion_max the weighted pair table's sums must not depend on the split either.
    n, c = 6000, 1100
    z = np.full((n, c), -10.0, np.float32)
    z[:, :20] = rng.normal(size=(n, 20))  # 20 classes in use: each confused pair recurs
    y = rng.integers(0, 20, size=n)
    w = rng.uniform(0.0, 3.0, size=n)
    expected = fastce.diagnose(y, logits=z, sample_weight=w)
    assert expected.confusion is None and len(expected.top_confusions) == 20
    for _ in range(3):
        ev = fastce.Evaluator(c, diagnostics=True)
        cuts = np.sort(rng.choice(np.arange(1, n), size=6, replace=False))
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, n]):
            ev.update(y[lo:hi], z[lo:hi], w[lo:hi])
        _assert_same_report(ev.report(), expected)
    a, b = fastce.Evaluator(c, diagnostics=True), fastce.Evaluator(c, diagnostics=True)
    a.update(y[:2900], z[:2900], w[:2900])
    b.update(y[2900:], z[2900:], w[2900:])
    merged = fastce.Evaluator.from_state_dict(json.loads(json.dumps(a.merge(b).state_dict())))
    _assert_same_report(merged.report(), expected)


def test_options_that_size_memory_are_bounded_before_anything_is_allocated():
    # n_bins / hist_bins of 2**20 asked for 1.6 GiB (an exact accumulator a bin entry, per thread), a dense
    # confusion of 50,000 classes for 37 GiB, diagnostics of 2**31 classes for 64 GiB before a row was read.
    y, z = np.zeros(10, dtype=np.int64), np.zeros((10, 3))
    for option in ("n_bins", "hist_bins"):
        with pytest.raises(fastce.InputError, match=rf"{option} must be an integer in \[1, 4096\]"):
            fastce.diagnose(y, logits=z, **{option: 4097})
    with pytest.raises(fastce.InputError, match=r"dense_confusion_max must be an integer in \[0, 4096\]"):
        fastce.diagnose(y, logits=z, dense_confusion_max=50_000)
    with pytest.raises(fastce.InputError, match="above their limit of 4,194,304") as info:
        fastce.Evaluator(2**31, diagnostics=True)
    assert info.value.argument == "num_classes"
    assert fastce.diagnose(y, logits=z, n_bins=4096, hist_bins=4096, dense_confusion_max=4096).metrics.n == 10


def test_the_confidently_wrong_finding_speaks_of_the_rows_not_of_a_high_accuracy():
    # "a few such rows are enough to make the loss high while accuracy stays high" was printed at 40% accuracy.
    rng = np.random.default_rng(0)
    n, c = 20000, 10
    y = rng.integers(0, c, n)
    z = 0.3 * rng.standard_normal((n, c))
    z[np.arange(n), y] += 0.5
    bad = rng.random(n) < 0.3
    z[bad, (y[bad] + 1) % c] += 8
    z[bad, y[bad]] -= 4
    r = fastce.diagnose(y, logits=z)
    text = "\n".join(r.summary())
    assert r.metrics.accuracy < 0.5 and "accuracy stays high" not in text
    share = r.loss_split["confidently_wrong"]
    assert f"{share['loss_share'] / share['row_share']:.2g} times their share of the rows" in text


def test_findings_text_does_not_contradict_its_numbers_at_the_edges():
    # A helper's hunt: each sentence below was printed beside numbers that contradict it.
    # Confidence 0.95 on rows right 55% of the time and 0.55 on rows right 95%: ECE 0.4 and mean confidence equal
    # to accuracy ("over-confident: mean confidence 75.0% against 75.0% accuracy", from a 4e-16 gap).
    y = np.zeros(200, dtype=np.int64)
    p = np.empty((200, 2))
    p[:100, 0] = 0.95
    p[100:, 0] = 0.55
    p[:, 1] = 1 - p[:, 0]
    y[55:100] = 1  # 55 of the first 100 right
    y[195:] = 1  # 95 of the last 100 right
    text = str(fastce.diagnose(y, proba=p))
    assert "mis-calibrated both ways" in text and "over-confident:" not in text, text
    # Every row wrong: "against nan for correct rows".
    z = np.array([[0.0, 2.0], [3.0, 0.0], [0.0, 1.0]])
    text = str(fastce.diagnose(np.array([0, 1, 0]), logits=z))
    assert "no row is right" in text and "nan" not in text.split("Findings")[0].split("rows ")[0], text
    # A 1-D binary logit of +inf with label 0 was blamed on "a -inf logit".
    text = str(fastce.diagnose(np.array([0, 1, 0, 1]), logits=np.array([np.inf, 2.0, -1.0, 0.5])))
    assert "(an infinite logit against it)" in text and "-inf" not in text, text
    # nan_policy="propagate": NaN metrics beside a split of the other rows, without a word.
    z = np.array([[2.0, 0.0], [0.0, 2.0], [3.0, 1.0], [np.nan, 0.0], [1.0, 0.0]])
    text = str(fastce.diagnose(np.array([0, 0, 1, 0, 0]), logits=z, nan_policy="propagate"))
    assert "so the metrics are NaN; the loss split and the calibration below cover the rows with finite" in text


def test_multilabel_report_with_an_infinite_loss_plots_both_figures(tmp_path):
    # Every label's loss share is NaN when one answer's loss is infinite: plot() raised "Axis limits cannot be NaN
    # or Inf" after writing one of its two files (and `fastce report --plots` exited 2 without the report).
    pytest.importorskip("matplotlib")
    y = np.array([[1, 0], [0, 1], [1, 1]])
    z = np.array([[-np.inf, -1.0], [-2.0, 3.0], [1.0, 2.0]])
    report = fastce.diagnose(y, logits=z)
    assert math.isinf(report.metrics.cross_entropy)
    paths = report.plot(tmp_path)
    assert sorted(p.rsplit("/", 1)[-1] for p in map(str, paths)) == ["labels.png", "reliability.png"]
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("labels.png", "reliability.png"))
    text = str(fastce.diagnose(np.array([[1, 1], [0, 1], [1, 0]]), logits=np.array([[-2.0, -1], [1, -2], [-1, 3]])))
    assert "no answer is right" in text, text
