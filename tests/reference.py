"""Plain float64 numpy reference implementation of fastce's public contract.

This is the specification written as code: slow, obvious, row by row where
that is clearer.  Tests compare ``fastce.evaluate`` and ``fastce.cross_entropy``
against these functions.

Conventions (the contract):

* Scores of any float dtype are widened to float64 *exactly* first; every
  computation below is in float64.
* logits: ``loss_i = (m_i - z_i[y_i]) + log(sum_j exp(z_ij - m_i))`` with
  ``m_i = max_j z_ij`` (log-sum-exp with the max subtracted).  ``-inf``
  entries are masked classes; a ``-inf`` true-class logit gives ``+inf``.
  A row holding NaN or ``+inf``, or only ``-inf``, is *non-finite*.
* proba: ``loss_i = -log(clip(p_i[y_i], eps, 1 - eps))`` with ``eps`` the
  machine epsilon of the caller's dtype (scikit-learn's ``log_loss``).  A row
  holding NaN or an infinity is non-finite; finite values outside [0, 1] are
  an error.
* rank of the true class = #(classes with a strictly higher score)
  + #(classes with an equal score and a lower index); top-k correct iff
  rank < k.  So top-1 is argmax with the first index winning ties.
* weights: the weighted mean divides by the sum of the weights of the rows
  counted; a row of weight 0 contributes nothing, even when its loss is inf.
* nan_policy: "raise" -> ValueError; "omit" -> non-finite rows are dropped;
  "propagate" -> NaN metrics.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "to_float64",
    "dtype_eps",
    "logsumexp_row",
    "row_loss_logits",
    "row_loss_proba",
    "row_rank",
    "row_probabilities",
    "row_brier",
    "row_is_nonfinite",
    "evaluate_reference",
    "cross_entropy_reference",
]


def to_float64(x) -> np.ndarray:
    """Exact widening of float16 / bfloat16 / float32 / float64 (any layout) to float64."""
    return np.array(x, dtype=np.float64, copy=True)


def dtype_eps(dtype) -> float:
    """Machine epsilon of a score dtype (bfloat16 through ml_dtypes; ints use float64's)."""
    dtype = np.dtype(dtype)
    if dtype.name == "bfloat16":
        import ml_dtypes

        return float(ml_dtypes.finfo(dtype).eps)
    if dtype.kind == "f":
        return float(np.finfo(dtype).eps)
    return float(np.finfo(np.float64).eps)


def logsumexp_row(z: np.ndarray) -> float:
    """log(sum(exp(z))) with the max subtracted; scipy-free.  Requires a finite max."""
    m = float(np.max(z))
    return m + math.log(math.fsum(math.exp(v - m) for v in z.tolist()))


def row_is_nonfinite(row: np.ndarray, *, from_logits: bool) -> bool:
    """NaN or +inf anywhere; for logits also a row of only -inf; for proba any infinity."""
    if np.isnan(row).any():
        return True
    if from_logits:
        return bool(np.isposinf(row).any() or np.isneginf(row).all())
    return bool(np.isinf(row).any())


def row_loss_logits(row: np.ndarray, label: int) -> float:
    """-log softmax(row)[label] = (m - z_y) + log(sum exp(z - m)); inf when z_y = -inf."""
    m = float(np.max(row))
    target = float(row[label])
    exp_sum = math.fsum(math.exp(v - m) for v in row.tolist())
    return (m - target) + math.log(exp_sum)


def row_loss_proba(row: np.ndarray, label: int, eps: float) -> float:
    """-log(clip(p_y, eps, 1 - eps))."""
    p = min(max(float(row[label]), eps), 1.0 - eps)
    return -math.log(p)


def row_probabilities(row: np.ndarray, *, from_logits: bool) -> np.ndarray:
    """The row as probabilities: the softmax of logits (max subtracted), or as given."""
    if not from_logits:
        return row
    e = np.exp(row - row.max())
    return e / e.sum()


def row_brier(probabilities: np.ndarray, label: int) -> float:
    """sum_j (p_j - [j == label])^2, the full multiclass Brier score of one row."""
    target = np.zeros_like(probabilities)
    target[label] = 1.0
    return math.fsum(((probabilities - target) ** 2).tolist())


def row_rank(row: np.ndarray, label: int) -> int:
    """Classes ahead of the true one: strictly higher, or equal at a lower index."""
    target = row[label]
    higher = int(np.count_nonzero(row > target))
    tied_before = int(np.count_nonzero(row[:label] == target))
    return higher + tied_before


def _as_labels(y, n_rows: int, n_classes: int, ignore_label=None) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise ValueError(f"labels must have shape ({n_rows},), got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    out = [int(v) for v in labels.tolist()]
    for i, v in enumerate(out):
        if v == ignore_label:
            continue
        if not 0 <= v < n_classes:
            raise ValueError(f"label row {i} is {v}, outside 0..{n_classes - 1}")
    return np.array(out, dtype=object)


def evaluate_reference(
    y_true,
    *,
    logits=None,
    proba=None,
    sample_weight=None,
    top_k=(1,),
    nan_policy: str = "raise",
) -> dict:
    """Reference for ``fastce.evaluate``: a dict with the fields of ``Metrics``.

    Keys: n, weight_sum, cross_entropy, accuracy, top_k_accuracy (dict),
    brier (halved for two classes, as scikit-learn's brier_score_loss),
    n_omitted, row_losses (unweighted, NaN for non-finite rows), ranks (-1 for
    non-finite rows).
    """
    if (logits is None) == (proba is None):
        raise ValueError("exactly one of logits / proba")
    from_logits = logits is not None
    raw = np.asarray(logits if from_logits else proba)
    eps = dtype_eps(raw.dtype)
    scores = to_float64(raw)
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError("scores must be a non-empty (N, C) matrix")
    n_rows, n_classes = scores.shape
    labels = _as_labels(y_true, n_rows, n_classes)
    if sample_weight is None:
        weights = np.ones(n_rows)
    else:
        weights = to_float64(sample_weight)
        if weights.shape != (n_rows,) or not np.isfinite(weights).all() or (weights < 0).any():
            raise ValueError("bad sample_weight")
    if isinstance(top_k, (int, np.integer)):
        top_k = (top_k,)
    ks = sorted({int(k) for k in top_k} | {1})

    losses = np.full(n_rows, np.nan)
    ranks = np.full(n_rows, -1, dtype=np.int64)
    briers = np.full(n_rows, np.nan)
    nonfinite = np.zeros(n_rows, dtype=bool)
    for i in range(n_rows):
        row = scores[i]
        label = labels[i]
        if row_is_nonfinite(row, from_logits=from_logits):
            nonfinite[i] = True
            continue
        if not from_logits and ((row < 0).any() or (row > 1).any()):
            raise ValueError(f"proba row {i} is outside [0, 1]")
        losses[i] = row_loss_logits(row, label) if from_logits else row_loss_proba(row, label, eps)
        ranks[i] = row_rank(row, label)
        briers[i] = row_brier(row_probabilities(row, from_logits=from_logits), label)

    n_nonfinite = int(nonfinite.sum())
    if n_nonfinite and nan_policy == "raise":
        raise ValueError(f"row {int(np.flatnonzero(nonfinite)[0])} is non-finite")
    kept = ~nonfinite
    n = int(kept.sum())
    weight_sum = math.fsum(weights[kept].tolist())
    result = {
        "n": n,
        "weight_sum": weight_sum,
        "n_omitted": n_nonfinite if nan_policy == "omit" else 0,
        "row_losses": losses,
        "ranks": ranks,
    }
    if n_nonfinite and nan_policy == "propagate":
        result.update(
            cross_entropy=math.nan, accuracy=math.nan, brier=math.nan, top_k_accuracy={k: math.nan for k in ks}
        )
        return result
    if n == 0 or weight_sum == 0.0:
        raise ValueError("nothing to average")
    counted = [(weights[i], losses[i], ranks[i]) for i in np.flatnonzero(kept) if weights[i] != 0.0]
    if any(math.isinf(loss) for _, loss, _ in counted):
        cross_entropy = math.inf
    else:
        cross_entropy = math.fsum(w * loss for w, loss, _ in counted) / weight_sum
    top = {k: math.fsum(w for w, _, r in counted if r < k) / weight_sum for k in ks}
    brier = math.fsum(weights[i] * briers[i] for i in np.flatnonzero(kept) if weights[i] != 0.0) / weight_sum
    if n_classes == 2:
        brier /= 2.0
    result.update(cross_entropy=cross_entropy, accuracy=top[1], top_k_accuracy=top, brier=brier)
    return result


def cross_entropy_reference(
    input,
    target,
    *,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
):
    """Reference for ``fastce.cross_entropy`` / ``torch.nn.functional.cross_entropy``.

    ``loss_i = w[t_i] * (logsumexp(x_i) - x_i[t_i])`` (0 when ``w[t_i] == 0``,
    even for an infinite loss: fastce's documented difference from PyTorch,
    which gives 0 * inf = NaN); rows with
    ``t_i == ignore_index`` give 0 and are left out of the mean; "mean"
    divides by the sum of ``w[t_i]`` over the rows kept (NaN when that is 0);
    non-finite rows give NaN (PyTorch's propagation).  "none" returns a
    float64 array, "mean"/"sum" a float.
    """
    scores = to_float64(input)
    n_rows, n_classes = scores.shape
    labels = _as_labels(target, n_rows, n_classes, ignore_label=ignore_index)
    class_weight = np.ones(n_classes) if weight is None else to_float64(weight)
    losses = np.zeros(n_rows)
    denominator = []
    for i in range(n_rows):
        label = labels[i]
        if label == ignore_index:
            continue
        row = scores[i]
        w = float(class_weight[label])
        denominator.append(w)
        if row_is_nonfinite(row, from_logits=True):
            losses[i] = math.nan
        elif w == 0.0:
            losses[i] = 0.0  # a zero weight removes the row, even with an infinite loss (torch: 0 * inf = NaN)
        else:
            losses[i] = w * row_loss_logits(row, label)
    if reduction == "none":
        return losses
    if np.isnan(losses).any():
        return math.nan
    if np.isinf(losses).any():
        total = math.inf
    else:
        total = math.fsum(losses.tolist())
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(reduction)
    den = math.fsum(denominator)
    return math.nan if den == 0.0 else total / den
