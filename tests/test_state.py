"""State: exact merges, JSON round trips, and refusing garbage."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

import fastce
from fastce import _config, _exactsum
from fastce.api import accumulate
from fastce.state import State

C = 12
TOP_K = (1, 3, 5)


def state_of(y, x, w=None, kind="logits"):
    state, _ = accumulate(y, sample_weight=w, top_k=TOP_K, **{kind: x})
    return state


def exact_sums(state):
    return [_exactsum.to_int(acc) for acc in state.sums]


@pytest.fixture
def data(rng):
    n = 3000
    x = rng.normal(scale=3.0, size=(n, C))
    y = rng.integers(0, C, size=n)
    w = rng.uniform(0.0, 2.0, size=n)
    return x, y, w


def _random_cuts(rng, n, parts):
    return np.sort(rng.choice(np.arange(1, n), size=parts - 1, replace=False))


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_merge_of_random_splits_equals_whole(data, rng, parts):
    x, y, w = data
    whole = state_of(y, x, w)
    cuts = _random_cuts(rng, len(y), parts)
    pieces = [state_of(yy, xx, ww) for yy, xx, ww in zip(np.split(y, cuts), np.split(x, cuts), np.split(w, cuts))]
    merged = pieces[0]
    for piece in pieces[1:]:
        merged = merged.merge(piece)
    # counts are exact; float sums are rounded per block, and block boundaries
    # restart at each piece
    assert merged.counters == whole.counters
    assert merged.rows_seen == whole.rows_seen == len(y)
    a, b = merged.finalize().to_dict(), whole.finalize().to_dict()
    assert a["n"] == b["n"]
    for key in ("weight_sum", "cross_entropy", "accuracy", "cross_entropy_bits", "perplexity"):
        assert a[key] == pytest.approx(b[key], rel=1e-12), key
    for k in TOP_K:
        assert a["top_k_accuracy"][k] == pytest.approx(b["top_k_accuracy"][k], rel=1e-12)


def test_merge_of_block_aligned_splits_is_bit_identical(data, rng):
    x, y, w = data
    rows = _config.block_rows(C)
    assert len(y) > 3 * rows
    cuts = np.array([rows, 3 * rows])
    pieces = [state_of(yy, xx, ww) for yy, xx, ww in zip(np.split(y, cuts), np.split(x, cuts), np.split(w, cuts))]
    merged = pieces[0].merge(pieces[1]).merge(pieces[2])
    whole = state_of(y, x, w)
    assert np.array_equal(merged.sums, whole.sums)
    assert merged.to_dict() == whole.to_dict()
    assert merged.finalize().to_dict() == whole.finalize().to_dict()


def test_integer_weights_merge_exactly(data, rng):
    x, y, _ = data
    w = rng.integers(0, 5, size=len(y)).astype(np.float64)
    cuts = _random_cuts(rng, len(y), 5)
    merged = State.empty(C, TOP_K)
    for yy, xx, ww in zip(np.split(y, cuts), np.split(x, cuts), np.split(w, cuts)):
        merged = merged.merge(state_of(yy, xx, ww))
    whole = state_of(y, x, w)
    assert merged.weight_sum == whole.weight_sum == w.sum()
    for i in range(len(TOP_K)):
        assert merged.hits(i) == whole.hits(i)  # sums of integers: exact whatever the blocks


def test_merge_is_commutative_and_associative_exactly(data, rng):
    x, y, w = data
    cuts = _random_cuts(rng, len(y), 3)
    a, b, c = (state_of(yy, xx, ww) for yy, xx, ww in zip(np.split(y, cuts), np.split(x, cuts), np.split(w, cuts)))
    ab_c = a.merge(b).merge(c)
    a_bc = a.merge(b.merge(c))
    cba = c.merge(b).merge(a)
    bac = b.merge(a).merge(c)
    for other in (a_bc, cba, bac):
        assert exact_sums(other) == exact_sums(ab_c)
        assert np.array_equal(other.sums, ab_c.sums)  # normalised limbs: one representation
        assert other.finalize().to_dict() == ab_c.finalize().to_dict()
        assert np.array_equal(other.counts[:7], ab_c.counts[:7])


def test_merge_with_empty_is_identity(data):
    x, y, w = data
    s = state_of(y, x, w)
    empty = State.empty(C, TOP_K)
    for merged in (s.merge(empty), empty.merge(s)):
        assert np.array_equal(merged.sums, s.sums)
        assert merged.finalize().to_dict() == s.finalize().to_dict()


def test_merge_does_not_mutate_its_operands(data):
    x, y, w = data
    a, b = state_of(y[:100], x[:100]), state_of(y[100:], x[100:])
    before = copy.deepcopy((a.to_dict(), b.to_dict()))
    a.merge(b)
    b.merge(a)
    assert (a.to_dict(), b.to_dict()) == before


def test_merge_numbers_rows_after_self(data):
    x, y, _ = data
    x = x.copy()
    x[250, 4] = np.nan
    x[1900, 0] = np.inf
    a, b = state_of(y[:1000], x[:1000]), state_of(y[1000:], x[1000:])
    merged = a.merge(b)
    assert merged.count("first_nonfinite_row") == 250 and merged.count("nonfinite_rows") == 2
    with pytest.raises(fastce.InputError, match=r"logits row 250\b"):
        merged.finalize(scores_name="logits")
    reversed_ = b.merge(a)
    # b's rows come first now: its row 900 is row 900, a's row 250 is row 2250
    assert reversed_.count("first_nonfinite_row") == 900
    # an empty state in front shifts nothing
    assert State.empty(C, TOP_K).merge(merged).count("first_nonfinite_row") == 250


def test_merge_refuses_incompatible_states(data):
    x, y, _ = data
    s = state_of(y, x)
    for other in (
        State.empty(C + 1, TOP_K),
        State.empty(C, (1, 2)),
        State.empty(C, TOP_K, from_logits=False),
        State.empty(C, TOP_K, ties_to_last=True),
    ):
        with pytest.raises(ValueError, match="cannot merge"):
            s.merge(other)


@pytest.mark.parametrize("kind", ["logits", "proba"])
def test_json_round_trip_is_exact(data, kind):
    x, y, w = data
    if kind == "proba":
        x = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    s = state_of(y, x, w, kind=kind)
    text = json.dumps(s.to_dict(), allow_nan=False)  # strict JSON: no Infinity / NaN literals
    back = State.from_dict(json.loads(text))
    assert back.to_dict() == s.to_dict()
    assert np.array_equal(back.sums, s.sums) and np.array_equal(back.counts, s.counts)
    assert np.array_equal(back.minmax, s.minmax)
    assert back.finalize().to_dict() == s.finalize().to_dict()
    # and merging a restored state is the same as merging the original
    assert back.merge(s).finalize().to_dict() == s.merge(s).finalize().to_dict()


def test_state_size_does_not_grow_with_rows(data):
    x, y, _ = data
    small, big = state_of(y[:10], x[:10]), state_of(y, x)
    assert len(json.dumps(small.to_dict())) == pytest.approx(len(json.dumps(big.to_dict())), abs=64)
    assert small.sums.shape == big.sums.shape


def test_empty_state_finalize_raises():
    with pytest.raises(fastce.InputError, match="no rows left"):
        State.empty(3).finalize()


def test_finalize_policies_on_a_state(data):
    x, y, _ = data
    x = x.copy()
    x[7, 2] = np.nan
    s = state_of(y, x)
    with pytest.raises(fastce.InputError, match="row 7"):
        s.finalize()
    with pytest.warns(fastce.OmittedRowsWarning):
        m = s.finalize("omit")
    assert m.n_omitted == 1 and m.n == len(y) - 1
    assert math.isnan(s.finalize("propagate").cross_entropy)
    with pytest.raises(fastce.InputError, match="nan_policy"):
        s.finalize("drop")


def _valid_dict(data):
    x, y, _ = data
    return state_of(y[:50], x[:50]).to_dict()


GARBAGE = {
    "not-a-dict": lambda d: [d],
    "none": lambda d: None,
    "wrong-format": lambda d: d | {"format": "fastce.state/999"},
    "no-format": lambda d: {k: v for k, v in d.items() if k != "format"},
    "missing-sums": lambda d: {k: v for k, v in d.items() if k != "sums"},
    "missing-counter": lambda d: d | {"counters": {k: v for k, v in d["counters"].items() if k != "rows"}},
    "counters-list": lambda d: d | {"counters": list(d["counters"].values())},
    "too-few-sums": lambda d: d | {"sums": d["sums"][:-1]},
    "too-many-sums": lambda d: d | {"sums": d["sums"] + ["0x0"]},
    "sum-not-hex": lambda d: d | {"sums": ["zz"] + d["sums"][1:]},
    "sum-number": lambda d: d | {"sums": [12] + d["sums"][1:]},
    "sum-huge": lambda d: d | {"sums": [hex(1 << 5000)] + d["sums"][1:]},
    "num-classes-str": lambda d: d | {"num_classes": "twelve"},
    "num-classes-zero": lambda d: d | {"num_classes": 0},
    "num-classes-negative": lambda d: d | {"num_classes": -3},
    "num-classes-float": lambda d: d | {"num_classes": 12.5},
    "top-k-zero": lambda d: d | {"top_k": [0, 1, 3]},
    "top-k-not-list": lambda d: d | {"top_k": 5},
    "top-k-repeated": lambda d: d | {"top_k": [1, 1, 3]},
    "from-logits-string": lambda d: d | {"from_logits": "false"},
    "ties-int": lambda d: d | {"ties_to_last": 2},
    "min-score-list": lambda d: d | {"min_score": [1.0]},
    "min-score-text": lambda d: d | {"min_score": "small"},
    "negative-count": lambda d: d | {"counters": d["counters"] | {"rows": -5}},
    "first-row-below-minus-one": lambda d: d | {"counters": d["counters"] | {"first_nonfinite_row": -7}},
    "count-float": lambda d: d | {"counters": d["counters"] | {"rows": 1.5}},
    "rows-seen-negative": lambda d: d | {"rows_seen": -1},
    "rows-seen-huge": lambda d: d | {"rows_seen": 1 << 70},
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_from_dict_refuses_garbage(data, name):
    bad = GARBAGE[name](_valid_dict(data))
    with pytest.raises(ValueError, match="fastce state"):
        State.from_dict(bad)


def test_from_dict_does_not_mutate_its_input(data):
    d = _valid_dict(data)
    before = copy.deepcopy(d)
    State.from_dict(d).merge(State.from_dict(d))
    assert d == before
