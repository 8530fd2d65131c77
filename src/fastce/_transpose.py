"""C-ordered copies of column-major 2-D slices, in tiles, on every thread.

Scores whose class axis is not the last one -- F-ordered (N, C) arrays, and
PyTorch's (N, C, d1, ...) layout, whose samples are read as (d1, C) views
(``_class_axis``) -- reach the kernels through ``_accumulate.kernel_input``,
which copies a bounded slice to C order.  numpy's copy of such a transposed
view walks one row at a time with a stride of a whole column between
entries, on one thread: 78% of ``cross_entropy`` of a (64, 1000, 1024)
float32 array (perf), about 1 GB/s.  Here the slice is copied in tiles of
``TILE`` rows by ``TILE`` columns (each tile's reads and writes stay in
cache), the tiles of a row band on one thread, the bands shared by every
thread.  The entries are copied as raw bits (an unsigned integer view of
their width), so every dtype -- bfloat16 included -- takes the same kernel.
"""

from __future__ import annotations

import numpy as np

from fastce import _parallel
from fastce._config import KERNEL_OPTIONS, kernel

# Below this many entries numpy's copy is as quick (no threads to wake, no first compile for a small input).
MIN_ENTRIES = 1 << 16
TILE = 32
# Rows of one claimed task (a band of tiles).
BAND_ROWS = 8 * TILE
_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


@kernel(**KERNEL_OPTIONS)
def _copy_tasks(source, target, n_bands, claims, first_task, task_step):
    """target[r, c] = source[r, c] for the row bands this thread claims (see fastce._parallel.claim)."""
    n_rows, n_cols = source.shape
    while True:
        band = _parallel.claim(claims)
        if band >= n_bands:
            break
        r0 = band * BAND_ROWS
        r1 = min(n_rows, r0 + BAND_ROWS)
        for c0 in range(0, n_cols, TILE):
            c1 = min(n_cols, c0 + TILE)
            for t0 in range(r0, r1, TILE):
                t1 = min(r1, t0 + TILE)
                # Down each column (the source's contiguous direction), into the tile's rows.
                for c in range(c0, c1):
                    for r in range(t0, t1):
                        target[r, c] = source[r, c]


def column_major(view: np.ndarray) -> bool:
    """Whether ``view`` is a 2-D slice whose columns are contiguous runs (F order, or the transposed view of a
    C-ordered sample) and not its rows, of MIN_ENTRIES entries at least: what copy_to_c_order is for."""
    return (view.ndim == 2 and view.shape[0] > 1 and view.shape[1] > 1 and view.strides[0] == view.itemsize
            and view.strides[1] >= view.shape[0] * view.itemsize and view.itemsize in _UNSIGNED
            and view.size >= MIN_ENTRIES)


def copy_to_c_order(view: np.ndarray) -> np.ndarray:
    """A fresh C-ordered, aligned copy of a ``column_major`` view (the same bits)."""
    from fastce import _config

    target = np.empty(view.shape, dtype=view.dtype)
    bits = _UNSIGNED[view.itemsize]
    n_bands = -(-view.shape[0] // BAND_ROWS)
    with _config.PARALLEL_LOCK:  # one parallel call at a time (see _config)
        _parallel.run_tasks(_copy_tasks, (view.view(bits), target.view(bits), n_bands, _parallel.new_claims()),
                            n_bands)
    return target
