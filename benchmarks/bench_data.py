"""Shared by ``test_bench.py`` and ``compare.py``: shapes, data and an exact reference.

Sizes are given as a number of score *elements* (N x C): ``SMALL_ELEMENTS``
keeps every benchmark fast enough to run in CI on each change;
``LARGE_ELEMENTS`` (2**28, 1 GiB of float32) is far beyond any CPU cache, so
it measures what fastce is for: streaming a huge validation set from memory.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import numpy as np

CLASSES = (2, 10, 100, 1000, 32000)
SMALL_ELEMENTS = 1 << 18  # 1 MiB of float32: the pytest default, < 60 s for the whole file
COMPARE_SMALL_ELEMENTS = 1 << 21  # 8 MiB float32: compare.py --sizes small (a quick smoke run)
LARGE_ELEMENTS = 1 << 28  # 1 GiB float32
LOGIT_DTYPES = ("float32", "float64", "float16", "bfloat16")
TOP_K = (1, 5)
# Peers that build N x C temporaries run on at most this many scores' worth of
# rows (their ratio to fastce is then per byte): scikit-learn builds an N x C
# int64 one-hot matrix and is 100-1000x slower; scipy's logsumexp needs ~40
# bytes of temporaries per float32 score (12 GB for 2**28 scores), twice that
# per float64 score, so the caps are halved for 8-byte dtypes.
SKLEARN_MAX_ELEMENTS = 1 << 21
NUMPY_MAX_ELEMENTS = 1 << 26


def capped_rows(num_rows: int, num_classes: int, max_elements: int, itemsize: int = 4) -> int:
    """Rows of an (num_rows, num_classes) array holding at most ``max_elements`` scores (>= 1).

    ``max_elements`` counts float32 (or narrower) scores; it is divided by
    ``itemsize / 4`` for wider dtypes.
    """
    max_elements = max_elements // max(1, itemsize // 4)
    return max(1, min(num_rows, max_elements // num_classes))


# Boost of the true class's logit: makes accuracy a real number (about 0.3-0.9
# depending on C) instead of 1/C, so the checks mean something.
TRUE_CLASS_BOOST = 1.5


def rows_for(elements: int, num_classes: int, min_rows: int = 16) -> int:
    """Rows of an (N, C) array holding about ``elements`` scores."""
    return max(min_rows, elements // num_classes)


def np_dtype(name: str) -> np.dtype:
    """numpy dtype for float16 / float32 / float64 / bfloat16 (ml_dtypes)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def bfloat16_available() -> bool:
    try:
        import ml_dtypes  # noqa: F401
    except ImportError:
        return False
    return True


def make_logits(num_rows: int, num_classes: int, seed: int = 0):
    """Random float32 logits (standard normal, true class boosted) and int64 labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=num_rows, dtype=np.int64)
    # Filled in row chunks: standard_normal(dtype=float32) has no N*C float64 temporary
    # but still builds one output; chunks keep peak memory at ~1x the array.
    logits = np.empty((num_rows, num_classes), dtype=np.float32)
    step = max(1, (1 << 22) // num_classes)
    for start in range(0, num_rows, step):
        stop = min(start + step, num_rows)
        rng.standard_normal(out=logits[start:stop], dtype=np.float32)
        logits[np.arange(start, stop), labels[start:stop]] += TRUE_CLASS_BOOST
    return labels, logits


def softmax(logits: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Row softmax, computed in float64 per row chunk, stored as ``dtype`` (rows sum to 1)."""
    out = np.empty(logits.shape, dtype=dtype)
    step = max(1, (1 << 22) // logits.shape[1])
    for start in range(0, logits.shape[0], step):
        z = logits[start : start + step].astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        out[start : start + step] = z
    return out


def convert(logits32: np.ndarray, name: str, rows: int | None = None) -> np.ndarray:
    """float32 logits (their first ``rows`` rows) converted to dtype ``name`` (C-contiguous)."""
    part = logits32 if rows is None else logits32[:rows]
    if name == "float32":
        return part
    return np.ascontiguousarray(part.astype(np_dtype(name)))


def reference(labels, scores, *, proba: bool = False, top_k=(1,)):
    """(cross_entropy, {k: top-k accuracy}) in float64, row chunk by row chunk.

    Independent of every implementation being measured; bounded memory.
    Logits: logsumexp(z) - z[y]. Probabilities: -log(clip(p[y], eps, 1 - eps))
    with eps of the dtype (scikit-learn's log_loss). Rank of the true class:
    strictly greater scores plus equal scores at a lower index (argmax: first
    index wins), so top-1 accuracy is argmax accuracy.
    """
    n, c = scores.shape
    eps = _eps(scores.dtype)
    loss = 0.0
    hits = dict.fromkeys(top_k, 0)
    step = max(1, (1 << 21) // c)
    for start in range(0, n, step):
        z = scores[start : start + step].astype(np.float64)
        y = labels[start : start + step]
        rows = np.arange(z.shape[0])
        target = z[rows, y]
        if proba:
            loss += float(-np.log(np.clip(target, eps, 1 - eps)).sum())
        else:
            zmax = z.max(axis=1)
            lse = zmax + np.log(np.exp(z - zmax[:, None]).sum(axis=1))
            loss += float((lse - target).sum())
        ahead = (z > target[:, None]).sum(axis=1)
        ahead += ((z == target[:, None]) & (np.arange(c)[None, :] < y[:, None])).sum(axis=1)
        for k in top_k:
            hits[k] += int((ahead < k).sum())
    return loss / n, {k: h / n for k, h in hits.items()}


def _eps(dtype) -> float:
    if dtype.name == "bfloat16":
        import ml_dtypes

        return float(ml_dtypes.finfo(dtype).eps)
    return float(np.finfo(dtype).eps)


def machine_info() -> dict:
    """CPU model, cores, numba threads and versions: printed at the top of every report."""
    import numba

    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = int(fh.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        mem_gb = float("nan")
    versions = {"python": platform.python_version()}
    for module in ("numpy", "numba", "fastce", "torch", "sklearn", "scipy"):
        mod = sys.modules.get(module)
        if mod is None:
            try:
                mod = __import__(module)
            except ImportError:
                continue
        versions[module] = getattr(mod, "__version__", "?")
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "memory_gib": round(mem_gb, 1),
        "numba_threads": numba.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "fastce_commit": _git_commit(),
        "fastce_path": _fastce_path(),
        "versions": versions,
    }


def _fastce_path() -> str:
    try:
        import fastce
    except ImportError as exc:
        return f"not importable ({exc})"
    return os.path.dirname(os.path.abspath(fastce.__file__))


def _git_commit() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=here, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty-src" if dirty else "")


def min_time(fn, repeats: int, *, budget_s: float = float("inf"), min_total_s: float = 0.0, warmup: bool = True):
    """(min seconds, last result) over timed calls of ``fn``.

    Runs at least ``repeats`` timed calls and keeps going until ``min_total_s``
    seconds were spent (so a 1 ms call gets hundreds of tries at an undisturbed
    time slice on a busy machine), but stops once ``budget_s`` seconds were
    spent and at least two calls were timed.  With ``warmup`` the first call
    is untimed unless it alone took over a second (a slow peer: then it
    counts, so a 5 s peer costs 2 runs, not 3); a first call longer than
    half the budget is the only one (a 20 s peer is timed once: at that length
    the noise is small next to the gap being measured).
    """
    spent = 0.0
    best = float("inf")
    result = None
    timed = 0
    if warmup:
        t0 = time.perf_counter()
        result = fn()
        first = time.perf_counter() - t0
        spent += first
        if first > 1.0:
            best, timed = first, 1
        if first > budget_s / 2:
            return best, result
    while not (timed >= repeats and spent >= min_total_s) and not (timed >= 2 and spent >= budget_s):
        t0 = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - t0
        spent += elapsed
        best = min(best, elapsed)
        timed += 1
    return best, result


def make_binary_logits(num_rows: int, seed: int = 0):
    """1-D float32 logits of class 1 (standard normal, shifted toward the label) and int64 0/1 labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=num_rows, dtype=np.int64)
    logits = rng.standard_normal(num_rows, dtype=np.float32)
    logits += (2 * labels - 1).astype(np.float32) * TRUE_CLASS_BOOST
    return labels, logits


def binary_reference(labels, logits) -> tuple:
    """(mean binary cross-entropy, {1: accuracy at z > 0}) in float64, in chunks."""
    total, hits = 0.0, 0
    step = 1 << 22
    for start in range(0, logits.shape[0], step):
        z = np.asarray(logits[start : start + step], dtype=np.float64)
        y = labels[start : start + step]
        total += float(np.sum(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))
        hits += int(np.count_nonzero((z > 0) == (y == 1)))
    return total / logits.shape[0], {1: hits / logits.shape[0]}
