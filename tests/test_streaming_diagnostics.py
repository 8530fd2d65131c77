"""Evaluator(diagnostics=True) adds each batch's diagnostics to its own state in place (DiagnosticsState.absorb):
the same bits as diagnose, all or nothing, and no state of its own handed out or shared."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import fastce
from fastce import diagnostics
from fastce.diagnostics import DiagnosticsState, RowsToFold
from fastce.errors import InputError


def _same(a, b) -> None:
    assert a.to_json() == b.to_json()
    if a.confusion is not None:
        assert a.confusion.tobytes() == b.confusion.tobytes()


def _feed(ev, y, z, w, cuts) -> None:
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(y)]):
        ev.update(y[lo:hi], z[lo:hi], None if w is None else w[lo:hi])


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_rows_folded_later_and_whole_states_mix_to_diagnose_bit_for_bit(monkeypatch, dense, weighted):
    # Reads up to FOLD_LATER_ROWS rows give their rows' values, bigger ones a state; lowered here so that one
    # update holds both kinds, in both orders, with several slices a read (monkeypatched block rows).
    rng = np.random.default_rng(7)
    n, c = 6000, 40
    z = rng.normal(scale=2.0, size=(n, c)).astype(np.float32)
    y = rng.integers(0, c, size=n)
    y[::97] = -100
    w = rng.uniform(0.0, 3.0, size=n) if weighted else None
    if weighted:
        w[5::31] = 0.0
    options = {"worst_k": 15, "n_bins": 12, "dense_confusion_max": 1024 if dense else 8}
    expected = fastce.diagnose(y, logits=z, sample_weight=w, ignore_index=-100, **options)
    monkeypatch.setattr(diagnostics, "FOLD_LATER_ROWS", 700)
    kinds = []
    absorb = DiagnosticsState.absorb

    def recording(self, parts):
        kinds.extend(type(part) for part in parts)
        return absorb(self, parts)

    monkeypatch.setattr(DiagnosticsState, "absorb", recording)
    for cuts in ([1, 64, 65, 1300, 1301, 3000], [2500, 2510, 2511, 5999], sorted(rng.choice(n, 40, replace=False))):
        ev = fastce.Evaluator(c, diagnostics=options, ignore_index=-100)
        _feed(ev, y, z, w, np.asarray(cuts))
        _same(ev.report(), expected)
    assert RowsToFold in kinds and DiagnosticsState in kinds


def test_a_batch_the_diagnostics_refuse_leaves_the_evaluator_as_it_was():
    # Two reads in one update (the unfinished block completed, then whole blocks); the second's weights overflow
    # a block's sums in the diagnostics only (the State's sums are exact): the first read's rows must not stay.
    rng = np.random.default_rng(3)
    n, c = 5000, 10
    z = rng.normal(size=(n, c))
    y = rng.integers(0, c, size=n)
    w = np.ones(n)
    w[4000] = w[4001] = 1e308
    ev = fastce.Evaluator(c, diagnostics=True)
    ev.update(y[:100], z[:100], w[:100])
    before = json.dumps(ev.state_dict())
    with pytest.raises(InputError, match="sample_weight is too large"):
        ev.update(y[100:], z[100:], w[100:])
    assert json.dumps(ev.state_dict()) == before
    ev.update(y[100:3900], z[100:3900], w[100:3900])
    _same(ev.report(), fastce.diagnose(y[:3900], logits=z[:3900], sample_weight=w[:3900]))


def test_sequences_fed_slab_by_slab_are_all_or_nothing_for_the_diagnostics():
    # (B, T, C) scores that do not flatten in place are fed one (T, C) slab at a time, each an update that adds
    # to the diagnostics in place: a label out of range in the last slab must undo the slabs before it.
    rng = np.random.default_rng(5)
    z = rng.normal(size=(1000, 4, 12)).transpose(1, 0, 2)  # (4, 1000, 12), not flattenable in place: slab by slab
    y = rng.integers(0, 12, size=(4, 1000))
    ev = fastce.Evaluator(12, diagnostics=True)
    ev.update(y[0], z[0])
    before = json.dumps(ev.state_dict())
    bad = y.copy()
    bad[3, 999] = 12
    with pytest.raises(InputError, match="y_true"):
        ev.update(bad[1:], z[1:])
    assert json.dumps(ev.state_dict()) == before
    ev.update(y[1:], z[1:])
    _same(ev.report(), fastce.diagnose(y, logits=z))


def test_what_an_evaluator_hands_out_does_not_change_with_its_later_updates():
    rng = np.random.default_rng(9)
    n, c = 3000, 16
    z = rng.normal(size=(n, c)).astype(np.float32)
    y = rng.integers(0, c, size=n)
    ev = fastce.Evaluator(c, diagnostics=True)
    ev.update(y[:1024], z[:1024])  # whole blocks: nothing pending, the Evaluator's own state is what it has
    state = ev.diagnostics_state()
    held = json.dumps(state.to_dict())
    twin = copy.copy(ev)
    report = ev.report().to_json()
    ev.update(y[1024:], z[1024:])
    assert json.dumps(state.to_dict()) == held
    assert twin.report().to_json() == report == fastce.diagnose(y[:1024], logits=z[:1024]).to_json()
    twin.update(y[1024:2000], z[1024:2000])
    _same(ev.report(), fastce.diagnose(y, logits=z))


def test_small_updates_build_no_diagnostics_state_of_their_own(monkeypatch):
    # A dense confusion matrix is C^2 cells: a fresh state per read and a merge per update cost O(C^2) each
    # (14.7 ms a 64-row update at C = 1000, 700 times its evaluation); small reads fold into the Evaluator's.
    rng = np.random.default_rng(11)
    c = 300
    z = rng.normal(size=(64 * 21, c)).astype(np.float32)
    y = rng.integers(0, c, size=64 * 21)
    ev = fastce.Evaluator(c, diagnostics=True)
    ev.update(y[:64], z[:64])
    built = []
    for name in ("empty", "merge", "copy"):
        original = getattr(DiagnosticsState, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            built.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(DiagnosticsState, name, counting)
    for b in range(1, 21):
        ev.update(y[64 * b: 64 * (b + 1)], z[64 * b: 64 * (b + 1)])
    assert built == []
    monkeypatch.undo()
    _same(ev.report(), fastce.diagnose(y, logits=z))


@pytest.mark.parametrize("where", ["first slice", "second slice", "after absorb", "multilabel after absorb"])
def test_an_interrupt_during_or_after_the_in_place_absorb_leaves_the_evaluator_as_it_was(monkeypatch, where):
    # Ctrl-C (or the command's SIGTERM) can land anywhere in an update, the in-place absorb included: the command
    # then checkpointed a half-absorbed state that its rerun refused as damaged ("counts out of range").
    rng = np.random.default_rng(13)
    multilabel = where.startswith("multilabel")
    n, c = 3000, 6
    z = rng.normal(size=(n, c))
    y = (rng.uniform(size=(n, c)) < 0.3).astype(np.int64) if multilabel else rng.integers(0, c, size=n)
    ev = fastce.Evaluator(c, task="multilabel" if multilabel else "auto", diagnostics={"worst_k": 5})
    ev.update(y[:700], z[:700])
    before = json.dumps(ev.state_dict())
    if where.endswith("after absorb"):
        cls = type(ev._diag)
        absorb = cls.absorb

        def interrupted(self, parts):
            absorb(self, parts)
            raise KeyboardInterrupt

        monkeypatch.setattr(cls, "absorb", interrupted)
    else:
        calls = []
        fold_rest = DiagnosticsState._fold_rest

        def interrupted(self, *args):
            calls.append(1)
            if len(calls) == (1 if where == "first slice" else 2):
                raise KeyboardInterrupt
            return fold_rest(self, *args)

        monkeypatch.setattr(DiagnosticsState, "_fold_rest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ev.update(y[700:2600], z[700:2600])  # the unfinished block completed, then whole blocks: two parts
    monkeypatch.undo()
    assert json.dumps(ev.state_dict()) == before
    ev.update(y[700:], z[700:])
    expected = fastce.diagnose(y, logits=z, worst_k=5, task="multilabel" if multilabel else "auto")
    assert ev.report().to_json() == expected.to_json()
