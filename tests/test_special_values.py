"""Special values (NaN, +inf, -inf and their mixes) at every column position, for every kernel path.

Issue 14, items 1 and 2: a two-class row [0, +inf] passed as valid (the
one-exp shortcut never selected the NaN of inf - inf), and the exact
accumulators dropped non-finite block sums without a word.  Each matrix
below mixes clean rows with rows holding one special pattern at one column,
for every position, in class counts that reach every specialised path: the
two-class shortcut, the fixed-width copies (3, 4, 8, 10), the general column
walk (5, 16, 32) and the long-row path (33, 100).  Every door is checked
against the float64 reference (tests/reference.py).  One test per dtype and
task, looping over the class counts inside, so the compile cost is that of
the kernels the suite already compiles.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import fastce
from fastce import _config
from fastce import kernels as K
from fastce.errors import FastCEWarning, InputError, OmittedRowsWarning
from support import score_dtype_params
from reference import (
    cross_entropy_reference,
    evaluate_reference,
    row_is_nonfinite,
    soft_cross_entropy_reference,
    to_float64,
)

CLASS_COUNTS = (2, 3, 4, 5, 8, 10, 16, 32, 33, 100)
NAN, INF = math.nan, math.inf


def _patterns(n_classes: int, j: int):
    """(name, {column: value}) of the special patterns placed at column j."""
    k = (j + 1) % n_classes
    yield "nan", {j: NAN}
    yield "+inf", {j: INF}
    yield "-inf", {j: -INF}  # a masked class: a valid logits row
    yield "-inf,+inf", {j: -INF, k: INF}
    yield "+inf,-inf", {j: INF, k: -INF}
    yield "nan,+inf", {j: NAN, k: INF}
    yield "+inf,+inf", {j: INF, k: INF}
    yield "nan,-inf", {j: NAN, k: -INF}


def _special_matrix(n_classes: int, dtype, rng, *, proba: bool):
    """Clean rows interleaved with one row per (pattern, column), and labels that avoid -inf columns."""
    rows, labels = [], []

    def clean():
        if proba:
            return rng.dirichlet(np.ones(n_classes))
        return rng.normal(scale=3.0, size=n_classes)

    for j in range(n_classes):
        for _, pattern in _patterns(n_classes, j):
            rows.append(clean())
            labels.append(int(rng.integers(n_classes)))
            row = clean()
            for column, value in pattern.items():
                row[column] = value
            finite = [c for c in range(n_classes) if not math.isinf(row[c]) or row[c] > 0]
            # The label on a finite (or +inf) column: a -inf true class is a legal infinite
            # loss, which would only make every omitted mean inf.
            labels.append(int(rng.choice(finite)) if finite else 0)
            rows.append(row)
    scores = np.array(rows, dtype=np.float64).astype(dtype)
    return scores, np.array(labels)


def _assert_close(actual, expected, rtol, what):
    if math.isnan(expected):
        assert math.isnan(actual), what
    else:
        assert actual == pytest.approx(expected, rel=rtol, abs=rtol), what


def _tolerance(dtype) -> float:
    return 1e-12 if np.dtype(dtype) == np.float64 else 2e-6


def _check_evaluate(y, scores, *, proba: bool, what: str):
    key = "proba" if proba else "logits"
    ref_omit = evaluate_reference(y, **{key: scores}, nan_policy="omit")
    nonfinite = np.flatnonzero(np.isnan(ref_omit["row_losses"]))
    assert nonfinite.size, what  # every matrix holds non-finite rows
    rtol = _tolerance(scores.dtype)
    # raise: the first non-finite row is named
    with pytest.raises(fastce.InputError) as info:
        fastce.evaluate(y, **{key: scores})
    assert info.value.row == nonfinite[0], what
    # omit: those rows are skipped and the metrics are those of the other rows
    # top-2 where it means something (k >= C warns, as scikit-learn does)
    ks = (1, 2) if scores.shape[1] > 2 else (1,)
    with pytest.warns(OmittedRowsWarning):
        m = fastce.evaluate(y, **{key: scores}, nan_policy="omit", top_k=ks)
    assert (m.n, m.n_omitted) == (ref_omit["n"], nonfinite.size), what
    for field in ("cross_entropy", "accuracy", "brier"):
        _assert_close(getattr(m, field), ref_omit[field], rtol, f"{what}: {field}")
    if 2 in ks:
        ref_top2 = evaluate_reference(y, **{key: scores}, nan_policy="omit", top_k=ks)["top_k_accuracy"][2]
        _assert_close(m.top_k_accuracy[2], ref_top2, rtol, f"{what}: top-2")
    # propagate: NaN
    m = fastce.evaluate(y, **{key: scores}, nan_policy="propagate")
    assert math.isnan(m.cross_entropy) and math.isnan(m.accuracy) and math.isnan(m.brier), what
    # diagnose: the same rows are omitted, the same metrics come out
    with pytest.warns(OmittedRowsWarning):
        report = fastce.diagnose(y, **{key: scores}, nan_policy="omit")
    assert (report.metrics.n, report.metrics.n_omitted) == (ref_omit["n"], nonfinite.size), what
    for field in ("cross_entropy", "accuracy", "brier"):
        _assert_close(getattr(report.metrics, field), ref_omit[field], rtol, f"{what}: diagnose {field}")
    with pytest.raises(fastce.InputError) as info:
        fastce.diagnose(y, **{key: scores})
    assert info.value.row == nonfinite[0], what
    return ref_omit


@pytest.mark.parametrize("dtype", score_dtype_params())
def test_special_logits_at_every_column(dtype, rng):
    for n_classes in CLASS_COUNTS:
        scores, y = _special_matrix(n_classes, dtype, rng, proba=False)
        what = f"C={n_classes} {np.dtype(dtype).name}"
        ref = _check_evaluate(y, scores, proba=False, what=what)
        # cross_entropy(reduction="none"): NaN exactly on the non-finite rows, the loss elsewhere
        losses = fastce.cross_entropy(scores, y, reduction="none", nan_policy="propagate")
        expected = cross_entropy_reference(scores, y, reduction="none")
        np.testing.assert_array_equal(np.isnan(losses), np.isnan(expected), err_msg=what)
        finite = ~np.isnan(expected)
        np.testing.assert_allclose(losses[finite], expected[finite], rtol=_tolerance(dtype), err_msg=what)
        np.testing.assert_array_equal(np.isnan(ref["row_losses"]), np.isnan(expected), err_msg=what)
        with pytest.raises(fastce.InputError):
            fastce.cross_entropy(scores, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_probabilities_at_every_column(dtype, rng):
    for n_classes in CLASS_COUNTS:
        scores, y = _special_matrix(n_classes, dtype, rng, proba=True)
        _check_evaluate(y, scores, proba=True, what=f"C={n_classes} {np.dtype(dtype).name}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_logits_soft_targets_at_every_column(dtype, rng):
    """kernels_soft: soft targets and label smoothing flag the same rows as the core kernel."""
    for n_classes in CLASS_COUNTS:
        scores, y = _special_matrix(n_classes, dtype, rng, proba=False)
        targets = rng.dirichlet(np.ones(n_classes), size=len(y))
        losses = fastce.cross_entropy(scores, targets, reduction="none", nan_policy="propagate")
        nonfinite = np.array([row_is_nonfinite(row, from_logits=True) for row in to_float64(scores)])
        np.testing.assert_array_equal(np.isnan(losses), nonfinite, err_msg=f"C={n_classes}")
        expected = soft_cross_entropy_reference(scores[~nonfinite], targets[~nonfinite], reduction="none")
        np.testing.assert_allclose(losses[~nonfinite], expected, rtol=_tolerance(dtype))
        smoothed = fastce.cross_entropy(scores, y, reduction="none", label_smoothing=0.1, nan_policy="propagate")
        np.testing.assert_array_equal(np.isnan(smoothed), nonfinite, err_msg=f"C={n_classes} smoothing")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values_binary_and_multilabel(dtype):
    """1-D binary kernels and the element-wise multi-label kernel: NaN is non-finite, +-inf logits are legal."""
    z = np.array([0.5, NAN, INF, -INF, -2.0, INF, -INF, NAN], dtype=dtype)
    y = np.array([1, 0, 1, 0, 0, 0, 1, 1])
    with pytest.raises(fastce.InputError) as info:
        fastce.evaluate(y, logits=z)
    assert info.value.row == 1
    with pytest.warns(OmittedRowsWarning):
        m = fastce.evaluate(y, logits=z, nan_policy="omit")
    assert (m.n, m.n_omitted) == (6, 2)
    assert m.cross_entropy == math.inf  # rows 5 and 6: certain and wrong
    ok = [0, 2, 3, 4]
    with pytest.warns(OmittedRowsWarning):
        m = fastce.evaluate(y[ok + [1]], logits=z[ok + [1]], nan_policy="omit")
    expected = np.mean([math.log1p(math.exp(-0.5)), 0.0, 0.0, math.log1p(math.exp(-2.0))])
    assert m.cross_entropy == pytest.approx(expected, rel=_tolerance(dtype))
    p = np.array([0.5, NAN, INF, -INF, 0.25], dtype=dtype)
    for bad in (1, 2, 3):
        keep = [0, 4, bad]
        with pytest.raises(fastce.InputError) as info:
            fastce.evaluate(y[keep], proba=p[keep])
        assert info.value.row == 2
    scores = np.array([[0.0, NAN], [INF, -INF], [-INF, 1.0], [1.0, 2.0]], dtype=dtype)
    labels = np.array([[1, 0], [1, 0], [0, 1], [1, 1]])
    with pytest.warns(OmittedRowsWarning):
        m = fastce.evaluate(labels, logits=scores, nan_policy="omit")
    assert (m.n, m.n_omitted) == (3, 1) and math.isfinite(m.cross_entropy)


def test_two_class_plus_inf_in_column_1_is_non_finite():
    """The issue's example, in every door: the row is refused, omitted or NaN, never a number."""
    z = np.array([[0.0, np.inf], [2.0, 1.0], [0.5, -1.0]], np.float32)
    y = np.array([0, 0, 0])
    for row in ([0.0, np.inf], [-np.inf, np.inf]):
        z[0] = row
        with pytest.raises(fastce.InputError) as info:
            fastce.evaluate(y, logits=z)
        assert info.value.row == 0
        with pytest.warns(OmittedRowsWarning):
            m = fastce.evaluate(y, logits=z, nan_policy="omit")
        assert (m.n, m.n_omitted) == (2, 1)
        assert m.cross_entropy == pytest.approx((math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-1.5))) / 2)
        losses = fastce.cross_entropy(z, y, reduction="none", nan_policy="propagate")
        assert math.isnan(losses[0]) and np.isfinite(losses[1:]).all()
        with pytest.raises(fastce.InputError):
            fastce.cross_entropy(z, y)
        ev = fastce.Evaluator(2)
        with pytest.raises(fastce.InputError):
            ev.update(y, z)


# ----------------------------------------------------------------------------- item 2: overflowing sums


def _heavy_case(n_classes: int, same_block: bool):
    """Rows of which two weigh 1e308 (their sum overflows float64), in one block or in two."""
    block = _config.block_rows(n_classes)
    n = 2 * block
    z = np.zeros((n, n_classes))
    z[:, 0] = 5.0
    w = np.ones(n)
    w[[0, 1 if same_block else block]] = 1e308
    return z, np.zeros(n, dtype=np.int64), w


@pytest.mark.parametrize("same_block", [True, False], ids=["one-block", "two-blocks"])
@pytest.mark.parametrize("n_classes", [4, 16384])
def test_weights_whose_sum_overflows_raise(n_classes, same_block):
    """Never weight_sum 1.0 / accuracy 0.0 or "sample_weight sums to zero": an error about the weights."""
    z, y, w = _heavy_case(n_classes, same_block)
    for call in (
        lambda: fastce.evaluate(y, logits=z, sample_weight=w),
        lambda: fastce.evaluate(y, logits=z, sample_weight=w, nan_policy="propagate"),
        lambda: fastce.evaluate(y, proba=np.full_like(z, 1.0 / n_classes), sample_weight=w),
        lambda: fastce.diagnose(y, logits=z, sample_weight=w),
    ):
        with pytest.raises(fastce.InputError, match="sample_weight is too large.*divide sample_weight") as info:
            call()
        assert info.value.argument == "sample_weight"
    ev = fastce.Evaluator(n_classes)
    ev.update(y, z, sample_weight=w)
    with pytest.raises(fastce.InputError, match="sample_weight is too large"):
        ev.result()
    # The advice holds: rescaled weights give the metrics of the same weighted mean.
    m = fastce.evaluate(y, logits=z, sample_weight=w / w.max())
    assert m.accuracy == 1.0 and m.weight_sum == pytest.approx(2.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_classes", [2, 3, 40, 100])
def test_a_weighted_loss_beyond_float64_raises_like_the_weighted_sums(n_classes, dtype):
    """One row's weight times its finite loss overflows, every weight, their sum and every loss finite: counted as
    an infinite loss, evaluate returned inf with no error (the warning said "the means are unaffected");
    diagnose already refused the weights."""
    z = np.zeros((2, n_classes), dtype=dtype)
    z[0, 1] = 2.0  # row 0: label 0, a loss of ~2 to 5
    y = np.array([0, 1])
    w = np.array([1e308, 1.0])
    proba = np.full_like(z, 1.0 / n_classes)
    proba[0] = (1.0 - 1e-6) / (n_classes - 1)
    proba[0, 0] = 1e-6  # row 0's loss ~13.8: times 1e308, beyond float64
    for call in (
        lambda: fastce.evaluate(y, logits=z, sample_weight=w),
        lambda: fastce.evaluate(y, proba=proba, sample_weight=w),
        lambda: fastce.diagnose(y, logits=z, sample_weight=w),
        lambda: fastce.compare(y, logits={"a": z, "b": z[:, ::-1].copy()}, sample_weight=w),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastce.FastCEWarning)  # the error bars' squares overflow too
            with pytest.raises(fastce.InputError, match="sample_weight is too large") as info:
                call()
        assert info.value.argument == "sample_weight"
    m = fastce.evaluate(y, logits=z, sample_weight=w / 1e308)  # the advice
    assert math.isfinite(m.cross_entropy)


@pytest.mark.parametrize("kind", ["logits", "proba"])
def test_a_weighted_loss_beyond_float64_with_one_dimensional_binary_scores(kind):
    # The 1-D binary kernels counted such a row as an infinite loss too: inf and the loss-overflow warning only.
    scores = np.array([4.0, 3.0]) if kind == "logits" else np.array([0.99999, 0.9])
    y = np.array([0, 1])
    w = np.array([5e307, 1.0])
    for call in (fastce.evaluate, fastce.diagnose):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastce.FastCEWarning)
            with pytest.raises(fastce.InputError, match="sample_weight is too large"):
                call(y, **{kind: scores}, sample_weight=w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastce.FastCEWarning)
        with pytest.raises(fastce.InputError, match="sample_weight is too large"):
            fastce.compare(y, **{kind: {"a": scores, "b": scores[::-1].copy()}}, sample_weight=w)
    if kind == "logits":  # an infinite logit on the wrong side is an infinite loss, not a weights error
        assert fastce.evaluate(y, logits=np.array([np.inf, 3.0])).cross_entropy == math.inf


def test_a_class_weighted_loss_beyond_float64():
    z = np.zeros((2, 3), dtype=np.float32)
    z[0, 1] = 2.0
    y = np.array([0, 1])
    weight = np.array([1e308, 1.0, 1.0])
    with pytest.raises(fastce.InputError, match="weight is too large"):
        fastce.cross_entropy(z, y, weight=weight)
    # A sum is inf (as PyTorch's), said: no row's loss is infinite.
    with pytest.warns(fastce.FastCEWarning, match="no row's loss is.*or from weight that large"):
        assert fastce.cross_entropy(z, y, weight=weight, reduction="sum") == math.inf


def test_an_infinite_row_loss_is_still_inf_without_an_error():
    z = np.array([[-np.inf, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = fastce.evaluate([0, 1], logits=z)
        assert m.cross_entropy == math.inf and m.n == 2
        assert fastce.cross_entropy(z, np.array([0, 1]), reduction="sum") == math.inf


def test_weight_sum_just_below_the_float64_maximum_is_fine():
    z = np.array([[3.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    # The means are right; the squared weights behind the error bars overflow: said, not hidden.
    with pytest.warns(fastce.FastCEWarning, match="standard errors are unknown.*sample_weight"):
        m = fastce.evaluate([0, 1, 1], logits=z, sample_weight=[4e307, 4e307, 1.0])
    assert m.weight_sum == pytest.approx(8e307) and m.accuracy == pytest.approx(1.0)
    assert math.isnan(m.stderr["cross_entropy"]) and math.isnan(m.stderr["accuracy"])
    # Weights divided by their maximum: the same means, and error bars.
    scaled = fastce.evaluate([0, 1, 1], logits=z, sample_weight=[1.0, 1.0, 1 / 4e307])
    assert scaled.accuracy == pytest.approx(m.accuracy) and math.isfinite(scaled.stderr["cross_entropy"])


def test_class_weights_whose_sum_overflows_raise():
    z = np.zeros((6, 3))
    y = np.array([0, 0, 0, 1, 2, 0])
    weight = np.array([1e308, 1.0, 1.0])
    with pytest.raises(fastce.InputError, match="weight is too large") as info:
        fastce.cross_entropy(z, y, weight=weight)
    assert info.value.argument == "weight"
    with pytest.raises(fastce.InputError, match="weight is too large"):
        fastce.cross_entropy(z, y, weight=weight, label_smoothing=0.1)
    assert fastce.cross_entropy(z, y, weight=weight / 1e308) == pytest.approx(math.log(3))


def test_multilabel_weights_whose_sum_overflows_raise():
    scores = np.array([[1.0, -1.0], [2.0, 0.5], [-1.0, 1.0]])
    target = np.array([[1, 0], [1, 1], [0, 0]])
    with pytest.raises(fastce.InputError, match="sample_weight is too large"):
        fastce.evaluate(target, logits=scores, sample_weight=[1e308, 1e308, 1.0])


def test_multilabel_means_when_the_weights_times_the_columns_overflow():
    # weight_sum * n_columns beyond float64 with every weighted sum finite: every mean was 0.0 (x / inf).
    # A row's loss sum (0.75) and hits (1) times 1e308 stay finite; its two columns' weights do not.
    scores = np.array([[-3.0, -0.01], [-3.0, -0.01]])
    target = np.array([[0, 1], [0, 1]])
    with pytest.warns(fastce.FastCEWarning, match="exactly one 1 among 2 columns"):  # one-hot rows, as multi-label
        expected = fastce.evaluate(target, logits=scores, task="multilabel")
    for w in ([1e308, 1.0], [1e308, 0.0]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastce.FastCEWarning)  # the error bars' squares overflow
            m = fastce.evaluate(target, logits=scores, sample_weight=w, task="multilabel")
        assert m.cross_entropy == pytest.approx(expected.cross_entropy, rel=1e-15)
        assert m.hamming_accuracy == expected.hamming_accuracy == 0.5
        assert m.brier == pytest.approx(expected.brier, rel=1e-15)


def test_fold_blocks_reports_every_non_finite_block_sum():
    """The exact accumulator cannot hold inf / NaN: fold_blocks counts each one, the door refuses."""
    n_topk = 2
    for column in (K.F_WEIGHT, K.F_BRIER, K.F_TOPK, K.F_TOPK + 1):
        for bad in (np.inf, np.nan):
            state = fastce.State.empty(3, (1, 2))
            fsums = np.ones((3, K.fsums_columns(n_topk)))
            fsums[:, K.F_MIN], fsums[:, K.F_MAX] = 0.0, 1.0
            fsums[1, column] = bad
            icounts = np.zeros((3, K.NUM_ICOUNTS), dtype=np.int64)
            icounts[:, K.FIRST_NONFINITE :] = -1
            icounts[:, K.C_ROWS] = 10
            K.fold_blocks(fsums, icounts, 3, 100, 10, state.sums, state.minmax, state.counts)
            state.rows_seen = 130  # as the driver sets it: rows 100..129 were read
            assert state.count("overflowed_blocks") == 1
            assert state.count("first_overflowed_row") == 110  # the bad block's first row
            assert math.isnan(state.weight_sum) and math.isnan(state.brier_sum)
            with pytest.raises(fastce.InputError, match="from row 110"):
                state.finalize()
            # ... and the count survives merging and JSON
            again = fastce.State.from_dict(state.to_dict()).merge(fastce.State.empty(3, (1, 2)))
            assert again.count("overflowed_blocks") == 1
            with pytest.raises(fastce.InputError):
                again.finalize()


def test_family_sums_keep_non_finite_block_sums():
    """_accumulate_family: a column whose block sum overflowed reads inf, never the other blocks' sum."""
    from fastce import _accumulate_family as AF
    from fastce import kernels_binary as KB

    scores = np.zeros((4, 2))
    target = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    sums = AF.accumulate_bce(scores, target, from_logits=True, row_weight=np.array([1e308, 1e308, 1.0, 1.0]))
    assert sums.nonfinite[KB.S_WEIGHT] == 1 and sums.value(KB.S_WEIGHT) == math.inf
    assert sums.weighted_sums_overflow((KB.S_WEIGHT,))
    merged = sums.merge(AF.accumulate_bce(scores, target, from_logits=True))
    assert merged.value(KB.S_WEIGHT) == math.inf and merged.nonfinite[KB.S_WEIGHT] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = AF.accumulate_bce(scores, target, from_logits=True, row_weight=np.ones(4))
    assert not clean.nonfinite.any() and clean.value(KB.S_WEIGHT) == 4.0


@pytest.mark.parametrize("two_columns", [False, True], ids=["binary", "two-class"])
def test_losses_whose_sum_overflows_say_so(two_columns):
    """Finite per-row losses near 1e308 whose block sum leaves float64's range: cross_entropy is inf (as the
    state has always made it), with a warning that says why, and the standard errors' warning no longer
    claims the means are unaffected.  A real infinite loss gives inf without that warning."""
    y = np.array([0, 0, 1])
    z = np.array([1.7e308, 1.7e308, 1.0])
    if two_columns:
        z = np.stack([np.zeros(3), z], axis=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = fastce.evaluate(y, logits=z)
    messages = [str(w.message) for w in caught]
    assert m.cross_entropy == math.inf
    assert any("cross_entropy is inf, but no row's loss is" in text for text in messages), messages
    assert not any("the means are unaffected" in text for text in messages), messages
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = fastce.evaluate(np.array([0, 1]), logits=np.array([np.inf, 1.0]) if not two_columns
                            else np.array([[-np.inf, 0.0], [0.0, 1.0]]))
    assert m.cross_entropy == math.inf and not caught  # an infinite loss: no overflow to report


def _overflow_cases():
    """(door, call) pairs whose every row's (element's) loss is finite, near 1e307, but whose sum is not."""
    rng = np.random.default_rng(9)
    z = rng.normal(size=(40, 5)) * 3e307
    y = rng.integers(0, 5, 40)
    soft = np.eye(5)[y] * 0.9 + 0.02
    hits = (rng.uniform(size=(40, 5)) < 0.5).astype(np.uint8)
    return {
        "evaluate multiclass": lambda: fastce.evaluate(y, logits=z).cross_entropy,
        "evaluate soft": lambda: fastce.evaluate(soft, logits=z).cross_entropy,
        "evaluate multilabel": lambda: fastce.evaluate(hits, logits=z).cross_entropy,
        "cross_entropy mean": lambda: fastce.cross_entropy(z, y),
        "cross_entropy sum": lambda: fastce.cross_entropy(z, y, reduction="sum"),
        "cross_entropy soft": lambda: fastce.cross_entropy(z, soft),
        # Smoothing sums every class's log-probability into a row: rows near 1e308 would themselves be infinite.
        "cross_entropy smoothing": lambda: fastce.cross_entropy(z / 6, y, label_smoothing=0.1),
        "bce_with_logits": lambda: fastce.binary_cross_entropy_with_logits(z, hits.astype(np.float64)),
    }


@pytest.mark.parametrize("door", list(_overflow_cases()))
def test_every_door_says_when_finite_losses_sum_past_float64(door):
    # The soft-target and multi-label means and the PyTorch-style functions returned this inf without a word,
    # where evaluate's multi-class and binary results warned.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _overflow_cases()[door]() == math.inf
    said = [w for w in caught if "is inf, but no row's loss is" in str(w.message)]
    assert len(said) == 1 and said[0].category is FastCEWarning, [str(w.message) for w in caught]


def test_soft_targets_whose_class_weights_push_the_sum_past_float64():
    rng = np.random.default_rng(8)
    z, y = rng.normal(size=(40, 5)), rng.integers(0, 5, 40)
    soft = np.eye(5)[y] * 0.9 + 0.02
    weight = np.full(5, 1e307)
    assert np.isfinite(fastce.cross_entropy(z, soft, weight=weight, reduction="none")).all()
    with pytest.warns(FastCEWarning, match="or from weight that large"):
        assert fastce.cross_entropy(z, soft, weight=weight) == math.inf
    # Class indices (and label smoothing) divide by the weights' sum, which overflows too: no mean to give.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for call in (lambda: fastce.cross_entropy(z, y, weight=weight),
                     lambda: fastce.cross_entropy(z, y, weight=weight, label_smoothing=0.1)):
            with pytest.raises(InputError, match="weight is too large"):
                call()


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_diagnose_names_the_scores_not_absent_weights_when_losses_overflow(task):
    # Without weights diagnose said "sample_weight is too large" and told the user to rescale weights never given.
    z = np.tile([1e306, -1e306], (200, 1))
    y = np.ones(200, dtype=np.int64) if task == "multiclass" else np.tile([0.0, 1.0], (200, 1))
    with pytest.raises(InputError, match="losses are so large") as caught:
        fastce.diagnose(y, logits=z)
    assert caught.value.argument == "scores" and "sample_weight" not in str(caught.value)
    # With weights the losses are still to blame when they overflow without them: dividing the weights (what the
    # weights' error advises) cannot help; weights of 1 were blamed.
    for weight in (1.0, 2.0):
        with pytest.raises(InputError, match="losses are so large"):
            fastce.diagnose(y, logits=z, sample_weight=np.full(200, weight))
    with pytest.raises(InputError, match="sample_weight is too large"):
        fastce.diagnose(y, logits=np.clip(z, -3.0, 3.0), sample_weight=np.full(200, 1e307))
