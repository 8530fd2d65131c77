"""Run a kernel's tasks on a pool of Python threads (the kernels release the GIL).

Why not numba's ``prange``: a ``parallel=True`` function is compiled twice
over (the parfor passes, then the whole kernel linked and optimised again
inside the generated gufunc), which cost tens of seconds of every cold start
(``benchmarks/cold_start.py``).  The kernels are plain ``nogil`` functions
instead, each handling the tasks ``first, first + step, ...`` of a call, and
this module hands one such stride to each thread.  Which thread runs a task
changes nothing in its results (each task writes its own blocks), so results
stay independent of the thread count.

The thread count is numba's (``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``),
read in the calling thread, so the documented way of choosing it still holds.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numba

_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0
_POOL_LOCK = threading.Lock()


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


def strides(n_tasks: int) -> int:
    """How many strides run_tasks runs for ``n_tasks`` tasks: its ``first`` values are 0 .. strides - 1.

    For callers that give each stride buffers of its own.
    """
    return max(1, min(numba.get_num_threads(), n_tasks))


def run_tasks(kernel, args: tuple, n_tasks: int) -> None:
    """``kernel(*args, first, step)`` for first in range(threads), step = threads: every task once.

    The calling thread runs the first stride; it returns when every stride is
    done, and raises what a stride raised (the calling thread's error first).
    """
    threads = strides(n_tasks)
    if threads == 1:
        kernel(*args, 0, 1)
        return
    futures = [_pool().submit(kernel, *args, first, threads) for first in range(1, threads)]
    try:
        kernel(*args, 0, threads)
    finally:
        wait(futures)  # never leave a stride running on buffers the caller is about to reuse
    for future in futures:
        future.result()
