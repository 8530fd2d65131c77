"""fastce.dask: the same Metrics as fastce.evaluate, bit for bit, for every chunking.

Most tests run on Dask's synchronous scheduler (cheap, deterministic); a few
run on one module-scoped LocalCluster with two worker processes, which is
what the issue asks to work: kernels loaded from numba's disk cache on the
workers, errors and files read there, the CLI's --scheduler.
"""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
from dask.delayed import Delayed  # noqa: E402
distributed = pytest.importorskip("distributed")

import fastce  # noqa: E402
import fastce.dask as fdask  # noqa: E402
from fastce import _config, cli  # noqa: E402
from fastce.errors import FastCEWarning, InputError, OmittedRowsWarning  # noqa: E402
from support import BFLOAT16  # noqa: E402

N, C = 2_000, 100  # block_rows(100) = 327: chunk boundaries fall inside blocks
BLOCK = _config.block_rows(C)


@pytest.fixture(autouse=True)
def synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2026)
    logits = (rng.standard_normal((N, C)) * 3).astype(np.float32)
    labels = rng.integers(0, C, size=N)
    weights = rng.random(N) * 2
    e = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    proba = e / e.sum(axis=1, keepdims=True)
    return logits, labels, weights, proba


def _chunks(spec, n=N):
    """Row chunks from a spec: an int (uniform), a tuple (explicit, the rest appended)."""
    if isinstance(spec, int):
        return (spec,)
    rest = n - sum(spec)
    return tuple(spec) + ((rest,) if rest else ())


CHUNKINGS = [
    pytest.param(N, id="one-chunk"),
    pytest.param(500, id="uniform-500"),
    pytest.param(BLOCK, id="block-aligned"),
    pytest.param((1, 1, 1), id="one-row-chunks-first"),
    pytest.param((7, 0, 333, 0, 1000), id="uneven-with-empty"),
    pytest.param((BLOCK - 1, 2, 50), id="chunks-inside-one-block"),
]


def _dask(x, spec, columns=None):
    chunks = _chunks(spec, x.shape[0]) if not isinstance(spec, int) else spec
    if x.ndim == 1:
        return da.from_array(x, chunks=(chunks,))
    return da.from_array(x, chunks=(chunks, columns or x.shape[1]))


# -- same numbers as in memory -------------------------------------------------------


@pytest.mark.parametrize("spec", CHUNKINGS)
def test_logits_weights_top_k_bit_identical(data, spec):
    logits, labels, weights, _ = data
    expected = fastce.evaluate(labels, logits=logits, sample_weight=weights, top_k=(1, 5, 20))
    got = fdask.evaluate(
        _dask(labels, spec), logits=_dask(logits, spec), sample_weight=_dask(weights, spec), top_k=(1, 5, 20)
    )
    assert got == expected


def test_threaded_scheduler(data):
    """Dask's default local scheduler runs chunk tasks in threads: kernels share the process."""
    logits, labels, weights, _ = data
    before = (logits.copy(), labels.copy(), weights.copy())
    with dask.config.set(scheduler="threads", num_workers=4):
        got = fdask.evaluate(labels, logits=_dask(logits, 90), sample_weight=weights, top_k=(1, 5))
    assert got == fastce.evaluate(labels, logits=logits, sample_weight=weights, top_k=(1, 5))
    for array, copy in zip((logits, labels, weights), before):
        np.testing.assert_array_equal(array, copy)  # inputs untouched


def test_random_chunkings_bit_identical(data):
    logits, labels, _, proba = data
    rng = np.random.default_rng(1)
    expected = fastce.evaluate(labels, logits=logits, top_k=(1, 3))
    expected_proba = fastce.evaluate(labels, proba=proba, top_k=(1, 3))
    for _ in range(12):
        cuts = np.sort(rng.integers(0, N + 1, size=rng.integers(1, 15)))
        chunks = tuple(int(c) for c in np.diff(np.concatenate([[0], cuts, [N]])))
        assert fdask.evaluate(labels, logits=_dask(logits, chunks), top_k=(1, 3)) == expected, chunks
        assert fdask.evaluate(labels, proba=_dask(proba, chunks), top_k=(1, 3)) == expected_proba, chunks


@pytest.mark.parametrize(
    "dtype",
    [np.dtype(np.float16), np.dtype(np.float64)] + ([BFLOAT16] if BFLOAT16 is not None else []),
    ids=lambda d: d.name,
)
def test_other_score_dtypes(data, dtype):
    logits, labels, weights, proba = data
    z = logits.astype(dtype)
    assert fdask.evaluate(labels, logits=_dask(z, (600, 1))) == fastce.evaluate(labels, logits=z)
    if dtype != BFLOAT16:
        p = proba.astype(dtype)
        with warnings.catch_warnings():  # float16 rows may not sum to 1 within float16's tolerance
            warnings.simplefilter("ignore", FastCEWarning)
            expected = fastce.evaluate(labels, proba=p, sample_weight=weights)
            got = fdask.evaluate(labels, proba=_dask(p, 450), sample_weight=weights)
        assert got == expected


def test_larger_class_count_and_integer_labels_of_any_width(data):
    rng = np.random.default_rng(3)
    n, c = 700, 1500  # block_rows = 21: many seams
    z = rng.standard_normal((n, c)).astype(np.float32)
    y = rng.integers(0, c, size=n).astype(np.uint16)
    expected = fastce.evaluate(y, logits=z, top_k=(1, 10))
    assert fdask.evaluate(_dask(y, 50), logits=_dask(z, (10, 31, 400)), top_k=(1, 10)) == expected


def test_split_class_axis_and_mismatched_label_chunks_are_rechunked(data):
    logits, labels, weights, _ = data
    expected = fastce.evaluate(labels, logits=logits, sample_weight=weights)
    scores = _dask(logits, 400, columns=30)  # class axis in 4 chunks
    got = fdask.evaluate(_dask(labels, 123), logits=scores, sample_weight=_dask(weights, 777))
    assert got == expected


def test_2d_column_labels_and_numpy_weights(data):
    logits, labels, weights, _ = data
    got = fdask.evaluate(_dask(labels[:, None], 300), logits=_dask(logits, 300), sample_weight=list(weights))
    assert got == fastce.evaluate(labels, logits=logits, sample_weight=weights)


@pytest.mark.parametrize("nan_policy", ["raise", "omit", "propagate"])
def test_nan_policy_matches_evaluate(data, nan_policy):
    logits, labels, _, _ = data
    z = logits.copy()
    z[1234, 7] = np.nan
    z[1900, :] = -np.inf
    z[40, 3] = np.inf

    def run(f):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return f(), [str(w.message) for w in caught], [w.category for w in caught]
            except InputError as exc:
                return (str(exc), exc.row, exc.argument), None, None

    expected = run(lambda: fastce.evaluate(labels, logits=z, nan_policy=nan_policy))
    got = run(lambda: fdask.evaluate(labels, logits=_dask(z, (30, 20, 1000)), nan_policy=nan_policy))
    assert got == expected
    if nan_policy == "raise":
        assert expected[0][1] == 40
    if nan_policy == "omit":
        assert expected[2] == [OmittedRowsWarning] and expected[0].n == N - 3


def test_omit_warning_points_at_the_callers_line(data):
    logits, labels, _, _ = data
    z = logits.copy()
    z[5, 5] = np.nan
    with pytest.warns(OmittedRowsWarning) as record:
        fdask.evaluate(labels, logits=_dask(z, 500), nan_policy="omit")
    assert record[0].filename == __file__


def test_probability_errors_and_warnings_match_evaluate(data):
    _, labels, _, proba = data
    p = proba.copy()
    p[1500, 2] = 1.5
    p[1600, 3] = -0.5
    with pytest.raises(InputError) as mem:
        fastce.evaluate(labels, proba=p)
    with pytest.raises(InputError) as dsk:
        fdask.evaluate(labels, proba=_dask(p, 700))
    assert str(dsk.value) == str(mem.value) and dsk.value.row == 1500
    q = proba * 0.99
    with pytest.warns(FastCEWarning, match="do not sum to 1") as record:
        got = fdask.evaluate(labels, proba=_dask(q, 700))
    with pytest.warns(FastCEWarning) as record_mem:
        expected = fastce.evaluate(labels, proba=q)
    assert got == expected and str(record[0].message) == str(record_mem[0].message)


# -- errors found on the workers name global rows ----------------------------------------


def test_first_bad_label_is_reported_with_its_global_row(data):
    logits, labels, weights, _ = data
    y = labels.copy()
    y[1999] = C
    y[1203] = -4
    w = weights.copy()
    w[10] = -1.0  # a bad weight in an earlier row: labels are checked first, as in memory
    with pytest.raises(InputError) as mem:
        fastce.evaluate(y, logits=logits, sample_weight=w)
    with pytest.raises(InputError) as dsk:
        fdask.evaluate(_dask(y, 400), logits=_dask(logits, 400), sample_weight=_dask(w, 400))
    assert (dsk.value.row, dsk.value.argument, str(dsk.value)) == (1203, "y_true", str(mem.value))


def test_bad_weight_row_is_global(data):
    logits, labels, weights, _ = data
    w = weights.copy()
    w[1777] = np.nan
    with pytest.raises(InputError, match="sample_weight row 1777 is nan") as info:
        fdask.evaluate(labels, logits=_dask(logits, 300), sample_weight=w)
    assert info.value.row == 1777


# -- errors at the door (from metadata, before any compute) ------------------------------


def test_door_errors(data):
    logits, labels, weights, _ = data
    scores = _dask(logits, 500)
    with pytest.raises(InputError, match="y_true has 1999 rows but the scores have 2000") as info:
        fdask.evaluate(labels[:-1], logits=scores)
    assert info.value.argument == "y_true"
    with pytest.raises(InputError, match=r"sample_weight has 10 rows"):
        fdask.evaluate(labels, logits=scores, sample_weight=weights[:10])
    with pytest.raises(InputError, match="logits must be a dask array"):
        fdask.evaluate(labels, logits=logits)
    with pytest.raises(InputError, match="exactly one of logits"):
        fdask.evaluate(labels, logits=scores, proba=scores)
    with pytest.raises(InputError, match="shape \\(n_samples, n_classes\\)"):
        fdask.evaluate(labels, logits=scores[:, :, None])
    with pytest.raises(InputError, match="dtype complex64"):
        fdask.evaluate(labels, logits=scores.astype(np.complex64))
    with pytest.raises(InputError, match="y_true has dtype float64; pass integer class indices"):
        fdask.evaluate(labels.astype(float), logits=scores)
    with pytest.raises(InputError, match="nan_policy"):
        fdask.evaluate(labels, logits=scores, nan_policy="skip")
    with pytest.raises(InputError, match="empty"):
        fdask.evaluate(labels[:0], logits=scores[:0])


def test_unknown_chunk_sizes_are_refused_with_the_fix(data):
    logits, labels, _, _ = data
    keep = da.from_array(labels % 2 == 0, chunks=500)
    scores = _dask(logits, 500)[keep]
    with pytest.raises(InputError, match=r"compute_chunk_sizes\(\)") as info:
        fdask.evaluate(labels[labels % 2 == 0], logits=scores)
    assert info.value.argument == "logits"
    y = _dask(labels, 500)[keep]
    with pytest.raises(InputError, match=r"y_true has unknown chunk sizes"):
        fdask.evaluate(y, logits=_dask(logits[labels % 2 == 0], 500))
    known = scores.compute_chunk_sizes()  # the documented fix
    kept = labels % 2 == 0
    assert fdask.evaluate(labels[kept], logits=known) == fastce.evaluate(labels[kept], logits=logits[kept])


# -- laziness and what travels -----------------------------------------------------------


def test_building_the_graph_computes_nothing(data):
    logits, labels, _, _ = data
    calls = []

    def produce(block):
        calls.append(block.shape)
        return block

    scores = _dask(logits, 400).map_blocks(produce, meta=np.empty((0, 0), dtype=logits.dtype))

    def refuse(*args, **kwargs):
        raise AssertionError("a graph was computed while it was being built")

    with dask.config.set(scheduler=refuse):
        lazy = fdask.evaluate(_dask(labels, 400), logits=scores, top_k=(1, 5), compute=False)
    assert calls == [] and isinstance(lazy, Delayed)
    # The reduction is one graph layer, not one per task (culling would be quadratic in chunks).
    layers = lazy.__dask_graph__().layers
    assert len([name for name in layers if name.startswith("fastce-reduce-")]) == 1
    assert len(layers) <= len(scores.__dask_graph__().layers) + 3
    assert lazy.compute() == fastce.evaluate(labels, logits=logits, top_k=(1, 5))
    assert len(calls) == 5  # each block read once


def test_only_small_states_and_seam_rows_leave_a_chunk(data):
    logits, labels, _, _ = data
    scores = _dask(logits, (10, 500, 500, 990))
    lazy = fdask.evaluate(labels, logits=scores, compute=False)
    graph = dict(lazy.__dask_graph__())
    results = dask.get(graph, list(graph))  # every task's output, on this process
    partials = 0
    for key, value in zip(graph, results):
        if isinstance(value, np.ndarray):  # the dask arrays' own chunks
            continue
        # A chunk's output: its partial state plus < one block of rows per side (the seams).
        assert len(pickle.dumps(value)) < 2 * BLOCK * C * 4 + 20_000, key
        if isinstance(value, fdask._Partial):
            partials += 1
            assert len(pickle.dumps(value)) < 8_000, key  # O(top_k), whatever the rows (~6 kB with the moments)
    assert partials >= 4


def test_reduce_row_blocks_sees_aligned_ranges():
    """The generic helper: read() gets every row once, in aligned pieces, merged in row order."""
    values = np.arange(103)
    array = da.from_array(values, chunks=((5, 30, 0, 1, 67),))

    def read(rows, none, first_row):
        assert none is None and rows[0] == first_row
        last = first_row + len(rows)
        inside_one_block = first_row // 10 == (last - 1) // 10
        whole_blocks = first_row % 10 == 0 and (last % 10 == 0 or last == 103)
        assert inside_one_block or whole_blocks, (first_row, last)
        return [rows.tolist()]

    pieces = fdask.reduce_row_blocks([array, None], read, list.__add__, align_rows=10, split_every=3).compute()
    assert sum(pieces, []) == values.tolist()  # every row once, in order
    assert all(len(p) % 10 == 0 or p[-1] == 102 for p in pieces)  # seams join whole blocks


def test_import_fastce_does_not_import_dask():
    code = "import sys, fastce; assert 'dask' not in sys.modules and 'distributed' not in sys.modules, sorted(m for m in sys.modules if 'dask' in m)"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- files read by the workers ------------------------------------------------------------


@pytest.fixture(scope="module")
def shard_dir(data, tmp_path_factory):
    logits, labels, weights, _ = data
    d = tmp_path_factory.mktemp("dask-files")
    (d / "z").mkdir()
    bounds = [0, 333, 1000, 1001, N]
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        np.save(d / "z" / f"part-{i:03d}.npy", logits[lo:hi])
    np.save(d / "y.npy", labels.astype(np.int32))
    np.save(d / "w.npy", weights)
    np.save(d / "z_fortran.npy", np.asfortranarray(logits))
    return d


def test_read_array_npy_shards_lazily(data, shard_dir):
    logits, labels, weights, _ = data
    scores = fdask.read_array(shard_dir / "z", chunk_rows=400)
    assert scores.shape == (N, C) and scores.dtype == np.float32
    assert scores.chunks[0] == (333, 400, 267, 1, 400, 400, 199)  # never straddles a shard
    got = fdask.evaluate_files(shard_dir / "y.npy", logits=shard_dir / "z", sample_weight=shard_dir / "w.npy", top_k=(1, 5), chunk_rows=400)
    assert got == fastce.evaluate(labels, logits=logits, sample_weight=weights, top_k=(1, 5))
    assert fdask.evaluate_files(shard_dir / "y.npy", logits=shard_dir / "z_fortran.npy", chunk_rows=700) == fastce.evaluate(labels, logits=logits)


def test_read_array_parquet_row_groups(data, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    logits, labels, _, _ = data
    table = pa.table({
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), C),
        "label": pa.array(labels),
    })
    path = tmp_path / "val.parquet"
    pq.write_table(table, path, row_group_size=700)
    scores = fdask.read_array(path)
    assert scores.chunks[0] == (700, 700, 600)
    assert fdask.evaluate_files(logits=path, top_k=(1, 5)) == fastce.evaluate(labels, logits=logits, top_k=(1, 5))


def test_read_array_refuses_compressed_npz(data, tmp_path):
    logits, _, _, _ = data
    np.savez_compressed(tmp_path / "z.npz", logits=logits[:10])
    with pytest.raises(InputError, match="compressed .npz"):
        fdask.read_array(tmp_path / "z.npz")


def test_file_errors_name_the_file(shard_dir, tmp_path, data):
    logits, labels, _, _ = data
    np.save(tmp_path / "short.npy", labels[:5])
    with pytest.raises(InputError, match="has 5 rows but the scores have 2000"):
        fdask.evaluate_files(tmp_path / "short.npy", logits=shard_dir / "z")
    with pytest.raises(InputError, match="labels file is required"):
        fdask.evaluate_files(logits=shard_dir / "z")


# -- on a real cluster: worker processes ------------------------------------------------


@pytest.fixture(scope="module")
def client():
    # Worker processes import fastce from the same source tree, so they load
    # the kernels from the same numba disk cache as this process.
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", env={"NUMBA_NUM_THREADS": "1"}
    ) as cluster, distributed.Client(cluster, set_as_default=False) as c:
        yield c


def test_cluster_bit_identical_and_errors_name_global_rows(client, data):
    logits, labels, weights, _ = data
    expected = fastce.evaluate(labels, logits=logits, sample_weight=weights, top_k=(1, 5))
    with dask.config.set(scheduler=client):
        scores = _dask(logits, (7, 600, 1))
        # what the client receives is one small partial, never the scores
        lazy = fdask.evaluate(labels, logits=scores, sample_weight=weights, top_k=(1, 5), compute=False)
        assert lazy.compute() == expected
        assert fdask.evaluate(_dask(labels, 300), logits=scores, sample_weight=weights, top_k=(1, 5)) == expected
        # arrays persisted on the workers: their keys are futures, not graph tasks
        kept, y_kept = client.persist([scores, _dask(labels, (7, 600, 1))])
        assert fdask.evaluate(y_kept, logits=kept, sample_weight=weights, top_k=(1, 5)) == expected
        y = labels.copy()
        y[1650] = C + 3
        with pytest.raises(InputError, match="y_true row 1650 is 103") as info:
            fdask.evaluate(y, logits=scores)
        assert info.value.row == 1650 and info.value.argument == "y_true"
        # scores generated on the workers: the graph shipped is small, the result identical
        rs = da.random.default_rng(5)
        z = rs.standard_normal((N, C), chunks=(450, C), dtype=np.float32)
        y = rs.integers(0, C, size=N, chunks=450)
        lazy = fdask.evaluate(y, logits=z, compute=False)
        assert len(pickle.dumps(dict(lazy.__dask_graph__()))) < 100_000
        z_np, y_np = dask.compute(z, y)
        assert lazy.compute() == fastce.evaluate(y_np, logits=z_np)


def test_cli_scheduler_prints_what_the_local_command_prints(client, shard_dir):
    args = ["eval", "--labels", str(shard_dir / "y.npy"), "--logits", str(shard_dir / "z"),
            "--weights", str(shard_dir / "w.npy"), "--top-k", "1", "5", "--chunk-rows", "300"]
    outputs = []
    for extra in ([], ["--scheduler", client.scheduler.address]):
        for fmt in ([], ["--json"]):
            out, err = io.StringIO(), io.StringIO()
            assert cli.main(args + fmt + extra + ["--no-progress"], out=out, err=err) == 0, err.getvalue()
            outputs.append(out.getvalue())
    assert outputs[0] == outputs[2] and outputs[1] == outputs[3]
    assert json.loads(outputs[3])["n"] == N
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(args + ["--scheduler", client.scheduler.address, "--state", str(shard_dir / "s.json")], out=out, err=err)
    assert status == 2 and "--state cannot be combined with --scheduler" in err.getvalue()


def test_cli_scheduler_reports_worker_side_errors(client, shard_dir, tmp_path, data):
    _, labels, _, _ = data
    y = labels.copy()
    y[1500] = -1
    np.save(tmp_path / "bad.npy", y)
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(
        ["eval", "--labels", str(tmp_path / "bad.npy"), "--logits", str(shard_dir / "z"), "--scheduler", client.scheduler.address],
        out=out, err=err,
    )
    assert status == 2
    assert "bad.npy: y_true row 1500 is -1" in err.getvalue() and out.getvalue() == ""


def test_doc_example_runs_against_a_scheduler_address(client):
    """The README's recipe: Client(address), then fastce.dask.evaluate."""
    code = textwrap.dedent(f"""
        import numpy as np, dask.array as da, fastce, fastce.dask
        from distributed import Client
        with Client({client.scheduler.address!r}) as c:
            z = da.random.default_rng(0).standard_normal((3000, 50), chunks=(1000, 50), dtype=np.float32)
            y = da.random.default_rng(1).integers(0, 50, size=3000, chunks=1000)
            m = fastce.dask.evaluate(y, logits=z, top_k=(1, 5))
            assert m == fastce.evaluate(y.compute(), logits=z.compute(), top_k=(1, 5)), m
            print(m.n)
    """)
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3000"


def test_metrics_pickle_round_trip(data):
    """Delayed results come back from worker processes pickled."""
    logits, labels, _, _ = data
    m = fastce.evaluate(labels, logits=logits, top_k=(1, 5))
    back = pickle.loads(pickle.dumps(m))
    assert back == m and back.top_k_accuracy[5] == m.top_k_accuracy[5]
    with pytest.raises(TypeError):
        back.top_k_accuracy[5] = 0.0  # still read-only


def test_docstring_examples():
    import doctest

    result = doctest.testmod(fdask, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_parquet_chunk_rows_splits_row_groups(data, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    logits, labels, weights, _ = data
    table = pa.table({
        "scores": pa.array(list(logits[:900].astype(np.float64))),  # a variable-length list column
        "y": pa.array(labels[:900].astype(np.int16)),
        "w": pa.array(weights[:900]),
    })
    path = tmp_path / "val.parquet"
    pq.write_table(table, path, row_group_size=400)
    assert fdask.read_array(path, chunk_rows=150).chunks[0] == (150, 150, 100, 150, 150, 100, 100)
    got = fdask.evaluate_files(path, logits=path, sample_weight=path, labels_name="y", weights_name="w", chunk_rows=150)
    assert got == fastce.evaluate(labels[:900], logits=logits[:900].astype(np.float64), sample_weight=weights[:900])


# -- fastce.dask.diagnose ------------------------------------------------------------


@pytest.mark.parametrize("chunks", [(10_000,), (333, 4000, 1), (1,) * 5 + (2995,)])
def test_diagnose_matches_in_memory(chunks):
    from fastce.dask import diagnose as dask_diagnose

    rng = np.random.default_rng(3)
    n = sum(chunks)
    z = rng.normal(scale=2.0, size=(n, 12)).astype(np.float32)
    y = rng.integers(0, 12, size=n)
    w = rng.uniform(size=n)
    expected = fastce.diagnose(y, logits=z, sample_weight=w, worst_k=9)
    got = dask_diagnose(
        da.from_array(y, chunks=(chunks,)), logits=da.from_array(z, chunks=(chunks, 12)), sample_weight=w, worst_k=9
    )
    assert got.metrics == expected.metrics
    assert got.worst == expected.worst
    assert got.loss_split["confidently_wrong"]["rows"] == expected.loss_split["confidently_wrong"]["rows"]
    assert got.calibration["ece"] == pytest.approx(expected.calibration["ece"], rel=1e-12)
    np.testing.assert_allclose(got.confusion, expected.confusion, rtol=1e-12)
    np.testing.assert_allclose(got.classes["f1"], expected.classes["f1"], rtol=1e-12)
    assert got.to_json() == expected.to_json()  # every number bit for bit (issue 14, item 17)


def test_diagnose_is_lazy_and_reports_global_rows():
    from fastce.dask import diagnose as dask_diagnose

    rng = np.random.default_rng(4)
    z = rng.normal(size=(3000, 5))
    y = rng.integers(0, 5, size=3000)
    y[2500] = 7
    lazy = dask_diagnose(da.from_array(y, chunks=1000), logits=da.from_array(z, chunks=(1000, 5)), compute=False)
    with pytest.raises(InputError, match="row 2500"):
        lazy.compute()


def test_cli_report_on_the_cluster_equals_the_local_report(client, shard_dir):
    args = ["report", "--labels", str(shard_dir / "y.npy"), "--logits", str(shard_dir / "z"),
            "--weights", str(shard_dir / "w.npy"), "--worst-k", "6", "--chunk-rows", "300", "--json", "--no-progress"]
    reports = []
    for extra in ([], ["--scheduler", client.scheduler.address]):
        out, err = io.StringIO(), io.StringIO()
        assert cli.main(args + extra, out=out, err=err) == 0, err.getvalue()
        reports.append(json.loads(out.getvalue()))
    local, remote = reports
    assert remote["metrics"] == local["metrics"]
    assert remote["worst"] == local["worst"]
    assert remote["calibration"]["ece"] == pytest.approx(local["calibration"]["ece"], rel=1e-12)
    np.testing.assert_allclose(remote["confusion"], local["confusion"], rtol=1e-12)


def test_cli_scheduler_takes_groups_and_prints_what_the_local_command_prints(client, shard_dir, data):
    _, labels, _, _ = data
    np.save(shard_dir / "g.npy", np.arange(labels.shape[0]) // 37)
    args = ["eval", "--labels", str(shard_dir / "y.npy"), "--logits", str(shard_dir / "z"),
            "--groups", str(shard_dir / "g.npy"), "--json", "--chunk-rows", "300", "--no-progress"]
    outputs = []
    for extra in ([], ["--scheduler", client.scheduler.address]):
        out, err = io.StringIO(), io.StringIO()
        assert cli.main(args + extra, out=out, err=err) == 0, err.getvalue()
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[1])["n_groups"] == -(-labels.shape[0] // 37)


def test_grouped_states_travel_between_worker_processes(client, data):
    """Group sums (numba typed Dict inside) pickle for dask's transport: evaluate and compare with groups=
    on a cluster of worker processes equal the in-memory results (fastce.dask.compare could not move them)."""
    logits, labels, _, _ = data
    groups = np.arange(labels.shape[0]) // 29
    scores = da.from_array(logits, chunks=(450, C))
    with dask.config.set(scheduler=client):
        got = fdask.evaluate(labels, logits=scores, groups=groups)
        compared = fdask.compare(labels, logits={"A": scores, "B": scores * 2}, groups=groups)
    assert got == fastce.evaluate(labels, logits=logits, groups=groups)
    expected = fastce.compare(labels, logits={"A": logits, "B": logits * 2}, groups=groups)
    assert compared.delta("B", "A").stderr == expected.delta("B", "A").stderr


def test_a_chunk_without_class_0_does_not_call_0_based_labels_1_based():
    # Each chunk is checked alone: a chunk holding labels 1..C said "Labels look 1-based: subtract 1" of labels
    # that start at 0 in another chunk; the hint is now a condition, true whatever the chunk sees.
    import dask.array as da

    import fastce.dask

    y = np.repeat([0, 1], 512)
    y[600] = 3
    z = np.zeros((1024, 3), np.float32)
    with pytest.raises(fastce.InputError, match="y_true row 600 is 3") as caught:
        fastce.dask.evaluate(da.from_array(y, 512), logits=da.from_array(z, (512, 3)))
    assert "look 1-based" not in str(caught.value)
    with pytest.raises(fastce.InputError, match=r"If the labels run from 1 to 3 \(none is 0\), they are 1-based"):
        fastce.evaluate(np.repeat([1, 3], 4), logits=np.zeros((8, 3)))


def test_weights_and_groups_of_one_column_are_refused_as_by_evaluate():
    import dask.array as da

    import fastce.dask

    y, z = np.arange(10) % 3, np.zeros((10, 3))
    for key in ("sample_weight", "groups"):
        value = np.ones((10, 1)) if key == "sample_weight" else np.zeros((10, 1), dtype=np.int64)
        with pytest.raises(fastce.InputError):
            fastce.evaluate(y, logits=z, **{key: value})
        with pytest.raises(fastce.InputError, match="1-D"):
            fastce.dask.evaluate(da.from_array(y, 5), logits=da.from_array(z, (5, 3)), **{key: value})
