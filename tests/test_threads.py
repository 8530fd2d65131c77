"""Results are bit-identical for any numba thread count, across repeated calls,
and when fastce is called from many Python threads at once."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest

import fastce
from fastce import _config, _parallel


def _problems():
    rng = np.random.default_rng(2024)
    out = []
    # C <= 32 and C > 32 take different row walks in the kernel; N gives many blocks
    # (and N * C is above _config.SERIAL_BELOW_ELEMENTS, so the kernels really run in parallel).
    for n, c, dtype in ((60_000, 10, np.float32), (20_000, 50, np.float64), (50_000, 3, np.float64)):
        x = rng.normal(scale=4.0, size=(n, c)).astype(dtype)
        y = rng.integers(0, c, size=n)
        w = rng.uniform(0, 2, size=n)
        out.append((x, y, w))
    return out


PROBLEMS = _problems()


def _all_results(x, y, w):
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return {
        # only k below the class count: a larger one warns (TopKWarning) and is 1 anyway
        "logits": fastce.evaluate(y, logits=x, sample_weight=w, top_k=[k for k in (1, 2, 5) if k < x.shape[1]]).to_dict(),
        "proba": fastce.evaluate(y, proba=p, top_k=(1, 3) if x.shape[1] > 3 else (1, 2)).to_dict(),
        "ce_mean": fastce.cross_entropy(x, y, weight=np.linspace(0.5, 1.5, x.shape[1])),
        "ce_none": fastce.cross_entropy(x, y, reduction="none"),
    }


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert a[key].tobytes() == b[key].tobytes(), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("problem", range(len(PROBLEMS)))
def test_one_and_two_numba_threads_bit_identical(problem):
    x, y, w = PROBLEMS[problem]
    assert x.size >= getattr(_config, "SERIAL_BELOW_ELEMENTS", 0)  # big enough to run in parallel
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _all_results(x, y, w)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = _all_results(x, y, w)
    finally:
        numba.set_num_threads(threads)
    _assert_identical(one, two)


def test_repeated_calls_identical():
    x, y, w = PROBLEMS[0]
    first = _all_results(x, y, w)
    for _ in range(3):
        _assert_identical(first, _all_results(x, y, w))


def test_thread_counts_in_a_fresh_process(tmp_path):
    """1..4 numba threads in a process started with NUMBA_NUM_THREADS=4 (more threads than cores is fine)."""
    script = textwrap.dedent(
        """
        import json, sys
        import numba, numpy as np, fastce
        rng = np.random.default_rng(5)
        x = rng.normal(scale=3.0, size=(40_000, 20)).astype(np.float32)
        y = rng.integers(0, 20, size=40_000)
        w = rng.uniform(0, 1, size=40_000)
        out = {}
        for t in (1, 2, 3, 4):
            numba.set_num_threads(t)
            m = fastce.evaluate(y, logits=x, sample_weight=w, top_k=(1, 5))
            rows = fastce.cross_entropy(x, y, reduction="none")
            out[t] = [m.to_json(), rows.tobytes().hex()]
        json.dump(out, sys.stdout)
        """
    )
    env = dict(os.environ, NUMBA_NUM_THREADS="4")
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert len(out) == 4
    assert all(v == out["1"] for v in out.values())


def test_many_python_threads_at_once():
    """8 Python threads calling fastce concurrently get the serial answers."""
    rng = np.random.default_rng(99)
    jobs = []
    for i in range(16):
        n, c = (30_000, 10) if i % 2 else (8_000, 40)
        x = rng.normal(size=(n, c)).astype(np.float32 if i % 3 else np.float64)
        y = rng.integers(0, c, size=n)
        w = rng.uniform(0, 1, size=n) if i % 4 == 0 else None
        jobs.append((x, y, w))

    def run(job):
        x, y, w = job
        return {
            "logits": fastce.evaluate(y, logits=x, sample_weight=w, top_k=(1, 2, 5)).to_dict(),
            "ce_none": fastce.cross_entropy(x, y, reduction="none"),
        }

    serial = [run(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(2):
            concurrent = list(pool.map(run, jobs))
            for a, b in zip(serial, concurrent):
                _assert_identical(a, b)


def test_python_threads_with_errors_and_warnings_interleaved():
    """Errors raised in some threads do not disturb the others (the kernel lock is released)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20_000, 8))
    y = rng.integers(0, 8, size=20_000)
    bad = x.copy()
    bad[123, 4] = np.nan
    expected = fastce.evaluate(y, logits=x).to_dict()

    def run(i):
        if i % 3 == 0:
            with pytest.raises(fastce.InputError, match="row 123"):
                fastce.evaluate(y, logits=bad)
            return None
        return fastce.evaluate(y, logits=x).to_dict()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, range(24)))
    assert all(r == expected for r in results if r is not None)


def test_a_forked_child_gets_a_pool_of_its_own():
    """After os.fork the child has the parent's pool object but none of its threads: it must not wait on them."""
    import multiprocessing

    import fastce

    rng = np.random.default_rng(5)
    z = rng.standard_normal((200_000, 3))  # above the serial threshold: the pool runs
    y = rng.integers(0, 3, len(z))
    parent = fastce.evaluate(y, logits=z)  # the parent's pool exists now
    context = multiprocessing.get_context("fork")
    with warnings.catch_warnings():
        # Python >= 3.12 warns that forking a process with threads may deadlock: the very case tested here.
        warnings.simplefilter("ignore", DeprecationWarning)
        with context.Pool(1) as pool:
            child = pool.apply_async(_evaluate_in_child, (y, z)).get(timeout=120)
    assert child == parent.to_json()


def _evaluate_in_child(y, z):
    import fastce

    return fastce.evaluate(y, logits=z).to_json()


@numba.njit(nogil=True)
def _claiming_kernel(owner, runs, spin, claims, first_task, task_step):
    """Claims tasks as the score kernels do, records which stride took each and how often each ran (each
    stride counts in its own row of ``runs``), and spins ``spin[first_task]`` iterations a task (a slower
    stride)."""
    x = 0.0
    while True:
        task = _parallel.claim(claims)
        if task >= owner.shape[0]:
            break
        for i in range(spin[first_task]):
            x += math.sqrt(i + x)
        owner[task] = first_task if x >= 0.0 else -2  # x read: the spin is not optimised away
        runs[first_task, task] += 1


def test_claimed_tasks_each_run_once_and_a_slower_thread_takes_fewer():
    """fastce._parallel.claim: every task of a call exactly once, over repeated calls; with two threads
    and stride 0 spinning 50x longer a task, stride 1 takes most tasks (fixed strides gave each half)."""
    threads = numba.get_num_threads()
    n_tasks = 64
    for _ in range(50):  # races, if any, show over repeated calls
        owner = np.full(n_tasks, -1, dtype=np.int64)
        runs = np.zeros((threads, n_tasks), dtype=np.int64)
        _parallel.run_tasks(_claiming_kernel, (owner, runs, np.zeros(threads, dtype=np.int64),
                                               _parallel.new_claims()), n_tasks)
        assert (owner >= 0).all() and (owner < threads).all()
        assert (runs.sum(axis=0) == 1).all(), runs
    if threads < 2:
        pytest.skip("one numba thread: nothing to balance")
    spin = np.full(threads, 2_000, dtype=np.int64)
    spin[0] = 100_000
    owner = np.full(n_tasks, -1, dtype=np.int64)
    runs = np.zeros((threads, n_tasks), dtype=np.int64)
    _parallel.run_tasks(_claiming_kernel, (owner, runs, spin, _parallel.new_claims()), n_tasks)
    assert (owner >= 0).all()
    assert (owner == 0).sum() < n_tasks // 4, np.bincount(owner)


def _fresh_process(script: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_fastce_never_starts_numbas_threading_layer():
    # numba.get_num_threads() starts it: with GNU OpenMP's layer, a forked child of the host that ran its own
    # parallel=True code was then killed, and the layer the host had not chosen yet was fixed by fastce's call.
    out = _fresh_process(
        """
        import numpy as np, fastce
        from numba.np.ufunc import parallel
        z = np.random.default_rng(0).standard_normal((300_000, 4))  # above the serial threshold: two strides
        fastce.evaluate(np.zeros(len(z), dtype=np.int64), logits=z)
        fastce.diagnose(np.zeros(len(z), dtype=np.int64), logits=z)
        print("STARTED", parallel._is_initialized)
        """
    )
    assert "STARTED False" in out


def test_fork_while_another_thread_holds_the_kernel_lock_or_compiles():
    # The child inherited the lock held (its first call hung for good) and, forked during a compile, a collector
    # paused until that compile's end, which never came in the child.
    out = _fresh_process(
        """
        import gc, os, threading, numpy as np, fastce
        from fastce import _compile_gc, _config
        z, y = np.zeros((4, 3)), np.zeros(4, dtype=np.int64)
        fastce.evaluate(y, logits=z)
        held, release = threading.Event(), threading.Event()
        def hold():
            with _config.PARALLEL_LOCK:
                held.set(); release.wait()
        threading.Thread(target=hold).start(); held.wait()
        gc.disable(); _compile_gc._LISTENER._paused = True; _compile_gc._LISTENER._depth = 1  # as mid-compile
        pid = os.fork()
        if pid == 0:
            ok = fastce.evaluate(y, logits=z).n == 4 and gc.isenabled()
            os._exit(0 if ok else 3)
        release.set()
        _, status = os.waitpid(pid, 0)
        print("CHILD", os.waitstatus_to_exitcode(status))
        """
    )
    assert "CHILD 0" in out


def test_one_evaluator_fed_from_several_threads_keeps_every_row():
    rng = np.random.default_rng(3)
    batches = [(rng.integers(0, 5, 50_000), rng.standard_normal((50_000, 5))) for _ in range(4)]
    expected = fastce.Evaluator(5)
    for y, z in batches:
        expected.update(y, z)
    shared = fastce.Evaluator(5)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda batch: shared.update(*batch), batches))
    assert shared.rows_seen == 200_000 and shared.result().n == 200_000
    # Bit for bit up to the order of the batches (the exact sums do not depend on it; the row count does not).
    assert shared.result().cross_entropy == pytest.approx(expected.result().cross_entropy, rel=1e-15)


def test_the_command_run_in_process_restores_the_thread_count(tmp_path):
    from fastce import cli

    np.save(tmp_path / "z.npy", np.zeros((10, 3)))
    np.save(tmp_path / "y.npy", np.zeros(10, dtype=np.int64))
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread only: --threads 1 would change nothing")
    numba.set_num_threads(2)
    before = numba.get_num_threads()
    status = cli.main(["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"),
                       "--threads", "1", "--no-progress"], out=io.StringIO(), err=io.StringIO())
    assert status == 0 and numba.get_num_threads() == before
