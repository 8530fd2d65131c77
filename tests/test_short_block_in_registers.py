"""Short logits rows finished in registers (kernels._logits_block_f32) against the general short-row path.

Blocks of 3-32 classes of 16- and 32-bit logits in float32 math are walked
and finished 16 rows at a time in vector registers
(kernels.score_tasks_in_registers), with or without the per-row outputs of
diagnose and cross_entropy(reduction="none"); the general path
(score_tasks_short: _walk_short_block, _short_rows_status, _finish_block)
takes the rare blocks, and every block when forced here.  Both must give the
same block sums, counters and per-row losses, statistics and argmax bit for
bit, with and without sample and class weights (zero weights too), for every
kind of row: ties, masked classes, probability-like and one-hot rows,
ignored rows, confident rows, blocks not a multiple of 16 rows, and blocks
holding a non-finite row or an infinite loss (left to the general path,
which records them)."""

from __future__ import annotations

import json
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import numba
from numba import njit

import fastce
from fastce import _config, validation
from fastce import compare_kernels as CK
from fastce import kernels as K
from fastce._accumulate import kernel_input
from support import BFLOAT16, score_dtype_params

IGNORE = -100
TOLERANCE = 1e-3


def _rows(rng, n, n_classes, dtype, *, rare: bool):
    z = rng.normal(scale=3.0, size=(n, n_classes))
    kind = rng.integers(0, 9, n)
    z[kind == 1] = np.round(z[kind == 1])  # ties, often at the max
    z[kind == 1, 1] = z[kind == 1, 0]
    p = rng.random((np.count_nonzero(kind == 2), n_classes))
    z[kind == 2] = p / p.sum(axis=1, keepdims=True)  # probability-like
    z[kind == 3] = np.eye(n_classes)[rng.integers(0, n_classes, np.count_nonzero(kind == 3))]  # one-hot
    z[kind == 4, rng.integers(0, n_classes)] = -np.inf  # a masked class
    z[kind == 5] *= 30  # confident rows (tiny losses) and huge ones
    z[kind == 7] *= 0.1  # small logits: many rows with a max below 1
    labels = rng.integers(0, n_classes, n)
    labels[kind == 6] = IGNORE
    masked = np.isneginf(z[np.arange(n), labels.clip(0)]) & (labels != IGNORE)
    labels[masked] = (labels[masked] + 1) % n_classes  # a finite loss: the true class is not the masked one
    if rare:
        # rows making their block rare: NaN, +inf, a row of -inf, an infinite loss
        for value in (np.nan, np.inf):
            z[rng.integers(0, n), rng.integers(0, n_classes)] = value
        z[rng.integers(0, n)] = -np.inf
        row = rng.integers(0, n)
        z[row, 0] = -np.inf
        labels[row] = 0
    return z.astype(dtype), labels


def _score(z, labels, ties_to_last, top_k, general: bool, weights=None, class_weight=None, blocks_per_task=2,
           outputs=False):
    """score_blocks' block sums and counters, and with ``outputs`` its per-row losses, statistics and argmax
    (else None); ``general``: every block by the general path (score_tasks_short)."""
    block_rows = _config.block_rows(z.shape[1])
    nblocks = -(-z.shape[0] // block_rows)
    fsums = np.empty((nblocks, K.fsums_columns(len(top_k))))
    icounts = np.empty((nblocks, K.NUM_ICOUNTS), dtype=np.int64)
    n = z.shape[0] if outputs else 0
    row_stats, row_pred = np.empty((n, K.ROW_STATS_COLUMNS)), np.empty(n, dtype=np.int64)
    row_losses = np.empty(z.shape[0] if outputs or general else 0)  # per-row losses: never the two-class kernel
    none = kernel_input(np.empty(0))
    fast = K.finishes_in_registers
    if general:
        K.finishes_in_registers = lambda *args: False
    try:
        K.score_blocks(
            kernel_input(validation.scores(z, "logits").view), kernel_input(labels),
            none if weights is None else kernel_input(weights),
            none if class_weight is None else kernel_input(class_weight),
            np.int64(IGNORE), kernel_input(np.asarray(top_k, dtype=np.int64)), ties_to_last, K.MODE_LOGITS, 0.0,
            TOLERANCE, row_losses, row_stats, row_pred, nblocks, block_rows, blocks_per_task, fsums, icounts, True,
        )
    finally:
        K.finishes_in_registers = fast
    return fsums, icounts, (row_losses, row_stats, row_pred) if outputs else None


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n_classes", [2, 10])
def test_rare_blocks_go_to_the_general_path_in_one_call(n_classes, threads, monkeypatch):
    """The fast kernels (two-class, in registers) leave their rare blocks to score_tasks_short, handed the list of
    them in one call (the tasks over the list, any thread count): the same sums, counters and first rows
    (numbered from the scores' first row) as the general path over every block."""
    rng = np.random.default_rng(n_classes)
    block_rows = _config.block_rows(n_classes)
    nblocks = 24
    z = rng.normal(scale=3.0, size=(nblocks * block_rows - 5, n_classes)).astype(np.float32)
    labels = rng.integers(0, n_classes, z.shape[0])
    rare_blocks = [1, 4, 5, 9, 17, 23]
    for k, b in enumerate(rare_blocks):
        row = b * block_rows + int(rng.integers(0, block_rows - 5))
        if k % 2:
            z[row, labels[row]] = -np.inf  # an infinite loss
        else:
            z[row, int(rng.integers(0, n_classes))] = np.nan
    calls = []
    general = K.score_tasks_short

    def recorded(*args):
        calls.append(np.array(args[-4]))  # the blocks (then claims, first_task, task_step)
        return general(*args)

    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        monkeypatch.setattr(K, "score_tasks_short", recorded)
        fast, fast_counts, _ = _score(z, labels, False, (1, 2), False, blocks_per_task=3)
        strides = len(calls)
        slow, slow_counts, _ = _score(z, labels, False, (1, 2), True, blocks_per_task=3)
    finally:
        numba.set_num_threads(before)
    assert strides >= 1 and all(list(blocks) == rare_blocks for blocks in calls[:strides])
    assert all(blocks.shape[0] == 0 for blocks in calls[strides:])  # the general path over every block
    np.testing.assert_array_equal(fast_counts, slow_counts)
    np.testing.assert_array_equal(fast.view(np.int64), slow.view(np.int64))
    first = fast_counts[:, K.FIRST_NONFINITE]
    assert sorted(first[first >= 0]) == sorted(np.flatnonzero(np.isnan(z).any(axis=1)))


@pytest.mark.parametrize("n_classes", [3, 10, 17, 32])
@pytest.mark.parametrize("dtype", score_dtype_params())
def test_blocks_finished_in_registers_match_the_general_path(dtype, n_classes):
    rng = np.random.default_rng(n_classes)
    for case in range(8):
        rare = case % 2 == 1
        ties_to_last = bool(case & 2)
        z, labels = _rows(rng, 3 * _config.block_rows(n_classes) + 37, n_classes, dtype, rare=rare)
        weights = class_weight = None
        if case & 4:  # sample weights, some zero (rows removed, whatever their loss), and class weights
            weights = rng.random(z.shape[0]) * 3
            weights[rng.random(z.shape[0]) < 0.1] = 0.0
            class_weight = rng.random(n_classes) + 0.5
        top_k = (1, 2, 5, 40)
        for outputs in (False, True):  # evaluate's call, and diagnose's and cross_entropy(reduction="none")'s
            fast, fast_counts, fast_rows = _score(z, labels, ties_to_last, top_k, False, weights, class_weight,
                                                  outputs=outputs)
            general, general_counts, general_rows = _score(z, labels, ties_to_last, top_k, True, weights,
                                                           class_weight, outputs=outputs)
            np.testing.assert_array_equal(fast_counts, general_counts, err_msg=f"case {case}")
            assert general_counts[:, K.C_PROBA_LIKE].sum() > 0 and general_counts[:, K.C_ONE_HOT_LIKE].sum() > 0
            assert general_counts[:, K.C_IGNORED].sum() > 0
            if rare:
                assert general_counts[:, K.C_NONFINITE].sum() > 0 and general_counts[:, K.C_INF_LOSS].sum() > 0
            np.testing.assert_array_equal(fast.view(np.int64), general.view(np.int64), err_msg=f"case {case}")
            if outputs:
                for name, got, expected in zip(("row_losses", "row_stats", "row_pred"), fast_rows, general_rows):
                    np.testing.assert_array_equal(got.view(np.int64), expected.view(np.int64),
                                                  err_msg=f"case {case}: {name}")


def _one_block(scores, labels, weights, class_weight, top_k, ties_to_last, finish):
    """One block: with ``finish``, as score_tasks_in_registers walks it (then as score_tasks_short when it was
    rare), else as score_tasks_short, with every per-row output: (finished in registers, fsums, icounts,
    (row_losses, row_stats, row_pred))."""
    fsums = np.empty((1, K.fsums_columns(top_k.shape[0])))
    icounts = np.empty((1, K.NUM_ICOUNTS), dtype=np.int64)
    n = scores.shape[0]
    rows = (np.empty(n), np.empty((n, K.ROW_STATS_COLUMNS)), np.empty(n, dtype=np.int64))
    done = _walk_one_block(scores, labels, weights, class_weight, top_k, ties_to_last, finish, fsums, icounts, *rows)
    return done, fsums, icounts, rows


@njit
def _walk_one_block(scores, labels, weights, class_weight, top_k, ties_to_last, finish, fsums, icounts, row_losses,
                    row_stats, row_pred):
    count = scores.shape[0]
    floats, integers, columns = K._new_scratch(count, scores.shape[1], scores)
    K._reset_block(fsums, icounts, 0)
    if finish and K.short_block_in_registers(scores, labels, weights, class_weight, IGNORE, ties_to_last, top_k,
                                             TOLERANCE, 0, 0, count, floats, integers, columns, fsums, icounts, True):
        K._write_row_outputs(floats, 0, count, row_losses, row_stats, row_pred)
        return True
    K._reset_block(fsums, icounts, 0)
    # kernels.general_tokens for float32 logits: logits True, proba_eps None, float32_math True.
    K._walk_short_block(scores, labels, weights, class_weight, IGNORE, ties_to_last, True, None, TOLERANCE,
                        row_pred, 0, 0, count, floats, integers, columns, fsums, icounts, True)
    K._finish_block(scores.shape[1], True, None, top_k, row_losses, row_stats, 0, 0, count, floats, integers,
                    fsums, icounts, K.has_unit_weights(weights, class_weight))
    return False


SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, 1e-30, 3e38, -3e38, "max", "below max"]


@settings(max_examples=40, deadline=None)
@given(n_classes=st.integers(3, 32), rows=st.integers(1, 70), seed=st.integers(0, 2**32 - 1),
       specials=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from(SPECIALS)),
                         max_size=6),
       ties_to_last=st.booleans(), dtype=st.sampled_from(["float32", "float16", "bfloat16"]),
       weighting=st.sampled_from(["none", "rows", "classes", "both"]))
def test_one_block_in_registers_is_the_general_block(n_classes, rows, seed, specials, ties_to_last, dtype, weighting):
    """Any block (any row count, special values at any row and column, any weights): finished in registers it
    gives the general path's sums, counters and per-row losses, statistics and argmax bit for bit, and it is
    finished there exactly when it holds no non-finite row and no infinite loss."""
    if dtype == "bfloat16" and BFLOAT16 is None:
        pytest.skip("ml_dtypes not installed")
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=rng.choice([0.1, 3.0, 40.0]), size=(rows, n_classes)).astype(np.float32)
    labels = rng.integers(0, n_classes, rows)
    labels[rng.random(rows) < 0.2] = IGNORE
    for row, column, value in specials:
        row, column = row % rows, column % n_classes
        if value == "max":
            z[row, column] = z[row].max()
        elif value == "below max":
            z[row, column] = np.nextafter(z[row].max(), np.float32(-np.inf))
        else:
            z[row, column] = value
    with np.errstate(over="ignore"):  # 3e38 is +-inf in float16
        native = z.astype({"bfloat16": BFLOAT16}.get(dtype, dtype))
    scores = kernel_input(validation.scores(native, "logits").view)
    weights = rng.choice([0.0, 0.5, 1.0, 3.0, 1e300], rows) if weighting in ("rows", "both") else np.empty(0)
    class_weight = rng.random(n_classes) * 2 if weighting in ("classes", "both") else np.empty(0)
    top_k = np.array([1, 3], dtype=np.int64)
    done, fast, fast_counts, fast_rows = _one_block(scores, kernel_input(labels), kernel_input(weights),
                                                    kernel_input(class_weight), top_k, ties_to_last, True)
    _, general, general_counts, general_rows = _one_block(scores, kernel_input(labels), kernel_input(weights),
                                                          kernel_input(class_weight), top_k, ties_to_last, False)
    np.testing.assert_array_equal(fast_counts, general_counts)
    np.testing.assert_array_equal(fast.view(np.int64), general.view(np.int64))
    for name, got, expected in zip(("row_losses", "row_stats", "row_pred"), fast_rows, general_rows):
        np.testing.assert_array_equal(got.view(np.int64), expected.view(np.int64), err_msg=name)
    rare = general_counts[0, K.C_NONFINITE] + general_counts[0, K.C_INF_LOSS] > 0
    assert done == (not rare)


@pytest.mark.parametrize("n_classes", [3, 10, 32])
@pytest.mark.parametrize("dtype", score_dtype_params())
def test_compare_in_registers_is_the_general_compare(dtype, n_classes, monkeypatch):
    """compare of short float32-math logits (compare_kernels._compare_tasks_in_registers: each model's block
    finished in registers, its pair inputs from the finish's per-row statistics) gives the general compare
    path's every number, bit for bit: per-model sums, paired sums, the JSON; with and without weights, and
    with blocks made rare (an infinite loss under one model) that go to the general path."""
    if dtype == "bfloat16" and BFLOAT16 is None:
        pytest.skip("ml_dtypes not installed")
    rng = np.random.default_rng(n_classes)
    n = 3 * _config.block_rows(n_classes) + 21
    models = {}
    for name in "abc":
        z, _ = _rows(rng, n, n_classes, "float64", rare=False)
        models[name] = z
    labels = rng.integers(0, n_classes, n)
    for z in models.values():  # _rows' masked classes: never the true one (an infinite loss is made below)
        masked = np.isneginf(z[np.arange(n), labels])
        z[masked, labels[masked]] = 0.5
    models["b"][_config.block_rows(n_classes) + 5, labels[_config.block_rows(n_classes) + 5]] = -np.inf
    native = {name: z.astype({"bfloat16": BFLOAT16}.get(dtype, dtype)) for name, z in models.items()}
    calls = []
    fast = CK._compare_tasks_in_registers
    monkeypatch.setattr(CK, "_compare_tasks_in_registers", lambda *args: calls.append(1) or fast(*args))
    for weights in (None, rng.random(n) * 2):
        got = fastce.compare(labels, logits=native, sample_weight=weights, top_k=(1, 2))
        assert bool(calls) == (dtype != "float64")  # this path ran (float64 scores: float64 math, the general one)
        calls.clear()
        with monkeypatch.context() as patch:
            patch.setattr(K, "finishes_in_registers", lambda *args: False)
            expected = fastce.compare(labels, logits=native, sample_weight=weights, top_k=(1, 2))
        assert not calls
        assert got.to_json() == expected.to_json()
        assert json.dumps(got.state.to_dict()) == json.dumps(expected.state.to_dict())
        assert got.metrics["b"].cross_entropy == np.inf
