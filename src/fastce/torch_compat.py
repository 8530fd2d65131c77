"""PyTorch-compatible ``cross_entropy`` on numpy logits (torch is never imported)."""

from __future__ import annotations

import math
import warnings

import numpy as np

from fastce import _accumulate, _class_axis, readers, torch_soft, validation
from fastce import kernels as K
from fastce.checks import sum_to_one_tolerance, warn_probabilities_as_logits
from fastce.errors import FastCEWarning, InputError
from fastce.state import check_nan_policy, check_weighted_sums, warn_loss_overflow

_REDUCTIONS = ("mean", "sum", "none")
_LOGITS_ADVICE = (
    "cross_entropy takes logits: pass the raw scores, or np.log of the probabilities (log-probabilities are valid "
    "logits); for probabilities use fastce.log_loss or fastce.evaluate(y, proba=...)"
)


def cross_entropy(
    input,
    target,
    *,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    nan_policy: str = "raise",
    label_smoothing: float = 0.0,
    precision: str = "input",
):
    """``torch.nn.functional.cross_entropy`` for (N, C) or (N, C, d1, ..., dk) logits and class-index or soft targets.

    Same semantics as PyTorch: ``loss_i = w[t_i] * (logsumexp(x_i) - x_i[t_i])``;
    rows whose target equals ``ignore_index`` are skipped; ``"mean"`` divides
    by the sum of the target-class weights of the rows kept.  In one read of
    ``input``; the math follows the input's precision (see ``precision``).

    Differences from PyTorch: returns a Python float for ``"mean"``/``"sum"``
    and a float64 numpy array for ``"none"``; NaN/+inf logits raise by default
    (``nan_policy="propagate"`` gives PyTorch's NaN); out-of-range targets
    raise an ``InputError`` naming the row; a row whose target-class weight is 0
    contributes 0 even when its target logit is -inf (PyTorch gives 0 * inf = NaN).

    Soft targets and label smoothing (``fastce.torch_soft``), as PyTorch:
    a float ``target`` of the input's shape holds probabilities, ``loss_i =
    -sum_j w_j t_ij log softmax(x_i)_j`` and ``"mean"`` divides by N
    (``ignore_index`` does not apply); ``label_smoothing=eps`` mixes the
    target with the uniform distribution, ``t (1 - eps) + eps / C``, and
    with class indices ``"mean"`` divides by the sum of the target-class
    weights of the rows kept.  Classes with -inf logits and no target mass
    contribute 0 (PyTorch: NaN).  Negative or NaN soft targets raise; rows
    not summing to 1 give a warning.

    K-dimensional input, as PyTorch: ``input`` of shape (N, C, d1, ..., dk)
    (k >= 1, the class axis second) with class indices of shape
    (N, d1, ..., dk) or probabilities of the input's shape.  Each position
    (n, d1, ..., dk) is a row: ``"mean"`` divides by the weight of all
    positions kept (by N * d1 * ... * dk for soft targets), ``"none"``
    returns shape (N, d1, ..., dk) (under ``nan_policy="omit"`` with
    non-finite rows: a 1-D array of the kept positions' losses, in C order).
    Errors name a position as ``input[n, :, d1, ...]`` / ``target[n, d1, ...]``;
    the exception's ``row`` is its index in C order of (N, d1, ..., dk).  The
    input is read a bounded piece at a time, never copied whole (except to
    convert integer or byte-swapped dtypes).  For scores with the class axis
    last, use ``np.moveaxis(input, -1, 1)`` (a view) or ``fastce.evaluate``.
    PyTorch's unbatched (C,) input is refused: pass ``x[None]`` and ``[y]``.

    ``precision``: ``"input"`` (default) computes float16, bfloat16 and
    float32 logits with float32 math, every row's loss within 4 float32 ulp
    (PyTorch's float32 loses the digits of confident rows); ``"float64"``
    computes any input with float64 math.

    Examples
    --------
    >>> import numpy as np
    >>> from fastce import cross_entropy
    >>> x = np.array([[2.0, 0.0], [0.0, 2.0]])
    >>> round(cross_entropy(x, np.array([0, 0])), 6)
    1.126928
    >>> round(cross_entropy(x, np.array([0, 1]), label_smoothing=0.1), 6)
    0.226928
    >>> round(cross_entropy(x, np.array([[0.9, 0.1], [0.5, 0.5]])), 6)
    0.726928

    A sequence model's (N, C, T) logits with (N, T) targets:

    >>> z = np.array([[[2.0, 0.0, 1.0], [0.0, 2.0, 1.0]]])  # N = 1, C = 2, T = 3
    >>> round(cross_entropy(z, np.array([[0, 1, 1]])), 6)
    0.315668
    >>> cross_entropy(z, np.array([[0, 1, -100]]), reduction="none").round(6)
    array([[0.126928, 0.126928, 0.      ]])
    """
    if reduction not in _REDUCTIONS:
        raise InputError(f"reduction={reduction!r} is not one of {_REDUCTIONS}.", argument="reduction", value=reduction)
    check_nan_policy(nan_policy)
    ignore_index = validation.check_ignore_index(ignore_index, allow_none=False)
    label_smoothing = torch_soft.check_label_smoothing(label_smoothing)
    precision = readers.check_precision(precision)
    array = validation.as_array(input, "input")
    if array.ndim >= 3:
        return _cross_entropy_kdim(array, target, weight, ignore_index, reduction, nan_policy, label_smoothing,
                                   precision)
    scores = validation.scores(array, "input", labels=target, call="cross_entropy(input, target)")
    n_rows, n_classes = scores.shape
    soft = torch_soft.is_soft_target(target, scores.shape)
    labels = None
    if not soft:
        labels = validation.class_indices(target, "target", n_rows, n_classes, ignore_label=ignore_index)
    class_weight = _class_weight(weight, n_classes)
    if soft or label_smoothing > 0.0:
        return torch_soft.soft_cross_entropy(
            scores.view, target, class_weight, labels=labels, ignore_index=ignore_index, reduction=reduction,
            label_smoothing=label_smoothing, nan_policy=nan_policy, precision=precision,
        )
    row_losses = np.empty(n_rows, dtype=np.float64) if reduction == "none" else None
    state = _accumulate.accumulate_matrix(
        scores.view,
        labels,
        row_losses=row_losses,
        **_label_options(scores, class_weight, ignore_index, precision),
    )
    return _labels_result(state, row_losses, reduction, nan_policy, weighted=class_weight is not None)


def _label_options(scores, class_weight, ignore_index, precision) -> dict:
    """accumulate_matrix's options for class-index targets, the same for (N, C) and K-dimensional input."""
    return {
        "top_k": (1,),
        "from_logits": True,
        "class_weight": class_weight,
        "ignore_label": ignore_index,
        "sum_tolerance": sum_to_one_tolerance(scores.eps),  # finds rows that look like probabilities
        "precision": precision,
    }


def _class_weight(weight, n_classes: int):
    if weight is None:
        return None
    class_weight = validation.as_array(weight, "weight").astype(np.float64)
    if class_weight.shape != (n_classes,):
        raise InputError(
            f"weight must have shape ({n_classes},), one weight per class; got {class_weight.shape}.",
            argument="weight",
            value=class_weight.shape,
        )
    if not np.isfinite(class_weight).all():
        cls = int(np.flatnonzero(~np.isfinite(class_weight))[0])
        raise InputError(
            f"weight[{cls}] is {class_weight[cls].item()!r}; class weights must be finite.",
            argument="weight",
            value=class_weight[cls].item(),
        )
    return class_weight


def _labels_result(state, row_losses, reduction, nan_policy, *, stacklevel=3, locate=None, weighted=False):
    """The loss from the state of every row, class-index targets; ``locate(row)`` names a row.

    ``stacklevel``: of the warnings issued here, naming the caller of ``cross_entropy``.
    """
    nonfinite = state.count("nonfinite_rows")
    if nonfinite and nan_policy == "raise":
        state.finalize("raise", scores_name="input", locate=locate)
    warn_probabilities_as_logits(state, "input", advice=_LOGITS_ADVICE, stacklevel=stacklevel + 1)
    if reduction == "none":
        if nonfinite and nan_policy == "omit":
            state.finalize("omit", scores_name="input", locate=locate, stacklevel=stacklevel + 1)  # warns: rows dropped
            row_losses = row_losses[~np.isnan(row_losses)]
        return row_losses
    if nonfinite and nan_policy == "propagate":
        return math.nan
    if nonfinite:  # omit
        state.finalize("omit", scores_name="input", locate=locate, stacklevel=stacklevel + 1)
    total = state.loss_sum
    if reduction != "sum":
        check_weighted_sums(state, "weight")  # class weights whose sum overflows: no mean to give
    warn_loss_overflow(total, state.counts[K.FIRST_INF_LOSS] >= 0, "input", what=f"the {reduction} loss",
                       weight_name="weight" if weighted else None)  # the user's line (see _warn)
    if reduction == "sum":
        return total
    if state.count("rows") == 0 or state.weight_sum == 0.0:
        warnings.warn(
            "every target equals ignore_index (or has class weight 0), so the mean is undefined; "
            "returning NaN as PyTorch does.",
            FastCEWarning,
            stacklevel=stacklevel,
        )
        return math.nan
    return total / state.weight_sum


def _cross_entropy_kdim(array, target, weight, ignore_index, reduction, nan_policy, label_smoothing, precision):
    """(N, C, d1, ..., dk) input: each position (n, d1, ..., dk) is a row, read a bounded piece at a time."""
    scores = validation.scores(array, "input", ndim=(array.ndim,))
    shape = scores.shape
    n_classes = shape[1]
    positions = shape[:1] + shape[2:]
    targets = validation.as_array(target, "target")
    soft = targets.shape == shape and validation.is_float_dtype(targets.dtype)
    labels = None
    if not soft:
        _check_kdim_target_shape(targets, shape)
        labels = validation.class_index_array(
            targets, "target", positions, n_classes, ignore_label=ignore_index,
            note=f"the input has {n_classes} classes on axis 1",
        )
    class_weight = _class_weight(weight, n_classes)
    row_losses = np.empty(positions, dtype=np.float64) if reduction == "none" else None

    def locate(name):
        def row_name(row: int) -> str:
            index = [str(int(i)) for i in np.unravel_index(row, positions)]
            return f"{name}[{', '.join(index[:1] + [':'] + index[1:])}]"

        return row_name

    if soft or label_smoothing > 0.0:
        sums = _class_axis.accumulate_soft(
            scores.view,
            targets=targets if soft else None,
            labels=labels,
            class_weight=class_weight,
            smoothing=label_smoothing,
            ignore_label=ignore_index,
            sum_tolerance=sum_to_one_tolerance(validation.float_eps(targets.dtype)) if soft else np.inf,
            row_losses=row_losses,
            precision=precision,
        )
        return torch_soft.soft_result(
            sums, row_losses, soft=soft, reduction=reduction, nan_policy=nan_policy, stacklevel=4,
            locate_input=locate("input"), locate_target=locate("target"), weighted=class_weight is not None,
        )
    state = _class_axis.accumulate_matrix(
        scores.view, labels, row_losses=row_losses, **_label_options(scores, class_weight, ignore_index, precision)
    )
    return _labels_result(state, row_losses, reduction, nan_policy, stacklevel=4, locate=locate("input"),
                          weighted=class_weight is not None)


def _check_kdim_target_shape(targets: np.ndarray, shape: tuple) -> None:
    """Refuse a target that is neither (N, d1, ..., dk) class indices nor float probabilities of the input's shape."""
    positions = shape[:1] + shape[2:]
    if targets.shape == positions:
        return
    layout = (
        "cross_entropy takes the class axis at position 1, as PyTorch: input (N, C, d1, ..., dk) with class-index "
        "target (N, d1, ..., dk), or class probabilities of the input's shape"
    )
    if targets.shape == shape:
        problem = (
            f"target has the input's shape {shape} but dtype {targets.dtype}: probabilities must be floating "
            f"point, class indices must have shape {positions}"
        )
    elif targets.shape == shape[:-1]:
        problem = (
            f"target has shape {targets.shape}, the input's shape {shape} without its last axis: the class axis "
            f"of the input looks last. Pass np.moveaxis(input, -1, 1) (a view, no copy) with this target, or use "
            f"fastce.evaluate(target.reshape(-1), logits=input.reshape(-1, C)) for scores with the class axis last"
        )
    else:
        problem = (
            f"target has shape {targets.shape}, which does not fit the input's shape {shape}: pass class indices "
            f"of shape {positions} or probabilities of shape {shape}; for scores with the class axis last use "
            "fastce.evaluate"
        )
    raise InputError(f"{problem}. ({layout}.)", argument="target", value=targets.shape)
