"""Kernel steps (fastce._config.kernel_step): compiled without a Python entry, and refusing Python calls.

numba compiles a step without its CPython wrapper; its Python entry point is
then a null pointer, so a Python call must raise instead of jumping to it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from numba import njit

from fastce import _config, kernels


@_config.kernel_step(**dict(_config.LEAF_OPTIONS, cache=False))  # no cache files beside the tests
def _twice(values, i):
    return 2.0 * values[i]


@njit
def _call_twice(values, i):
    return _twice(values, i)


def test_a_step_runs_from_compiled_code_and_refuses_python():
    values = np.array([1.5, -3.0])
    assert _call_twice(values, 1) == -6.0
    with pytest.raises(TypeError, match=r"test_kernel_steps\._twice is a step of fastce's kernels.*@njit"):
        _twice(values, 1)


def test_a_step_is_compiled_without_entry_wrappers():
    _call_twice(np.array([1.0]), 0)
    (result,) = _twice.overloads.values()
    ir = result.library.get_llvm_str()
    assert re.search(rf"^define [^\n]*@{re.escape(result.fndesc.mangled_name)}\(", ir, re.M)  # the step, which callers link
    assert result.fndesc.llvm_cpython_wrapper_name not in ir
    assert result.fndesc.llvm_cfunc_wrapper_name not in ir
    # a plain njit function has both: the check above can fail
    (plain,) = _call_twice.overloads.values()
    assert plain.fndesc.llvm_cpython_wrapper_name in plain.library.get_llvm_str()


def test_the_kernels_steps_refuse_python_calls():
    # The score kernels' row and block steps, as a user reaching into the module would find them.
    for step in (kernels._finish_block, kernels._walk_columns, kernels._logits_row, kernels.exp_sums):
        assert isinstance(step, _config.KernelStep)
        with pytest.raises(TypeError, match=rf"{step.py_func.__qualname__} is a step of fastce's kernels"):
            step()  # (a plain dispatcher would raise a TypeError too, without these words)
