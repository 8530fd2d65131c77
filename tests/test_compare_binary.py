"""fastce.compare of 1-D binary scores (the logit or probability of class 1), from every door.

Each model is read by evaluate's binary kernels (its Metrics equal
``evaluate`` bit for bit); each row's statistics come from
``kernels_binary.binary_row_stats`` right after the kernel read its slice,
and the paired sums are compare's.  Held here to numpy references written
from the formulas and to scipy's tests, as the multi-class comparison is.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import expit

import fastce
from fastce import cli
from fastce.compare import ComparisonState
from test_compare import strict_loads
from test_errorbars import clustered_reference, se_reference

N = 20_000


def binary_models(n=N, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    truth = 2 * rng.standard_normal(n)
    y = (rng.random(n) < expit(truth)).astype(np.int64)
    za = truth + rng.standard_normal(n)
    zb = truth + 0.5 * rng.standard_normal(n)
    zc = zb.copy()
    wrong = np.arange(n // 100)
    zc[wrong] = np.where(y[wrong] == 1, -15.0, 15.0)  # confidently wrong rows
    return y, {"A": za.astype(dtype), "B": zb.astype(dtype), "C": zc.astype(dtype)}


def per_row_binary(y, s, *, from_logits):
    """Per-row loss, (p - y)^2 and hit from the definitions (scikit-learn's clipped log loss for probabilities)."""
    s = s.astype(np.float64)
    if from_logits:
        loss = np.where(y == 1, np.logaddexp(0.0, -s), np.logaddexp(0.0, s))
        p = expit(s)
        hit = (s > 0) == (y == 1)
    else:
        eps = np.finfo(np.float64).eps
        p = s
        loss = -np.log(np.clip(np.where(y == 1, p, 1 - p), eps, 1 - eps))
        hit = (p > 0.5) == (y == 1)
    return loss, (p - y) ** 2, hit


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_comparison_matches_evaluate_and_the_formulas(from_logits, weighted):
    y, models = binary_models(seed=1 + weighted)
    if not from_logits:
        models = {k: expit(v) for k, v in models.items()}
    key = "logits" if from_logits else "proba"
    w = np.random.default_rng(3).random(N) * 2 if weighted else None
    ww = np.ones(N) if w is None else w
    c = fastce.compare(y, **{key: models}, sample_weight=w)
    for name, s in models.items():
        assert c.metrics[name] == fastce.evaluate(y, **{key: s}, sample_weight=w), name
        assert c.metrics[name].task == "binary"
    rows = {name: per_row_binary(y, s, from_logits=from_logits) for name, s in models.items()}
    for a, b in (("A", "B"), ("C", "A"), ("B", "C")):
        (la, ba, ha), (lb, bb, hb) = rows[a], rows[b]
        d = c.delta(b, a, "cross_entropy")
        assert d.estimate == pytest.approx((ww * (lb - la)).sum() / ww.sum(), rel=1e-9)
        assert d.stderr == pytest.approx(se_reference(lb - la, w), rel=1e-8)
        if not weighted:
            assert d.estimate / d.stderr == pytest.approx(stats.ttest_rel(lb, la).statistic, rel=1e-8)
        brier = c.delta(b, a, "brier")
        assert brier.estimate == pytest.approx((ww * (bb - ba)).sum() / ww.sum(), rel=1e-9, abs=1e-15)
        assert brier.stderr == pytest.approx(se_reference(bb - ba, w), rel=1e-8)
        acc = c.delta(b, a, "accuracy")
        only_a, only_b = int((ha & ~hb).sum()), int((hb & ~ha).sum())
        assert acc.p_value == pytest.approx(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue, rel=1e-9)
        assert acc.estimate == pytest.approx((ww * (hb * 1.0 - ha)).sum() / ww.sum(), abs=1e-12)
        table = c.table(a, b)
        assert (table["only_a_right"]["rows"], table["only_b_right"]["rows"]) == (only_a, only_b)
        assert table["both_wrong"]["weight"] == pytest.approx(ww[~ha & ~hb].sum(), rel=1e-12)
        assert c.correlation(a, b) == pytest.approx(np.corrcoef(la, lb)[0, 1], rel=1e-9)
    # C's confidently wrong rows (p(true) < 0.01, right under A) carry most of its loss excess.
    la, _, ha = rows["A"]
    lc, _, hc = rows["C"]
    mask = ~hc & (np.exp(-lc) < 0.01) & ha
    cw = c.confidently_wrong("C", "A")
    assert cw["rows"] == int(mask.sum()) > 0
    assert cw["loss_difference_share"] == pytest.approx((ww * (lc - la))[mask].sum() / (ww * (lc - la)).sum(),
                                                        rel=1e-9)
    text = str(c)
    assert "binary: 1-D scores of class 1" in text and "confidently wrong" in text


@pytest.mark.filterwarnings("ignore::fastce.errors.TopKWarning")  # top-2 of two classes: meaningless, warned
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_every_score_dtype_and_mixed_dtypes_equal_evaluate(dtype):
    y, models = binary_models(n=5_000, seed=4)
    models = {"A": models["A"].astype(dtype), "B": models["B"], "C": models["C"].astype(dtype)}
    c = fastce.compare(y, logits=models, top_k=(1, 2))
    for name, s in models.items():
        assert c.metrics[name] == fastce.evaluate(y, logits=s, top_k=(1, 2)), name
    assert c.delta("B", "A", "top_k_accuracy", k=2).estimate == 0.0  # two classes: every row is in the top 2


def test_special_values_in_binary_scores():
    y, models = binary_models(n=3_000, seed=5)
    a, b = models["A"].copy(), models["B"].copy()
    a[[10, 900]] = np.nan
    b[20] = np.inf if y[20] == 0 else -np.inf  # certain and wrong: an infinite loss
    b[30] = np.inf if y[30] == 1 else -np.inf  # certain and right: loss 0
    with pytest.raises(fastce.InputError, match=r"logits\['A'\] row 10"):
        fastce.compare(y, logits={"A": a, "B": b})
    with pytest.warns(fastce.OmittedRowsWarning):
        c = fastce.compare(y, logits={"A": a, "B": b}, nan_policy="omit")
    assert c.metrics["A"].n == 2_998 and c.metrics["B"].cross_entropy == np.inf
    d = c.delta("B", "A")
    assert np.isnan(d.estimate) and d.n == 2_998  # an infinite loss difference is left undefined
    assert c.delta("B", "A", "accuracy").n == 2_998
    # The table gives an infinite loss no interval (it printed "inf (-inf-inf)"); a finite one keeps its own.
    (row_b,) = [line for line in str(c).splitlines() if line.startswith("B ")]
    (row_a,) = [line for line in str(c).splitlines() if line.startswith("A ")]
    assert "inf (no interval)" in row_b and "-inf" not in row_b
    low, high = c.metrics["A"].interval("cross_entropy")
    assert f"({low:.4f}-{high:.4f})" in row_a
    p = expit(models["A"])
    p[7] = 1.5
    with pytest.raises(fastce.InputError, match=r"proba\['A'\] row 7"):
        fastce.compare(y, proba={"A": p, "B": expit(models["B"])})


def test_binary_errors_say_what_to_pass():
    y, models = binary_models(n=200, seed=6)
    with pytest.raises(fastce.InputError, match="same rows and classes"):
        fastce.compare(y, logits={"A": models["A"], "B": np.stack([models["B"]] * 2, axis=1)})
    bad = y.copy()
    bad[3] = 2
    with pytest.raises(fastce.InputError, match="y_true row 3 .*binary task: labels are 0 or 1"):
        fastce.compare(bad, logits=models)
    cmp = fastce.Comparator(["A", "B"], task="binary")
    with pytest.raises(fastce.InputError, match=r"this binary comparison takes 1-D scores of class 1"):
        cmp.update(y, [np.stack([models["A"]] * 2, axis=1)] * 2)
    with pytest.raises(fastce.InputError, match="this multiclass comparison takes scores of shape"):
        fastce.Comparator(["A", "B"], 2).update(y, [models["A"], models["B"]])
    with pytest.raises(fastce.InputError, match="two classes, not 3"):
        fastce.Comparator(["A", "B"], 3, task="binary")
    with pytest.raises(fastce.InputError, match="num_classes must be a positive int"):
        fastce.Comparator(["A", "B"])


@pytest.mark.parametrize("from_logits", [True, False])
def test_comparator_any_split_and_checkpoint_equals_compare(from_logits):
    y, models = binary_models(n=20_000, seed=7)
    if not from_logits:
        models = {k: expit(v) for k, v in models.items()}
    key = "logits" if from_logits else "proba"
    w = np.random.default_rng(8).random(y.shape[0])
    g = np.sort(np.random.default_rng(9).integers(0, 700, y.shape[0]))
    whole = fastce.compare(y, **{key: models}, sample_weight=w, groups=g)
    cmp = fastce.Comparator(list(models), task="binary", from_logits=from_logits, groups=True)
    assert cmp.block_rows == (8192 if from_logits else 512)
    cuts = [0, 1, 8191, 8195, 12_000, 19_999, 20_000]
    for start, stop in zip(cuts, cuts[1:]):
        part = slice(start, stop)
        cmp.update(y[part], [s[part] for s in models.values()], sample_weight=w[part], groups=g[part])
        if start == 8191:  # a checkpoint with pending rows, resumed
            cmp = fastce.Comparator.from_state_dict(strict_loads(json.dumps(cmp.state_dict())))
    result = cmp.result()
    assert result.to_json() == whole.to_json()


def test_clustered_binary_comparison():
    y, models = binary_models(n=20_000, seed=10)
    g = np.sort(np.random.default_rng(11).integers(0, 800, y.shape[0]))
    c = fastce.compare(y, logits=models, groups=g)
    (la, _, ha), (lb, _, hb) = (per_row_binary(y, models[k], from_logits=True) for k in ("A", "B"))
    assert c.delta("B", "A").stderr == pytest.approx(clustered_reference(lb - la, g), rel=1e-9)
    acc = c.delta("B", "A", "accuracy")
    assert acc.stderr == pytest.approx(clustered_reference(hb * 1.0 - ha, g), rel=1e-9)
    assert acc.test == "paired z (clustered)"
    for name, s in models.items():
        assert c.metrics[name] == fastce.evaluate(y, logits=s, groups=g)
    # Halves cut on a block of the binary logit kernel (8192 rows), merged through strict JSON.
    cut = 8192
    halves = [fastce.compare(y[s], logits={k: v[s] for k, v in models.items()}, groups=g[s]).state
              for s in (slice(0, cut), slice(cut, None))]
    merged = ComparisonState.from_dict(strict_loads(json.dumps(halves[0].merge(halves[1]).to_dict()))).finalize()
    assert merged.state.task == "binary"
    assert merged.metrics["C"] == c.metrics["C"]
    assert merged.delta("B", "A").stderr == pytest.approx(c.delta("B", "A").stderr, rel=1e-12)
    with pytest.raises(ValueError, match="cannot merge comparisons with different settings"):
        halves[0].merge(fastce.compare(y % 2, logits={k: np.stack([-v, v], 1) for k, v in models.items()}).state)


def _main(*argv):
    out, err = io.StringIO(), io.StringIO()
    status = cli.main([str(a) for a in argv], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_the_command_compares_binary_score_files(tmp_path):
    y, models = binary_models(n=20_000, seed=12)
    models = {k: v.astype(np.float32) for k, v in models.items()}
    g = np.sort(np.random.default_rng(13).integers(0, 500, y.shape[0]))
    expected = fastce.compare(y, logits=models, groups=g)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "g.npy", g)
    for name, s in models.items():
        np.save(tmp_path / f"{name}.npy", s)
    paths = [tmp_path / f"{name}.npy" for name in models]
    status, out, err = _main("compare", "--labels", tmp_path / "y.npy", "--logits", *paths, "--groups",
                             tmp_path / "g.npy", "--json", "--chunk-rows", "5000", "--no-progress")
    assert status == 0, err
    assert strict_loads(out) == strict_loads(expected.to_json())
    status, out, err = _main("compare", "--labels", tmp_path / "y.npy", "--logits", *paths, "--no-progress")
    assert status == 0, err
    assert "binary: 1-D scores of class 1" in out
    np.save(tmp_path / "two.npy", np.stack([-models["A"], models["A"]], axis=1))
    status, _, err = _main("compare", "--labels", tmp_path / "y.npy", "--logits", paths[0], tmp_path / "two.npy",
                           "--no-progress")
    assert status == 2 and "has 2 classes but" in err and "has 1-D binary scores" in err
    # Errors name the file they concern, as fastce eval's do.
    bad = y.copy()
    bad[5] = 3
    np.save(tmp_path / "bad.npy", bad)
    status, _, err = _main("compare", "--labels", tmp_path / "bad.npy", "--logits", *paths, "--no-progress")
    assert status == 2 and "bad.npy: y_true row 5 is 3" in err
    broken = models["B"].copy()
    broken[11] = np.nan
    np.save(tmp_path / "B.npy", broken)
    status, _, err = _main("compare", "--labels", tmp_path / "y.npy", "--logits", *paths, "--no-progress")
    assert status == 2 and "B.npy: logits['B'] row 11 holds NaN" in err and "--nan-policy omit" in err
    np.save(tmp_path / "Y.npy", (np.random.default_rng(20).random((y.shape[0], 2)) < 0.5).astype(np.int8))
    np.save(tmp_path / "two_b.npy", np.stack([-models["B"], models["B"]], axis=1))
    # A (rows, classes) labels file of 0/1 rows that are not one-hot: the multi-label task, as fastce eval reads it.
    status, out, err = _main("compare", "--labels", tmp_path / "Y.npy", "--logits", tmp_path / "two.npy",
                             tmp_path / "two_b.npy", "--no-progress")
    assert status == 0, err
    assert "multi-label: 2 labels" in out
    status, _, err = _main("compare", "--labels", tmp_path / "Y.npy", "--logits", tmp_path / "two.npy",
                           tmp_path / "two_b.npy", "--task", "multiclass", "--no-progress")
    assert status == 2 and "Y.npy" in err and "multi-label targets" in err


def test_dask_compares_binary_scores():
    da = pytest.importorskip("dask.array")
    import dask

    import fastce.dask

    y, models = binary_models(n=20_000, seed=14)
    w = np.random.default_rng(15).random(y.shape[0])
    whole = fastce.compare(y, logits=models, sample_weight=w)
    arrays = {k: da.from_array(v, chunks=ch) for (k, v), ch in zip(models.items(), (7000, 8192, 11_000))}
    with dask.config.set(scheduler="synchronous"):
        got = fastce.dask.compare(y, logits=arrays, sample_weight=w)
    assert got.to_json() == whole.to_json()
    g = np.sort(np.random.default_rng(21).integers(0, 600, y.shape[0]))
    grouped = fastce.compare(y, logits=models, sample_weight=w, groups=g)
    with dask.config.set(scheduler="synchronous"):
        got = fastce.dask.compare(y, logits=arrays, sample_weight=w, groups=g)
    for name in models:
        assert got.metrics[name] == grouped.metrics[name]
    # The per-group double-double sums merge exactly within their range: equal to rounding.
    assert got.delta("C", "A").stderr == pytest.approx(grouped.delta("C", "A").stderr, rel=1e-12)
    assert got.delta("B", "A", "accuracy").stderr == pytest.approx(grouped.delta("B", "A", "accuracy").stderr,
                                                                    rel=1e-12)


def test_one_hot_rows_are_read_as_classes_and_other_targets_ask_their_task():
    rng = np.random.default_rng(16)
    y = rng.integers(0, 4, 600)
    za, zb = rng.standard_normal((600, 4)), rng.standard_normal((600, 4))
    one_hot = np.eye(4, dtype=np.int64)[y]
    assert fastce.compare(one_hot, logits=[za, zb]).to_json() == fastce.compare(y, logits=[za, zb]).to_json()
    indicator = (rng.random((600, 4)) < 0.3).astype(np.int64)
    assert fastce.compare(indicator, logits=[za, zb]).state.task == "multilabel"
    assert fastce.compare(rng.dirichlet(np.ones(4), 600), logits=[za, zb]).state.task == "soft"
    with pytest.raises(fastce.InputError, match="multi-label targets") as info:
        fastce.compare(indicator, logits=[za, zb], task="multiclass")
    assert info.value.argument == "y_true"


@pytest.mark.filterwarnings("ignore::fastce.errors.OmittedRowsWarning")
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_models_read_together_and_apart_agree(from_logits, weighted):
    """One kernel for every model (compare_binary_blocks: the pair inputs from evaluate's loops) against each
    model apart (its per-row statistics from kernels_binary.binary_row_stats), rare rows included."""
    y, models = binary_models(n=30_000, seed=17)
    models = {k: v.copy() for k, v in models.items()}
    models["A"][[5, 9000, 29_999]] = np.nan
    models["B"][77] = np.inf if y[77] == 0 else -np.inf  # an infinite loss (logits)
    if not from_logits:
        models = {k: expit(v) for k, v in models.items()}
    key = "logits" if from_logits else "proba"
    w = np.random.default_rng(18).random(y.shape[0]) if weighted else None
    g = np.sort(np.random.default_rng(19).integers(0, 900, y.shape[0]))
    together = fastce.compare(y, **{key: models}, sample_weight=w, groups=g, nan_policy="omit")
    names = list(models)
    from fastce.compare import validated_batch

    batch = validated_batch(y, list(models.values()), names, key, w, g)
    state = ComparisonState.empty(names, 2, (1,), from_logits=from_logits, confident_below=0.01, grouped=True,
                                  task="binary")
    state._read_apart(batch.views, batch.eps, batch.labels, batch.weights, batch.groups, state._score_binary)
    apart = state.finalize("omit")
    same_comparisons(apart, together)


def same_comparisons(one, other):
    """The same metrics per model and, for every pair of models A, B, C, the same paired differences (to 1e-12),
    tables and confidently-wrong counts."""
    for name in ("A", "B", "C"):
        assert one.metrics[name] == other.metrics[name], name
    for a, b in (("A", "B"), ("B", "C"), ("A", "C")):
        for metric in ("cross_entropy", "brier", "accuracy"):
            x, z = one.delta(b, a, metric), other.delta(b, a, metric)
            assert (x.n, x.test) == (z.n, z.test)
            for field in ("estimate", "stderr", "p_value"):
                assert getattr(x, field) == pytest.approx(getattr(z, field), rel=1e-12, nan_ok=True), (a, b, metric)
        assert one.table(a, b) == other.table(a, b)
        assert one.confidently_wrong(b, a) == pytest.approx(other.confidently_wrong(b, a), rel=1e-12, nan_ok=True)


SPECIAL_LOGITS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 88.0, -88.0, 1e-30]
SPECIAL_PROBA = [np.nan, 0.0, 1.0, 0.5, 1e-300, 1.0 - 1e-16, 5e-324, np.float32(1e-45)]


@pytest.mark.filterwarnings("ignore::fastce.errors.OmittedRowsWarning")
@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 20_000),
    hits=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 19_999), st.integers(0, 9)), max_size=6),
    weighted=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    models=st.integers(2, 3),
    from_logits=st.booleans(),
)
def test_special_values_anywhere_in_binary_scores(n, hits, weighted, dtype, models, from_logits):
    """The binary compare kernel is a specialised path: NaN, +-inf, huge and tiny logits (probabilities: NaN,
    0, 1, ties at 0.5, subnormals) at any row of any model, with or without weights, give evaluate's metrics
    for each model and the per-model path's pairs."""
    from fastce.compare import validated_batch

    y, arrays = binary_models(n=n, seed=n)
    names = list(arrays)[:models]
    special = SPECIAL_LOGITS if from_logits else SPECIAL_PROBA
    scores = {k: (arrays[k] if from_logits else expit(arrays[k])).astype(dtype) for k in names}
    for m, row, which in hits:
        if m < models and row < n:
            scores[names[m]][row] = special[which % len(special)]
    key = "logits" if from_logits else "proba"
    w = np.random.default_rng(n).random(n) if weighted else None
    try:
        expected = {k: fastce.evaluate(y, **{key: s}, sample_weight=w, nan_policy="omit") for k, s in scores.items()}
    except fastce.InputError as exc:  # every row of a model omitted: compare says the same
        with pytest.raises(fastce.InputError, match=str(exc).split(":")[0]):
            fastce.compare(y, **{key: scores}, sample_weight=w, nan_policy="omit")
        return
    together = fastce.compare(y, **{key: scores}, sample_weight=w, nan_policy="omit")
    assert together.metrics == expected
    batch = validated_batch(y, list(scores.values()), names, key, w, None)
    state = ComparisonState.empty(names, 2, (1,), from_logits=from_logits, confident_below=0.01, task="binary")
    state._read_apart(batch.views, batch.eps, batch.labels, batch.weights, None, state._score_binary)
    apart = state.finalize("omit")
    for a, b in [(names[0], names[1]), (names[-1], names[0])]:
        for metric in ("cross_entropy", "brier", "accuracy"):
            x, z = apart.delta(b, a, metric), together.delta(b, a, metric)
            assert x.n == z.n
            for field in ("estimate", "stderr", "p_value"):
                assert getattr(x, field) == pytest.approx(getattr(z, field), rel=1e-9, abs=1e-15, nan_ok=True)
        assert apart.table(a, b) == together.table(a, b)
        assert apart.confidently_wrong(b, a) == pytest.approx(together.confidently_wrong(b, a), rel=1e-9,
                                                              nan_ok=True)


@pytest.mark.filterwarnings("ignore::fastce.errors.OmittedRowsWarning")
@pytest.mark.parametrize("from_logits", [True, False])
def test_unweighted_rare_blocks_are_paired_again_with_masks(from_logits, monkeypatch):
    """Without weights the binary kernel pairs clean blocks only and marks the others rare; each rare block is
    done again, alone, with the masked sums (compare_kernels._redo_rare_blocks): the same results as every block
    read with masks (weights of 1 take that path for every block) and as each model read apart."""
    from fastce import compare_kernels as CK

    y, models = binary_models(n=40_000, seed=23)
    models = {k: v.copy() for k, v in models.items()}
    models["A"][[5, 25_000]] = np.nan  # two blocks, far apart
    models["C"][39_999] = np.inf if y[39_999] == 0 else -np.inf  # the last, short block: an infinite loss (logits)
    if not from_logits:
        models = {k: expit(v) for k, v in models.items()}
    key = "logits" if from_logits else "proba"
    calls = []
    kernel = CK._compare_tasks_binary
    monkeypatch.setattr(CK, "_compare_tasks_binary",
                        lambda *args: calls.append((args[9], args[15])) or kernel(*args))  # nblocks, masked
    fast = fastce.compare(y, **{key: models}, nan_policy="omit")
    rare = [c for c in calls if c[1] is True]
    assert calls[0][1] is None and rare == [(1, True)] * (3 if from_logits else 2)
    calls.clear()
    masked = fastce.compare(y, **{key: models}, sample_weight=np.ones(y.shape[0]), nan_policy="omit")
    assert calls and all(c[1] is True for c in calls)
    same_comparisons(fast, masked)
