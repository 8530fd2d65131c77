"""pytest-benchmark benchmarks of fastce, the memory-read roofline and the peers.

Run::

    pytest benchmarks/                                  # each benchmark once, as a test (CI; < 60 s)
    pytest benchmarks/ --benchmark-enable               # timed, small shapes
    pytest benchmarks/ --benchmark-only                 # timed, benchmarks only
    pytest benchmarks/ --benchmark-json out.json        # timed, JSON written (implies --benchmark-enable)
    pytest benchmarks/ -m large --benchmark-enable      # timed, large shapes (N*C = 2**28, 1 GiB float32)

Shapes: C = 2, 10, 100, 1000, 32000 classes.  By default N*C = 2**18 scores
(1 MiB float32) so the whole file, numba compilation included, runs in well
under a minute and the benchmarks cannot rot.  The large shapes (N*C = 2**28)
carry the ``large`` marker and are deselected unless selected with ``-m large``
(see conftest.py); they need ~8 GB of RAM and several minutes.

Benchmarks are grouped per shape, ``benchmark.group = "C=<C> <dtype>"`` (with
" large" appended for large shapes), so each group compares fastce with the
roofline (a vectorised parallel sum over the same bytes) and the peers on the
same data.  ``extra_info`` holds N, C, dtype, bytes and elements: GB/s is
bytes / time.  float64 uses the first N/2 rows (the same bytes as float32);
scikit-learn runs on at most 2**21 and numpy/scipy on at most 2**26 scores'
worth of rows, 2**25 in float64 (extra_info["rows"]; see bench_data: memory).

Every benchmark checks its answer against an independent float64 reference
(``bench_data.reference``) before it passes: a benchmark can never time a
wrong result.  No assertion is made about time.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_data as bd  # noqa: E402
import peers as P  # noqa: E402
import roofline  # noqa: E402

import fastce  # noqa: E402

ROUNDS = 3  # at least this many timed rounds per benchmark
MAX_ROUNDS = 200
TARGET_SECONDS = 0.2  # timed seconds per fast benchmark (small shapes: ~30 s for the file)
HALF = ("float16", "bfloat16")


class Case:
    """Labels and float32 logits of one shape; other dtypes derived on demand, one kept at a time."""

    def __init__(self, size: str, num_classes: int):
        self.size = size
        self.C = num_classes
        elements = bd.LARGE_ELEMENTS if size == "large" else bd.SMALL_ELEMENTS
        self.N = bd.rows_for(elements, num_classes)
        self.labels, self.logits32 = bd.make_logits(self.N, num_classes, seed=num_classes)
        self._derived = {}
        self._references = {}

    def get(self, kind: str, dtype: str):
        """(labels, scores) for kind "logits" or "proba" in ``dtype``."""
        if dtype == "bfloat16" and not bd.bfloat16_available():
            pytest.skip("ml_dtypes is not installed")
        rows = self.N // 2 if dtype == "float64" and self.N >= 2 else self.N
        key = (kind, dtype)
        if kind == "logits" and dtype == "float32":
            return self.labels, self.logits32
        if key not in self._derived:
            self._derived.clear()
            self.collect()
            if kind == "logits":
                self._derived[key] = bd.convert(self.logits32, dtype, rows=rows)
            else:
                self._derived[key] = bd.softmax(self.logits32[:rows], bd.np_dtype(dtype))
        return self.labels[:rows], self._derived[key]

    def reference(self, kind: str, dtype: str, top_k=(1,), rows=None):
        """Cached float64 reference (cross_entropy, {k: accuracy}) of get(kind, dtype)[:rows]."""
        key = (kind, dtype, tuple(top_k), rows)
        if key not in self._references:
            labels, scores = self.get(kind, dtype)
            if rows is not None:
                labels, scores = labels[:rows], scores[:rows]
            self._references[key] = bd.reference(labels, scores, proba=kind == "proba", top_k=top_k)
        return self._references[key]

    def release(self):
        """Drop the shape's arrays now (pytest holds the fixture's value a while after its teardown)."""
        self.labels = self.logits32 = None
        self._derived.clear()
        self.collect()

    def collect(self):
        """gc.collect() after dropping a large shape's arrays, so that two never coexist (numpy frees an array
        when its last reference goes; a collection finds any held in a cycle).  Not for the small shapes: a
        collection of this process's heap (torch, scikit-learn, numba) takes ~0.16 s, and under pytest-xdist,
        whose workers take the tests of a shape in turns, one or two came with nearly every benchmark (~40 s of
        CI's two workers)."""
        if self.size == "large":
            gc.collect()

    @property
    def group_suffix(self):
        return " large" if self.size == "large" else ""


CASES = [pytest.param(("small", C), id=f"C{C}") for C in bd.CLASSES] + [
    pytest.param(("large", C), id=f"large-C{C}", marks=pytest.mark.large) for C in bd.CLASSES
]


@pytest.fixture(scope="module", params=CASES)
def case(request):
    # Module scope + params: pytest runs every test of one shape before
    # building the next, so at most one shape's arrays are alive.
    size, num_classes = request.param
    data = Case(size, num_classes)
    yield data
    data.release()


def bench(benchmark, case, dtype, labels, scores, fn, **extra):
    """Time ``fn`` (compilation excluded) and return its result.

    Disabled benchmarks (the default) call ``fn`` once.  Enabled ones warm up
    with one call, time a second to size the run, then take
    max(ROUNDS, TARGET_SECONDS / that time) rounds (at most MAX_ROUNDS): a
    millisecond call gets enough rounds for its minimum to dodge the
    scheduler noise of a busy machine, a one-second call gets ROUNDS.
    """
    benchmark.group = f"C={case.C} {dtype}{case.group_suffix}"
    benchmark.extra_info.update(
        N=int(scores.shape[0]), C=case.C, dtype=dtype, bytes=int(scores.nbytes), elements=int(scores.size), **extra
    )
    if benchmark.disabled:
        return benchmark.pedantic(fn, rounds=1)
    fn()
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    rounds = max(ROUNDS, min(MAX_ROUNDS, int(TARGET_SECONDS / max(once, 1e-9))))
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)


def check(result, reference, *, ce_rtol=1e-6, topk_atol=1e-12):
    """Light correctness check of (cross_entropy, {k: accuracy}) against the reference."""
    ce, topk = result
    ref_ce, ref_topk = reference
    assert math.isclose(ce, ref_ce, rel_tol=ce_rtol, abs_tol=1e-9), f"cross-entropy {ce!r} != reference {ref_ce!r}"
    for k, acc in topk.items():
        assert abs(acc - ref_topk[k]) <= topk_atol, f"top-{k} accuracy {acc!r} != reference {ref_topk[k]!r}"


def metrics(m):
    return m.cross_entropy, dict(m.top_k_accuracy)


def need(peer):
    ok, why = P.available(peer)
    if not ok:
        pytest.skip(why)


# --------------------------------------------------------------------------- fastce


@pytest.mark.parametrize("dtype", bd.LOGIT_DTYPES)
def test_evaluate_logits(benchmark, case, dtype):
    labels, x = case.get("logits", dtype)
    result = bench(benchmark, case, dtype, labels, x, lambda: fastce.evaluate(labels, logits=x))
    check(metrics(result), case.reference("logits", dtype))


def test_evaluate_logits_top5(benchmark, case):
    if case.C <= max(bd.TOP_K):
        pytest.skip(f"top-{max(bd.TOP_K)} of {case.C} classes is 1 by construction (and warns)")
    labels, x = case.get("logits", "float32")
    result = bench(benchmark, case, "float32", labels, x, lambda: fastce.evaluate(labels, logits=x, top_k=bd.TOP_K))
    check(metrics(result), case.reference("logits", "float32", bd.TOP_K))


def test_evaluate_proba(benchmark, case):
    labels, p = case.get("proba", "float32")
    result = bench(benchmark, case, "float32", labels, p, lambda: fastce.evaluate(labels, proba=p))
    check(metrics(result), case.reference("proba", "float32"))


def test_log_loss(benchmark, case):
    labels, p = case.get("proba", "float32")
    classes = np.arange(case.C)
    result = bench(benchmark, case, "float32", labels, p, lambda: fastce.log_loss(labels, p, labels=classes))
    check((result, {}), case.reference("proba", "float32"))


def test_cross_entropy(benchmark, case):
    labels, x = case.get("logits", "float32")
    result = bench(benchmark, case, "float32", labels, x, lambda: fastce.cross_entropy(x, labels))
    check((result, {}), case.reference("logits", "float32"))


# --------------------------------------------------------------------------- roofline


@pytest.mark.parametrize("dtype", bd.LOGIT_DTYPES)
def test_roofline(benchmark, case, dtype):
    labels, x = case.get("logits", dtype)
    roofline.compile_all()
    total = bench(benchmark, case, dtype, labels, x, lambda: roofline.roofline_sum(x))
    flat = roofline.flat_view(x)
    if flat.dtype == np.uint16:
        assert total == roofline.uint16_checksum(flat)
    else:
        expected = float(flat.sum(dtype=np.float64))
        assert math.isclose(total, expected, rel_tol=1e-3, abs_tol=1e-3 * math.sqrt(flat.size))


# --------------------------------------------------------------------------- peers


@pytest.mark.parametrize("dtype", bd.LOGIT_DTYPES)
def test_torch_logits(benchmark, case, dtype):
    need("torch")
    labels, x = case.get("logits", dtype)
    result = bench(benchmark, case, dtype, labels, x, lambda: P.torch_logits(labels, x))
    check(result, case.reference("logits", dtype), ce_rtol=1e-4)


@pytest.mark.parametrize("dtype", bd.LOGIT_DTYPES)
def test_numpy_logits(benchmark, case, dtype):
    need("numpy")
    labels, x = case.get("logits", dtype)
    rows = bd.capped_rows(x.shape[0], case.C, bd.NUMPY_MAX_ELEMENTS, x.dtype.itemsize)
    labels, x = labels[:rows], x[:rows]
    result = bench(benchmark, case, dtype, labels, x, lambda: P.numpy_logits(labels, x), rows=rows)
    check(result, case.reference("logits", dtype, rows=rows), ce_rtol=1e-4)


@pytest.mark.parametrize("peer", ["torch", "numpy"])
def test_peer_logits_top5(benchmark, case, peer):
    need(peer)
    if case.C < max(bd.TOP_K):
        pytest.skip("top-5 needs at least 5 classes (torch.topk)")
    labels, x = case.get("logits", "float32")
    fn = P.torch_logits if peer == "torch" else P.numpy_logits
    rows = x.shape[0] if peer == "torch" else bd.capped_rows(x.shape[0], case.C, bd.NUMPY_MAX_ELEMENTS)
    labels, x = labels[:rows], x[:rows]
    result = bench(benchmark, case, "float32", labels, x, lambda: fn(labels, x, bd.TOP_K), peer=peer, rows=rows)
    # torch.topk may order tied scores differently from fastce's rule.
    check(result, case.reference("logits", "float32", bd.TOP_K, rows=rows), ce_rtol=1e-4, topk_atol=2e-3)


@pytest.mark.parametrize("peer", ["torch", "numpy"])
def test_peer_proba(benchmark, case, peer):
    need(peer)
    labels, p = case.get("proba", "float32")
    fn = P.torch_proba if peer == "torch" else P.numpy_proba
    rows = p.shape[0] if peer == "torch" else bd.capped_rows(p.shape[0], case.C, bd.NUMPY_MAX_ELEMENTS)
    labels, p = labels[:rows], p[:rows]
    result = bench(benchmark, case, "float32", labels, p, lambda: fn(labels, p), peer=peer, rows=rows)
    check(result, case.reference("proba", "float32", rows=rows), ce_rtol=1e-4)


def test_sklearn_proba(benchmark, case):
    need("sklearn")
    labels, p = case.get("proba", "float32")
    rows = bd.capped_rows(case.N, case.C, bd.SKLEARN_MAX_ELEMENTS)
    labels, p = labels[:rows], p[:rows]
    result = bench(benchmark, case, "float32", labels, p, lambda: P.sklearn_proba(labels, p), rows=rows)
    check(result, case.reference("proba", "float32", rows=rows), ce_rtol=1e-4)


# --------------------------------------------------------------------------- binary (1-D logits)


@pytest.fixture(scope="module")
def binary_case(case):
    """1-D float32 logits with as many elements as the case's score array (C=2 cases only)."""
    if case.C != 2:
        pytest.skip("the binary workload runs with the C=2 cases")
    labels, z = bd.make_binary_logits(case.N * case.C, seed=2)
    return labels, z, bd.binary_reference(labels, z)


def test_evaluate_binary_logits(benchmark, case, binary_case):
    labels, z, reference = binary_case
    result = bench(benchmark, case, "float32", labels, z, lambda: fastce.evaluate(labels, logits=z), workload="binary")
    check(metrics(result), reference, ce_rtol=1e-9)


def test_torch_binary_logits(benchmark, case, binary_case):
    need("torch")
    labels, z, reference = binary_case
    result = bench(benchmark, case, "float32", labels, z, lambda: P.torch_binary_logits(labels, z), workload="binary")
    check(result, reference, ce_rtol=1e-4)


def test_roofline_binary(benchmark, case, binary_case):
    labels, z, _ = binary_case
    roofline.compile_all()
    total = bench(benchmark, case, "float32", labels, z, lambda: roofline.roofline_sum(z), workload="binary")
    assert math.isclose(total, float(z.sum(dtype=np.float64)), rel_tol=1e-3, abs_tol=1e-3 * math.sqrt(z.size))
