"""PyTorch-compatible ``cross_entropy`` on numpy logits (torch is never imported)."""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from fastce import _accumulate, torch_soft, validation
from fastce.checks import sum_to_one_tolerance, warn_probabilities_as_logits
from fastce.errors import FastCEWarning, InputError
from fastce.state import check_nan_policy, check_weighted_sums

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
):
    """``torch.nn.functional.cross_entropy`` for (N, C) logits and class-index or soft targets.

    Same semantics as PyTorch: ``loss_i = w[t_i] * (logsumexp(x_i) - x_i[t_i])``;
    rows whose target equals ``ignore_index`` are skipped; ``"mean"`` divides
    by the sum of the target-class weights of the rows kept.  Computed in
    float64 from any float input dtype, in one read of ``input``.

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
    """
    if reduction not in _REDUCTIONS:
        raise InputError(f"reduction={reduction!r} is not one of {_REDUCTIONS}.", argument="reduction", value=reduction)
    check_nan_policy(nan_policy)
    if (
        isinstance(ignore_index, bool)
        or not isinstance(ignore_index, numbers.Integral)
        or not np.iinfo(np.int64).min < int(ignore_index) <= np.iinfo(np.int64).max
    ):
        raise InputError(
            f"ignore_index must be an int64 class index (PyTorch's default is -100); got {ignore_index!r}.",
            argument="ignore_index",
            value=ignore_index,
        )
    ignore_index = int(ignore_index)
    label_smoothing = torch_soft.check_label_smoothing(label_smoothing)
    scores = validation.scores(input, "input", labels=target, call="cross_entropy(input, target)")
    n_rows, n_classes = scores.shape
    soft = torch_soft.is_soft_target(target, scores.shape)
    labels = None
    if not soft:
        labels = validation.class_indices(target, "target", n_rows, n_classes, ignore_label=ignore_index)
    class_weight = None
    if weight is not None:
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
    if soft or label_smoothing > 0.0:
        return torch_soft.soft_cross_entropy(
            scores.view, target, class_weight, labels=labels, ignore_index=ignore_index, reduction=reduction,
            label_smoothing=label_smoothing, nan_policy=nan_policy,
        )
    row_losses = np.empty(n_rows, dtype=np.float64) if reduction == "none" else None
    state = _accumulate.accumulate_matrix(
        scores.view,
        labels,
        top_k=(1,),
        from_logits=True,
        class_weight=class_weight,
        ignore_label=ignore_index,
        row_losses=row_losses,
        sum_tolerance=sum_to_one_tolerance(scores.eps),  # finds rows that look like probabilities
    )
    nonfinite = state.count("nonfinite_rows")
    if nonfinite and nan_policy == "raise":
        state.finalize("raise", scores_name="input")
    warn_probabilities_as_logits(state, "input", advice=_LOGITS_ADVICE)
    if reduction == "none":
        if nonfinite and nan_policy == "omit":
            state.finalize("omit", scores_name="input")  # warns how many rows were dropped
            row_losses = row_losses[~np.isnan(row_losses)]
        return row_losses
    if nonfinite and nan_policy == "propagate":
        return math.nan
    if nonfinite:  # omit
        state.finalize("omit", scores_name="input")
    total = state.loss_sum
    if reduction == "sum":
        return total
    check_weighted_sums(state, "weight")  # class weights whose sum overflows: no mean to give
    if state.count("rows") == 0 or state.weight_sum == 0.0:
        warnings.warn(
            "every target equals ignore_index (or has class weight 0), so the mean is undefined; "
            "returning NaN as PyTorch does.",
            FastCEWarning,
            stacklevel=2,
        )
        return math.nan
    return total / state.weight_sum
