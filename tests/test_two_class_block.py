"""The two-class logits fast path (kernels._two_class_block) against the general short-row path.

Two-class logits with no per-row loss are summed in one vectorised loop
per block (with diagnose's per-row statistics and argmax, if asked); a
request for per-row losses sends the same rows through the general column
walk.  Both must give the same counters exactly and the same
sums up to their order of summation (each row's loss, Brier term and rank are
computed by the same operations), for every kind of row: masked classes
(-inf), ties, probability-like and one-hot rows, ignored rows, weights, and
blocks holding a non-finite row or an infinite loss (left to the general path).
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from fastce import _config, validation
from fastce import kernels as K
from fastce._accumulate import kernel_input
from support import score_dtype_params

IGNORE = -100


def _rows(rng, n, dtype, *, rare: bool):
    z = rng.normal(scale=3.0, size=(n, 2))
    kind = rng.integers(0, 8, n)
    z[kind == 1] = np.round(z[kind == 1])  # ties between the two columns, often
    z[kind == 1, 1] = z[kind == 1, 0]
    p = rng.random(np.count_nonzero(kind == 2))
    z[kind == 2] = np.stack([p, 1 - p], axis=1)  # probability-like
    z[kind == 3] = np.eye(2)[rng.integers(0, 2, np.count_nonzero(kind == 3))]  # one-hot
    z[kind == 4, rng.integers(0, 2)] = -np.inf  # a masked class
    z[kind == 5] = z[kind == 5] * 1e-3  # confident-free rows near a tie
    labels = rng.integers(0, 2, n)
    labels[kind == 6] = IGNORE
    masked = np.isneginf(z[np.arange(n), labels.clip(0)]) & (labels != IGNORE)
    labels[masked] = 1 - labels[masked]  # a finite loss: the true class is not the masked one
    if rare:
        # a few rows making their block rare: NaN, +inf, both classes -inf, an infinite loss
        for value in ([np.nan, 0.0], [np.inf, 1.0], [-np.inf, -np.inf]):
            z[rng.integers(0, n)] = value
        row = rng.integers(0, n)
        z[row] = [-np.inf, 0.0]
        labels[row] = 0
    return z.astype(dtype), labels


def _score(z, labels, weights, class_weight, ties_to_last, top_k, per_row: bool, stats=None, pred=None,
           mode=K.MODE_LOGITS):
    """score_blocks' block sums and counters; ``per_row``: with per-row losses (the general path); ``stats`` /
    ``pred``: arrays for the row statistics and argmax (diagnose), filled in place; ``mode``: logits, or
    probabilities (MODE_PROBA, clipped at 1e-15 as scikit-learn's log_loss)."""
    block_rows = _config.block_rows(2)
    nblocks = -(-z.shape[0] // block_rows)
    fsums = np.empty((nblocks, K.fsums_columns(len(top_k))))
    icounts = np.empty((nblocks, K.NUM_ICOUNTS), dtype=np.int64)
    row_losses = np.empty(z.shape[0]) if per_row else np.empty(0)
    none = kernel_input(np.empty(0))
    stats = np.empty((0, K.ROW_STATS_COLUMNS)) if stats is None else stats
    pred = np.empty(0, dtype=np.int64) if pred is None else pred
    kind = "logits" if mode == K.MODE_LOGITS else "proba"
    K.score_blocks(
        kernel_input(validation.scores(z, kind).view), kernel_input(labels), none if weights is None else kernel_input(weights),
        none if class_weight is None else kernel_input(class_weight), np.int64(IGNORE),
        kernel_input(np.asarray(top_k, dtype=np.int64)), ties_to_last, mode, 1e-15, 1e-3, row_losses,
        stats, pred, nblocks, block_rows, 2, fsums, icounts, True,
    )
    return fsums, icounts


def _case(rng, case: int, make_rows, dtype):
    """Case ``case`` of 8 (bits: rare rows, sample weights, class weights; ties to the last index with the
    rare rows): (scores, labels, weights, class weights, ties_to_last, rare) of 5 blocks and a part."""
    rare = case % 2 == 1
    z, labels = make_rows(rng, 5 * _config.block_rows(2) + 17, dtype, rare=rare)
    weights = rng.random(z.shape[0]) * 3 if case & 2 else None
    class_weight = np.array([0.5, 2.0]) if case & 4 else None
    return z, labels, weights, class_weight, bool(case & 1), rare


@pytest.mark.parametrize("dtype", score_dtype_params())
def test_two_class_block_matches_the_general_path(dtype):
    rng = np.random.default_rng(11)
    for case in range(8):
        z, labels, weights, class_weight, ties_to_last, rare = _case(rng, case, _rows, dtype)
        top_k = (1, 2, 5)
        fast, fast_counts = _score(z, labels, weights, class_weight, ties_to_last, top_k, per_row=False)
        general, general_counts = _score(z, labels, weights, class_weight, ties_to_last, top_k, per_row=True)
        np.testing.assert_array_equal(fast_counts, general_counts, err_msg=f"case {case}")
        assert general_counts[:, K.C_PROBA_LIKE].sum() > 0 and general_counts[:, K.C_IGNORED].sum() > 0
        if rare:
            assert general_counts[:, K.C_NONFINITE].sum() > 0 and general_counts[:, K.C_INF_LOSS].sum() > 0
        # The same per-row terms summed in the same order (fastce._lanes): the same bits.
        np.testing.assert_array_equal(fast, general, err_msg=f"case {case}")


@pytest.mark.parametrize("dtype", score_dtype_params())
def test_row_statistics_of_the_two_class_block_are_the_general_paths(dtype, monkeypatch):
    """diagnose's per-row statistics (loss, p(true), p(top), Brier, rank) and argmax: from the two-class kernel
    (no per-row losses asked) as from the general path (per-row losses asked), bit for bit, rare blocks included
    (those go to the general path, and their rows must land at their own place)."""
    calls = []
    real = K.score_tasks_two_class

    def counted(*args):
        calls.append(args[10] is not None)  # row_stats given to the two-class kernel
        return real(*args)

    monkeypatch.setattr(K, "score_tasks_two_class", counted)
    rng = np.random.default_rng(5)
    for case in range(8):
        z, labels = _rows(rng, 5 * _config.block_rows(2) + 17, dtype, rare=case % 2 == 1)
        weights = rng.random(z.shape[0]) * 3 if case & 2 else None
        ties_to_last = bool(case & 4)
        n = z.shape[0]
        outputs = {}
        for per_row in (False, True):
            stats, pred = np.full((n, K.ROW_STATS_COLUMNS), 7.0), np.full(n, 7, dtype=np.int64)
            sums, counts = _score(z, labels, weights, None, ties_to_last, (1, 2), per_row, stats, pred)
            outputs[per_row] = (sums, counts, stats, pred)
        for fast, general in zip(outputs[False], outputs[True]):
            np.testing.assert_array_equal(fast, general, err_msg=f"case {case}")
        stats, pred = outputs[False][2:]
        ok = ~np.isnan(stats[:, K.S_LOSS])
        assert ok.sum() > n // 2 and (pred[~ok] == -1).all() and set(np.unique(pred[ok])) == {0, 1}
    assert len(calls) >= 8 and all(calls)  # the two-class kernel did write them (once a thread, each case)


def _proba_rows(rng, n, dtype, *, rare: bool):
    """Rows of two probabilities: ordinary, ties (0.5, 0.5), one-hot rows, rows near 0 and 1 (clipped), ignored
    rows; ``rare``: a few rows that make their block rare (NaN, +inf, below 0, above 1, a sum off 1)."""
    p = rng.random(n)
    kind = rng.integers(0, 6, n)
    p[kind == 1] = 0.5
    p[kind == 2] = rng.integers(0, 2, np.count_nonzero(kind == 2))
    p[kind == 3] = rng.choice([1e-300, 1e-17, 1e-9, 1 - 1e-12], np.count_nonzero(kind == 3))
    z = np.stack([1 - p, p], axis=1)
    labels = rng.integers(0, 2, n)
    labels[kind == 4] = IGNORE
    if rare:
        for row in ([np.nan, 0.5], [np.inf, 0.0], [-0.25, 1.25], [0.25, 0.25]):
            z[rng.integers(0, n)] = row
    return z.astype(dtype), labels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_class_probabilities_match_the_general_path(dtype, monkeypatch):
    """Two-class probabilities (predict_proba's (N, 2)) without per-row losses: the two-class kernel's
    probability rows (kernels._two_class_proba_row), against the general path (per-row losses asked): the same
    counters, extremes and sums, bit for bit; rare blocks (non-finite rows, values out of [0, 1], sums off 1)
    left to the general path, which counts them."""
    rng = np.random.default_rng(13)
    calls = []
    real = K.score_tasks_two_class

    def counted(*args):
        calls.append(args[9])  # proba_eps given to the two-class kernel
        return real(*args)

    monkeypatch.setattr(K, "score_tasks_two_class", counted)
    for case in range(8):
        z, labels, weights, class_weight, ties_to_last, rare = _case(rng, case, _proba_rows, dtype)
        fast, fast_counts = _score(z, labels, weights, class_weight, ties_to_last, (1, 2), False, mode=K.MODE_PROBA)
        general, general_counts = _score(z, labels, weights, class_weight, ties_to_last, (1, 2), True,
                                         mode=K.MODE_PROBA)
        np.testing.assert_array_equal(fast_counts, general_counts, err_msg=f"case {case}")
        assert general_counts[:, K.C_IGNORED].sum() > 0
        if rare:
            for column in (K.C_NONFINITE, K.C_BELOW0, K.C_ABOVE1, K.C_UNNORMALIZED):
                assert general_counts[:, column].sum() > 0, column
        np.testing.assert_array_equal(fast, general, err_msg=f"case {case}")
    assert len(calls) >= 8 and all(eps == 1e-15 for eps in calls)  # the two-class kernel took every case (once a thread)


@njit
def _both_exps(a, b):
    return K._two_class_exp(a, b), K._two_class_exp_f32(np.float32(a), np.float32(b))


def test_float32_exp_of_two_classes_flags_the_rows_the_float64_one_flags():
    """kernels._two_class_exp_f32 (float32 logits' exp) against _two_class_exp (float64 math) on every pair of
    special and ordinary values: NaN exactly where the float64 exp (and the general path's sum) is NaN -- a NaN
    entry, inf - inf at a +inf max, as in [0, +inf] and [-inf, +inf] -- 0 where it is 0, and otherwise the same
    exp within the float32 exp's 1 ulp (its factor 2**EXP_BIAS_F32 taken out), 0 below exp(-156) (as the
    float32 exps of longer rows: a confident row's loss below 2.4e-68, under float32's smallest subnormal)."""
    values = [0.0, -0.0, 1.0, -1.0, 3.5, -80.0, 90.0, 1e30, -1e30, np.inf, -np.inf, np.nan]
    for a in values:
        for b in values:
            wide, narrow = _both_exps(np.float64(a), np.float64(b))
            narrow = float(narrow) * K._UNBIAS
            what = f"[{a}, {b}]: float32 math {narrow}, float64 math {wide}"
            assert np.isnan(narrow) == np.isnan(wide), what
            if not np.isnan(wide):
                assert narrow == pytest.approx(wide, rel=1.2e-7, abs=0.0) or (narrow == 0.0 and wide < 2.4e-68), what
