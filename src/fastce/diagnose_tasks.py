"""``diagnose`` for the binary and multi-label tasks (the multi-class path lives in ``api.diagnose``).

* Binary (1-D scores of class 1): the metrics come from the binary task's own
  State (the kernel ``evaluate`` runs, so ``report.metrics`` is
  ``evaluate``'s, bit for bit); the diagnostics come from the multi-class
  diagnostics reader, fed each bounded chunk of rows as its two-column
  equivalent (logits ``[0, z]``, ``[-inf, 0]`` for z = +inf; probabilities
  ``[1 - p, p]``, in float64).  Chunks hold whole blocks of the two-column
  kernel (``_config.block_rows(2)``) and their states merge exactly, so the
  report does not depend on the chunk size.  Cost: a second read of the
  scores and a (chunk, 2) float64 buffer.
* Multi-label ((N, C) scores, (N, C) 0/1 target): ``evaluate``'s metrics,
  then one read by ``multilabel_kernels`` into a
  ``multilabel_report.MultilabelDiagnosticsState``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fastce import _config
from fastce.diagnostics import (
    DiagnosticsOptions,
    DiagnosticsState,
    read_with_diagnostics,
)
from fastce.errors import InputError

# Rows of 1-D scores turned into two columns at a time (4 MiB of float64);
# rounded down to whole blocks of the two-column kernel.
BINARY_CHUNK_ROWS = 1 << 18


def _float64(part: np.ndarray) -> np.ndarray:
    """A float64 copy of a slice of a score view (``validation.Scores.view``: 16-bit floats are held as ints)."""
    if part.dtype == np.uint16:  # float16 bits
        return part.view(np.float16).astype(np.float64)
    if part.dtype == np.int16:  # bfloat16 bits: the top half of a float32
        return (part.view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return part.astype(np.float64)


def _two_columns(part: np.ndarray, from_logits: bool, out: np.ndarray) -> None:
    """Write the two-column equivalent of 1-D scores of class 1 into ``out`` (rows, 2)."""
    x = _float64(part)
    if from_logits:
        # softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]; +inf would read as a
        # non-finite row there, so it becomes the same point as [-inf, 0].
        up = x == np.inf
        out[:, 0] = np.where(up, -np.inf, 0.0)
        out[:, 1] = np.where(up, 0.0, x)
    else:
        np.subtract(1.0, x, out=out[:, 0])
        out[:, 1] = x


def binary_diagnostics(scores, labels, weights, *, top_k, from_logits: bool, options: DiagnosticsOptions,
                       chunk_rows: int | None = None) -> DiagnosticsState:
    """The multi-class diagnostics of validated 1-D scores, read a bounded chunk of rows at a time."""
    n_rows = scores.shape[0]
    block = _config.block_rows(2)
    chunk = max(block, (BINARY_CHUNK_ROWS if chunk_rows is None else chunk_rows) // block * block)
    buffer = np.empty((min(chunk, n_rows), 2))
    diag = DiagnosticsState.empty(options)
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        two = buffer[: stop - start]
        _two_columns(scores.view[start:stop], from_logits, two)
        _, part = read_with_diagnostics(
            two, labels[start:stop], None if weights is None else weights[start:stop], top_k=top_k,
            from_logits=from_logits, eps=scores.eps, options=options,
        )
        diag = diag.merge(part)
    return diag


def diagnose_binary(scores, y_true, *, from_logits: bool, name: str, sample_weight, top_k, nan_policy: str,
                    options: DiagnosticsOptions):
    """A :class:`~fastce.report.Report` of 1-D scores; its metrics are ``evaluate``'s (``task == "binary"``)."""
    from fastce import readers
    from fastce.report import Report

    reader = readers.make_reader("binary", 2, from_logits=from_logits, top_k=top_k)
    batch = reader.validate(y_true, scores, sample_weight, name=name)
    state = reader.read(batch)
    reader.raise_now(state, nan_policy, name)  # before the second read: NaN rows under "raise", bad probabilities
    labels, weights, ks = batch.targets, batch.weights, reader.top_k
    diag = binary_diagnostics(scores, labels, weights, top_k=ks, from_logits=from_logits, options=options)
    report = Report.from_states(state, diag, nan_policy=nan_policy, scores_name=name, stacklevel=5)
    return dataclasses.replace(report, metrics=dataclasses.replace(report.metrics, task="binary"))


def diagnose_multilabel(scores, y, *, from_logits: bool, name: str, sample_weight, top_k, nan_policy: str,
                        options: DiagnosticsOptions):
    """A :class:`~fastce.multilabel_report.MultilabelReport` of (N, C) scores and an (N, C) indicator target."""
    from fastce import readers
    from fastce.multilabel_report import (
        MultilabelOptions,
        MultilabelReport,
        read_multilabel_diagnostics,
    )

    reader = readers.make_reader("multilabel", scores.shape[1], from_logits=from_logits, top_k=top_k)
    batch = reader.validate(y, scores, sample_weight, name=name)
    metrics = reader.finalize(reader.read(batch), nan_policy, name)
    weights = batch.weights
    ml_options = MultilabelOptions(
        num_labels=scores.shape[1], n_bins=options.n_bins, worst_k=options.worst_k,
        confident_below=options.confident_below,
    )
    diag = read_multilabel_diagnostics(
        scores.view, y, np.empty(0) if weights is None else weights, from_logits=from_logits, options=ml_options
    )
    return MultilabelReport.from_state(metrics, diag)


def refuse_soft_targets() -> None:
    raise InputError(
        "diagnose supports multi-class, binary and multi-label targets; for soft targets fastce.evaluate reports "
        "cross-entropy = target entropy + KL divergence.",
        argument="y_true",
    )
