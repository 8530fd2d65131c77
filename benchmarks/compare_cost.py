"""What ``fastce.compare`` over K models costs against K separate ``fastce.evaluate`` calls.

Usage::

    python benchmarks/compare_cost.py [--classes 10 100 1000] [--models 2 3] [--mb 256] [--repeats 5]
                                      [--weighted] [--proba] [--binary] [--task multilabel|soft]

Both sides read the same in-memory float32 logits (or probabilities) (``--mb`` of scores per
model; ``--binary``: 1-D scores of class 1 and 0/1 labels, ``--classes`` ignored; ``--task``:
an (n, C) multi-label indicator or soft targets, float32), best of
``--repeats`` alternated runs; prints the ratio
compare / (K x evaluate).  The goal is at most 1.10.  Asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastce


def best_time(call, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--models", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--mb", type=float, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weighted", action="store_true", help="random sample weights on both sides")
    parser.add_argument("--proba", action="store_true", help="softmax probabilities (proba=) instead of logits")
    parser.add_argument("--binary", action="store_true", help="1-D binary scores of class 1 (the binary task)")
    parser.add_argument("--task", choices=("multilabel", "soft"), help="(n, C) targets of this task")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    for c in [2] if args.binary else args.classes:
        rows = max(1, int(args.mb * 2**20 / (4 * (1 if args.binary else c))))
        y = rng.integers(0, c, rows)
        if args.task == "multilabel":
            y = (rng.random((rows, c), dtype=np.float32) < 0.3).astype(np.float32)
        elif args.task == "soft":
            y = rng.random((rows, c), dtype=np.float32)
            y /= y.sum(axis=1, keepdims=True)
        shape = (rows,) if args.binary else (rows, c)
        models = {chr(65 + i): rng.standard_normal(shape, dtype=np.float32) for i in range(max(args.models))}
        if args.binary and args.proba:
            for z in models.values():
                z[:] = 1 / (1 + np.exp(-z))
        elif args.proba:
            for z in models.values():
                np.exp(z - z.max(axis=1, keepdims=True), out=z)
                z /= z.sum(axis=1, keepdims=True)
        key = "proba" if args.proba else "logits"
        w = rng.random(rows) if args.weighted else None
        for k in args.models:
            chosen = dict(list(models.items())[:k])
            fastce.compare(y, **{key: chosen}, sample_weight=w)  # compile / warm up
            # Alternated, best of each: this machine's speed drifts by 10% within a minute.
            def evaluate_each():
                return [fastce.evaluate(y, **{key: z}, sample_weight=w) for z in chosen.values()]

            def compare_all():
                return fastce.compare(y, **{key: chosen}, sample_weight=w)

            separate = together = np.inf
            for _ in range(args.repeats):
                separate = min(separate, best_time(evaluate_each, 1))
                together = min(together, best_time(compare_all, 1))
            what = "binary" if args.binary else f"C={c}" + (f" {args.task}" if args.task else "")
            print(f"{what:<8s} models={k}  {k} x evaluate {separate:.3f} s  compare {together:.3f} s  "
                  f"ratio {together / separate:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
