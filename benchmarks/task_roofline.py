"""Multi-label and soft-target ``evaluate`` against a roofline that reads the same bytes, in one run.

Usage::

    python benchmarks/task_roofline.py [--tasks multilabel soft] [--classes 8 100 1000] [--mib 512] [--repeats 5]

For each task and C: float32 logits of about ``--mib`` MiB and their (n, C)
targets (multi-label: a 0/1 indicator, uint8 and float32; soft: float32
rows that sum to one), in memory.  ``evaluate(targets, logits=z,
task=task)`` and the roofline (``roofline.read_seconds``: a vectorised sum
of the scores' bytes plus one of the targets') alternate, best of
``--repeats`` each; it prints seconds, ns per element and the fraction of
the roofline (roofline time / evaluate time).  Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fastce  # noqa: E402
from roofline import compile_all, read_seconds  # noqa: E402


def targets_for(task: str, rng, n: int, c: int, dtype):
    if task == "multilabel":
        return (rng.random((n, c), dtype=np.float32) < 0.3).astype(dtype)
    t = rng.random((n, c), dtype=np.float32)
    t /= t.sum(axis=1, keepdims=True)
    return t


def as_roofline_input(array):
    """The array's bytes as the roofline reads them: 1-byte targets as 2-byte words (all but an odd last byte)."""
    if array.dtype.itemsize == 1:
        return np.frombuffer(array, dtype=np.uint16, count=array.size // 2)
    return array


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["multilabel", "soft"], choices=["multilabel", "soft"])
    parser.add_argument("--classes", type=int, nargs="+", default=[8, 100, 1000])
    parser.add_argument("--mib", type=float, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    compile_all()
    rng = np.random.default_rng(0)
    print(f"{'task':<22s} {'C':>6s} {'rows':>11s} {'evaluate s':>10s} {'ns/elem':>8s} {'roofline s':>10s} "
          f"{'fraction':>8s}")
    for task in args.tasks:
        for c in args.classes:
            n = max(1, int(args.mib * 2**20 / (4 * c)))
            z = rng.standard_normal((n, c), dtype=np.float32)
            for dtype in ([np.uint8, np.float32] if task == "multilabel" else [np.float32]):
                t = targets_for(task, rng, n, c, dtype)
                fastce.evaluate(t[:1000], logits=z[:1000], task=task)  # compile outside the timing
                best_eval = best_roof = np.inf
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    fastce.evaluate(t, logits=z, task=task)
                    best_eval = min(best_eval, time.perf_counter() - start)
                    best_roof = min(best_roof, read_seconds(z, repeats=1)
                                    + read_seconds(as_roofline_input(t), repeats=1))
                label = f"{task} ({np.dtype(dtype).name} targets)"
                print(f"{label:<22s} {c:>6d} {n:>11,d} {best_eval:>10.3f} {best_eval / (n * c) * 1e9:>8.2f} "
                      f"{best_roof:>10.3f} {best_roof / best_eval:>8.1%}")
                del t
            del z
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
