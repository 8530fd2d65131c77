"""Which question ``evaluate`` answers, inferred from the shapes of the scores and targets.

* 1-D scores (N,): **binary**.  ``proba=`` is P(class 1), ``logits=`` its
  logit; labels are 0/1.  Class 1 is predicted when p > 0.5 / z > 0 (a tie
  goes to class 0, the first index, as argmax does).
* (N, C) scores and class indices (N,): **multiclass** (the core path).
* (N, C) scores and an (N, C) target of 0/1 with exactly one 1 per row:
  one-hot single labels, scored as the **multiclass** task they are (the
  argmax of each target row is its class).
* (N, C) scores and an (N, C) 0/1 target with any other number of 1s per
  row: **multilabel**, C independent yes/no questions: mean per-element
  binary cross-entropy, subset accuracy (every label right) and Hamming
  accuracy (per element), side by side.  Targets in [0, 1] that are not all
  0/1 and whose rows do not sum to 1 are per-element soft targets of the
  same task (a target above 0.5 counts as "yes" for the accuracies).
* (N, C) logits and a float (N, C) target whose rows sum to 1 and are not
  all 0/1: **soft** targets: cross-entropy against the target distribution,
  its entropy and the KL divergence (cross-entropy = entropy + KL).

This module only decides; each task's reader (``fastce.readers``) validates
and reads, and every door goes through the readers.
"""

from __future__ import annotations

import math

import numpy as np

from fastce import _target_flags, validation
from fastce.errors import InputError

ONE_HOT, MULTILABEL, SOFT = "one-hot", "multilabel", "soft"

# Entries of a one-hot target matrix read per chunk when taking its argmax (bounded temporaries).
_CHUNK_ELEMENTS = 1 << 20


def target_kind(y: np.ndarray) -> str:
    """ONE_HOT, MULTILABEL or SOFT for an (N, C) target matrix; raises on values outside [0, 1]."""
    if y.dtype.kind not in "biuf" and y.dtype.name != "bfloat16":
        raise InputError(
            f"y_true has dtype {y.dtype}; a 2-D y_true must hold 0/1 labels or probabilities.",
            argument="y_true",
            value=y.dtype,
        )
    return kind_of_flags([chunk_flags(0, y, y.dtype)])


def kind_of_chunks(chunks, dtype) -> str:
    """``target_kind`` of a target read as ``(first_row, rows)`` chunks (files read a chunk at a time)."""
    return kind_of_flags(chunk_flags(start, rows, dtype) for start, rows in chunks)


def chunk_flags(start: int, rows, dtype) -> tuple[bool, bool]:
    """(all 0/1, every row sums to 1) of target rows ``start...``; raises, naming the row, on values outside [0, 1].

    One parallel pass (fastce._target_flags: no full-size temporary); a
    row's sum is float64, in an order that does not depend on the machine.
    """
    tolerance = 1e-8 + math.sqrt(validation.float_eps(dtype))
    rows = np.asarray(rows)
    binary, one, bad = _target_flags.target_flags(rows, tolerance)
    if bad >= 0:
        row, col = divmod(bad, rows.shape[1])
        value = float(np.asarray(rows[row : row + 1, col], dtype=np.float64)[0])
        raise InputError(
            f"y_true row {start + row} holds {value!r} in column {col}; a 2-D y_true must hold 0/1 "
            "labels (one column per class) or probabilities in [0, 1]. For class indices pass a 1-D array.",
            argument="y_true",
            row=start + row,
            value=value,
        )
    return binary, one


def kind_of_flags(flags) -> str:
    """ONE_HOT, MULTILABEL or SOFT from the ``chunk_flags`` of every chunk."""
    all_binary = all_one = True
    for binary, one in flags:
        all_binary, all_one = all_binary and binary, all_one and one
    if all_binary:
        return ONE_HOT if all_one else MULTILABEL
    return SOFT if all_one else MULTILABEL


def one_hot_labels(y: np.ndarray) -> np.ndarray:
    """The class of each one-hot row (argmax), in row chunks, a stride of chunks per thread (numpy's argmax
    releases the GIL; on one thread it was a fifth of an evaluate of one-hot targets): an (N,) int64 vector."""
    from fastce._parallel import each_chunk

    labels = np.empty(y.shape[0], dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // y.shape[1])

    def work(chunk):
        rows = slice(chunk * step, (chunk + 1) * step)
        labels[rows] = np.argmax(np.asarray(y[rows]), axis=1)

    each_chunk(-(-y.shape[0] // step), work)
    return labels


def single_k(top_k, what: str) -> None:
    ks = top_k if not isinstance(top_k, (int, np.integer)) else (top_k,)
    try:
        extra = sorted(set(int(k) for k in ks) - {1})
    except (TypeError, ValueError):
        extra = [top_k]
    if extra:
        raise InputError(
            f"top_k={top_k!r}: top-k accuracy needs one true class per row, which {what} targets do not have; "
            "leave top_k at its default.",
            argument="top_k",
            value=top_k,
        )


TASK_OF_KIND = {ONE_HOT: "multiclass", MULTILABEL: "multilabel", SOFT: "soft"}


def _class_indices(target, scores_shape) -> bool:
    """Whether ``target`` holds class indices: 1-D, or one column beside scores of several (an (N, 1) target
    beside (N, 1) scores is a one-label indicator: a one-output sigmoid model, PyTorch's usual shape)."""
    return target.ndim != 2 or (target.shape[1] < 2 and tuple(scores_shape)[1:] != (1,))


def infer_task(y, scores_shape) -> str:
    """The task ``evaluate`` infers from the shapes (and, for an (N, C) target, its values)."""
    if len(scores_shape) == 1:
        return "binary"
    target = validation.as_array(y, "y_true")
    if _class_indices(target, scores_shape):
        return "multiclass"
    if target.shape[1] == 1 and target.shape == tuple(scores_shape):
        return "multilabel"  # one column: every kind of target is an indicator of its one label
    if target.shape != tuple(scores_shape):
        raise InputError(
            f"y_true has shape {target.shape} but the scores have shape {tuple(scores_shape)}; a 2-D y_true needs one "
            "column per class (0/1 labels or probabilities). For class indices pass a 1-D array.",
            argument="y_true",
            value=target.shape,
        )
    return TASK_OF_KIND[target_kind(target)]


def batch_task(y, scores_shape, task: str) -> None:
    """Refuse a batch whose shapes ask another question than ``task`` (inferred from the first batch)."""
    if len(scores_shape) != (1 if task == "binary" else 2):
        raise InputError(
            f"this batch's scores have shape {tuple(scores_shape)}, but the first batch made this a {task} "
            f"evaluation ({'1-D scores' if task == 'binary' else '(n, C) scores'}); every batch must ask the same "
            "question, or pass task= explicitly.",
            argument="scores",
            value=tuple(scores_shape),
        )
    if task in ("binary",):
        return
    target = validation.as_array(y, "y_true")
    if _class_indices(target, scores_shape):
        if task != "multiclass":
            raise InputError(
                f"y_true has shape {target.shape} (class indices), but the first batch made this a {task} evaluation "
                f"with (n, C) targets; every batch must have targets of the same form, or pass task= explicitly.",
                argument="y_true",
                value=target.shape,
            )
        return
    if target.shape != tuple(scores_shape):
        return  # the reader's validation says what is wrong
    if target.shape[1] == 1:
        if task != "multilabel":  # one column: the one-label indicator infer_task makes multi-label
            raise InputError(
                f"y_true of shape {target.shape} is a one-label indicator (multi-label), but the first batch made "
                f"this a {task} evaluation; every batch must have targets of the same form, or pass task= "
                "explicitly.",
                argument="y_true",
                value=target.shape,
            )
        return
    kind = target_kind(target)
    fits = {
        "multiclass": kind == ONE_HOT,
        "multilabel": kind in (ONE_HOT, MULTILABEL),  # one-hot rows are indicator rows too
        "soft": kind in (ONE_HOT, SOFT),  # and probability distributions
    }[task]
    if not fits:
        found = {ONE_HOT: "one-hot (multiclass)", MULTILABEL: "multi-label", SOFT: "soft"}[kind]
        # The task that takes both batches: a first batch of one-hot rows fits every task (task='multiclass' did
        # not help when a later batch was soft).
        takes = {MULTILABEL: "multilabel", SOFT: "soft"}.get(kind, task)
        raise InputError(
            f"y_true of shape {target.shape} holds {found} targets, but the first batch made this a {task} "
            f"evaluation; if every batch is {found}, pass task={takes!r} to Evaluator(...) (one-hot rows fit it "
            "too).",
            argument="y_true",
            value=target.shape,
        )
