"""The hot loops compile to packed SIMD instructions (checked in the generated assembly).

A change that makes one of these loops scalar (a branch, a wraparound index,
an aliasing store) costs 2-8x in speed and no test of the numbers would see
it.  Checked on the machine running the tests, for whichever vector ISA it has
(AVX2 or AVX-512: ymm or zmm registers); skipped where numba targets neither.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from numba import njit

from fastce import compare_kernels, kernels, kernels_binary
from fastce._parallel import new_claims
from fastce._vecmath import HAS_AVX512

PACKED_DOUBLE = re.compile(r"\bv(?:add|mul|sub|div|max|min|fmadd\d+|fnmadd\d+|blendv)pd\s+.*%[yz]mm")


def _vector_isa() -> bool:
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()  # what numba compiles for (it targets the host CPU)
    return bool(features.get("avx2") or features.get("avx512f"))


def _fresh_asm(dispatcher, *args) -> str:
    """The assembly of ``dispatcher`` compiled afresh for ``args`` (kernels' own argument types).

    numba cannot show the assembly of code loaded from its disk cache (and a
    callee inside a cached kernel is never compiled on its own), so the
    function is compiled again, without the cache, with the same options.
    """
    return "\n".join(_fresh_compile(dispatcher, *args).inspect_asm().values())


def _fresh_compile(dispatcher, *args):
    """``dispatcher``'s function compiled afresh for ``args`` (see _fresh_asm), called once."""
    # A kernel step (fastce._config.kernel_step) has no Python entry: the copy gets one, to be called here.
    options = {k: v for k, v in dispatcher.targetoptions.items()
               if k not in ("cache", "nopython", "no_cpython_wrapper", "no_cfunc_wrapper")}
    fresh = njit(**options)(dispatcher.py_func)
    fresh(*args)
    return fresh


def _own_asm(asm: str, name: str) -> str:
    """The part of ``asm`` that is the function ``name`` itself (numba's mangled symbol: its length, then the name),
    without the callees compiled beside it."""
    own, keep = [], False
    for line in asm.splitlines():
        if re.match(r"^_ZN[\w$.]+:", line):
            keep = f"{len(name)}{name}B" in line
        if keep:
            own.append(line)
    assert own, f"no function {name} in the assembly"
    return "\n".join(own)


def _scratch(rows=512):
    """Rows of a 2-D float64 scratch buffer, as the kernels pass them (see kernels._new_scratch)."""
    floats = np.random.default_rng(1).random((8, rows))
    return [floats[k] for k in range(8)]


def _score_kernel_call(name):
    rows = 512
    value, rest, weight, loss_of, brier, high, target, squares = _scratch(rows)
    status = np.zeros((1, rows), dtype=np.int64)[0]
    if name == "exp_sums":
        scores = kernels_input(np.random.default_rng(2).standard_normal((4, 1000)).astype(np.float32))
        return (scores, 0, 1000, 1.0, np.empty(kernels.EXP_SCRATCH))
    if name == "_exp_columns":
        columns = np.random.default_rng(3).standard_normal((10, rows))
        return (columns, high, target, 10, rows, value, rest, squares, loss_of)
    if name == "_losses":
        return (None, rows, status, value, rest, squares, loss_of)  # proba_eps None: logits
    return (rows, weight, loss_of, brier, np.empty((kernels.N_TERMS, rows)), False)  # _block_terms, weighted


def kernels_input(array):
    from fastce._accumulate import kernel_input

    return kernel_input(array)


@pytest.mark.parametrize(
    "name",
    [
        "exp_sums",  # long rows: exp of every logit
        "_exp_columns",  # short rows: exp down the columns of a block
        "_losses",  # log / log1p of a block's rows
        "_block_terms",  # the terms of the block sums, the error bars' second moments among them
    ],
)
def test_score_kernel_hot_loops_are_packed_simd(name):
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    asm = _fresh_asm(getattr(kernels, name), *_score_kernel_call(name))
    assert PACKED_DOUBLE.search(asm), f"{name}: no packed float64 instruction on ymm/zmm registers"


def test_block_terms_multiplies_every_term_in_simd_lanes():
    """Each of _block_terms' 14 products has a packed copy (one vectorised loop per term).

    Written as one loop with seven outputs, LLVM vectorised only part of it
    (10 packed multiplies, perf found the kernel running its scalar copy at
    C = 10 and 100): any packed instruction, the check above, passed.
    """
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    asm = _fresh_asm(kernels._block_terms, *_score_kernel_call("_block_terms"))
    packed = re.findall(r"\bvmulpd\s+.*%[yz]mm", asm)
    assert len(packed) >= 14, f"_block_terms: {len(packed)} packed float64 multiplies for its 14 products"


def _leaf_args(rows=512):
    """Arguments of kernels._logit_columns_f32 for a block of ``rows`` rows of 10 classes, with ``finish`` and
    diagnose's per-row outputs."""
    columns = np.random.default_rng(3).standard_normal((10, rows + 24)).astype(np.float32)
    target, label_column, high, rank, at_max, rest, squares, e_true = _scratch(rows + 24)
    kept, row_weight, weight = _scratch(rows + 24)[:3]
    terms = np.zeros((kernels.N_TERMS, rows + 24))
    outputs = np.zeros((kernels.ROW_STATS_COLUMNS, rows + 24))
    return (columns, target, label_column, 10, rows, False, high, rank, at_max, rest, squares, e_true, True, kept,
            1e-3, False, row_weight, weight, terms, outputs)


def test_short_row_float32_leaf_runs_16_rows_in_packed_float32():
    """kernels._logit_columns_f32: its vectors of 16 rows (fastce._column_lanes) compile to packed float32
    FMAs (the exp's 9) and packed float64 adds (the sums), and its finish (``finish``) to packed float64 and
    float32 divisions (log's reduction, the reciprocal's first guess), not to lane-by-lane scalar code."""
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    asm = _fresh_asm(kernels._logit_columns_f32, *_leaf_args())
    fmas = re.findall(r"\bvfn?m(?:add|sub)\d+ps\s+.*%[yz]mm", asm)
    assert len(fmas) >= 9, f"_logit_columns_f32: {len(fmas)} packed float32 FMAs"
    assert len(re.findall(r"\bvaddpd\s+.*%[yz]mm", asm)) >= 4
    assert re.search(r"\bvdivpd\s+.*%[yz]mm", asm) and re.search(r"\bvdivps\s+.*%[yz]mm", asm), \
        "_logit_columns_f32: the finish's divisions are not packed"
    assert not re.search(r"\bv(?:fn?m(?:add|sub)\d+|div)s[sd]\b", asm), "a scalar FMA or division: some lane ran alone"


@pytest.mark.parametrize("pair_inputs", [False, True], ids=["evaluate", "compare"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_class_block_is_one_packed_simd_loop(dtype, pair_inputs):
    """The two-class logits block (kernels._two_class_block): one loop, every row's math in SIMD lanes.

    It vectorises only as long as its reductions stay few (16 kept it scalar,
    3x slower than the general path it replaces) and its per-row helper is
    inlined: the packed exp and log FMAs are the check (float32 logits take the
    float32 exp: packed float32 FMAs).  compare's copy also stores each row's
    pair inputs: with a run-time row stride the loop then needed more run-time
    alias checks than LLVM allows, and stayed scalar.
    """
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    rng = np.random.default_rng(7)
    scores = kernels_input(rng.standard_normal((512, 2)).astype(dtype))
    labels = kernels_input(rng.integers(0, 2, 512))
    none = kernels_input(np.empty(0))
    fsums = np.zeros((1, kernels.fsums_columns(2)))
    icounts = np.zeros((1, kernels.NUM_ICOUNTS), dtype=np.int64)
    float32_math = True if dtype == np.float32 else None  # the doors' token (kernels.math_token)
    args = (scores, labels, none, none, np.int64(kernels.NO_LABEL), False, kernels_input(np.array([1, 5])), 1e-3,
            float32_math, None, 0, 0, 512, np.empty(512), np.empty(512, dtype=np.float32))
    n_terms = kernels.N_TERMS + (kernels.PAIR_INPUTS if pair_inputs else 0)
    asm = _fresh_asm(kernels._two_class_block, *args, np.empty((n_terms, kernels.TERM_ROW)), fsums, icounts,
                     *([True] if pair_inputs else []))
    fmas = re.findall(r"\bvfn?madd\d+pd\s+.*%[yz]mm", asm)
    fmas32 = re.findall(r"\bvfn?m(?:add|sub)\d+ps\s+.*%[yz]mm", asm)
    if float32_math:
        # The log's series and the reciprocal's Newton steps in float64, the float32 exp's polynomial (6).
        assert len(fmas) >= 12 and len(fmas32) >= 6, f"_two_class_block: {len(fmas)} / {len(fmas32)} packed FMAs"
    else:
        assert len(fmas) >= 20, f"_two_class_block: {len(fmas)} packed float64 FMAs (the exp and log alone have 20)"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_class_probability_block_is_packed_simd(dtype):
    """The two-class block for probabilities (kernels._two_class_block with ``proba_eps``): its row loop in SIMD
    lanes, as the logits one -- the packed FMAs of the log's series are the check (12 in each of the two copies of
    the loop, with and without weights)."""
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    rng = np.random.default_rng(8)
    p = rng.random(512)
    scores = kernels_input(np.stack([1 - p, p], axis=1).astype(dtype))
    labels = kernels_input(rng.integers(0, 2, 512))
    none = kernels_input(np.empty(0))
    fsums = np.zeros((1, kernels.fsums_columns(2)))
    icounts = np.zeros((1, kernels.NUM_ICOUNTS), dtype=np.int64)
    args = (scores, labels, none, none, np.int64(kernels.NO_LABEL), False, kernels_input(np.array([1, 5])), 1e-3,
            None, 1e-15, 0, 0, 512, np.empty(512), np.empty(512, dtype=np.float32))
    asm = _fresh_asm(kernels._two_class_block, *args, np.empty((kernels.N_TERMS + 2, kernels.TERM_ROW)), fsums,
                     icounts)
    fmas = re.findall(r"\bvfn?madd\d+pd\s+.*%[yz]mm", asm)
    assert len(fmas) >= 20, f"_two_class_block (probabilities): {len(fmas)} packed float64 FMAs"


@pytest.mark.parametrize("name", ["_pair_sums", "_table_cell", "_clean_pair_sums", "_clean_pair_table"])
def test_compare_pair_loops_are_packed_simd(name):
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    # A block's pair inputs of two models and the row weights (see compare_kernels._pair_block).
    inputs = np.random.default_rng(4).random((2, compare_kernels.PAIR_INPUTS, 512))
    weight = np.random.default_rng(5).random(512)
    fsums = np.zeros((2, compare_kernels.pair_columns(1)))
    args = {
        "_pair_sums": (inputs[0], inputs[1], weight, 512, 0.01, fsums, 0),
        "_table_cell": (inputs[0], inputs[1], weight, 512, 1.0, True, False, fsums, 0, compare_kernels.P_TABLE),
        "_clean_pair_sums": (inputs[0], inputs[1], 512, 0.01, fsums, 0, 1.0, 2.0, 3.0, 4.0),
        "_clean_pair_table": (inputs[0], inputs[1], 512, 1.0, fsums, 0, compare_kernels.P_TABLE),
    }[name]
    asm = _fresh_asm(getattr(compare_kernels, name), *args)
    assert PACKED_DOUBLE.search(asm), f"{name}: no packed float64 instruction on ymm/zmm registers"


PACKED_SINGLE = re.compile(r"\bv(?:add|mul|sub|fmadd\d+|fnmadd\d+)ps\s+.*%[yz]mm")


@pytest.mark.parametrize("staged", [False, True], ids=["fused", "staged"])
def test_float32_exp_loop_is_packed_simd(staged):
    """The float32 exp of long logits rows (kernels._exp_sums_f32, and its AVX2 form _exp_sums_f32_staged) runs
    on packed float32 (``ps``) FMAs.

    Its float32 exp must get full-width vectors: mixed into the float64 sums in
    one loop vectorised by LLVM, it got half-width ones (ymm under AVX-512), no faster
    than float64; it is written in explicit 16-lane vectors (fastce._column_lanes) now.
    """
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    scores = kernels_input(np.random.default_rng(2).standard_normal((4, 1000)).astype(np.float32))
    if staged:
        asm = _fresh_asm(kernels._exp_sums_f32_staged, scores, 0, 1000, np.float32(1.0), np.empty(kernels.EXP_SCRATCH))
    else:
        asm = _fresh_asm(kernels._exp_sums_f32, scores, 0, 1000, np.float32(1.0))
    widest = "zmm" if HAS_AVX512 else "ymm"  # what numba compiles for (NUMBA_CPU_FEATURES, else the host)
    fmas = re.findall(r"\bvfmadd\d+ps\s+.*%" + widest, asm)
    assert PACKED_SINGLE.search(asm) and len(fmas) >= 7, f"_exp_sums_f32: {len(fmas)} packed float32 FMAs on {widest}"
    # The float64 sums and squares in packed float64 (the squares by FMAs), and no entry stored or gathered.
    assert len(re.findall(r"\bvfmadd\d+pd\s+.*%" + widest, asm)) >= 2, "_exp_sums_f32: the squares not in FMAs"
    assert not re.search(r"\bv\w*(?:scatter|gather)", asm), "_exp_sums_f32: a scatter or gather"


def test_float64_fused_step_is_packed_simd():
    """The fused float64 step of long rows (kernels.exp_sums_wide, the AVX-512 kernels' float64 math) runs its
    exps and sums on packed float64 FMAs and adds, 16 entries a vector pair, with no entry stored or gathered.
    Checked on AVX-512 builds (AVX2 kernels keep exp_sums, checked above)."""
    if not HAS_AVX512:
        pytest.skip("the fused step is for AVX-512 builds")
    scores = np.random.default_rng(2).standard_normal((4, 1000))
    asm = _own_asm(_fresh_asm(kernels.exp_sums_wide, scores, 0, 1000, 1.0), "exp_sums_wide")
    # Two 16-entry exps a pair of vectors, each 14 FMAs on two zmm registers (the remainder: one more).
    assert len(re.findall(r"\bvf(?:n?madd|n?msub)\d+pd\s+.*%zmm", asm)) >= 56
    assert len(re.findall(r"\bvaddpd\s+.*%zmm", asm)) >= 8  # the four lane sets, two registers each
    assert not re.search(r"\bv\w*(?:scatter|gather)", asm), "exp_sums_wide: a scatter or gather"


@pytest.mark.parametrize("name, extremes", [("_top_key_and_counts_f32", ("vpmaxsd",)),
                                            ("_proba_scan_f32", ("vpmaxsd", "vpminsd"))])
def test_long_row_max_and_rank_loop_is_packed_simd(name, extremes):
    """The max and rank counts of long 16/32-bit rows of logits (kernels._top_key_and_counts_f32), and the extremes
    and counts of probabilities (_proba_scan_f32), run on packed int32 maxima (and minima) of the widest
    vectors, the counts by population counts of the comparison masks, with no gather; the probabilities' sums
    and squares (_proba_scan_f32) in packed float64 adds and FMAs of the widest vectors."""
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    scores = kernels_input(np.random.default_rng(2).standard_normal((4, 1000)).astype(np.float32))
    value = (np.float32(0.5), 3) if name == "_proba_scan_f32" else np.float32(0.5)
    asm = _fresh_asm(getattr(kernels, name), scores, 0, 1000, value)
    widest = "zmm" if HAS_AVX512 else "ymm"  # what numba compiles for (NUMBA_CPU_FEATURES, else the host)
    for extreme in extremes:
        assert re.search(rf"\b{extreme}\s+.*%" + widest, asm), f"{name}: no {extreme} on {widest}"
    assert re.search(r"\bpopcnt", asm), f"{name}: the counts not by population counts"
    assert not re.search(r"\bv\w*(?:scatter|gather)", asm), f"{name}: a scatter or gather"
    if name == "_proba_scan_f32":
        assert len(re.findall(r"\bvaddpd\s+.*%" + widest, asm)) >= 4, f"{name}: the sums not in packed adds"
        assert len(re.findall(r"\bvfmadd\d+pd\s+.*%" + widest, asm)) >= 4, f"{name}: the squares not in FMAs"


def test_the_check_can_fail():
    """A scalar function (one exact addition) has no packed float64 instruction: the pattern is not vacuous."""
    from fastce import _exactsum

    accs = _exactsum.new_accumulators(1)
    assert not PACKED_DOUBLE.search(_fresh_asm(_exactsum.exact_add_at, accs, 0, 1.5))


@pytest.mark.parametrize("float32_math", [None, True], ids=["float64-math", "float32-math"])
def test_binary_logit_loop_is_packed_simd(float32_math):
    """The 1-D binary logits loop (its loss helper must be inlined: out of line it kept the loop scalar, 4x slower),
    in either math (kernels_binary.logit_element); float32 math takes packed float32 exps and no float64 division."""
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    rng = np.random.default_rng(6)
    logits = kernels_input(rng.standard_normal(4096).astype(np.float32))
    labels = kernels_input(rng.integers(0, 2, 4096))
    none = kernels_input(np.empty(0))
    asm = _fresh_asm(kernels_binary._binary_logit_block, logits, labels, none, np.empty(0), 0, 4096, False, False,
                     float32_math, np.empty((kernels.N_TERMS, 4096)))
    assert PACKED_DOUBLE.search(asm), "_binary_logit_block: no packed float64 instruction on ymm/zmm registers"
    # Contiguous loads: with signed indices LLVM kept numba's negative-index wraparound and gathered every
    # logit, label and weight (x0.90 in cache without the gathers).
    assert not re.search(r"\bv\w*gather", asm), "_binary_logit_block: gathers where contiguous loads belong"
    if float32_math:
        # The loop's lane count is its float64 values': 8 on AVX-512 (float32 on ymm), 4 on AVX2, where 4 float32
        # lanes are an xmm register (packed all the same: "ps", not the scalar "ss").  The widths numba compiles
        # for (_vecmath.HAS_AVX512 follows NUMBA_CPU_FEATURES), not the host's, as the other checks here.
        registers = "[yz]mm" if HAS_AVX512 else "[xyz]mm"
        fmas = re.findall(r"\bvfn?m(?:add|sub)\d+ps\s+.*%" + registers, asm)
        assert len(fmas) >= 6, f"_binary_logit_block: {len(fmas)} packed float32 FMAs (the float32 exp)"
        assert re.search(r"\bvdivps\s+.*%" + registers, asm), "_binary_logit_block: no packed float32 division"
        assert not re.search(r"\bvdivpd\s", asm), "_binary_logit_block: a float64 division in float32 math"
    # compare's copy of the loop, with the pair inputs: its terms are a literal row stride apart (with a
    # stride known only at run time, LLVM needed too many alias checks and left such a loop scalar).
    pair_asm = _fresh_asm(kernels_binary.binary_logit_pair_block, logits, labels, none, 0, 4096, float32_math,
                          np.empty((kernels.N_TERMS + kernels.PAIR_INPUTS, kernels_binary.BINARY_TERM_ROW)))
    assert PACKED_DOUBLE.search(pair_asm), "binary_logit_pair_block: no packed float64 instruction"
    assert re.search(r"\bvsqrtpd\s", pair_asm), "binary_logit_pair_block: p(true) not on packed registers"
    assert not re.search(r"\bv\w*gather", pair_asm), "binary_logit_pair_block: gathers where contiguous loads belong"


@pytest.mark.parametrize("case", ["plain", "weighted", "row losses", "pair inputs"])
def test_binary_probability_loop_is_packed_simd(case):
    """The 1-D binary probabilities' loop (kernels._binary_proba_loop inside binary_proba_block, and compare's
    binary_proba_pair_block) in each of its cases: packed float64 arithmetic (the log's series as packed FMAs), contiguous loads, no call to libm's log
    (math.log kept it a scalar loop, 3x slower) and no masked loads (a flag tested inside the loop)."""
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    rng = np.random.default_rng(8)
    n = 4096
    proba = kernels_input(rng.random(n).astype(np.float32))
    labels = kernels_input(rng.integers(0, 2, n))
    weights = kernels_input(rng.random(n) if case == "weighted" else np.empty(0))
    losses = np.empty(n if case == "row losses" else 0)
    top_k = np.array([1], dtype=np.int64)
    fsums = np.empty((1, kernels.fsums_columns(1)))
    icounts = np.empty((1, kernels.NUM_ICOUNTS), dtype=np.int64)
    terms = np.empty((kernels.N_TERMS + kernels.PAIR_INPUTS, n + kernels.SCRATCH_PAD))
    if case == "pair inputs":  # compare's copy
        asm = _own_asm(_fresh_asm(kernels.binary_proba_pair_block, proba, labels, weights, top_k, 1e-7, 0, 0, n,
                                  fsums, icounts, terms), "binary_proba_pair_block")
    else:
        asm = _own_asm(_fresh_asm(kernels.binary_proba_block, proba, labels, weights, top_k, 1e-7, losses, 0, 0, n,
                                  fsums, icounts, terms), "binary_proba_block")
    registers = "[yz]mm"
    fmas = re.findall(r"\bvfn?m(?:add|sub)\d+pd\s+.*%" + registers, asm)
    assert len(fmas) >= 6, f"binary_proba_block ({case}): {len(fmas)} packed float64 FMAs (the log's series)"
    assert not re.search(r"\bv\w*gather", asm), f"binary_proba_block ({case}): gathers"
    assert not re.search(r"\bcall.*\blog\b", asm), f"binary_proba_block ({case}): a call to libm's log"
    assert not re.search(r"\bvmovup[sd]\s+\(.*\),\s*%[yz]mm\d+\s*\{%k", asm), \
        f"binary_proba_block ({case}): a masked vector load (a flag tested inside the loop)"


def test_soft_target_max_is_packed_simd():
    """The soft targets' max key (kernels_soft._top_target_key, kept out of _soft_target_row by compile_apart) runs
    on packed int64 comparisons: written inside the row function, the same loop stayed scalar compares and
    branches (kernels_soft: a fifth of the row's time at C = 100)."""
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    from fastce import kernels_soft

    targets = kernels_input(np.random.default_rng(8).random((4, 1000)))
    fresh = _fresh_compile(kernels_soft._top_target_key, targets, 1, 0, 1000, np.int64(-(2**63)))
    asm = "\n".join(fresh.inspect_asm().values())
    packed = r"\bvpmaxsq\s+.*%[yz]mm" if HAS_AVX512 else r"\bvpcmpgtq\s+.*%ymm"
    assert re.search(packed, asm), "_top_target_key: no packed int64 comparison"
    # ... and it stays out of its caller (the packed loop is this function's own code, not re-optimised there).
    ir = "\n".join(fresh.inspect_llvm().values())
    (group,) = re.findall(r"^define [^@]*@_ZN6fastce12kernels_soft\d+_top_target_key.*#(\d+) \{", ir, re.M)
    (attributes,) = re.findall(rf"^attributes #{group} = {{([^}}]*)}}", ir, re.M)
    assert "noinline" in attributes.split(), "_top_target_key: inlined into _soft_target_row (no compile_apart)"


def test_short_soft_rows_are_packed_simd():
    """Short soft-target and label-smoothing rows (kernels_soft._soft_short_tasks, one compiled loop for both) run
    their exps and the targets' logs in packed float64 loops over rows: 38 packed FMAs on AVX-512 and AVX2 builds,
    24-26 with either libm call (math.exp or math.log: checked).  The row-by-row kernel ran those rows' few entries
    in scalar remainder loops (23 against 5.9 ns a score at C = 10, one thread)."""
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    from fastce import kernels_soft

    rng = np.random.default_rng(8)
    n, c = 256, 10
    scores = kernels_input(rng.standard_normal((n, c)).astype(np.float32))
    targets = kernels_input(rng.dirichlet(np.ones(c), size=n))
    fsums = np.empty((1, kernels_soft.NUM_SUMS))
    icounts = np.empty((1, kernels_soft.NUM_COUNTS), dtype=np.int64)
    asm = _own_asm(_fresh_asm(kernels_soft._soft_short_tasks, scores, targets, np.empty(0, dtype=np.int64),
                              np.empty(0), 0.1, np.int64(-100), 1e-6, np.empty(0), np.empty((0, 4)), 1, n, fsums,
                              icounts, new_claims(), 0, 1), "_soft_short_tasks")
    fmas = re.findall(r"\bvfn?m(?:add|sub)\d+pd\s+.*%[yz]mm", asm)
    assert len(fmas) >= 34, f"_soft_short_tasks: {len(fmas)} packed float64 FMAs (the exp's and the log's series)"


@pytest.mark.parametrize("float32_math", [True, None])
def test_multilabel_fast_loop_reads_no_weight_without_row_weights(float32_math):
    """The multi-label fast path's element loop (kernels_binary._element_terms, inlined into _bce_fast_tasks) has a
    copy for rows without weights that reads none.  With the "has row weights" flag a run-time value inside one
    loop, LLVM loaded each element's weight through a masked vector load, and the loop stalled on it: 20 against
    5 ns an element at C = 100 (one thread, Zen 4; 64% of the kernel's perf samples on that load).  In float32
    math (16- and 32-bit logits) the exps' loop is packed float32: the exp's polynomial in float32 FMAs."""
    if not _vector_isa():
        pytest.skip("the host has neither AVX2 nor AVX-512")
    rng = np.random.default_rng(7)
    scores = kernels_input(rng.standard_normal((64, 16)).astype(np.float32))
    targets = (rng.random((64, 16)) < 0.3).astype(np.uint8)
    fsums = np.zeros((1, kernels_binary.NUM_SUMS))
    icounts = np.zeros((1, kernels_binary.NUM_COUNTS), dtype=np.int64)
    asm = _fresh_asm(kernels_binary._bce_fast_tasks, scores, targets, np.empty(0), kernels_binary.MODE_LOGITS, True,
                     None, np.empty((0, 4)), 1, 64, fsums, icounts, float32_math, new_claims(), 0, 1)
    assert PACKED_DOUBLE.search(asm), "_bce_fast_tasks: no packed float64 instruction"
    fmas32 = re.findall(r"\bvfn?m(?:add|sub)\d+ps\s+.*%[yz]mm", asm)
    if float32_math:
        assert len(fmas32) >= 6, f"_bce_fast_tasks: {len(fmas32)} packed float32 FMAs (the float32 exp's polynomial)"
    else:
        assert not fmas32, "_bce_fast_tasks: packed float32 FMAs in float64 math"
    masked_load = r"\bv(?:movupd|movapd)\s+[^,]*\([^)]*\),\s*%[yz]mm\d+\s*\{%k|\bvmaskmovpd\s+[^,]*\("
    assert not re.search(masked_load, asm), "_bce_fast_tasks: a masked float64 vector load (the row weights')"


@pytest.mark.parametrize("name", ["_exp_sums_f32", "exp_sums", "exp_sums_wide", "_row_sums", "_proba_scan_f32"])
def test_long_row_leaves_prefetch_the_next_row(name):
    """The loops that walk a long row from cache ask for the next row's lines (kernels._prefetch_next_row).

    Without the hint a thread leaves memory idle while it computes a row's
    exps: 12-32% of the time at C >= 500 (float32 / float64 logits, proba).
    """
    scores = kernels_input(np.random.default_rng(2).standard_normal((4, 1000)).astype(np.float32))
    args = {
        "_exp_sums_f32": (scores, 0, 1000, np.float32(1.0)),
        "exp_sums": (scores, 0, 1000, 1.0, np.empty(kernels.EXP_SCRATCH)),
        "exp_sums_wide": (scores, 0, 1000, 1.0),
        "_row_sums": (scores, 0, 1000, 3),
        "_proba_scan_f32": (scores, 0, 1000, (np.float32(0.5), 3)),
    }[name]
    asm = _fresh_asm(getattr(kernels, name), *args)
    assert re.search(r"\bprefetcht0\s", asm), f"{name}: no prefetch instruction"


def _row_leaf_args(name):
    scores = kernels_input(np.random.default_rng(3).standard_normal((4, 100)).astype(np.float32))
    chunk64 = np.empty(kernels.EXP_SCRATCH)
    return {
        "_logits_row": (scores, 1, 100, 0.5, 3, False, True, chunk64),
        "_exp_sums_f32": (scores, 1, 100, np.float32(1.0)),
        "exp_sums": (scores, 1, 100, 1.0, chunk64),
        "exp_sums_wide": (scores.astype(np.float64), 1, 100, 1.0),
        "_proba_row": (scores, 1, 100, 3, False),
        "_row_sums": (scores, 1, 100, 3),
        "_first_index_of": (scores, 1, 100, 0.5),
        "_top_key_and_counts_f32": (scores, 1, 100, np.float32(0.5)),
        "_proba_scan_f32": (scores, 1, 100, (np.float32(0.5), 3)),
        "_first_index_of_f32": (scores, 1, 100, 0.5),
        "_probability_like_row": (scores, 1, 100, 1e-3),
        "_exp_columns": _score_kernel_call("_exp_columns"),
        "_losses": _score_kernel_call("_losses"),
        "_logit_columns_f32": _leaf_args(),
    }[name]


@pytest.mark.parametrize("name", ["_logits_row", "_exp_sums_f32", "exp_sums", "exp_sums_wide", "_proba_row", "_row_sums",
                                  "_first_index_of", "_first_index_of_f32", "_top_key_and_counts_f32",
                                  "_proba_scan_f32",
                                  "_probability_like_row",
                                  "_exp_columns", "_losses",
                                  "_logit_columns_f32", "ordered_sum"])
def test_row_leaves_take_no_references(name):
    """The functions a long row's loop runs for every row, and a short-row block's steps, take no reference to
    their arrays (_config.LEAF_OPTIONS).

    numba takes a reference to each array argument on entry to a function and
    drops it on exit: inlined into the row loop, two atomic operations per
    array per row on counters both threads share (C = 100: ~28% of the
    kernel's time before, x0.80 end to end without them); for short rows, a
    dozen per block (C = 2 / 10: x0.91 / x0.95 without them).
    """
    if name == "ordered_sum":
        from fastce import _lanes

        asm = _fresh_asm(_lanes.ordered_sum, np.ones(100), 100)
    else:
        asm = _fresh_asm(getattr(kernels, name), *_row_leaf_args(name))
    calls = re.findall(r"\$NRT_(?:incref|decref)", asm)
    assert not calls, f"{name}: {len(calls)} reference count calls"


def test_the_reference_check_can_fail():
    """A function compiled with reference counting shows its calls: the check above is not vacuous."""

    @njit
    def keeps_a_view(values, i):
        row = values[i]
        total = 0.0
        for j in range(row.shape[0]):
            total += row[j]
        return total

    keeps_a_view(np.ones((3, 4)), 1)
    assert re.findall(r"\$NRT_(?:incref|decref)", "\n".join(keeps_a_view.inspect_asm().values()))
