"""The cyclic garbage collector paused while numba compiles a fastce kernel (fastce._compile_gc)."""

from __future__ import annotations

import gc

import numba
import pytest
from numba import njit
from numba.core.extending import overload

import fastce  # noqa: F401  (registers the listener)

# gc.isenabled() seen while numba types a call to a probe (its overload runs inside the compile).
_seen: list = []


def _new_probe():
    """A function with an overload of its own: numba keeps an overload's typing per argument type, so each
    test types a fresh one."""

    def gc_probe(x):  # pragma: no cover - replaced by the overload below
        return x

    @overload(gc_probe)
    def _gc_probe_overload(x):
        _seen.append(gc.isenabled())
        if isinstance(x, numba.types.Boolean):
            raise numba.errors.TypingError("gc_probe refuses booleans")  # a compile that fails
        return lambda x: x

    return gc_probe


def _kernel(module):
    """A new njit function of ``module`` calling a new probe: its first call compiles it."""
    namespace = {"__name__": module, "gc_probe": _new_probe()}
    exec("def kernel(x):\n    return gc_probe(x) + 1\n", namespace)
    return njit(namespace["kernel"])


@pytest.fixture
def collector_on():
    _seen.clear()
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_paused_while_a_fastce_kernel_compiles_and_on_again_after(collector_on):
    kernel = _kernel("fastce.probe")
    assert kernel(41) == 42
    assert _seen == [False]
    assert gc.isenabled()
    assert kernel(1) == 2  # no compile: nothing typed
    assert _seen == [False]


def test_on_again_after_a_compile_that_fails(collector_on):
    kernel = _kernel("fastce.probe")
    with pytest.raises(numba.errors.TypingError, match="gc_probe refuses booleans"):
        kernel(True)
    assert _seen and not any(_seen)
    assert gc.isenabled()
    assert kernel(1.5) == 2.5  # a later compile pauses it again
    assert not any(_seen) and gc.isenabled()


@pytest.mark.parametrize("module", ["somebody_else", None])
def test_other_code_compiles_with_the_collector_as_it_was(collector_on, module):
    assert _kernel(module)(3) == 4
    assert _seen == [True]
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_user_stays_off(collector_on):
    gc.disable()
    assert _kernel("fastce.probe")(3) == 4
    assert _seen == [False]
    assert not gc.isenabled()


def test_a_fastce_kernel_compiled_inside_other_code_pauses_for_its_own_compile(collector_on):
    """The outermost compile is somebody else's; the fastce kernel it calls compiles inside it, paused, and the
    collector is on again for the rest of the outer compile."""
    inner = _kernel("fastce.probe")
    namespace = {"__name__": "somebody_else", "inner": inner, "gc_probe": _new_probe()}
    exec("def outer(x):\n    return inner(x) + gc_probe(x)\n", namespace)
    assert njit(namespace["outer"])(2) == 5
    # The outer compile types inner first (paused), then its own gc_probe call (not paused).
    assert _seen[0] is False and _seen[-1] is True
    assert gc.isenabled()


def test_still_paused_after_the_functions_it_compiles_inside(collector_on):
    """numba compiles the functions a kernel calls inside its compile (nested compile events): the collector
    stays paused until the outermost one ends."""
    step = njit(lambda x: x * 2)
    namespace = {"__name__": "fastce.probe", "step": step, "gc_probe": _new_probe()}
    exec("def kernel(x):\n    return gc_probe(step(x))\n", namespace)
    assert njit(namespace["kernel"])(3) == 6
    assert _seen == [False]
    assert gc.isenabled()
