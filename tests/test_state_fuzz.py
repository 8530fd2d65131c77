"""Tampered state files: every defect is a ValueError (InputError), never another exception or a wrapped counter.

Valid state dicts of plain and diagnostics Evaluators are mutated at a random
place (types, huge, negative and special numbers, missing and extra keys,
nested junk); ``Evaluator.from_state_dict`` must raise InputError or give an
Evaluator whose results are sane.  Kernels are compiled once by the fixture
(float32 and float64 rows only), never per example.
"""

from __future__ import annotations

import functools
import json
import math
import warnings

import numpy as np
import pytest

import fastce
from fastce.errors import FastCEWarning, InputError
from fastce.state import MAX_ROWS, State
from fastce.streaming import Evaluator

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

C = 5


@functools.cache
def _states() -> list:
    """Made by the first test that asks, not at collection (test_output._results says why)."""
    rng = np.random.default_rng(3)
    out = []
    for dtype, diagnostics, weighted in ((np.float32, False, True), (np.float64, True, False), (np.float32, True, True)):
        n = Evaluator(C).block_rows + 7  # one whole block and a pending one
        ev = Evaluator(C, top_k=(1, 2), diagnostics={"worst_k": 3, "n_bins": 4} if diagnostics else False)
        ev.update(rng.integers(0, C, n), rng.normal(size=(n, C)).astype(dtype), rng.random(n) if weighted else None)
        out.append(json.loads(json.dumps(ev.state_dict())))
    # The other tasks' states (binary, multi-label with diagnostics, soft targets), each with a pending block.
    n = 600
    binary = Evaluator(task="binary", diagnostics={"worst_k": 3})
    binary.update(rng.integers(0, 2, 9000), rng.normal(size=9000), rng.random(9000))
    multilabel = Evaluator(C, task="multilabel", diagnostics={"worst_k": 3, "n_bins": 4})
    multilabel.update((rng.random((n, C)) < 0.3).astype(np.uint8), rng.normal(size=(n, C)).astype(np.float32))
    soft = Evaluator(C, task="soft")
    targets = rng.random((n, C))
    soft.update(targets / targets.sum(axis=1, keepdims=True), rng.normal(size=(n, C)))
    out.extend(json.loads(json.dumps(ev.state_dict())) for ev in (binary, multilabel, soft))
    return out


JUNK = st.one_of(
    st.sampled_from(
        [None, True, False, 0, 1, -1, -2, 2**31, 2**62 - 1, 2**62, 2**63 - 1, 2**63, -(2**63), 2**64, 10**400,
         1.5, -0.0, 1e308, math.inf, -math.inf, math.nan, "", "x", "inf", "nan", "0x1", "<f4", "<i8", "AAAA", "!!",
         [], {}, [[]], [None], {"rows": 1}, [1, 2, 3], "A" * 10_000]
    ),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.recursive(st.none() | st.integers() | st.text(max_size=3), lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6),
)


def _paths(node, prefix=()):
    """Every (container path, key) in a nested JSON value."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix, key
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list) and node:
        for index in sorted({0, len(node) - 1}):
            yield prefix, index
            yield from _paths(node[index], prefix + (index,))


def _get(node, path):
    for key in path:
        node = node[key]
    return node


@st.composite
def tampered(draw):
    data = json.loads(json.dumps(draw(st.sampled_from(_states()))))
    for _ in range(draw(st.integers(1, 2))):
        paths = list(_paths(data))
        if not paths:
            break
        path, key = draw(st.sampled_from(paths))
        parent = _get(data, path)
        action = draw(st.sampled_from(["replace", "replace", "nudge", "delete", "extra"]))
        if action == "replace":
            parent[key] = draw(JUNK)
        elif action == "nudge" and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            parent[key] = draw(st.sampled_from([lambda v: -v, lambda v: v + 1, lambda v: v - 1, lambda v: v * 2**40,
                                                lambda v: MAX_ROWS - v, lambda v: float(v) + 0.5]))(parent[key])
        elif action == "delete" and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=5))] = draw(JUNK)
        else:
            parent.append(draw(JUNK))
    return data


def _check_sane(evaluator: Evaluator) -> None:
    """A loaded Evaluator reports counts that are not wrapped, or refuses with InputError."""
    evaluator.state_dict()
    probes = [evaluator]
    try:
        with np.errstate(over="ignore"):  # float64 sums near 1e308 overflowing in a merge: not this test's subject
            probes.append(Evaluator.from_state_dict(evaluator.state_dict()).merge(evaluator))
    except InputError as exc:  # e.g. past MAX_ROWS: refused, never wrapped
        assert "\n" not in str(exc)
    for probe in probes:
        try:
            with warnings.catch_warnings():
                # A tampered state may well warn about its data (e.g. moments it says overflowed): not this test's subject.
                warnings.simplefilter("ignore", FastCEWarning)
                metrics = probe.result()
                if probe._diag is not None:
                    probe.report().to_dict()
        except InputError:
            continue
        assert 0 <= metrics.n <= probe.rows_seen <= MAX_ROWS


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(tampered())
def test_tampered_state_raises_input_error_only(data):
    try:
        evaluator = Evaluator.from_state_dict(data)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    _check_sane(evaluator)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d["pending"].update(rows=math.inf), "pending block: rows"),
        (lambda d: d["pending"].update(scores=7), "pending block: expected base64 text"),
        (lambda d: d["pending"].update(labels=None), "pending block: expected base64 text"),
        (lambda d: d["pending"].update(eps=0.5), "pending block: eps"),
        (lambda d: d["pending"].update(weights="A" * 10**6), "pending block: expected"),
        (lambda d: d["state"].update(num_classes=2**40), "num_classes out of range.*at most 2147483648"),
        (lambda d: d["state"].update(num_classes=-3), "num_classes out of range"),
        (lambda d: d["state"]["counters"].update(rows=2**63 - 1000), "rows out of range"),
        (lambda d: d["state"].update(rows_seen=2**62), "rows_seen out of range.*MAX_ROWS"),
        (lambda d: d["state"].update(sums=[7] * len(d["state"]["sums"])), "sums must be hexadecimal"),
        (lambda d: d.update(nan_policy=["raise"]), "nan_policy"),
        (lambda d: d["diagnostics"]["options"].update(n_bins=10**12), "n_bins must be an integer in"),
        (lambda d: d["diagnostics"]["options"].update(num_classes=-1), "num_classes must be an integer in"),
        (lambda d: d["diagnostics"]["options"].update(n_bins=2**12), "acc has 701 values, expected 12977"),
        (lambda d: d["diagnostics"]["options"].update(n_bins=2**20), r"n_bins must be an integer in \[1, 4096\]"),
        (lambda d: d["diagnostics"]["options"].update(dense_confusion_max=-5), "dense_confusion_max"),
        (lambda d: d["diagnostics"].update(counts=["1"] * 10), "counts must be an integer"),
        (lambda d: d["diagnostics"]["worst"].update(row=[10**30] * 3), "worst row out of range"),
        (lambda d: d["diagnostics"].update(acc=[[1.0]] * 701), "expected a number"),
        (lambda d: d["diagnostics"]["acc"].__setitem__(3, "inf"), "acc and lo must be finite"),
    ],
)
def test_named_defects_raise_one_line_input_errors(mutate, match):
    data = json.loads(json.dumps(_states()[2]))
    mutate(data)
    with pytest.raises(InputError, match=match) as info:
        Evaluator.from_state_dict(data)
    assert "\n" not in str(info.value)


def test_counters_near_the_int64_maximum_cannot_wrap_in_a_merge():
    state = State.from_dict(_states()[0]["state"])
    big = State.from_dict(state.to_dict() | {"rows_seen": MAX_ROWS, "counters": state.counters | {"rows": MAX_ROWS}})
    assert big.count("rows") == MAX_ROWS  # the bound itself is accepted...
    with pytest.raises(InputError, match="MAX_ROWS"):  # ...and a merge past it refused, not wrapped
        big.merge(state)
    data = json.loads(json.dumps(_states()[0]))
    data["state"] = big.to_dict()
    data["pending"] = None
    evaluator = Evaluator.from_state_dict(data)
    with pytest.raises(InputError, match="MAX_ROWS"):
        evaluator.merge(Evaluator.from_state_dict(_states()[0]))


def test_every_evaluator_the_constructor_accepts_reads_back():
    from fastce.state import MAX_NUM_CLASSES

    with pytest.raises(InputError, match="at most 2147483648"):
        Evaluator(MAX_NUM_CLASSES + 1)
    with pytest.warns(fastce.TopKWarning):
        big = Evaluator(MAX_NUM_CLASSES, top_k=(1, 2**63 - 1))
    assert Evaluator.from_state_dict(json.loads(json.dumps(big.state_dict()))).state_dict() == big.state_dict()


def test_valid_states_still_round_trip():
    for data in _states():
        evaluator = Evaluator.from_state_dict(data)
        assert evaluator.state_dict() == data
        assert evaluator.result() == Evaluator.from_state_dict(evaluator.state_dict()).result()
    assert fastce.Evaluator is Evaluator


@pytest.mark.parametrize(
    "which, mutate, match",
    [
        (4, lambda d: d["state"]["counts"].__setitem__(0, d["state"]["rows_seen"] + 1), r"counts\[0\] out of range"),
        (5, lambda d: d["state"]["counts"].__setitem__(0, d["state"]["rows_seen"] + 1), r"counts\[0\] out of range"),
        (4, lambda d: d["state"].update(task="soft"), "task must be 'multilabel'"),
        (5, lambda d: d["state"].update(from_logits=False), "scored against logits only"),
        (4, lambda d: d["state"].update(sums=d["state"]["sums"][:-1]), "expected 14 sums"),
        (4, lambda d: d["settings"].update(task="binary"), "fastce .*state"),
        (3, lambda d: d["pending"].update(rows=10**6), "pending block: rows"),
        (5, lambda d: d["pending"].update(tolerance=0.0), "tolerance"),
        (4, lambda d: d["diagnostics"].update(rows_seen=1), "worst row out of range"),
        (4, lambda d: d["diagnostics"].update(rows_seen=d["diagnostics"]["rows_seen"] + 1), "diagnostics do not match"),
    ],
)
def test_named_defects_of_other_tasks_raise_one_line_input_errors(which, mutate, match):
    data = json.loads(json.dumps(_states()[which]))
    mutate(data)
    with pytest.raises(InputError, match=match) as info:
        Evaluator.from_state_dict(data)
    assert "\n" not in str(info.value)
