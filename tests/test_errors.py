"""Bad input gives a clear InputError (a ValueError) naming the argument, the value and the row.

Every case runs on read-only arrays and checks that the caller's arrays are
unchanged afterwards.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from support import readonly

import fastce
from fastce import InputError

N, C = 6, 3


def base():
    logits = np.array(
        [[2.0, 1.0, 0.0], [0.5, 0.5, 3.0], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [4.0, 2.0, 1.0], [-1.0, 2.0, 0.5]]
    )
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"y_true": np.array([0, 2, 0, 1, 0, 1]), "logits": logits, "proba": proba, "weights": np.ones(N)}


def _with(array, index, value, dtype=None):
    out = np.array(array, dtype=dtype)
    out[index] = value
    return out


def _evaluate_case(y=None, logits=None, proba=None, **kw):
    b = base()
    args = {"y_true": b["y_true"] if y is None else y}
    if proba is not None:
        args["proba"] = proba
    elif logits is not None:
        args["logits"] = logits
    else:
        args["logits"] = b["logits"]
    args.update(kw)
    return args


B = base()

# (id, kwargs for fastce.evaluate, regex the message must match, argument, row)
EVALUATE_CASES = [
    ("label-too-big", _evaluate_case(y=_with(B["y_true"], 3, 7)), r"y_true row 3 is 7\b.*0\.\.2", "y_true", 3),
    ("label-negative", _evaluate_case(y=_with(B["y_true"], 2, -1)), r"y_true row 2 is -1\b.*0\.\.2", "y_true", 2),
    (
        "label-int-min",
        _evaluate_case(y=_with(B["y_true"], 5, np.iinfo(np.int64).min)),
        r"y_true row 5 is -9223372036854775808",
        "y_true",
        5,
    ),
    (
        "label-uint64-max",
        _evaluate_case(y=_with(B["y_true"], 1, np.iinfo(np.uint64).max, dtype=np.uint64)),
        r"y_true row 1 is 18446744073709551615",
        "y_true",
        1,
    ),
    ("labels-one-based", _evaluate_case(y=B["y_true"] + 1), r"y_true row 1 is 3\b.*subtract 1", "y_true", 1),
    (
        "label-float-fraction",
        _evaluate_case(y=_with(B["y_true"], 4, 1.5, dtype=np.float64)),
        r"y_true.*integer.*row 4 is 1\.5\.",
        "y_true",
        4,
    ),
    (
        "label-float-nan",
        _evaluate_case(y=_with(B["y_true"], 2, np.nan, dtype=np.float32)),
        r"y_true.*row 2 is .*nan",
        "y_true",
        2,
    ),
    ("label-float-dtype", _evaluate_case(y=B["y_true"].astype(np.float64)), r"y_true has dtype float64.*astype", "y_true", None),
    ("label-strings", _evaluate_case(y=np.array(list("abcabc"))), r"y_true has dtype <U1", "y_true", None),
    ("label-none", _evaluate_case(y=None) | {"y_true": None}, r"y_true is required", "y_true", None),
    ("labels-too-many", _evaluate_case(y=np.zeros(N + 1, dtype=int)), r"y_true has 7 rows but the scores have 6", "y_true", None),
    ("labels-too-few", _evaluate_case(y=np.zeros(N - 2, dtype=int)), r"y_true has 4 rows but the scores have 6", "y_true", None),
    ("labels-2d", _evaluate_case(y=np.zeros((N, 2), dtype=int)), r"y_true has shape \(6, 2\) but the scores have shape \(6, 3\)", "y_true", None),
    ("labels-0d", _evaluate_case(y=np.int64(1)), r"y_true must be a 1-D array", "y_true", None),
    # 1-D logits are a binary task: labels must be 0/1
    ("logits-1d", _evaluate_case(logits=B["logits"][:, 0]), r"y_true row 1 is 2, outside the valid class indices 0\.\.1", "y_true", 1),
    ("logits-3d", _evaluate_case(logits=B["logits"][:, :, None]), r"y_true has shape \(6,\) but logits has shape \(6, 3, 1\): with the class axis last", "y_true", None),
    ("logits-no-rows", _evaluate_case(y=np.zeros(0, dtype=int), logits=np.zeros((0, 3))), r"logits is empty", "logits", None),
    ("logits-no-classes", _evaluate_case(logits=np.zeros((N, 0))), r"logits is empty", "logits", None),
    ("logits-complex", _evaluate_case(logits=B["logits"].astype(complex)), r"logits has dtype complex128", "logits", None),
    ("logits-object", _evaluate_case(logits=B["logits"].astype(object)), r"logits has dtype object", "logits", None),
    ("logits-ragged", _evaluate_case(logits=[[1.0, 2.0], [3.0]]), r"logits could not be read", "logits", None),
    ("logits-nan", _evaluate_case(logits=_with(B["logits"], (4, 1), np.nan)), r"logits row 4 holds NaN or \+inf.*nan_policy='omit'", "logits", 4),
    ("logits-posinf", _evaluate_case(logits=_with(B["logits"], (2, 0), np.inf)), r"logits row 2 holds NaN or \+inf", "logits", 2),
    ("logits-all-neginf", _evaluate_case(logits=_with(B["logits"], 5, -np.inf)), r"logits row 5 holds .*only -inf", "logits", 5),
    ("logits-nan-f32", _evaluate_case(logits=_with(B["logits"], (1, 2), np.nan, dtype=np.float32)), r"logits row 1\b", "logits", 1),
    ("logits-nan-f16", _evaluate_case(logits=_with(B["logits"], (3, 0), np.nan, dtype=np.float16)), r"logits row 3\b", "logits", 3),
    ("logits-inf-f16", _evaluate_case(logits=_with(B["logits"], (0, 0), np.inf, dtype=np.float16)), r"logits row 0\b", "logits", 0),
    ("proba-nan", _evaluate_case(proba=_with(B["proba"], (3, 1), np.nan)), r"proba row 3 holds NaN", "proba", 3),
    ("proba-neginf", _evaluate_case(proba=_with(B["proba"], (1, 2), -np.inf)), r"proba row 1 holds NaN or an infinite value", "proba", 1),
    ("proba-above-1", _evaluate_case(proba=_with(B["proba"], (1, 0), 3.0)), r"proba row 1 holds a value above 1.*logits=", "proba", 1),
    ("proba-below-0", _evaluate_case(proba=_with(B["proba"], (4, 2), -0.25)), r"proba row 4 holds a value below 0.*logits=", "proba", 4),
    ("proba-are-logits", _evaluate_case(proba=B["logits"]), r"proba row 0 holds a value (above 1|below 0).*pass them as logits=", "proba", 0),
    ("both-scores", _evaluate_case(proba=B["proba"]) | {"logits": B["logits"]}, r"exactly one of logits=.*proba=.*both", "logits/proba", None),
    ("no-scores", {"y_true": B["y_true"]}, r"exactly one of logits=.*proba=.*neither", "logits/proba", None),
    ("weight-negative", _evaluate_case(sample_weight=_with(B["weights"], 2, -1.0)), r"sample_weight row 2 is -1\.0; .*non-negative", "sample_weight", 2),
    ("weight-nan", _evaluate_case(sample_weight=_with(B["weights"], 5, np.nan)), r"sample_weight row 5 is .*nan.*finite", "sample_weight", 5),
    ("weight-inf", _evaluate_case(sample_weight=_with(B["weights"], 0, np.inf)), r"sample_weight row 0 is .*inf.*finite", "sample_weight", 0),
    ("weight-neg-int", _evaluate_case(sample_weight=_with(B["weights"], 3, -2, dtype=np.int64)), r"sample_weight row 3 is .*-2", "sample_weight", 3),
    ("weight-shape", _evaluate_case(sample_weight=np.ones(N + 1)), r"sample_weight must have shape \(6,\).*\(7,\)", "sample_weight", None),
    ("weight-2d", _evaluate_case(sample_weight=np.ones((N, 1))), r"sample_weight must have shape \(6,\)", "sample_weight", None),
    ("weight-strings", _evaluate_case(sample_weight=np.array(list("abcdef"))), r"sample_weight has dtype", "sample_weight", None),
    ("weight-all-zero", _evaluate_case(sample_weight=np.zeros(N)), r"sample_weight sums to zero", "sample_weight", None),
    ("nan-policy", _evaluate_case(nan_policy="ignore"), r"nan_policy='ignore' is not one of", "nan_policy", None),
    ("top-k-zero", _evaluate_case(top_k=(1, 0)), r"top_k values must be >= 1; got 0", "top_k", None),
    ("top-k-garbage", _evaluate_case(top_k="ab"), r"top_k must be an int or a sequence of ints", "top_k", None),
    ("top-k-string-digit", _evaluate_case(top_k="3"), r"top_k must be an int or a sequence of ints", "top_k", None),
    ("top-k-float", _evaluate_case(top_k=(1, 2.7)), r"top_k must be an int or a sequence of ints.*2\.7", "top_k", None),
    ("top-k-huge", _evaluate_case(top_k=10**20), r"top_k values must be at most", "top_k", None),
]


def _freeze(kwargs):
    """Read-only copies of every array argument, plus pristine copies to compare with."""
    frozen, pristine = {}, {}
    for key, value in kwargs.items():
        if isinstance(value, np.ndarray):
            value = readonly(value.copy())
        frozen[key] = value
        pristine[key] = copy.deepcopy(value)
    return frozen, pristine


def _assert_unchanged(frozen, pristine):
    for key, value in frozen.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == pristine[key].dtype
            assert np.array_equal(value, pristine[key], equal_nan=value.dtype.kind in "fc"), key
        else:
            assert value == pristine[key] or value is pristine[key], key


@pytest.mark.parametrize("case_id,kwargs,pattern,argument,row", EVALUATE_CASES, ids=[c[0] for c in EVALUATE_CASES])
def test_evaluate_bad_input(case_id, kwargs, pattern, argument, row):
    frozen, pristine = _freeze(kwargs)
    with warnings.catch_warnings():
        # no fastce or numpy warning on the way to the error
        warnings.simplefilter("error", fastce.FastCEWarning)
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(InputError, match=pattern) as info:
            fastce.evaluate(**frozen)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.argument == argument
    assert err.row == row
    message = str(err)
    if row is not None:
        assert f"row {row}" in message
    for name in argument.split("/"):
        assert name in message
    _assert_unchanged(frozen, pristine)


def test_error_row_is_the_first_bad_one_in_a_long_array(rng):
    n = 100_000
    logits = readonly(rng.normal(size=(n, 4)))
    y = rng.integers(0, 4, size=n)
    y[[98_765, 99_999]] = 4
    with pytest.raises(InputError, match=r"y_true row 98765 is 4\b"):
        fastce.evaluate(readonly(y), logits=logits)
    x = logits.copy()
    x[[77_777, 12_345 + 50_000]] = np.nan
    with pytest.raises(InputError, match=r"logits row 62345\b") as info:
        fastce.evaluate(y % 4, logits=readonly(x))
    assert info.value.row == 62345


def test_proba_error_reports_first_row_of_each_kind():
    p = np.full((5, 2), 0.5)
    p[3] = [1.5, -0.5]
    p[1] = [0.7, 0.3]
    with pytest.raises(InputError, match=r"proba row 3 holds a value below 0") as info:
        fastce.evaluate([0, 1, 0, 1, 0], proba=readonly(p))
    assert "-0.5" in str(info.value)


def test_omit_does_not_hide_other_errors():
    x = np.array([[np.nan, 0.0], [0.0, 1.0]])
    with pytest.raises(InputError, match="y_true row 1 is 2"):
        fastce.evaluate([0, 2], logits=readonly(x), nan_policy="omit")
    with pytest.raises(InputError, match="sample_weight row 0"):
        fastce.evaluate([0, 1], logits=readonly(x), sample_weight=[-1.0, 1.0], nan_policy="omit")


def test_error_message_says_how_to_fix():
    with pytest.raises(InputError) as info:
        fastce.evaluate([0, 1], logits=np.array([[np.nan, 1.0], [0.0, 1.0]]))
    assert "nan_policy='omit'" in str(info.value) and "nan_policy='propagate'" in str(info.value)
    with pytest.raises(InputError) as info:
        fastce.evaluate([0, 1], proba=np.array([[5.0, 1.0], [0.0, 1.0]]))
    assert "logits=" in str(info.value)
    with pytest.raises(InputError) as info:
        fastce.evaluate(np.array([0.0, 1.0]), logits=np.zeros((2, 2)))
    assert "astype" in str(info.value)


# -- cross_entropy ---------------------------------------------------------------

X = B["logits"]
T = B["y_true"]

CE_CASES = [
    ("target-too-big", dict(input=X, target=_with(T, 4, 3)), r"target row 4 is 3\b", "target", 4),
    ("target-negative", dict(input=X, target=_with(T, 1, -1)), r"target row 1 is -1\b", "target", 1),
    ("target-neg-not-ignore", dict(input=X, target=_with(T, 1, -100), ignore_index=-1), r"target row 1 is -100\b", "target", 1),
    ("target-float", dict(input=X, target=_with(T, 0, 0.5, dtype=float)), r"target.*row 0 is", "target", 0),
    ("target-length", dict(input=X, target=T[:-1]), r"target has 5 rows but the scores have 6", "target", None),
    ("input-1d", dict(input=X[0], target=T[:1]), r"input must have shape", "input", None),
    ("input-nan", dict(input=_with(X, (3, 2), np.nan), target=T), r"input row 3 holds NaN", "input", 3),
    ("input-empty", dict(input=np.zeros((0, 3)), target=np.zeros(0, dtype=int)), r"input is empty", "input", None),
    ("weight-shape", dict(input=X, target=T, weight=np.ones(C + 1)), r"weight must have shape \(3,\)", "weight", None),
    ("weight-nan", dict(input=X, target=T, weight=_with(np.ones(C), 1, np.nan)), r"weight\[1\] is nan; .*finite", "weight", None),
    ("weight-inf", dict(input=X, target=T, weight=_with(np.ones(C), 2, np.inf)), r"weight\[2\] is .*inf", "weight", None),
    ("reduction", dict(input=X, target=T, reduction="avg"), r"reduction='avg' is not one of", "reduction", None),
    ("ignore-index-float", dict(input=X, target=T, ignore_index=-100.0), r"ignore_index must be an int64", "ignore_index", None),
    ("ignore-index-huge", dict(input=X, target=T.astype(np.uint64), ignore_index=2**64 - 1), r"ignore_index must be an int64", "ignore_index", None),
    ("nan-policy", dict(input=X, target=T, nan_policy="skip"), r"nan_policy='skip'", "nan_policy", None),
]


@pytest.mark.parametrize("case_id,kwargs,pattern,argument,row", CE_CASES, ids=[c[0] for c in CE_CASES])
def test_cross_entropy_bad_input(case_id, kwargs, pattern, argument, row):
    frozen, pristine = _freeze(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastce.FastCEWarning)
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(InputError, match=pattern) as info:
            fastce.cross_entropy(**frozen)
    assert isinstance(info.value, ValueError)
    assert info.value.argument == argument and info.value.row == row
    _assert_unchanged(frozen, pristine)


# -- successful calls never write to their inputs ------------------------------


@pytest.mark.parametrize("nan_policy", ["raise", "omit", "propagate"])
def test_successful_calls_do_not_mutate(rng, nan_policy):
    x = rng.normal(size=(500, 7))
    if nan_policy != "raise":
        x[10, 3] = np.nan
    y = rng.integers(0, 7, size=500).astype(np.int16)
    w = rng.uniform(0, 1, size=500).astype(np.float32)
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    arrays = {"x": x, "y": y, "w": w, "p": p}
    pristine = {k: v.copy() for k, v in arrays.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastce.OmittedRowsWarning)
        fastce.evaluate(y, logits=x, sample_weight=w, top_k=(1, 3), nan_policy=nan_policy)
        fastce.evaluate(y, proba=p, sample_weight=w, top_k=(1, 3), nan_policy=nan_policy)
        fastce.cross_entropy(x, y, weight=np.ones(7), reduction="none", nan_policy=nan_policy)
    for key, value in arrays.items():
        assert np.array_equal(value, pristine[key], equal_nan=True), key
        assert value.flags.writeable  # flags untouched too


# -- hints that must be right: swapped arguments, unbatched rows, meaningless top-k --------------


def _swap_data():
    rng = np.random.default_rng(5)
    return rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 4, 8)


def test_evaluator_update_in_pytorch_order_says_the_arguments_are_swapped():
    z, y = _swap_data()
    with pytest.raises(InputError, match=r"shape \(8, 4\): the arguments look swapped\. Evaluator\.update\(y_true, scores\)") as info:
        fastce.Evaluator(4).update(z, y)
    assert "reshape(-1, 1)" not in str(info.value)


def test_cross_entropy_in_scikit_learn_order_says_the_arguments_are_swapped():
    z, y = _swap_data()
    with pytest.raises(InputError, match=r"arguments look swapped\. cross_entropy\(input, target\) takes them") as info:
        fastce.cross_entropy(y, z)
    assert info.value.argument == "input" and "reshape(-1, 1)" not in str(info.value)


def test_one_unbatched_row_gets_the_batch_of_one_advice():
    z, y = _swap_data()
    for call in (lambda: fastce.cross_entropy(z[0], y[0]), lambda: fastce.Evaluator(4).update(y[0], z[0])):
        with pytest.raises(InputError, match=r"unbatched form .* x\[None\] \(shape \(1, C\)\)") as info:
            call()
        assert "reshape(-1, 1)" not in str(info.value)


def test_one_dimensional_scores_get_the_binary_advice():
    z, y = _swap_data()
    with pytest.raises(InputError, match=r"use fastce\.evaluate, which takes them, or pass both columns") as info:
        fastce.Evaluator(4).update(y, z[:, 0])
    assert "reshape(-1, 1)" not in str(info.value)


SKLEARN_K = r"'k' \(4\) greater than or equal to 'n_classes' \(4\) will result in a perfect score and is therefore meaningless"


@pytest.mark.parametrize("door", ["evaluate", "diagnose", "Evaluator"])
def test_top_k_at_least_the_class_count_warns_once_per_call(door):
    z, y = _swap_data()
    with pytest.warns(fastce.TopKWarning, match=SKLEARN_K) as caught:
        if door == "Evaluator":
            ev = fastce.Evaluator(4, top_k=(1, 2, 4, 9))
            for _ in range(3):
                ev.update(y, z)
            result = ev.result()
        else:
            result = getattr(fastce, door)(y, logits=z, top_k=(1, 2, 4, 9))
            result = getattr(result, "metrics", result)
    assert len(caught) == 1 and caught[0].filename == __file__  # once, naming the caller's line
    assert "top_k=[4, 9] with 4 classes" in str(caught[0].message)
    assert result.top_k_accuracy[4] == result.top_k_accuracy[9] == 1.0  # still computed, as scikit-learn does
    assert issubclass(fastce.TopKWarning, UserWarning)


def test_top_k_below_the_class_count_and_state_round_trips_do_not_warn():
    z, y = _swap_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastce.evaluate(y, logits=z, top_k=(1, 3))
        fastce.evaluate(np.zeros(3, np.int64), logits=np.zeros((3, 1)))  # accuracy with one class: not a top-k ask
        with pytest.warns(fastce.TopKWarning):
            ev = fastce.Evaluator(4, top_k=5)
        ev.update(y, z)
        fastce.Evaluator.from_state_dict(ev.state_dict()).result()  # warned when made, not when loaded


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, -1.0, -5e-324])
def test_large_weights_are_checked_in_parallel_chunks_and_the_first_bad_row_is_named(bad):
    """sample_weight of over 2**20 rows is checked a chunk per thread (min and max, no full-size mask): a bad value
    in the first, a middle or the last chunk is found and named; -0.0 and 0.0 are weights."""
    from fastce import validation

    n = 9 * (1 << 17) + 5  # past the chunked size, with a short last chunk
    weights = np.random.default_rng(7).random(n)
    weights[[3, n // 2]] = [-0.0, 0.0]
    assert validation.sample_weight(weights, n) is weights
    for row in (0, 131_071, 131_072, n // 2 + 1, n - 1):
        spoiled = weights.copy()
        spoiled[row] = bad
        if row != n - 1:
            spoiled[n - 1] = np.nan  # a later bad row too: the first is named
        with pytest.raises(InputError, match=rf"sample_weight row {row} is ") as info:
            validation.sample_weight(spoiled, n)
        assert info.value.row == row


def test_errors_about_sequences_name_the_position_not_only_the_flattened_row():
    # (..., C) scores are read as one row per position: "logits row 107" of (4, 50, 10) logits sent users to
    # compute 107 = 2 * 50 + 7 themselves.  In place or slab by slab, one call or a stream's batch.
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 50, 10)).astype(np.float32)
    y = rng.integers(0, 10, size=(4, 50))

    def slabs(a):  # the same values, in an array whose positions do not flatten in place
        return np.ascontiguousarray(a.transpose(1, 0, 2)).transpose(1, 0, 2)

    bad_label = y.copy()
    bad_label[3, 11] = 12
    weights = np.ones((4, 50))
    weights[1, 9] = -1.0
    nan = z.copy()
    nan[2, 7, 3] = np.nan
    for layout in (np.asarray, slabs):
        scores, with_nan = layout(z), layout(nan)
        if layout is slabs:
            with pytest.raises(ValueError):
                np.reshape(with_nan, (-1, 10), copy=False)
        cases = [
            (lambda: fastce.evaluate(y, logits=with_nan), "logits position (2, 7) (row 107 of the 200 positions) holds",
             107, (2, 7)),
            (lambda: fastce.diagnose(y, logits=with_nan), "logits position (2, 7)", 107, (2, 7)),
            (lambda: fastce.evaluate(bad_label, logits=scores), "y_true position (3, 11) (row 161 of the 200", 161,
             (3, 11)),
            (lambda: fastce.evaluate(y, logits=scores, sample_weight=weights), "sample_weight position (1, 9)", 59,
             (1, 9)),
        ]
        stream = fastce.Evaluator(10)
        stream.update(y[0, :30], z[0, :30])
        cases.append((lambda: stream.update(y, with_nan), "scores position (2, 7) of this batch (row 137 of the stream)",
                      137, (2, 7)))
        for call, text, row, position in cases:
            with pytest.raises(InputError) as caught:
                call()
            assert text in str(caught.value)
            assert caught.value.row == row and caught.value.position == position
    deep = rng.normal(size=(2, 3, 5, 4))
    deep[1, 2, 4, 0] = np.inf
    with pytest.raises(InputError, match=r"logits position \(1, 2, 4\) \(row 29 of the 30 positions\)"):
        fastce.evaluate(rng.integers(0, 4, size=(2, 3, 5)), logits=deep)


def test_bad_multilabel_and_soft_targets_name_the_value_and_its_column():
    # The kernels count a bad target row; its message said "holds a value outside [0, 1]" with value=None,
    # where the README promises the offending value (auto-inferred evaluate already said "holds 1.5 in column 1").
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4, 3))
    y = np.array([[0, 1, 0], [1, 1, 0], [0, 1.5, 1], [1, 0, 0]])
    for call, target_name in ((lambda: fastce.evaluate(y, logits=z, task="multilabel"), "y_true"),
                              (lambda: fastce.binary_cross_entropy_with_logits(z, y), "target")):
        with pytest.raises(InputError, match=rf"{target_name} row 2 holds 1.5 in column 1, outside \[0, 1\]") as caught:
            call()
        assert caught.value.value == 1.5 and caught.value.row == 2
    q = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.5, -0.25, 0.75], [1.0, 0.0, 0.0]])
    with pytest.raises(InputError, match=r"y_true row 2 holds -0.25 in column 1, not a probability") as caught:
        fastce.evaluate(q, logits=z, task="soft")
    assert caught.value.value == -0.25
    stream = fastce.Evaluator(3, task="multilabel")
    stream.update(y[:2], z[:2])
    with pytest.raises(InputError, match=r"y_true row 2 holds 1.5 in column 1, outside"):
        stream.update(y[2:], z[2:])


def test_labels_and_scores_passed_the_other_way_round_are_named_as_swapped():
    # With 1-D labels given as the scores (the binary task) and (n, C) scores as y_true, the message said "For
    # one-hot targets pass labels.argmax(axis=1)": wrong twice (swapped, and one-hot targets are taken as they are).
    rng = np.random.default_rng(0)
    z = rng.normal(size=(100, 5))
    y = rng.integers(0, 5, size=100)
    for call in (lambda: fastce.evaluate(z, logits=y.astype(float)), lambda: fastce.diagnose(z, logits=y * 1.0),
                 lambda: fastce.Evaluator().update(z, y * 1.0)):
        with pytest.raises(InputError, match=r"swapped \(passed the other way round\), swap them back") as caught:
            call()
        assert "argmax" not in str(caught.value)


def test_a_two_column_target_of_the_wrong_width_is_not_called_swapped():
    # The "swapped" text is for 1-D scores beside a 2-D y_true; cross_entropy(input, target) with a target of
    # the wrong width had been told "fastce takes y_true first, the scores as logits=" (it takes input first).
    rng = np.random.default_rng(0)
    with pytest.raises(InputError) as caught:
        fastce.cross_entropy(rng.normal(size=(20, 4)), rng.uniform(size=(20, 5)))
    assert "swap" not in str(caught.value)
