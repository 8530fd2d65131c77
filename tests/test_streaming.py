"""fastce.Evaluator: any split into updates and any merge tree give evaluate's numbers."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastce
from fastce import _config
from fastce.errors import FastCEWarning, InputError, OmittedRowsWarning
from fastce.streaming import Evaluator


def _data(n, c, seed=0, dtype=np.float32, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, c)) * scale).astype(dtype)
    labels = rng.integers(0, c, size=n)
    weights = rng.random(n)
    return logits, labels, weights


def _random_splits(n, rng, max_size):
    cuts = [0]
    while cuts[-1] < n:
        cuts.append(min(n, cuts[-1] + int(rng.integers(0, max_size + 1))))
    return list(itertools.pairwise(cuts))


def _proba(logits):
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _assert_close(a, b, rel=1e-12):
    assert a.n == b.n and a.n_omitted == b.n_omitted
    for name in ("weight_sum", "cross_entropy", "accuracy"):
        assert math.isclose(getattr(a, name), getattr(b, name), rel_tol=rel), name
    assert a.top_k_accuracy.keys() == b.top_k_accuracy.keys()
    for k in a.top_k_accuracy:
        assert math.isclose(a.top_k_accuracy[k], b.top_k_accuracy[k], rel_tol=rel)


@pytest.mark.parametrize(
    "n, c, dtype, weighted",
    [(20_000, 10, np.float32, False), (9_000, 1000, np.float32, True), (12_345, 37, np.float64, True)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_any_split_is_bit_identical_to_evaluate(n, c, dtype, weighted, seed):
    logits, labels, weights = _data(n, c, seed, dtype)
    w = weights if weighted else None
    expected = fastce.evaluate(labels, logits=logits, sample_weight=w, top_k=(1, 3, 5))
    rng = np.random.default_rng(seed + 10)
    block = _config.block_rows(c)
    for max_size in (1, block + 1, 5 * block + 3, n):
        if max_size == 1:
            splits = _random_splits(300, rng, 1) + [(300, n)]  # one row at a time, then the rest
        else:
            splits = _random_splits(n, rng, max_size)
        ev = Evaluator(c, top_k=(1, 3, 5))
        for lo, hi in splits:
            ev.update(labels[lo:hi], logits[lo:hi], None if w is None else w[lo:hi])
        assert ev.rows_seen == n
        assert ev.result() == expected  # every field, bit for bit


def test_lists_and_empty_batches_are_accepted():
    logits, labels, _ = _data(50, 4)
    ev = Evaluator(4)
    ev.update([], np.empty((0, 4), np.float32))
    ev.update(labels[:10].tolist(), logits[:10].tolist())
    ev.update(labels[10:], logits[10:].astype(np.float64))  # one dtype throughout: bit-identical
    ev.update(np.array([], dtype=np.int64), np.empty((0, 4)))
    # lists become float64: the same values as float32 upcast
    assert ev.result() == fastce.evaluate(labels, logits=logits.astype(np.float64))


def test_mixed_weighted_and_unweighted_batches_weigh_one():
    logits, labels, weights = _data(9000, 20, 3)
    w = weights.copy()
    w[2000:5000] = 1.0
    ev = Evaluator(20)
    ev.update(labels[:2000], logits[:2000], w[:2000])
    ev.update(labels[2000:5000], logits[2000:5000])
    ev.update(labels[5000:], logits[5000:], w[5000:])
    assert ev.result() == fastce.evaluate(labels, logits=logits, sample_weight=w)


def test_probabilities_match_evaluate_and_warn_like_it():
    logits, labels, _ = _data(7000, 12, 4, np.float64)
    proba = _proba(logits)
    proba[100] *= 1.5  # does not sum to one
    proba[100] /= proba[100].max() + 1e-3  # but stays in [0, 1]
    with pytest.warns(FastCEWarning, match="do not sum to 1"):
        expected = fastce.evaluate(labels, proba=proba, top_k=(1, 2))
    ev = Evaluator(12, from_logits=False, top_k=(1, 2))
    for lo, hi in _random_splits(7000, np.random.default_rng(0), 3000):
        ev.update(labels[lo:hi], proba[lo:hi])
    with pytest.warns(FastCEWarning, match=r"first: row 100\)"):
        assert ev.result() == expected


def test_probabilities_outside_unit_interval_raise_at_update_with_global_row():
    logits, labels, _ = _data(300, 5, 5, np.float64)
    proba = _proba(logits)
    ev = Evaluator(5, from_logits=False)
    ev.update(labels[:200], proba[:200])
    bad = proba[200:].copy()
    bad[37] = logits[237]  # logits passed as probabilities
    with pytest.raises(InputError, match="row 237 .*not probabilities") as info:
        ev.update(labels[200:], bad)
    assert info.value.row == 237
    assert ev.rows_seen == 200  # the batch was refused whole


@pytest.mark.parametrize("where", ["closing block", "last of block", "whole block", "held back"])
def test_nan_raises_at_update_naming_the_global_row_and_leaves_the_evaluator_unchanged(where):
    br = _config.block_rows(8)
    fed = 3 * br + 100  # the batch below closes block 3, fills block 4 and leaves 100 rows held back
    row = {"closing block": fed + 5, "last of block": 4 * br - 1, "whole block": 4 * br, "held back": 5 * br + 50}[where]
    logits, labels, _ = _data(fed + 2 * br, 8, 6)
    ev = Evaluator(8)
    ev.update(labels[:br], logits[:br])
    ev.update(labels[br:fed], logits[br:fed])
    batch = logits[fed:].copy()
    batch[row - fed, 5] = np.nan
    before = json.dumps(ev.state_dict())
    with pytest.raises(InputError, match=rf"scores row {row} holds NaN") as info:
        ev.update(labels[fed:], batch)
    assert info.value.row == row
    assert json.dumps(ev.state_dict()) == before
    ev.update(labels[fed:], logits[fed:])
    assert ev.result() == fastce.evaluate(labels, logits=logits)


def test_nan_probabilities_raise_at_update():
    logits, labels, _ = _data(300, 5, 18, np.float64)
    proba = _proba(logits)
    proba[250, 2] = np.nan
    ev = Evaluator(5, from_logits=False)
    ev.update(labels[:200], proba[:200])
    with pytest.raises(InputError, match="scores row 250 holds NaN or an infinite value") as info:
        ev.update(labels[200:], proba[200:])
    assert info.value.row == 250 and ev.rows_seen == 200


def test_nan_in_a_held_back_row_raises_at_its_update():
    logits, labels, _ = _data(100, 8, 7)
    logits[42, 3] = np.inf
    ev = Evaluator(8)
    ev.update(labels[:40], logits[:40])
    with pytest.raises(InputError, match="row 42 holds NaN"):
        ev.update(labels[40:50], logits[40:50])


@pytest.mark.parametrize("policy", ["omit", "propagate"])
def test_nan_policies_omit_and_propagate_match_evaluate(policy):
    logits, labels, _ = _data(10_000, 6, 8)
    logits[[17, 5000, 9999], 2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OmittedRowsWarning)
        expected = fastce.evaluate(labels, logits=logits, nan_policy=policy)
        ev = Evaluator(6, nan_policy=policy)
        for lo, hi in _random_splits(10_000, np.random.default_rng(1), 4000):
            ev.update(labels[lo:hi], logits[lo:hi])
        got = ev.result()
    if policy == "omit":
        assert got == expected and got.n_omitted == 3
    else:
        assert got.n == expected.n and math.isnan(got.cross_entropy) and math.isnan(expected.cross_entropy)


def test_omit_warns_with_the_global_first_row():
    logits, labels, _ = _data(5000, 6, 9)
    logits[4321, 0] = np.nan
    ev = Evaluator(6, nan_policy="omit")
    ev.update(labels[:4000], logits[:4000])
    ev.update(labels[4000:], logits[4000:])
    with pytest.warns(OmittedRowsWarning, match="first: row 4321"):
        assert ev.result().n == 4999


def test_validation_errors_give_global_rows():
    logits, labels, _ = _data(1000, 10, 10)
    ev = Evaluator(10)
    ev.update(labels[:600], logits[:600])
    bad = labels[600:].copy()
    bad[7] = 10
    with pytest.raises(InputError, match=r"y_true row 607 is 10") as info:
        ev.update(bad, logits[600:])
    assert info.value.row == 607 and info.value.argument == "y_true"
    w = np.ones(400)
    w[3] = -1
    with pytest.raises(InputError, match=r"sample_weight row 603 ") as info:
        ev.update(labels[600:], logits[600:], w)
    assert info.value.row == 603
    with pytest.raises(InputError, match="has 11 columns .* num_classes=10"):
        ev.update(labels[:5], np.zeros((5, 11), np.float32))
    with pytest.raises(InputError, match="y_true has 3 rows but the scores have 5"):
        ev.update(labels[:3], logits[:5])
    with pytest.raises(InputError, match="dtype"):
        ev.update(labels[:3], np.array([["a"] * 10] * 3))
    assert ev.rows_seen == 600


def test_constructor_and_result_errors():
    with pytest.raises(InputError, match="num_classes"):
        Evaluator(0)
    with pytest.raises(InputError, match="num_classes"):
        Evaluator(2.5)
    with pytest.raises(InputError, match="nan_policy"):
        Evaluator(3, nan_policy="ignore")
    with pytest.raises(InputError, match="top_k"):
        Evaluator(3, top_k=(0,))
    with pytest.raises(InputError, match="no rows yet"):
        Evaluator(3).result()
    with pytest.warns(fastce.TopKWarning, match="perfect score"):
        ev = Evaluator(3, top_k=5)
    assert ev.top_k == (1, 5) and ev.num_classes == 3 and ev.from_logits and ev.nan_policy == "raise"
    assert "rows_seen=0" in repr(ev)


def _evaluators_for(parts, logits, labels, weights, c, top_k=(1, 3)):
    out = []
    for lo, hi in parts:
        ev = Evaluator(c, top_k=top_k)
        for a, b in _random_splits(hi - lo, np.random.default_rng(lo), 2000):
            ev.update(labels[lo + a : lo + b], logits[lo + a : lo + b], weights[lo + a : lo + b])
        out.append(ev)
    return out


def _merge_tree(evaluators, rng):
    """Merge neighbours in random order until one is left (keeps the row order)."""
    evaluators = list(evaluators)
    while len(evaluators) > 1:
        i = int(rng.integers(0, len(evaluators) - 1))
        evaluators[i : i + 2] = [evaluators[i].merge(evaluators[i + 1])]
    return evaluators[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_trees_of_block_aligned_parts_are_bit_identical(seed):
    c = 100
    block = _config.block_rows(c)
    logits, labels, weights = _data(40 * block + 17, c, seed)
    expected = fastce.evaluate(labels, logits=logits, sample_weight=weights, top_k=(1, 3))
    rng = np.random.default_rng(seed)
    cuts = sorted(set(rng.integers(0, 41, size=6).tolist()) | {0})
    bounds = [b * block for b in cuts] + [len(labels)]
    parts = list(itertools.pairwise(bounds))
    merged = _merge_tree(_evaluators_for(parts, logits, labels, weights, c), rng)
    assert merged.rows_seen == len(labels)
    assert merged.result() == expected


@pytest.mark.parametrize("seed", [3, 4])
def test_merge_trees_of_any_parts_agree_to_1e12(seed):
    c = 30
    logits, labels, weights = _data(30_000, c, seed)
    expected = fastce.evaluate(labels, logits=logits, sample_weight=weights, top_k=(1, 3))
    rng = np.random.default_rng(seed)
    bounds = sorted(set(rng.integers(1, 30_000, size=7).tolist()) | {0, 30_000})
    parts = list(itertools.pairwise(bounds))
    merged = _merge_tree(_evaluators_for(parts, logits, labels, weights, c), rng)
    _assert_close(merged.result(), expected)


def test_merge_with_less_than_a_block_is_exact_and_leaves_other_unchanged():
    logits, labels, _ = _data(5000, 16, 11)
    a, b = Evaluator(16), Evaluator(16)
    a.update(labels[:1234], logits[:1234])
    b.update(labels[1234:1300], logits[1234:1300])
    snapshot = json.dumps(b.state_dict())
    assert a.merge(b) is a
    assert json.dumps(b.state_dict()) == snapshot
    a.update(labels[1300:], logits[1300:])
    assert a.result() == fastce.evaluate(labels, logits=logits)
    assert a.merge(Evaluator(16)).rows_seen == 5000  # merging an empty one changes nothing


def test_merge_refuses_other_settings():
    with pytest.raises(ValueError, match="different settings"):
        Evaluator(3).merge(Evaluator(4))
    with pytest.raises(ValueError, match="different settings"):
        Evaluator(3).merge(Evaluator(3, top_k=(1, 2)))
    with pytest.raises(ValueError, match="different settings"):
        Evaluator(3).merge(Evaluator(3, from_logits=False))
    with pytest.raises(TypeError):
        Evaluator(3).merge(fastce.State.empty(3))


@pytest.mark.parametrize("rows", [0, 3, 600])
def test_merge_refuses_other_diagnostics_options_however_few_rows_other_saw(rows):
    z = np.zeros((rows, 3), np.float32)
    y = np.zeros(rows, np.int64)
    for mine, theirs in ((True, False), (False, True), (True, {"n_bins": 4}), ({"worst_k": 2}, {"worst_k": 3})):
        ev, other = Evaluator(3, diagnostics=mine), Evaluator(3, diagnostics=theirs)
        ev.update(y, z)
        other.update(y, z)
        with pytest.raises(ValueError, match="different settings") as info:
            ev.merge(other)
        names, values = str(info.value).split(": ", 1)
        assert names.endswith("nan_policy, groups, diagnostics)")
        assert values.count("'n_bins'") == (mine is not False) + (theirs is not False)
        assert ev.rows_seen == rows  # unchanged


@pytest.mark.parametrize("kind", ["multiclass", "multilabel-open", "multilabel-auto-classes"])
def test_an_evaluator_with_diagnostics_and_no_rows_merges_either_way(kind):
    # A worker that saw no rows: its diagnostics options (asked for, task still open) against the other's (settled)
    # were compared as objects of two kinds, and the merge refused in both directions.
    rng = np.random.default_rng(4)
    if kind == "multiclass":
        y, z, make = rng.integers(0, 5, 300), rng.standard_normal((300, 5)).astype(np.float32), {}
    else:
        y, z = (rng.random((300, 6)) < 0.3).astype(np.float32), rng.standard_normal((300, 6)).astype(np.float32)
        make = {"task": "multilabel"} if kind == "multilabel-open" else {"num_classes": 6}
    expected = fastce.diagnose(y, logits=z, n_bins=7).to_json()
    for empty_first, reload in itertools.product((False, True), (False, True)):
        full = Evaluator(diagnostics={"n_bins": 7}, **make)
        full.update(y, z)
        empty = Evaluator(diagnostics={"n_bins": 7}, **make)
        a, b = (empty, full) if empty_first else (full, empty)
        if reload:
            a, b = (Evaluator.from_state_dict(json.loads(json.dumps(x.state_dict()))) for x in (a, b))
        assert a.merge(b).report().to_json() == expected
    with pytest.raises(InputError, match="different settings"):
        Evaluator(diagnostics={"n_bins": 8}, **make).merge(full)


def test_state_dict_of_an_evaluator_with_no_rows_keeps_its_diagnostics_options():
    y, z = np.arange(200) % 5, np.random.default_rng(5).standard_normal((200, 5)).astype(np.float32)
    for asked, options in ((True, {}), ({"n_bins": 7, "worst_k": 3}, {"n_bins": 7, "worst_k": 3})):
        state = json.loads(json.dumps(Evaluator(diagnostics=asked).state_dict()))
        assert state["diagnostics"] == {"requested": options}
        resumed = Evaluator.from_state_dict(state)
        resumed.update(y, z)
        assert resumed.report().to_json() == fastce.diagnose(y, logits=z, **options).to_json()
    state = Evaluator(diagnostics=True).state_dict()
    for bad in ({"requested": {"n_bins": 0}}, {"requested": {"colour": 1}}, {"requested": 3}):
        with pytest.raises(InputError, match="malformed"):
            Evaluator.from_state_dict({**state, "diagnostics": bad})
    # Options asked for are saved only while the class count is unknown: with one (2**31) they were built at
    # load, unchecked (64 GiB).
    for classes in (5, 2**31):
        with pytest.raises(InputError, match="must come with their state"):
            Evaluator.from_state_dict({**state, "settings": {**state["settings"], "num_classes": classes}})
    settled = Evaluator(5, diagnostics=True)
    settled.update(y, z)
    with pytest.raises(InputError, match="must come with their state"):
        Evaluator.from_state_dict({**settled.state_dict(), "diagnostics": {"requested": {}}})


def test_diagnostics_of_another_class_count_are_refused_before_anything_is_allocated():
    # settings.num_classes = 2**31 (the largest allowed) with diagnostics of 3 classes built a 64 GiB state first.
    ev = Evaluator(3, diagnostics=True)
    ev.update(np.arange(30) % 3, np.zeros((30, 3), np.float32))
    state = ev.state_dict()
    for classes in (4, 2**31):
        with pytest.raises(InputError, match="number of classes"):
            Evaluator.from_state_dict({**state, "settings": {**state["settings"], "num_classes": classes}})


def test_worst_k_is_bounded_before_anything_is_allocated():
    from fastce.diagnostics import MAX_WORST

    y, z = np.arange(60) % 3, np.zeros((60, 3), np.float32)
    assert len(fastce.diagnose(y, logits=z, worst_k=MAX_WORST).worst) == 60
    for call in (lambda: fastce.diagnose(y, logits=z, worst_k=MAX_WORST + 1),
                 lambda: Evaluator(diagnostics={"worst_k": 2**34}),
                 lambda: fastce.diagnose((np.zeros((60, 3)) < 1).astype(np.float32), logits=z, worst_k=2**34)):
        with pytest.raises(InputError, match="worst_k must be an integer in"):
            call()


def test_merge_numbers_the_other_rows_after_self():
    logits, labels, _ = _data(200, 5, 12)
    logits[150, 1] = np.nan
    a, b = Evaluator(5, nan_policy="omit"), Evaluator(5, nan_policy="omit")
    a.update(labels[:100], logits[:100])
    b.update(labels[100:], logits[100:])
    with pytest.warns(OmittedRowsWarning, match="first: row 150"):
        a.merge(b).result()


def test_self_merge_doubles_the_rows():
    logits, labels, _ = _data(300, 5, 13)
    ev = Evaluator(5)
    ev.update(labels, logits)
    twice = Evaluator(5)
    twice.update(np.concatenate([labels, labels]), np.concatenate([logits, logits]))
    _assert_close(ev.merge(ev).result(), twice.result())


@pytest.mark.parametrize("from_logits", [True, False])
def test_state_dict_is_json_and_resumes_bit_identically(from_logits):
    c = 50
    logits, labels, weights = _data(11_111, c, 14, np.float64)
    scores = logits if from_logits else _proba(logits)
    kwargs = {"logits" if from_logits else "proba": scores}
    expected = fastce.evaluate(labels, sample_weight=weights, top_k=(1, 5), **kwargs)
    ev = Evaluator(c, from_logits=from_logits, top_k=(1, 5))
    ev.update(labels[:5003], scores[:5003], weights[:5003])  # leaves rows of an unfinished block
    assert ev.rows_seen % ev.block_rows != 0
    text = json.dumps(ev.state_dict())
    restored = Evaluator.from_state_dict(json.loads(text))
    assert restored.rows_seen == 5003 and restored.top_k == (1, 5) and restored.from_logits == from_logits
    restored.update(labels[5003:], scores[5003:], weights[5003:])
    assert restored.result() == expected
    # the snapshot did not disturb the original
    ev.update(labels[5003:], scores[5003:], weights[5003:])
    assert ev.result() == expected


def test_state_dict_of_float16_rows_round_trips():
    logits, labels, _ = _data(3000, 40, 15)
    scores = logits.astype(np.float16)
    ev = Evaluator(40)
    ev.update(labels[:1001], scores[:1001])
    restored = Evaluator.from_state_dict(json.loads(json.dumps(ev.state_dict())))
    restored.update(labels[1001:], scores[1001:])
    assert restored.result() == fastce.evaluate(labels, logits=scores)


def test_state_dict_of_held_back_bfloat16_rows_round_trips():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    logits, labels, weights = _data(100, 40, 15)
    ev = Evaluator(40, top_k=(1, 2))
    ev.update(labels, logits.astype(ml_dtypes.bfloat16), weights)  # fewer rows than a block: all held back
    assert ev.rows_seen == 100 < ev.block_rows
    data = ev.state_dict()
    assert data["pending"]["view_dtype"] == "<i2"
    restored = Evaluator.from_state_dict(json.loads(json.dumps(data)))
    assert restored.state_dict() == data
    # a second batch still fits the block: held back too, checked by the numpy pre-test (no kernel)
    restored.update(labels, logits.astype(ml_dtypes.bfloat16), weights)
    ev.update(labels, logits.astype(ml_dtypes.bfloat16), weights)
    assert restored.rows_seen == 200 and restored.state_dict() == ev.state_dict()


def test_from_state_dict_refuses_malformed_states():
    ev = Evaluator(7)
    ev.update([1, 2, 3], np.zeros((3, 7), np.float32))
    good = ev.state_dict()
    with pytest.raises(ValueError, match="not a fastce Evaluator state"):
        Evaluator.from_state_dict({"format": "x"})
    with pytest.raises(ValueError, match="not a fastce Evaluator state"):
        Evaluator.from_state_dict([1, 2])
    for mutate in (
        lambda d: d["pending"].update(rows=4),
        lambda d: d["pending"].update(scores="!!"),
        lambda d: d["pending"].update(view_dtype="|O"),
        lambda d: d.update(nan_policy="sometimes"),
        lambda d: d["state"].update(format="nope"),
    ):
        data = json.loads(json.dumps(good))
        mutate(data)
        with pytest.raises(ValueError, match="malformed|not a fastce"):
            Evaluator.from_state_dict(data)


def test_a_change_of_dtype_closes_the_block_and_stays_within_1e12():
    logits, labels, _ = _data(10_000, 20, 16, np.float64)
    ev = Evaluator(20, precision="float64")  # float32 rows in float64 math, as the float64 array's
    ev.update(labels[:4321], logits[:4321].astype(np.float32))
    ev.update(labels[4321:], logits[4321:])
    mixed = np.concatenate([logits[:4321].astype(np.float32).astype(np.float64), logits[4321:]])
    _assert_close(ev.result(), fastce.evaluate(labels, logits=mixed))


def test_result_does_not_consume_the_held_back_rows():
    logits, labels, _ = _data(5000, 9, 17)
    ev = Evaluator(9)
    ev.update(labels[:2500], logits[:2500])
    assert ev.result() == fastce.evaluate(labels[:2500], logits=logits[:2500])
    ev.update(labels[2500:], logits[2500:])
    assert ev.result() == fastce.evaluate(labels, logits=logits)


def test_evaluator_is_exported_and_import_stays_light():
    assert fastce.Evaluator is Evaluator and "Evaluator" in fastce.__all__
    code = (
        "import sys, fastce; heavy = [m for m in sys.modules if m.split('.')[0] in ('pyarrow', 'tqdm') "
        "or m in ('fastce.cli', 'fastce.files', 'fastce.progress', 'fastce.__main__')]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_docstring_example_runs():
    import doctest

    import fastce.streaming

    result = doctest.testmod(fastce.streaming, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("task", ["multiclass", "multilabel", "soft"])
def test_reused_input_buffers_do_not_change_rows_already_fed(task):
    # The rows an update holds back (an unfinished block) were views of the caller's int64 labels or float64
    # targets: refilling one buffer for the next batch (a preallocated array, a reused torch tensor) changed them.
    rng = np.random.default_rng(3)
    n, c, batch = 300, 5, 100
    z = rng.standard_normal((n, c)).astype(np.float32)
    if task == "multiclass":
        y = rng.integers(0, c, n)
    elif task == "multilabel":
        y = (rng.random((n, c)) < 0.3).astype(np.float64)
    else:
        y = rng.random((n, c))
        y /= y.sum(axis=1, keepdims=True)
    expected = fastce.evaluate(y, logits=z, task=task)
    evaluator = Evaluator(c, task=task)
    buffer = np.empty_like(y[:batch])
    for start in range(0, n, batch):
        buffer[...] = y[start:start + batch]
        evaluator.update(buffer, z[start:start + batch])
    buffer[...] = 0  # after the last update too
    got = evaluator.result()
    assert got.cross_entropy == expected.cross_entropy and got.n == expected.n
