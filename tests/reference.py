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
    """-log softmax(row)[label] = (m - z_y) + log(sum exp(z - m)); inf when z_y = -inf.

    The sum is 1 + (the terms below the max, summed exactly) + (other maxima),
    and its log is taken with log1p, so a confident row's tiny loss is exact
    here too (log of a sum rounded to 1 + tiny loses the tiny part's digits).
    """
    m = float(np.max(row))
    target = float(row[label])
    values = row.tolist()
    at_max = sum(1 for v in values if v == m)
    below = math.fsum(math.exp(v - m) for v in values if v != m)
    return (m - target) + math.log1p(below + (at_max - 1))


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


# --------------------------------------------------------------------------- the cross-entropy family
# (binary / multi-label / soft targets; appended for issue 5)


def softplus(t: float) -> float:
    """log(1 + exp(t)), exactly as the math says, for any float t (inf allowed)."""
    if t == math.inf:
        return math.inf
    if t == -math.inf:
        return 0.0
    return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


def element_bce(x: float, y: float, *, from_logits: bool, pos_weight: float = 1.0) -> float:
    """One element's binary cross-entropy.

    logits: ``pos_weight * y * softplus(-x) + (1 - y) * softplus(x)``, a term
    with a zero coefficient counting 0 (so +-inf logits give their limits).
    probabilities: PyTorch's ``-(y max(log p, -100) + (1 - y) max(log(1 - p), -100))``.
    """
    if math.isnan(x):
        return math.nan
    if from_logits:
        a, b = pos_weight * y, 1.0 - y
        return (0.0 if a == 0 else a * softplus(-x)) + (0.0 if b == 0 else b * softplus(x))
    log_p = max(math.log(x), -100.0) if x > 0 else -100.0
    log_q = max(math.log1p(-x), -100.0) if x < 1 else -100.0
    return -(y * log_p + (1.0 - y) * log_q)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def bce_reference(input, target, *, weight=None, pos_weight=None, reduction="mean", from_logits=True):
    """Reference for ``fastce.binary_cross_entropy(_with_logits)`` (PyTorch's semantics).

    ``weight`` is broadcast to the input's shape (numpy rules), ``pos_weight``
    along the last axis; a zero weight removes an element (even an infinite
    one); "mean" divides by the number of elements.
    """
    x = to_float64(input)
    y = to_float64(target)
    w = np.broadcast_to(np.ones(1) if weight is None else to_float64(weight), x.shape)
    pw = np.broadcast_to(np.ones(1) if pos_weight is None else to_float64(pos_weight), x.shape)
    losses = np.empty(x.shape)
    for index in np.ndindex(x.shape):
        loss = element_bce(float(x[index]), float(y[index]), from_logits=from_logits, pos_weight=float(pw[index]))
        losses[index] = 0.0 if w[index] == 0 else w[index] * loss
    if reduction == "none":
        return losses
    flat = losses.reshape(-1).tolist()
    total = math.nan if any(map(math.isnan, flat)) else (math.inf if math.inf in flat else math.fsum(flat))
    return total if reduction == "sum" else total / x.size


def multilabel_reference(y_true, scores, *, from_logits: bool, sample_weight=None) -> dict:
    """Reference for ``evaluate`` on an (N, C) indicator target: mean per-element BCE, accuracies, Brier."""
    x = to_float64(scores)
    y = to_float64(y_true)
    n, c = x.shape
    w = np.ones(n) if sample_weight is None else to_float64(sample_weight)
    loss = []
    hits = []
    subset = []
    brier = []
    for i in range(n):
        row_loss = [element_bce(float(x[i, j]), float(y[i, j]), from_logits=from_logits) for j in range(c)]
        p = [sigmoid(float(v)) if from_logits else float(v) for v in x[i]]
        right = [((x[i, j] > 0) if from_logits else (x[i, j] > 0.5)) == (y[i, j] > 0.5) for j in range(c)]
        loss.append(w[i] * math.fsum(row_loss))
        hits.append(w[i] * sum(right))
        subset.append(w[i] * all(right))
        brier.append(w[i] * math.fsum((p[j] - y[i, j]) ** 2 for j in range(c)))
    total = math.fsum(w.tolist())
    return {
        "cross_entropy": math.fsum(loss) / (total * c),
        "hamming_accuracy": math.fsum(hits) / (total * c),
        "subset_accuracy": math.fsum(subset) / total,
        "brier": math.fsum(brier) / (total * c),
    }


def log_softmax_row(z: np.ndarray) -> np.ndarray:
    """log softmax of a row with a finite max; -inf entries stay -inf."""
    return z - logsumexp_row(z)


def soft_cross_entropy_reference(input, target, *, weight=None, ignore_index=-100, reduction="mean",
                                 label_smoothing=0.0):
    """Reference for ``fastce.cross_entropy`` with soft targets or label smoothing (PyTorch's semantics).

    With d_ij = -log softmax(x_i)_j and a term whose coefficient is 0 counting 0:
    soft targets t: loss_i = sum_j w_j q_ij d_ij, q = t (1 - eps) + eps / C, "mean" divides by N;
    class indices y: loss_i = (1 - eps) w_y d_iy + (eps / C) sum_j w_j d_ij, rows with
    y == ignore_index give 0 and "mean" divides by the sum of w_y over the rows kept.
    """
    x = to_float64(input)
    n, c = x.shape
    w = np.ones(c) if weight is None else to_float64(weight)
    t = np.asarray(target)
    soft = t.ndim == 2
    eps = float(label_smoothing)
    losses = np.zeros(n)
    denominator = []
    for i in range(n):
        if not soft and int(t[i]) == ignore_index:
            continue
        if row_is_nonfinite(x[i], from_logits=True):
            losses[i] = math.nan
            denominator.append(1.0 if soft else float(w[int(t[i])]))
            continue
        d = -log_softmax_row(x[i])
        if soft:
            q = to_float64(t[i]) * (1.0 - eps) + eps / c
            terms = [0.0 if w[j] * q[j] == 0 else w[j] * q[j] * d[j] for j in range(c)]
            denominator.append(1.0)
        else:
            y = int(t[i])
            nll = 0.0 if w[y] == 0 else w[y] * d[y]
            smooth = [0.0 if w[j] == 0 else w[j] * d[j] for j in range(c)]
            terms = [0.0 if eps == 1.0 else (1.0 - eps) * nll]
            if eps > 0:
                terms.append(eps / c * (math.inf if math.inf in smooth else math.fsum(smooth)))
            denominator.append(float(w[y]))
        losses[i] = math.inf if math.inf in terms else math.fsum(terms)
    if reduction == "none":
        return losses
    flat = losses.tolist()
    total = math.nan if any(map(math.isnan, flat)) else (math.inf if math.inf in flat else math.fsum(flat))
    if reduction == "sum":
        return total
    den = math.fsum(denominator)
    return math.nan if den == 0 else total / den


def soft_target_reference(target, logits) -> dict:
    """Reference for ``evaluate`` with soft targets: mean cross-entropy, target entropy, KL, argmax agreement."""
    x = to_float64(logits)
    q = to_float64(target)
    ce, entropy, kl, hits = [], [], [], []
    for i in range(x.shape[0]):
        d = -log_softmax_row(x[i])
        ce.append(math.fsum(q[i, j] * d[j] for j in range(x.shape[1]) if q[i, j] > 0))
        entropy.append(-math.fsum(v * math.log(v) for v in q[i].tolist() if v > 0))
        kl.append(math.fsum(v * (math.log(v) + d[j]) for j, v in enumerate(q[i].tolist()) if v > 0))
        hits.append(int(np.argmax(x[i]) == np.argmax(q[i])))
    n = x.shape[0]
    return {"cross_entropy": math.fsum(ce) / n, "target_entropy": math.fsum(entropy) / n,
            "kl_divergence": math.fsum(kl) / n, "accuracy": sum(hits) / n}


def reference_calibration(conf, right, w, n_bins):
    """(ECE, RMS calibration error, MCE) over ``n_bins`` equal-width confidence bins, weights ``w``."""
    k = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = rms = 0.0
    mce = 0.0
    total = w.sum()
    for b in range(n_bins):
        sel = k == b
        if not w[sel].sum():
            continue
        gap = abs(np.sum(w[sel] * right[sel]) / w[sel].sum() - np.sum(w[sel] * conf[sel]) / w[sel].sum())
        ece += w[sel].sum() / total * gap
        rms += w[sel].sum() / total * gap**2
        mce = max(mce, gap)
    return ece, math.sqrt(rms), mce
