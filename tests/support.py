"""Helpers shared by the test modules (imported by name; conftest.py is not importable
when tests/ and benchmarks/ are collected together)."""

from __future__ import annotations

import numpy as np
import pytest

# Score dtypes the contract covers.  bfloat16 comes from ml_dtypes.
try:
    import ml_dtypes

    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BFLOAT16 = None


def score_dtype_params(include_bf16: bool = True):
    """pytest.param list of the score dtypes the contract covers."""
    params = [
        pytest.param(np.dtype(np.float16), id="f16"),
        pytest.param(np.dtype(np.float32), id="f32"),
        pytest.param(np.dtype(np.float64), id="f64"),
    ]
    if include_bf16 and BFLOAT16 is not None:
        params.insert(1, pytest.param(BFLOAT16, id="bf16"))
    return params


def readonly(a: np.ndarray) -> np.ndarray:
    """Mark an array read-only (returns it, for chaining)."""
    a.flags.writeable = False
    return a


# Logits of 16- and 32-bit floats are computed with float32 math: each row's
# loss within 4 float32 ulp of the exact value (DESIGN.md, "precision follows
# the input"), so a mean or sum of losses too.  float64 logits keep float64
# math and the callers' float64 tolerances.
FLOAT32_MATH_RTOL = 4 * 2.0**-23  # 4.8e-7


def loss_rtol(dtype, float64_rtol: float) -> float:
    """The relative tolerance of a cross-entropy from logits of ``dtype`` (float64: ``float64_rtol``)."""
    return float64_rtol if np.dtype(dtype) == np.float64 else max(float64_rtol, FLOAT32_MATH_RTOL)
