"""Kernel steps (fastce._config.kernel_step): compiled without a Python entry, and refusing Python calls.

numba compiles a step without its CPython wrapper; its Python entry point is
then a null pointer, so a Python call must raise instead of jumping to it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

from fastce import _config, kernels
from fastce._vecmath import inline_into_callers


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


def test_a_step_has_no_machine_code_of_its_own():
    # Its callers link its IR and compile it into their own code; the step itself is never code-generated.
    values = np.array([1.5, -3.0])
    assert _call_twice(values, 0) == 3.0
    (result,) = _twice.overloads.values()
    (plain,) = _call_twice.overloads.values()
    # The modules numba's JIT engine compiles to machine code (llvmlite's ExecutionEngine keeps them): the
    # caller's is there (the check can fail), the step's never is.
    compiled = plain.library._codegen._engine._ee._modules
    assert plain.library._final_module in compiled
    assert result.library._final_module not in compiled
    assert plain.library.get_pointer_to_function(plain.fndesc.mangled_name) != 0


@_config.kernel_step(**dict(_config.LEAF_OPTIONS, cache=False))
def _inlined_twice(values, i):
    inline_into_callers()
    return 2.0 * values[i]


@njit
def _call_both(values, i):
    return _twice(values, i) + _inlined_twice(values, i)


def test_only_steps_inlined_into_loops_keep_their_module_optimisation():
    # Callers optimise the module they link a step into; a row helper inlined into a caller's loop is
    # optimised beforehand too (the caller's loop vectorises over the optimised body).
    assert _call_both(np.array([1.0, 4.0]), 1) == 16.0
    (inlined,) = _inlined_twice.overloads.values()
    (apart,) = _twice.overloads.values()
    assert inlined.library.module_passes and not apart.library.module_passes


_STEP_MODULE = '''
import numpy as np
from numba import njit
from fastce import _config, kernels

@_config.kernel_step(**_config.LEAF_OPTIONS)
def scaled_sum(values, factor):
    total = 0.0
    for v in values:
        total += factor * v
    return total

@njit(cache=True)
def first_caller(values):
    return scaled_sum(values, 2.0)

@njit(cache=True)
def second_caller(values):
    return scaled_sum(values, 2.0) + 1.0
'''

_CALL = '''
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import stepmod
values = np.arange(5.0)
caller = stepmod.first_caller if sys.argv[2] == "first" else stepmod.second_caller
print("RESULT", caller(values))
print("STEP", dict(stepmod.scaled_sum.stats.cache_hits), dict(stepmod.scaled_sum.stats.cache_misses))
(step,) = stepmod.scaled_sum.overloads.values()
(call,) = caller.overloads.values()
engine = call.library._codegen._engine._ee._modules  # the modules compiled to machine code (see above)
print("ENGINE", step.library._final_module in engine, call.library._final_module in engine)
'''


def test_a_cached_step_is_linked_into_a_new_caller_in_another_process(tmp_path):
    # The step's cache entry holds its IR (it has no object code): a caller compiled in a later process
    # loads the step from the cache and links it.
    (tmp_path / "stepmod.py").write_text(_STEP_MODULE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")

    def run(which):
        proc = subprocess.run([sys.executable, "-c", _CALL, str(tmp_path), which], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
        return float(lines["RESULT"]), lines["STEP"], lines["ENGINE"]

    result, stats, engine = run("first")
    assert result == 20.0
    assert stats.startswith("{} ")  # compiled here, no cache hit
    assert engine == "False True"
    result, stats, engine = run("second")
    assert result == 21.0
    assert stats.startswith("{(") and stats.endswith("{}")  # loaded from the cache, not compiled
    # Nor compiled to machine code as it loads: the JIT engine would then resolve the new caller's call
    # to that code (the step's IR as cached, unoptimised) instead of the caller's optimised copy: a
    # kernel compiled for a new signature in such a process ran 4-8x slower (see _config.StepCacheImpl).
    assert engine == "False True"
