"""Run a kernel's tasks on a pool of Python threads (the kernels release the GIL).

Why not numba's ``prange``: a ``parallel=True`` function is compiled twice
over (the parfor passes, then the whole kernel linked and optimised again
inside the generated gufunc), which cost tens of seconds of every cold start
(``benchmarks/cold_start.py``).  The kernels are plain ``nogil`` functions
instead, called once on each thread (a stride: ``first`` names it, and the
buffers it owns); the kernels that take a ``claims`` counter then claim
their tasks one at a time, as each thread becomes free (see claim), and
the others (the class folds, a task per class range) take the tasks
``first, first + step, ...``.  Which thread runs a task changes nothing in
its results (each task writes its own blocks, or adds exactly), so results
stay independent of the thread count.

The thread count is numba's (``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``),
read in the calling thread, so the documented way of choosing it still holds;
but fastce never starts numba's threading layer itself (see thread_count).
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0
_POOL_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    # A fork while another thread held the lock left it held in the child for good.
    global _POOL_LOCK
    _POOL_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _pool() -> ThreadPoolExecutor:
    """The process's pool, made at first use, and made again in a child process after a fork.

    A forked child inherits the pool object but not its threads: submitting
    to it there would wait forever (multiprocessing's default start method
    on Linux forks).
    """
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():
            # One worker fewer than numba's maximum: the calling thread runs a stride too.
            _POOL = ThreadPoolExecutor(max_workers=max(1, numba.config.NUMBA_NUM_THREADS - 1),
                                       thread_name_prefix="fastce")
            _POOL_PID = os.getpid()
        return _POOL


_SERIAL = threading.local()  # .on: this Python thread's fastce calls run on it alone (see serial)


def _layer_started() -> bool:
    try:
        from numba.np.ufunc import parallel
    except ImportError:  # pragma: no cover - numba internals moved
        return True
    return bool(getattr(parallel, "_is_initialized", True))


def thread_count() -> int:
    """The threads a fastce call runs on: 1 inside ``serial``; numba's count for the calling thread
    (``numba.set_num_threads``) once numba's threading layer runs; ``NUMBA_NUM_THREADS`` before.

    ``numba.get_num_threads`` starts numba's threading layer, which fastce
    does not otherwise use (its strides run on Python threads): started by
    fastce's first call, GNU OpenMP's layer then killed any forked child of
    the host that ran its own ``parallel=True`` code ("fork() called from a
    process already using GNU OpenMP"), and fixed the layer the host had not
    chosen yet.  Before the host starts the layer, nothing can have set a
    count other than NUMBA_NUM_THREADS.
    """
    if getattr(_SERIAL, "on", False):
        return 1
    return numba.get_num_threads() if _layer_started() else numba.config.NUMBA_NUM_THREADS


@contextlib.contextmanager
def serial():
    """This Python thread's fastce calls on one thread while it lasts (numba's own count untouched: a
    KeyboardInterrupt between setting and restoring numba's count had left the host on one thread)."""
    previous = getattr(_SERIAL, "on", False)
    try:
        _SERIAL.on = True
        yield
    finally:
        _SERIAL.on = previous


def strides(n_tasks: int) -> int:
    """How many strides run_tasks runs for ``n_tasks`` tasks: its ``first`` values are 0 .. strides - 1.

    For callers that give each stride buffers of its own.
    """
    return max(1, min(thread_count(), n_tasks))


def run_tasks(kernel, args: tuple, n_tasks: int) -> None:
    """``kernel(*args, first, step)`` for first in range(threads), step = threads: every task once.

    The calling thread runs the first stride; it returns when every stride is
    done, and raises what a stride raised (the calling thread's error first).
    """
    threads = strides(n_tasks)
    if threads == 1:
        kernel(*args, 0, 1)
        return
    futures = []
    try:
        futures.extend(_pool().submit(kernel, *args, first, threads) for first in range(1, threads))
        kernel(*args, 0, threads)
    finally:
        _wait_all(futures)
    for future in futures:
        future.result()


def _wait_all(futures) -> None:
    """Wait for every stride, a KeyboardInterrupt meanwhile held until they are done, then raised: never leave
    a stride running on buffers the caller is about to reuse (an interrupt inside wait() had left them)."""
    interrupted = None
    while True:
        try:
            wait(futures)
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def each_chunk(n_chunks: int, work) -> None:
    """``work(chunk)`` for chunk in range(n_chunks), a stride of chunks per thread, under the process's lock of
    parallel calls (fastce._config.PARALLEL_LOCK): for Python work that releases the GIL (numpy's reductions,
    argmax and copies of bounded chunks of a large array)."""
    from fastce import _config

    def stride(first, step):
        for chunk in range(first, n_chunks, step):
            work(chunk)

    with _config.PARALLEL_LOCK:
        run_tasks(stride, (), strides(n_chunks))


# Tasks per thread of a call whose tasks are claimed (see claim): small enough that the threads finish a call
# together when one core runs slower (with 4, the faster thread still waited ~0.7 ms a call at C = 100).
TASKS_PER_THREAD = 16


def blocks_per_task(nblocks: int) -> int:
    """Blocks per claimed task for a call of ``nblocks`` blocks (results do not depend on it)."""
    return max(1, -(-nblocks // (TASKS_PER_THREAD * thread_count())))


def new_claims():
    """A fresh task counter for one call of a kernel that claims its tasks (see claim)."""
    return np.zeros(1, dtype=np.int64)


@intrinsic
def claim(typingctx, claims):
    """The next task of a call: ``claims[0]``, incremented atomically for the next caller.

    Kernels whose tasks each write only their own blocks take them this way
    (``task = claim(claims)`` until it reaches the task count) instead of the
    fixed stride ``first_task, first_task + task_step, ...``: a thread on a
    slower core then takes fewer tasks.  On this project's 2-vCPU VMs one
    vCPU often runs 10-30% slower than the other for seconds at a time (a
    shared host), and with fixed strides the faster thread waited for the
    slower one at the end of every call.  Which thread runs a task changes
    nothing in the results.
    """
    if not (isinstance(claims, types.Array) and claims.ndim == 1 and claims.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        view = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", view.data, ir.Constant(ir.IntType(64), 1), "monotonic")

    return types.int64(claims), codegen
