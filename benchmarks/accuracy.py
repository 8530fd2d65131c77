"""Per-row accuracy of fastce's cross-entropy, and of its exp, against extended precision.

Usage::

    python benchmarks/accuracy.py [--seed 0]

1. ``fastce.cross_entropy(z, y, reduction="none")`` on float32 logits 3 * N(0, 1)
   (C = 2, 10, 100, 1000; 1.2 million rows in all) against the same formula in
   numpy's long double (80-bit on x86: 11 more bits than float64); PyTorch's
   float64 ``cross_entropy`` on the same rows, when torch is installed.  Prints
   the largest relative error and the largest error in ulp of the result:
   float64 ulp for float64 math (``precision="float64"``), float32 ulp for the
   float32 math that float32 logits get by default (the contract: 4 float32
   ulp per row).  Then the same for confident rows (the true class 8 to 90
   above the others: losses down to 1e-39, whose digits must all be kept).
2. 1-D binary logits (``evaluate``'s binary kernel, its per-row losses):
   float32 logits 3 * N(0, 1) and confident ones (|z| from 10 to 156: losses
   down to 1e-68) against long double, float32 math (the default) and
   ``precision="float64"``; also each row's Brier term 2 (p - y)**2 (float64 math
   takes p - y as it is: a confident right row's tiny term loses its digits there,
   absolute errors stay below float64's eps).
3. Multi-label (n, C) logits (the element kernel's per-element losses, ``kernels_binary.bce_blocks``):
   float32 logits 3 * N(0, 1) and confident ones, against 0/1 and soft targets, each element's
   y softplus(-z) + (1 - y) softplus(z) against long double, float32 math (the default) and
   ``precision="float64"``.
4. The float64 ``exp`` of the kernels on 100,000 points of [-700, 0] (and edge
   cases) against mpmath at 40 digits, when mpmath is installed: largest error
   in ulp; and the float32 ``exp_nonpositive_f32`` on 100,000 points of
   [-104, 0], in float32 ulp (the subnormal range's ulp is 2**-149).

The README's accuracy figures come from this script.  It asserts nothing: the
tests hold the contract (``tests/test_properties.py``, ``tests/test_evaluate.py``).
"""

from __future__ import annotations

import argparse

import numpy as np

import fastce
from fastce import _accumulate


def long_double_cross_entropy(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(max - z_y) + log1p(sum over non-max entries of exp(z - max) + ties - 1), in long double."""
    zl = z.astype(np.longdouble)
    m = zl.max(axis=1, keepdims=True)
    top = zl == m
    rest = np.where(top, 0, np.exp(zl - m)).sum(axis=1) + (top.sum(axis=1) - 1)
    return (m[:, 0] - zl[np.arange(len(y)), y]) + np.log1p(rest)


def float32_ulp(value) -> np.ndarray:
    """The float32 ulp at each value (2**-149 in the subnormal range), as long double."""
    return np.spacing(np.abs(value).astype(np.float32)).astype(np.longdouble)


def float64_math_losses(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row losses with ``precision="float64"`` (float64 math for float32 logits)."""
    losses = np.zeros(len(y))
    _accumulate.accumulate_matrix(z, y, top_k=(1,), from_logits=True, row_losses=losses, precision="float64")
    return losses


def confident_rows(rng, rows: int, num_classes: int):
    """3 * N(0, 1) logits with the true class 8, 20, 45 or 90 above the row's max."""
    z = (rng.standard_normal((rows, num_classes)) * 3).astype(np.float32)
    y = rng.integers(0, num_classes, rows)
    gap = rng.choice(np.array([8.0, 20.0, 45.0, 90.0], dtype=np.float32), rows)
    z[np.arange(rows), y] = z.max(axis=1) + gap
    return z, y


def cross_entropy_errors(rng) -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover - optional peer
        torch = None
    cases = [("3N(0,1)", c, r, None) for c, r in ((2, 1_000_000), (10, 200_000), (100, 20_000), (1000, 20_000))]
    cases += [("confident", c, r, confident_rows) for c, r in ((2, 200_000), (10, 100_000), (100, 20_000), (1000, 5000))]
    for rows_kind, num_classes, rows, make in cases:
        if make is None:
            z = (rng.standard_normal((rows, num_classes)) * 3).astype(np.float32)
            y = rng.integers(0, num_classes, rows)
        else:
            z, y = make(rng, rows, num_classes)
        ref = long_double_cross_entropy(z, y)
        got = fastce.cross_entropy(z, y, reduction="none")  # float32 math (the default for float32 logits)
        error = np.abs(got.astype(np.longdouble) - ref)
        wide = float64_math_losses(z, y)
        wide_error = np.abs(wide.astype(np.longdouble) - ref)
        line = (
            f"{rows_kind:9s} C={num_classes:5d} rows={rows:8d}  float32 logits (default): max rel "
            f"{float((error / ref).max()):.2e}, max {float((error / float32_ulp(ref)).max()):.2f} float32 ulp;  "
            f"precision='float64': max rel {float((wide_error / ref).max()):.2e}, "
            f"max {float((wide_error / np.spacing(np.abs(wide))).max()):.2f} ulp"
        )
        if torch is not None:
            t = torch.nn.functional.cross_entropy(
                torch.from_numpy(z.astype(np.float64)), torch.from_numpy(y), reduction="none"
            ).numpy()
            line += f"   torch float64: max rel {float((np.abs(t - ref) / ref).max()):.2e}"
        print(line)


def binary_long_double(z: np.ndarray, y: np.ndarray):
    """(loss, Brier term 2 (p - y)**2) of 1-D logits in long double; |p - y| without cancellation."""
    x = np.abs(z.astype(np.longdouble))
    e = np.exp(-x)
    right = (z > 0) == (y == 1)
    loss = np.where(right, 0, x) + np.log1p(e)
    d = np.where(right, e / (1 + e), 1 / (1 + e))
    return loss, 2 * d * d


def binary_errors(rng) -> None:
    from fastce import kernels as K
    from fastce import kernels_binary as KB
    from fastce._accumulate_family import accumulate_binary_logits

    n = 1_000_000
    for rows_kind, z in (("3N(0,1)", rng.standard_normal(n) * 3),
                         ("confident", rng.uniform(10, 156, n) * rng.choice([-1, 1], n))):
        z = z.astype(np.float32)
        y = rng.integers(0, 2, n)
        ref, ref_brier = binary_long_double(z, y)
        line = f"{rows_kind:9s} 1-D binary rows={n:8d}"
        for precision in ("input", "float64"):
            losses = np.zeros(n)
            accumulate_binary_logits(z, y, top_k=(1,), row_losses=losses, precision=precision)
            error = np.abs(losses.astype(np.longdouble) - ref)
            stats = np.empty((n, K.ROW_STATS_COLUMNS))
            KB.binary_row_stats(z, y, True, 0.0, True if precision == "input" else None, stats)
            brier_error = np.abs(stats[:, K.S_BRIER].astype(np.longdouble) - ref_brier)
            above = np.abs(z) <= 156  # float32 math's floor: below exp(-156) a loss or Brier term is 0
            line += (f"  {'float32 math (default)' if precision == 'input' else 'precision=float64'}: loss max rel "
                     f"{float((error / ref).max()):.2e} ({float((error / ref)[above].max()):.2e} above the floor), "
                     f"max {float((error / float32_ulp(ref)).max()):.2f} float32 ulp"
                     f", Brier term max {float((brier_error / float32_ulp(ref_brier)).max()):.3g} float32 ulp, "
                     f"max rel above the floor {float((brier_error / ref_brier)[above].max()):.2e} "
                     f"(abs {float(brier_error.max()):.1e});")
        print(line + f"  smallest loss {float(ref.min()):.1e}")


def multilabel_errors(rng) -> None:
    from fastce._accumulate_family import accumulate_bce

    n, c = 100_000, 10
    for rows_kind, z in (("3N(0,1)", rng.standard_normal((n, c)) * 3),
                         ("confident", rng.uniform(10, 156, (n, c)) * rng.choice([-1, 1], (n, c)))):
        z = z.astype(np.float32)
        for targets, y in (("0/1", (rng.random((n, c)) < 0.4).astype(np.float64)), ("soft", rng.random((n, c)))):
            x = z.astype(np.longdouble)
            t = y.astype(np.longdouble)
            tail = np.log1p(np.exp(-np.abs(x)))
            ref = (np.where(t == 0, 0, t * (np.maximum(-x, 0) + tail))
                   + np.where(t == 1, 0, (1 - t) * (np.maximum(x, 0) + tail)))
            line = f"{rows_kind:9s} multi-label {targets:4s} elements={n * c:8d}"
            for float32_math in (True, None):
                losses = np.zeros((n, c))
                accumulate_bce(z, y, from_logits=True, element_losses=losses, float32_math=float32_math)
                error = np.abs(losses.astype(np.longdouble) - ref)
                above = (np.abs(z) <= 156) & (ref > 0)
                line += (f"  {'float32 math (default)' if float32_math else 'precision=float64'}: loss max rel "
                         f"{float((error / ref)[above].max()):.2e} (above the floor), "
                         f"max {float((error / float32_ulp(ref)).max()):.2f} float32 ulp;")
            print(line + f"  smallest loss {float(ref[ref > 0].min()):.1e}")


def exp_errors(rng) -> None:
    try:
        import mpmath
    except ImportError:  # pragma: no cover - optional
        print("exp: mpmath not installed, skipped")
        return
    from numba import njit

    from fastce._vecmath import exp_nonpositive

    @njit
    def exp_all(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = exp_nonpositive(x[i])
        return out

    edges = [0.0, -0.0, -1e-300, -700.0, -699.9999, -np.log(2) / 2, -np.log(2) * 1.5]
    x = np.concatenate([
        -rng.uniform(0, 1, 30_000), -rng.uniform(0, 40, 30_000), -rng.uniform(0, 700, 30_000),
        -np.abs(rng.standard_normal(10_000)) * 1e-8, edges,
    ])
    got = exp_all(x)
    mpmath.mp.dps = 40
    worst = 0.0
    for xi, gi in zip(x, got):
        ref = mpmath.exp(mpmath.mpf(float(xi)))
        worst = max(worst, float(abs(mpmath.mpf(float(gi)) - ref) / np.spacing(float(ref))))
    print(f"exp on [-700, 0]: {x.size} points, max error {worst:.2f} ulp")

    from fastce._vecmath import exp_nonpositive_f32

    @njit
    def exp_all_f32(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = exp_nonpositive_f32(x[i])
        return out

    edges = [0.0, -0.0, -87.3, -87.4, -103.9, -103.97, -104.0, -np.log(2) / 2, -np.log(2) * 1.5]
    x = np.concatenate([
        -rng.uniform(0, 1, 30_000), -rng.uniform(0, 20, 30_000), -rng.uniform(0, 104, 30_000),
        -rng.uniform(85, 104, 10_000), edges,
    ]).astype(np.float32)
    got = exp_all_f32(x)
    worst = 0.0
    for xi, gi in zip(x, got):
        ref = mpmath.exp(mpmath.mpf(float(xi)))
        worst = max(worst, float(abs(mpmath.mpf(float(gi)) - ref) / float(float32_ulp(float(ref)))))
    print(f"float32 exp on [-104, 0]: {x.size} points, max error {worst:.2f} float32 ulp")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    cross_entropy_errors(rng)
    binary_errors(rng)
    multilabel_errors(rng)
    exp_errors(rng)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
