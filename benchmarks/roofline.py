"""Memory-read roofline: the fastest a one-pass kernel can read a score array.

Every fastce throughput is compared with a plain parallel sum over the *same
bytes* as its score array.  The sum reads the buffer as one flat 1-D array,
split into fixed chunks that ``prange`` hands to the threads; the inner loop
runs over a long contiguous range with ``fastmath`` reassociation allowed, so
LLVM vectorises it into packed loads and adds (a sum over short rows, e.g. an
(N, 2) matrix summed row by row, does not vectorise and would understate the
roofline).

Functions
---------
``sum_float32(flat)``, ``sum_float64(flat)``, ``sum_uint16(flat)``
    the kernels, on contiguous 1-D arrays of their dtype; each returns its
    per-chunk partial sums (tiny; the caller adds them up).
``roofline_sum(array)``
    dispatch on any C-contiguous array: float32 and float64 are summed as
    such; every 2-byte dtype (float16, bfloat16, int16, uint16) goes to
    ``sum_uint16``, which reads the same bytes as 64-bit words (a checksum:
    an element-wise uint16 sum does not vectorise well) -- the bytes read are
    the same, which is all the roofline measures.
``read_seconds(array, repeats)``, ``read_gbps(array, repeats)``
    min-of-``repeats`` wall time of ``roofline_sum`` and the matching GB/s
    (10**9 bytes per second).
``is_vectorized(dtype)``
    whether the compiled inner loop uses packed SIMD adds of contiguous loads, no gathers (checked in the
    generated assembly).

``python benchmarks/roofline.py [--mb 512 ...]`` prints the roofline for each
dtype at a few array sizes and says whether the loops vectorised.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

import numba
import numpy as np
from numba import njit, prange

# Elements per parallel work item: long enough for the vector loop to dominate,
# small enough that 2..64 threads balance well on a 256 MB+ buffer.
CHUNK = 1 << 16

# fastmath: reassociation is what lets LLVM split the running sum over vector
# lanes; nothing else about the sum matters here.
_OPTIONS = dict(parallel=True, nogil=True, cache=True, fastmath=True)


@njit(**_OPTIONS)
def sum_float32(flat):
    """Sum of a contiguous 1-D float32 array (float32 lanes per chunk, float64 across chunks)."""
    n = flat.shape[0]
    nchunks = (n + CHUNK - 1) // CHUNK
    partial = np.zeros(nchunks, dtype=np.float64)
    for c in prange(nchunks):
        start = c * CHUNK
        stop = min(start + CHUNK, n)
        s = np.float32(0.0)
        for i in range(start, stop):
            s += flat[np.uint64(i)]  # unsigned: no gathers (see _NO_GATHER)
        partial[c] = s
    return partial


@njit(**_OPTIONS)
def sum_float64(flat):
    """Sum of a contiguous 1-D float64 array."""
    n = flat.shape[0]
    nchunks = (n + CHUNK - 1) // CHUNK
    partial = np.zeros(nchunks, dtype=np.float64)
    for c in prange(nchunks):
        start = c * CHUNK
        stop = min(start + CHUNK, n)
        s = 0.0
        for i in range(start, stop):
            s += flat[np.uint64(i)]
        partial[c] = s
    return partial


@njit(**_OPTIONS)
def sum_uint16(flat):
    """Read a contiguous 1-D uint16 array (float16 / bfloat16 bits) as fast as possible.

    A per-element uint16 sum does not vectorise well (LLVM widens every element
    with scalar inserts: ~7 GB/s in cache against ~30 for float32), which would
    understate the roofline of half-precision arrays.  So the same bytes are
    read as 64-bit words, summed modulo 2**64 (plus the last n % 4 elements):
    a checksum of the buffer, not the sum of its values.  See ``uint16_checksum``.
    """
    n = flat.shape[0]
    head = n - n % 4
    words = flat[:head].view(np.uint64)
    m = words.shape[0]
    nchunks = max(1, (m + CHUNK - 1) // CHUNK)
    partial = np.zeros(nchunks, dtype=np.uint64)
    for c in prange(nchunks):
        start = c * CHUNK
        stop = min(start + CHUNK, m)
        s = np.uint64(0)
        for i in range(start, stop):
            s += words[np.uint64(i)]
        partial[c] = s
    for i in range(head, n):
        partial[nchunks - 1] += np.uint64(flat[i])
    return partial


def uint16_checksum(flat) -> int:
    """What ``sum_uint16`` computes, with numpy (for tests)."""
    flat = np.ascontiguousarray(flat).reshape(-1).view(np.uint16)
    head = flat.shape[0] - flat.shape[0] % 4
    words = int(flat[:head].view(np.uint64).sum(dtype=np.uint64)) if head else 0
    return (words + int(flat[head:].astype(np.uint64).sum())) % 2**64


_KERNELS = {
    np.dtype(np.float32): sum_float32,
    np.dtype(np.float64): sum_float64,
    np.dtype(np.uint16): sum_uint16,
}


def flat_view(array) -> np.ndarray:
    """The array's bytes as a flat 1-D float32 / float64 / uint16 array, never a copy."""
    array = np.asarray(array)
    if not array.flags.c_contiguous:
        raise ValueError("the roofline reads C-contiguous arrays only (it must read the same bytes, not a copy)")
    flat = array.reshape(-1)
    if flat.dtype.itemsize == 2:
        return flat.view(np.uint16)
    if flat.dtype in _KERNELS:
        return flat
    raise TypeError(f"no roofline kernel for dtype {array.dtype}; use float32, float64 or any 2-byte dtype")


def roofline_sum(array):
    """Sum of every element of ``array`` (float); 2-byte dtypes: ``uint16_checksum`` of the bytes (int)."""
    flat = flat_view(array)
    partial = _KERNELS[flat.dtype](flat)
    if flat.dtype == np.uint16:
        return int(partial.sum(dtype=np.uint64))
    return float(partial.sum())


def compile_all() -> None:
    """Compile (or load from cache) every kernel, so timings exclude compilation."""
    for dtype in _KERNELS:
        roofline_sum(np.zeros(2 * CHUNK + 3, dtype=dtype))


def read_seconds(array, repeats: int = 5) -> float:
    """Min-of-``repeats`` seconds to read ``array`` once with the roofline sum."""
    flat = flat_view(array)
    kernel = _KERNELS[flat.dtype]
    kernel(flat)  # compile / warm
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        kernel(flat)
        best = min(best, time.perf_counter() - t0)
    return best


def read_gbps(array, repeats: int = 5) -> float:
    """Roofline read throughput for ``array`` in GB/s (10**9 bytes per second)."""
    return np.asarray(array).nbytes / read_seconds(array, repeats) / 1e9


# Packed (vector) adds of the accumulator type (SSE/AVX/AVX-512 on xmm/ymm/zmm).
# The kernels return their per-chunk partial sums (summed by the caller), so
# the only adds of these kinds in the module are the inner loop's.
_PACKED_ADD = {
    np.dtype(np.float32): re.compile(r"\bv?addps\b[^\n]*\b[xyz]mm", re.IGNORECASE),
    np.dtype(np.float64): re.compile(r"\bv?addpd\b[^\n]*\b[xyz]mm", re.IGNORECASE),
    np.dtype(np.uint16): re.compile(r"\bv?paddq\b[^\n]*\b[xyz]mm", re.IGNORECASE),
}


# No gathers: with a signed index (``flat[i]``) LLVM kept numba's negative-index wraparound and, compiling
# for AVX-512 (Sapphire Rapids, Zen 4), loaded the elements by gathers.  That roofline read 4.6 GB/s a thread
# on a Zen 4 against 26 GB/s with contiguous loads (numpy's sum: 25), and so understated every AVX-512
# roofline fraction's denominator; for AVX2 LLVM never gathered.  The kernels index with np.uint64.
_NO_GATHER = re.compile(r"\bv\w*gather", re.IGNORECASE)


def is_vectorized(dtype) -> bool:
    """True when the compiled kernel for ``dtype`` adds packed SIMD vectors loaded contiguously (no gathers)."""
    flat = flat_view(np.zeros(4, dtype=dtype))
    # Numba does not keep the assembly of functions loaded from its cache, so
    # compile a fresh, uncached twin of the kernel to inspect.
    kernel = njit(**dict(_OPTIONS, cache=False))(_KERNELS[flat.dtype].py_func)
    kernel(flat)
    asm = "\n".join(kernel.inspect_asm().values())
    return _PACKED_ADD[flat.dtype].search(asm) is not None and _NO_GATHER.search(asm) is None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, nargs="*", default=[4, 64, 512], help="array sizes in MB (default 4 64 512)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        numba.set_num_threads(args.threads)
    compile_all()
    print(f"numba threads: {numba.get_num_threads()}")
    for name, dtype in (("float32", np.float32), ("float64", np.float64), ("uint16", np.uint16)):
        rates = []
        for mb in args.mb:
            n = mb * (1 << 20) // np.dtype(dtype).itemsize
            array = np.ones(n, dtype=dtype)
            rates.append(f"{mb} MB: {read_gbps(array, args.repeats):6.1f} GB/s")
            del array
        print(f"{name:8s} vectorised={is_vectorized(dtype)!s:5s}  " + "  ".join(rates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
