"""The hot loops compile to packed SIMD instructions (checked in the generated assembly).

A change that makes one of these loops scalar (a branch, a wraparound index,
an aliasing store) costs 2-8x in speed and no test of the numbers would see
it.  Checked on the machine running the tests, for whichever vector ISA it has
(AVX2 or AVX-512: ymm or zmm registers); skipped where numba targets neither.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastce
from fastce import compare_kernels, kernels

PACKED_DOUBLE = re.compile(r"\bv(?:add|mul|sub|div|max|min|fmadd\d+|fnmadd\d+|blendv)pd\s+.*%[yz]mm")


def _vector_isa() -> bool:
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()  # what numba compiles for (it targets the host CPU)
    return bool(features.get("avx2") or features.get("avx512f"))


def _asm(dispatcher) -> str:
    return "\n".join(dispatcher.inspect_asm().values())


@pytest.fixture(scope="module")
def compiled():
    """Every kernel below compiled for float32 scores (short rows, long rows, logits and probabilities)."""
    rng = np.random.default_rng(0)
    for c in (10, 100):
        x = rng.standard_normal((600, c)).astype(np.float32)
        y = rng.integers(0, c, 600)
        fastce.evaluate(y, logits=x)
        fastce.compare(y, logits={"a": x, "b": x[::-1].copy()})
    return True


@pytest.mark.parametrize(
    "name",
    [
        "_exp_sums",  # long rows: exp of every logit
        "_exp_columns",  # short rows: exp down the columns of a block
        "_losses",  # log / log1p of a block's rows
        "_block_moments",  # the error bars' second moments
    ],
)
def test_score_kernel_hot_loops_are_packed_simd(compiled, name):
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    asm = _asm(getattr(kernels, name))
    assert PACKED_DOUBLE.search(asm), f"{name}: no packed float64 instruction on ymm/zmm registers"


@pytest.mark.parametrize("name", ["_pair_sums", "_pair_table"])
def test_compare_pair_loops_are_packed_simd(compiled, name):
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    asm = _asm(getattr(compare_kernels, name))
    assert PACKED_DOUBLE.search(asm), f"{name}: no packed float64 instruction on ymm/zmm registers"
