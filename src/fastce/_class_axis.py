"""Rows of arrays whose class axis is 1, ``(N, C, d1, ..., dk)``, as bounded ``(rows, C)`` pieces.

PyTorch puts the class axis second, so the C scores of one position
``(n, d1, ..., dk)`` are strided, and ``np.moveaxis(x, 1, -1).reshape(-1, C)``
would copy the whole array.  ``pieces`` walks the positions in C order of
``(N, d1, ..., dk)`` -- the order of ``loss.ravel()`` for a loss of that
shape -- and hands them over a contiguous range of rows at a time: a copy of
at most ``budget`` bytes for a group of samples, or, when one sample alone is
larger, a strided view that the kernel drivers copy a bounded slice at a time
(``_accumulate.kernel_input``).  Memory never grows with N, nor with
``d1 * ... * dk``.
"""

from __future__ import annotations

import math

import numpy as np

from fastce import _accumulate, _accumulate_family, _config
from fastce.task_states import Sums
from fastce.state import State


def pieces(class_arrays, position_arrays=(), *, budget: int | None = None):
    """Yield ``(first_row, class_pieces, position_pieces)`` over all positions, in row order.

    ``class_arrays``: arrays of one shape ``(M, C, *rest)``, each yielded as
    ``(rows, C)``; ``position_arrays``: arrays of shape ``(M, *rest)``, each
    yielded as ``(rows,)``.  Rows ``first_row .. first_row + rows`` are
    positions numbered in C order of ``(M, *rest)``, so consecutive pieces
    tile ``range(M * prod(rest))``.  ``budget``: bytes of one piece (default
    ``_config.COPY_BYTES_PER_CALL``).

    Where the pieces start depends on the shapes only, never on the dtypes
    or the memory layout: each piece's blocks are summed in float64 before
    the exact merge, so the same rows always give the same last bit.
    """
    budget = _config.COPY_BYTES_PER_CALL if budget is None else budget
    first = class_arrays[0]
    n_classes = first.shape[1]
    rest = first.shape[2:]
    per_position = math.prod(rest)
    # 8 bytes an element whatever the dtype: the partition must not depend on it.
    sample_bytes = 8 * per_position * (n_classes * len(class_arrays) + len(position_arrays))
    if sample_bytes <= budget:
        # Whole samples, copied to (rows, C) by reshape -- at most ``budget`` bytes (of float64;
        # fewer for narrower dtypes) -- or viewed, where the classes are already the last axis.
        group = max(1, budget // max(1, sample_bytes))
        for m0 in range(0, first.shape[0], group):
            m1 = m0 + group
            yield (
                m0 * per_position,
                [np.moveaxis(a[m0:m1], 1, -1).reshape(-1, n_classes) for a in class_arrays],
                [a[m0:m1].reshape(-1) for a in position_arrays],
            )
        return
    for m in range(first.shape[0]):
        offset = m * per_position
        if len(rest) == 1:
            # One sample (C, d1) is larger than the budget: a strided (d1, C) view, which the kernel
            # drivers copy to C order one bounded slice at a time.
            yield offset, [a[m].T for a in class_arrays], [a[m] for a in position_arrays]
            continue
        # Walk the first trailing axis: samples (C, d2, ...) of the (d1, C, d2, ...) array.
        for row, sub_class, sub_position in pieces(
            [np.moveaxis(a[m], 1, 0) for a in class_arrays], [a[m] for a in position_arrays], budget=budget
        ):
            yield offset + row, sub_class, sub_position


def accumulate_matrix(scores, labels, *, row_losses=None, **options) -> State:
    """``_accumulate.accumulate_matrix`` of (N, C, d1, ...) scores and (N, d1, ...) labels.

    ``row_losses``: a C-contiguous (N, d1, ...) float64 array to fill, or None.
    The state numbers rows in C order of (N, d1, ...).
    """
    flat_losses = None if row_losses is None else row_losses.reshape(-1)
    state = None
    for row, (piece,), (label_piece,) in pieces([scores], [labels]):
        losses = None if flat_losses is None else flat_losses[row : row + piece.shape[0]]
        part = _accumulate.accumulate_matrix(piece, label_piece, row_losses=losses, **options)
        state = part if state is None else state.merge(part)
        del piece, label_piece  # before the next piece is made: one copy alive at a time
    return state


def accumulate_soft(scores, *, targets=None, labels=None, row_losses=None, **options) -> Sums:
    """``_accumulate_family.accumulate_soft`` of (N, C, d1, ...) scores and soft ``targets`` of that shape,
    or (N, d1, ...) class ``labels``; rows and ``row_losses`` as in :func:`accumulate_matrix`."""
    flat_losses = None if row_losses is None else row_losses.reshape(-1)
    sums = None
    class_arrays = [scores] if targets is None else [scores, targets]
    position_arrays = [labels] if targets is None else []
    for row, class_pieces, position_pieces in pieces(class_arrays, position_arrays):
        piece = class_pieces[0]
        losses = None if flat_losses is None else flat_losses[row : row + piece.shape[0]]
        part = _accumulate_family.accumulate_soft(
            piece,
            targets=None if targets is None else class_pieces[1],
            labels=None if targets is not None else position_pieces[0],
            row_losses=losses,
            **options,
        )
        sums = part if sums is None else sums.merge(part)
        del piece, class_pieces, position_pieces  # one copy alive at a time
    return sums
