"""Paired sums of per-row values: ``compare`` for the multi-label and soft-target tasks.

Those tasks' kernels write each row's values as they read it (the
``row_values`` of ``kernels_binary.bce_blocks`` and ``kernels_soft.soft_blocks``:
four means of the task, ``GROUPED_MEANS`` of its state, row by row; a NaN
first value marks a row that is not counted).  For a pair of models (A, B),
:func:`value_pair_blocks` sums, per block of rows, what the paired errors
need, over the *joint* rows (counted under both):

* ``V_ROWS``, ``V_W``, ``V_W2``: joint rows, sum of w, sum of w^2;
* ``V_FINITE_ROWS`` / ``V_INF_ROWS``: joint rows whose first value (the
  loss) is finite under both / infinite under one; ``V_LA`` ... ``V_LAB``:
  the unweighted sums behind the correlation of the losses, over the finite rows;
* per value column j, at ``value_column(j)``: the joint rows whose difference
  d = (value under B) - (value under A) is not finite, then sum w d,
  sum w^2 d and sum w^2 d^2 over the others;
* at ``table_column(n_values)``: the 2 x 2 table of the task's hit column
  (subset hit, argmax agreement), cells BOTH_RIGHT, ONLY_A, ONLY_B,
  BOTH_WRONG, each (rows, weight, squared weight), as compare_kernels' table.

The blocks' float64 sums are then added exactly (compare_kernels.fold_exact),
so the pair sums do not depend on threads or on how the rows were split.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fastce import _exactsum
from fastce._config import KERNEL_OPTIONS
from fastce.compare_kernels import BOTH_RIGHT, BOTH_WRONG, ONLY_A, ONLY_B, TABLE_COLUMNS

V_ROWS, V_W, V_W2, V_FINITE_ROWS, V_INF_ROWS, V_LA, V_LB, V_LA2, V_LB2, V_LAB = range(10)
CORRELATION_COLUMNS = (V_FINITE_ROWS, V_LA, V_LB, V_LA2, V_LB2, V_LAB)
_FIRST_VALUE = 10
_PER_VALUE = 4  # not-finite differences, sum w d, sum w^2 d, sum w^2 d^2

# The metrics a comparison of each task reports: name -> (value column, kind).  "mean": a mean of per-row
# values, compared by the paired z-test; "hit": a 0/1 value, with its 2 x 2 table and the exact McNemar test.
# The target entropy of soft targets is the same under every model: no metric to compare.
TASK_METRICS = {
    "multilabel": {"cross_entropy": (0, "mean"), "brier": (1, "mean"), "hamming_accuracy": (2, "mean"),
                   "subset_accuracy": (3, "hit")},
    "soft": {"cross_entropy": (0, "mean"), "kl_divergence": (2, "mean"), "accuracy": (3, "hit")},
}
# The Metrics field each task's "accuracy" (its hit column) is reported as.
HIT_COLUMN = 3


def value_column(j: int) -> int:
    return _FIRST_VALUE + _PER_VALUE * j


def table_column(n_values: int) -> int:
    return _FIRST_VALUE + _PER_VALUE * n_values


def value_pair_columns(n_values: int) -> int:
    return table_column(n_values) + TABLE_COLUMNS


def value_pair_blocks(values_a, values_b, weights, hit, block_rows, fsums) -> int:
    """Per-block paired sums (the module's columns) of two models' per-row values over the same rows.

    ``values_a`` / ``values_b``: (n, n_values) float64; ``weights``: (n,) or
    empty (unweighted); ``hit``: the hit column.  Writes fsums[b] for blocks
    of ``block_rows`` rows from row 0 and returns their number.
    """
    nblocks = -(-values_a.shape[0] // block_rows)
    if fsums.shape[0] < nblocks or fsums.shape[1] != value_pair_columns(values_a.shape[1]):
        raise ValueError("fsums is too small for these rows and values")
    _value_pair_blocks(values_a, values_b, weights, hit, block_rows, fsums)
    return nblocks


@njit(**KERNEL_OPTIONS)
def _value_pair_blocks(values_a, values_b, weights, hit, block_rows, fsums):
    n_rows, n_values = values_a.shape
    weighted = weights.shape[0] != 0
    table = _FIRST_VALUE + _PER_VALUE * n_values
    for b in range((n_rows + block_rows - 1) // block_rows):
        for c in range(fsums.shape[1]):
            fsums[b, c] = 0.0
        for r in range(b * block_rows, min(n_rows, (b + 1) * block_rows)):
            la = values_a[r, 0]
            lb = values_b[r, 0]
            if la != la or lb != lb:
                continue  # not counted under A or under B
            w = weights[r] if weighted else 1.0
            w2 = w * w
            fsums[b, V_ROWS] += 1.0
            fsums[b, V_W] += w
            fsums[b, V_W2] += w2
            if abs(la) < np.inf and abs(lb) < np.inf:
                fsums[b, V_FINITE_ROWS] += 1.0
                fsums[b, V_LA] += la
                fsums[b, V_LB] += lb
                fsums[b, V_LA2] += la * la
                fsums[b, V_LB2] += lb * lb
                fsums[b, V_LAB] += la * lb
            else:
                fsums[b, V_INF_ROWS] += 1.0
            for j in range(n_values):
                at = _FIRST_VALUE + _PER_VALUE * j
                d = values_b[r, j] - values_a[r, j]
                if abs(d) < np.inf:
                    fsums[b, at + 1] += w * d
                    fsums[b, at + 2] += w2 * d
                    fsums[b, at + 3] += w2 * (d * d)
                else:
                    fsums[b, at] += 1.0
            right_a = values_a[r, hit] > 0.5
            right_b = values_b[r, hit] > 0.5
            if right_a and right_b:
                cell = BOTH_RIGHT
            elif right_a:
                cell = ONLY_A
            elif right_b:
                cell = ONLY_B
            else:
                cell = BOTH_WRONG
            at = table + 3 * cell
            fsums[b, at] += 1.0
            fsums[b, at + 1] += w
            fsums[b, at + 2] += w2


class ValuePairSums:
    """The exact paired sums of one pair of models (the module's columns), read back as numbers."""

    def __init__(self, acc, n_values: int, propagate: bool, dropped=()):
        self.ints = [_exactsum.to_int(row) for row in acc]
        self.n_values = n_values
        self.propagate = propagate
        self.dropped = frozenset(dropped)  # columns where a block's partial sum was not finite (left out)

    def dropped_any(self, columns) -> bool:
        return any(c in self.dropped for c in columns)

    def value(self, column: int) -> float:
        return self.ints[column] / (1 << _exactsum.OFFSET)

    def count(self, column: int) -> int:
        return round(self.value(column))

    def cell(self, cell: int) -> tuple[int, float, int]:
        """(rows, weight, squared weight as a scaled int) of a cell of the hit column's table."""
        at = table_column(self.n_values) + 3 * cell
        return self.count(at), self.value(at + 1), self.ints[at + 2]

    def loss_sums(self) -> tuple[int, ...]:
        """(finite rows, sum a, sum b, sum a^2, sum b^2, sum ab) as scaled ints: the losses' correlation."""
        return tuple(self.ints[c] for c in CORRELATION_COLUMNS)


def metric_of(task: str, metric: str) -> tuple[str, int, str]:
    """(the metric's name, its value column, its kind) in a comparison of ``task``; "accuracy" names the
    task's hit column (multi-label: subset accuracy, as Metrics.accuracy)."""
    metrics = TASK_METRICS[task]
    if metric == "accuracy" and metric not in metrics:
        metric = next(name for name, (_, kind) in metrics.items() if kind == "hit")
    if metric not in metrics:
        raise ValueError(f"metric={metric!r} is not one of {sorted(metrics)} (a {task} comparison).")
    column, kind = metrics[metric]
    return metric, column, kind
