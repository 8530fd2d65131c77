"""Python's cyclic garbage collector paused while numba compiles a fastce kernel.

numba's compiler allocates a few hundred thousand container objects for one
kernel (its IR, types, lowering and LLVM wrappers), most of them garbage in
reference cycles by the end.  With the collector running, those allocations
trigger collections throughout the compile, and every collection of the
oldest generation walks every object in the process -- numba's and numpy's
modules included -- to free none of it: 0.45-0.97 s of a door's first call
went to ~300-700 collections (a first float64 ``evaluate`` after float32:
0.89 s of 5.8 s; numba's compile events with ``gc.callbacks`` timing each).
Paused for the compile and collected once after it (the youngest
generation only: everything the compile allocated is there), that garbage
costs 0.16-0.27 s a door (docs/performance.md "Start-up cost").

The pause covers the outermost compile of a fastce function, with the
functions numba compiles inside it (its steps, numpy's implementations); it
is taken only when the collector is on, and the collector is turned back on
when that compile ends, also when it fails.  numba compiles under one
process-wide lock, so its compile events nest properly across threads:
a process-wide depth is enough.  While it lasts (seconds, once per kernel
and numba cache) other Python threads run without cyclic collection;
reference counting still frees everything else.
"""

from __future__ import annotations

import gc
import os
import threading

from numba.core import event

from fastce._compile_log import is_fastce_function


class _PauseWhileCompiling(event.Listener):
    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0  # compile events open, from the outermost one we paused for
        self._paused = False

    def on_start(self, ev) -> None:
        with self._lock:
            if self._depth:
                self._depth += 1
                return
            func = getattr(ev.data.get("dispatcher"), "py_func", None)
            if is_fastce_function(func) and gc.isenabled():
                gc.disable()
                self._paused = True
                self._depth = 1

    def on_end(self, ev) -> None:
        with self._lock:
            if not self._depth:
                return
            self._depth -= 1
            if self._depth or not self._paused:
                return
            self._paused = False
            gc.enable()
        gc.collect(0)  # the compile's garbage, all of it in the youngest generation


    def after_fork_in_child(self) -> None:
        """A fork during a compile in another thread: that compile's end never comes in the child, whose collector
        stayed off for good.  The child's compiles start afresh."""
        self._lock = threading.Lock()
        self._depth = 0
        if self._paused:
            self._paused = False
            gc.enable()


_LISTENER = _PauseWhileCompiling()
event.register("numba:compile", _LISTENER)
os.register_at_fork(after_in_child=_LISTENER.after_fork_in_child)
