"""fastce.files: every format reads back the same rows and gives evaluate's numbers."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest

import fastce
from fastce import _config, files
from fastce.files import InputFileError, evaluate_files, open_array, open_inputs

N, C = 6_000, 24  # not a multiple of the block, several blocks


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    logits = (rng.standard_normal((N, C)) * 2).astype(np.float32)
    labels = rng.integers(0, C, size=N)
    weights = rng.random(N)
    return logits, labels, weights


@pytest.fixture(scope="module")
def expected(data):
    logits, labels, weights = data
    return {
        "plain": fastce.evaluate(labels, logits=logits, top_k=(1, 5)),
        "weighted": fastce.evaluate(labels, logits=logits, sample_weight=weights, top_k=(1, 5)),
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory, data):
    logits, labels, weights = data
    d = tmp_path_factory.mktemp("files")
    np.save(d / "logits.npy", logits)
    np.save(d / "labels.npy", labels.astype(np.int32))
    np.save(d / "weights.npy", weights)
    np.save(d / "logits_f.npy", np.asfortranarray(logits))
    np.savez(d / "both.npz", logits=logits, labels=labels, sample_weight=weights)
    np.savez_compressed(d / "both_c.npz", logits=logits, labels=labels)
    np.savez(d / "anon.npz", a=logits, b=labels)  # found by shape and dtype
    np.savez(d / "ambiguous.npz", a=labels, b=labels)
    (d / "shards").mkdir()
    (d / "label_shards").mkdir()
    for i, (lo, hi) in enumerate([(0, 1000), (1000, 1001), (1001, 3500), (3500, N)]):
        np.save(d / "shards" / f"part-{i:03d}.npy", logits[lo:hi])
    for i, (lo, hi) in enumerate([(0, 2999), (2999, N)]):
        np.save(d / "label_shards" / f"y-{i}.npy", labels[lo:hi])
    return d


@pytest.fixture(scope="module")
def tables(folder, data):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    logits, labels, weights = data
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), C)
    offsets = pa.array(np.arange(0, N * C + 1, C, dtype=np.int32))
    variable = pa.ListArray.from_arrays(offsets, pa.array(logits.ravel()))
    pq.write_table(pa.table({"logits": fixed, "label": labels, "w": weights}), folder / "fixed.parquet", row_group_size=1700)
    pq.write_table(pa.table({"scores": variable, "y": labels.astype(np.int16)}), folder / "list.parquet", row_group_size=2500)
    table = pa.table({"logits": fixed, "labels": labels})
    with pa.ipc.new_file(str(folder / "data.arrow"), table.schema) as writer:
        for batch in table.to_batches(max_chunksize=1234):
            writer.write_batch(batch)
    return folder


def _j(path):
    return os.fspath(path)


# -- numbers -------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [None, 700, 999, 1])
def test_npy_files_give_evaluate_bit_for_bit(folder, expected, chunk_rows):
    if chunk_rows == 1:
        chunk_rows = _config.block_rows(C) - 1  # chunks never aligned with blocks
    got = evaluate_files(folder / "labels.npy", logits=folder / "logits.npy", top_k=(1, 5), chunk_rows=chunk_rows)
    assert got == expected["plain"]
    got = evaluate_files(
        folder / "labels.npy", logits=folder / "logits.npy", sample_weight=folder / "weights.npy", top_k=(1, 5),
        chunk_rows=chunk_rows,
    )
    assert got == expected["weighted"]


def test_fortran_ordered_npy(folder, expected):
    source = open_array(folder / "logits_f.npy")
    assert source.read(10, 20).flags.c_contiguous
    got = evaluate_files(folder / "labels.npy", logits=folder / "logits_f.npy", top_k=(1, 5), chunk_rows=1000)
    assert got == expected["plain"]


@pytest.mark.parametrize("name", ["both.npz", "both_c.npz", "anon.npz"])
def test_npz_members_are_found_by_name_or_shape(folder, expected, name):
    got = evaluate_files(folder / name, logits=folder / name, top_k=(1, 5), chunk_rows=1300)
    assert got == expected["plain"]


def test_npz_stored_members_are_memory_mapped_and_compressed_ones_streamed(folder, data):
    logits, _labels, weights = data
    stored = open_array(folder / "both.npz", role="weights")
    assert stored.kind == "npz" and stored.name == "sample_weight"
    np.testing.assert_array_equal(stored.read(0, N), weights)
    with open_array(folder / "both_c.npz") as compressed:
        assert compressed.kind == "npz-compressed" and compressed.name == "logits"
        for lo, hi in [(0, 10), (10, 2000), (5990, N), (3, 9), (4000, 4001)]:  # forward and backward
            np.testing.assert_array_equal(compressed.read(lo, hi), logits[lo:hi])


def test_npz_weights_from_the_same_archive(folder, expected):
    path = folder / "both.npz"
    got = evaluate_files(path, logits=path, sample_weight=path, top_k=(1, 5))
    assert got == expected["weighted"]


@pytest.mark.parametrize(
    "spec",
    ["dir", "glob", "list"],
)
def test_npy_shards(folder, expected, spec):
    shards = sorted((folder / "shards").iterdir())
    logits = {"dir": folder / "shards", "glob": _j(folder / "shards" / "part-*.npy"), "list": [_j(p) for p in shards]}[spec]
    source = open_array(logits)
    assert source.shape == (N, C) and source.kind == "npy-shards"
    got = evaluate_files(folder / "label_shards", logits=logits, top_k=(1, 5), chunk_rows=1024)
    assert got == expected["plain"]


def test_shard_reads_span_files(folder, data):
    logits = data[0]
    source = open_array(folder / "shards")
    for lo, hi in [(0, N), (999, 1002), (1000, 1001), (500, 4000), (N - 1, N)]:
        np.testing.assert_array_equal(source.read(lo, hi), logits[lo:hi])


def test_parquet_fixed_size_list_with_labels_and_weights_in_the_file(tables, expected):
    path = tables / "fixed.parquet"
    got = evaluate_files(logits=path, top_k=(1, 5), chunk_rows=1000)  # labels from the same table
    assert got == expected["plain"]
    got = evaluate_files(path, logits=path, sample_weight=path, weights_name="w", top_k=(1, 5), chunk_rows=4096)
    assert got == expected["weighted"]


def test_parquet_list_column_and_named_columns(tables, expected, data):
    path = tables / "list.parquet"
    got = evaluate_files(path, logits=path, top_k=(1, 5), chunk_rows=999)
    assert got == expected["plain"]
    with open_array(path, role="scores", name="scores") as source:
        assert source.shape == (N, C) and source.dtype == np.float32
        for lo, hi in [(0, 3), (2400, 2600), (100, 200), (5999, N)]:  # across row groups, and backwards
            np.testing.assert_array_equal(source.read(lo, hi), data[0][lo:hi])
    with open_array(path, role="labels") as labels:
        assert labels.name == "y" and labels.dtype == np.int16


def test_arrow_ipc_file(tables, expected):
    path = tables / "data.arrow"
    assert evaluate_files(path, logits=path, top_k=(1, 5), chunk_rows=2000) == expected["plain"]


def test_arrays_read_are_writable_so_kernels_see_one_type(tables):
    for path, role in [("logits.npy", "scores"), ("both.npz", "scores"), ("both_c.npz", "scores"), ("fixed.parquet", "scores"), ("data.arrow", "labels")]:
        with open_array(tables / path, role=role) as source:
            assert source.read(0, 100).flags.writeable


def test_default_chunk_rows_are_whole_blocks():
    for c, itemsize in [(2, 4), (10, 4), (1000, 4), (1000, 2), (50_000, 4), (1 << 20, 8)]:
        rows = files.default_chunk_rows(c, itemsize)
        assert rows % _config.block_rows(c) == 0 and rows >= 1
        assert rows * c * itemsize <= max(files.DEFAULT_CHUNK_BYTES, c * itemsize * _config.block_rows(c))


# -- refusals --------------------------------------------------------------------


def _refused(match, *args, **kwargs):
    with pytest.raises(InputFileError, match=match):
        open_array(*args, **kwargs)


def test_pickles_and_object_arrays_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([1, "a", None], dtype=object), allow_pickle=True)
    _refused("Python objects .* never loads pickles", tmp_path / "obj.npy", role="labels")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    _refused("never loads pickles", tmp_path / "obj.npz", role="labels")
    with open(tmp_path / "p.npy", "wb") as fp:
        pickle.dump(np.zeros((3, 3)), fp)
    _refused("holds a Python pickle", tmp_path / "p.npy")
    with open(tmp_path / "p0.npy", "wb") as fp:
        pickle.dump([1, 2], fp, protocol=0)
    _refused("not an .npy file", tmp_path / "p0.npy")


def test_other_bad_files_are_refused(tmp_path, folder):
    _refused("no such file", tmp_path / "missing.npy")
    (tmp_path / "t.txt").write_text("1 2 3\n")
    _refused("not an .npy file", tmp_path / "t.txt")
    raw = (folder / "logits.npy").read_bytes()
    (tmp_path / "trunc.npy").write_bytes(raw[: len(raw) // 2])
    _refused("truncated", tmp_path / "trunc.npy")
    (tmp_path / "header.npy").write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': 'zz'}\n")
    _refused("malformed .npy header", tmp_path / "header.npy")
    (tmp_path / "empty").mkdir()
    _refused("no .npy files", tmp_path / "empty")
    _refused("no file matches", _j(tmp_path / "nothing-*.npy"))
    np.save(tmp_path / "good.npy", np.zeros((2, 3), np.float32))
    _refused("t.txt is not an .npy file", [_j(tmp_path / "good.npy"), _j(tmp_path / "t.txt")])
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    _refused("not a valid .npz", tmp_path / "bad.npz")


def test_wrong_dtypes_and_shapes_are_refused(tmp_path, folder):
    np.save(tmp_path / "flabels.npy", np.zeros(10))
    _refused("labels must be integer", tmp_path / "flabels.npy", role="labels")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]).reshape(1, 2))
    _refused("scores must be float", tmp_path / "s.npy")
    np.save(tmp_path / "v.npy", np.float32(1.0))
    _refused(r"shape \(rows, classes\), \(rows,\) for binary scores of class 1, or \(\.\.\., classes\)", tmp_path / "v.npy")
    np.save(tmp_path / "v3.npy", np.zeros((10, 1, 2), np.float32))
    _refused(r"must have shape \(rows,\) \(or \(rows, classes\) targets", tmp_path / "v3.npy", role="labels")
    np.save(tmp_path / "s2.npy", np.array(["a", "b"]).reshape(1, 2))
    _refused(r"\(rows, classes\) \(or \(\.\.\., classes\)\) must hold 0/1 labels or probabilities", tmp_path / "s2.npy", role="labels")
    np.save(tmp_path / "e.npy", np.zeros((0, 3), np.float32))
    _refused("has no rows", tmp_path / "e.npy")
    (tmp_path / "mixed").mkdir()
    np.save(tmp_path / "mixed" / "a.npy", np.zeros((2, 3), np.float32))
    np.save(tmp_path / "mixed" / "b.npy", np.zeros((2, 3), np.float64))
    _refused("all shards must match", tmp_path / "mixed")
    np.save(tmp_path / "mixed" / "c.npy", np.zeros((2, 3), np.float32))
    _refused("shards must be .npy", [_j(tmp_path / "mixed" / "a.npy"), _j(folder / "both.npz")])
    _refused("drop the member", folder / "logits.npy", name="x")


def test_npz_member_choice_errors(folder, tmp_path):
    _refused("no array named 'nope'.*'labels', 'logits'", folder / "both.npz", name="nope")
    _refused("cannot tell which array holds the labels .*--labels-key", folder / "ambiguous.npz", role="labels")
    np.savez_compressed(tmp_path / "f.npz", logits=np.asfortranarray(np.zeros((5, 3), np.float32)))
    _refused("Fortran", tmp_path / "f.npz")
    with zipfile.ZipFile(tmp_path / "junk.npz", "w") as archive:
        archive.writestr("logits.npy", b"not an array")
    _refused("not an .npy array", tmp_path / "junk.npz")


def test_row_count_mismatch_names_both_files(folder, tmp_path):
    np.save(tmp_path / "short.npy", np.zeros(10, np.int64))
    with pytest.raises(InputFileError, match=r"short.npy has 10 rows but .*logits.npy has 6000"):
        open_inputs(tmp_path / "short.npy", logits=folder / "logits.npy")
    with pytest.raises(InputFileError, match="labels file is required"):
        open_inputs(logits=folder / "logits.npy")
    with pytest.raises(InputFileError, match="exactly one"):
        open_inputs(folder / "labels.npy")


def test_table_errors(tables, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    _refused("no column 'nope'", tables / "fixed.parquet", name="nope")
    _refused("list or fixed-size-list", tables / "fixed.parquet", name="label")
    ragged = pa.array([[0.1, 0.9], [0.5, 0.25, 0.25], [1.0, 0.0]], type=pa.list_(pa.float64()))
    pq.write_table(pa.table({"proba": ragged, "label": [1, 0, 0]}), tmp_path / "ragged.parquet")
    with open_array(tmp_path / "ragged.parquet") as source, pytest.raises(InputFileError, match="row 1 holds 3"):
        source.read(0, 3)
    nulls = pa.array([[0.1, 0.9], None, [1.0, 0.0]], type=pa.list_(pa.float64()))
    pq.write_table(pa.table({"proba": nulls, "label": [1, 0, 0]}), tmp_path / "nulls.parquet")
    with open_array(tmp_path / "nulls.parquet") as source, pytest.raises(InputFileError, match="row 1 is null"):
        source.read(0, 3)
    pq.write_table(pa.table({"a": ragged, "b": ragged, "c": ["x", "y", "z"]}), tmp_path / "many.parquet")
    _refused("cannot tell which column holds the scores .*--score-column", tmp_path / "many.parquet")
    _refused("expected numbers", tmp_path / "many.parquet", role="labels", name="c")
    strings = pa.array([["a"], ["b"]], type=pa.list_(pa.string()))
    pq.write_table(pa.table({"logits": strings}), tmp_path / "str.parquet")
    _refused("expected numbers", tmp_path / "str.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1" + b"\0" * 100)
    _refused("cannot be read as parquet", tmp_path / "broken.parquet")


def _npy_bytes(header, data=b"\0" * 48, *, raw=None, version=1):
    """An .npy file with the given header dict (or raw header text), as np.save lays it out."""
    import struct

    text = raw if raw is not None else repr(header).encode("latin1")
    text += b" " * (64 - (10 + len(text) + 1) % 64) + b"\n"
    size = struct.pack("<H", len(text)) if version == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + size + text + data


_GOOD = {"descr": "<f4", "fortran_order": False, "shape": (4, 3)}
MALFORMED_NPY = {
    "negative dimension": (_npy_bytes(_GOOD | {"shape": (-1, 3)}), "non-negative integers"),
    "negative column count": (_npy_bytes(_GOOD | {"shape": (4, -3)}), "non-negative integers"),
    "dimension above int64": (_npy_bytes(_GOOD | {"shape": (2**70, 3)}), "non-negative integers"),
    "huge dimensions": (_npy_bytes(_GOOD | {"shape": (2**62, 2**62)}), "is truncated: its header promises"),
    "float dimension": (_npy_bytes(_GOOD | {"shape": (4.5, 3)}), "non-negative integers"),
    "bool dimension": (_npy_bytes(_GOOD | {"shape": (True, 3)}), "non-negative integers"),
    "shape a string": (_npy_bytes(_GOOD | {"shape": "43"}), "shape must be a tuple"),
    "shape an int": (_npy_bytes(_GOOD | {"shape": 4}), "shape must be a tuple"),
    "100 dimensions": (_npy_bytes(_GOOD | {"shape": (1,) * 100}), "at most 32"),
    "fortran flag a string": (_npy_bytes(_GOOD | {"fortran_order": "yes"}), "fortran_order must be True or False"),
    "fortran flag an int": (_npy_bytes(_GOOD | {"fortran_order": 2}), "fortran_order must be True or False"),
    "unknown dtype": (_npy_bytes(_GOOD | {"descr": "<q9"}), "data type '<q9' not understood"),
    "dtype an int": (_npy_bytes(_GOOD | {"descr": 5}), "malformed .npy header"),
    "negative sub-array": (_npy_bytes(_GOOD | {"descr": [("a", "<f4", (-2,))], "shape": (4,)}), "malformed .npy header"),
    "string dtype": (_npy_bytes(_GOOD | {"descr": "<U3"}), "is truncated"),
    "missing key": (_npy_bytes({"descr": "<f4", "shape": (4, 3)}), "expected a dict with the keys"),
    "extra key": (_npy_bytes(_GOOD | {"x": 1}), "expected a dict with the keys"),
    "header a list": (_npy_bytes([1, 2]), "expected a dict"),
    "unclosed header": (_npy_bytes(None, raw=b"{'descr': '<f4'"), "malformed .npy header"),
    "code in the header": (_npy_bytes(None, raw=b"__import__('os').system('false')"), "malformed .npy header"),
    "deeply nested header": (_npy_bytes(None, raw=b"(" * 5000 + b")" * 5000), "malformed .npy header"),
    "bad utf-8 (version 3)": (_npy_bytes(None, raw=b"{'descr': '\xff'}", version=3), "malformed .npy header"),
    "unknown version": (_npy_bytes(_GOOD, version=9), "unknown version 9"),
    "truncated data": (_npy_bytes(_GOOD, b"\0" * 10), "is truncated: its header promises 48 bytes"),
    "magic only": (b"\x93NUMPY", "truncated .npy file"),
    "cut in the header length": (b"\x93NUMPY\x01\x00\xff", "truncated .npy file"),
    "cut in the header": (b"\x93NUMPY\x01\x00\xff\x00{'descr'", "truncated .npy file"),
    "bad magic": (b"\x93NUMPZ\x01\x00" + b"\0" * 100, "is not an .npy"),
    "empty file": (b"", "is not an .npy"),
    "zero columns": (_npy_bytes(_GOOD | {"shape": (4, 0)}, b""), "has no columns"),
    "zero rows": (_npy_bytes(_GOOD | {"shape": (0, 3)}, b""), "has no rows"),
}


@pytest.mark.parametrize("name", list(MALFORMED_NPY))
def test_every_malformed_npy_is_an_input_file_error(tmp_path, name):
    content, match = MALFORMED_NPY[name]
    path = tmp_path / "bad.npy"
    path.write_bytes(content)
    with pytest.raises(InputFileError, match=match):
        open_array(path)
    with zipfile.ZipFile(tmp_path / "bad.npz", "w", zipfile.ZIP_DEFLATED) as archive:  # the same header as an npz member
        archive.writestr("logits.npy", content)
    with pytest.raises(InputFileError, match=match.split(":")[0]):
        open_array(tmp_path / "bad.npz")


def test_negative_dimension_exits_2_in_the_cli(tmp_path):
    from fastce import cli

    (tmp_path / "z.npy").write_bytes(_npy_bytes(_GOOD | {"shape": (-1, 3)}))
    np.save(tmp_path / "y.npy", np.zeros(4, np.int64))
    import io

    err = io.StringIO()
    status = cli.main(["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy")], out=io.StringIO(), err=err)
    assert status == 2 and err.getvalue().startswith("fastce: error: ") and "non-negative integers" in err.getvalue()


@pytest.mark.parametrize("damage", ["flip", "zero"])
def test_damaged_compressed_npz_is_an_input_file_error(tmp_path, damage):
    z = np.random.default_rng(0).random((2000, 8)).astype(np.float32)
    np.savez_compressed(tmp_path / "c.npz", logits=z)
    raw = (tmp_path / "c.npz").read_bytes()
    if damage == "flip":
        raw = raw[:300] + bytes(b ^ 0x55 for b in raw[300:600]) + raw[600:]
    else:
        raw = raw[:100] + b"\0" * (len(raw) - 200) + raw[-100:]
    (tmp_path / "bad.npz").write_bytes(raw)
    with pytest.raises(InputFileError, match="bad.npz"):
        source = open_array(tmp_path / "bad.npz")
        for lo in range(0, source.n_rows, 500):
            source.read(lo, min(source.n_rows, lo + 500))
