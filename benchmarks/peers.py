"""Peer implementations that fastce is compared with.

Each peer computes what a user of that library would write to get the
cross-entropy and the (top-k) accuracy of a validation set, on the same numpy
arrays fastce reads.  Libraries are imported lazily: ``available(name)`` says
whether a peer can run (and why not), so the benchmarks skip peers that are
not installed instead of failing.

Every function returns a ``PeerResult(cross_entropy, top_k)`` with ``top_k``
mapping k -> accuracy (k=1 is plain accuracy), or ``cross_entropy`` only
(``top_k`` empty) for the loss-only functions.

Peers
-----
torch   ``torch.nn.functional.cross_entropy`` + ``argmax`` (``topk`` for k>1) on
        ``torch.from_numpy`` views (no copy; bfloat16 through an int16 view),
        with ``torch.set_num_threads`` equal to numba's thread count.
        float32/float64 run in their own dtype.  float16 and bfloat16 are
        upcast with ``.float()`` first (timed): in their own dtype torch's CPU
        cross_entropy accumulates the mean in half precision, which overflows
        to inf for float16 beyond ~10**4 rows and loses all precision for
        bfloat16.  Probabilities: ``-log(clamp(p.gather(y)))`` + argmax.
sklearn ``sklearn.metrics.log_loss`` + ``accuracy_score(y, p.argmax(1))``
        (``top_k_accuracy_score`` for k>1) on probabilities.  scikit-learn has
        no logits API: for logits workloads it is given the softmax of the
        logits (same shape and dtype), as a user would.
numpy   ``scipy.special.logsumexp`` cross-entropy + ``argmax`` accuracy (top-k by
        counting the scores above the true class's).  float16 and bfloat16
        logits are first upcast to float32 (numpy half math is emulated and
        slow, and ufuncs do not support bfloat16); the upcast is timed.

The top-k rank rule everywhere except torch.topk is fastce's: classes scoring
strictly higher than the true class, plus equal scores at a lower index
(argmax semantics, first index wins).
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import numpy as np

PEERS = ("torch", "sklearn", "numpy")
_MODULES = {"torch": "torch", "sklearn": "sklearn.metrics", "numpy": "scipy.special"}


class PeerResult(NamedTuple):
    cross_entropy: float
    top_k: dict


def available(name: str) -> tuple[bool, str]:
    """(True, "") when peer ``name`` can run, else (False, reason)."""
    try:
        importlib.import_module(_MODULES[name])
    except ImportError as exc:
        return False, f"{_MODULES[name]} not installed ({exc})"
    return True, ""


# --------------------------------------------------------------------------- torch


def _torch():
    import numba
    import torch

    threads = numba.get_num_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch


def to_torch(array: np.ndarray):
    """Zero-copy CPU tensor of a numpy array (bfloat16 via an int16 view)."""
    torch = _torch()
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _torch_upcast(tensor):
    """float16 / bfloat16 -> float32 (see the module docstring); others unchanged."""
    return tensor.float() if tensor.element_size() < 4 else tensor


def _torch_top_k(torch, scores, target, top_k):
    out = {}
    for k in top_k:
        if k == 1:
            hit = scores.argmax(dim=1) == target
        else:
            hit = (torch.topk(scores, k, dim=1).indices == target[:, None]).any(dim=1)
        out[k] = hit.double().mean().item()
    return out


def torch_logits(labels, logits, top_k=(1,)) -> PeerResult:
    """torch.nn.functional.cross_entropy + argmax (topk) accuracy."""
    torch = _torch()
    import torch.nn.functional as F

    scores, target = _torch_upcast(to_torch(logits)), torch.from_numpy(labels).long()
    ce = F.cross_entropy(scores, target).item()
    return PeerResult(ce, _torch_top_k(torch, scores, target, top_k))


def torch_cross_entropy(labels, logits) -> PeerResult:
    """torch.nn.functional.cross_entropy only (the drop-in of fastce.cross_entropy)."""
    torch = _torch()
    import torch.nn.functional as F

    return PeerResult(F.cross_entropy(_torch_upcast(to_torch(logits)), torch.from_numpy(labels).long()).item(), {})


def torch_proba(labels, proba, top_k=(1,)) -> PeerResult:
    """Clipped log loss of the true class's probability + argmax (topk) accuracy."""
    torch = _torch()
    scores, target = to_torch(proba), torch.from_numpy(labels).long()
    eps = torch.finfo(scores.dtype).eps
    picked = scores.gather(1, target[:, None]).double().clamp(eps, 1 - eps)
    ce = (-picked.log()).mean().item()
    return PeerResult(ce, _torch_top_k(torch, scores, target, top_k))


def torch_binary_logits(labels, logits) -> PeerResult:
    """F.binary_cross_entropy_with_logits + (z > 0) accuracy on 1-D logits of class 1 (binary task)."""
    torch = _torch()
    import torch.nn.functional as F

    scores, target = _torch_upcast(to_torch(logits)), torch.from_numpy(labels)
    ce = F.binary_cross_entropy_with_logits(scores, target.to(scores.dtype)).item()
    return PeerResult(ce, {1: ((scores > 0) == (target == 1)).double().mean().item()})


# --------------------------------------------------------------------------- scikit-learn


def sklearn_proba(labels, proba, top_k=(1,)) -> PeerResult:
    """sklearn.metrics.log_loss + accuracy_score (top_k_accuracy_score for k > 1)."""
    from sklearn.metrics import accuracy_score, log_loss, top_k_accuracy_score

    classes = np.arange(proba.shape[1])
    ce = float(log_loss(labels, proba, labels=classes))
    out = {}
    for k in top_k:
        if k == 1:
            out[k] = float(accuracy_score(labels, proba.argmax(axis=1)))
        else:
            out[k] = float(top_k_accuracy_score(labels, proba, k=k, labels=classes))
    return PeerResult(ce, out)


def sklearn_log_loss(labels, proba) -> PeerResult:
    """sklearn.metrics.log_loss only (the drop-in of fastce.log_loss)."""
    from sklearn.metrics import log_loss

    return PeerResult(float(log_loss(labels, proba, labels=np.arange(proba.shape[1]))), {})


# --------------------------------------------------------------------------- numpy / scipy


def _upcast(scores: np.ndarray) -> np.ndarray:
    if scores.dtype.itemsize < 4:  # float16 / bfloat16
        return scores.astype(np.float32)
    return scores


def numpy_logits(labels, logits, top_k=(1,)) -> PeerResult:
    """scipy.special.logsumexp cross-entropy + argmax (top-k by counting) accuracy."""
    from scipy.special import logsumexp

    scores = _upcast(logits)
    rows = np.arange(scores.shape[0])
    target = scores[rows, labels]
    ce = float(np.mean(logsumexp(scores, axis=1) - target, dtype=np.float64))
    return PeerResult(ce, _accuracies(scores, labels, target, top_k))


def numpy_proba(labels, proba, top_k=(1,)) -> PeerResult:
    """-mean(log(clip(p[y], eps, 1 - eps))) + argmax accuracy."""
    scores = _upcast(proba)
    eps = np.finfo(proba.dtype).eps if proba.dtype.kind == "f" else np.finfo(np.float32).eps
    target = scores[np.arange(scores.shape[0]), labels]
    ce = float(-np.mean(np.log(np.clip(target.astype(np.float64), eps, 1 - eps))))
    return PeerResult(ce, _accuracies(scores, labels, target, top_k))


def _rank(scores, labels, target):
    """Classes ahead of the true one: higher scores, and equal scores at a lower index."""
    ahead = (scores > target[:, None]).sum(axis=1)
    ahead += ((scores == target[:, None]) & (np.arange(scores.shape[1]) < labels[:, None])).sum(axis=1)
    return ahead


def _accuracies(scores, labels, target, top_k):
    out = {}
    for k in top_k:
        if k == 1:
            out[k] = float(np.mean(scores.argmax(axis=1) == labels))
        else:
            out[k] = float(np.mean(_rank(scores, labels, target) < k))
    return out


# --------------------------------------------------------------------------- registry

LOGITS = {"torch": torch_logits, "sklearn": None, "numpy": numpy_logits}  # sklearn: give it proba
PROBA = {"torch": torch_proba, "sklearn": sklearn_proba, "numpy": numpy_proba}
