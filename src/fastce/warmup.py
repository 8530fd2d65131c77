"""Compile (and cache) the kernels ahead of time: ``fastce warmup`` / ``fastce.warmup.warmup()``.

numba compiles each kernel on its first use with a given score dtype and
writes it to its on-disk cache; later processes load it in a fraction of a
second.  A container image or a CI cache filled by ``fastce warmup`` never
pays the compile at run time.  Warming up runs every door on a few rows of
each dtype, so it compiles exactly what those calls would: the multi-class
kernels for short and long rows (logits and probabilities), binary,
multi-label (logits and probabilities, every target dtype read as it is)
and soft-target kernels, the diagnostics (every task) and comparison
kernels, and ``precision="float64"`` on 16- and 32-bit logits.
"""

from __future__ import annotations

import os
import time
import warnings

import numba
import numpy as np

from fastce import _label_presence

DTYPES = ("float32", "float64", "float16", "bfloat16")


def _scores_dtype(name: str):
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError as exc:
            raise ImportError("warming up bfloat16 needs the ml_dtypes package (pip install ml_dtypes)") from exc
        return ml_dtypes.bfloat16
    return np.dtype(name)


def _exercise(dtype) -> None:
    """One call of every door on a few rows of ``dtype`` scores (their values do not matter)."""
    import fastce

    rng = np.random.default_rng(0)
    rows, classes = 64, 5
    logits = rng.standard_normal((rows, classes)).astype(dtype)
    proba64 = rng.dirichlet(np.ones(classes), rows)
    proba = proba64.astype(dtype)
    # Targets the soft and multi-label kernels read as they are, each a kernel of its own: float64, and float32
    # with float32 logits (others, float16 / bfloat16 among them, become float64: their logits' targets then
    # take the float64 kernel).
    float_targets = (np.float64, np.float32) if np.dtype(dtype) == np.float32 else (np.float64,)
    labels = rng.integers(0, classes, rows)
    with warnings.catch_warnings():
        # Half-precision probabilities do not sum to one exactly, and so on: not the point here.
        warnings.simplefilter("ignore")
        fastce.evaluate(labels, logits=logits, top_k=(1, 2))
        fastce.evaluate(labels, proba=proba, top_k=(1, 2))
        fastce.diagnose(labels, logits=logits)
        fastce.compare(labels, logits={"a": logits, "b": logits[::-1].copy()})
        # With weights, the in-registers and two-class kernels compile the masked pair sums (see
        # compare_kernels._pair_block): kernels of their own.
        weights = rng.uniform(0.5, 2.0, rows)
        fastce.compare(labels, logits={"a": logits, "b": logits[::-1].copy()}, sample_weight=weights)
        # An infinite loss under one model makes its block rare: compare's general kernel (also groups=).
        masked = logits.copy()
        masked[0, labels[0]] = -np.inf
        fastce.compare(labels, logits={"a": masked, "b": logits})
        fastce.evaluate(labels, logits=logits, groups=labels % 2)  # per-group results: their own folds
        fastce.compare(labels, logits={"a": logits, "b": logits[::-1].copy()}, groups=labels % 2)
        two = logits[:, :2].copy()
        fastce.evaluate(labels % 2, logits=two)  # the two-class kernel, without and with per-row outputs
        fastce.diagnose(labels % 2, logits=two)
        fastce.cross_entropy(two, labels % 2, reduction="none")
        fastce.compare(labels % 2, logits={"a": two, "b": two[::-1].copy()})  # compare's two-class kernel
        fastce.compare(labels % 2, logits={"a": two, "b": two[::-1].copy()}, sample_weight=weights)
        # Two-class probabilities (predict_proba's), and the labels' one-pass distinct values that
        # scikit-learn's drop-ins take from large int64 label vectors (fastce._label_presence).
        fastce.evaluate(labels % 2, proba=(proba64[:, :2] / proba64[:, :2].sum(axis=1, keepdims=True)).astype(dtype))
        _label_presence.present_values(np.zeros(_label_presence.MIN_LABELS, dtype=np.int64))
        binary = labels % 2
        fastce.evaluate(binary, logits=logits[:, 0].copy())
        fastce.evaluate(binary, proba=proba[:, 0].copy())
        # Multi-label targets, each dtype a kernel of its own: int64 (scikit-learn's indicator matrices), bool /
        # uint8 (a numpy comparison's; bool is read as uint8) and the floats (float32 with any logits: a float32
        # target is read as it is), of logits and of probabilities (predict_proba of a multi-label model), and
        # diagnose of each; compare's paired values once (one kernel for every target dtype).
        indicators = [(logits > 0).astype(t) for t in (np.int64, np.float64, np.uint8, np.float32)]
        sigmoid = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(dtype)
        for indicator in indicators:
            fastce.evaluate(indicator, logits=logits)
            fastce.evaluate(indicator, proba=sigmoid, task="multilabel")
        fastce.compare(indicators[0], logits={"a": logits, "b": logits[::-1].copy()})
        # Soft targets, short rows, and label smoothing (the float64 soft kernel's types).
        for target_dtype in float_targets:
            fastce.evaluate(proba64.astype(target_dtype), logits=logits)
        fastce.cross_entropy(logits, labels, label_smoothing=0.1)
        fastce.diagnose(binary, logits=logits[:, 0].copy())
        fastce.compare(binary, logits={"a": logits[:, 0].copy(), "b": logits[:, 1].copy()})  # compare's binary kernel
        certain = logits[:, 0].copy()
        certain[0] = np.inf if binary[0] == 0 else -np.inf  # certain and wrong: its block is paired with masks
        fastce.compare(binary, logits={"a": certain, "b": logits[:, 1].copy()})
        for indicator in indicators:
            fastce.diagnose(indicator, logits=logits)
        # task="auto" reads a large (N, C) target's kind with a kernel (small ones, as here, with numpy): for
        # targets of this dtype, and of bool / uint8 and int64 (0/1 indicators).
        from fastce import _target_flags

        for target_dtype in (dtype, np.uint8, np.int64):
            _target_flags.compile_kernel(target_dtype)
        # Rows of more than 32 classes go through the long-row kernel.
        wide = rng.standard_normal((rows, 40)).astype(dtype)
        wide_labels = rng.integers(0, 40, rows)
        fastce.evaluate(wide_labels, logits=wide, top_k=(1, 2))
        fastce.evaluate(wide_labels, proba=rng.dirichlet(np.ones(40), rows).astype(dtype), top_k=(1, 2))
        fastce.diagnose(wide_labels, logits=wide)
        fastce.compare(wide_labels, logits={"a": wide, "b": wide[::-1].copy()})
        # Soft targets of more than 48 classes: the long-row soft kernel.
        wide_soft, wide_logits = rng.dirichlet(np.ones(60), rows), rng.standard_normal((rows, 60)).astype(dtype)
        for target_dtype in float_targets:
            fastce.evaluate(wide_soft.astype(target_dtype), logits=wide_logits)
        fastce.cross_entropy(wide_logits, rng.integers(0, 60, rows), label_smoothing=0.1)
        if np.dtype(dtype).itemsize < 8:
            # precision="float64" on 16- and 32-bit logits: kernels of their own (see kernels.general_tokens).
            fastce.evaluate(labels, logits=logits, precision="float64")
            fastce.evaluate(wide_labels, logits=wide, precision="float64")


def warmup(dtypes=DTYPES, *, report=None) -> dict:
    """Compile every kernel for each of ``dtypes``; returns {dtype: seconds}.

    ``report(name, seconds)`` is called after each dtype.  A second run (or a
    process with the cache already filled) takes well under a second per dtype.
    """
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise ValueError(f"dtypes must be among {', '.join(DTYPES)}; got {', '.join(map(str, unknown))}.")
    seconds = {}
    for name in dtypes:
        dtype = _scores_dtype(name)
        started = time.perf_counter()
        _exercise(dtype)
        seconds[name] = time.perf_counter() - started
        if report is not None:
            report(name, seconds[name])
    return seconds


def cache_location() -> str:
    """Where numba writes fastce's cache (its fallback directory, else NUMBA_CACHE_DIR, else next to the sources)."""
    from fastce import _config

    if _config.FALLBACK_CACHE_DIR:
        return _config.FALLBACK_CACHE_DIR
    if numba.config.CACHE_DIR:
        return numba.config.CACHE_DIR
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
