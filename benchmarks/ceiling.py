"""How close to the memory roofline can an accurate cross-entropy from logits get here?

Usage::

    python benchmarks/ceiling.py [--mb 1024] [--repeats 5]

Costs measured on this machine, per float32 score and per thread, and their ratios:

* **memory**: the roofline (``roofline.py``: a plain vectorised parallel sum)
  reading an ``--mb`` array with all numba threads, as ns per score per thread;
* **exp floor**: every thread at once, each on its own scores in its cache, a
  loop that does nothing but fastce's float64 ``exp_nonpositive`` of every
  score (minus a constant) and one sum, as ns per score per thread.
  Every kernel that keeps the accuracy contract (per-row losses within a few
  ulp of a float64 reference) computes at least this per logit; fastce's also
  converts, finds the max, counts ties, sums squares for the Brier score and
  ranks the true class (``kernel_timing.py`` gives the whole kernel's cost).

* **float32 floors** (float32, float16 and bfloat16 scores take float32 math,
  ``precision="input"``): the same, each thread on its own 16 rows of 1024
  float32 logits in its cache,
  - *contract*: the kernels' own per-logit step, ``kernels._exp_sums_f32``
    (exp(z - max) in float32 with the rounding of z - max kept, the terms and
    their squares summed in float64, the entries at the max counted): what
    the 4-ulp-per-row contract and the Brier score need of every logit,
    without the max pass, the rank or anything per row;
  - *bare*: ``exp_nonpositive_f32`` of every score minus a constant, summed in
    float32 -- the cheapest float32 exp loop, accurate to 1 ulp per term but
    keeping neither z - max's rounding nor the sum's digits: what is left if
    the contract's extras cost nothing.

* **float64 contract**: the kernels' float64 step on rows of 1024 float64
  logits in cache (``kernels._row_exp_sums``: the fused ``exp_sums_wide`` on
  AVX-512, ``exp_sums`` on AVX2; the float64 twin of the float32 contract:
  what float64 scores, and ``precision="float64"``, need of every logit).

``bound = memory / floor`` is the largest fraction of the roofline that
``evaluate(logits=...)`` could reach at large C with that exp, if compute and
memory overlapped perfectly and nothing but the exp cost anything.  When it is
below a target fraction, no tuning of the other work reaches that target: the
exp itself must get cheaper -- a different algorithm or a less accurate one.

The memory time of a score is proportional to its bytes, the floor is the
math that the input's dtype takes (precision follows the input), so the last
table gives each input kind's bound against issue 16's target for this host's
vector ISA (AVX-512 or AVX2): float32 logits (4 bytes, float32 contract),
float16 / bfloat16 (2 bytes, the same float32 contract: half the memory time
for the same math), float64 (8 bytes, float64 contract) and float32 logits with
``precision="float64"`` (4 bytes, float64 contract; no target of its own).
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

from fastce import kernels  # noqa: E402
from fastce._vecmath import (  # noqa: E402
    HAS_AVX512,
    add_reassoc,
    as_float64,
    exp_nonpositive,
    exp_nonpositive_f32,
    prefer_wide_vectors,
)


@njit(nogil=True, error_model="numpy")
def exp_sum(scores, reps):
    """sum of exp(z - 20) over the scores, ``reps`` times: the exp floor's loop (vectorised like the kernels')."""
    prefer_wide_vectors()  # 512-bit vectors on AVX-512 hosts, as the kernels' loops
    total = 0.0
    for _ in range(reps):
        for j in range(scores.shape[0]):
            # Unsigned index: no gathers for AVX-512 (see roofline._NO_GATHER).
            total = add_reassoc(total, exp_nonpositive(as_float64(scores[np.uint64(j)]) - 20.0))
    return total


def _on_every_thread(loop):
    """A parallel function giving ``loop(scores[t], reps)`` for each row t of ``scores``: one row per thread."""

    @njit(nogil=True, error_model="numpy", parallel=True)
    def run(scores, reps):
        totals = np.empty(scores.shape[0])
        for t in prange(scores.shape[0]):
            totals[t] = loop(scores[t], reps)
        return totals

    return run


exp_sums = _on_every_thread(exp_sum)


@njit(nogil=True, error_model="numpy")
def exp_sum_f32(scores, reps):
    """float32 sum of exp_nonpositive_f32(z - 20) over the scores, ``reps`` times: the bare float32 floor."""
    prefer_wide_vectors()
    total = np.float32(0.0)
    shift = np.float32(20.0)
    for _ in range(reps):
        for j in range(scores.shape[0]):
            total = add_reassoc(total, exp_nonpositive_f32(scores[np.uint64(j)] - shift))
    return total


exp_sums_f32 = _on_every_thread(exp_sum_f32)


@njit(nogil=True, error_model="numpy")
def contract_sum(rows, maxima, reps):
    """Sum over ``reps`` passes of the rows of kernels._exp_sums_f32's three sums (the contract floor's loop)."""
    total = 0.0
    for _ in range(reps):
        for i in range(rows.shape[0]):
            rest, squares, at_max = kernels._exp_sums_f32(rows, i, rows.shape[1], maxima[i])
            total += rest + squares + at_max
    return total


@njit(nogil=True, error_model="numpy", parallel=True)
def contract_sums(blocks, maxima, reps):
    """contract_sum of each block of rows, the blocks in parallel: one per thread."""
    totals = np.empty(blocks.shape[0])
    for t in prange(blocks.shape[0]):
        totals[t] = contract_sum(blocks[t], maxima[t], reps)
    return totals


def _best_ns(run, elements: int, repeats: int) -> float:
    """Best ns per score (of ``elements`` a thread a call) of ``run(inner)`` over ``repeats`` rounds."""
    inner = max(1, (1 << 24) // elements)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run(inner)
        best = min(best, (time.perf_counter() - start) / (inner * elements))
    return best * 1e9


def _check(name: str, got, expected, rtol: float) -> None:
    """The timed loop must compute what it claims."""
    if not np.allclose(got, expected, rtol=rtol, atol=0.0):
        raise AssertionError(f"{name} gave {got}, numpy {expected}")


def _thread_scores(shape) -> np.ndarray:
    """3 * N(0, 1) float32 logits, one leading slice per thread."""
    rng = np.random.default_rng(0)
    return (rng.standard_normal((numba.get_num_threads(),) + shape) * 3).astype(np.float32)


def exp_floor_ns(repeats: int, elements: int = 1 << 14) -> float:
    """Best ns per score per thread of ``exp_sum``, every thread on its own ``elements`` float32
    scores (64 KiB: in its L1/L2) at once."""
    scores = _thread_scores((elements,))
    _check("exp_sum", exp_sums(scores, 1), np.exp(scores.astype(np.float64) - 20.0).sum(axis=1), 1e-12)
    return _best_ns(lambda inner: exp_sums(scores, inner), elements, repeats)


def bare_f32_floor_ns(repeats: int, elements: int = 1 << 14) -> float:
    """exp_floor_ns with exp_nonpositive_f32 and a float32 sum."""
    scores = _thread_scores((elements,))
    _check("exp_sum_f32", exp_sums_f32(scores, 1), np.exp(scores.astype(np.float64) - 20.0).sum(axis=1), 1e-4)
    return _best_ns(lambda inner: exp_sums_f32(scores, inner), elements, repeats)


def contract_f32_floor_ns(repeats: int, rows: int = 16, classes: int = 1024) -> float:
    """Best ns per score per thread of kernels._exp_sums_f32, every thread on its own rows x classes float32
    logits (64 KiB) at once."""
    blocks = _thread_scores((rows, classes))
    maxima = blocks.max(axis=2)
    _check("_exp_sums_f32", contract_sums(blocks, maxima, 1), _contract_expected(blocks, maxima), 1e-6)
    return _best_ns(lambda inner: contract_sums(blocks, maxima, inner), rows * classes, repeats)


@njit(nogil=True, error_model="numpy")
def contract_sum_f64(rows, maxima, reps, chunk):
    """contract_sum with the kernels' float64 step (float64 rows; ``chunk``: exp_sums' scratch, where it runs)."""
    total = 0.0
    for _ in range(reps):
        for i in range(rows.shape[0]):
            rest, squares, at_max = kernels._row_exp_sums(rows, i, rows.shape[1], maxima[i], maxima[i], None, chunk)
            total += rest + squares + at_max
    return total


@njit(nogil=True, error_model="numpy", parallel=True)
def contract_sums_f64(blocks, maxima, reps, chunks):
    """contract_sum_f64 of each block of rows, the blocks in parallel: one per thread."""
    totals = np.empty(blocks.shape[0])
    for t in prange(blocks.shape[0]):
        totals[t] = contract_sum_f64(blocks[t], maxima[t], reps, chunks[t])
    return totals


def _contract_expected(blocks, maxima):
    """numpy's float64 value of the three sums the contract loops add up, per thread."""
    at_max = blocks == maxima[..., None]
    terms = np.where(at_max, 0.0, np.exp(blocks.astype(np.float64) - maxima[..., None]))
    return (terms.sum(axis=2) + (terms * terms).sum(axis=2) + at_max.sum(axis=2)).sum(axis=1)


def contract_f64_floor_ns(repeats: int, rows: int = 16, classes: int = 1024) -> float:
    """Best ns per score per thread of the kernels' float64 step, every thread on its own rows x classes float64
    logits (128 KiB) at once."""
    blocks = _thread_scores((rows, classes)).astype(np.float64)
    maxima = blocks.max(axis=2)
    chunks = np.zeros((blocks.shape[0], kernels.EXP_SCRATCH))
    _check("float64 step", contract_sums_f64(blocks, maxima, 1, chunks), _contract_expected(blocks, maxima), 1e-12)
    return _best_ns(lambda inner: contract_sums_f64(blocks, maxima, inner, chunks), rows * classes, repeats)


# Issue 16's targets at large C (fractions of the roofline), per vector ISA: (AVX-512, AVX2).
TARGETS = {"float32": (0.80, 0.55), "float16 / bfloat16": (0.50, 0.35), "float64": (0.50, 0.35)}


def input_bounds(mem_ns_f32: float, contract_f32: float, contract_f64: float) -> list:
    """(input, bytes a score, floor name, bound, target or None) for each input kind, the memory time scaled
    from ``mem_ns_f32`` (a 4-byte score's) by the input's bytes."""
    isa = 0 if HAS_AVX512 else 1
    kinds = (("float32", 4, "float32 contract", contract_f32),
             ("float16 / bfloat16", 2, "float32 contract", contract_f32),
             ("float64", 8, "float64 contract", contract_f64),
             ('float32, precision="float64"', 4, "float64 contract", contract_f64))
    return [(name, size, floor_name, mem_ns_f32 * size / 4 / floor,
             TARGETS[name][isa] if name in TARGETS else None) for name, size, floor_name, floor in kinds]


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
    floors = (
        ("float64 math", exp_floor_ns(args.repeats), "float64 exp + one sum"),
        ("float32 contract", contract_f32_floor_ns(args.repeats),
         "kernels._exp_sums_f32: exp(z - max), float64 sums of terms and squares, ties"),
        ("float32 bare", bare_f32_floor_ns(args.repeats), "float32 exp + one float32 sum"),
        ("float64 contract", contract_f64_floor_ns(args.repeats),
         "the kernels' float64 step on float64 rows: exp(z - max), sums of terms and squares, ties"),
    )
    print(f"memory            {mem:8.4f} ns/score/thread  (roofline {gbps:.1f} GB/s over {args.mb} MB, "
          f"{threads} threads)")
    for name, ns, what in floors:
        print(f"{name:<17} {ns:8.4f} ns/score/thread  bound {100 * mem / ns:5.1f}%  ({what}; {threads} threads at "
              f"once, in cache)")
    print("bound: the largest fraction of the roofline evaluate(logits=) can reach at large C with that exp")
    ns = {name: value for name, value, _ in floors}
    isa = "AVX-512" if HAS_AVX512 else "AVX2"
    print(f"\nper input (large C; memory scaled by the score's bytes; target: issue 16's {isa} column)")
    for name, size, floor_name, bound, target in input_bounds(mem, ns["float32 contract"], ns["float64 contract"]):
        verdict = "" if target is None else (f"target {100 * target:.0f}%: " + (
            "reachable in principle" if bound >= target else "out of reach under this math"))
        print(f"  {name:<29} {size} B  {floor_name:<16}  bound {100 * bound:5.1f}%  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
