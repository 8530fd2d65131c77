"""Every door's throughput next to ``evaluate(logits=)``'s, in one run: the survey that finds a slow door.

Usage::

    python benchmarks/doors.py [--classes 100] [--mib 256] [--repeats 3]

On about ``--mib`` MiB of float32 logits (N x C, 3 * N(0, 1)) and their int64
labels, and what each door needs besides (their softmax as probabilities, a
0/1 indicator for multi-label, float64 sample weights), it times each door
(best of ``--repeats`` calls, compilation excluded) and prints milliseconds,
GB/s over the bytes that door must read, and ``x evaluate``: its time per byte
over ``evaluate(labels, logits=z)``'s.  A door far above the others is worth a
profile: this survey found the multi-label fast path reading each element's
row weight through a masked vector load (10 ns an element where 2 was
measured before) and the soft targets' max in a scalar loop.  Asserts nothing;
the roofline fractions are ``compare.py`` (multi-class) and ``task_roofline.py``
(multi-label, soft targets).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_data as bd  # noqa: E402
import fastce  # noqa: E402


def doors(num_classes: int, mib: float, seed: int = 0):
    """(name, call, bytes read) of every door on arrays of about ``mib`` MiB of float32 logits."""
    rng = np.random.default_rng(seed)
    n = max(2, int(mib * (1 << 20)) // 4 // num_classes)
    z = rng.standard_normal((n, num_classes), dtype=np.float32) * 3
    y = rng.integers(0, num_classes, n)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    del e
    w = rng.uniform(size=n)
    hot = rng.random((n, num_classes), dtype=np.float32) < 0.3
    hot_u8 = hot.astype(np.uint8)
    hot_f32 = hot.astype(np.float32)
    classes = np.arange(num_classes)
    ignored = np.where(y % 7 == 0, -100, y)
    groups = y % 5
    # compare's second model: C-contiguous, as models' outputs are (a reversed view would be copied a call at a
    # time, 10% of compare's time: a layout's price, not the door's).
    other = np.ascontiguousarray(z[::-1])
    # 1-D binary scores: a quarter of the logits' entries as rows (their int64 labels and weights are 3x the bytes).
    z1 = z.reshape(-1)[: z.size // 4]
    y1 = rng.integers(0, 2, z1.size)
    p1 = (1.0 / (1.0 + np.exp(-z1))).astype(np.float32)
    w1 = rng.uniform(size=z1.size)
    sigmoid = (1 / (1 + np.exp(-z))).astype(np.float32)
    logits_bytes = z.nbytes + y.nbytes
    return [
        ("evaluate logits", lambda: fastce.evaluate(y, logits=z), logits_bytes),
        ("evaluate logits top_k=(1, 5)", lambda: fastce.evaluate(y, logits=z, top_k=(1, 5)), logits_bytes),
        ("evaluate logits sample_weight", lambda: fastce.evaluate(y, logits=z, sample_weight=w),
         logits_bytes + w.nbytes),
        ("evaluate logits ignore_index", lambda: fastce.evaluate(ignored, logits=z, ignore_index=-100), logits_bytes),
        ("evaluate logits groups", lambda: fastce.evaluate(y, logits=z, groups=groups), logits_bytes + groups.nbytes),
        ("evaluate proba", lambda: fastce.evaluate(y, proba=p), p.nbytes + y.nbytes),
        ("log_loss sample_weight", lambda: fastce.log_loss(y, p, sample_weight=w, labels=classes),
         p.nbytes + y.nbytes + w.nbytes),
        ("cross_entropy", lambda: fastce.cross_entropy(z, y), logits_bytes),
        ("cross_entropy label_smoothing", lambda: fastce.cross_entropy(z, y, label_smoothing=0.1), logits_bytes),
        ("cross_entropy soft targets", lambda: fastce.cross_entropy(z, p), z.nbytes + p.nbytes),
        ("evaluate soft targets", lambda: fastce.evaluate(p, logits=z, task="soft"), z.nbytes + p.nbytes),
        # The default task="auto" first reads the targets to tell their kind (fastce.tasks).
        ("evaluate soft targets (task auto)", lambda: fastce.evaluate(p, logits=z), z.nbytes + p.nbytes),
        ("evaluate multilabel (uint8 targets)", lambda: fastce.evaluate(hot_u8, logits=z, task="multilabel"),
         z.nbytes + hot_u8.nbytes),
        ("evaluate multilabel (float32 targets)", lambda: fastce.evaluate(hot_f32, logits=z, task="multilabel"),
         z.nbytes + hot_f32.nbytes),
        ("evaluate multilabel (uint8, task auto)", lambda: fastce.evaluate(hot_u8, logits=z),
         z.nbytes + hot_u8.nbytes),
        ("binary_cross_entropy (N, C)", lambda: fastce.binary_cross_entropy(sigmoid, hot_f32),
         sigmoid.nbytes + hot_f32.nbytes),
        ("binary 1-D logits", lambda: fastce.evaluate(y1, logits=z1), z1.nbytes + y1.nbytes),
        ("binary 1-D logits sample_weight", lambda: fastce.evaluate(y1, logits=z1, sample_weight=w1),
         z1.nbytes + y1.nbytes + w1.nbytes),
        ("binary 1-D proba (log_loss)", lambda: fastce.evaluate(y1, proba=p1), p1.nbytes + y1.nbytes),
        ("binary 1-D proba sample_weight", lambda: fastce.evaluate(y1, proba=p1, sample_weight=w1),
         p1.nbytes + y1.nbytes + w1.nbytes),
        ("compare two models", lambda: fastce.compare(y, logits={"a": z, "b": other}), 2 * z.nbytes + y.nbytes),
        ("diagnose", lambda: fastce.diagnose(y, logits=z), logits_bytes),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--mib", type=float, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"C = {args.classes}, ~{args.mib:g} MiB of float32 logits, best of {args.repeats}")
    print(f"{'door':40s} {'ms':>9s} {'GB/s':>7s} {'x evaluate':>11s}")
    reference = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the doors' advice (e.g. probabilities given as logits) is not measured
        for name, call, nbytes in doors(args.classes, args.mib):
            call()  # compile, or load from the cache: untimed (min_time would time a first call over 1 s)
            seconds, _ = bd.min_time(call, args.repeats, warmup=False)
            per_byte = seconds / nbytes
            reference = per_byte if reference is None else reference
            print(f"{name:40s} {seconds * 1e3:9.2f} {nbytes / seconds / 1e9:7.2f} {per_byte / reference:11.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
