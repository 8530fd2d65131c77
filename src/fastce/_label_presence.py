"""The distinct values of a large vector of small non-negative integer labels, in one parallel pass.

scikit-learn's metrics take the classes from ``y_true`` (``unique_labels``): the drop-ins of
``fastce.sklearn_compat`` do the same (``_labels.unique_values``).  In numpy that is three
single-threaded passes over the labels -- ``min``, ``max``, then ``np.bincount`` -- which took
more time than the kernel itself for ``log_loss`` of two-class probabilities (2**24 int64 labels,
2 threads: ~54 of 92 ms, perf).  Here each thread reads its share of the labels once, keeping their
extremes and marking the values in [-OFFSET, SPAN - OFFSET) in a table of its own; the tables and
extremes are merged after.  Labels outside it leave the caller to the numpy route (they are only
counted in the extremes).
"""

from __future__ import annotations

import numpy as np

from fastce._config import KERNEL_OPTIONS, kernel
from fastce._parallel import run_tasks, strides

# Values marked in each thread's table: [-OFFSET, SPAN - OFFSET), class indices of any realistic classifier
# (a language model's vocabulary included) and scikit-learn's -1 / 1 binary labels.
SPAN = 1 << 18
OFFSET = 1 << 10
# Labels a task (each task's labels in one run): small enough for both threads to share the work.
_TASK_LABELS = 1 << 20
# Below this many labels numpy's three passes are quick, and nothing is compiled.
MIN_LABELS = 1 << 18


@kernel(**KERNEL_OPTIONS)
def _presence_tasks(y, n_tasks, seen, extremes, first_task, task_step):
    """Tasks first_task, first_task + task_step, ...: labels [task * _TASK_LABELS, ...) into this stride's row
    of ``seen`` (1 at v + OFFSET where a value v of the table's range occurs) and of ``extremes`` (smallest,
    largest)."""
    low = np.int64(np.iinfo(np.int64).max)
    high = np.int64(np.iinfo(np.int64).min)
    row = seen[first_task]
    for task in range(first_task, n_tasks, task_step):
        start = task * _TASK_LABELS
        for i in range(start, min(y.shape[0], start + _TASK_LABELS)):
            v = np.int64(y[np.uint64(i)])
            low = min(low, v)
            high = max(high, v)
            at = np.uint64(v + OFFSET)  # below -OFFSET (or wrapped, near int64's maximum): above SPAN
            if at < np.uint64(SPAN):
                row[at] = 1
    extremes[first_task, 0] = low
    extremes[first_task, 1] = high


def supports(y: np.ndarray) -> bool:
    """Whether ``present_values`` reads ``y``: a 1-D integer vector of at least MIN_LABELS labels, in the
    machine's byte order, whose values an int64 holds (not uint64)."""
    return (y.ndim == 1 and y.dtype.kind in "iu" and y.dtype.isnative
            and y.dtype.itemsize <= (8 if y.dtype.kind == "i" else 4) and y.shape[0] >= MIN_LABELS)


def present_values(y: np.ndarray) -> tuple[np.ndarray | None, int, int]:
    """(sorted distinct values of ``y`` in its dtype, or None when some value is outside [-OFFSET, SPAN -
    OFFSET); smallest; largest), for a vector that ``supports`` accepts; ``y`` is read as it is (any stride),
    not copied."""
    n_tasks = -(-y.shape[0] // _TASK_LABELS)
    threads = strides(n_tasks)
    seen = np.zeros((threads, SPAN), dtype=np.uint8)
    extremes = np.empty((threads, 2), dtype=np.int64)
    run_tasks(_presence_tasks, (y, n_tasks, seen, extremes), n_tasks)
    low, high = int(extremes[:, 0].min()), int(extremes[:, 1].max())
    if low < -OFFSET or high >= SPAN - OFFSET:
        return None, low, high
    return (np.flatnonzero(seen.any(axis=0)) - OFFSET).astype(y.dtype), low, high
