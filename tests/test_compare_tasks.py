"""fastce.compare of multi-label and soft-target models, from every door.

Each model is read by its task's reader (its Metrics equal ``evaluate`` bit
for bit); each row's values come from the kernels' own row_values, folded
into exact paired sums (compare_values).  Held here to numpy references
written from the formulas and to scipy's tests, as the multi-class and
binary comparisons are.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import expit, log_softmax

import fastce
from fastce.compare_streaming import Comparator
from test_compare import strict_loads
from test_errorbars import clustered_reference, se_reference
from test_groups_tasks import _main, multilabel_rows

N, C = 6_000, 5


def multilabel_models(seed=0, n=N, c=C):
    rng = np.random.default_rng(seed)
    truth = 2 * rng.standard_normal((n, c))
    y = (rng.random((n, c)) < expit(truth)).astype(np.int8)
    models = {"A": truth + rng.standard_normal((n, c)), "B": truth + 0.5 * rng.standard_normal((n, c)),
              "C": 3 * truth + 0.5 * rng.standard_normal((n, c))}  # over-confident: more often right, higher loss
    return y, models, rng.random(n) * 2, np.sort(rng.integers(0, n // 10, n))


def soft_models(seed=0, n=N, c=C):
    rng = np.random.default_rng(seed)
    truth = 2 * rng.standard_normal((n, c))
    t = np.exp(log_softmax(truth + rng.standard_normal((n, c)), axis=1))
    t[::11] = np.eye(c)[rng.integers(0, c, len(t[::11]))]  # some one-hot rows: q = 0 terms leave the KL
    models = {"A": truth + rng.standard_normal((n, c)), "B": truth + 0.3 * rng.standard_normal((n, c))}
    return t, models, rng.integers(-5, n // 8, n)


def soft_rows(t, z):
    """Per-row cross-entropy, KL divergence and argmax agreement, from the definitions."""
    log_q = log_softmax(z.astype(np.float64), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_t = np.where(t > 0, np.log(t), 0.0)
    return -(t * log_q).sum(1), (t * (log_t - log_q)).sum(1), (z.argmax(1) == t.argmax(1))


def _check_mean_delta(d, xa, xb, w, rel=1e-9):
    ww = np.ones_like(xa) if w is None else w
    assert d.estimate == pytest.approx((ww * (xb - xa)).sum() / ww.sum(), rel=rel, abs=1e-14)
    assert d.stderr == pytest.approx(se_reference(xb - xa, w), rel=1e-8)
    assert d.test == "paired z" and d.n == xa.shape[0]
    if w is None:
        assert d.estimate / d.stderr == pytest.approx(stats.ttest_rel(xb, xa).statistic, rel=1e-8)


def _check_hit_delta(c, a, b, ha, hb, w, metric):
    ww = np.ones(ha.shape[0]) if w is None else w
    d = c.delta(b, a, metric)
    only_a, only_b = int((ha & ~hb).sum()), int((hb & ~ha).sum())
    assert d.test == "McNemar exact"
    assert d.p_value == pytest.approx(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue, rel=1e-9)
    assert d.estimate == pytest.approx((ww * (hb * 1.0 - ha)).sum() / ww.sum(), abs=1e-12)
    assert d.stderr == pytest.approx(se_reference(hb * 1.0 - ha, w), rel=1e-8)
    table = c.table(a, b)
    assert (table["only_a_right"]["rows"], table["only_b_right"]["rows"]) == (only_a, only_b)
    assert table["both_right"]["rows"] == int((ha & hb).sum())
    assert table["both_wrong"]["weight"] == pytest.approx(ww[~ha & ~hb].sum(), rel=1e-12)
    # Reversed, the same difference with the other sign and the table's sides swapped.
    back = c.delta(a, b, metric)
    assert (back.estimate, back.p_value) == (-d.estimate, d.p_value)
    assert c.table(b, a)["only_a_right"] == table["only_b_right"]


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_multilabel_comparison_matches_evaluate_and_the_formulas(from_logits, weighted):
    y, models, w, _ = multilabel_models(seed=1 + weighted)
    if not from_logits:
        models = {k: expit(v) for k, v in models.items()}
    w = w if weighted else None
    key = "logits" if from_logits else "proba"
    c = fastce.compare(y, **{key: models}, sample_weight=w)
    assert c.state.task == "multilabel"
    assert c.metric_names() == ["cross_entropy", "brier", "hamming_accuracy", "subset_accuracy"]
    for name, s in models.items():
        assert c.metrics[name] == fastce.evaluate(y, **{key: s}, sample_weight=w), name
    rows = {name: multilabel_rows(y, s, from_logits=from_logits) for name, s in models.items()}
    for a, b in (("A", "B"), ("C", "A"), ("B", "C")):
        (la, ba, hma, sa), (lb, bb, hmb, sb) = rows[a], rows[b]
        _check_mean_delta(c.delta(b, a, "cross_entropy"), la, lb, w)
        _check_mean_delta(c.delta(b, a, "brier"), ba, bb, w)
        _check_mean_delta(c.delta(b, a, "hamming_accuracy"), hma, hmb, w)
        _check_hit_delta(c, a, b, sa > 0.5, sb > 0.5, w, "subset_accuracy")
        assert c.delta(b, a, "accuracy") == c.delta(b, a, "subset_accuracy")  # Metrics.accuracy is the subset one
        assert c.correlation(a, b) == pytest.approx(np.corrcoef(la, lb)[0, 1], rel=1e-9)
    text = str(c)
    assert "multi-label: 5 labels" in text and "nats per label" in text and "Hamming accuracy" in text
    assert "confidently wrong" not in text


def test_soft_comparison_matches_evaluate_and_the_formulas():
    t, models, _ = soft_models(seed=3)
    c = fastce.compare(t, logits=models)
    assert c.state.task == "soft" and c.metric_names() == ["cross_entropy", "kl_divergence", "accuracy"]
    for name, z in models.items():
        assert c.metrics[name] == fastce.evaluate(t, logits=z), name
    (la, ka, ha), (lb, kb, hb) = soft_rows(t, models["A"]), soft_rows(t, models["B"])
    _check_mean_delta(c.delta("B", "A", "cross_entropy"), la, lb, None)
    _check_mean_delta(c.delta("B", "A", "kl_divergence"), ka, kb, None)
    # The target's entropy is the same under both models: the KL difference is the cross-entropy's.
    assert c.delta("B", "A", "kl_divergence").estimate == pytest.approx(c.delta("B", "A").estimate, rel=1e-12)
    _check_hit_delta(c, "A", "B", ha, hb, None, "accuracy")
    assert c.correlation("A", "B") == pytest.approx(np.corrcoef(la, lb)[0, 1], rel=1e-9)
    assert "soft targets over 5 classes" in str(c)
    with pytest.raises(ValueError, match="target_entropy.*not one of"):
        c.delta("B", "A", "target_entropy")
    with pytest.raises(ValueError, match="confidently wrong rows are counted for class labels"):
        c.confidently_wrong("B", "A")
    with pytest.raises(ValueError, match="one accuracy"):
        c.table("A", "B", k=2)
    with pytest.raises(fastce.InputError, match="sample_weight is not supported with soft targets"):
        fastce.compare(t, logits=models, sample_weight=np.ones(N))


@pytest.mark.parametrize("soft", [False, True])
def test_groups_give_the_clustered_errors_of_the_formula(soft):
    if soft:
        t, models, g = soft_models(seed=5)
        w = None
        rows = {k: soft_rows(t, z) for k, z in models.items()}
        pairs = {"cross_entropy": 0, "kl_divergence": 1, "accuracy": 2}
    else:
        t, models, w, g = multilabel_models(seed=6)
        rows = {k: multilabel_rows(t, z, from_logits=True) for k, z in models.items()}
        pairs = {"cross_entropy": 0, "brier": 1, "hamming_accuracy": 2, "subset_accuracy": 3}
    c = fastce.compare(t, logits=models, sample_weight=w, groups=g)
    plain = fastce.compare(t, logits=models, sample_weight=w)
    assert c.metrics["A"] == fastce.evaluate(t, logits=models["A"], sample_weight=w, groups=g)
    for metric, i in pairs.items():
        d = c.delta("B", "A", metric)
        assert d.test == "paired z (clustered)"
        assert d.estimate == plain.delta("B", "A", metric).estimate
        difference = rows["B"][i] * 1.0 - rows["A"][i]
        assert d.stderr == pytest.approx(clustered_reference(difference, g, w), rel=1e-9)
    assert "error bars clustered over" in str(c)


def test_rows_not_counted_and_infinite_losses():
    y, models, _, _ = multilabel_models(seed=7, n=3_000)
    models = {k: v.copy() for k, v in list(models.items())[:2]}
    models["A"][3] = np.nan  # a row not counted under A
    models["B"][2999, 0] = np.nan  # and one under B
    with pytest.warns(fastce.OmittedRowsWarning):
        c = fastce.compare(y, logits=models, nan_policy="omit")
    with np.errstate(invalid="ignore"):  # NaN scores: NaN rows
        (la, ba, ha, sa), (lb, bb, hb, sb) = (multilabel_rows(y, models[k], from_logits=True) for k in "AB")
    joint = ~np.isnan(la) & ~np.isnan(lb)
    assert c.delta("B", "A", "hamming_accuracy").n == int(joint.sum()) == 2_998
    _check_mean_delta(c.delta("B", "A", "brier"), ba[joint], bb[joint], None)
    assert c.correlation("A", "B") == pytest.approx(np.corrcoef(la[joint], lb[joint])[0, 1], rel=1e-9)
    with pytest.raises(fastce.InputError, match="row 3"):
        fastce.compare(y, logits=models)
    propagated = fastce.compare(y, logits=models, nan_policy="propagate")
    assert np.isnan(propagated.delta("B", "A", "subset_accuracy").estimate)
    assert "NaN" in str(propagated)
    # +inf on a label of 0 costs an infinite loss: the loss difference is undefined, the others are not.
    row, label = np.argwhere(y[:, :] == 0)[0]
    models["A"][row, label] = np.inf
    models["A"][3] = models["B"][3]
    models["B"][2999] = models["A"][2999]
    c = fastce.compare(y, logits=models)
    assert np.isinf(c.metrics["A"].cross_entropy)
    assert np.isnan(c.delta("B", "A").estimate) and np.isnan(c.delta("B", "A").stderr)
    assert np.isfinite(c.delta("B", "A", "subset_accuracy").estimate)
    assert np.isfinite(c.delta("B", "A", "brier").estimate)


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(0, N), max_size=4),
    checkpoint=st.booleans(),
    soft=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_comparator_equals_compare_for_any_split_and_checkpoint(cuts, checkpoint, soft, dtype):
    if soft:
        t, models, g = soft_models(seed=8)
        w = None
    else:
        t, models, w, g = multilabel_models(seed=9)
    models = {k: v.astype(dtype) for k, v in models.items()}
    expected = fastce.compare(t, logits=models, sample_weight=w, groups=g)
    cmp = Comparator(list(models), C, task="soft" if soft else "multilabel", groups=True)
    bounds = sorted({0, *cuts, N})  # an empty batch is refused, as the Evaluator's
    for lo, hi in zip(bounds, bounds[1:]):
        cmp.update(t[lo:hi], {k: v[lo:hi] for k, v in models.items()},
                   sample_weight=None if w is None else w[lo:hi], groups=g[lo:hi])
        if checkpoint:
            cmp = Comparator.from_state_dict(json.loads(json.dumps(cmp.state_dict(), allow_nan=False)))
    got = cmp.result()
    assert got.metrics == expected.metrics
    assert got.to_json() == expected.to_json()


def test_states_merge_serialise_and_refuse_to_mix():
    y, models, _, _ = multilabel_models(seed=10, n=2_000)
    t, soft, _ = soft_models(seed=10, n=2_000)
    c = fastce.compare(y, logits=models)
    back = type(c.state).from_dict(json.loads(json.dumps(c.state.to_dict(), allow_nan=False)))
    assert back.finalize().to_json() == c.to_json()
    other = fastce.compare(t, logits={"A": soft["A"], "B": soft["B"], "C": soft["A"]})
    with pytest.raises(ValueError, match="different settings"):
        c.state.merge(other.state)
    with pytest.raises(fastce.InputError, match="not one of"):
        Comparator(["A", "B"], 4, task="ranking")
    with pytest.raises(fastce.InputError, match="top-k accuracy needs one true class"):
        fastce.compare(t, logits=soft, top_k=(1, 2))
    half = fastce.compare(y[:1024], logits={k: v[:1024] for k, v in models.items()})
    rest = fastce.compare(y[1024:], logits={k: v[1024:] for k, v in models.items()})
    assert half.state.merge(rest.state).finalize().to_json() == c.to_json()  # 1024 rows: whole blocks (512 rows at C = 5)


@pytest.mark.parametrize("soft", [False, True])
def test_the_command_equals_compare(soft, tmp_path):
    if soft:
        t, models, g = soft_models(seed=11, n=3_000)
    else:
        t, models, _, g = multilabel_models(seed=11, n=3_000)
    models = {k: v.astype(np.float32) for k, v in models.items()}
    np.save(tmp_path / "t.npy", t)
    np.save(tmp_path / "g.npy", g)
    paths = []
    for name, z in models.items():
        np.save(tmp_path / f"{name}.npy", z)
        paths.append(tmp_path / f"{name}.npy")
    expected = fastce.compare(t, logits=models, groups=g)
    status, out, err = _main("compare", "--labels", tmp_path / "t.npy", "--logits", *paths, "--groups",
                             tmp_path / "g.npy", "--json", "--no-progress", "--chunk-rows", 700)
    assert status == 0, err
    assert strict_loads(out) == strict_loads(expected.to_json())
    status, out, err = _main("compare", "--labels", tmp_path / "t.npy", "--logits", *paths, "--no-progress")
    assert status == 0, err
    assert ("soft targets" if soft else "multi-label") in out


@pytest.mark.parametrize("soft", [False, True])
def test_dask_equals_compare(soft):
    da = pytest.importorskip("dask.array")
    import dask

    import fastce.dask

    if soft:
        t, models, g = soft_models(seed=12, n=3_000)
    else:
        t, models, _, g = multilabel_models(seed=12, n=3_000)
    expected = fastce.compare(t, logits=models, groups=g)
    arrays = {k: da.from_array(v, chunks=(700 + 100 * i, C)) for i, (k, v) in enumerate(models.items())}
    with dask.config.set(scheduler="synchronous"):
        got = fastce.dask.compare(da.from_array(t, chunks=(900, C)), logits=arrays, groups=g)
    for name in models:  # the means bit for bit; the errors clustered
        assert got.metrics[name].cross_entropy == expected.metrics[name].cross_entropy
        assert got.metrics[name].stderr["cross_entropy"] == pytest.approx(
            expected.metrics[name].stderr["cross_entropy"], rel=1e-12)
    for metric in expected.metric_names():
        assert got.delta("B", "A", metric).estimate == expected.delta("B", "A", metric).estimate
        # The per-group double-double sums merge exactly within their range: equal to rounding.
        assert got.delta("B", "A", metric).stderr == pytest.approx(expected.delta("B", "A", metric).stderr,
                                                                   rel=1e-12)
    # Without groups: the whole comparison, bit for bit.
    with dask.config.set(scheduler="synchronous"):
        plain = fastce.dask.compare(da.from_array(t, chunks=(900, C)), logits=arrays)
    assert plain.to_json() == fastce.compare(t, logits=models).to_json()


_SPECIAL_LOGITS = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, 0.0, 745.0, -745.0]
_SPECIAL_PROBA = [0.0, 1.0, 0.5, 1e-300, 1 - 1e-16, np.nan]


@pytest.mark.filterwarnings("ignore")  # omitted rows, infinite losses, errors unknown beyond float64
@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 30),
    c=st.integers(2, 6),
    task=st.sampled_from(["multilabel-logits", "multilabel-proba", "soft"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    weighted=st.booleans(),
)
def test_special_values_anywhere_in_either_model(data, n, c, task, dtype, weighted):
    """NaN, infinities, huge, tiny and boundary scores at any row and column of either model: each model's
    Metrics equal evaluate's, and the paired sums those of the formulas over the rows counted under both."""
    import warnings

    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    proba = task == "multilabel-proba"
    if task == "soft":
        y = np.exp(log_softmax(rng.standard_normal((n, c)), axis=1))
        weighted = False  # soft targets take no sample_weight
    else:
        y = (rng.random((n, c)) < 0.5).astype(np.int8)
    models = {k: (rng.random((n, c)) if proba else 3 * rng.standard_normal((n, c))) for k in "AB"}
    special = _SPECIAL_PROBA if proba else _SPECIAL_LOGITS
    for _ in range(data.draw(st.integers(0, 6))):
        name = data.draw(st.sampled_from("AB"))
        models[name][data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, c - 1))] = data.draw(
            st.sampled_from(special))
    with np.errstate(over="ignore"):  # 1e300 in float32: +inf, another special value
        models = {k: v.astype(dtype) for k, v in models.items()}
    w = rng.random(n) + 0.5 if weighted else None
    key = "proba" if proba else "logits"
    kind = "soft" if task == "soft" else "multilabel"  # explicit: a one-hot y would be read as class labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # omitted rows, infinite losses
        try:
            c_ = fastce.compare(y, **{key: models}, sample_weight=w, nan_policy="omit", task=kind)
        except fastce.InputError as exc:  # every row omitted under a model: evaluate refuses it too
            with pytest.raises(fastce.InputError):
                for v in models.values():
                    fastce.evaluate(y, **{key: v}, sample_weight=w, nan_policy="omit", task=kind)
            assert "row" in str(exc) or "no rows" in str(exc) or "omitted" in str(exc)
            event("refused, as evaluate refuses it")
            return
        for k, v in models.items():
            assert c_.metrics[k] == fastce.evaluate(y, **{key: v}, sample_weight=w, nan_policy="omit", task=kind), k
        with np.errstate(all="ignore"):
            if task == "soft":
                rows = {k: soft_rows(y, v.astype(np.float64)) for k, v in models.items()}
                nan_row = {k: ~np.isfinite(v.astype(np.float64)).all(1) & ~(
                    np.isneginf(v).any(1) & ~np.isnan(v).any(1) & ~np.isposinf(v).any(1) & ~np.isneginf(v).all(1))
                    for k, v in models.items()}
                means = {"cross_entropy": 0, "kl_divergence": 1}
            else:
                rows = {k: multilabel_rows(y, v.astype(np.float64), from_logits=not proba) for k, v in models.items()}
                if not proba:  # 0/1 targets: a term whose coefficient is 0 is left out (no 0 * inf)
                    for k, v in models.items():
                        s64 = v.astype(np.float64)
                        loss = np.where(y == 1, np.logaddexp(0.0, -s64), np.logaddexp(0.0, s64))
                        rows[k] = (np.where(np.isnan(s64).any(1), np.nan, loss.mean(1)),) + rows[k][1:]
                nan_row = {k: np.isnan(v).any(1) for k, v in models.items()}
                means = {"cross_entropy": 0, "brier": 1, "hamming_accuracy": 2}
    joint = ~nan_row["A"] & ~nan_row["B"]
    if not joint.any():
        event("no row counted under both")
        return
    event("paired sums checked")
    for metric, i in means.items():
        xa, xb = rows["A"][i][joint] * 1.0, rows["B"][i][joint] * 1.0
        d = c_.delta("B", "A", metric)
        if not (np.isfinite(xa).all() and np.isfinite(xb).all()):
            assert np.isnan(d.estimate)  # an infinite loss: the difference is undefined
            continue
        ww = np.ones(joint.sum()) if w is None else w[joint]
        assert d.n == int(joint.sum())
        # float32 scores: each row's value within a few float32 ulp of the float64 reference.
        rel = 1e-6 if dtype == np.float32 else 1e-9
        scale = np.abs(xa).sum() + np.abs(xb).sum()
        assert d.estimate == pytest.approx((ww * (xb - xa)).sum() / ww.sum(), rel=rel, abs=rel * scale / len(xa) + 1e-12)
        if len(xa) >= 2 and np.abs(xb - xa).max() < 1e100:  # squares within float64: a known error
            # Each row's float64 square and its block's float64 sum round before the exact merge: se^2 is off
            # by up to ~(rows + 1) eps sum w^2 x^2 / W^2 (fastce.errorbars), seen where the differences are
            # (nearly) constant: two rows both 1/3 apart gave 2.5e-9 for 0.
            squares = (ww * ww * (xb - xa) ** 2).sum()
            rounding = math.sqrt(2 * (len(xa) + 1) * np.finfo(np.float64).eps * squares) / ww.sum()
            assert d.stderr == pytest.approx(se_reference(xb - xa, ww), rel=1e-4,
                                             abs=rel * scale / len(xa) + rounding + 1e-12)
    hit = -1
    ha, hb = rows["A"][hit][joint] > 0.5, rows["B"][hit][joint] > 0.5
    table = c_.table("A", "B")
    assert (table["only_a_right"]["rows"], table["only_b_right"]["rows"]) == (int((ha & ~hb).sum()),
                                                                           int((hb & ~ha).sum()))


def test_binary_scores_take_class_labels_or_one_hot_rows_only():
    rng = np.random.default_rng(20)
    za, zb = rng.standard_normal(100), rng.standard_normal(100)
    one_hot = np.eye(2)[rng.integers(0, 2, 100)]
    assert fastce.compare(one_hot, logits=[za, zb]).to_json() == fastce.compare(one_hot.argmax(1),
                                                                                 logits=[za, zb]).to_json()
    for target in (rng.random((100, 2)), np.ones((100, 2))):  # as evaluate, which refuses them too
        with pytest.raises(fastce.InputError, match="not one-hot rows: a binary comparison") as info:
            fastce.compare(target, logits=[za, zb])
        assert info.value.argument == "y_true"
        with pytest.raises(fastce.InputError):
            fastce.evaluate(target, logits=za)


def test_the_task_holds_for_every_batch_whatever_its_rows_look_like(tmp_path):
    """A batch of multi-label rows that happen to sum to one is still read as multi-label (the task is the
    comparison's, not each batch's), so every door and any chunking give compare's numbers."""
    rng = np.random.default_rng(21)
    n = 2048
    p = rng.random(n)
    t = np.stack([p, 1 - p], axis=1)
    t[1024:, 1] = rng.random(1024)  # rows 1024... no longer sum to one: the whole target is multi-label
    models = {"A": rng.standard_normal((n, 2)), "B": rng.standard_normal((n, 2))}
    expected = fastce.compare(t, logits=models)
    assert expected.state.task == "multilabel"
    cmp = Comparator(["A", "B"], 2, task="multilabel")
    for lo in range(0, n, 512):
        cmp.update(t[lo:lo + 512], {k: v[lo:lo + 512] for k, v in models.items()})
    assert cmp.result().to_json() == expected.to_json()
    np.save(tmp_path / "t.npy", t)
    for name, z in models.items():
        np.save(tmp_path / f"{name}.npy", z)
    status, out, err = _main("compare", "--labels", tmp_path / "t.npy", "--logits", tmp_path / "A.npy",
                             tmp_path / "B.npy", "--json", "--no-progress", "--chunk-rows", 512)
    assert status == 0, err
    assert strict_loads(out) == strict_loads(expected.to_json())
    # An explicit task takes what evaluate takes with it: smoothed two-label rows that sum to one.
    smooth = np.where(rng.random((300, 2)) < 0.5, 0.1, 0.9)
    smooth[:, 1] = 1 - smooth[:, 0]
    c = fastce.compare(smooth, logits={k: v[:300] for k, v in models.items()}, task="multilabel")
    assert c.metrics["A"] == fastce.evaluate(smooth, logits=models["A"][:300], task="multilabel")
    with pytest.raises(fastce.InputError, match="logits have shape .* this multilabel comparison") as info:
        fastce.compare(t, logits=[models["A"][:, 0], models["B"][:, 0]], task="multilabel")
    assert info.value.argument == "logits"


@pytest.mark.filterwarnings("ignore::fastce.errors.FastCEWarning")  # each model's own errors: unknown too
def test_a_partial_sum_beyond_float64_gives_unknown_errors_not_wrong_ones():
    """Losses near 1e308 overflow a block's squared sums: the pair leaves those partials out and says so
    (NaN with a warning), through JSON and merges; a finite exact sum beyond float64 gives an infinite error."""
    rng = np.random.default_rng(22)
    y = rng.integers(0, 4, 3_000)
    a, b = rng.standard_normal((3_000, 4)), rng.standard_normal((3_000, 4))
    a[[5, 6], y[[5, 6]]] = -1.5e308  # two losses of 1.5e308: their squares are not finite
    c = fastce.compare(y, logits={"A": a, "B": b})
    assert c.state.dropped and c.state.nonfinite_pair_sums > 0
    with pytest.warns(fastce.FastCEWarning, match="paired standard error is unknown"):
        d = c.delta("B", "A")
    assert np.isnan(d.stderr) and np.isnan(d.p_value)
    assert np.isnan(c.confidently_wrong("A", "B")["loss_difference_share"])
    assert np.isnan(c.correlation("A", "B"))
    accuracy = c.delta("B", "A", "accuracy")  # its own sums are finite: known, no warning
    assert np.isfinite(accuracy.stderr) and np.isfinite(accuracy.estimate)
    back = type(c.state).from_dict(json.loads(json.dumps(c.state.to_dict(), allow_nan=False)))
    assert back.dropped == c.state.dropped
    first = fastce.compare(y[:1024], logits={"A": a[:1024], "B": b[:1024]})
    rest = fastce.compare(y[1024:], logits={"A": a[1024:], "B": b[1024:]})
    assert first.state.merge(rest.state).dropped == c.state.dropped
    assert not rest.state.merge(rest.state).dropped
    # Losses of 1e154 in different blocks: every partial is finite, their exact sum of squares is not a float64.
    a2 = rng.standard_normal((3_000, 4))
    a2[[5, 2_000], y[[5, 2_000]]] = -1.2e154
    c2 = fastce.compare(y, logits={"A": a2, "B": b})
    assert not c2.state.dropped
    d2 = c2.delta("B", "A")
    assert d2.stderr == np.inf and np.isnan(d2.p_value)
    assert "no test possible" in str(c2)
