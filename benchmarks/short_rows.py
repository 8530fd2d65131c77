"""evaluate(y, logits=z, top_k=(1, 5)) over short rows against a roofline that reads the same bytes.

Usage::

    python benchmarks/short_rows.py [C ...] [--mb 1024] [--repeats 5] [--dtype float32]

For each C: float32 logits (3 * N(0, 1)) of ``--mb`` MiB and int64 labels, the
roofline (benchmarks/roofline.py's sum) over the scores *and* the labels --
fastce reads both, and at C = 2 the labels are as many bytes as the scores --
timed alternately with fastce, ``--repeats`` times each.  Prints min and median
times, GB/s over scores + labels, and the fraction of the roofline (min over
min, median over median).  The figures of issue 16 (short rows) come from it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import roofline  # noqa: E402

import fastce  # noqa: E402


def measure(num_classes: int, mb: int, repeats: int, dtype: str = "float32") -> dict:
    """Times (seconds) of the roofline and of fastce over the same data, alternated."""
    rows = max(1, (mb << 20) // (num_classes * np.dtype(dtype).itemsize))
    rng = np.random.default_rng(0)
    z = (rng.standard_normal((rows, num_classes), dtype=np.float32) * 3).astype(dtype)
    y = rng.integers(0, num_classes, rows)
    roofline.compile_all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastce.FastCEWarning)  # top-5 of two classes is meaningless: said once
        fastce.evaluate(y, logits=z, top_k=(1, 5))
        roof, fast = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            roofline.roofline_sum(z)
            roofline.roofline_sum(y.view(np.uint16))  # the labels' bytes (an int64 sum would not vectorise as well)
            roof.append(time.perf_counter() - start)
            start = time.perf_counter()
            fastce.evaluate(y, logits=z, top_k=(1, 5))
            fast.append(time.perf_counter() - start)
    return {"C": num_classes, "rows": rows, "bytes": z.nbytes + y.nbytes, "roofline": roof, "fastce": fast}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("classes", type=int, nargs="*", default=[2, 10])
    parser.add_argument("--mb", type=int, default=1024, help="MiB of scores per C (default 1024)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = parser.parse_args(argv)
    print(f"fastce {fastce.__file__}, load average {os.getloadavg()[0]:.2f}")
    for num_classes in args.classes:
        m = measure(num_classes, args.mb, args.repeats, args.dtype)
        fast, roof = np.array(m["fastce"]), np.array(m["roofline"])
        print(f"C={num_classes:3d} rows={m['rows']:10d} fastce min {fast.min() * 1e3:8.1f} ms "
              f"median {np.median(fast) * 1e3:8.1f} ms  {m['bytes'] / fast.min() / 1e9:6.2f} GB/s | "
              f"roofline min {roof.min() * 1e3:7.1f} ms {m['bytes'] / roof.min() / 1e9:6.2f} GB/s | "
              f"fraction {roof.min() / fast.min():6.1%} (min) {np.median(roof) / np.median(fast):6.1%} (median)",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
