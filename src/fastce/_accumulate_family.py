"""Drive the element-wise binary and soft-target kernels over an array, a bounded slice at a time.

The counterpart of ``_accumulate`` for ``kernels_binary`` and
``kernels_soft``: inputs are validated arrays; the result is a
:class:`Sums` of exact partial sums and counters for the rows given, which
merges exactly with another (so the numbers never depend on the thread count
or on how the rows were split).  Targets and weights of a dtype the kernels
are not compiled for are converted one slice at a time, never as a whole.
"""

from __future__ import annotations

import numpy as np

from fastce import _config
from fastce import kernels_binary as KB
from fastce import kernels_soft as KS
from fastce import _accumulate
from fastce._accumulate import kernel_input
from fastce.state import State
from fastce.task_states import Sums

BINARY_LOGIT_BLOCK_ROWS = _config.BLOCK_ELEMENTS // 4  # 8192 rows, 32 KiB of float32 logits
assert BINARY_LOGIT_BLOCK_ROWS == KB.BINARY_BLOCK_ROWS  # the kernel's terms are laid out for it


_EMPTY_1D = kernel_input(np.empty(0, dtype=np.float64))
_EMPTY_2D = kernel_input(np.empty((0, 0), dtype=np.float64))
_NO_LOSSES_1D = np.empty(0, dtype=np.float64)
_NO_LOSSES_2D = np.empty((0, 0), dtype=np.float64)

# Target dtypes the binary kernel reads as they are; others become float64 per slice.  int64 since 2026-12-07
# (scikit-learn's MultiLabelBinarizer gives int64 0/1 matrices): copied to float64 a slice at a time, on one
# thread, they cost multi-label a quarter of its time.
_TARGET_DTYPES = (np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.uint8), np.dtype(np.int64))

# Per-row values of the multi-label and soft-target kernels (see _drive's on_rows), one width for both.
ROW_VALUES = KB.ROW_VALUES
assert KS.ROW_VALUES == ROW_VALUES


def binary_block_rows(from_logits: bool) -> int:
    """Rows per block of the 1-D binary kernels (logits: accumulate_binary_logits; probabilities:
    _accumulate.accumulate_binary_proba)."""
    return BINARY_LOGIT_BLOCK_ROWS if from_logits else _config.MAX_BLOCK_ROWS


def binary_float32_math(view, precision: str):
    """The 1-D binary logit kernels' ``float32_math`` (kernels_binary.logit_element) for a kernel view and a
    ``precision``: True (float32 math) for 16- and 32-bit logits with ``"input"``, else None (float64 math).
    A type the kernel is compiled for, not a flag it tests: each compiled kernel holds one of the two loops."""
    if precision not in _accumulate.PRECISIONS:
        raise ValueError(f"precision={precision!r}; pass one of {', '.join(map(repr, _accumulate.PRECISIONS))}")
    return True if precision == "input" and view.dtype != np.float64 else None


def as_kernel_target(part: np.ndarray) -> np.ndarray:
    if part.dtype == np.bool_:
        part = part.view(np.uint8)
    if part.dtype.isnative and part.dtype in _TARGET_DTYPES:
        return kernel_input(part)
    return kernel_input(part, np.float64)


def _native_soft_target(dtype) -> bool:
    """Soft targets the kernels read as they are (float64, and float32: PyTorch's, read as float64 exactly);
    others become float64 a slice at a time.  float32 ones became float64 too until 2026-12-07: the copy
    cost soft targets a fifth of their time (C = 100 and 1000, 128 MiB of float32 logits, 2 threads)."""
    return dtype.isnative and dtype in (np.dtype(np.float64), np.dtype(np.float32))


def _optional(array, start=None, stop=None, empty=_EMPTY_1D):
    if array is None:
        return empty
    return kernel_input(array if start is None else array[start:stop], np.float64)


def _drive(call, n_rows: int, n_cols: int, block_rows: int, n_sums: int, n_counts: int, first_column: int,
           n_exact: int, copies: bool, on_rows=None) -> Sums:
    """Run ``call(start, stop, nblocks, fsums, icounts, values)`` over all rows and fold the blocks.

    ``on_rows(start, stop, values)``, if given, runs right after each call
    with the per-row values (``ROW_VALUES`` columns) the kernel wrote for
    that call's rows [start, stop) into ``values`` (the clustered errors of
    groups=, the paired sums of compare); without it ``values`` is empty
    and the kernel writes none.  At most BLOCKS_PER_CALL * MAX_BLOCK_ROWS
    rows (256k, 8 MB of values) a call.
    """
    result = Sums(n_exact, n_counts, first_column)
    max_blocks = min(_config.BLOCKS_PER_CALL, max(1, -(-n_rows // block_rows)))
    if copies:
        # Slices converted at the door stay small (see _config.COPY_BYTES_PER_CALL).
        max_blocks = max(1, min(max_blocks, _config.COPY_BYTES_PER_CALL // (8 * block_rows * max(1, n_cols))))
    fsums = np.empty((max_blocks, n_sums), dtype=np.float64)
    icounts = np.empty((max_blocks, n_counts), dtype=np.int64)
    rows_per_call = max_blocks * block_rows
    values = _NO_LOSSES_2D if on_rows is None else np.empty((min(rows_per_call, n_rows), ROW_VALUES))
    for start in range(0, n_rows, rows_per_call):
        stop = min(start + rows_per_call, n_rows)
        nblocks = -(-(stop - start) // block_rows)
        part = values if on_rows is None else values[: stop - start]
        with _accumulate.threads_for(n_rows * n_cols):
            call(start, stop, nblocks, fsums, icounts, part)
        if on_rows is not None:
            on_rows(start, stop, part)
        # Which columns' block sums were not finite (fold_blocks only counts them in all).
        result.nonfinite += (~np.isfinite(fsums[:nblocks, :n_exact])).sum(axis=0)
        KB.fold_blocks(fsums, icounts, nblocks, start, result.sums, result.minmax, result.counts, n_exact, first_column)
    result.rows_seen = n_rows
    return result


def multilabel_float32_math(view, from_logits: bool, precision: str):
    """The (n, C) element kernels' ``float32_math`` (kernels_binary.softplus_parts_in) for a kernel view:
    True (float32 math) for 16- and 32-bit logits with ``precision="input"``, else None (float64 math;
    probabilities always, so that they compile one kernel)."""
    return binary_float32_math(view, precision) if from_logits else None


def accumulate_bce(scores, targets, *, from_logits: bool, row_weight=None, col_weight=None, full_weight=None,
                   pos_weight=None, element_losses=None, on_rows=None, float32_math=None) -> Sums:
    """Sums of element-wise binary cross-entropy of an (n, C) score view against (n, C) targets.

    ``on_rows(start, stop, values)``: see ``_drive`` (kernels_binary.V_* columns).  ``float32_math``: see
    multilabel_float32_math (None: float64 math).
    """
    n_rows, n_cols = scores.shape
    mode = KB.MODE_LOGITS if from_logits else KB.MODE_PROBA
    block_rows = _config.block_rows(n_cols)
    col = _optional(col_weight)
    pos = _optional(pos_weight)
    copies = not scores.flags.c_contiguous or full_weight is not None or not (
        targets.dtype in _TARGET_DTYPES or targets.dtype == np.bool_
    ) or not targets.flags.c_contiguous

    def call(start, stop, nblocks, fsums, icounts, values):
        KB.bce_blocks(
            kernel_input(scores[start:stop]),
            as_kernel_target(targets[start:stop]),
            _optional(row_weight, start, stop),
            col,
            _optional(full_weight, start, stop, _EMPTY_2D),
            pos,
            mode,
            _NO_LOSSES_2D if element_losses is None else element_losses[start:stop],
            values,
            nblocks,
            block_rows,
            fsums,
            icounts,
            float32_math,
        )

    return _drive(call, n_rows, n_cols, block_rows, KB.NUM_SUMS, KB.NUM_COUNTS, KB.FIRST_COLUMNS,
                  KB.EXACT_SUMS, copies, on_rows)


def accumulate_soft(scores, *, targets=None, labels=None, class_weight=None, smoothing: float = 0.0,
                    ignore_label: int = np.iinfo(np.int64).min, sum_tolerance: float = np.inf,
                    row_losses=None, on_rows=None, precision: str = "input") -> Sums:
    """Sums of cross-entropy against soft targets (n, C), or class indices with label smoothing.

    ``on_rows(start, stop, values)``: see ``_drive`` (kernels_soft.V_* columns; soft targets only).
    ``precision``: "input" takes float32 exps for 16- and 32-bit logits, "float64" float64 ones.
    """
    float32_math = _accumulate.float32_math(precision, scores.dtype)
    n_rows, n_cols = scores.shape
    block_rows = _config.block_rows(n_cols)
    weights = _optional(class_weight)
    copies = not scores.flags.c_contiguous or (
        targets is not None and not (_native_soft_target(targets.dtype) and targets.flags.c_contiguous)
    )

    if on_rows is not None and targets is None:
        raise ValueError("per-row values are written for soft targets only")

    def call(start, stop, nblocks, fsums, icounts, values):
        if targets is None:
            target_part, label_part = _EMPTY_2D, kernel_input(labels[start:stop], np.int64)
        else:
            part = targets[start:stop]
            target_part = kernel_input(part) if _native_soft_target(part.dtype) else kernel_input(part, np.float64)
            label_part = kernel_input(np.empty(0, dtype=np.int64))
        KS.soft_blocks(
            kernel_input(scores[start:stop]),
            target_part,
            label_part,
            weights,
            float(smoothing),
            np.int64(ignore_label),
            float(sum_tolerance),
            float32_math,
            _NO_LOSSES_1D if row_losses is None else row_losses[start:stop],
            values,
            nblocks,
            block_rows,
            fsums,
            icounts,
        )

    return _drive(call, n_rows, n_cols, block_rows, KS.NUM_SUMS, KS.NUM_COUNTS, KS.FIRST_COLUMNS,
                  KS.NUM_SUMS, copies, on_rows)


def accumulate_binary_logits(logits, labels, *, top_k, sample_weight=None, row_losses=None, on_rows=None,
                             precision: str = "input", on_bad_labels=None) -> State:
    """Core State (two classes) of 1-D logits of class 1 and 0/1 labels; ``on_rows`` as accumulate_binary_proba.

    ``precision``: as accumulate_matrix's (``"input"``: 16- and 32-bit logits with float32 math).
    ``on_bad_labels``: the labels' range check, when the caller left it to the kernel (called, and
    expected to raise, as soon as a kernel call saw a label other than 0 and 1; with None the labels
    were checked before).
    """
    float32_math = binary_float32_math(logits, precision)
    state = State.empty(2, top_k, from_logits=True, task="binary")
    ks = kernel_input(np.asarray(state.top_k, dtype=np.int64))
    block_rows = BINARY_LOGIT_BLOCK_ROWS

    def call(start, stop, labels_part, weights_part, losses_part, nblocks, fsums, icounts):
        bad_labels = np.empty(fsums.shape[0], dtype=np.int64)  # one entry a block, as fsums
        KB.binary_logits_blocks(
            kernel_input(logits[start:stop]), labels_part, weights_part, ks, losses_part, nblocks, block_rows,
            fsums, icounts, float32_math, bad_labels,
        )
        if on_bad_labels is not None and bad_labels[:nblocks].any():
            on_bad_labels()
            raise AssertionError("the binary logit kernel saw labels other than 0 and 1 that their check accepted")
        if on_rows is not None:
            on_rows(start, stop, labels_part, weights_part)

    return _accumulate._run(call, logits.shape[0], 1, state, block_rows, labels, sample_weight, row_losses)
