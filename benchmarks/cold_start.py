"""Cold-start cost of fastce: ``import fastce`` + the first ``evaluate``, in fresh processes.

Usage::

    python benchmarks/cold_start.py [--runs 2] [--dtypes float32 ...] [--classes 10] [--doors] [--keep] [--python PATH]
                                    [--no-bytecode]

``--python``: the interpreter of the fresh processes (default: this one), e.g. that of a venv
holding only fastce's core dependencies (numpy, numba): with scipy installed, numba's first load
of a compiled function imports scipy.linalg (~0.13 s, numba's BLAS check).

What it does:

1. copies ``src/fastce`` (without any ``__pycache__``) into a new temporary
   directory and puts that copy first on ``PYTHONPATH``, so the numba cache
   that may sit next to the in-tree sources is never seen;
2. points ``NUMBA_CACHE_DIR`` at a second, empty temporary directory (numba
   then reads and writes its cache only there; ``fastce._config`` leaves a
   user-set ``NUMBA_CACHE_DIR`` alone);
3. lets the processes write and read fastce's bytecode (``.pyc``) in that
   copy, as an installed package has it (``--no-bytecode``: none, every
   process compiles fastce's modules from source);
4. runs ``--runs`` fresh Python processes one after the other, each timing
   ``import fastce`` and the first and second ``fastce.evaluate`` on a small
   (1000 x 10) array of each ``--dtypes`` dtype (``--classes 100``: 1000 x 100,
   the long-row kernel).  Run 1 starts with an empty
   cache (everything is compiled and written); later runs load it (warm cache).

``--doors``: then the first call of each other door in turn (two-class and 1-D binary logits,
multi-label and soft targets, ``diagnose``, ``compare`` of multi-class and of binary models,
probabilities, and ``precision="float64"``: float32, the same rows), each after the ones before it:
what a further path compiles (probabilities and float64 math compile kernels of their own, see
kernels.general_tokens).

It prints, per run, the process wall time (interpreter start to exit), the
import time, the first-call time (compile or cache load) and the second-call
time (the steady state), plus the size of the cache written.  Each process
also checks that it imported the copy and that the cache went to the
temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src", "fastce")

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
import numpy as np
t_numpy = time.perf_counter()
import numba
t_numba = time.perf_counter()
import fastce
t_import = time.perf_counter()
dtypes = sys.argv[1].split(",")
n_classes = int(sys.argv[2])
rng = np.random.default_rng(0)
logits64 = rng.standard_normal((1000, n_classes))
labels = rng.integers(0, n_classes, 1000)
first, second = {}, {}
for name in dtypes:
    if name == "bfloat16":
        import ml_dtypes
        x = logits64.astype(ml_dtypes.bfloat16)
    else:
        x = logits64.astype(name)
    t = time.perf_counter()
    fastce.evaluate(labels, logits=x)
    first[name] = time.perf_counter() - t
    t = time.perf_counter()
    fastce.evaluate(labels, logits=x)
    second[name] = time.perf_counter() - t
z = logits64.astype(np.float32)
targets = rng.random(z.shape).astype(np.float32)
doors = {
    "two-class logits": lambda: fastce.evaluate(labels % 2, logits=z[:, :2].copy()),
    "binary 1-D logits": lambda: fastce.evaluate(labels % 2, logits=z[:, 0].copy()),
    "multi-label": lambda: fastce.evaluate((targets < 0.3).astype(np.float32), logits=z),
    "soft targets": lambda: fastce.evaluate(targets / targets.sum(axis=1, keepdims=True), logits=z),
    "diagnose": lambda: fastce.diagnose(labels, logits=z),
    "compare": lambda: fastce.compare(labels, logits={"A": z, "B": z[::-1].copy()}),
    "compare binary": lambda: fastce.compare(labels % 2, logits={"A": z[:, 0].copy(), "B": z[:, 1].copy()}),
    "probabilities": lambda: fastce.evaluate(labels, proba=np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)),
    "precision float64": lambda: fastce.evaluate(labels, logits=z, precision="float64"),
}
door_first = {}
for name in (sys.argv[3].split(";") if len(sys.argv) > 3 and sys.argv[3] else []):
    t = time.perf_counter()
    doors[name]()
    door_first[name] = time.perf_counter() - t
print(json.dumps({
    "door_first_s": door_first,
    "fastce_file": fastce.__file__,
    "cache_dir": numba.config.CACHE_DIR,
    "numpy_import_s": t_numpy - t0,
    "numba_import_s": t_numba - t_numpy,
    "fastce_import_s": t_import - t_numba,
    "first_evaluate_s": first,
    "second_evaluate_s": second,
}))
"""


def _tree_size(path):
    files = total = 0
    for root, _, names in os.walk(path):
        for name in names:
            files += 1
            total += os.path.getsize(os.path.join(root, name))
    return files, total


DOORS = ("two-class logits", "binary 1-D logits", "multi-label", "soft targets", "diagnose", "compare",
         "compare binary", "probabilities", "precision float64")


def run_child(env, dtypes, n_classes=10, python=sys.executable, doors=()):
    t0 = time.perf_counter()
    proc = subprocess.run([python, "-c", CHILD, ",".join(dtypes), str(n_classes), ";".join(doors)], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child process failed with status {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="fresh processes in a row (1: empty cache, then warm)")
    parser.add_argument("--dtypes", nargs="+", default=["float32"],
                        help="logit dtypes evaluated in each process (float32 float64 float16 bfloat16)")
    parser.add_argument("--classes", type=int, default=10,
                        help="columns of the logits (up to 32: the short-row kernel; more: the long-row one)")
    parser.add_argument("--src", default=SRC, help="the fastce package directory to copy (default: src/fastce)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--json", metavar="FILE", help="write the measurements as JSON")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter of the fresh processes (default: this one)")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="fresh processes write no .pyc (PYTHONDONTWRITEBYTECODE=1): fastce's modules are "
                             "compiled from source in every process (default: the first process writes them)")
    parser.add_argument("--doors", action="store_true",
                        help="after the evaluates, time each other door's first call (float32, same rows): "
                             + ", ".join(DOORS))
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="fastce-cold-")
    try:
        package_root = os.path.join(workdir, "pkg")
        cache_dir = os.path.join(workdir, "numba-cache")
        shutil.copytree(args.src, os.path.join(package_root, "fastce"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", "*.pyc"))
        os.makedirs(cache_dir)
        env = dict(os.environ)
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["NUMBA_CACHE_DIR"] = cache_dir
        env.pop("NUMBA_DISABLE_JIT", None)
        # Bytecode as an installed package has it: pip byte-compiles what it installs (numpy's and numba's
        # .pyc are there), and Python writes a .pyc at a first import unless told not to.  A shell with
        # PYTHONDONTWRITEBYTECODE set (this project's machines) would otherwise compile fastce's ~40 modules
        # from source in every process (~0.07 s) while its dependencies load bytecode.
        if args.no_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)

        print(f"fastce copied from {args.src} to {package_root}; NUMBA_CACHE_DIR={cache_dir}")
        print(f"each run: fresh `{args.python}` process, import fastce, evaluate() twice on "
              f"1000 x {args.classes} logits of {', '.join(args.dtypes)}; "
              + ("no .pyc written" if args.no_bytecode else "the first run writes fastce's .pyc, later runs load them"))
        print()
        header = f"{'run':18s} {'process s':>9s} {'numpy+numba import s':>20s} {'import fastce s':>15s} " \
                 f"{'1st evaluate s':>14s} {'2nd evaluate ms':>15s} {'cache files/MB':>14s}"
        print(header)
        print("-" * len(header))
        results = []
        for i in range(args.runs):
            result = run_child(env, args.dtypes, args.classes, args.python, DOORS if args.doors else ())
            assert result["fastce_file"].startswith(package_root), f"imported the wrong fastce: {result['fastce_file']}"
            assert os.path.realpath(result["cache_dir"]) == os.path.realpath(cache_dir), result["cache_dir"]
            files, size = _tree_size(cache_dir)
            result["cache_files"], result["cache_bytes"] = files, size
            label = "1 (empty cache)" if i == 0 else f"{i + 1} (warm cache)"
            print(f"{label:18s} {result['process_wall_s']:9.2f} "
                  f"{result['numpy_import_s'] + result['numba_import_s']:20.2f} {result['fastce_import_s']:15.2f} "
                  f"{sum(result['first_evaluate_s'].values()):14.2f} "
                  f"{sum(result['second_evaluate_s'].values()) * 1e3:15.2f} {files:>7d}/{size / 2**20:<6.1f}")
            if len(args.dtypes) > 1:
                for name in args.dtypes:
                    print(f"{'':18s} {'':9s} {'':20s} {'':15s} {result['first_evaluate_s'][name]:14.2f} "
                          f"{result['second_evaluate_s'][name] * 1e3:15.2f}  {name}")
            for name, seconds in result["door_first_s"].items():
                print(f"{'':18s} {'':9s} {'':20s} {'':15s} {seconds:14.2f} {'':15s}  then {name} (first call)")
            results.append(result)
        if len(results) >= 2:
            cold = results[0]["process_wall_s"]
            warm = min(r["process_wall_s"] for r in results[1:])
            print()
            print(f"cold start (empty cache): {cold:.2f} s per process; warm cache: {warm:.2f} s "
                  f"(compilation costs {cold - warm:.2f} s once per machine / fastce version)")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=2)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
