"""Soft targets of float32 (PyTorch's) are read as they are, float64 too; other dtypes become float64 a slice at
a time.  Every dtype gives the bits of the same targets in float64 (a float32 widens exactly), in both soft
kernels (rows of up to 48 classes down their columns, longer ones row by row), with weights, label smoothing,
special values and any memory layout.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastce
from fastce import _accumulate_family
from fastce import kernels_soft as KS

# Rows that do not sum to 1 (zeroed, or float32 sums read against float64's tolerance) warn: not the point here.
pytestmark = pytest.mark.filterwarnings("ignore:.*do not sum to 1:fastce.errors.FastCEWarning")


def _targets(rng, n, c, dtype):
    t = rng.random((n, c))
    t[:, ::3] = 0.0
    t /= t.sum(axis=1, keepdims=True)
    return t.astype(dtype)


def _bits(values):
    return np.asarray(values, dtype=np.float64).view(np.uint64)


@pytest.mark.parametrize("n_classes", [2, 7, 33, 48, 49, 100, 1025])
@pytest.mark.parametrize("case", ["plain", "weights", "smoothing", "specials", "fortran", "float64 logits"])
def test_float32_targets_give_the_bits_of_float64_ones(n_classes, case):
    rng = np.random.default_rng(n_classes)
    logits = (rng.standard_normal((400, n_classes)) * 4).astype(np.float32)
    targets = _targets(rng, 400, n_classes, np.float32)
    options = {}
    if case == "weights":
        options["weight"] = rng.random(n_classes)
        options["weight"][::4] = 0.0
    if case == "smoothing":
        options["label_smoothing"] = 0.2
    if case == "specials":
        targets[3, 0] = 1e-40  # subnormal in float32
        targets[5] = 0.0
        targets[6, -1] = -0.0
        logits[7, ::2] = -np.inf
    if case == "fortran":
        targets = np.asfortranarray(targets)
    if case == "float64 logits":
        logits = logits.astype(np.float64)
    wide = targets.astype(np.float64)
    got = fastce.cross_entropy(logits, targets, reduction="none", **options)
    want = fastce.cross_entropy(logits, wide, reduction="none", **options)
    np.testing.assert_array_equal(_bits(got), _bits(want))
    if case in ("plain", "specials"):
        assert fastce.evaluate(targets, logits=logits, task="soft").to_json() == fastce.evaluate(
            wide, logits=logits, task="soft").to_json()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_other_target_dtypes_become_float64(dtype):
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dtype = ml_dtypes.bfloat16
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((300, 60)).astype(np.float32)
    targets = np.eye(60)[rng.integers(0, 60, 300)].astype(dtype)
    got = fastce.cross_entropy(logits, targets, reduction="none")
    want = fastce.cross_entropy(logits, targets.astype(np.float64), reduction="none")
    np.testing.assert_array_equal(_bits(got), _bits(want))


@pytest.mark.parametrize("dtype, kernel_dtype", [(np.float32, np.float32), (np.float64, np.float64),
                                                 (np.float16, np.float64), (">f4", np.float64)])
def test_the_kernels_read_float32_and_float64_targets_in_place(monkeypatch, dtype, kernel_dtype):
    seen = []
    original = KS.soft_blocks

    def spy(scores, targets, *args):
        seen.append((targets.dtype, targets.flags.c_contiguous))
        return original(scores, targets, *args)

    monkeypatch.setattr(KS, "soft_blocks", spy)
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((200, 60)).astype(np.float32)
    targets = _targets(rng, 200, 60, dtype)
    _accumulate_family.accumulate_soft(logits, targets=targets)
    assert seen and all(seen_dtype == np.dtype(kernel_dtype) and contiguous for seen_dtype, contiguous in seen)
