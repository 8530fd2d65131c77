"""``cross_entropy`` with soft (probability) targets or ``label_smoothing``, as PyTorch computes it.

Called by :func:`fastce.torch_compat.cross_entropy`; shares its validation
of ``input`` and ``weight``.  PyTorch's semantics, case by case:

* class indices ``y`` and smoothing ``eps``: ``loss_i = (1 - eps) w[y_i] d_iy
  + (eps / C) sum_j w_j d_ij`` with ``d_ij = -log softmax(x_i)_j``; rows whose
  target is ``ignore_index`` give 0; ``"mean"`` divides by the sum of
  ``w[y_i]`` over the rows kept (the smoothing term too).
* soft targets ``t`` (N, C) (smoothed to ``t (1 - eps) + eps / C``):
  ``loss_i = sum_j w_j t_ij d_ij``; ``ignore_index`` does not apply;
  ``"mean"`` divides by N, whatever the weights.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from fastce import _accumulate_family, validation
from fastce import kernels_soft as KS
from fastce.checks import sum_to_one_tolerance
from fastce.errors import FastCEWarning, InputError, OmittedRowsWarning
from fastce.state import raise_weights_overflow, warn_loss_overflow
from fastce.task_states import Sums, check_soft_sums

def check_label_smoothing(label_smoothing) -> float:
    if (
        isinstance(label_smoothing, bool)
        or not isinstance(label_smoothing, numbers.Real)
        or not 0.0 <= float(label_smoothing) <= 1.0
    ):
        raise InputError(
            f"label_smoothing must be a number in [0, 1] (0 = no smoothing); got {label_smoothing!r}.",
            argument="label_smoothing",
            value=label_smoothing,
        )
    return float(label_smoothing)


def is_soft_target(target, shape) -> bool:
    """PyTorch's rule: a floating-point target of the input's shape holds probabilities."""
    array = validation.as_array(target, "target")
    return array.ndim == 2 and tuple(array.shape) == tuple(shape) and (
        array.dtype.kind == "f" or array.dtype.name == "bfloat16"
    )


def soft_cross_entropy(scores, target, class_weight, *, labels=None, ignore_index, reduction, label_smoothing,
                       nan_policy, precision: str = "input"):
    """The loss for validated ``scores`` (kernel view) and soft ``target`` or class ``labels``."""
    targets = None if labels is not None else validation.as_array(target, "target")
    row_losses = np.empty(scores.shape[0], dtype=np.float64) if reduction == "none" else None
    sums = soft_sums(scores, targets, labels, class_weight, ignore_index=ignore_index,
                     label_smoothing=label_smoothing, row_losses=row_losses, precision=precision)
    return soft_result(sums, row_losses, soft=targets is not None, reduction=reduction, nan_policy=nan_policy,
                       stacklevel=4, weighted=class_weight is not None)


def soft_sums(scores, targets, labels, class_weight, *, ignore_index, label_smoothing, row_losses,
              precision: str = "input") -> Sums:
    """Sums of the rows of ``scores`` (n, C) against ``targets`` (n, C) or class ``labels`` (n,)."""
    return _accumulate_family.accumulate_soft(
        scores,
        targets=targets,
        labels=labels,
        class_weight=class_weight,
        smoothing=label_smoothing,
        ignore_label=ignore_index,
        sum_tolerance=np.inf if targets is None else sum_to_one_tolerance(validation.float_eps(targets.dtype)),
        row_losses=row_losses,
        precision=precision,
    )


def soft_result(sums: Sums, row_losses, *, soft: bool, reduction, nan_policy, stacklevel: int,
                locate_input=None, locate_target=None, weighted: bool = False):
    """The loss from the merged ``sums`` of every row; ``locate_*(row)`` name a row in messages; ``weighted``:
    class weights were given.

    ``stacklevel``: of the warnings issued here, naming the caller of ``cross_entropy``.
    """
    check_soft_sums(sums, "target", stacklevel=stacklevel + 1, locate=locate_target)
    nonfinite = sums.count(KS.N_NONFINITE)
    if nonfinite and nan_policy == "raise":
        row = sums.count(KS.FIRST_NONFINITE)
        raise InputError(
            f"{locate_input(row) if locate_input else f'input row {row}'} holds NaN or +inf ({nonfinite} such row(s) in all; a row of only -inf counts too). "
            "Fix the model output, or pass nan_policy='omit' to skip those rows or nan_policy='propagate' to get NaN.",
            argument="input",
            row=row,
        )
    if nonfinite and nan_policy == "omit":
        first = sums.count(KS.FIRST_NONFINITE)
        where = f"row {first}" if locate_input is None else locate_input(first)
        warnings.warn(
            f"nan_policy='omit': skipped {nonfinite} row(s) whose input hold NaN or +inf (first: "
            f"{where}); the result covers the other {sums.count(KS.N_ROWS)} row(s).",
            OmittedRowsWarning,
            stacklevel=stacklevel,
        )
    if reduction == "none":
        if nonfinite and nan_policy == "omit":
            return row_losses[~np.isnan(row_losses)]
        return row_losses
    if nonfinite and nan_policy == "propagate":
        return math.nan
    total = soft_loss_total(sums)
    if reduction != "sum" and not soft and sums.weighted_sums_overflow((KS.S_DENOM,)):
        raise_weights_overflow("weight", None)  # the sum of the rows' class weights is beyond float64
    # With soft targets a class weight scales the rows' losses (PyTorch divides by the row count): it may be the
    # cause as well as the scores.
    warn_loss_overflow(total, sums.count(KS.N_INF_LOSS) > 0, "input", what=f"the {reduction} loss",
                       weight_name="weight" if weighted and soft else None)
    if reduction == "sum":
        return total
    denominator = float(sums.count(KS.N_ROWS)) if soft else sums.value(KS.S_DENOM)
    if denominator == 0.0:
        warnings.warn(
            "every target equals ignore_index (or has class weight 0), so the mean is undefined; "
            "returning NaN as PyTorch does.",
            FastCEWarning,
            stacklevel=stacklevel,
        )
        return math.nan
    return total / denominator


def soft_loss_total(sums) -> float:
    if sums.count(KS.N_INF_LOSS) or sums.nonfinite[KS.S_LOSS]:
        return math.inf
    return sums.value(KS.S_LOSS)


