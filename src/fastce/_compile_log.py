"""Say so when a fastce kernel must be compiled (first use with an empty numba cache).

A cold compile takes seconds to tens of seconds (``benchmarks/cold_start.py``);
without a word the API looks hung and the CLI's bar sits at 0%.  numba fires
a ``numba:compile`` event only for a real compile (a cache hit fires none), so
a listener on it says exactly when the wait happens:

- the library logs it on the ``fastce`` logger (INFO: silent unless the user
  configures logging), once at the start and once at the end of each
  top-level kernel compile;
- ``notices(callback)`` hands each start message to a callback for the
  duration of a ``with`` block (the CLI prints ``CLI_NOTICE`` above its
  progress bar at the first one).

Nested compiles (a kernel's callees) are part of the top-level one and are
not reported apart.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from numba.core import event

logger = logging.getLogger("fastce")

_callbacks: list = []
_callbacks_lock = threading.Lock()


def _input_kind(args) -> str:
    """The kernel's first argument, in words: its dtype and dimensions (the scores, for the score kernels)."""
    if not args:
        return "no input"
    dtype, ndim = getattr(args[0], "dtype", None), getattr(args[0], "ndim", None)
    if dtype is None:
        return str(args[0])
    name = str(dtype)
    # float16 and bfloat16 scores reach the kernels as their 16-bit patterns.
    name = "16-bit float (float16 / bfloat16)" if name in ("uint16", "int16") else name
    return f"{name} {ndim}-D input" if ndim is not None else name


def _path(func, args) -> str:
    """The path a general kernel is compiled for, from its mode and math arguments (kernels.general_tokens,
    whose types pick it): one kernel compiles again for probabilities or float64 math, and the log says why."""
    try:
        names = func.__code__.co_varnames[:func.__code__.co_argcount]
    except AttributeError:
        return ""
    types_of = dict(zip(names, args))
    if "logits" not in types_of or "float32_math" not in types_of:
        return ""
    if _is_none(types_of["logits"]):
        return ", probabilities"
    return ", logits in float64 math" if _is_none(types_of["float32_math"]) else ", logits in float32 math"


def _is_none(numba_type) -> bool:
    return str(numba_type) in ("none", "NoneType")


def is_fastce_function(func) -> bool:
    """Whether numba's compiled ``func`` is one of fastce's (its module under ``fastce.``); also fastce._compile_gc's
    test.  Any function may be compiled while fastce is imported, some with a __module__ of None (exec'd code)."""
    return str(getattr(func, "__module__", None) or "").startswith("fastce.")


def start_message(kernel: str, args, path: str = "") -> str:
    return f"compiling fastce kernel {kernel} ({_input_kind(args)}{path}), first use with this numba cache"


# What the CLI shows, once per run, at the first compile (the log has each kernel).
CLI_NOTICE = "compiling kernels (first use with this numba cache, once; `fastce warmup` does it ahead of time)"


class _Listener(event.Listener):
    def __init__(self):
        self._local = threading.local()

    def _stack(self) -> list:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def on_start(self, ev) -> None:
        stack = self._stack()
        dispatcher = ev.data.get("dispatcher")
        func = getattr(dispatcher, "py_func", None)
        stack.append(time.perf_counter())
        if len(stack) != 1 or not is_fastce_function(func):
            return
        args = ev.data.get("args") or ()
        message = start_message(func.__name__, args, _path(func, args))
        logger.info(message)
        with _callbacks_lock:
            callbacks = list(_callbacks)
        for callback in callbacks:
            callback(message)

    def on_end(self, ev) -> None:
        stack = self._stack()
        if not stack:  # pragma: no cover - an end without a start (a listener registered mid-compile)
            return
        started = stack.pop()
        func = getattr(ev.data.get("dispatcher"), "py_func", None)
        if not stack and is_fastce_function(func):
            logger.info("compiled fastce kernel %s in %.1f s", func.__name__, time.perf_counter() - started)


_LISTENER = _Listener()
event.register("numba:compile", _LISTENER)


@contextlib.contextmanager
def notices(callback):
    """Call ``callback(message)`` when a fastce kernel starts compiling, inside this block."""
    with _callbacks_lock:
        _callbacks.append(callback)
    try:
        yield
    finally:
        with _callbacks_lock:
            _callbacks.remove(callback)
