"""Numba kernels of ``fastce.compare``: every model's block of rows, then the paired sums of the block.

:func:`compare_blocks` reads each block of rows of every model in turn, in
the same blocks as ``evaluate`` (the score kernel's walk and finish,
``kernels._walk_*_block`` / ``_finish_block``): each model's block sums and
counters are its ``evaluate`` sums, bit for bit, and its per-row loss,
Brier term, rank and p(true class) stay in a per-thread scratch of one
block, from which :func:`_pair_block` sums the paired differences of every
pair of models.  No per-row value ever reaches memory (the per-row buffers
of an earlier design cost 40 bytes per row and model, written and read
back).  The blocks' float64 sums are added exactly (``_exactsum``), so a
comparison does not depend on threads or chunking.

Models whose scores differ in dtype cannot share one compiled kernel: they
are scored one at a time with per-row buffers (``kernels.score_blocks``'s
``row_stats``) that :func:`pair_blocks` reads, with the same pair sums.

Columns of a block's sums (``P_*``; then ``P_TABLE + 12 k`` for the k-th
top-k value: rows / weight / squared weight of the cells both right, only A
right, only B right, both wrong).  "Joint" rows are counted rows of both
models; d = (value under B) - (value under A).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

from fastce import kernels as K
from fastce import kernels_binary as KB
from fastce._accumulate import _EMPTY_F64, _NO_ROW_LOSSES, _NO_ROW_PRED
from fastce._config import KERNEL_OPTIONS, kernel, kernel_step
from fastce._exactsum import exact_add_at, normalize_at
from fastce._parallel import blocks_per_task as blocks_per_task_of
from fastce._parallel import claim, new_claims, run_tasks
from fastce._vecmath import add_reassoc, inline_into_callers, prefer_wide_vectors

(
    P_ROWS,  # joint rows
    P_W,  # sum w over joint rows
    P_W2,  # sum w^2
    P_DL,  # sum w d(loss), rows where both losses are finite
    P_W2DL,  # sum w^2 d(loss)
    P_W2DL2,  # sum w^2 d(loss)^2
    P_DB,  # sum w d(Brier)
    P_W2DB,
    P_W2DB2,
    P_FINITE_ROWS,  # joint rows where both losses are finite
    P_INF_ROWS,  # joint rows with an infinite loss under A or B
    P_LA,  # unweighted sums over finite rows, for the correlation of the losses
    P_LB,
    P_LA2,
    P_LB2,
    P_LAB,
    P_CWB_ROWS,  # rows confidently wrong under B and right under A
    P_CWB_W,
    P_CWB_DL,  # their sum w d(loss)
    P_CWA_ROWS,  # rows confidently wrong under A and right under B
    P_CWA_W,
    P_CWA_DL,
    P_TABLE,
) = range(23)
TABLE_COLUMNS = 12  # per k: (rows, weight, weight^2) x (both right, only A, only B, both wrong)
BOTH_RIGHT, ONLY_A, ONLY_B, BOTH_WRONG = 0, 1, 2, 3


# The score kernel's per-row columns, as literals: numba freezes globals into
# the compiled code and keys its cache on this file alone, so a change of
# kernels.S_* must come with a change here (the assertion makes sure of it).
# The same holds for the score kernel's constants read below, and for the
# kernel functions compare's kernels call: after changing kernels.py, touch
# this file (or clear the cache) when working from a source tree.
S_LOSS, S_P_TRUE, S_BRIER, S_RANK = 0, 1, 3, 4
ROW_OK, RARE_C_ROWS, RARE_BLOCK, INF_LOSS = 0, 0, -1, 2
assert (S_LOSS, S_P_TRUE, S_BRIER, S_RANK) == (K.S_LOSS, K.S_P_TRUE, K.S_BRIER, K.S_RANK)
assert (ROW_OK, RARE_C_ROWS, RARE_BLOCK, INF_LOSS) == (K.ROW_OK, K.C_ROWS, K.RARE_BLOCK, K.C_INF_LOSS)


# Rows of a model's per-block pair inputs (kernels.IN_*: see _pair_inputs).
IN_LOSS, IN_BRIER, IN_RANK, IN_P_TRUE = 0, 1, 2, 3
PAIR_INPUTS = 4
assert (IN_LOSS, IN_BRIER, IN_RANK, IN_P_TRUE, PAIR_INPUTS) == (K.IN_LOSS, K.IN_BRIER, K.IN_RANK, K.IN_P_TRUE,
                                                              K.PAIR_INPUTS)


def pair_columns(n_k: int) -> int:
    return P_TABLE + TABLE_COLUMNS * n_k


@intrinsic
def _array_like_at(typingctx, example, address):
    """An array of ``example``'s type, shape and strides whose data starts at ``address`` (an integer).

    How one compiled kernel reads any number of models: Python hands over the
    first model's array and every model's data address (compare_blocks
    checks that each is a C-contiguous array of that shape and dtype, kept
    alive by the caller for the call).  A typed List of arrays would do the
    same at a cost: its methods compile in every new process, uncached.
    """
    if not isinstance(example, types.Array) or not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        source = context.make_array(array_type)(context, builder, args[0])
        out = context.make_array(array_type)(context, builder)
        data = builder.inttoptr(args[1], source.data.type)
        populate_array(out, data=data, shape=source.shape, strides=source.strides, itemsize=source.itemsize,
                       meminfo=None)
        return out._getvalue()

    return example(example, address), codegen


def compare_blocks(views, labels, weights, top_k, mode, proba_eps, sum_tolerance, float32_math, confident_below,
                   row_stats, nblocks, block_rows, fsums, icounts, pair_fsums):
    """Blocks [0, nblocks) of every model's rows, and their paired sums, on the thread pool (fastce._parallel).

    ``views``: the models' kernel views (C-contiguous, one shape and dtype);
    per model m: ``fsums[m]`` / ``icounts[m]`` as kernels.score_blocks writes
    them (its ``evaluate`` block sums, bit for bit), and ``row_stats[m]`` its
    per-row statistics when ``row_stats`` has rows (for groups=); per pair
    p of (a, b), a before b: ``pair_fsums[p]`` the P_* sums.
    """
    first = views[0]
    addresses = _addresses(views)
    blocks_per_task = blocks_per_task_of(nblocks)  # as accumulate_matrix
    # Two-class logits, and 3-32 classes of float32 math (evaluate's kernel finishing them in registers), without
    # groups=: kernels of their own, each leaving its rare blocks to the general one.
    two_class = mode == K.MODE_LOGITS and first.shape[1] == 2 and row_stats.shape[1] == 0
    in_registers = row_stats.shape[1] == 0 and K.finishes_in_registers(first, mode, float32_math)
    logits, proba_eps, float32_math = K.general_tokens(mode, proba_eps, float32_math)  # the mode and math as types
    # Without weights, the kernels that hand their rare blocks on pass only clean blocks to _pair_block.
    masked = None if (two_class or in_registers) and weights.shape[0] == 0 else True
    if first.shape[1] > K.COLUMN_WALK_MAX_CLASSES:
        kernel = _compare_tasks_long
    elif two_class:
        kernel = _compare_tasks_two_class
    else:
        kernel = _compare_tasks_in_registers if in_registers else _compare_tasks_short
    run_tasks(kernel, (first, addresses, labels, weights, top_k, logits, proba_eps, sum_tolerance, float32_math,
                       confident_below, _EMPTY_F64, np.int64(K.NO_LABEL), False, _NO_ROW_LOSSES, _NO_ROW_PRED,
                       row_stats, nblocks, block_rows, blocks_per_task, fsums, icounts, pair_fsums, masked,
                       new_claims()),
              -(-nblocks // blocks_per_task))
    if two_class or in_registers:
        # Blocks with a non-finite row or an infinite loss under some model
        # (see kernels._two_class_block, _logits_block_f32): the general path, one block at a time.
        def general_path(start, stop, block_fsums, block_icounts, block_pairs):
            run_tasks(_compare_tasks_short,
                      (views[0][start:stop], addresses + start * first.strides[0], labels[start:stop],
                       weights[start:stop] if weights.shape[0] else weights, top_k, logits, proba_eps, sum_tolerance,
                       float32_math, confident_below, _EMPTY_F64, np.int64(K.NO_LABEL), False, _NO_ROW_LOSSES,
                       _NO_ROW_PRED, row_stats, 1, block_rows, 1, block_fsums, block_icounts, block_pairs, True,
                       new_claims()), 1)

        _redo_rare_blocks(general_path, nblocks, block_rows, first.shape[0], fsums, icounts, pair_fsums)


def _redo_rare_blocks(run_block, nblocks, block_rows, n_rows, fsums, icounts, pair_fsums):
    """Each block a kernel marked rare (``icounts[0, b, C_ROWS] == RARE_BLOCK``) done again by
    ``run_block(start, stop, fsums, icounts, pair_fsums)`` on copies of its results (one block, rows numbered
    from ``start``), which then replace the block's."""
    for b in np.flatnonzero(icounts[0, :nblocks, K.C_ROWS] == K.RARE_BLOCK):
        start, stop = b * block_rows, min((b + 1) * block_rows, n_rows)
        block_fsums, block_icounts = fsums[:, b:b + 1].copy(), icounts[:, b:b + 1].copy()
        block_pairs = pair_fsums[:, b:b + 1].copy()
        run_block(start, stop, block_fsums, block_icounts, block_pairs)
        first_rows = block_icounts[:, 0, K.FIRST_NONFINITE:]
        first_rows[first_rows >= 0] += start  # numbered from the block's start there
        fsums[:, b], icounts[:, b], pair_fsums[:, b] = block_fsums[:, 0], block_icounts[:, 0], block_pairs[:, 0]


def compare_binary_blocks(views, labels, weights, top_k, from_logits, float32_math, proba_eps, confident_below,
                          row_stats, nblocks, block_rows, fsums, icounts, pair_fsums):
    """compare_blocks for 1-D binary scores: evaluate's binary kernel for each model's block (logits:
    kernels_binary, whose compare copy of the loop also writes the pair inputs; probabilities:
    kernels.binary_proba_pair_block), then the block's pairs.  ``row_stats[m]``, when it has
    rows (groups=), receives model m's per-row statistics (kernels.S_LOSS, S_P_TRUE, S_BRIER, S_RANK).
    ``float32_math``: the logits' math, as evaluate's (a bool here; see kernels_binary.logit_element)."""
    if from_logits and block_rows != KB.BINARY_BLOCK_ROWS:
        raise ValueError(f"binary logit blocks have {KB.BINARY_BLOCK_ROWS} rows, not {block_rows}")
    addresses = _addresses(views)
    blocks_per_task = blocks_per_task_of(nblocks)
    # None for logits: the kernel compiled for logits then has no probability path, and the other way round
    # (numba prunes the branches on ``proba_eps is None`` before typing; the dead path took 0.4-2 s to compile).
    # None: float64 math, and for probabilities (one compiled kernel each, see kernels_binary.logit_element).
    float32_math = K.math_token(from_logits and float32_math and views[0].dtype != np.float64)
    proba_eps = None if from_logits else proba_eps
    # Without weights or groups=, a block that is not clean under some model is left to a second kernel (the
    # same one, compiled with the masked pair sums: see _pair_block), compiled only when such a block occurs.
    masked = None if weights.shape[0] == 0 and row_stats.shape[1] == 0 else True
    run_tasks(_compare_tasks_binary, (views[0], addresses, labels, weights, top_k, proba_eps, float32_math,
                                      confident_below, row_stats, nblocks, block_rows, blocks_per_task, fsums, icounts,
                                      pair_fsums, masked, new_claims()),
              -(-nblocks // blocks_per_task))
    if masked is None:
        def masked_path(start, stop, block_fsums, block_icounts, block_pairs):
            run_tasks(_compare_tasks_binary,
                      (views[0][start:stop], addresses + start * views[0].strides[0], labels[start:stop], weights,
                       top_k, proba_eps, float32_math, confident_below, row_stats, 1, block_rows, 1, block_fsums,
                       block_icounts, block_pairs, True, new_claims()), 1)

        _redo_rare_blocks(masked_path, nblocks, block_rows, views[0].shape[0], fsums, icounts, pair_fsums)


@kernel(**KERNEL_OPTIONS)
def _compare_tasks_binary(first, addresses, labels, weights, top_k, proba_eps, float32_math, confident_below,
                          row_stats, nblocks, block_rows, blocks_per_task, fsums, icounts, pair_fsums, masked, claims,
                          first_task, task_step):
    """The tasks of compare_binary_blocks this thread claims (see fastce._parallel.claim).

    Per model, the block's terms (logits; kernels' T_ rows) and pair inputs
    (rows N_TERMS + IN_*), a literal BINARY_TERM_ROW apart (see
    kernels_binary.binary_logit_pair_block).  A model is clean in a block
    when every row is counted with a finite loss (see _pair_block).
    ``proba_eps`` is None for logits; ``float32_math``: see kernels_binary.logit_element.  With ``masked``
    None (no weights, no groups=), a block that is not clean under some model is marked rare (RARE_BLOCK in
    ``icounts[0, b, C_ROWS]``) instead of paired, for compare_binary_blocks to do again with the masked sums.
    """
    terms = np.empty((addresses.shape[0], K.N_TERMS + PAIR_INPUTS, KB.BINARY_TERM_ROW))
    pair_weight = np.empty(block_rows + K.SCRATCH_PAD)
    clean = np.zeros(addresses.shape[0], dtype=np.bool_)
    n_tasks = (nblocks + blocks_per_task - 1) // blocks_per_task
    while True:
        task = claim(claims)  # see fastce._parallel.claim
        if task >= n_tasks:
            break
        for b in range(task * blocks_per_task, min(nblocks, (task + 1) * blocks_per_task)):
            start = b * block_rows
            stop = min(start + block_rows, first.shape[0])
            for m in range(addresses.shape[0]):
                scores = _array_like_at(first, addresses[m])
                if proba_eps is None:
                    n_ok, n_inf, n_hit = KB.binary_logit_pair_block(scores, labels, weights, start, stop,
                                                                      float32_math, terms[m])
                    KB.binary_logit_block_sums(scores, labels, weights, top_k, b, start, stop, n_ok, n_inf, n_hit,
                                               terms[m], fsums[m], icounts[m])
                else:
                    K.binary_proba_pair_block(scores, labels, weights, top_k, proba_eps, b, start, stop, fsums[m],
                                              icounts[m], terms[m])
                    n_ok, n_inf = icounts[m][b, RARE_C_ROWS], 0  # clipped: a probability's loss is finite
                clean[m] = (n_ok == stop - start) & (n_inf == 0)
                if row_stats.shape[1] != 0:
                    _keep_stats(terms[m, K.N_TERMS:], start, stop - start, row_stats[m])
            if masked is None and not clean.all():
                icounts[0, b, RARE_C_ROWS] = RARE_BLOCK
                continue
            _pair_block(terms, K.N_TERMS, clean, fsums, pair_weight, weights, start, stop - start, top_k,
                        confident_below, pair_fsums, b, masked)


@kernel_step(**KERNEL_OPTIONS)
def _keep_stats(inputs, start, count, row_stats):
    """A block's pair inputs (rows IN_*) as per-row statistics (columns S_*), for groups=: _copy_stats reversed."""
    for r in range(count):
        u = np.uint64(start + r)  # unsigned: a signed index keeps numba's wraparound (a scatter per vector)
        row_stats[u, S_LOSS] = inputs[IN_LOSS, r]
        row_stats[u, S_BRIER] = inputs[IN_BRIER, r]
        row_stats[u, S_RANK] = inputs[IN_RANK, r]
        row_stats[u, S_P_TRUE] = inputs[IN_P_TRUE, r]


def _addresses(views):
    """The data addresses of the models' views, checked to be aligned, C-contiguous, of one shape and dtype
    (see _array_like_at)."""
    first = views[0]
    for view in views:
        if (view.dtype != first.dtype or view.shape != first.shape or not view.flags.c_contiguous
                or not view.flags.aligned):
            raise ValueError("compare's kernels need aligned C-contiguous views of one shape and dtype")
    return np.array([view.__array_interface__["data"][0] for view in views], dtype=np.int64)


@kernel(**KERNEL_OPTIONS)
def _compare_tasks_short(first, addresses, labels, weights, top_k, logits, proba_eps, sum_tolerance, float32_math,
                         confident_below, class_weight, ignore_label, ties_to_last, row_losses, row_pred, row_stats,
                         nblocks, block_rows, blocks_per_task, fsums, icounts, pair_fsums, masked, claims, first_task,
                         task_step):
    """The tasks of compare_blocks for short rows (C <= 32) this thread claims (see fastce._parallel.claim).

    Short and long rows are two kernels, as for evaluate, so that a first
    use compiles only the one it needs.  ``class_weight`` ... ``row_pred``
    are evaluate's empty defaults, passed (not literals) so that the score
    kernel's functions are called with evaluate's argument types.
    """
    floats, integers, columns = K._new_scratch(block_rows, first.shape[1], first)
    inputs, pair_weight = _new_pair_scratch(addresses.shape[0], block_rows)
    clean = np.zeros(addresses.shape[0], dtype=np.bool_)
    n_tasks = (nblocks + blocks_per_task - 1) // blocks_per_task
    while True:
        task = claim(claims)  # see fastce._parallel.claim
        if task >= n_tasks:
            break
        for b in range(task * blocks_per_task, min(nblocks, (task + 1) * blocks_per_task)):
            start = b * block_rows
            count = min(block_rows, first.shape[0] - start)
            for m in range(addresses.shape[0]):
                scores = _array_like_at(first, addresses[m])
                K._reset_block(fsums[m], icounts[m], b)
                K._walk_short_block(scores, labels, weights, class_weight, ignore_label, ties_to_last, logits,
                                    proba_eps, sum_tolerance, row_pred, b, start, count, floats, integers, columns,
                                    fsums[m], icounts[m], float32_math)
                _finish_model(first.shape[1], logits, proba_eps, top_k, row_losses, row_stats, b, start, count, floats,
                              integers, fsums, icounts, inputs, clean, m, K.has_unit_weights(weights, class_weight))
            _pair_block(inputs, 0, clean, fsums, pair_weight, weights, start, count, top_k, confident_below, pair_fsums,
                        b, masked)


# _finish_model and _pair_block: inlined by numba into the task kernels, so that their callees are
# optimised and code-generated once more in each, not twice (see kernels._walk_short_block): a first compare
# of multi-class models compiles 1.6 s sooner (12.2 -> 10.5 s, empty cache), of binary ones 0.5 s.
@njit(inline="always", **KERNEL_OPTIONS)
def _finish_model(n_classes, logits, proba_eps, top_k, row_losses, row_stats, b, start, count, floats, integers,
                  fsums, icounts, inputs, clean, m, unit_weights):
    """Model m's block b after its walk: evaluate's finish, then the model's pair inputs and whether it is clean."""
    K._finish_block(n_classes, logits, proba_eps, top_k, row_losses, row_stats[m], b, start, count, floats, integers,
                    fsums[m], icounts[m], unit_weights)
    _pair_inputs(proba_eps, count, floats, integers, inputs[m])
    clean[m] = (icounts[m][b, RARE_C_ROWS] == count) & (icounts[m][b, INF_LOSS] == 0)


@kernel(**KERNEL_OPTIONS)
def _compare_tasks_two_class(first, addresses, labels, weights, top_k, logits, proba_eps, sum_tolerance, float32_math,
                             confident_below, class_weight, ignore_label, ties_to_last, row_losses, row_pred,
                             row_stats, nblocks, block_rows, blocks_per_task, fsums, icounts, pair_fsums, masked,
                             claims, first_task, task_step):
    """_compare_tasks_short for two-class logits, by kernels._two_class_block (evaluate's two-class path).

    A block that is rare under some model is marked in ``icounts[0, b,
    C_ROWS]`` (RARE_BLOCK) for compare_blocks to hand to the general path:
    a kernel of its own, compiled only when such a block occurs.
    """
    row_weight = np.empty(block_rows)
    exps32 = np.empty(block_rows, dtype=np.float32)  # see kernels.two_class_exps
    # Per model, the terms of kernels._two_class_block, then its pair inputs (rows N_TERMS + IN_*).
    terms = np.empty((addresses.shape[0], K.N_TERMS + PAIR_INPUTS, K.TERM_ROW))
    pair_weight = np.empty(block_rows)
    clean = np.ones(addresses.shape[0], dtype=np.bool_)  # a block that is not rare (see below)
    n_tasks = (nblocks + blocks_per_task - 1) // blocks_per_task
    while True:
        task = claim(claims)  # see fastce._parallel.claim
        if task >= n_tasks:
            break
        for b in range(task * blocks_per_task, min(nblocks, (task + 1) * blocks_per_task)):
            start = b * block_rows
            count = min(block_rows, first.shape[0] - start)
            rare = False
            for m in range(addresses.shape[0]):
                scores = _array_like_at(first, addresses[m])
                K._reset_block(fsums[m], icounts[m], b)
                if not K._two_class_block(scores, labels, weights, class_weight, ignore_label, ties_to_last, top_k,
                                          sum_tolerance, float32_math, None, b, start, count, row_weight,
                                          exps32, terms[m], fsums[m], icounts[m], True):
                    rare = True
                    break
            if rare:
                icounts[0, b, RARE_C_ROWS] = RARE_BLOCK
            else:
                # Not rare: every row counted with a finite loss (compare ignores no label), under every model.
                _pair_block(terms, K.N_TERMS, clean, fsums, pair_weight, weights, start, count, top_k, confident_below,
                            pair_fsums, b, masked)


@kernel(**KERNEL_OPTIONS)
def _compare_tasks_in_registers(first, addresses, labels, weights, top_k, logits, proba_eps, sum_tolerance,
                                float32_math, confident_below, class_weight, ignore_label, ties_to_last, row_losses,
                                row_pred, row_stats, nblocks, block_rows, blocks_per_task, fsums, icounts, pair_fsums,
                                masked, claims, first_task, task_step):
    """_compare_tasks_short for 3-32 classes of float32 math, by evaluate's blocks finished in registers
    (kernels.short_block_in_registers, with each row's statistics for the pair inputs).

    A block that is rare under some model is marked in ``icounts[0, b,
    C_ROWS]`` (RARE_BLOCK) for compare_blocks to hand to the general path,
    as _compare_tasks_two_class does: a first compare of such logits
    compiles neither that path nor its finish.
    """
    floats, integers, columns = K._new_scratch(block_rows, first.shape[1], first)
    inputs, pair_weight = _new_pair_scratch(addresses.shape[0], block_rows)
    clean = np.ones(addresses.shape[0], dtype=np.bool_)  # a block that is not rare (see below)
    # Each row's statistics, always: a run-time True, since a literal one types a second compile of
    # kernels._logits_block_f32 (evaluate's takes a bool; 0.6 s of a first compare, numba compile events).
    keep_outputs = nblocks >= 0
    n_tasks = (nblocks + blocks_per_task - 1) // blocks_per_task
    while True:
        task = claim(claims)  # see fastce._parallel.claim
        if task >= n_tasks:
            break
        for b in range(task * blocks_per_task, min(nblocks, (task + 1) * blocks_per_task)):
            start = b * block_rows
            count = min(block_rows, first.shape[0] - start)
            rare = False
            for m in range(addresses.shape[0]):
                scores = _array_like_at(first, addresses[m])
                K._reset_block(fsums[m], icounts[m], b)
                if not K.short_block_in_registers(scores, labels, weights, class_weight, ignore_label, ties_to_last,
                                                  top_k, sum_tolerance, b, start, count, floats, integers, columns,
                                                  fsums[m], icounts[m], keep_outputs):
                    rare = True
                    break
                _pair_inputs_in_registers(floats, count, inputs[m])
            if rare:
                icounts[0, b, RARE_C_ROWS] = RARE_BLOCK
            else:
                # Not rare: every row counted with a finite loss (compare ignores no label), under every model.
                _pair_block(inputs, 0, clean, fsums, pair_weight, weights, start, count, top_k, confident_below,
                            pair_fsums, b, masked)


@njit(inline="always", **KERNEL_OPTIONS)
def _pair_inputs_in_registers(floats, count, inputs):
    """A model's pair inputs (rows IN_*) from the scratch of a block finished in registers with its outputs
    (kernels.OUTPUT_ROWS, the rank): the values _pair_inputs reads from the general path's, every row counted."""
    outputs, rank = floats[K.OUTPUT_ROWS:K.OUTPUT_ROWS + K.ROW_STATS_COLUMNS], floats[13]
    for r in range(count):
        inputs[IN_LOSS, r] = outputs[K.S_LOSS, r]
        inputs[IN_BRIER, r] = outputs[K.S_BRIER, r]
        inputs[IN_RANK, r] = rank[r]
        inputs[IN_P_TRUE, r] = outputs[K.S_P_TRUE, r]


@kernel(**KERNEL_OPTIONS)
def _compare_tasks_long(first, addresses, labels, weights, top_k, logits, proba_eps, sum_tolerance, float32_math,
                        confident_below, class_weight, ignore_label, ties_to_last, row_losses, row_pred, row_stats,
                        nblocks, block_rows, blocks_per_task, fsums, icounts, pair_fsums, masked, claims, first_task,
                        task_step):
    """_compare_tasks_short's twin for long rows (C > 32)."""
    floats, integers, columns = K._new_scratch(block_rows, first.shape[1], first)
    exp_chunk64 = np.empty(K.EXP_SCRATCH)  # see kernels.exp_sums
    inputs, pair_weight = _new_pair_scratch(addresses.shape[0], block_rows)
    clean = np.zeros(addresses.shape[0], dtype=np.bool_)
    n_tasks = (nblocks + blocks_per_task - 1) // blocks_per_task
    while True:
        task = claim(claims)  # see fastce._parallel.claim
        if task >= n_tasks:
            break
        for b in range(task * blocks_per_task, min(nblocks, (task + 1) * blocks_per_task)):
            start = b * block_rows
            count = min(block_rows, first.shape[0] - start)
            for m in range(addresses.shape[0]):
                scores = _array_like_at(first, addresses[m])
                K._reset_block(fsums[m], icounts[m], b)
                K._walk_long_block(scores, labels, weights, class_weight, ignore_label, ties_to_last, logits,
                                   proba_eps, sum_tolerance, row_pred, b, start, count, floats, integers, columns,
                                   fsums[m], icounts[m], float32_math, exp_chunk64)
                _finish_model(first.shape[1], logits, proba_eps, top_k, row_losses, row_stats, b, start, count, floats,
                              integers, fsums, icounts, inputs, clean, m, K.has_unit_weights(weights, class_weight))
            _pair_block(inputs, 0, clean, fsums, pair_weight, weights, start, count, top_k, confident_below, pair_fsums,
                        b, masked)


@kernel_step(**KERNEL_OPTIONS)
def _new_pair_scratch(n_models, block_rows):
    """Per model, a block's pair inputs (rows IN_*); and the block's row weights."""
    return np.empty((n_models, PAIR_INPUTS, block_rows + K.SCRATCH_PAD)), np.empty(block_rows + K.SCRATCH_PAD)


@kernel_step(**KERNEL_OPTIONS)
def _pair_inputs(proba_eps, count, floats, integers, inputs):
    """A model's pair inputs (rows IN_*) from the score kernel's scratch of a finished block.

    The values kernels._finish_block writes to row_stats (S_LOSS, S_BRIER,
    S_RANK, S_P_TRUE), NaN for rows not counted, read from its scratch
    (see kernels._new_scratch for the rows).
    """
    rest, loss_of, brier, target, e_true = floats[1], floats[3], floats[4], floats[7], floats[12]
    ahead, status = integers[0], integers[2]
    for r in range(count):
        ok = status[r] == ROW_OK
        p_true = target[r] if proba_eps is not None else e_true[r] / (1.0 + rest[r])  # probabilities, or logits
        inputs[IN_LOSS, r] = loss_of[r] if ok else np.nan
        inputs[IN_BRIER, r] = brier[r] if ok else np.nan
        inputs[IN_RANK, r] = np.float64(ahead[r]) if ok else np.nan
        inputs[IN_P_TRUE, r] = p_true if ok else np.nan


@njit(inline="always", **KERNEL_OPTIONS)
def _pair_block(inputs, first_row, clean, model_fsums, pair_weight, weights, start, count, top_k, confident_below,
                pair_fsums, b, masked):
    """Block b's paired sums of every pair of models (a before b) into pair_fsums[pair, b].

    ``inputs[m, first_row + IN_*]``: model m's pair inputs of the block;
    ``clean[m]``: every row of the block counted under model m, with a
    finite loss (then, without weights, the pair sums need no masks, and
    each model's sums of its losses and squared losses are its own block
    sums, ``model_fsums[m, b]``).  ``masked``: None when the caller knows
    every block it passes is clean and unweighted (the kernels that hand
    their rare blocks on, called without weights: see compare_blocks), so
    that numba prunes the masked sums before typing (1.1-1.4 s of a first
    compare, numba compile events); True otherwise.
    """
    weighted = weights.shape[0] != 0
    filled = False  # pair_weight holds this block's weights
    pair = 0
    for a in range(inputs.shape[0]):
        for other in range(a + 1, inputs.shape[0]):
            inputs_a, inputs_b = inputs[a][first_row:], inputs[other][first_row:]
            if not weighted and clean[a] and clean[other]:
                moments = K.F_TOPK + top_k.shape[0]
                _clean_pair_sums(inputs_a, inputs_b, count, confident_below, pair_fsums[pair], b,
                                 model_fsums[a, b, K.F_LOSS], model_fsums[other, b, K.F_LOSS],
                                 model_fsums[a, b, moments + K.M_W2LOSS2], model_fsums[other, b, moments + K.M_W2LOSS2])
                for k in range(top_k.shape[0]):
                    _clean_pair_table(inputs_a, inputs_b, count, np.float64(top_k[k]), pair_fsums[pair], b,
                                      P_TABLE + TABLE_COLUMNS * k)
            elif masked is None:
                # Cannot happen (see the docstring): a loud NaN rather than a block left out of the pair sums.
                for c in range(pair_fsums.shape[2]):
                    pair_fsums[pair, b, c] = np.nan
            else:
                # Weights, or (rare without them) a row not counted or of infinite loss: the masked sums.
                if not filled:
                    for r in range(count):
                        pair_weight[r] = np.float64(weights[np.uint64(start + r)]) if weighted else 1.0
                    filled = True
                _pair_sums(inputs_a, inputs_b, pair_weight, count, confident_below, pair_fsums[pair], b)
                for k in range(top_k.shape[0]):
                    _pair_table(inputs_a, inputs_b, pair_weight, count, np.float64(top_k[k]), pair_fsums[pair], b,
                                P_TABLE + TABLE_COLUMNS * k)
            pair += 1


def pair_blocks(stats_a, stats_b, weights, top_k, confident_below, block_rows, fsums):
    """Per-block paired sums of rows [0, len(stats_a)) into ``fsums`` (one row per block); returns the block count.

    For models scored apart (see the module's docstring): ``stats_a`` /
    ``stats_b`` the per-row ``kernels.S_*`` columns of the two models (NaN
    loss: the row was not counted); ``weights``: the row weights, or empty
    for unit weights; ``fsums`` (1, blocks, P columns).  The blocks run on
    the thread pool (fastce._parallel).
    """
    nblocks = (stats_a.shape[0] + block_rows - 1) // block_rows
    run_tasks(_pair_tasks, (stats_a, stats_b, weights, top_k, confident_below, block_rows, fsums, new_claims()),
              nblocks)
    return nblocks


@kernel(**KERNEL_OPTIONS)
def _pair_tasks(stats_a, stats_b, weights, top_k, confident_below, block_rows, fsums, claims, first_task, task_step):
    """The blocks of pair_blocks (see there) this thread claims (see fastce._parallel.claim).

    Each block's per-row statistics are first copied into contiguous pair
    inputs: read in place they are 5 floats apart, a stride LLVM does not
    vectorise.
    """
    n_rows = stats_a.shape[0]
    nblocks = (n_rows + block_rows - 1) // block_rows
    inputs, pair_weight = _new_pair_scratch(2, block_rows)
    clean = np.zeros(2, dtype=np.bool_)  # the masked sums: rows not counted are not known here
    while True:
        b = claim(claims)  # see fastce._parallel.claim; each block writes its own row of fsums
        if b >= nblocks:
            break
        lo = b * block_rows
        count = min(n_rows, lo + block_rows) - lo
        _copy_stats(stats_a, lo, count, inputs[0])
        _copy_stats(stats_b, lo, count, inputs[1])
        _pair_block(inputs, 0, clean, fsums, pair_weight, weights, lo, count, top_k, confident_below, fsums, b,
                    True)  # never clean


@kernel_step(**KERNEL_OPTIONS)
def _copy_stats(stats, lo, count, inputs):
    for r in range(count):
        u = np.uint64(lo + r)  # unsigned: see _keep_stats
        inputs[IN_LOSS, r] = stats[u, S_LOSS]
        inputs[IN_BRIER, r] = stats[u, S_BRIER]
        inputs[IN_RANK, r] = stats[u, S_RANK]
        inputs[IN_P_TRUE, r] = stats[u, S_P_TRUE]


@kernel(**KERNEL_OPTIONS)
def _pair_sums(inputs_a, inputs_b, weight, count, confident_below, fsums, b):
    """The paired sums P_ROWS ... P_CWA_DL of a block's pair inputs (rows IN_*) of models A and B into fsums[b].

    Loops of selects, no branch, each with at most 4 local (reassociable)
    sums: LLVM leaves a loop with more accumulators than vector registers
    scalar -- with 8 sums per loop two of three loops stayed scalar on
    AVX-512 (7.4 against 0.6 ns per row for the same sums in loops of 4,
    measured in cache).  A row not counted under one of the models (NaN
    loss) gets weight 0 and adds nothing; d = 0 where a loss is infinite.
    The pair inputs stay in cache.  A leaf with 512-bit vectors on AVX-512
    hosts (see _vecmath.prefer_wide_vectors).
    """
    prefer_wide_vectors()
    inline_into_callers()  # one copy of its sums: see tests/test_one_copy.py
    loss_a, brier_a, rank_a, p_true_a = inputs_a[IN_LOSS], inputs_a[IN_BRIER], inputs_a[IN_RANK], inputs_a[IN_P_TRUE]
    loss_b, brier_b, rank_b, p_true_b = inputs_b[IN_LOSS], inputs_b[IN_BRIER], inputs_b[IN_RANK], inputs_b[IN_P_TRUE]
    rows = w_sum = w2_sum = inf_rows = 0.0
    for r in range(count):
        joint = (loss_a[r] == loss_a[r]) & (loss_b[r] == loss_b[r])
        w = weight[r] if joint else 0.0
        infinite = joint & ((abs(loss_a[r]) == np.inf) | (abs(loss_b[r]) == np.inf))
        rows = add_reassoc(rows, 1.0 if joint else 0.0)
        w_sum = add_reassoc(w_sum, w)
        w2_sum = add_reassoc(w2_sum, w * w)
        inf_rows = add_reassoc(inf_rows, 1.0 if infinite else 0.0)
    finite_rows = dl = w2dl = w2dl2 = 0.0
    for r in range(count):
        finite = _both_finite(loss_a[r], loss_b[r])
        w = weight[r] if finite else 0.0
        w2 = w * w
        d = (loss_b[r] - loss_a[r]) if finite else 0.0
        finite_rows = add_reassoc(finite_rows, 1.0 if finite else 0.0)
        dl = add_reassoc(dl, w * d)
        w2dl = add_reassoc(w2dl, w2 * d)
        w2dl2 = add_reassoc(w2dl2, w2 * (d * d))
    la = lb = la2 = lb2 = 0.0
    for r in range(count):
        finite = _both_finite(loss_a[r], loss_b[r])
        a = loss_a[r] if finite else 0.0
        bb = loss_b[r] if finite else 0.0
        la = add_reassoc(la, a)
        lb = add_reassoc(lb, bb)
        la2 = add_reassoc(la2, a * a)
        lb2 = add_reassoc(lb2, bb * bb)
    lab = db = w2db = w2db2 = 0.0
    for r in range(count):
        joint = (loss_a[r] == loss_a[r]) & (loss_b[r] == loss_b[r])
        finite = _both_finite(loss_a[r], loss_b[r])
        w = weight[r] if joint else 0.0
        w2 = w * w
        lab = add_reassoc(lab, (loss_a[r] * loss_b[r]) if finite else 0.0)
        brier_d = (brier_b[r] - brier_a[r]) if joint else 0.0
        db = add_reassoc(db, w * brier_d)
        w2db = add_reassoc(w2db, w2 * brier_d)
        w2db2 = add_reassoc(w2db2, w2 * (brier_d * brier_d))
    cwb_rows, cwb_w, cwb_dl = _confidently_wrong_sums(loss_a, loss_b, rank_a, rank_b, p_true_b, weight, count,
                                                      confident_below)
    cwa_rows, cwa_w, cwa_dl = _confidently_wrong_sums(loss_b, loss_a, rank_b, rank_a, p_true_a, weight, count,
                                                      confident_below)
    fsums[b, P_ROWS], fsums[b, P_W], fsums[b, P_W2] = rows, w_sum, w2_sum
    fsums[b, P_DL], fsums[b, P_W2DL], fsums[b, P_W2DL2] = dl, w2dl, w2dl2
    fsums[b, P_DB], fsums[b, P_W2DB], fsums[b, P_W2DB2] = db, w2db, w2db2
    fsums[b, P_FINITE_ROWS], fsums[b, P_INF_ROWS] = finite_rows, inf_rows
    fsums[b, P_LA], fsums[b, P_LB], fsums[b, P_LA2], fsums[b, P_LB2], fsums[b, P_LAB] = la, lb, la2, lb2, lab
    # d is loss_b - loss_a whichever model is confidently wrong: the second sum is over (a - b), negated.
    fsums[b, P_CWB_ROWS], fsums[b, P_CWB_W], fsums[b, P_CWB_DL] = cwb_rows, cwb_w, cwb_dl
    fsums[b, P_CWA_ROWS], fsums[b, P_CWA_W], fsums[b, P_CWA_DL] = cwa_rows, cwa_w, -cwa_dl


# Two counts in one float sum: rows + _COUNT_SCALE * other rows (exact: a block holds at most 512 rows).
_COUNT_SCALE = 2.0 ** 20


@kernel(**KERNEL_OPTIONS)
def _clean_pair_sums(inputs_a, inputs_b, count, confident_below, fsums, b, la, lb, la2, lb2):
    """_pair_sums without weights, for a block whose rows are all counted, with finite losses, under both models.

    No row needs a mask then, and w = 1: the row counts are the block's,
    every weighted sum equals an unweighted one (w d = d, w^2 d^2 = d^2,
    exactly), each model's sum of losses and of squared losses (``la`` ...
    ``lb2``) are its own block sums (the same terms), and the other sums come
    from 8, in two loops (the two confidently-wrong counts share one float
    sum, see _COUNT_SCALE).  _pair_sums costs 2.2 ns per row and pair in
    cache, as much as a two-class row of each model; this, 1.2 with its table.
    """
    prefer_wide_vectors()
    inline_into_callers()  # one copy of its sums: see tests/test_one_copy.py
    loss_a, brier_a, rank_a, p_true_a = inputs_a[IN_LOSS], inputs_a[IN_BRIER], inputs_a[IN_RANK], inputs_a[IN_P_TRUE]
    loss_b, brier_b, rank_b, p_true_b = inputs_b[IN_LOSS], inputs_b[IN_BRIER], inputs_b[IN_RANK], inputs_b[IN_P_TRUE]
    dl = dl2 = lab = db = 0.0
    for r in range(count):
        d = loss_b[r] - loss_a[r]
        dl = add_reassoc(dl, d)
        dl2 = add_reassoc(dl2, d * d)
        lab = add_reassoc(lab, loss_a[r] * loss_b[r])
        db = add_reassoc(db, brier_b[r] - brier_a[r])
    db2 = cw_rows = cwb_dl = cwa_dl = 0.0
    for r in range(count):
        brier_d = brier_b[r] - brier_a[r]
        d = loss_b[r] - loss_a[r]
        cwb = (rank_a[r] < 1.0) & (rank_b[r] >= 1.0) & (p_true_b[r] < confident_below)
        cwa = (rank_b[r] < 1.0) & (rank_a[r] >= 1.0) & (p_true_a[r] < confident_below)
        db2 = add_reassoc(db2, brier_d * brier_d)
        cw_rows = add_reassoc(cw_rows, np.float64(cwb) + _COUNT_SCALE * np.float64(cwa))
        cwb_dl = add_reassoc(cwb_dl, d * np.float64(cwb))  # d is finite: d * 0 = 0
        cwa_dl = add_reassoc(cwa_dl, d * np.float64(cwa))
    cwa_rows = math.floor(cw_rows / _COUNT_SCALE)
    cwb_rows = cw_rows - cwa_rows * _COUNT_SCALE
    rows = np.float64(count)
    fsums[b, P_ROWS], fsums[b, P_W], fsums[b, P_W2] = rows, rows, rows
    fsums[b, P_DL], fsums[b, P_W2DL], fsums[b, P_W2DL2] = dl, dl, dl2
    fsums[b, P_DB], fsums[b, P_W2DB], fsums[b, P_W2DB2] = db, db, db2
    fsums[b, P_FINITE_ROWS], fsums[b, P_INF_ROWS] = rows, 0.0
    fsums[b, P_LA], fsums[b, P_LB], fsums[b, P_LA2], fsums[b, P_LB2], fsums[b, P_LAB] = la, lb, la2, lb2, lab
    fsums[b, P_CWB_ROWS], fsums[b, P_CWB_W], fsums[b, P_CWB_DL] = cwb_rows, cwb_rows, cwb_dl
    fsums[b, P_CWA_ROWS], fsums[b, P_CWA_W], fsums[b, P_CWA_DL] = cwa_rows, cwa_rows, cwa_dl


@kernel(**KERNEL_OPTIONS)
def _clean_pair_table(inputs_a, inputs_b, count, k, fsums, b, column):
    """_pair_table for a clean block (see _clean_pair_sums): three counts, both wrong the rest (weights are counts)."""
    prefer_wide_vectors()
    inline_into_callers()  # one copy of its sums: see tests/test_one_copy.py
    rank_a, rank_b = inputs_a[IN_RANK], inputs_b[IN_RANK]
    both = only_a = only_b = 0.0
    for r in range(count):
        right_a, wrong_a = rank_a[r] < k, rank_a[r] >= k
        right_b, wrong_b = rank_b[r] < k, rank_b[r] >= k
        both = add_reassoc(both, np.float64(right_a & right_b))
        only_a = add_reassoc(only_a, np.float64(right_a & wrong_b))
        only_b = add_reassoc(only_b, np.float64(wrong_a & right_b))
    neither = np.float64(count) - both - only_a - only_b
    for cell, rows in ((BOTH_RIGHT, both), (ONLY_A, only_a), (ONLY_B, only_b), (BOTH_WRONG, neither)):
        at = column + 3 * cell
        fsums[b, at], fsums[b, at + 1], fsums[b, at + 2] = rows, rows, rows


@njit(inline="always", **KERNEL_OPTIONS)
def _both_finite(x, y):
    """Both losses counted (not NaN) and finite."""
    return (abs(x) < np.inf) & (abs(y) < np.inf)


@kernel_step(**KERNEL_OPTIONS)
def _confidently_wrong_sums(loss_right, loss_wrong, rank_right, rank_wrong, p_true_wrong, weight, count,
                            confident_below):
    """(rows, weight, sum w (loss_wrong - loss_right)) of the joint rows right under one model and
    confidently wrong (true class not first, p(true) < confident_below) under the other: one loop of 3 sums."""
    prefer_wide_vectors()
    inline_into_callers()  # one copy of its sums: see tests/test_one_copy.py
    rows = w_sum = dl = 0.0
    for r in range(count):
        joint = (loss_right[r] == loss_right[r]) & (loss_wrong[r] == loss_wrong[r])
        finite = _both_finite(loss_right[r], loss_wrong[r])
        d = (loss_wrong[r] - loss_right[r]) if finite else 0.0
        cw = joint & (rank_right[r] < 1.0) & (rank_wrong[r] >= 1.0) & (p_true_wrong[r] < confident_below)
        w = weight[r] if cw else 0.0
        rows = add_reassoc(rows, 1.0 if cw else 0.0)
        w_sum = add_reassoc(w_sum, w)
        dl = add_reassoc(dl, w * d)
    return rows, w_sum, dl


@kernel_step(**KERNEL_OPTIONS)
def _pair_table(inputs_a, inputs_b, weight, count, k, fsums, b, column):
    """The 2 x 2 table of "true class ranked < k" of a block's pair inputs into fsums[b, column:column + 12].

    Cells in the order BOTH_RIGHT, ONLY_A, ONLY_B, BOTH_WRONG, each (rows,
    weight, squared weight), one loop per cell (see _table_cell); the cell's
    flags are run-time values: as literals, numba compiled _table_cell once
    per cell.
    """
    inline_into_callers()  # one copy of its sums: see tests/test_one_copy.py
    for cell in range(4):  # BOTH_RIGHT, ONLY_A, ONLY_B, BOTH_WRONG: a loop, so that _table_cell compiles once
        _table_cell(inputs_a, inputs_b, weight, count, k, cell < 2, cell % 2 == 0, fsums, b, column + 3 * cell)


@kernel(**KERNEL_OPTIONS)
def _table_cell(inputs_a, inputs_b, weight, count, k, a_right, b_right, fsums, b, at):
    """(rows, weight, squared weight) of the joint rows where "ranks the true class < k" is ``a_right``
    under A and ``b_right`` under B, into fsums[b, at:at + 3].

    One branch-free loop of 3 sums: with the 6 sums of two cells in one
    loop LLVM left it scalar (checked in the IR; tests/test_vectorised.py).
    """
    prefer_wide_vectors()
    inline_into_callers()  # one copy of its sums: see tests/test_one_copy.py
    loss_a, rank_a, loss_b, rank_b = inputs_a[IN_LOSS], inputs_a[IN_RANK], inputs_b[IN_LOSS], inputs_b[IN_RANK]
    a_wrong = not a_right
    b_wrong = not b_right
    rows = removed = w_sum = w2_sum = 0.0
    for r in range(count):
        joint = (loss_a[r] == loss_a[r]) & (loss_b[r] == loss_b[r])
        w = weight[r]
        # A zero weight removes the row (its weight sums are 0 either way): McNemar's discordant counts (these
        # rows) counted such rows as well.  Counted apart and taken off after the loop (both exact integers): with
        # the weight's test in ``cell`` LLVM left the loop scalar (tests/test_vectorised.py).
        cell = joint & ((rank_a[r] < k) ^ a_wrong) & ((rank_b[r] < k) ^ b_wrong)
        rows = add_reassoc(rows, 1.0 if cell else 0.0)
        removed = add_reassoc(removed, 1.0 if cell & (w == 0.0) else 0.0)
        w_sum = add_reassoc(w_sum, w if cell else 0.0)
        w2_sum = add_reassoc(w2_sum, w * w if cell else 0.0)
    fsums[b, at], fsums[b, at + 1], fsums[b, at + 2] = rows - removed, w_sum, w2_sum


@kernel(**KERNEL_OPTIONS)
def fold_exact(fsums, nblocks, acc, dropped):
    """Add every block's sums exactly into ``acc`` (one accumulator per column), in block order.

    Returns the number of non-finite partials (they are not added) and marks
    their columns in ``dropped`` (bool, one per column): the caller reports
    them, never drops them silently.
    """
    nonfinite = 0
    for b in range(nblocks):
        for c in range(fsums.shape[1]):
            value = fsums[b, c]
            if math.isfinite(value):
                exact_add_at(acc, c, value)
            else:
                nonfinite += 1
                dropped[c] = True
    for c in range(acc.shape[0]):
        normalize_at(acc, c)
    return nonfinite
