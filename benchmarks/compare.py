"""fastce vs the memory-read roofline and its peers, side by side, in one run.

Usage::

    python benchmarks/compare.py [--sizes small|large] [--threads T] [--json FILE]
                                 [--classes 2 10 ...] [--repeats 5] [--min-time 0.5] [--budget 10]

For every (workload, C, dtype) it prints one row:

    fastce ms      min-of-k wall time of the fastce call (compilation excluded)
    GB/s           bytes fastce must read (the scores and the int64 labels) / fastce time
    roof GB/s      the roofline (plain vectorised parallel sums, benchmarks/roofline.py)
                   over the same bytes: the scores, then the labels; timed interleaved
                   with fastce; the faster of all threads and one thread (runs alternate)
    %roof          fastce GB/s / roof GB/s
    Gelem/s        score elements (N*C) per second
    vs f32         element rate / the float32 "evaluate logits" element rate at the
                   same C (half-precision rows: does reading half the bytes pay?)
    x torch, x sklearn, x numpy
                   peer time / fastce time for the same work (>1: fastce is faster).
                   Per byte when the peer ran on a subset of the rows.
    sk rows        rows scikit-learn was timed on, when fewer than N (it is ~100-1000x
                   slower and builds an N x C one-hot matrix; the ratio is per byte)
    np rows        the same for numpy/scipy (scipy's logsumexp needs ~40 bytes of
                   temporaries per float32 score: capped at 2**26 scores, 2**25 for
                   float64; sklearn likewise 2**21 / 2**20)
    check          fastce agrees with every peer (cross-entropy rtol 1e-4, accuracy
                   exactly, top-5 within tie-rule slack); MISMATCH or ERROR otherwise

Workloads: ``evaluate logits`` (CE + top-1 accuracy), ``evaluate logits top5``
(top_k=(1, 5)), ``cross_entropy`` (fastce.cross_entropy vs torch's
F.cross_entropy and a logsumexp CE, loss only), ``evaluate proba`` and
``log_loss`` (fastce.log_loss vs sklearn.metrics.log_loss only), in float32;
``evaluate binary logits`` (with the C=2 shapes; reported as C=1): 1-D float32 logits of
class 1 with as many elements as the C=2 arrays, vs torch's F.binary_cross_entropy_with_logits
+ (z > 0) accuracy;
``evaluate logits`` in float64 (half the rows of float32, i.e. the same bytes),
float16 and bfloat16 (same rows as float32).

Sizes: ``small`` N*C = 2**21 scores (a smoke test, 1-2 minutes); ``large``
N*C = 2**28 (1 GiB float32, far beyond the caches: the real measurement; about
20 minutes on a busy 2-core machine with 0.1-1.5 GB/s kernels, less as they get
faster; < 8 GB peak memory).  Timings are min-of-k: at least ``--repeats`` runs
and at least ``--min-time`` seconds per measurement (hundreds of runs of a
millisecond call), stopping after ``--budget`` seconds once two runs were made.
On a shared, noisy machine the minimum is the least disturbed run.  Exit status
2 when any row failed its check or raised.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import sys
import time
import traceback

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_data as bd  # noqa: E402
import peers as P  # noqa: E402
import roofline  # noqa: E402

SKLEARN_MAX_ELEMENTS = bd.SKLEARN_MAX_ELEMENTS  # rows x C given to scikit-learn at most
NUMPY_MAX_ELEMENTS = bd.NUMPY_MAX_ELEMENTS  # ... and to numpy/scipy (memory: see bench_data)


# --------------------------------------------------------------------------- one row


def _fastce_metrics(m):
    return m.cross_entropy, dict(m.top_k_accuracy)


def _agree(fastce_result, peer_result, dtype_name):
    """'' when they agree, else a short description of the difference."""
    ce, topk = fastce_result
    problems = []
    if not math.isclose(ce, peer_result.cross_entropy, rel_tol=1e-4, abs_tol=1e-7):
        problems.append(f"CE {ce:.6g} vs {peer_result.cross_entropy:.6g}")
    for k, acc in peer_result.top_k.items():
        # top-1 is argmax (first index wins) everywhere: exact.  top-k may break
        # ties differently (torch.topk, sklearn's argsort), so allow slack.
        slack = 1e-9 if k == 1 else (5e-2 if dtype_name in ("float16", "bfloat16") else 2e-3)
        if abs(topk.get(k, float("nan")) - acc) > slack:
            problems.append(f"top{k} {topk.get(k, float('nan')):.6g} vs {acc:.6g}")
    return "; ".join(problems)


def measure(workload, C, dtype_name, labels, scores, fastce_fn, peer_specs, args, top_k=(1,)):
    """Time fastce (interleaved with the roofline) and the peers on one case.

    ``fastce_fn(labels, scores) -> (ce, {k: acc})``; ``peer_specs``: name ->
    ``(fn(labels, input) -> PeerResult, make_input(rows) -> input, max_rows)``.
    """
    n = scores.shape[0]
    # The roofline reads every byte the workload must read, labels included (at C = 2 with int64 labels they
    # are half of them, 1-D binary logits two thirds): as 2-byte words, an integer checksum (see roofline.py).
    label_words = np.ascontiguousarray(labels).view(np.uint16)
    row = dict(workload=workload, C=C, dtype=dtype_name, N=n, bytes=scores.nbytes + labels.nbytes,
               score_bytes=scores.nbytes, elements=scores.size, peers={}, subset_rows={}, problems=[])
    progress(f"{workload:22s} C={C:<6d} {dtype_name:8s} N={n:<10d}")

    # Warm-up (compilation excluded) on the first rows: the same types, so the
    # same compiled kernels, without paying a full 1 GiB pass.  The arrays
    # were just written, so they are already paged in.
    warm_rows = min(n, max(1, (1 << 20) // C))
    fastce_result = None
    try:
        fastce_fn(labels[:warm_rows], scores[:warm_rows])
        fastce_ok = True
    except Exception as exc:  # a benchmark must never hide a crash
        row["problems"].append(f"ERROR {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
        row["traceback"] = traceback.format_exc()
        fastce_ok = False
    roofline.roofline_sum(scores[:warm_rows])
    roofline.roofline_sum(label_words[: 4 * warm_rows])
    best_fc = best_roof = math.inf
    spent = 0.0
    runs = 0
    # The roofline alternates between all threads and one thread and keeps the
    # faster: on a busy machine waking a second thread can cost more than the
    # whole read of a small array (and even at 1 GiB one thread sometimes wins).
    threads = numba.get_num_threads()
    roof_threads = [threads, 1] if threads > 1 else [threads]
    row["roofline_threads"] = threads
    # Same stopping rule as bench_data.min_time: >= repeats runs and >= min_time
    # seconds, but stop after the budget once two runs were made.
    while not (runs >= args.repeats and spent >= args.min_time) and not (runs >= 2 and spent >= args.budget):
        numba.set_num_threads(roof_threads[runs % len(roof_threads)])
        t0 = time.perf_counter()
        roofline.roofline_sum(scores)
        roofline.roofline_sum(label_words)
        t1 = time.perf_counter()
        numba.set_num_threads(threads)
        if t1 - t0 < best_roof:
            best_roof = t1 - t0
            row["roofline_threads"] = roof_threads[runs % len(roof_threads)]
        if fastce_ok:
            try:
                fastce_result = fastce_fn(labels, scores)
            except Exception as exc:
                row["problems"].append(f"ERROR {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
                row["traceback"] = traceback.format_exc()
                fastce_ok, fastce_result = False, None
            best_fc = min(best_fc, time.perf_counter() - t1)
        spent += time.perf_counter() - t0
        runs += 1
    row["runs"] = runs
    row["roofline_s"] = best_roof
    row["fastce_s"] = best_fc if fastce_ok else None
    if fastce_result is None:
        return row
    row["cross_entropy"], row["top_k"] = fastce_result[0], {str(k): v for k, v in fastce_result[1].items()}

    for name, (fn, make_input, max_rows) in peer_specs.items():
        ok, why = P.available(name)
        if not ok:
            row["peers"][name] = {"skipped": why}
            continue
        rows = n if max_rows is None else max(1, min(n, max_rows))
        sub_labels = labels[:rows]
        try:
            peer_input = make_input(rows)
            seconds, result = bd.min_time(lambda: fn(sub_labels, peer_input), max(2, args.repeats // 2),
                                          budget_s=args.budget, min_total_s=args.min_time / 2)
        except Exception as exc:
            row["peers"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            row["problems"].append(f"{name} peer raised {type(exc).__name__}")
            continue
        reference = fastce_result if rows == n else fastce_fn(sub_labels, scores[:rows])
        difference = _agree(reference, result, dtype_name)
        if difference:
            row["problems"].append(f"MISMATCH vs {name}: {difference}")
        peer_bytes = scores.nbytes * rows / n
        row["peers"][name] = {"seconds": seconds, "rows": rows, "bytes": peer_bytes,
                              "ratio": (seconds / peer_bytes) / (row["fastce_s"] / scores.nbytes)}
        if rows < n:
            row["subset_rows"][name] = rows
        del peer_input
        gc.collect()
    return row


# --------------------------------------------------------------------------- the workloads of one C


def run_class(C, elements, args, out):
    import fastce

    n = bd.rows_for(elements, C)
    progress(f"-- C={C}: generating {n} x {C} float32 logits")
    labels, x32 = bd.make_logits(n, C, seed=C)
    sk_rows = bd.capped_rows(n, C, SKLEARN_MAX_ELEMENTS)
    np_rows = bd.capped_rows(n, C, NUMPY_MAX_ELEMENTS)
    np_rows64 = bd.capped_rows(n, C, NUMPY_MAX_ELEMENTS, itemsize=8)
    sk_rows64 = bd.capped_rows(n, C, SKLEARN_MAX_ELEMENTS, itemsize=8)

    def same(array):
        return lambda rows: array if rows == array.shape[0] else array[:rows]

    def softmax_of(array, dtype):
        return lambda rows: bd.softmax(array[:rows], dtype)

    def evaluate_logits(top_k):
        return lambda y, x: _fastce_metrics(fastce.evaluate(y, logits=x, top_k=top_k))

    def logits_peers(x, top_k, sk_dtype):
        wide = x.dtype.itemsize > 4
        specs = {
            "torch": (lambda y, s: P.torch_logits(y, s, top_k), same(x), None),
            "sklearn": (lambda y, s: P.sklearn_proba(y, s, top_k), softmax_of(x, sk_dtype),
                        sk_rows64 if wide else sk_rows),
            "numpy": (lambda y, s: P.numpy_logits(y, s, top_k), same(x), np_rows64 if wide else np_rows),
        }
        if sk_dtype is None:
            del specs["sklearn"]
        return specs

    # float32 logits: CE + top-1, CE + top-1/top-5, torch-style cross_entropy.
    out.append(measure("evaluate logits", C, "float32", labels, x32, evaluate_logits((1,)),
                       logits_peers(x32, (1,), np.float32), args))
    if C >= 10:
        out.append(measure("evaluate logits top5", C, "float32", labels, x32, evaluate_logits((1, 5)),
                           logits_peers(x32, (1, 5), np.float32), args))
    out.append(measure(
        "cross_entropy", C, "float32", labels, x32,
        lambda y, x: (fastce.cross_entropy(x, y), {}),
        {"torch": (P.torch_cross_entropy, same(x32), None),
         "numpy": (lambda y, s: P.numpy_logits(y, s, ()), same(x32), np_rows)},
        args))

    # float32 probabilities.
    progress(f"-- C={C}: softmax -> float32 probabilities")
    p32 = bd.softmax(x32, np.float32)
    out.append(measure(
        "evaluate proba", C, "float32", labels, p32,
        lambda y, p: _fastce_metrics(fastce.evaluate(y, proba=p)),
        {"torch": (P.torch_proba, same(p32), None),
         "sklearn": (P.sklearn_proba, same(p32), sk_rows),
         "numpy": (P.numpy_proba, same(p32), np_rows)},
        args))
    out.append(measure(
        "log_loss", C, "float32", labels, p32,
        lambda y, p: (fastce.log_loss(y, p, labels=np.arange(C)), {}),
        {"sklearn": (P.sklearn_log_loss, same(p32), sk_rows)},
        args))
    del p32
    gc.collect()

    # Half precision: same rows as float32 (half the bytes).
    for name in ("float16", "bfloat16"):
        if name == "bfloat16" and not bd.bfloat16_available():
            progress("-- bfloat16 skipped: ml_dtypes not installed")
            continue
        xh = bd.convert(x32, name)
        out.append(measure("evaluate logits", C, name, labels, xh, evaluate_logits((1,)),
                           logits_peers(xh, (1,), None), args))
        del xh
        gc.collect()

    # float64: half the rows, the same bytes as float32 (and bounded memory).
    rows64 = max(1, n // 2)
    x64 = bd.convert(x32, "float64", rows=rows64)
    labels64 = labels[:rows64]
    del x32
    gc.collect()
    out.append(measure("evaluate logits", C, "float64", labels64, x64, evaluate_logits((1,)),
                       logits_peers(x64, (1,), np.float64), args))
    del x64, labels, labels64
    gc.collect()
    if C == 2:
        run_binary(elements, args, out)


def run_binary(elements, args, out):
    """1-D float32 logits of class 1 (as many elements as the C=2 arrays): evaluate vs torch's BCE-with-logits."""
    import fastce

    progress(f"-- binary: generating {elements} float32 logits of class 1")
    labels, z = bd.make_binary_logits(elements, seed=2)
    out.append(measure(
        "evaluate binary logits", 1, "float32", labels, z,
        lambda y, x: _fastce_metrics(fastce.evaluate(y, logits=x)),
        {"torch": (P.torch_binary_logits, lambda rows: z if rows == z.shape[0] else z[:rows], None)},
        args))
    del labels, z
    gc.collect()


# --------------------------------------------------------------------------- report


WORKLOAD_ORDER = ["evaluate logits", "evaluate logits top5", "cross_entropy", "evaluate proba", "log_loss",
                  "evaluate binary logits"]
DTYPE_ORDER = ["float32", "float64", "float16", "bfloat16"]


def _fmt(value, spec, missing="-"):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def format_table(rows):
    # Element rate of float32 "evaluate logits" per C, for the "vs f32" column.
    f32_rate = {}
    for r in rows:
        if r["workload"] == "evaluate logits" and r["dtype"] == "float32" and r.get("fastce_s"):
            f32_rate[r["C"]] = r["elements"] / r["fastce_s"]
    header = ["workload", "C", "dtype", "N", "fastce ms", "GB/s", "roof GB/s", "%roof", "Gelem/s", "vs f32",
              "x torch", "x sklearn", "x numpy", "sk rows", "np rows", "check"]
    lines = []
    ordered = sorted(rows, key=lambda r: (WORKLOAD_ORDER.index(r["workload"]), DTYPE_ORDER.index(r["dtype"]), r["C"]))
    previous = None
    table = []
    for r in ordered:
        key = (r["workload"], r["dtype"])
        if previous is not None and key != previous:
            table.append(None)  # separator
        previous = key
        fs = r.get("fastce_s")
        gbps = r["bytes"] / fs / 1e9 if fs else None
        roof = r["bytes"] / r["roofline_s"] / 1e9
        rate = r["elements"] / fs if fs else None
        vs32 = rate / f32_rate[r["C"]] if rate and r["C"] in f32_rate and r["workload"] == "evaluate logits" else None

        def ratio(name):
            peer = r["peers"].get(name)
            if peer is None:
                return "n/a"
            if "ratio" not in peer:
                return "skip" if "skipped" in peer else "error"
            return f"{peer['ratio']:.1f}" + ("*" if peer["rows"] < r["N"] else "")

        check = "; ".join(r["problems"]) or ("ok" if r["peers"] else "unchecked")
        table.append([
            r["workload"], str(r["C"]), r["dtype"], str(r["N"]),
            _fmt(fs * 1e3 if fs else None, ".1f"), _fmt(gbps, ".2f"), _fmt(roof, ".2f"),
            _fmt(gbps / roof * 100 if gbps else None, ".0f") + ("%" if gbps else ""),
            _fmt(rate / 1e9 if rate else None, ".3f"),
            _fmt(vs32, ".2f") if r["dtype"] != "float32" and r["workload"] == "evaluate logits" else "",
            ratio("torch"), ratio("sklearn"), ratio("numpy"),
            str(r["subset_rows"].get("sklearn", "")), str(r["subset_rows"].get("numpy", "")), check,
        ])
    widths = [max(len(h), *(len(t[i]) for t in table if t)) for i, h in enumerate(header)]
    widths[-1] = len(header[-1])  # the check column is last: no padding

    def line(cells):
        return "  ".join(c.ljust(w) if i < 3 or i == len(cells) - 1 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines.append(line(header))
    lines.append("  ".join("-" * w for w in widths[:-1]) + "  " + "-----")
    for t in table:
        lines.append("" if t is None else line(t))
    return "\n".join(lines)


def progress(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sizes", choices=("small", "large"), default="small")
    parser.add_argument("--threads", type=int, default=None, help="numba and torch threads (default: numba's)")
    parser.add_argument("--json", metavar="FILE", help="also write machine info and every row as JSON")
    parser.add_argument("--classes", type=int, nargs="+", default=list(bd.CLASSES))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (min is reported)")
    parser.add_argument("--min-time", type=float, default=0.5,
                        help="keep repeating a fast measurement until this many seconds were spent (default 0.5)")
    parser.add_argument("--budget", type=float, default=10.0,
                        help="seconds per measurement after which repeats stop early (>= 2 runs)")
    args = parser.parse_args(argv)

    if args.threads:
        numba.set_num_threads(args.threads)
    import fastce  # noqa: F401  (imported after the thread count is set)

    roofline.compile_all()
    elements = bd.LARGE_ELEMENTS if args.sizes == "large" else bd.COMPARE_SMALL_ELEMENTS
    info = bd.machine_info()
    info["threading_layer"] = numba.threading_layer()
    info.update(sizes=args.sizes, elements=elements, repeats=args.repeats, budget_s=args.budget)

    rows = []
    started = time.perf_counter()
    for C in args.classes:
        run_class(C, elements, args, rows)
    elapsed = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    versions = " ".join(f"{k} {v}" for k, v in info["versions"].items())
    print(f"machine: {info['cpu']}; {info['usable_cpus']} usable CPUs of {info['logical_cpus']}; "
          f"{info['memory_gib']} GiB RAM; numba threads {info['numba_threads']} ({info['threading_layer']} layer); "
          f"load average at start {', '.join(f'{x:.2f}' for x in info['load_average'] or ())}")
    print(f"software: {versions}; fastce from {info['fastce_path']} (repository at {info['fastce_commit']})")
    print(f"sizes: {args.sizes} (N*C = 2**{int(math.log2(elements))} scores; float64 rows: N/2); "
          f"min of >= {args.repeats} runs / >= {args.min_time} s per measurement; wall {elapsed:.0f} s; "
          f"peak RSS {peak_gb:.1f} GB")
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    busy = max((info["load_average"] or (0,))[0], (load_end or (0,))[0])
    if busy > info["usable_cpus"]:
        print(f"WARNING: the machine was busy (1-minute load average up to {busy:.1f} on {info['usable_cpus']} CPUs): "
              "other processes competed for the cores, so absolute numbers are pessimistic and noisy.")
    print()
    print(format_table(rows))
    print()
    print("GB/s: bytes read per second (scores + int64 labels; the roofline reads the same). "
          "x peer: peer time / fastce time for the same rows (>1 = fastce faster).")
    print(f"*: peer timed on the first 'sk rows' / 'np rows' rows only (<= 2**{SKLEARN_MAX_ELEMENTS.bit_length() - 1} "
          f"/ 2**{NUMPY_MAX_ELEMENTS.bit_length() - 1} scores, half that in float64: memory), ratio per byte. "
          "sklearn on logits rows = log_loss+accuracy_score on softmax(logits) (it has no logits API).")
    print("torch/numpy on float16/bfloat16: upcast to float32 first, timed (torch's half CE overflows; "
          "numpy has no bfloat16 math).")

    failures = [r for r in rows if r["problems"]]
    for r in failures:
        if "traceback" in r:
            print(f"\n{r['workload']} C={r['C']} {r['dtype']}:\n{r['traceback']}", file=sys.stderr)
    if args.json:
        for r in rows:
            r.pop("traceback", None)
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "rows": rows}, fh, indent=2, default=str)
        print(f"wrote {args.json}")
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
