"""fastce.compare against numpy references of the paired statistics, scipy's tests, and evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

import fastce
from fastce.compare import ComparisonState
from test_errorbars import per_row, se_reference


def strict_loads(text):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def three_models(n=4000, c=10, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    za = rng.standard_normal((n, c))
    za[np.arange(n), y] += 1.5
    zb = za * 1.3 + 0.3 * rng.standard_normal((n, c))
    zc = za.copy()
    zc[np.arange(n), y] += 0.5
    bad = np.arange(n // 50)
    zc[bad, (y[bad] + 1) % c] += 12.0  # confidently wrong rows
    return y, {"A": za.astype(dtype), "B": zb.astype(dtype), "C": zc.astype(dtype)}


def test_each_models_metrics_equal_evaluate():
    y, models = three_models()
    w = np.random.default_rng(1).random(y.shape[0])
    c = fastce.compare(y, logits=models, top_k=(1, 3), sample_weight=w)
    for name, z in models.items():
        assert c.metrics[name] == fastce.evaluate(y, logits=z, top_k=(1, 3), sample_weight=w)


def test_each_models_state_counts_equal_evaluate_and_logits_in_unit_interval_do_not_warn():
    """Logits rows with every entry in [0, 1] that do not sum to 1 are not probability-like (as in evaluate).

    compare used to count them with an infinite sum tolerance: a false
    ProbabilitiesAsLogitsWarning, and states whose counters differed from evaluate's.
    """
    import warnings

    from fastce.api import accumulate

    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, 500)
    models = {"a": rng.random((500, 4)) * 0.2, "b": rng.random((500, 4)) * 0.2}
    models["b"][:250] = rng.dirichlet(np.ones(4), 250)  # half of b's rows do look like probabilities
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = fastce.compare(y, logits=models)
        streamed = fastce.Comparator(names=["a", "b"], num_classes=4)
        streamed.update(y, [models["a"], models["b"]])
        streamed.result()
    for name, z in models.items():
        alone, _ = accumulate(y, logits=z)
        assert np.array_equal(c.state.states[name].counts, alone.counts), name
    assert c.state.states["b"].count("probability_like_rows") == 250


@pytest.mark.parametrize("weighted", [False, True])
def test_paired_deltas_match_the_formulas(weighted):
    y, models = three_models(seed=2, dtype=np.float64)  # float64 math: the formulas to 1e-9
    n = y.shape[0]
    w = np.random.default_rng(3).random(n) * 2 if weighted else None
    c = fastce.compare(y, logits=models, top_k=(1, 3), sample_weight=w)
    rows = {name: per_row(y, z) for name, z in models.items()}
    ww = np.ones(n) if w is None else w
    for a, b in (("A", "B"), ("C", "A"), ("B", "C")):
        la, ba, ra = rows[a]
        lb, bb, rb = rows[b]
        d = c.delta(b, a, "cross_entropy")
        diff = lb - la
        assert d.estimate == pytest.approx((ww * diff).sum() / ww.sum(), rel=1e-9, abs=1e-12)
        assert d.stderr == pytest.approx(se_reference(diff, w), rel=1e-9)
        assert d.p_value == pytest.approx(2 * stats.norm.sf(abs(d.estimate / d.stderr)), rel=1e-9)
        if not weighted:
            assert d.estimate / d.stderr == pytest.approx(stats.ttest_rel(lb, la).statistic, rel=1e-9)
        brier = c.delta(b, a, "brier")
        assert brier.stderr == pytest.approx(se_reference(bb - ba, w), rel=1e-8)
        for k in (1, 3):
            hit_a, hit_b = ra < k, rb < k
            acc = c.delta(b, a, "top_k_accuracy", k=k)
            assert acc.estimate == pytest.approx((ww * (hit_b * 1.0 - hit_a)).sum() / ww.sum(), abs=1e-12)
            assert acc.stderr == pytest.approx(se_reference(hit_b * 1.0 - hit_a, w), rel=1e-9)
            only_a = int((hit_a & ~hit_b).sum())
            only_b = int((hit_b & ~hit_a).sum())
            assert acc.p_value == pytest.approx(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue, rel=1e-9)
            table = c.table(a, b, k=k)
            assert table["only_a_right"]["rows"] == only_a and table["only_b_right"]["rows"] == only_b
            assert table["both_right"]["rows"] == int((hit_a & hit_b).sum())
            assert table["both_wrong"]["weight"] == pytest.approx(ww[~hit_a & ~hit_b].sum(), rel=1e-12)
        # Antisymmetric in the pair's order.
        assert c.delta(a, b, "cross_entropy").estimate == -d.estimate
        assert c.delta(a, b, "accuracy").p_value == c.delta(b, a, "accuracy").p_value
        assert c.correlation(a, b) == pytest.approx(np.corrcoef(la, lb)[0, 1], rel=1e-9)


def test_confidently_wrong_rows_and_their_share_of_the_loss_difference():
    y, models = three_models(seed=4)
    c = fastce.compare(y, logits=models)
    rows = {name: per_row(y, z) for name, z in models.items()}
    la, _, ra = rows["A"]
    lc, _, rc = rows["C"]
    p_true_c = np.exp(-lc)
    mask = (rc >= 1) & (p_true_c < 0.01) & (ra < 1)
    cw = c.confidently_wrong("C", "A")
    assert cw["rows"] == int(mask.sum()) > 0
    assert cw["loss_difference_share"] == pytest.approx((lc - la)[mask].sum() / (lc - la).sum(), rel=1e-9)


def test_independent_of_chunking_merge_and_json():
    y, models = three_models(n=5000, c=40, seed=5)
    whole = fastce.compare(y, logits=models, top_k=(1, 5))
    # Split at a block boundary (rows per block depend only on C) and merge the two states.
    cut = 3 * fastce._config.block_rows(40)
    names = list(models)
    parts = []
    for start, stop in ((0, cut), (cut, y.shape[0])):
        part = fastce.compare(y[start:stop], logits={k: v[start:stop] for k, v in models.items()}, top_k=(1, 5))
        parts.append(part.state)
    merged = parts[0].merge(parts[1])
    again = ComparisonState.from_dict(strict_loads(json.dumps(merged.to_dict()))).finalize()
    for name in names:
        assert again.metrics[name] == whole.metrics[name]
    for a, b in (("A", "B"), ("A", "C")):
        for metric in ("cross_entropy", "brier", "accuracy"):
            assert again.delta(b, a, metric) == whole.delta(b, a, metric)
    assert strict_loads(whole.to_json())["models"] == names


def test_str_answers_which_model_is_better():
    y, models = three_models(seed=6)
    text = str(fastce.compare(y, logits=models))
    assert "Lowest loss:" in text and "Highest accuracy:" in text
    assert "McNemar" in text and "95% CI" in text
    assert "nan" not in text


def test_list_with_names_and_errors():
    y, models = three_models(n=300, seed=7)
    arrays = list(models.values())
    c = fastce.compare(y, logits=arrays, names=["x", "y", "z"])
    assert c.names == ["x", "y", "z"]
    assert fastce.compare(y, logits=arrays[:2]).names == ["A", "B"]
    with pytest.raises(fastce.InputError, match="at least two"):
        fastce.compare(y, logits=arrays[:1])
    with pytest.raises(fastce.InputError, match="one name per model"):
        fastce.compare(y, logits=arrays, names=["x"])
    with pytest.raises(fastce.InputError, match="same rows and classes"):
        fastce.compare(y, logits=[arrays[0], arrays[1][:, :5]])
    with pytest.raises(fastce.InputError, match="exactly one of"):
        fastce.compare(y, logits=arrays, proba=arrays)
    with pytest.raises(KeyError, match="no model named 'Q'"):
        c.delta("Q", "x")
    with pytest.raises(ValueError, match="malformed fastce comparison state"):
        ComparisonState.from_dict({"format": "fastce.comparison/1", "names": ["a"]})


def test_nan_policy_omit_pairs_rows_counted_under_both():
    y, models = three_models(n=500, c=4, seed=8, dtype=np.float64)
    models["A"][3, 1] = np.nan
    models["B"][7, 0] = np.inf
    with pytest.warns(fastce.OmittedRowsWarning):
        c = fastce.compare(y, logits=models, nan_policy="omit")
    assert c.delta("B", "A").n == 498
    keep = np.ones(500, bool)
    keep[[3, 7]] = False
    la, _, _ = per_row(y[keep], models["A"][keep])
    lb, _, _ = per_row(y[keep], models["B"][keep])
    assert c.delta("B", "A").estimate == pytest.approx((lb - la).mean(), rel=1e-9)
    with pytest.raises(fastce.InputError, match="row 3"):
        fastce.compare(y, logits=models)


def test_the_readme_three_model_example_runs_and_explains_the_disagreement():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "three_models.py"
    spec = importlib.util.spec_from_file_location("three_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.main()
    text = str(c)
    assert "- C is right more often than B" in text and "confidently wrong under C" in text
    assert c.delta("C", "B", "accuracy").estimate > 0 and c.delta("C", "B", "cross_entropy").estimate > 0
    assert c.delta("C", "B", "accuracy").p_value < 0.001


def test_clustered_paired_errors():
    from test_errorbars import clustered_reference

    y, models = three_models(n=3000, seed=9, dtype=np.float64)  # float64 math: the formula to 1e-9
    groups = np.sort(np.random.default_rng(10).integers(0, 120, y.shape[0]))
    c = fastce.compare(y, logits=models, groups=groups, top_k=(1, 3))
    rows = {name: per_row(y, z) for name, z in models.items()}
    (la, ba, ra), (lb, bb, rb) = rows["A"], rows["B"]
    d = c.delta("B", "A", "cross_entropy")
    assert d.stderr == pytest.approx(clustered_reference(lb - la, groups), rel=1e-9)
    assert d.test == "paired z (clustered)"
    acc = c.delta("A", "B", "top_k_accuracy", k=3)
    assert acc.stderr == pytest.approx(clustered_reference((ra < 3) * 1.0 - (rb < 3), groups), rel=1e-9)
    assert acc.p_value == pytest.approx(2 * stats.norm.sf(abs(acc.estimate / acc.stderr)), rel=1e-9)
    assert c.metrics["C"].n_groups == np.unique(groups).size
    assert c.metrics["C"] == fastce.evaluate(y, logits=models["C"], groups=groups, top_k=(1, 3))
    # Mergeable and JSON-safe with its group sums.
    cut = 4 * fastce._config.block_rows(10)
    halves = [fastce.compare(y[s], logits={k: v[s] for k, v in models.items()}, groups=groups[s], top_k=(1, 3)).state
              for s in (slice(0, cut), slice(cut, None))]
    merged = ComparisonState.from_dict(strict_loads(json.dumps(halves[0].merge(halves[1]).to_dict()))).finalize()
    assert merged.delta("B", "A").stderr == pytest.approx(d.stderr, rel=1e-12)
    assert merged.metrics["A"].stderr["accuracy"] == pytest.approx(c.metrics["A"].stderr["accuracy"], rel=1e-12)


@pytest.mark.parametrize("grouped", [False, True])
def test_comparator_any_split_equals_compare(grouped):
    y, models = three_models(n=3000, c=40, seed=11)
    rng = np.random.default_rng(12)
    w = rng.random(y.shape[0])
    groups = np.sort(rng.integers(0, 90, y.shape[0])) if grouped else None
    whole = fastce.compare(y, logits=models, sample_weight=w, top_k=(1, 5), groups=groups)
    cmp = fastce.Comparator(list(models), 40, top_k=(1, 5), groups=grouped)
    cuts = [0, 1, 700, 701, 1500, 2999, 3000]
    for start, stop in zip(cuts, cuts[1:]):
        part = slice(start, stop)
        cmp.update(y[part], [z[part] for z in models.values()], sample_weight=w[part],
                   groups=None if groups is None else groups[part])
        if start == 700:  # a checkpoint with pending rows, resumed
            cmp = fastce.Comparator.from_state_dict(strict_loads(json.dumps(cmp.state_dict())))
    result = cmp.result()
    for name in models:
        assert result.metrics[name] == whole.metrics[name]
    for metric in ("cross_entropy", "brier", "accuracy"):
        assert result.delta("C", "A", metric) == whole.delta("C", "A", metric)
    assert result.table("A", "B", k=5) == whole.table("A", "B", k=5)
    assert cmp.rows_seen == 3000


def test_comparator_errors_name_global_rows_and_tampered_states_are_refused():
    y, models = three_models(n=200, c=4, seed=13)
    cmp = fastce.Comparator(["A", "B", "C"], 4)
    cmp.update(y[:100], {k: v[:100] for k, v in models.items()})
    bad = y[100:].copy()
    bad[7] = 9
    with pytest.raises(fastce.InputError, match="row 107"):
        cmp.update(bad, {k: v[100:] for k, v in models.items()})
    with pytest.raises(fastce.InputError, match="must hold the models"):
        cmp.update(y[:3], {"A": models["A"][:3]})
    with pytest.raises(fastce.InputError, match="groups=True"):
        cmp.update(y[:3], {k: v[:3] for k, v in models.items()}, groups=[0, 0, 1])
    state = cmp.state_dict()
    state["pending"]["rows"] = 10**9
    # InputError (a ValueError), as Evaluator.from_state_dict: these were plain ValueErrors.
    with pytest.raises(fastce.InputError, match="malformed fastce Comparator state"):
        fastce.Comparator.from_state_dict(state)
    with pytest.raises(fastce.InputError, match="not a fastce Comparator state"):
        fastce.Comparator.from_state_dict({"format": "x"})
    for damage in (lambda d: d.__setitem__("nan_policy", None), lambda d: d["state"]["states"]["A"].__setitem__("rows_seen", "x"),
                   lambda d: d["state"]["states"]["B"].__setitem__("ties_to_last", True),
                   lambda d: d.__setitem__("state", 3)):
        state = json.loads(json.dumps(cmp.state_dict()))
        damage(state)
        with pytest.raises(fastce.InputError, match="malformed fastce Comparator state"):
            fastce.Comparator.from_state_dict(state)


@pytest.mark.parametrize("grouped", [False, True])
def test_dask_compare_equals_compare_for_any_chunking(grouped):
    da = pytest.importorskip("dask.array")
    import dask

    import fastce.dask

    y, models = three_models(n=2500, c=40, seed=14)
    rng = np.random.default_rng(15)
    w = rng.random(y.shape[0])
    groups = np.sort(rng.integers(0, 60, y.shape[0])) if grouped else None
    whole = fastce.compare(y, logits=models, sample_weight=w, top_k=(1, 5), groups=groups)
    chunkings = [(700, 40), (512, 40), (999, 40)]
    arrays = {k: da.from_array(v, chunks=ch) for (k, v), ch in zip(models.items(), chunkings)}
    with dask.config.set(scheduler="synchronous"):
        got = fastce.dask.compare(y, logits=arrays, sample_weight=w, top_k=(1, 5), groups=groups)
        lazy = fastce.dask.compare(da.from_array(y, chunks=333), logits=arrays, sample_weight=w, top_k=(1, 5),
                                   groups=groups, compute=False)
        again = lazy.compute()
    for result in (got, again):
        for name in models:
            assert result.metrics[name] == whole.metrics[name]
        if grouped:  # group sums merge as double-doubles: equal to rounding
            assert result.delta("C", "A").stderr == pytest.approx(whole.delta("C", "A").stderr, rel=1e-12)
        else:
            assert result.to_json() == whole.to_json()
    bad = y.copy()
    bad[1234] = 99
    with dask.config.set(scheduler="synchronous"), pytest.raises(fastce.InputError, match="row 1234"):
        fastce.dask.compare(bad, logits=arrays)


def test_str_names_the_test_used_with_groups():
    y, models = three_models(n=1200, seed=18)
    groups = np.arange(1200) // 10
    text = str(fastce.compare(y, logits=models, groups=groups))
    assert "clustered over 120 groups" in text
    assert "McNemar" not in text and "paired z (clustered)" in text


def test_compare_is_identical_for_any_thread_count():
    import numba

    y, models = three_models(n=60_000, c=10, seed=19)  # N * C above the serial threshold: parallel kernels
    groups = np.arange(60_000) // 40
    before = numba.get_num_threads()
    results = []
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            results.append(fastce.compare(y, logits=models, groups=groups, top_k=(1, 3)).to_json())
    finally:
        numba.set_num_threads(before)
    assert all(r == results[0] for r in results)


def _read_apart(y, models, **kwargs):
    """The comparison as the mixed-dtype path computes it: each model scored on its own, then the pairs."""
    import sys

    compare_module = sys.modules["fastce.compare"]
    names = list(models)
    batch = compare_module.validated_batch(y, list(models.values()), names, "logits", kwargs.get("sample_weight"),
                                           None)
    state = ComparisonState.empty(names, batch.num_classes, kwargs.get("top_k", (1,)), from_logits=True,
                                  confident_below=0.01)
    state._read_apart(batch.views, batch.eps, batch.labels, batch.weights, None, state._score_matrix)
    return state.finalize("omit")


@pytest.mark.filterwarnings("ignore::fastce.errors.OmittedRowsWarning", "ignore::fastce.errors.TopKWarning")
@pytest.mark.parametrize("n_classes", [2, 3, 10, 40])
def test_models_read_together_and_apart_agree(n_classes):
    """One kernel reads every model's block (same dtype); models of mixed dtypes are scored apart.

    Both give each model evaluate's metrics bit for bit, and the same paired
    statistics (the pair sums are reassociated, each in its own kernel: equal
    up to rounding).  A model in F order is read by the same kernel, copied
    one call's rows at a time.
    """
    y, models = three_models(n=3000, c=n_classes, seed=21)
    # Rows not counted under one model, and infinite losses, at every column
    # (at two classes, such blocks leave the two-class path for the general one).
    for j in range(n_classes):
        models["B"][5 + 71 * j, j] = np.nan
        models["A"][6 + 71 * j, j] = np.inf
        models["C"][7 + 71 * j, j] = -np.inf
    w = np.random.default_rng(22).random(3000)
    together = fastce.compare(y, logits=models, top_k=(1, 2), sample_weight=w, nan_policy="omit")
    apart = _read_apart(y, models, top_k=(1, 2), sample_weight=w)
    fortran = dict(models, C=np.asfortranarray(models["C"]))
    assert fastce.compare(y, logits=fortran, top_k=(1, 2), sample_weight=w, nan_policy="omit").to_json() == \
        together.to_json()
    for name, z in models.items():
        alone = fastce.evaluate(y, logits=z, top_k=(1, 2), sample_weight=w, nan_policy="omit")
        assert together.metrics[name] == alone
        assert np.array_equal(together.state.states[name].sums, apart.state.states[name].sums)
    for a, b in [("A", "B"), ("A", "C"), ("B", "C")]:
        for metric, k in [("cross_entropy", None), ("brier", None), ("accuracy", None), ("top_k_accuracy", 2)]:
            d1, d2 = together.delta(b, a, metric, k=k), apart.delta(b, a, metric, k=k)
            assert d1.estimate == pytest.approx(d2.estimate, rel=1e-12, abs=1e-15, nan_ok=True)
            assert d1.stderr == pytest.approx(d2.stderr, rel=1e-12, nan_ok=True)
        assert together.table(a, b) == apart.table(a, b)
        assert together.correlation(a, b) == pytest.approx(apart.correlation(a, b), rel=1e-12, nan_ok=True)


def test_models_of_mixed_dtypes_each_equal_evaluate():
    y, models = three_models(n=2000, c=6, seed=23)
    mixed = {"A": models["A"].astype(np.float16), "B": models["B"].astype(np.float64), "C": models["C"]}
    c = fastce.compare(y, logits=mixed, top_k=(1, 3))
    for name, z in mixed.items():
        assert c.metrics[name] == fastce.evaluate(y, logits=z, top_k=(1, 3))
    same = fastce.compare(y, logits={n: z.astype(np.float64) for n, z in mixed.items()}, top_k=(1, 3))
    assert c.table("A", "B") == same.table("A", "B")


@pytest.mark.filterwarnings("ignore::fastce.errors.OmittedRowsWarning", "ignore::fastce.errors.TopKWarning")
@pytest.mark.parametrize("n_classes", [2, 10])
def test_unit_weights_give_the_numbers_of_weights_of_one(n_classes):
    """Without weights the pair sums come from fewer loops (compare_kernels._clean_pair_sums): the same numbers.

    Rows not counted, or of infinite loss, make their blocks take the masked sums: both kinds are here.
    """
    y, models = three_models(n=5000, c=n_classes, seed=24)
    models["B"][3, 0] = np.nan
    models["A"][9, 1] = np.inf
    plain = fastce.compare(y, logits=models, top_k=(1, 2), nan_policy="omit")
    ones = fastce.compare(y, logits=models, top_k=(1, 2), nan_policy="omit", sample_weight=np.ones(5000))
    for a, b in [("A", "B"), ("A", "C"), ("B", "C")]:
        for metric, k in [("cross_entropy", None), ("brier", None), ("accuracy", None), ("top_k_accuracy", 2)]:
            d1, d2 = plain.delta(b, a, metric, k=k), ones.delta(b, a, metric, k=k)
            assert d1.estimate == pytest.approx(d2.estimate, rel=1e-12, abs=1e-15, nan_ok=True)
            assert d1.stderr == pytest.approx(d2.stderr, rel=1e-12, nan_ok=True)
        for k in (1, 2):
            assert plain.table(a, b, k=k) == ones.table(a, b, k=k)
        assert plain.correlation(a, b) == pytest.approx(ones.correlation(a, b), rel=1e-12, nan_ok=True)
        for under, other in ((a, b), (b, a)):
            cw1, cw2 = plain.confidently_wrong(under, other), ones.confidently_wrong(under, other)
            assert cw1["rows"] == cw2["rows"]
            assert cw1["loss_difference_share"] == pytest.approx(cw2["loss_difference_share"], rel=1e-12,
                                                                 nan_ok=True)


def test_comparator_update_is_all_or_nothing(monkeypatch):
    """An interrupt in the middle of an update (Ctrl-C; SIGTERM in ``fastce compare``) leaves the Comparator
    as it was: a checkpoint written then once held a whole block as pending rows, which it then refused."""
    y, models = three_models(n=3000, seed=25)
    names = list(models)
    cmp = fastce.Comparator(names, 10)
    cmp.update(y[:700], [models[n][:700] for n in names])
    before = json.dumps(cmp.state_dict())
    real_read = ComparisonState.read
    calls = []

    def read_then_interrupt(self, *args, **kwargs):
        calls.append(1)
        real_read(self, *args, **kwargs)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ComparisonState, "read", read_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        cmp.update(y[700:2500], [models[n][700:2500] for n in names])  # completes a block, then reads more
    monkeypatch.setattr(ComparisonState, "read", real_read)
    assert json.dumps(cmp.state_dict()) == before
    cmp.update(y[700:], [models[n][700:] for n in names])
    assert cmp.result().to_json() == fastce.compare(y, logits=models).to_json()


def test_unaligned_scores_are_read_as_aligned_copies():
    """A model's scores at an odd byte offset (np.frombuffer of a file's bytes): alignment is part of the
    kernels' argument types, so such slices are copied (one call's rows) rather than read as aligned."""
    y, models = three_models(n=2000, c=8, seed=26)
    raw = bytearray(1 + models["B"].nbytes)
    raw[1:] = models["B"].tobytes()
    unaligned = np.frombuffer(raw, dtype=np.float32, offset=1).reshape(models["B"].shape)
    assert not unaligned.flags.aligned
    shifted = dict(models, B=unaligned)
    assert fastce.compare(y, logits=shifted).to_json() == fastce.compare(y, logits=models).to_json()
    assert fastce.evaluate(y, logits=unaligned) == fastce.evaluate(y, logits=models["B"])


def test_comparator_takes_an_empty_batch_as_the_evaluator_does():
    # It raised "logits['A'] is empty" where Evaluator.update accepts zero rows and changes nothing.
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 50)
    models = {"A": rng.standard_normal((50, 3)), "B": rng.standard_normal((50, 3))}
    cmp = fastce.Comparator(["A", "B"], 3)
    cmp.update(y, models)
    before = json.dumps(cmp.state_dict())
    cmp.update(np.empty(0, dtype=np.int64), {"A": np.empty((0, 3)), "B": np.empty((0, 3))})
    assert json.dumps(cmp.state_dict()) == before
    with pytest.raises(fastce.InputError):
        cmp.update(np.empty(0, dtype=np.int64), {"A": np.empty((0, 3)), "B": models["B"][:2]})


def test_rows_of_weight_zero_are_not_discordant_pairs():
    # McNemar counted 20 rows of weight 0 on which the models disagree as discordant: p = 1.9e-6 for two models
    # right on every row that counts.
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 60)
    right = np.eye(3)[y] * 5.0
    wrong = np.eye(3)[(y + 1) % 3] * 5.0
    a, b = right.copy(), right.copy()
    b[:20] = wrong[:20]
    w = np.ones(60)
    w[:20] = 0.0
    c = fastce.compare(y, logits={"A": a, "B": b}, sample_weight=w)
    d = c.delta("B", "A", "accuracy")
    assert d.estimate == 0.0 and d.p_value == 1.0
    table = c.table("A", "B")
    assert table["only_a_right"]["rows"] == 0 and table["both_right"]["rows"] == 40
    # Positive weights: the same table as the unweighted rows.
    assert fastce.compare(y, logits={"A": a, "B": b}, sample_weight=np.full(60, 2.0)).table("A", "B")[
        "only_a_right"]["rows"] == 20


def test_the_text_shows_each_top_k_accuracy_asked_for():
    # Computed and in the JSON, top-5 was missing from str(comparison) and `fastce compare --top-k 1 5`.
    rng = np.random.default_rng(7)
    y = rng.integers(0, 10, 500)
    a = rng.standard_normal((500, 10))
    c = fastce.compare(y, logits={"A": a, "B": a + rng.standard_normal((500, 10))}, top_k=(1, 5))
    lines = str(c).splitlines()
    header = next(line for line in lines if line.startswith("model"))
    assert header.split()[-1] == "top-5"
    for name in ("A", "B"):
        row = next(line for line in lines if line.startswith(f"{name} "))
        assert row.split()[-1] == f"{100 * c.metrics[name].top_k_accuracy[5]:.2f}%"
    assert "top-" not in str(fastce.compare(y, logits={"A": a, "B": -a}))


def test_the_text_says_a_loss_difference_with_an_infinite_loss_is_undefined():
    z = np.array([[-np.inf, 1.0, 0.0], [3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    text = str(fastce.compare(np.array([0, 0, 1, 2]), logits={"A": z, "B": np.zeros((4, 3))}))
    assert "higher by an undefined amount (a row's loss is infinite): no test possible" in text
    assert "nan" not in text.lower().replace("mcnemar", "")


def test_a_tampered_pair_sum_gives_numbers_not_an_overflow_error():
    # A pair's weight sum edited to 0x10 loaded, then to_json() and str() raised OverflowError (int division).
    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 1536)
    cmp = fastce.Comparator(["A", "B"], 3)
    cmp.update(y, {"A": rng.standard_normal((1536, 3)), "B": rng.standard_normal((1536, 3))})
    state = json.loads(json.dumps(cmp.state_dict()))
    state["state"]["pairs"][0]["sums"][1] = "0x10"
    result = fastce.Comparator.from_state_dict(state).result()
    json.loads(result.to_json(), parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    str(result)
    # A negative weight or row count, which no rows give, is refused (it loaded, and gave n = -4096).
    for column in (0, 1):
        state = json.loads(json.dumps(cmp.state_dict()))
        state["state"]["pairs"][0]["sums"][column] = "-0x1"
        with pytest.raises(fastce.InputError, match=f"sum {column} is negative"):
            fastce.Comparator.from_state_dict(state)


def test_the_number_of_models_and_of_k_values_is_bounded_before_anything_is_allocated():
    # 2,000 models raised a MemoryError (a pair's sums are ~19 KB, its per-call scratch more), 400 took 17 s on ten
    # rows; 10**6 k values took 2 GB and 15 s.
    z = np.zeros((3, 2))
    y = np.zeros(3, dtype=np.int64)
    with pytest.raises(fastce.InputError, match="at most 128 models") as info:
        fastce.compare(y, logits={f"m{i}": z for i in range(129)})
    assert info.value.argument == "logits"
    with pytest.raises(fastce.InputError, match="at most 128"):
        fastce.Comparator([f"m{i}" for i in range(129)], 2)
    with pytest.raises(fastce.InputError, match="at most 1024 are kept"):
        fastce.evaluate(y, logits=z, top_k=range(1, 1026))
    assert len(fastce.compare(y, logits={f"m{i}": z for i in range(128)}).names) == 128


def test_the_text_ranks_by_the_paired_difference_when_omit_kept_other_rows_for_each_model():
    # nan_policy="omit" with NaN rows in one model only: each model's mean is over its own rows, the paired
    # difference over the rows both kept. Ranking by the means said "B, next, is higher by -0.120 nats" (and "on
    # the same 160 rows" of a model that had 200).
    rng = np.random.default_rng(2)
    n = 200
    y = rng.integers(0, 3, size=n)
    b = rng.normal(size=(n, 3))
    b[np.arange(n), y] += 1.0
    a = b - 0.5 * rng.normal(size=(n, 3)) ** 2  # worse than B on every row
    hard = rng.uniform(size=n) < 0.2  # rows where B is far off, left out of A by NaN
    b[hard] *= -3.0
    a[hard] = np.nan
    with pytest.warns(fastce.OmittedRowsWarning):
        c = fastce.compare(y, logits={"A": a, "B": b}, nan_policy="omit")
    text = str(c)
    d = c.delta("B", "A", "cross_entropy")
    assert c.metrics["A"].n != c.metrics["B"].n
    assert d.estimate < 0 < c.metrics["B"].cross_entropy - c.metrics["A"].cross_entropy  # the means disagree
    assert "kept different rows for each" in text and "on the same" not in text
    assert "- Lowest loss: B (on the rows both kept). A, next, is higher by +" in text
    assert "by -" not in text


def test_the_text_of_degenerate_differences_does_not_contradict_itself():
    # A constant paired difference has a standard error of 0: its "95% CI +100.00 to +100.00" stood beside
    # "McNemar p = 0.062: within the noise (the smallest difference detectable here is about 0 points)".
    y = np.zeros(5, dtype=np.int64)
    right = np.tile([2.0, 0.0], (5, 1))
    text = str(fastce.compare(y, logits={"A": right, "B": -right}))
    assert "no interval (the difference is the same, or all but, on every row), McNemar p = 0.062: within the noise (5 rows)" in text
    one = str(fastce.compare(y[:1], logits={"A": right[:1], "B": -right[:1]}))
    assert "nan" not in one and "within the noise (1 row)" in one
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=20)
    z = rng.normal(size=(20, 3))
    same = str(fastce.compare(labels, logits={"A": z, "B": z.copy()}, groups=np.zeros(20, dtype=np.int64)))
    assert "- Lowest loss: A and B (" in same and "tied: the difference is exactly 0." in same
    assert "higher by +0.0000" not in same and "(nan-nan)" not in same and "over 1 group)" in same


def test_comparator_update_raises_at_once_for_rows_evaluate_refuses_and_stays_usable():
    # A NaN row under nan_policy="raise", a multi-label target of 2, binary probabilities above 1: accepted by
    # Comparator.update (checked at result() only), after which every result() raised, the Comparator unusable.
    rng = np.random.default_rng(12)
    z = rng.normal(size=(300, 4))
    y = rng.integers(0, 4, size=300)
    bad = z.copy()
    bad[105, 2] = np.nan
    cases = [
        (fastce.Comparator(["A", "B"], 4), y, {"A": z, "B": bad}, r"logits\['B'\] row 105 holds NaN"),
        (fastce.Comparator(["A", "B"], 4, task="multilabel"), np.where(np.arange(1200).reshape(300, 4) == 423, 2,
                                                                       (z > 0).astype(int)),
         {"A": z, "B": z}, r"y_true row 105 holds 2 in column 3"),
        (fastce.Comparator(["A", "B"], 2, task="binary", from_logits=False), y % 2,
         {"A": np.full(300, 0.5), "B": np.where(np.arange(300) == 105, 1.5, 0.5)}, r"proba\['B'\] row 105"),
    ]
    for cmp, labels, scores, message in cases:
        cmp.update(labels[:100], {k: v[:100] for k, v in scores.items()})
        before = json.dumps(cmp.state_dict())
        for stop in (110, 300):  # the bad row held back (under a block), and read
            with pytest.raises(fastce.InputError, match=message):
                cmp.update(labels[100:stop], {k: v[100:stop] for k, v in scores.items()})
            assert json.dumps(cmp.state_dict()) == before
        cmp.result()  # still usable


def test_the_text_qualifies_a_trade_off_whose_accuracy_difference_is_noise():
    # "A is right more often than C ... but its loss is higher" read as a real trade-off right under a line that
    # called A's accuracy lead noise (p = 0.238); and a share of 0.27% was printed "0%".
    rng = np.random.default_rng(0)
    n, c = 20000, 10
    y = rng.integers(0, c, n)
    za = (rng.standard_normal((n, c)) + 2 * np.eye(c)[y]).astype(np.float32)
    rng.standard_normal((n, c))
    zc = (3 * rng.standard_normal((n, c)) + 6 * np.eye(c)[y]).astype(np.float32)
    cmp = fastce.compare(y, logits={"A": za, "C": zc})
    assert cmp.delta("A", "C", "accuracy").p_value > 0.05
    line = next(s for s in str(cmp).splitlines() if s.startswith("- A is right more often than C"))
    assert "(the accuracy difference is within the noise: this may be chance)" in line
    assert "carry 0.27% of the loss difference" in line


def test_shares_and_ratios_in_the_findings_print_as_plain_numbers():
    # ".2g" printed a share of 99.6% as "1e+02%" and a ratio of 151 as "1.5e+02 times".
    n = 4000
    y = np.zeros(n, dtype=np.int64)
    a = np.tile(np.log([0.6, 0.3, 0.1]), (n, 1))
    b = a.copy()
    a[:300] = np.log([0.4, 0.45, 0.15])
    b[:300] = np.log([0.4, 0.35, 0.25])
    b[300:340] = np.log([0.001, 0.998, 0.001])
    b[340:400] = np.log([0.59, 0.31, 0.10])
    text = str(fastce.compare(y, logits={"A": a, "B": b}))
    assert "e+" not in text and "% of the loss difference" in text
    z = np.tile([4.0, 0.0, 0.0], (2000, 1))
    z[:4] = [-6.0, 6.0, 0.0]  # 0.2% of rows confidently wrong, carrying most of the loss
    report = "\n".join(fastce.diagnose(np.zeros(2000, dtype=np.int64), logits=z).summary())
    assert " times their share of the rows" in report and "e+" not in report


def test_comparator_updates_read_each_row_once_when_nothing_may_raise(monkeypatch):
    # The check of held-back rows read them all again at every update, with every pair and group sum (2,048 rows
    # fed in 64-row updates read 9,216): clean finite rows are not read for the check.
    rng = np.random.default_rng(3)
    n, c = 2048, 5
    y = rng.integers(0, c, n)
    scores = {m: rng.normal(size=(n, c)) for m in ("A", "B", "C")}
    cmp = fastce.Comparator(["A", "B", "C"], c, groups=True)
    read_rows = []
    read = ComparisonState.read

    def counting(self, views, *args, **kwargs):
        read_rows.append(views[0].shape[0])
        return read(self, views, *args, **kwargs)

    monkeypatch.setattr(ComparisonState, "read", counting)
    groups = np.arange(n) // 7
    for lo in range(0, n, 64):
        cmp.update(y[lo:lo + 64], {m: s[lo:lo + 64] for m, s in scores.items()}, groups=groups[lo:lo + 64])
    assert sum(read_rows) == n
    monkeypatch.undo()
    assert cmp.result().to_json() == fastce.compare(y, logits=scores, groups=groups).to_json()


def test_the_text_says_which_to_read_when_the_exact_test_and_the_normal_interval_disagree():
    # B fixes 5 rows A gets wrong and breaks none: the normal interval of the lead excludes 0, the exact McNemar
    # p is 0.0625.  The text printed "95% CI +0.06 to +0.94, McNemar p = 0.062: within the noise", nothing more.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 1000)
    za = rng.standard_normal((1000, 3))
    zb = za.copy()
    wrong = np.flatnonzero(za.argmax(1) != y)[:5]
    zb[wrong, y[wrong]] = za[wrong].max(1) + 1.0
    c = fastce.compare(y, logits={"A": za, "B": zb})
    d = c.delta("B", "A", "accuracy")
    low, high = d.interval()
    assert low > 0 and d.p_value == pytest.approx(0.0625)
    line = next(line for line in str(c).splitlines() if line.startswith("- Highest accuracy"))
    assert "within the noise" in line and "excludes 0, but with only 5 rows where the two differ" in line, line
    assert "the exact test decides" in line
    many = fastce.compare(y, logits={"A": za, "B": za + 0.5 * rng.standard_normal((1000, 3))})
    assert "approximation" not in str(many)  # where the two agree, no clause


def test_two_infinite_losses_are_not_ranked():
    # Both models' losses infinite: the text named the first argument "Lowest loss: A (inf nats)" and the other
    # "higher by an undefined amount", and the reverse with the arguments swapped.
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 500)
    za = rng.standard_normal((500, 3))
    zb = za + rng.standard_normal((500, 3))
    za[0, y[0]] = -np.inf
    zb[1, y[1]] = -np.inf
    for logits in ({"A": za, "B": zb}, {"B": zb, "A": za}):
        text = str(fastce.compare(y, logits=logits))
        assert "- Lowest loss: none: the losses of " in text and " are infinite" in text, text
        assert "higher by" not in text
