"""PyTorch-compatible binary cross-entropy on numpy arrays (torch is never imported).

``binary_cross_entropy`` (probabilities) and ``binary_cross_entropy_with_logits``
score every element of a 1-D (N,) or 2-D (N, C) input as its own yes/no
question: binary classification, or multi-label classification where each
column is a label.  One read of the input and targets, float64 arithmetic
from any float dtype (float16 and bfloat16 included, never upcast as a
whole), exact sums.
"""

from __future__ import annotations

import math

import numpy as np

from fastce import _accumulate_family, task_states, validation
from fastce import kernels_binary as KB
from fastce.errors import InputError
from fastce.state import check_nan_policy, warn_loss_overflow
from fastce.task_states import bce_loss_total as loss_total
from fastce.task_states import check_bce_sums, raise_bce_nan_rows as raise_nan_rows
from fastce.task_states import warn_bce_omitted as warn_omitted

_REDUCTIONS = ("mean", "sum", "none")


def binary_cross_entropy(input, target, *, weight=None, reduction: str = "mean", nan_policy: str = "raise"):
    """``torch.nn.functional.binary_cross_entropy`` for probabilities of "yes".

    ``loss = -w * (y * max(log p, -100) + (1 - y) * max(log(1 - p), -100))``
    element-wise (PyTorch clamps the logs at -100); ``"mean"`` averages over
    all elements, ``"sum"`` adds them, ``"none"`` returns them (float64, the
    input's shape).

    Parameters
    ----------
    input : array-like of float, shape (N,) or (N, C)
        Probabilities in [0, 1], any float dtype.  Values outside [0, 1]
        raise an ``InputError`` (they are usually logits: use
        :func:`binary_cross_entropy_with_logits`).
    target : array-like, same shape as ``input``
        Targets in [0, 1] (0/1 labels, bool, or soft targets).
    weight : array-like of float, optional
        Non-negative weights broadcast to the input's shape as PyTorch does:
        a scalar, one per column (C,), one per row (N, 1), or one per element.
    reduction : {"mean", "sum", "none"}, default "mean"
    nan_policy : {"raise", "omit", "propagate"}, default "raise"
        Rows whose input holds NaN: raise naming the first, skip them (with a
        warning), or return NaN as PyTorch does.

    Returns
    -------
    float or numpy.ndarray

    Notes
    -----
    Differences from PyTorch: a Python float (or a float64 array) instead of
    a tensor; NaN input raises by default; targets outside [0, 1] raise; a
    warning when the targets are single-label one-hot rows (binary
    cross-entropy then rewards predicting "no" everywhere: use
    :func:`fastce.cross_entropy`).

    Examples
    --------
    >>> import numpy as np
    >>> from fastce import binary_cross_entropy
    >>> p = np.array([0.9, 0.2, 0.6])
    >>> round(binary_cross_entropy(p, np.array([1.0, 0.0, 0.0])), 6)
    0.414932
    """
    return _bce(input, target, weight, None, reduction, nan_policy, from_logits=False)


def binary_cross_entropy_with_logits(
    input, target, *, weight=None, pos_weight=None, reduction: str = "mean", nan_policy: str = "raise"
):
    """``torch.nn.functional.binary_cross_entropy_with_logits``: sigmoid + binary cross-entropy, stably.

    ``loss = w * (pos_weight * y * softplus(-x) + (1 - y) * softplus(x))``,
    computed as ``max(x, 0) - x * y + log1p(exp(-|x|))`` (and its pos_weight
    form) so that no logit overflows.  +-inf logits are legal and give the
    limit: 0 when the sign agrees with the target, inf otherwise (PyTorch
    returns NaN for some of these).

    Parameters
    ----------
    input : array-like of float, shape (N,) or (N, C)
        Logits (raw scores), any float dtype.
    target : array-like, same shape as ``input``
        Targets in [0, 1].
    weight : array-like of float, optional
        Non-negative weights broadcast to the input's shape (scalar, (C,),
        (N, 1) or (N, C)).
    pos_weight : array-like of float, optional
        Non-negative weight of the positive term, one per column: shape (C,)
        (or (1,) / a scalar, broadcast along the last axis).
    reduction : {"mean", "sum", "none"}, default "mean"
    nan_policy : {"raise", "omit", "propagate"}, default "raise"

    Returns
    -------
    float or numpy.ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from fastce import binary_cross_entropy_with_logits
    >>> z = np.array([[2.0, -1.0], [0.5, 3.0]])
    >>> y = np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> round(binary_cross_entropy_with_logits(z, y), 6)
    0.615714
    >>> round(binary_cross_entropy_with_logits(z, y, pos_weight=np.array([2.0, 1.0])), 6)
    0.647446
    """
    return _bce(input, target, weight, pos_weight, reduction, nan_policy, from_logits=True)


def _bce(input, target, weight, pos_weight, reduction, nan_policy, *, from_logits: bool):
    if reduction not in _REDUCTIONS:
        raise InputError(f"reduction={reduction!r} is not one of {_REDUCTIONS}.", argument="reduction", value=reduction)
    check_nan_policy(nan_policy)
    scores = validation.scores(input, "input", ndim=(1, 2))
    shape = scores.shape
    view = scores.view.reshape(shape[0], -1)
    targets = binary_targets(target, shape)
    row_w, col_w, full_w = broadcast_weight(weight, shape)
    pos_w = None
    if pos_weight is not None:
        if not from_logits:
            raise InputError("pos_weight applies to logits only.", argument="pos_weight")
        pos_w = column_weight(pos_weight, "pos_weight", view.shape[1])
    losses = np.empty(view.shape, dtype=np.float64) if reduction == "none" else None
    sums = _accumulate_family.accumulate_bce(
        view, targets.reshape(view.shape), from_logits=from_logits, row_weight=row_w, col_weight=col_w,
        full_weight=full_w, pos_weight=pos_w, element_losses=losses,
    )
    check_bce_sums(sums, from_logits=from_logits, name="input", target_name="target",
                   targets=targets.reshape(view.shape))
    nonfinite = sums.count(KB.N_NONFINITE)
    if nonfinite and nan_policy == "raise":
        raise_nan_rows(sums, "input")
    if nonfinite and nan_policy == "omit":
        warn_omitted(sums, "input")
    warn_one_hot(sums, view.shape[1], "target", stacklevel=4)
    if reduction == "none":
        if nonfinite and nan_policy == "omit":
            losses = losses[~np.isnan(losses).any(axis=1)]
            return losses.reshape(-1) if len(shape) == 1 else losses
        return losses.reshape(shape)
    if nonfinite and nan_policy == "propagate":
        return math.nan
    total = loss_total(sums)
    warn_loss_overflow(total, sums.count(KB.N_INF_LOSS) > 0, "input", what=f"the {reduction} loss",
                       weight_name="weight" if weight is not None else None)
    if reduction == "sum":
        return total
    return total / (sums.count(KB.N_ROWS) * view.shape[1])


# ------------------------------------------------------------------ shared with evaluate


def binary_targets(target, shape) -> np.ndarray:
    """Targets of the input's shape: bool (viewed as uint8), integer or float (values checked by the kernel)."""
    return validation.target_matrix(target, shape, "target",
                                    what=f"it must have the input's shape {tuple(shape)} (one target per element)")


def _finite_nonnegative(array: np.ndarray, name: str) -> None:
    """Refuse NaN, infinite or negative weights, reading row chunks (no full-size temporary)."""
    flat = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)
    step = max(1, (1 << 20) // max(1, flat.shape[1]))
    for start in range(0, flat.shape[0], step):
        part = np.asarray(flat[start : start + step], dtype=np.float64)
        bad = ~(np.isfinite(part) & (part >= 0))
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            value = float(part[row, col])
            if array.ndim == 2:
                where, row_number = f" row {start + row}, column {col}", start + row
            else:
                where, row_number = (f"[{start + row}]" if array.ndim == 1 else ""), None
            raise InputError(
                f"{name}{where} is {value!r}; weights must be finite and non-negative.",
                argument=name,
                row=row_number,
                value=value,
            )


def broadcast_weight(weight, shape):
    """(row, column, element) weights equivalent to ``weight`` broadcast to ``shape``; no broadcast copy."""
    if weight is None:
        return None, None, None
    w = validation.as_array(weight, "weight")
    if w.dtype.kind not in "biuf" and w.dtype.name != "bfloat16":
        raise InputError(f"weight has dtype {w.dtype}; pass float weights.", argument="weight", value=w.dtype)
    try:
        fits = np.broadcast_shapes(w.shape, tuple(shape)) == tuple(shape)
    except ValueError:
        fits = False
    if not fits:
        raise InputError(
            f"weight of shape {w.shape} does not broadcast to the input's shape {tuple(shape)}; pass a scalar, "
            "one weight per column (C,), one per row (N, 1), or one per element.",
            argument="weight",
            value=w.shape,
        )
    _finite_nonnegative(w, "weight")
    if len(shape) == 1:
        w = w.reshape(w.shape + (1,))  # 1-D input: its elements are the rows
    w = w.reshape((1,) * (2 - w.ndim) + w.shape)
    n_rows, n_cols = shape[0], (1 if len(shape) == 1 else shape[1])
    if w.shape == (1, 1):
        return None, np.full(n_cols, float(w[0, 0])), None
    if w.shape[0] == 1:
        return None, np.asarray(w[0], dtype=np.float64), None
    if w.shape[1] == 1:
        return w[:, 0], None, None
    return None, None, w


def column_weight(values, name: str, n_cols: int) -> np.ndarray:
    """A per-column weight vector (C,) from a scalar, (1,), (C,) or (1, C)."""
    w = validation.as_array(values, name)
    if w.dtype.kind not in "biuf" and w.dtype.name != "bfloat16":
        raise InputError(f"{name} has dtype {w.dtype}; pass float weights.", argument=name, value=w.dtype)
    if w.ndim == 2 and w.shape[0] == 1:
        w = w[0]
    if w.ndim > 1 or (w.ndim == 1 and w.shape[0] not in (1, n_cols)):
        raise InputError(
            f"{name} must hold one weight per class, shape ({n_cols},); got shape {w.shape}.",
            argument=name,
            value=w.shape,
        )
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), (n_cols,)).copy()
    _finite_nonnegative(w, name)
    return w


def warn_one_hot(sums, n_cols: int, target_name: str, *, stacklevel: int) -> None:
    """Warn when binary cross-entropy is asked of single-label one-hot targets (task_states.warn_one_hot)."""
    task_states.warn_one_hot(sums, n_cols, target_name, "binary cross-entropy scores each column",
                             "for one label per row use fastce.cross_entropy / evaluate with class indices "
                             "(target.argmax(axis=1)).", stacklevel=stacklevel + 1)
