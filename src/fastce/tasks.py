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

Validation of every door lives in ``validation``; this module only decides
and dispatches.  Each path reads the scores once.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from fastce import _accumulate, _accumulate_family, errorbars, validation
from fastce import kernels_binary as KB
from fastce import kernels_soft as KS
from fastce.errors import InputError
from fastce.metrics import Metrics

ONE_HOT, MULTILABEL, SOFT = "one-hot", "multilabel", "soft"

# Rows of a target matrix read per chunk when classifying it (bounded temporaries).
_CHUNK_ELEMENTS = 1 << 20


def target_kind(y: np.ndarray) -> str:
    """ONE_HOT, MULTILABEL or SOFT for an (N, C) target matrix; raises on values outside [0, 1].

    Reads ``y`` in row chunks (no full-size temporary).
    """
    if y.dtype.kind not in "biuf" and y.dtype.name != "bfloat16":
        raise InputError(
            f"y_true has dtype {y.dtype}; a 2-D y_true must hold 0/1 labels or probabilities.",
            argument="y_true",
            value=y.dtype,
        )
    tolerance = 1e-8 + math.sqrt(validation.float_eps(y.dtype))
    all_binary = True
    all_one = True
    step = max(1, _CHUNK_ELEMENTS // y.shape[1])
    for start in range(0, y.shape[0], step):
        part = np.asarray(y[start : start + step], dtype=np.float64)
        bad = ~((part >= 0.0) & (part <= 1.0))
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            raise InputError(
                f"y_true row {start + row} holds {float(part[row, col])!r} in column {col}; a 2-D y_true must hold 0/1 "
                "labels (one column per class) or probabilities in [0, 1]. For class indices pass a 1-D array.",
                argument="y_true",
                row=start + row,
                value=float(part[row, col]),
            )
        all_binary = all_binary and bool(((part == 0.0) | (part == 1.0)).all())
        all_one = all_one and bool((np.abs(part.sum(axis=1) - 1.0) <= tolerance).all())
    if all_binary:
        return ONE_HOT if all_one else MULTILABEL
    return SOFT if all_one else MULTILABEL


def one_hot_labels(y: np.ndarray) -> np.ndarray:
    """The class of each one-hot row (argmax), in row chunks: an (N,) int64 vector."""
    labels = np.empty(y.shape[0], dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // y.shape[1])
    for start in range(0, y.shape[0], step):
        labels[start : start + step] = np.argmax(np.asarray(y[start : start + step]), axis=1)
    return labels


def evaluate_binary(scores, y_true, *, from_logits: bool, name: str, sample_weight, top_k, nan_policy) -> Metrics:
    """1-D scores: P(class 1) or its logit, with 0/1 labels."""
    from fastce.api import check_probability_range

    n_rows = scores.shape[0]
    labels = validation.class_indices(
        y_true, "y_true", n_rows, 2, note="1-D scores are a binary task: labels are 0 or 1"
    )
    weights = validation.sample_weight(sample_weight, n_rows)
    ks = validation.top_k_values(top_k, 2)
    if from_logits:
        state = _accumulate_family.accumulate_binary_logits(scores.view, labels, top_k=ks, sample_weight=weights)
    else:
        state = _accumulate.accumulate_binary_proba(
            scores.view, labels, top_k=ks, sample_weight=weights, proba_eps=scores.eps
        )
        check_probability_range(state, name)
    metrics = state.finalize(nan_policy, scores_name=name)
    return dataclasses.replace(metrics, task="binary")


def evaluate_multilabel(scores, y, *, from_logits: bool, name: str, sample_weight, top_k, nan_policy) -> Metrics:
    """(N, C) scores and an (N, C) indicator target: C independent yes/no questions."""
    from fastce import torch_binary as TB

    n_rows, n_cols = scores.shape
    _single_k(top_k, "multi-label")
    weights = validation.sample_weight(sample_weight, n_rows)
    sums = _accumulate_family.accumulate_bce(scores.view, y, from_logits=from_logits, row_weight=weights)
    TB.check_bce_sums(sums, from_logits=from_logits, name=name, target_name="y_true")
    omitted = _apply_nan_policy(sums.count(KB.N_NONFINITE), nan_policy, lambda: TB.raise_nan_rows(sums, name),
                                lambda: TB.warn_omitted(sums, name, stacklevel=7))
    n = sums.count(KB.N_ROWS)
    weight = sums.value(KB.S_WEIGHT)
    if sums.weighted_sums_overflow((KB.S_BRIER, KB.S_HITS, KB.S_SUBSET, KB.S_ARGMAX, KB.S_WEIGHT)):
        from fastce.state import raise_weights_overflow

        raise_weights_overflow("sample_weight", None)  # never inf / inf for a weighted mean
    if omitted is None:  # propagate
        ce = hamming = subset = brier = math.nan
    else:
        _check_counted(n, weight, n_rows)
        ce = TB.loss_total(sums) / (weight * n_cols)
        hamming = sums.value(KB.S_HITS) / (weight * n_cols)
        subset = sums.value(KB.S_SUBSET) / weight
        brier = sums.value(KB.S_BRIER) / (weight * n_cols)
    stderr, effective = _multilabel_errors(sums, n, n_cols, ce)
    return Metrics(
        n=n, weight_sum=weight, cross_entropy=ce, accuracy=subset, top_k_accuracy={1: subset},
        n_omitted=omitted or 0, num_classes=n_cols, from_logits=from_logits, brier=brier, task="multilabel",
        hamming_accuracy=hamming, subset_accuracy=subset, stderr=stderr, n_effective=effective,
    )


def _multilabel_errors(sums, n: int, n_cols: int, ce: float) -> tuple[dict, float]:
    """Standard errors of the multi-label means, rows as the units (a row's labels are not independent)."""
    if math.isnan(ce):
        nan = math.nan
        return {k: nan for k in ("cross_entropy", "brier", "hamming_accuracy")} | {"top_k_accuracy": {1: nan}}, nan
    acc = sums.sums

    def error(total, q1, q2, per_label=True):
        if sums.nonfinite[[KB.S_WEIGHT, total, KB.S_W2, q1, q2]].any():
            return _unknown_error()
        return errorbars.error_of_sums(n, acc[KB.S_WEIGHT], acc[total], acc[KB.S_W2], acc[q1], acc[q2],
                                       scale_down=n_cols if per_label else 1.0)

    subset = error(KB.S_SUBSET, KB.S_SUBSET_Q, KB.S_SUBSET_Q, per_label=False)
    stderr = {
        "cross_entropy": math.inf if ce == math.inf else error(KB.S_LOSS, KB.S_LOSS_Q1, KB.S_LOSS_Q2),
        "brier": error(KB.S_BRIER, KB.S_BRIER_Q1, KB.S_BRIER_Q2),
        "hamming_accuracy": error(KB.S_HITS, KB.S_HITS_Q1, KB.S_HITS_Q2),
        "subset_accuracy": subset,
        "top_k_accuracy": {1: subset},
    }
    w, w2 = sums.value(KB.S_WEIGHT), sums.value(KB.S_W2)
    return stderr, (w * w / w2 if w2 > 0 else math.nan)


def evaluate_soft(scores, y, *, from_logits: bool, name: str, sample_weight, top_k, nan_policy) -> Metrics:
    """(N, C) logits and target rows that are probability distributions."""
    from fastce import torch_soft as TS

    if not from_logits:
        raise InputError(
            "soft (probability) targets are scored against logits; pass the model's raw scores as logits=.",
            argument=name,
        )
    if sample_weight is not None:
        raise InputError(
            "sample_weight is not supported with soft targets yet; fold the weights into the target rows' "
            "importance or evaluate the rows separately.",
            argument="sample_weight",
        )
    _single_k(top_k, "soft-target")
    n_rows, n_cols = scores.shape
    tolerance = 1e-8 + math.sqrt(validation.float_eps(y.dtype))
    sums = _accumulate_family.accumulate_soft(scores.view, targets=y, sum_tolerance=tolerance)
    TS.check_soft_sums(sums, "y_true", stacklevel=5)
    nonfinite = sums.count(KS.N_NONFINITE)

    def raise_rows():
        from fastce.state import raise_nonfinite

        raise_nonfinite(name, sums.count(KS.FIRST_NONFINITE), nonfinite, from_logits=True)

    def warn_rows():
        from fastce.errors import OmittedRowsWarning
        import warnings

        warnings.warn(
            f"nan_policy='omit': skipped {nonfinite} row(s) whose {name} hold NaN or +inf (first: row "
            f"{sums.count(KS.FIRST_NONFINITE)}); metrics cover the other {sums.count(KS.N_ROWS)} row(s).",
            OmittedRowsWarning,
            stacklevel=6,
        )

    omitted = _apply_nan_policy(nonfinite, nan_policy, raise_rows, warn_rows)
    n = sums.count(KS.N_ROWS)
    if omitted is None:
        ce = entropy = kl = accuracy = math.nan
    else:
        _check_counted(n, float(n), n_rows)
        infinite = sums.count(KS.N_INF_LOSS) > 0 or sums.nonfinite[KS.S_LOSS] > 0
        ce = math.inf if infinite else sums.value(KS.S_LOSS) / n
        entropy = sums.value(KS.S_ENTROPY) / n
        kl = math.inf if infinite else sums.value(KS.S_KL) / n
        accuracy = sums.value(KS.S_HITS) / n
    return Metrics(
        n=n, weight_sum=float(n), cross_entropy=ce, accuracy=accuracy, top_k_accuracy={1: accuracy},
        n_omitted=omitted or 0, num_classes=n_cols, from_logits=True, task="soft",
        target_entropy=entropy, kl_divergence=kl, stderr=_soft_errors(sums, n, ce, kl), n_effective=float(n),
    )


def _unknown_error() -> float:
    """NaN, with a warning: a block's sum of squares went beyond float64, so that error is unknown."""
    import warnings

    from fastce.errors import FastCEWarning

    warnings.warn(
        "a standard error is unknown (NaN): a block's sum of squared per-row values or squared weights exceeds "
        "the float64 range (values above ~1e154); the means are unaffected. Weights that large can be rescaled: "
        "only ratios of sample_weight matter.",
        FastCEWarning,
        stacklevel=5,
    )
    return math.nan


def _soft_errors(sums, n: int, ce: float, kl: float) -> dict:
    """Standard errors of the soft-target means (unweighted rows: s / sqrt(n), ddof = 1)."""
    if math.isnan(ce):
        return {k: math.nan for k in ("cross_entropy", "target_entropy", "kl_divergence")} | {"top_k_accuracy": {1: math.nan}}
    from fastce import _exactsum

    count = _exactsum.new_accumulators(1)[0]
    _exactsum.exact_add(count, float(n))  # n is below 2**53: exact
    acc = sums.sums

    def error(total, squares):
        if sums.nonfinite[[total, squares]].any():
            return _unknown_error()
        return errorbars.error_of_sums(n, count, acc[total], count, acc[total], acc[squares])

    return {
        "cross_entropy": math.inf if ce == math.inf else error(KS.S_LOSS, KS.S_LOSS2),
        "target_entropy": error(KS.S_ENTROPY, KS.S_ENTROPY2),
        "kl_divergence": math.inf if kl == math.inf else error(KS.S_KL, KS.S_KL2),
        "top_k_accuracy": {1: error(KS.S_HITS, KS.S_HITS)},  # a hit is 0 or 1: its square is itself
    }


def _single_k(top_k, what: str) -> None:
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


def _apply_nan_policy(nonfinite: int, nan_policy: str, raise_rows, warn_rows):
    """Rows omitted (an int) under raise/omit, or None under propagate with NaN rows."""
    if not nonfinite:
        return 0
    if nan_policy == "raise":
        raise_rows()
    if nan_policy == "omit":
        warn_rows()
        return nonfinite
    return None


def _check_counted(n: int, weight: float, rows_seen: int) -> None:
    if n == 0:
        raise InputError(f"no rows left to evaluate: all {rows_seen} row(s) were skipped (non-finite scores).")
    if weight == 0.0:
        raise InputError(
            "sample_weight sums to zero over the rows counted, so a weighted mean is undefined; "
            "pass at least one positive weight.",
            argument="sample_weight",
        )


def infer_task(y_true, scores) -> tuple[str, np.ndarray | None]:
    """The task the shapes ask for, and what its path reads: one place for ``evaluate`` and ``diagnose``.

    Returns ``("binary", None)`` for 1-D scores; ``("multiclass", None)`` for
    class indices, ``("multiclass", labels)`` for a one-hot target (its
    argmax); ``("multilabel", y)`` and ``("soft", y)`` with the (N, C) target.
    """
    if len(scores.shape) == 1:
        return "binary", None
    y = validation.as_array(y_true, "y_true")
    if y.ndim != 2 or y.shape[1] < 2:
        return "multiclass", None
    if y.shape != tuple(scores.shape):
        raise InputError(
            f"y_true has shape {y.shape} but the scores have shape {tuple(scores.shape)}; a 2-D y_true needs one "
            "column per class (0/1 labels or probabilities). For class indices pass a 1-D array.",
            argument="y_true",
            value=y.shape,
        )
    kind = target_kind(y)
    if kind == ONE_HOT:
        return "multiclass", one_hot_labels(y)
    return ("multilabel" if kind == MULTILABEL else "soft"), y


def evaluate_by_task(y_true, *, scores, from_logits: bool, name: str, sample_weight, top_k, nan_policy):
    """Metrics for the binary, multi-label and soft-target tasks, or the labels of a one-hot target.

    Returns ``(metrics, None)`` when it evaluated the inputs, ``(None, labels)``
    for one-hot targets (the caller runs the multiclass path on ``labels``),
    and ``(None, None)`` for class indices.
    """
    options = dict(from_logits=from_logits, name=name, sample_weight=sample_weight, top_k=top_k,
                   nan_policy=nan_policy)
    task, y = infer_task(y_true, scores)
    if task == "binary":
        return evaluate_binary(scores, y_true, **options), None
    if task == "multiclass":
        return None, y
    if task == "multilabel":
        return evaluate_multilabel(scores, y, **options), None
    return evaluate_soft(scores, y, **options), None
