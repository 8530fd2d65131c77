"""How accurate are fastce's standard errors after very many rows?

Usage::

    python benchmarks/stderr_accuracy.py [--rows 1_000_000_000] [--classes 10] [--chunk 4_000_000]

Streams ``--rows`` rows of random float32 logits through an ``Evaluator``
(whose sums of squares are per-block float64 partials added exactly), and,
from the very same per-row values (``cross_entropy(reduction="none")`` is the
same kernel), computes the exact sample standard error with exact integer
sums of x and of x^2 (each square split exactly in two doubles).  Prints the
relative error of fastce's ``stderr`` for the cross-entropy and the accuracy,
and of the textbook one-pass float64 formula sqrt((sum x^2 - n mean^2)/(n-1)/n)
with running float64 sums, for contrast.  Only the accumulation is measured:
both sides see the same per-row losses.  Asserts nothing (a benchmark).
"""

from __future__ import annotations

import argparse
import math
import time
from fractions import Fraction

import numpy as np
from numba import njit

import fastce
from fastce import _exactsum


@njit(cache=False)
def _exact_moments(values, accs):
    """accs[0] += sum x, accs[1] += sum x^2, both exactly (Dekker's product: x^2 = hi + lo exactly)."""
    split = 134217729.0  # 2**27 + 1
    for i in range(values.shape[0]):
        x = values[i]
        _exactsum.exact_add_at(accs, 0, x)
        hi = x * x
        c = split * x
        x_hi = c - (c - x)
        x_lo = x - x_hi
        lo = ((x_hi * x_hi - hi) + 2.0 * x_hi * x_lo) + x_lo * x_lo
        _exactsum.exact_add_at(accs, 1, hi)
        _exactsum.exact_add_at(accs, 1, lo)
        if i % (1 << 20) == 0:
            _exactsum.normalize_at(accs, 0)
            _exactsum.normalize_at(accs, 1)
    _exactsum.normalize_at(accs, 0)
    _exactsum.normalize_at(accs, 1)


def exact_stderr(n: int, acc_sum, acc_square) -> float:
    scale = 1 << _exactsum.OFFSET
    s = Fraction(_exactsum.to_int(acc_sum), scale)
    q = Fraction(_exactsum.to_int(acc_square), scale)
    variance = (q - s * s / n) / (n - 1)
    return math.sqrt(float(variance / n))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=4_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    evaluator = fastce.Evaluator(args.classes)
    accs = {name: _exactsum.new_accumulators(2) for name in ("loss", "hit")}
    naive = {name: [0.0, 0.0] for name in accs}
    start = time.perf_counter()
    done = 0
    while done < args.rows:
        n = min(args.chunk, args.rows - done)
        z = rng.standard_normal((n, args.classes), dtype=np.float32)
        z[:, 0] += 0.5  # a model that is right more often than chance
        y = rng.integers(0, args.classes, n)
        evaluator.update(y, z)
        values = {
            "loss": fastce.cross_entropy(z, y, reduction="none"),
            "hit": (np.argmax(z, axis=1) == y).astype(np.float64),
        }
        for name, x in values.items():
            _exact_moments(x, accs[name])
            for v in np.array_split(x, max(1, n // 1000)):  # running float64 sums, 1,000 rows at a time
                naive[name][0] += float(v.sum())
                naive[name][1] += float((v * v).sum())
        done += n
    m = evaluator.result()
    elapsed = time.perf_counter() - start
    print(f"{args.rows:,} rows x {args.classes} classes ({elapsed:.0f} s)")
    for name, key in (("loss", "cross_entropy"), ("hit", "accuracy")):
        exact = exact_stderr(args.rows, *accs[name])
        s, q = naive[name]
        mean = s / args.rows
        textbook = math.sqrt(max(0.0, (q - args.rows * mean * mean) / (args.rows - 1)) / args.rows)
        print(
            f"{key:14s} stderr {m.stderr[key]:.17g}  exact {exact:.17g}  "
            f"fastce rel. error {abs(m.stderr[key] - exact) / exact:.2e}  "
            f"one-pass float64 rel. error {abs(textbook - exact) / exact:.2e}"
        )


if __name__ == "__main__":
    main()
