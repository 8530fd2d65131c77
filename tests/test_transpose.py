"""fastce._transpose: the tiled, threaded copy of column-major slices to C order gives numpy's copy, bit for bit, for
every dtype and shape, and the doors that take PyTorch's class-axis-1 layout give the same numbers through it."""

from __future__ import annotations

import numpy as np
import pytest

import fastce
from fastce import _accumulate, _transpose
from support import BFLOAT16

DTYPES = [np.int8, np.float16, np.float32, np.float64, np.uint64] + ([BFLOAT16] if BFLOAT16 is not None else [])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows, cols", [(700, 131), (1031, 64), (40_000, 2), (257, 1000)])
def test_column_major_views_copy_to_numpys_bits(dtype, rows, cols):
    """F-ordered arrays, transposed C-ordered samples and row slices of both (not multiples of the tile or the
    band): the copy equals numpy's, bit for bit (NaN payloads, -0.0 and all), C-ordered and aligned."""
    rng = np.random.default_rng(rows + cols)
    bits = _transpose._UNSIGNED[np.dtype(dtype).itemsize]
    raw = rng.integers(0, np.iinfo(bits).max, size=(rows, cols), dtype=bits, endpoint=True)
    values = raw.view(dtype)
    views = {"F order": np.asfortranarray(values), "a sample's transpose": np.ascontiguousarray(values.T).T}
    for name, view in list(views.items()):
        views[name + ", rows 3.."] = view[3:]
        views[name + ", middle rows"] = view[rows // 3: rows - 5]
    for name, view in views.items():
        if view.size < _transpose.MIN_ENTRIES:
            continue
        assert _transpose.column_major(view), name
        copy = _transpose.copy_to_c_order(view)
        assert copy.flags.c_contiguous and copy.flags.aligned and copy.dtype == view.dtype
        assert np.array_equal(copy.view(bits), np.array(view, order="C").view(bits)), name
        kernel_view = _accumulate.kernel_input(view)
        assert not kernel_view.flags.writeable and np.array_equal(kernel_view.view(bits), copy.view(bits))


def test_row_major_and_small_views_are_not_column_major():
    a = np.zeros((1000, 100), dtype=np.float32)
    assert not _transpose.column_major(a)  # C order: no copy needed
    assert not _transpose.column_major(a[:, ::2])  # strided rows: numpy's copy
    assert not _transpose.column_major(np.asfortranarray(a[:100]))  # below MIN_ENTRIES
    assert _transpose.column_major(np.asfortranarray(a))


def test_class_axis_one_scores_read_through_the_tiles_give_the_last_axis_numbers():
    """PyTorch's (N, C, d) layout with samples larger than a copy budget (each a transposed view the drivers copy
    a slice at a time, now in tiles) gives the same bits as the same scores with the class axis last."""
    rng = np.random.default_rng(9)
    n, c, d = 3, 70, 9000  # a sample: 70 x 9000 float32, over the 4 MiB budget in float64
    last = rng.standard_normal((n, d, c)).astype(np.float32)
    first = np.ascontiguousarray(np.moveaxis(last, -1, 1))
    labels = rng.integers(0, c, (n, d))
    in_place = np.moveaxis(last, -1, 1)  # the same layout as a view of the class-last array: read in place
    assert fastce.cross_entropy(first, labels) == fastce.cross_entropy(in_place, labels)
    np.testing.assert_array_equal(fastce.cross_entropy(first, labels, reduction="none"),
                                  fastce.cross_entropy(in_place, labels, reduction="none"))
    assert fastce.evaluate(labels, logits=last).to_json() == fastce.evaluate(
        labels.reshape(-1), logits=np.asfortranarray(last.reshape(-1, c))).to_json()
