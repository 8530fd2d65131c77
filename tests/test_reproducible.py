"""The same numbers in a process that compiled the kernels and in one that loaded them from numba's cache,
and (all but compare) for every vector instruction set.

CI runners compile on their first call and compare numbers between runs; a
user's first run compiles, the next ones load.  Each case runs twice in
fresh processes sharing one empty ``NUMBA_CACHE_DIR``: the first compiles
and writes the cache, the second loads it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, fastce
    from numba.core import base
    refreshes = []  # numba's registry refreshes: before every compile, and before a cache load but fastce's
    refresh = base.BaseContext.refresh
    base.BaseContext.refresh = lambda self: refreshes.append(1) or refresh(self)
    for case in sys.argv[1:]:
        C, weighted, top_k, n, kind = case.split("/")
        C, weighted, top_k, n = int(C), weighted == "w", tuple(int(k) for k in top_k.split(",")), int(n)
        rng = np.random.default_rng(C)
        if C == 1:  # binary: 1-D logits
            z, y = rng.standard_normal(n), rng.integers(0, 2, n)
        else:
            z, y = (2 * rng.standard_normal((n, C))).astype(np.float32), rng.integers(0, C, n)
        w = rng.random(n) if weighted else None
        if kind in ("bproba", "bproba-compare"):  # 1-D probabilities (C = 1)
            p = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
            m = fastce.evaluate(y, proba=p, sample_weight=w, top_k=top_k)
            if kind == "bproba-compare":
                c = fastce.compare(y, proba={"A": p, "B": p[::-1].copy()}, sample_weight=w, top_k=top_k)
                print(case, c.to_json())
        elif kind == "compare":
            c = fastce.compare(y, logits={"A": z, "B": z + rng.standard_normal(z.shape).astype(z.dtype)},
                               sample_weight=w, top_k=top_k)
            print(case, c.to_json())
        if kind in ("bproba", "bproba-compare"):
            pass
        elif kind == "multilabel":  # the multi-label kernel's fast path (row weights only)
            t = (rng.random((n, C)) < 0.3).astype(np.uint8)
            m = fastce.evaluate(t, logits=z, sample_weight=w, task="multilabel")
        elif kind == "soft":  # soft targets, and label smoothing (the soft-target kernel)
            t = rng.random((n, C))
            m = fastce.evaluate(t / t.sum(axis=1, keepdims=True), logits=z)
            print(case, float(fastce.cross_entropy(z, y, label_smoothing=0.1)).hex())
        elif kind in ("proba", "proba16"):
            e = np.exp(z - z.max(axis=1, keepdims=True))
            p = (e / e.sum(axis=1, keepdims=True)).astype(np.float16 if kind == "proba16" else np.float32)
            m = fastce.evaluate(y, proba=p, sample_weight=w, top_k=top_k)
        else:
            m = fastce.evaluate(y, logits=z.astype(np.float64) if kind == "float64" else z, sample_weight=w,
                                top_k=top_k)
        print(case, json.dumps({k: float(v).hex() if isinstance(v, float) else v for k, v in m.to_dict().items()},
                               default=lambda d: {str(k): float(x).hex() for k, x in d.items()}))
    print("REFRESHES", len(refreshes))
    """
)

# C / weighted / top_k / rows / kind; C = 1 is binary (1-D logits).
MULTICLASS = [
    "2/w/1/20000/logits", "10/u/1,5/20000/logits", "24/w/1,5/20000/logits", "100/w/1/20000/logits",
    # Cases that once differed in the last bit: the Brier standard error at C = 1000 (fresh against
    # cached), weighted probabilities (fresh against cached, AVX2 against AVX-512).
    "1000/u/1,2/40000/logits", "300/w/1,5/20000/proba", "300/u/1,3/20000/float64",
    # float16 rows read in lanes: F16C's conversion on the host, the integer decoder on an AVX2 or SSE2 build.
    "300/u/1/20000/proba16",
]
# Binary (1-D logits) and long soft-target rows, summed in the same lanes order; short soft-target rows (C <= 48)
# and multi-label rows, summed in column order.
BINARY = ["1/u/1/20000/logits", "1/w/1,2/20000/logits", "1/w/1/20000/bproba", "1/u/1,2/20000/bproba",
          "300/u/1/5000/soft", "10/u/1/5000/soft", "12/w/1/20000/multilabel"]
# compare first: the kernels another door compiles or loads must not change evaluate's bits.
CASES = ["10/w/1,2/20000/compare", "1/w/1/20000/bproba-compare", *BINARY, *MULTICLASS]


def _run(cache, cases, cpu=None, features=None) -> list[str]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    if cpu:
        env["NUMBA_CPU_NAME"] = cpu  # numba compiles for this CPU instead of the host's
    if features is not None:
        env["NUMBA_CPU_FEATURES"] = features  # without it numba keeps the host's features (AVX-512 included)
    out = subprocess.run([sys.executable, "-c", SCRIPT, *cases], capture_output=True, text=True, env=env, check=True)
    return out.stdout.splitlines()


# An AVX2 machine (Zen 3, Haswell and later): no AVX-512.
AVX2_FEATURES = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,+pclmul,"
                 "+popcnt,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave")


def _differences(a: list[str], b: list[str]) -> list[str]:
    a, b = _results(a), _results(b)
    assert len(a) == len(b)
    return [x.split(" ", 1)[0] for x, y in zip(a, b) if x != y]


def _results(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("REFRESHES ")]


def _refreshes(lines: list[str]) -> int:
    return int(lines[-1].removeprefix("REFRESHES "))


@pytest.fixture(scope="module")
def host_run(tmp_path_factory):
    """Every case in a process that compiles every kernel, with an empty cache it fills."""
    cache = tmp_path_factory.mktemp("numba")
    return cache, _run(cache, CASES)


def test_a_fresh_compile_and_the_cache_give_the_same_bits(host_run):
    cache, compiled = host_run
    cached = _run(cache, CASES)  # the second process loads every kernel from the cache
    assert not _differences(compiled, cached)
    # ... without numba's registry refresh (fastce._config._light_load_cache), which a compile needs.
    assert _refreshes(compiled) > 0
    assert _refreshes(cached) == 0


def _host_has_avx512() -> bool:
    import llvmlite.binding as llvm

    return bool(llvm.get_host_cpu_features().get("avx512f"))


# The cases that read float16 scores: numba's "generic" CPU has no F16C, so they take the integer decoder.
WITHOUT_F16C = [case for case in MULTICLASS if case.endswith("16")]


def test_every_vector_instruction_set_gives_the_same_bits(host_run, tmp_path):
    """The multi-class, binary and soft-target sums are in an order written in the source (fastce._lanes):
    code compiled for another vector width gives the host's bits -- for AVX2 on an AVX-512 host, for SSE2 only
    (numba's "generic" CPU) on others -- and so does code decoding float16 without F16C (generic, on every host).
    Before, AVX2 and AVX-512 builds differed in the last bits (C = 1000, weighted probabilities).

    Both builds for AVX2 and for SSE2 take the staged forms (_vecmath.STAGED_FORMS), the AVX-512 host's the fused
    ones: tests/test_vector_forms.py compares the forms on special values, on either host.  An AVX-512 host
    compiles the generic build for the float16 cases only: every case again (~30 s of CI) would check the widths
    a second time."""
    _, host = host_run
    cases = BINARY + MULTICLASS
    ordered = [line for line in _results(host) if line.split(" ", 1)[0] in cases]  # some cases print two lines
    if _host_has_avx512():
        assert not _differences(ordered, _run(tmp_path / "avx2", cases, cpu="haswell", features=AVX2_FEATURES))
        cases = WITHOUT_F16C
        ordered = [line for line in ordered if line.split(" ", 1)[0] in cases]
    assert WITHOUT_F16C and set(WITHOUT_F16C) <= set(cases)
    assert not _differences(ordered, _run(tmp_path / "generic", cases, cpu="generic"))
