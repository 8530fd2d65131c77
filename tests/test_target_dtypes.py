"""Targets the kernels read as they are, and the others, which become float64 a slice at a time.

Soft targets of float32 (PyTorch's) and float64; multi-label targets of bool (as uint8), uint8, int64
(scikit-learn's indicator matrices), float32 and float64.  Every dtype gives the bits of the same targets
in float64 (each widens exactly): both soft kernels (rows of up to 48 classes down their columns, longer
ones row by row), both multi-label paths (the fast one and the weighted general one), with weights, label
smoothing, special values, bad targets and any memory layout.
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


def _multilabel(rng, n, c):
    logits = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    return logits, rng.random((n, c)) < 0.3


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int64, np.int32, np.float32])
@pytest.mark.parametrize("n_classes", [1, 3, 8, 100])
@pytest.mark.parametrize("case", ["plain", "row weights", "pos weight", "fortran", "diagnose"])
def test_multilabel_targets_of_every_dtype_give_the_bits_of_float64_ones(dtype, n_classes, case):
    rng = np.random.default_rng(n_classes)
    logits, hits = _multilabel(rng, 500, n_classes)
    logits[7, 0] = -np.inf  # an infinite loss where its target is 1
    hits[7, 0] = True
    targets = hits.astype(dtype)
    if case == "fortran":
        targets = np.asfortranarray(targets)
    wide = hits.astype(np.float64)
    if case == "diagnose":
        got = fastce.diagnose(targets, logits=logits, task="multilabel").to_json()
        want = fastce.diagnose(wide, logits=logits, task="multilabel").to_json()
        assert got == want
        return
    options = {}
    if case == "row weights":
        options["sample_weight"] = rng.random(500)
    got = fastce.evaluate(targets, logits=logits, task="multilabel", **options).to_json()
    want = fastce.evaluate(wide, logits=logits, task="multilabel", **options).to_json()
    assert got == want
    if case == "pos weight":
        weight = rng.random(n_classes) + 0.5
        got = fastce.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight, reduction="none")
        want = fastce.binary_cross_entropy_with_logits(logits, wide, pos_weight=weight, reduction="none")
        np.testing.assert_array_equal(_bits(got), _bits(want))


@pytest.mark.parametrize("bad", [2, -1])
def test_a_bad_int64_target_is_refused_as_a_float64_one_is(bad):
    rng = np.random.default_rng(3)
    logits, hits = _multilabel(rng, 300, 8)
    targets = hits.astype(np.int64)
    targets[17, 5] = bad
    errors = []
    for t in (targets, targets.astype(np.float64)):
        with pytest.raises(Exception) as raised:
            fastce.evaluate(t, logits=logits, task="multilabel")
        errors.append((type(raised.value), str(raised.value)))
    assert errors[0] == errors[1]
    assert "17" in errors[0][1]


@pytest.mark.parametrize("dtype, kernel_dtype", [(np.bool_, np.uint8), (np.uint8, np.uint8), (np.int64, np.int64),
                                                 (np.float32, np.float32), (np.float64, np.float64),
                                                 (np.int32, np.float64), (np.float16, np.float64)])
def test_the_multilabel_kernels_read_these_targets_in_place(dtype, kernel_dtype):
    targets = np.ones((4, 3), dtype=dtype)
    part = _accumulate_family.as_kernel_target(targets)
    assert part.dtype == np.dtype(kernel_dtype) and part.flags.c_contiguous
