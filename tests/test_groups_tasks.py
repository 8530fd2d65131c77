"""Clustered standard errors (groups=) for the multi-label and soft-target tasks.

Each row's values (the ``row_values`` of kernels_binary.bce_blocks and
kernels_soft.soft_blocks, written in the kernels' one read) are folded by
group after each kernel call; here they are held to numpy references written from the
formulas, and every door (evaluate, the Evaluator over any split and a JSON
round trip, diagnose, the command, fastce.dask) to ``evaluate(groups=)``.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, log_softmax

import fastce
from fastce import cli
from test_errorbars import clustered_reference

N, C = 4_000, 5


def _multilabel(seed, *, n=N, c=C):
    rng = np.random.default_rng(seed)
    g = np.sort(rng.integers(0, n // 12, n))
    z = 2 * rng.standard_normal((n, c))
    shift = 2 * rng.standard_normal(n // 12)[g, None]  # a group's labels lean one way: its rows' losses correlate
    y = (rng.random((n, c)) < expit(z + shift)).astype(np.int64)
    return y, z, rng.random(n), g


def _soft(seed, *, n=N, c=C):
    rng = np.random.default_rng(seed)
    z = 2 * rng.standard_normal((n, c))
    t = rng.dirichlet(np.full(c, 0.7), n)
    t[::9, 1:] = 0.0  # some one-hot rows: terms with q = 0 leave the entropy and KL
    t[::9, 0] = 1.0
    g = rng.integers(-30, 300, n)  # unsorted ids
    return t, z, g


def multilabel_rows(y, s, *, from_logits):
    """Per-row mean element loss, mean (p - y)^2, share of elements right, subset hit, from the definitions."""
    y = y.astype(np.float64)
    if from_logits:
        p = expit(s)
        loss = y * np.logaddexp(0.0, -s) + (1 - y) * np.logaddexp(0.0, s)
        predicted = s > 0
    else:
        p = s
        with np.errstate(divide="ignore"):
            loss = -(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))
        predicted = s > 0.5
    hits = predicted == (y > 0.5)
    return loss.mean(1), ((p - y) ** 2).mean(1), hits.mean(1), hits.all(1).astype(float)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_multilabel_clustered_errors_match_the_formula(from_logits, weighted):
    y, z, w, g = _multilabel(1 + weighted)
    w = w if weighted else None
    scores = z if from_logits else expit(z)
    key = "logits" if from_logits else "proba"
    m = fastce.evaluate(y, **{key: scores}, sample_weight=w, groups=g)
    plain = fastce.evaluate(y, **{key: scores}, sample_weight=w)
    loss, brier, hamming, subset = multilabel_rows(y, scores, from_logits=from_logits)
    assert m.task == "multilabel" and m.n_groups == len(np.unique(g))
    assert m.stderr["cross_entropy"] == pytest.approx(clustered_reference(loss, g, w), rel=1e-9)
    assert m.stderr["brier"] == pytest.approx(clustered_reference(brier, g, w), rel=1e-9)
    assert m.stderr["hamming_accuracy"] == pytest.approx(clustered_reference(hamming, g, w), rel=1e-9)
    assert m.stderr["subset_accuracy"] == pytest.approx(clustered_reference(subset, g, w), rel=1e-9)
    assert m.stderr["top_k_accuracy"] == {1: m.stderr["subset_accuracy"]}
    assert set(m.stderr) == set(plain.stderr)
    # The means are the kernel's, bit for bit; only the errors change (wider: rows of a group correlate).
    assert (m.cross_entropy, m.hamming_accuracy, m.subset_accuracy, m.brier) == (
        plain.cross_entropy, plain.hamming_accuracy, plain.subset_accuracy, plain.brier)
    assert m.stderr["cross_entropy"] > plain.stderr["cross_entropy"]
    low, high = m.interval("subset_accuracy")
    assert low < m.subset_accuracy < high


def test_soft_clustered_errors_match_the_formula():
    t, z, g = _soft(3)
    m = fastce.evaluate(t, logits=z, task="soft", groups=g)
    plain = fastce.evaluate(t, logits=z, task="soft")
    log_q = log_softmax(z, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_t = np.where(t > 0, np.log(t), 0.0)
    loss = -(t * log_q).sum(1)
    entropy = -(t * log_t).sum(1)
    kl = (t * (log_t - log_q)).sum(1)
    hit = (z.argmax(1) == t.argmax(1)).astype(float)
    assert m.task == "soft" and m.n_groups == len(np.unique(g))
    assert m.stderr["cross_entropy"] == pytest.approx(clustered_reference(loss, g), rel=1e-9)
    assert m.stderr["target_entropy"] == pytest.approx(clustered_reference(entropy, g), rel=1e-9)
    assert m.stderr["kl_divergence"] == pytest.approx(clustered_reference(kl, g), rel=1e-9)
    assert m.stderr["top_k_accuracy"][1] == pytest.approx(clustered_reference(hit, g), rel=1e-9)
    assert set(m.stderr) == set(plain.stderr)
    assert (m.cross_entropy, m.kl_divergence, m.accuracy) == (plain.cross_entropy, plain.kl_divergence, plain.accuracy)
    low, high = m.interval("kl_divergence")
    assert low < m.kl_divergence < high


def test_one_group_per_row_gives_the_row_errors():
    """G groups of one row each: sqrt(n / (n - 1) * sum (x - mean)^2) / n, the unclustered error."""
    y, z, _, _ = _multilabel(4, n=2_000)
    plain = fastce.evaluate(y, logits=z)
    each = fastce.evaluate(y, logits=z, groups=np.arange(len(y)))
    for name in ("cross_entropy", "brier", "hamming_accuracy", "subset_accuracy"):
        assert each.stderr[name] == pytest.approx(plain.stderr[name], rel=1e-9), name
    t, zs, _ = _soft(5, n=2_000)
    plain, each = (fastce.evaluate(t, logits=zs, task="soft", groups=ids) for ids in (None, np.arange(len(t))))
    for name in ("cross_entropy", "target_entropy", "kl_divergence"):
        assert each.stderr[name] == pytest.approx(plain.stderr[name], rel=1e-9), name


def test_rows_not_counted_leave_their_groups_out():
    y, z, _, g = _multilabel(6)
    z = z.copy()
    z[::11, 2] = np.nan
    kept = ~np.isnan(z).any(1)
    with pytest.warns(fastce.OmittedRowsWarning):
        omitted = fastce.evaluate(y, logits=z, groups=g, nan_policy="omit")
    dropped = fastce.evaluate(y[kept], logits=z[kept], groups=g[kept])
    assert omitted.stderr["cross_entropy"] == pytest.approx(dropped.stderr["cross_entropy"], rel=1e-12)
    assert omitted.n_groups == dropped.n_groups
    t, zs, gs = _soft(7)
    zs = zs.copy()
    zs[::13, 0] = np.inf  # +inf logits: a non-finite row, not counted
    kept = np.isfinite(zs).all(1)
    with pytest.warns(fastce.OmittedRowsWarning):
        omitted = fastce.evaluate(t, logits=zs, task="soft", groups=gs, nan_policy="omit")
    dropped = fastce.evaluate(t[kept], logits=zs[kept], task="soft", groups=gs[kept])
    assert omitted.stderr["kl_divergence"] == pytest.approx(dropped.stderr["kl_divergence"], rel=1e-12)


def test_an_infinite_loss_gives_an_infinite_clustered_error():
    y, z, _, g = _multilabel(8, n=600)
    proba = expit(z)
    proba[5, 0] = 1.0 - y[5, 0]  # certain and wrong: loss 100 (PyTorch's clamp), finite
    assert np.isfinite(fastce.evaluate(y, proba=proba, groups=g).stderr["cross_entropy"])
    z = z.copy()
    z[5, 0] = np.inf if y[5, 0] == 0 else -np.inf  # an infinite logit against its label: loss inf
    m = fastce.evaluate(y, logits=z, groups=g)
    assert m.cross_entropy == np.inf and m.stderr["cross_entropy"] == np.inf
    assert np.isfinite(m.stderr["brier"])


def _splits(n, cuts):
    bounds = sorted({0, n, *cuts})
    return list(zip(bounds[:-1], bounds[1:]))


@settings(max_examples=15, deadline=None, derandomize=True)
@given(cuts=st.lists(st.integers(1, N - 1), max_size=4), checkpoint=st.integers(0, 4), soft=st.booleans())
def test_evaluator_with_groups_equals_evaluate_for_any_split_and_checkpoint(cuts, checkpoint, soft):
    if soft:
        y, z, g = _soft(9)
        w, options = None, {"task": "soft"}
    else:
        y, z, w, g = _multilabel(9)
        options = {}
    expected = fastce.evaluate(y, logits=z, sample_weight=w, groups=g, **options)
    ev = fastce.Evaluator(C, groups=True, **options)
    for i, (lo, hi) in enumerate(_splits(N, cuts)):
        ev.update(y[lo:hi], z[lo:hi], None if w is None else w[lo:hi], groups=g[lo:hi])
        if i == checkpoint:  # a JSON round trip mid-stream, pending rows and all
            ev = fastce.Evaluator.from_state_dict(json.loads(json.dumps(ev.state_dict(), allow_nan=False)))
    assert ev.result().to_json() == expected.to_json()


def test_states_carry_the_group_sums_and_refuse_to_mix():
    from fastce.task_states import MultilabelState, SoftState

    y, z, w, g = _multilabel(10, n=900)
    ev = fastce.Evaluator(C, groups=True)
    ev.update(y, z, w, groups=g)
    state = ev.state()
    assert isinstance(state, MultilabelState) and state.clusters.n_groups == len(np.unique(g))
    back = MultilabelState.from_dict(json.loads(json.dumps(state.to_dict(), allow_nan=False)))
    assert back == state and back.finalize() == state.finalize()
    bare = fastce.Evaluator(C)
    bare.update(y, z, w)
    with pytest.raises(ValueError, match="cannot merge a state with group sums"):
        state.merge(bare.state())
    assert "groups" not in bare.state().to_dict()  # a state without groups reads as it always did
    data = state.to_dict()
    data["groups"]["n_values"] = 3
    data["groups"]["hi"] = data["groups"]["hi"][: 4 * len(data["groups"]["ids"])]
    data["groups"]["lo"] = data["groups"]["lo"][: 4 * len(data["groups"]["ids"])]
    with pytest.raises(fastce.InputError, match="malformed fastce state: group sums of 3 values"):
        MultilabelState.from_dict(data)
    t, zs, gs = _soft(11, n=500)
    soft = fastce.Evaluator(C, task="soft", groups=True)
    soft.update(t, zs, groups=gs)
    assert SoftState.from_dict(json.loads(json.dumps(soft.state().to_dict()))).finalize() == soft.result()


def test_diagnose_reports_clustered_multilabel_errors():
    y, z, w, g = _multilabel(12)
    expected = fastce.evaluate(y, logits=z, sample_weight=w, groups=g)
    report = fastce.diagnose(y, logits=z, sample_weight=w, groups=g)
    assert report.metrics == expected
    assert "error bars clustered by group" in str(report)


def _main(*argv):
    out, err = io.StringIO(), io.StringIO()
    status = cli.main([str(a) for a in argv], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("soft", [False, True])
def test_the_command_takes_groups_for_every_task(soft, tmp_path):
    if soft:
        y, z, g = _soft(13)
        task = ["--task", "soft"]
    else:
        y, z, _, g = _multilabel(13)
        task = []
    expected = fastce.evaluate(y, logits=z, groups=g, **({"task": "soft"} if soft else {}))
    for name, array in (("y", y), ("z", z), ("g", g)):
        np.save(tmp_path / f"{name}.npy", array)
    status, out, err = _main("eval", "--labels", tmp_path / "y.npy", "--logits", tmp_path / "z.npy", "--groups",
                             tmp_path / "g.npy", "--json", "--chunk-rows", "700", "--no-progress", *task)
    assert status == 0, err
    assert json.loads(out) == json.loads(expected.to_json())


def test_dask_takes_groups_for_every_task():
    da = pytest.importorskip("dask.array")
    import fastce.dask

    y, z, w, g = _multilabel(14)
    expected = fastce.evaluate(y, logits=z, sample_weight=w, groups=g)
    got = fastce.dask.evaluate(da.from_array(y, chunks=(1100, C)), logits=da.from_array(z, chunks=(1100, C)),
                               sample_weight=da.from_array(w, chunks=1100), groups=g)
    assert got == expected
    t, zs, gs = _soft(15)
    expected = fastce.evaluate(t, logits=zs, task="soft", groups=gs)
    got = fastce.dask.evaluate(da.from_array(t, chunks=(900, C)), logits=da.from_array(zs, chunks=(900, C)),
                               task="soft", groups=gs)
    assert got == expected
