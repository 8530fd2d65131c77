"""In-cache, single-thread cost of the core kernel (``kernels.score_blocks``), per row and per score.

Usage::

    python benchmarks/kernel_timing.py [C ...] [--blocks 64] [--repeats 200] [--precision input|float64]

Calls the kernel directly on ``--blocks`` blocks of float32 scores (3 * N(0, 1)
logits, and their softmax as probabilities) small enough to stay in cache, on
one thread, checks the call's sums against ``fastce.evaluate`` (so the timed
call does the whole job), and prints the best of 5 rounds of ``--repeats``
calls: ns per row and ns per score.  This isolates the kernel's compute from memory bandwidth,
validation and thread start-up -- the number to compare when changing the
kernels (run it on the old and the new tree, interleaved: the machine is
noisy).  The ns/row figures of docs/performance.md's "what changed" and of the
README's closing notes come from it.  End-to-end throughput against the roofline and the peers
is ``compare.py``.  ``--precision`` is ``evaluate``'s: ``input`` (the
default) times the float32 math of float32 scores, ``float64`` the float64 math.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

import fastce
from fastce import _config
from fastce import kernels as K
from fastce._accumulate import kernel_input
from fastce.checks import sum_to_one_tolerance


def kernel_seconds(num_classes: int, mode: int, blocks: int, repeats: int, rng,
                   precision: str = "input") -> tuple[float, int]:
    """Best time of one score_blocks call over ``blocks`` blocks, and the rows it covers."""
    block_rows = _config.block_rows(num_classes)
    rows = blocks * block_rows
    z = rng.standard_normal((rows, num_classes), dtype=np.float32) * 3
    if mode == K.MODE_PROBA:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        z = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    labels = rng.integers(0, num_classes, rows)
    none = kernel_input(np.empty(0))
    fsums = np.empty((blocks, K.fsums_columns(1)))
    args = (
        kernel_input(z), kernel_input(labels), none, none,
        np.int64(K.NO_LABEL), kernel_input(np.array([1], dtype=np.int64)), False, mode,
        # evaluate's clipping of float32 probabilities and its row-sum tolerance (which the
        # probability-like check of logits uses too: an infinite one times a slower path).
        float(np.finfo(np.float32).eps), sum_to_one_tolerance(np.finfo(np.float32).eps),
        np.empty(0), np.empty((0, 3)), np.empty(0, dtype=np.int64), blocks, block_rows, blocks,
        fsums, np.empty((blocks, K.NUM_ICOUNTS), dtype=np.int64), precision == "input",
    )
    K.score_blocks(*args)  # compile / load from cache
    check_answer(fsums, labels, z, mode, precision)
    best = np.inf
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            K.score_blocks(*args)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best, rows


def check_answer(fsums, labels, scores, mode, precision="input") -> None:
    """The timed call did the whole job: its block sums give ``evaluate``'s mean loss and accuracy."""
    # evaluate's own math (float32 for these float32 scores), or the float64 reference for float64 math.
    metrics = fastce.evaluate(labels, **{"logits" if mode == K.MODE_LOGITS else "proba": scores})
    if precision == "float64" and mode == K.MODE_LOGITS:
        metrics = fastce.evaluate(labels, logits=scores.astype(np.float64))
    rows = labels.shape[0]
    loss = fsums[:, K.F_LOSS].sum() / rows
    accuracy = fsums[:, K.F_TOPK].sum() / rows
    if not (np.isclose(loss, metrics.cross_entropy, rtol=1e-12) and np.isclose(accuracy, metrics.accuracy)):
        raise AssertionError(f"kernel gave loss {loss}, accuracy {accuracy}; evaluate: {metrics}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("classes", type=int, nargs="*", default=[2, 10, 32, 100, 1000])
    parser.add_argument("--blocks", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--precision", choices=("input", "float64"), default="input",
                        help="the kernels' math for these float32 scores (see evaluate)")
    args = parser.parse_args(argv)
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    for num_classes in args.classes:
        for mode, name in ((K.MODE_LOGITS, "logits"), (K.MODE_PROBA, "proba")):
            seconds, rows = kernel_seconds(num_classes, mode, args.blocks, args.repeats, rng, args.precision)
            print(f"C={num_classes:6d} {name:6s} {seconds / rows * 1e9:9.2f} ns/row "
                  f"{seconds / (rows * num_classes) * 1e9:7.3f} ns/score", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
