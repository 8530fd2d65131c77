"""How close to the memory roofline can a float64-accurate cross-entropy from logits get here?

Usage::

    python benchmarks/ceiling.py [--mb 1024] [--repeats 5]

Two costs measured on this machine, per float32 score and per thread, and their ratio:

* **memory**: the roofline (``roofline.py``: a plain vectorised parallel sum)
  reading an ``--mb`` array with all numba threads, as ns per score per thread;
* **exp floor**: every thread at once, each on its own scores in its cache, a
  loop that does nothing but fastce's float64 ``exp_nonpositive`` of every
  score (minus a constant) and one sum, as ns per score per thread.
  Every kernel that keeps the accuracy contract (per-row losses within a few
  ulp of a float64 reference) computes at least this per logit; fastce's also
  converts, finds the max, counts ties, sums squares for the Brier score and
  ranks the true class (``kernel_timing.py`` gives the whole kernel's cost).

``bound = memory / exp floor`` is the largest fraction of the roofline that
``evaluate(logits=...)`` could reach at large C with this exp, if compute and
memory overlapped perfectly and nothing but the exp cost anything.  When it is
below a target fraction, no tuning of the other work reaches that target: the
exp itself must get cheaper -- a different float64 algorithm (say table-driven,
fewer FMAs for gathers) or a less accurate one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numba
import numpy as np
from numba import njit, prange

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import roofline  # noqa: E402

from fastce._vecmath import add_reassoc, as_float64, exp_nonpositive  # noqa: E402


@njit(nogil=True, error_model="numpy")
def exp_sum(scores, reps):
    """sum of exp(z - 20) over the scores, ``reps`` times: the exp floor's loop (vectorised like the kernels')."""
    total = 0.0
    for _ in range(reps):
        for j in range(scores.shape[0]):
            # Unsigned index: no gathers for AVX-512 (see roofline._NO_GATHER).
            total = add_reassoc(total, exp_nonpositive(as_float64(scores[np.uint64(j)]) - 20.0))
    return total


@njit(nogil=True, error_model="numpy", parallel=True)
def exp_sums(scores, reps):
    """exp_sum of each row of ``scores``, the rows in parallel: one per thread."""
    totals = np.empty(scores.shape[0])
    for t in prange(scores.shape[0]):
        totals[t] = exp_sum(scores[t], reps)
    return totals


def exp_floor_ns(repeats: int, elements: int = 1 << 14) -> float:
    """Best ns per score per thread of ``exp_sum``, every thread on its own ``elements`` float32
    scores (64 KiB: in its L1/L2) at once."""
    threads = numba.get_num_threads()
    rng = np.random.default_rng(0)
    scores = (rng.standard_normal((threads, elements)) * 3).astype(np.float32)
    expected = np.exp(scores.astype(np.float64) - 20.0).sum(axis=1)
    got = exp_sums(scores, 1)
    if not np.allclose(got, expected, rtol=1e-12):  # the timed loop must compute what it claims
        raise AssertionError(f"exp_sum gave {got}, numpy {expected}")
    inner = max(1, (1 << 24) // elements)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        exp_sums(scores, inner)
        best = min(best, (time.perf_counter() - start) / (inner * elements))
    return best * 1e9


def memory_ns(mb: int, repeats: int) -> tuple[float, float]:
    """(ns per float32 score per thread, GB/s) of the roofline reading ``mb`` MB with all threads."""
    array = np.ones(mb * (1 << 20) // 4, dtype=np.float32)
    gbps = roofline.read_gbps(array, repeats)
    threads = numba.get_num_threads()
    return 4 / gbps * threads, gbps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="roofline array size in MB (default 1024: beyond the caches)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    threads = numba.get_num_threads()
    mem, gbps = memory_ns(args.mb, args.repeats)
    exp = exp_floor_ns(args.repeats)
    print(f"memory     {mem:7.3f} ns/score/thread  (roofline {gbps:.1f} GB/s over {args.mb} MB, {threads} threads)")
    print(f"exp floor  {exp:7.3f} ns/score/thread  (float64 exp + one sum, {threads} threads at once, in cache)")
    print(f"bound      {100 * mem / exp:7.1f}% of the roofline for evaluate(logits=) at large C")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
