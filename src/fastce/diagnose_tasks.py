"""The binary task's diagnostics: the multi-class diagnostics of the two-column equivalent.

(Multi-label diagnostics: ``multilabel_report``; each task's reader in
``fastce.readers`` says which it reads.)

For 1-D scores of class 1 the metrics come from the binary task's own State
(the kernel ``evaluate`` runs, so ``report.metrics`` is ``evaluate``'s, bit
for bit); the diagnostics come from the multi-class diagnostics reader, fed
each bounded chunk of rows as its two-column equivalent (logits ``[0, z]``, ``[-inf, 0]`` for z = +inf; probabilities
  ``[1 - p, p]``, in float64).  Chunks hold whole blocks of the two-column
  kernel (``_config.block_rows(2)``) and their states merge exactly, so the
  report does not depend on the chunk size.  Cost: a second read of the
  scores and a (chunk, 2) float64 buffer.  The two columns are float64, so
  the diagnostics take the short rows' float64 math whatever ``precision``
  says, while ``report.metrics`` of 16/32-bit logits take float32 math: the
  loss split's sums and the metrics' loss may differ in the 7th digit.
"""

from __future__ import annotations

import numpy as np

from fastce import _config
from fastce.diagnostics import (
    DiagnosticsOptions,
    DiagnosticsState,
    read_with_diagnostics,
)

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


def binary_diagnostics(view, eps: float, labels, weights, *, top_k, from_logits: bool, options: DiagnosticsOptions,
                       chunk_rows: int | None = None) -> DiagnosticsState:
    """The multi-class diagnostics of validated 1-D scores (a kernel view), read a bounded chunk of rows at a time."""
    n_rows = view.shape[0]
    block = _config.block_rows(2)
    chunk = max(block, (BINARY_CHUNK_ROWS if chunk_rows is None else chunk_rows) // block * block)
    buffer = np.empty((min(chunk, n_rows), 2))
    diag = DiagnosticsState.empty(options)
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        two = buffer[: stop - start]
        _two_columns(view[start:stop], from_logits, two)
        _, part = read_with_diagnostics(
            two, labels[start:stop], None if weights is None else weights[start:stop], top_k=top_k,
            from_logits=from_logits, eps=eps, options=options,
        )
        diag = diag.merge(part)
    return diag
