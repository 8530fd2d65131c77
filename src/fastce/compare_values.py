"""Paired sums of per-row values: ``compare`` for the multi-label and soft-target tasks.

Those tasks' kernels write each row's values as they read it (the
``row_values`` of ``kernels_binary.bce_blocks`` and ``kernels_soft.soft_blocks``:
four means of the task, ``GROUPED_MEANS`` of its state, row by row; a NaN
first value marks a row that is not counted).  For a pair of models (A, B),
:func:`value_pair_blocks` sums, per block of rows, what the paired errors
need, over the *joint* rows (counted under both):

* ``V_ROWS``, ``V_W``, ``V_W2``: joint rows, sum of w, sum of w^2;
* ``V_FINITE_ROWS``: joint rows whose first value (the loss) is finite
  under both; ``V_LA`` ... ``V_LAB``: the unweighted sums behind the
  correlation of the losses, over those rows;
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
from fastce import _accumulate_family
from fastce import compare_kernels as PK
from fastce._config import KERNEL_OPTIONS, kernel

# Literals, as compare_kernels' own: numba freezes globals into the compiled code and keys its cache on this
# file alone, so a change there must come with a change here (the assertion makes sure of it).
ROW_VALUES = 4
TABLE_COLUMNS = 12
BOTH_RIGHT, ONLY_A, ONLY_B, BOTH_WRONG = 0, 1, 2, 3
assert (ROW_VALUES, TABLE_COLUMNS, BOTH_RIGHT, ONLY_A, ONLY_B, BOTH_WRONG) == (
    _accumulate_family.ROW_VALUES, PK.TABLE_COLUMNS, PK.BOTH_RIGHT, PK.ONLY_A, PK.ONLY_B, PK.BOTH_WRONG)

V_ROWS, V_W, V_W2, V_FINITE_ROWS, V_LA, V_LB, V_LA2, V_LB2, V_LAB = range(9)
_FIRST_VALUE = 9
_PER_VALUE = 4  # not-finite differences, sum w d, sum w^2 d, sum w^2 d^2

# The metrics a comparison of each task reports: name -> (value column, kind).  "mean": a mean of per-row
# values, compared by the paired z-test; "hit": a 0/1 value, with its 2 x 2 table and the exact McNemar test.
# The target entropy of soft targets is the same under every model: no metric to compare.
TASK_METRICS = {
    "multilabel": {"cross_entropy": (0, "mean"), "brier": (1, "mean"), "hamming_accuracy": (2, "mean"),
                   "subset_accuracy": (3, "hit")},
    "soft": {"cross_entropy": (0, "mean"), "kl_divergence": (2, "mean"), "accuracy": (3, "hit")},
}
# The value column of the tasks' hit (multi-label: subset hit; soft: argmax agreement), read into the table.
HIT_COLUMN = 3
assert all(metrics[name] == (HIT_COLUMN, "hit") for metrics in TASK_METRICS.values() for name in metrics
           if metrics[name][1] == "hit")


def value_column(j: int) -> int:
    return _FIRST_VALUE + _PER_VALUE * j


def table_column(n_values: int) -> int:
    return _FIRST_VALUE + _PER_VALUE * n_values


def value_pair_columns(n_values: int) -> int:
    return table_column(n_values) + TABLE_COLUMNS


def value_pair_blocks(values_a, values_b, weights, hit, block_rows, fsums) -> int:
    """Per-block paired sums (the module's columns) of two models' per-row values over the same rows.

    ``values_a`` / ``values_b``: (n, ROW_VALUES) float64; ``weights``: (n,)
    or empty (unweighted); ``hit``: the hit column.  Writes fsums[b] for
    blocks of ``block_rows`` rows from row 0 and returns their number.
    """
    nblocks = -(-values_a.shape[0] // block_rows)
    if values_a.shape[1] != ROW_VALUES or fsums.shape[0] < nblocks or fsums.shape[1] != value_pair_columns(ROW_VALUES):
        raise ValueError("value_pair_blocks takes ROW_VALUES values a row and room for every block")
    _value_pair_blocks(values_a, values_b, weights, hit, block_rows, fsums)
    return nblocks


@njit(inline="always", **KERNEL_OPTIONS)
def _difference(x, y, w, w2, sums):
    """One value's (not-finite count, sum w d, sum w^2 d, sum w^2 d^2) with d = y - x."""
    d = y - x
    finite = abs(d) < np.inf
    d = d if finite else 0.0
    return (sums[0] + (0.0 if finite else 1.0), sums[1] + w * d, sums[2] + w2 * d, sums[3] + w2 * (d * d))


@njit(inline="always", **KERNEL_OPTIONS)
def _cell(inside, w, w2, sums):
    """A table cell's (rows, weight, squared weight) with this row added when ``inside``."""
    return (sums[0] + (1.0 if inside else 0.0), sums[1] + (w if inside else 0.0), sums[2] + (w2 if inside else 0.0))


@kernel(**KERNEL_OPTIONS)
def _value_pair_blocks(values_a, values_b, weights, hit, block_rows, fsums):
    """The sums of each block in local variables, written to fsums once per block."""
    n_rows = values_a.shape[0]
    weighted = weights.shape[0] != 0
    table = _FIRST_VALUE + _PER_VALUE * ROW_VALUES
    for b in range((n_rows + block_rows - 1) // block_rows):
        rows = w_sum = w2_sum = finite_rows = 0.0
        la_sum = lb_sum = la2 = lb2 = lab = 0.0
        v0 = v1 = v2 = v3 = (0.0, 0.0, 0.0, 0.0)
        both = only_a = only_b = neither = (0.0, 0.0, 0.0)
        for r in range(b * block_rows, min(n_rows, (b + 1) * block_rows)):
            la = values_a[r, 0]
            lb = values_b[r, 0]
            if la != la or lb != lb:
                continue  # not counted under A or under B
            w = weights[r] if weighted else 1.0
            w2 = w * w
            rows += 1.0
            w_sum += w
            w2_sum += w2
            finite = (abs(la) < np.inf) & (abs(lb) < np.inf)
            fa = la if finite else 0.0
            fb = lb if finite else 0.0
            finite_rows += 1.0 if finite else 0.0
            la_sum += fa
            lb_sum += fb
            la2 += fa * fa
            lb2 += fb * fb
            lab += fa * fb
            v0 = _difference(la, lb, w, w2, v0)
            v1 = _difference(values_a[r, 1], values_b[r, 1], w, w2, v1)
            v2 = _difference(values_a[r, 2], values_b[r, 2], w, w2, v2)
            v3 = _difference(values_a[r, 3], values_b[r, 3], w, w2, v3)
            right_a = values_a[r, hit] > 0.5
            right_b = values_b[r, hit] > 0.5
            both = _cell(right_a & right_b, w, w2, both)
            only_a = _cell(right_a & ~right_b, w, w2, only_a)
            only_b = _cell(~right_a & right_b, w, w2, only_b)
            neither = _cell(~right_a & ~right_b, w, w2, neither)
        fsums[b, V_ROWS], fsums[b, V_W], fsums[b, V_W2] = rows, w_sum, w2_sum
        fsums[b, V_FINITE_ROWS] = finite_rows
        fsums[b, V_LA], fsums[b, V_LB], fsums[b, V_LA2], fsums[b, V_LB2], fsums[b, V_LAB] = la_sum, lb_sum, la2, lb2, lab
        for j, v in enumerate((v0, v1, v2, v3)):
            at = _FIRST_VALUE + _PER_VALUE * j
            fsums[b, at], fsums[b, at + 1], fsums[b, at + 2], fsums[b, at + 3] = v
        for cell, sums in ((BOTH_RIGHT, both), (ONLY_A, only_a), (ONLY_B, only_b), (BOTH_WRONG, neither)):
            at = table + 3 * cell
            fsums[b, at], fsums[b, at + 1], fsums[b, at + 2] = sums


class ExactPairSums:
    """The exact paired sums of one pair of models, read back: Python ints (scaled) and floats.

    ``propagate``: NaN results (nan_policy="propagate" with NaN rows);
    ``dropped``: the columns where a block's partial sum was not finite and
    was left out (what needs them is unknown).
    """

    def __init__(self, acc, propagate: bool, dropped=()):
        self.ints = [_exactsum.to_int(row) for row in acc]
        self.propagate = propagate
        self.dropped = frozenset(dropped)

    def dropped_any(self, columns) -> bool:
        return any(c in self.dropped for c in columns)

    def value(self, column: int) -> float:
        return self.ints[column] / (1 << _exactsum.OFFSET)

    def count(self, column: int) -> int:
        return round(self.value(column))

    # What each layout defines: the columns of (finite rows, sum a, sum b, sum a^2, sum b^2, sum ab) of the
    # losses, and the first column of the 2 x 2 table of the k_index-th top-k value.
    CORRELATION_COLUMNS: tuple = ()

    def table_column(self, k_index: int) -> int:
        raise NotImplementedError

    def cell(self, k_index: int, cell: int) -> tuple[int, float, int]:
        """(rows, weight, squared weight as a scaled int) of a cell of the k_index-th table."""
        at = self.table_column(k_index) + 3 * cell
        return self.count(at), self.value(at + 1), self.ints[at + 2]


class ValuePairSums(ExactPairSums):
    """The paired sums of per-row values (this module's columns); one table, the hit column's (k = 1)."""

    CORRELATION_COLUMNS = (V_FINITE_ROWS, V_LA, V_LB, V_LA2, V_LB2, V_LAB)

    def __init__(self, acc, n_values: int, propagate: bool, dropped=()):
        super().__init__(acc, propagate, dropped)
        self.n_values = n_values

    def table_column(self, k_index: int) -> int:
        return table_column(self.n_values)


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
