"""Read scores, labels and weights from files, a bounded number of rows at a time.

Formats (recognised by their first bytes, not by their names):

* ``.npy``: memory-mapped, read in row slices (never loaded whole).
* ``.npz``: uncompressed members (``np.savez``) are memory-mapped in place;
  compressed ones (``np.savez_compressed``) are decompressed chunk by chunk.
* Shards: a directory (its ``*.npy`` files), a glob pattern or several paths,
  in sorted name order (zero-pad numbers: ``part-0010.npy`` sorts after
  ``part-0009.npy``, ``part-10.npy`` before ``part-9.npy``).
* Parquet and Arrow IPC (Feather v2) files through pyarrow (optional extra
  ``fastce[parquet]``): scores in a list or fixed-size-list column, labels
  and weights in numeric columns; read a record batch at a time.

Nothing is ever unpickled: object arrays and pickles are refused with an
error that says so.  Every array handed out is a writable numpy array (a
copy-on-write map for files, which nothing writes to), so the kernels see
the same types as for in-memory arrays.

:func:`evaluate_files` is the Python door; the ``fastce eval`` command uses
:func:`open_inputs` and :func:`iter_chunks` with checkpoints and progress.
"""

from __future__ import annotations

import ast
import glob
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from fastce import _config
from fastce.errors import InputError

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_PARQUET_MAGIC = b"PAR1"
_ARROW_MAGIC = b"ARROW1"
_NPY_KEYS = {"descr", "fortran_order", "shape"}
_NPY_MAX_DIMS = 32  # numpy's own limit is 64; score files have 1 or 2

# Default member (npz) and column (tables) names per role, in order of preference.
DEFAULT_NAMES = {
    "scores": ("logits", "proba", "probabilities", "scores", "probs"),
    "labels": ("labels", "label", "y_true", "y", "targets", "target"),
    "weights": ("sample_weight", "weights", "weight", "sample_weights"),
    "groups": ("groups", "group", "group_id", "cluster"),
}
ROLE_WORDS = {"scores": "scores", "labels": "labels", "weights": "weights", "groups": "groups"}
# The command's options naming an .npz member and a table column, per role (every role: --groups's was missing,
# a KeyError and exit status 1 when no member was named groups).
_NAME_OPTIONS = {
    "scores": ("--key", "--score-column"),
    "labels": ("--labels-key", "--label-column"),
    "weights": ("--weights-key", "--weight-column"),
    "groups": ("--groups-key", "--group-column"),
}
# Rows decoded at a time from tables and compressed members when no chunk size is given.
DEFAULT_BATCH_ROWS = 1 << 16
# Target bytes of scores per chunk for the command's default chunk size.
DEFAULT_CHUNK_BYTES = 64 << 20


class InputFileError(InputError):
    """A file cannot be read as the array it should hold (missing, wrong format, dtype or shape)."""


# ---------------------------------------------------------------------------
# .npy headers


def _parse_npy_header(fp, where: str):
    """(shape, fortran_order, dtype, header_bytes) of the .npy stream ``fp`` at its magic."""
    magic = fp.read(8)
    if magic[:6] != _NPY_MAGIC:
        raise InputFileError(f"{where} is not an .npy array (no NumPy magic bytes).", argument=where)
    if len(magic) < 8:
        raise InputFileError(f"{where} is a truncated .npy file.", argument=where)
    major = magic[6]
    if major == 1:
        size_bytes, fmt, encoding = 2, "<H", "latin1"
    elif major in (2, 3):
        size_bytes, fmt, encoding = 4, "<I", "latin1" if major == 2 else "utf8"
    else:
        raise InputFileError(f"{where} is an .npy file of unknown version {major}.", argument=where)
    raw = fp.read(size_bytes)
    if len(raw) < size_bytes:
        raise InputFileError(f"{where} is a truncated .npy file.", argument=where)
    (length,) = struct.unpack(fmt, raw)
    if length > 1 << 20:
        raise InputFileError(f"{where} has an implausible .npy header ({length} bytes).", argument=where)
    text = fp.read(length)
    if len(text) < length:
        raise InputFileError(f"{where} is a truncated .npy file.", argument=where)
    try:
        header = ast.literal_eval(text.decode(encoding))  # literals only: never code
        if not isinstance(header, dict) or set(header) != _NPY_KEYS:
            raise ValueError(f"expected a dict with the keys {sorted(_NPY_KEYS)}")
        shape, fortran = header["shape"], header["fortran_order"]
        # As strict as numpy's own reader, and more: a negative or absurd
        # dimension is refused here, not deep inside np.memmap.
        if not isinstance(shape, tuple) or len(shape) > _NPY_MAX_DIMS or not all(
            type(d) is int and 0 <= d < 2**63 for d in shape
        ):
            raise ValueError(f"shape must be a tuple of at most {_NPY_MAX_DIMS} non-negative integers; got {shape!r:.80}")
        if not isinstance(fortran, bool):
            raise ValueError(f"fortran_order must be True or False; got {fortran!r:.80}")
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except (ValueError, SyntaxError, KeyError, TypeError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputFileError(f"{where} has a malformed .npy header ({reason}).", argument=where) from None
    if dtype.hasobject:
        raise InputFileError(
            f"{where} holds Python objects (dtype {dtype}), which numpy stores as a pickle; fastce never "
            "loads pickles. Save a numeric array instead, e.g. np.save(path, np.asarray(x, dtype=np.float32)).",
            argument=where,
        )
    return shape, fortran, dtype, 8 + size_bytes + length


def _stat(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def _sniff(path: str) -> bytes:
    try:
        with open(path, "rb") as fp:
            return fp.read(8)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file.", argument=path) from None
    except IsADirectoryError:
        raise InputFileError(f"{path} is a directory.", argument=path) from None
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read ({exc.strerror or exc}).", argument=path) from None


def _not_an_array(path: str, head: bytes) -> InputFileError:
    if head[:1] == b"\x80" or head[:2] in (b"(d", b"(l", b"]q", b"}q"):
        why = "it holds a Python pickle, and fastce never loads pickles (they can run arbitrary code)"
    else:
        why = "its content is not .npy, .npz, Parquet or Arrow"
    return InputFileError(
        f"{path} is not an .npy file: {why}. Save arrays with np.save (or np.savez, or Parquet).",
        argument=path,
    )


# ---------------------------------------------------------------------------
# Sources


class ArraySource:
    """An array on disk, read a range of rows at a time.

    ``shape`` is (rows, ...) and ``dtype`` the numpy dtype of what ``read``
    returns.  ``read(start, stop)`` returns rows [start, stop) as a writable
    numpy array; sequential calls are fastest.  ``where`` names the source in
    messages and ``fingerprint()`` identifies it (paths, sizes, mtimes,
    shape, dtype) for resumable runs.
    """

    kind = "?"
    where: str
    shape: tuple
    dtype: np.dtype
    paths: list
    name: str | None = None

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def read(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def fingerprint(self) -> dict:
        return {
            "kind": self.kind,
            "files": [_stat(p) for p in self.paths],
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype.str,
        }

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.where} shape={self.shape} dtype={self.dtype}>"


class _MemmapSource(ArraySource):
    """An .npy file, or an uncompressed .npz member, mapped in place."""

    kind = "npy"

    def __init__(self, path, where, shape, fortran, dtype, offset, name=None, kind="npy"):
        self.where, self.paths, self.name, self.kind = where, [path], name, kind
        self.shape, self.dtype = shape, dtype
        self._fortran = fortran and len(shape) > 1
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no wrap for absurd headers
        size = os.path.getsize(path)
        if offset + nbytes > size:
            raise InputFileError(
                f"{where} is truncated: its header promises {nbytes} bytes of data, the file holds {size - offset}.",
                argument=where,
            )
        # Copy-on-write map: nothing writes to it, and it types as an ordinary
        # writable array (one compiled kernel for files and memory alike).
        self._map = np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape, order="F" if fortran else "C")
        _advise_sequential(self._map)

    def read(self, start, stop):
        rows = np.asarray(self._map[start:stop])
        # Column-major files: rows are strided across the whole file; one
        # C-ordered copy per chunk (bounded) reads them once, in order.
        return np.ascontiguousarray(rows) if self._fortran else rows

    def close(self):
        self._map = None


def _advise_sequential(array) -> None:
    mm = getattr(array, "_mmap", None)
    advice = getattr(__import__("mmap"), "MADV_SEQUENTIAL", None)
    if mm is not None and advice is not None:
        try:
            mm.madvise(advice)
        except (OSError, ValueError):  # pragma: no cover - advice only
            pass


class _ZipStreamSource(ArraySource):
    """A compressed .npz member, decompressed in order a chunk at a time."""

    kind = "npz-compressed"

    def __init__(self, path, where, member, shape, fortran, dtype, header_bytes, name):
        if fortran and len(shape) > 1 and shape[0] > 1:
            raise InputFileError(
                f"{where} is stored in Fortran (column-major) order inside a compressed .npz, which cannot be "
                "read a chunk of rows at a time; save it with np.ascontiguousarray, or with np.savez "
                "(uncompressed) or np.save.",
                argument=where,
            )
        self.where, self.paths, self.name = where, [path], name
        self.shape, self.dtype = shape, dtype
        self._member, self._header = member, header_bytes
        self._zip = zipfile.ZipFile(path)
        self._fp = None
        self._row = 0

    def _open_at(self, row):
        if self._fp is None or row < self._row:
            if self._fp is not None:
                self._fp.close()
            self._fp = self._zip.open(self._member)
            self._fp.read(self._header)
            self._row = 0
        skip = (row - self._row) * self.row_bytes
        while skip:
            got = len(self._fp.read(min(skip, 1 << 24)))
            if not got:
                raise InputFileError(f"{self.where} is truncated.", argument=self.where)
            skip -= got
        self._row = row

    def read(self, start, stop):
        try:
            self._open_at(start)
            out = np.empty((stop - start,) + tuple(self.shape[1:]), dtype=self.dtype)
            view = memoryview(out).cast("B")
            done = 0
            while done < len(view):
                got = self._fp.readinto(view[done:])
                if not got:
                    raise InputFileError(f"{self.where} is truncated.", argument=self.where)
                done += got
        except _ZIP_ERRORS as exc:
            self._fp = None  # unusable now: a later read reopens the member
            raise _damaged_zip(self.where, exc) from None
        self._row = stop
        return out

    def close(self):
        if self._fp is not None:
            self._fp.close()
        self._zip.close()


class _ShardSource(ArraySource):
    """Several .npy files read as one array (rows concatenated in order)."""

    kind = "npy-shards"

    def __init__(self, parts, where):
        first = parts[0]
        for part in parts[1:]:
            if part.shape[1:] != first.shape[1:] or part.dtype != first.dtype:
                raise InputFileError(
                    f"{where}: shard {part.where} holds rows of shape {part.shape[1:]} and dtype {part.dtype}, "
                    f"but {first.where} holds {first.shape[1:]} and {first.dtype}; all shards must match.",
                    argument=where,
                )
        self.parts = parts
        self.where = where
        self.paths = [p.paths[0] for p in parts]
        self.dtype = first.dtype
        self.starts = np.cumsum([0] + [p.n_rows for p in parts])
        self.shape = (int(self.starts[-1]),) + tuple(first.shape[1:])

    def read(self, start, stop):
        pieces = []
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < stop:
            lo = start - int(self.starts[i])
            hi = min(stop, int(self.starts[i + 1])) - int(self.starts[i])
            if hi > lo:
                pieces.append(self.parts[i].read(lo, hi))
                start += hi - lo
            i += 1
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces)

    def shard_of(self, row: int, also: str = "") -> str:
        """The shard holding global row ``row``, and that row's number in it (then ``also``), for messages."""
        i = int(np.searchsorted(self.starts, row, side="right")) - 1
        return f"{self.parts[i].where} (its row {row - int(self.starts[i])}{also})"

    def close(self):
        for part in self.parts:
            part.close()


# ---------------------------------------------------------------------------
# Tables (pyarrow, imported only here)


def _import_pyarrow(where):
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise InputFileError(
            f"{where} is a Parquet/Arrow file, which needs pyarrow: pip install 'fastce[parquet]'.",
            argument=where,
        ) from None
    return pyarrow


class _TableSource(ArraySource):
    """One column of a Parquet or Arrow IPC file, decoded a record batch at a time."""

    def __init__(self, path, role, name, fmt):
        pa = _import_pyarrow(path)
        self._pa = pa
        self.paths = [path]
        self.kind = fmt
        self.batch_rows = DEFAULT_BATCH_ROWS
        self._mapped = self._file = None
        try:
            self._open(path, role, name, fmt)
        except pa.ArrowException as exc:
            self.close()
            raise InputFileError(f"{path} cannot be read as {fmt}: {exc}", argument=path) from None
        except BaseException:
            self.close()
            raise

    def _open(self, path, role, name, fmt):
        pa = self._pa
        if fmt == "parquet":
            self._file = pa.parquet.ParquetFile(path, pre_buffer=False, buffer_size=1 << 22)
            schema = self._file.schema_arrow
            self._group_rows = [self._file.metadata.row_group(i).num_rows for i in range(self._file.num_row_groups)]
        else:
            self._mapped = pa.memory_map(path, "r")
            self._file = pa.ipc.open_file(self._mapped)
            schema = self._file.schema
            self._group_rows = [self._file.get_batch(i).num_rows for i in range(self._file.num_record_batches)]
        self.name = _choose_column(schema, role, name, path)
        self.where = f"{path} (column {self.name!r})"
        self._index = schema.get_field_index(self.name)
        field = schema.field(self.name)
        self._role = role
        n_rows = int(sum(self._group_rows))
        types = pa.types
        if role == "scores":
            if not (types.is_list(field.type) or types.is_large_list(field.type) or types.is_fixed_size_list(field.type)):
                raise InputFileError(
                    f"{self.where} has type {field.type}; scores must be a list or fixed-size-list column "
                    "of numbers (one list of num_classes scores per row).",
                    argument=self.where,
                )
            value_type = field.type.value_type
            if types.is_fixed_size_list(field.type):
                self._width = field.type.list_size
            else:
                self._width = self._first_width(n_rows)
            self.shape = (n_rows, self._width)
        else:
            value_type = field.type
            self.shape = (n_rows,)
        if not (types.is_floating(value_type) or types.is_integer(value_type) or types.is_boolean(value_type)):
            raise InputFileError(f"{self.where} holds values of type {value_type}; expected numbers.", argument=self.where)
        self.dtype = pa.array([], type=value_type).to_numpy(zero_copy_only=False).dtype
        self._starts = np.cumsum([0] + self._group_rows)
        self._iter = None
        self._row = -1
        self._left = None

    def _first_width(self, n_rows):
        if n_rows == 0:
            return 0
        first = next(self._batches(0, 1))
        if first.null_count or len(first) == 0:
            raise InputFileError(f"{self.where} row 0 is null; every row needs its scores.", argument=self.where)
        return int(first.value_lengths()[0].as_py())

    def _batches(self, group, batch_rows):
        """pyarrow arrays of the column, from row group / record batch ``group`` on."""
        if self.kind == "parquet":
            for batch in self._file.iter_batches(
                batch_size=batch_rows, row_groups=range(group, len(self._group_rows)), columns=[self.name]
            ):
                yield batch.column(0)
        else:
            for g in range(group, len(self._group_rows)):
                column = self._file.get_batch(g).column(self._index)
                for start in range(0, len(column), batch_rows):
                    yield column.slice(start, batch_rows)

    def _to_numpy(self, array, first_row):
        pa = self._pa
        if array.null_count:
            row = first_row + int(np.flatnonzero(~array.is_valid().to_numpy(zero_copy_only=False))[0])
            raise InputFileError(f"{self.where} row {row} is null.", argument=self.where)
        if self._role == "scores":
            if not pa.types.is_fixed_size_list(array.type):
                offsets = array.offsets.to_numpy()
                lengths = np.diff(offsets)
                bad = np.flatnonzero(lengths != self._width)
                if bad.size:
                    row = first_row + int(bad[0])
                    raise InputFileError(
                        f"{self.where} row {row} holds {int(lengths[bad[0]])} scores, but row 0 holds "
                        f"{self._width}; every row needs one score per class.",
                        argument=self.where,
                    )
            flat = array.flatten()
            if flat.null_count:
                index = int(np.flatnonzero(~flat.is_valid().to_numpy(zero_copy_only=False))[0])
                row = first_row + index // max(1, self._width)
                raise InputFileError(f"{self.where} row {row} holds a null score.", argument=self.where)
            values = flat.to_numpy(zero_copy_only=False)
            values = values.reshape(-1, self._width)
        else:
            values = array.to_numpy(zero_copy_only=False)
        if not values.flags.writeable:
            values = values.copy()
        return values

    def _seek(self, row):
        group = int(np.searchsorted(self._starts, row, side="right")) - 1
        group = min(max(group, 0), len(self._group_rows) - 1)
        self._iter = self._batches(group, self.batch_rows)
        self._row = int(self._starts[group])
        self._left = None
        while self._row < row:
            chunk = self._next()
            take = min(len(chunk), row - self._row)
            self._left = chunk[take:]
            self._row += take

    def _next(self):
        if self._left is not None and len(self._left):
            chunk, self._left = self._left, None
            return chunk
        try:
            array = next(self._iter)
        except StopIteration:
            raise InputFileError(f"{self.where} ended before its metadata said it would.", argument=self.where) from None
        except self._pa.ArrowException as exc:
            raise InputFileError(f"{self.where} cannot be read: {exc}", argument=self.where) from None
        return self._to_numpy(array, self._row)

    def read(self, start, stop):
        if start != self._row or self._iter is None:
            self._seek(start)
        pieces = []
        while self._row < stop:
            chunk = self._next()
            take = min(len(chunk), stop - self._row)
            pieces.append(chunk[:take])
            if take < len(chunk):
                self._left = chunk[take:]
            self._row += take
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces)

    def close(self):
        self._iter = None
        if self._file is not None and self.kind == "parquet":
            self._file.close()
        if self._mapped is not None:
            self._mapped.close()
        self._file = self._mapped = None


def _choose_column(schema, role, name, path):
    names = list(schema.names)
    if name is not None:
        if name not in names:
            raise InputFileError(
                f"{path} has no column {name!r}; its columns are {names}.", argument=path
            )
        return name
    for candidate in DEFAULT_NAMES[role]:
        if candidate in names:
            return candidate
    import pyarrow as pa

    def fits(field):
        t = field.type
        if role == "scores":
            return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
        if role in ("labels", "groups"):
            return pa.types.is_integer(t)
        return pa.types.is_floating(t)

    fitting = [f.name for f in schema if fits(f)]
    if len(fitting) == 1:
        return fitting[0]
    option = _NAME_OPTIONS[role][1]
    raise InputFileError(
        f"{path}: cannot tell which column holds the {ROLE_WORDS[role]} (columns: {names}); name it with {option}.",
        argument=path,
    )


# ---------------------------------------------------------------------------
# Opening


# What a damaged zip archive raises while a member is read (bad CRC, bad
# deflate data, an unsupported or encrypted member, a cut-off member).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


def _damaged_zip(where: str, exc: BaseException) -> InputFileError:
    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    return InputFileError(
        f"{where} is damaged: its compressed data cannot be read ({reason}). Save it again (np.savez or np.save).",
        argument=where,
    )


def _open_npz(path, role, name):
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, NotImplementedError) as exc:
        raise InputFileError(f"{path} is not a valid .npz (zip) file: {exc}.", argument=path) from None
    with archive:
        members = {}
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            members[key] = info
        if not members:
            raise InputFileError(f"{path} is an empty .npz archive.", argument=path)
        headers = {}

        def header(key):
            if key not in headers:
                where = f"{path} (member {key!r})"
                try:
                    with archive.open(members[key]) as fp:
                        headers[key] = _parse_npy_header(fp, where)
                except _ZIP_ERRORS as exc:
                    raise _damaged_zip(where, exc) from None
            return headers[key]

        if name is not None:
            if name not in members:
                raise InputFileError(
                    f"{path} has no array named {name!r}; it holds {sorted(members)}.", argument=path
                )
            key = name
        elif len(members) == 1:
            key = next(iter(members))
        else:
            key = next((k for k in DEFAULT_NAMES[role] if k in members), None)
            if key is None:
                fitting = [k for k in members if _fits_role(role, *_shape_dtype(header(k)))]
                if len(fitting) != 1:
                    option = _NAME_OPTIONS[role][0]
                    raise InputFileError(
                        f"{path}: cannot tell which array holds the {ROLE_WORDS[role]} (it holds {sorted(members)}); "
                        f"name it with {option}.",
                        argument=path,
                    )
                key = fitting[0]
        where = f"{path} (member {key!r})"
        shape, fortran, dtype, header_bytes = header(key)
        info = members[key]
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as fp:
                fp.seek(info.header_offset)
                local = fp.read(30)
            if local[:4] != b"PK\x03\x04":
                raise InputFileError(f"{path} is a damaged .npz file.", argument=path)
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            offset = info.header_offset + 30 + name_len + extra_len + header_bytes
            return _MemmapSource(path, where, shape, fortran, dtype, offset, name=key, kind="npz")
    nbytes = math.prod(shape) * dtype.itemsize
    if header_bytes + nbytes > info.file_size:  # known before decompressing anything
        raise InputFileError(
            f"{where} is truncated: its header promises {nbytes} bytes of data, the member holds "
            f"{max(0, info.file_size - header_bytes)}.",
            argument=where,
        )
    return _ZipStreamSource(path, where, info.filename, shape, fortran, dtype, header_bytes, key)


def _shape_dtype(header):
    return header[0], header[2]


def _fits_role(role, shape, dtype):
    if role == "scores":
        return len(shape) == 2 and dtype.kind == "f"
    if role in ("labels", "groups"):  # groups: integer ids (a float array was picked by the weights' rule)
        return len(shape) == 1 and dtype.kind in "iu"
    return len(shape) == 1 and dtype.kind == "f"


def _open_npy(path, where=None):
    where = where or path
    with open(path, "rb") as fp:
        shape, fortran, dtype, header_bytes = _parse_npy_header(fp, where)
    return _MemmapSource(path, where, shape, fortran, dtype, header_bytes)


def _expand(paths) -> list:
    """Files named by ``paths``: one file, a directory of .npy shards, a glob, or several files."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise InputFileError("no input file given.")
    out = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(glob.escape(path), "*.npy")))
            if not found:
                raise InputFileError(f"{path} is a directory with no .npy files in it.", argument=path)
            out.extend(found)
        elif not os.path.exists(path) and glob.has_magic(path):
            found = sorted(p for p in glob.glob(path) if os.path.isfile(p))
            if not found:
                raise InputFileError(f"{path}: no file matches this pattern.", argument=path)
            out.extend(found)
        else:
            out.append(path)
    return out


def open_array(paths, *, role: str = "scores", name: str | None = None) -> ArraySource:
    """Open the file(s) holding one array.

    Parameters
    ----------
    paths : str, path or list of them
        A file (.npy, .npz, Parquet, Arrow IPC), a directory of .npy shards, a
        glob pattern, or several .npy files read as one array in the given
        order (a directory or a pattern is sorted by name).
    role : {"scores", "labels", "weights", "groups"}
        What the array holds: picks the default .npz member or table column
        (see ``DEFAULT_NAMES``) and the checks on shape and dtype.
    name : str, optional
        The .npz member or table column to read.
    """
    if role not in DEFAULT_NAMES:
        raise ValueError(f"role must be one of {tuple(DEFAULT_NAMES)}; got {role!r}")
    files = _expand(paths)
    if len(files) > 1:
        where = paths if isinstance(paths, str) else f"{files[0]} and {len(files) - 1} more shard(s)"
        parts = []
        for path in files:
            head = _sniff(path)
            if head[:6] != _NPY_MAGIC:
                raise _shard_error(path, head)
            parts.append(_open_npy(path))
        source = _ShardSource(parts, str(where))
    else:
        path = files[0]
        head = _sniff(path)
        if head[:6] == _NPY_MAGIC:
            source = _open_npy(path)
        elif head[:4] in _ZIP_MAGICS:
            source = _open_npz(path, role, name)
        elif head[:4] == _PARQUET_MAGIC:
            source = _TableSource(path, role, name, "parquet")
        elif head[:6] == _ARROW_MAGIC:
            source = _TableSource(path, role, name, "arrow")
        else:
            raise _not_an_array(path, head)
        if name is not None and source.kind in ("npy",):
            raise InputFileError(f"{path} is an .npy file, which holds one array: drop the member/column name {name!r}.", argument=path)
    _check_role(source, role)
    return source


def _shard_error(path, head):
    if head[:4] in _ZIP_MAGICS or head[:4] == _PARQUET_MAGIC or head[:6] == _ARROW_MAGIC:
        return InputFileError(f"{path}: shards must be .npy files; pass an .npz, Parquet or Arrow file alone.", argument=path)
    return _not_an_array(path, head)


class _ColumnAsVector:
    """A (rows, 1) weights or groups file read as (rows,): a value a row (or a sequence), as a labels column is."""

    def __init__(self, source):
        self._source = source

    def __getattr__(self, name):
        return getattr(self._source, name)

    @property
    def shape(self) -> tuple:
        return (self._source.shape[0],)

    def read(self, lo: int, hi: int) -> np.ndarray:
        return self._source.read(lo, hi)[:, 0]


def check_per_position(source: ArraySource, scores: ArraySource, role: str):
    """``source`` (weights or groups) fits ``scores``: one value a row, (rows,) or (rows, 1); or, for sequence
    scores (..., classes), one a position, the scores' shape without the class axis (weights must be that: a weight
    a position, as ``fastce.evaluate``; groups may also give one id a sequence).  Returns the source to read: a
    (rows, 1) column read as (rows,) (passed as it was, it failed at the first chunk, the checkpoint written)."""
    shape, positions = tuple(source.shape), tuple(scores.shape[:-1])
    sequences = len(scores.shape) > 2
    if sequences and shape == positions:
        return source
    if (len(shape) == 1 or shape[1:] == (1,)) and not (sequences and role == "weights"):
        return source if len(shape) == 1 else _ColumnAsVector(source)
    want = f"{positions} (one a position)" if sequences else "(rows,)"
    if sequences and role == "groups":
        want += " or (rows,) (one a sequence)"
    raise InputFileError(
        f"{source.where} holds an array of shape {shape}; {role} of {scores.where} (shape {tuple(scores.shape)}) "
        f"must have shape {want}.",
        argument=source.where,
    )


def _check_role(source: ArraySource, role: str) -> None:
    shape, dtype, where = source.shape, source.dtype, source.where
    if role == "scores":
        if len(shape) == 0:
            raise InputFileError(
                f"{where} holds an array of shape {shape}; scores must have shape (rows, classes), (rows,) for "
                "binary scores of class 1, or (..., classes) for sequences (the class axis last).",
                argument=where,
            )
        if dtype.kind not in "fiub" and dtype.name != "bfloat16":
            raise InputFileError(
                f"{where} has dtype {dtype}; scores must be float16, float32 or float64.", argument=where
            )
        if len(shape) >= 2 and 0 in shape[1:]:
            raise InputFileError(f"{where} has no columns (shape {shape}).", argument=where)
    elif role == "labels" and len(shape) >= 2 and shape[1] > 1:
        # One column per class: one-hot rows, a multi-label indicator or soft targets (values checked when read).
        if dtype.kind not in "fiub" and dtype.name != "bfloat16":
            raise InputFileError(
                f"{where} has dtype {dtype}; a labels file of shape (rows, classes) (or (..., classes)) must hold "
                "0/1 labels or probabilities, and one of shape (..., positions) integer class indices.",
                argument=where,
            )
    else:
        # Weights and groups may hold one value per position of sequence scores (checked against the scores'
        # shape by check_per_position): refused here before, the command could not weight sequence files at all.
        per_position = role in ("weights", "groups") and len(shape) >= 2
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1) or per_position):
            also = " (or (rows, classes) targets: one-hot, multi-label or soft)" if role == "labels" else ""
            raise InputFileError(
                f"{where} holds an array of shape {shape}; {role} must have shape (rows,){also}.", argument=where
            )
        if role == "groups" and dtype.kind not in "iub":
            raise InputFileError(
                f"{where} has dtype {dtype}; groups must be integer ids (the document or patient of each row): "
                "save them as integers, for example np.save(path, np.unique(ids, return_inverse=True)[1]).",
                argument=where,
            )
        if role == "labels" and dtype.kind not in "iub" and not (len(shape) == 2 and dtype.kind == "f"):
            # (A (rows, 1) float column: a one-label indicator beside (rows, 1) scores, see Inputs.task.)
            raise InputFileError(
                f"{where} has dtype {dtype}; labels must be integer class indices 0..C-1: save them as "
                "integers, for example np.save(path, y.astype(np.int64)).",
                argument=where,
            )
        if role == "weights" and dtype.kind not in "fiub":
            raise InputFileError(f"{where} has dtype {dtype}; weights must be numbers.", argument=where)
    if shape[0] == 0:
        raise InputFileError(f"{where} has no rows.", argument=where)


# ---------------------------------------------------------------------------
# Inputs of one evaluation


@dataclass
class Inputs:
    """The opened score, label and (optional) weight sources of one evaluation."""

    scores: ArraySource
    labels: ArraySource
    weights: ArraySource | None
    from_logits: bool

    @property
    def n_rows(self) -> int:
        return self.scores.n_rows

    @property
    def num_classes(self) -> int:
        """Columns of the scores, the last axis (2 for 1-D binary scores of class 1)."""
        return 2 if len(self.scores.shape) == 1 else self.scores.shape[-1]

    def task(self, requested: str = "auto", chunk_rows: int | None = None) -> str:
        """The task of these files: ``requested``, or inferred as ``fastce.evaluate`` infers it.

        Scores (..., C) are sequences: a label per position (shape (...)) is
        multi-class.  A labels file with one column per class is read once, a
        chunk at a time, to tell one-hot rows from a multi-label indicator or
        soft targets (the scores are not read).
        """
        from fastce import tasks

        scores_shape, labels_shape = tuple(self.scores.shape), tuple(self.labels.shape)
        if len(scores_shape) > 2 and labels_shape not in (scores_shape[:-1], scores_shape):
            raise InputFileError(
                f"{self.labels.where} has shape {labels_shape} but {self.scores.where} has shape {scores_shape}: scores "
                f"(..., classes) take labels of shape {scores_shape[:-1]} (a class index per position) or targets of "
                "the scores' shape.",
                argument=self.labels.where,
            )
        if requested != "auto":
            if (requested == "binary") != (len(scores_shape) == 1):
                want = "(rows,) scores of class 1" if requested == "binary" else "scores of shape (rows, classes)"
                raise InputFileError(
                    f"--task {requested} takes {want}, but {self.scores.where} has shape {scores_shape}; leave --task "
                    "out to let the shapes decide.",
                    argument=self.scores.where,
                )
            return requested
        if len(scores_shape) == 1:
            return "binary"
        if scores_shape[1:] == (1,) and labels_shape == scores_shape:
            return "multilabel"  # one column of each: a one-label indicator (see tasks.infer_task)
        if labels_shape == scores_shape[:-1] or (len(scores_shape) == 2 and labels_shape[1:] in ((), (1,))):
            return "multiclass"
        if labels_shape != scores_shape:
            raise InputFileError(
                f"{self.labels.where} has shape {labels_shape} but {self.scores.where} has shape {scores_shape}; a "
                "labels file of shape (rows, classes) needs one column per class of the scores.",
                argument=self.labels.where,
            )
        n, c = self.n_rows, self.num_classes
        if chunk_rows is None:  # ~DEFAULT_CHUNK_BYTES a chunk, as the reads (65,536 rows of 32,000 were 8.4 GB)
            chunk_rows = max(1, DEFAULT_CHUNK_BYTES // max(1, self.labels.row_bytes))
        chunks = ((lo, self.labels.read(lo, min(lo + chunk_rows, n)).reshape(-1, c)) for lo in range(0, n, chunk_rows))
        return tasks.TASK_OF_KIND[tasks.kind_of_chunks(chunks, self.labels.dtype)]

    @property
    def positions_per_row(self) -> int:
        """Rows of the readers a row of the files holds: a sequence file's positions ((B, T, C): T), else 1."""
        return int(np.prod(self.scores.shape[1:-1])) if len(self.scores.shape) > 2 else 1

    def chunk_rows(self, block_rows: int) -> int:
        """Rows of the files read at a time by default: about DEFAULT_CHUNK_BYTES of scores.

        Whole kernel blocks (``block_rows``) for rows of scores; for
        sequences ((..., C) files) whole leading rows, at least one.
        """
        if len(self.scores.shape) <= 2:
            return default_chunk_rows(self.num_classes, self.scores.dtype.itemsize, block_rows)
        return max(1, DEFAULT_CHUNK_BYTES // max(1, self.scores.row_bytes))

    def sources(self):
        return [s for s in (self.scores, self.labels, self.weights) if s is not None]

    def fingerprint(self) -> dict:
        return {
            "mode": "logits" if self.from_logits else "proba",
            "scores": self.scores.fingerprint(),
            "labels": self.labels.fingerprint(),
            "weights": None if self.weights is None else self.weights.fingerprint(),
        }

    def close(self) -> None:
        for source in self.sources():
            source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_inputs(
    labels=None,
    *,
    logits=None,
    proba=None,
    sample_weight=None,
    scores_name=None,
    labels_name=None,
    weights_name=None,
) -> Inputs:
    """Open and cross-check the files of one evaluation (see :func:`open_array`).

    ``labels`` may be left out when the scores are a Parquet/Arrow file that
    also holds the labels.  Row counts must agree.
    """
    if (logits is None) == (proba is None):
        raise InputFileError("pass exactly one of logits or proba files.")
    from_logits = logits is not None
    score_paths = logits if from_logits else proba
    scores = open_array(score_paths, role="scores", name=scores_name)
    opened = [scores]
    try:
        if labels is None:
            if not isinstance(scores, _TableSource):
                raise InputFileError("a labels file is required (unless the scores are a Parquet/Arrow table holding them).")
            labels = scores.paths[0]
        label_source = open_array(labels, role="labels", name=labels_name)
        opened.append(label_source)
        weight_source = None
        if sample_weight is not None:
            weight_source = open_array(sample_weight, role="weights", name=weights_name)
            opened.append(weight_source)
            weight_source = check_per_position(weight_source, scores, "weights")
        for other in opened[1:]:
            if other.n_rows != scores.n_rows:
                raise InputFileError(
                    f"row counts differ: {other.where} has {other.n_rows} rows but {scores.where} has "
                    f"{scores.n_rows}; they must have one row per sample.",
                    argument=other.where,
                )
    except BaseException:
        for source in opened:
            source.close()
        raise
    return Inputs(scores, label_source, weight_source, from_logits)


def default_chunk_rows(num_classes: int, itemsize: int, block_rows: int | None = None) -> int:
    """Rows per chunk: about DEFAULT_CHUNK_BYTES of scores, a whole number of kernel blocks.

    Chunks that are multiples of the block (``block_rows``, by default the
    multi-class one) keep the Evaluator from holding rows back, and whole
    kernel calls keep every thread busy.
    """
    block = block_rows or _config.block_rows(num_classes)
    blocks = max(1, DEFAULT_CHUNK_BYTES // max(1, num_classes * itemsize) // block)
    if blocks > _config.BLOCKS_PER_CALL:  # whole kernel calls: no small call at the end of a chunk
        blocks = blocks // _config.BLOCKS_PER_CALL * _config.BLOCKS_PER_CALL
    return blocks * block


def iter_chunks(inputs: Inputs, chunk_rows: int, start: int = 0):
    """Yield (start, stop, labels, scores, weights) for consecutive chunks from row ``start`` on."""
    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be >= 1; got {chunk_rows}.", argument="chunk_rows")
    for source in inputs.sources():
        if isinstance(source, _TableSource):
            source.batch_rows = max(1024, min(chunk_rows, DEFAULT_BATCH_ROWS * 16))
    n = inputs.n_rows
    for lo in range(start, n, chunk_rows):
        hi = min(lo + chunk_rows, n)
        y = inputs.labels.read(lo, hi)
        scores = inputs.scores.read(lo, hi)
        w = None if inputs.weights is None else inputs.weights.read(lo, hi)
        yield lo, hi, y, scores, w


def evaluate_files(
    labels=None,
    *,
    logits=None,
    proba=None,
    sample_weight=None,
    top_k=(1,),
    nan_policy: str = "raise",
    chunk_rows: int | None = None,
    scores_name=None,
    labels_name=None,
    weights_name=None,
    task: str = "auto",
    ignore_index: int | None = None,
    precision: str = "input",
):
    """:func:`fastce.evaluate` for arrays in files, read in bounded memory, for every task.

    Same numbers as ``evaluate`` on the loaded arrays (bit for bit).  The
    file arguments accept what :func:`open_array` accepts; ``*_name`` pick
    .npz members or table columns.  Returns :class:`~fastce.metrics.Metrics`.
    """
    from fastce.streaming import Evaluator

    with open_inputs(
        labels,
        logits=logits,
        proba=proba,
        sample_weight=sample_weight,
        scores_name=scores_name,
        labels_name=labels_name,
        weights_name=weights_name,
    ) as inputs:
        evaluator = Evaluator(inputs.num_classes, task=inputs.task(task), from_logits=inputs.from_logits, top_k=top_k,
                              nan_policy=nan_policy, ignore_index=ignore_index, precision=precision)
        rows = chunk_rows or inputs.chunk_rows(evaluator.block_rows)
        for _, _, y, scores, w in iter_chunks(inputs, rows):
            evaluator.update(y, scores, w)
        return evaluator.result()


__all__ = [
    "ArraySource",
    "InputFileError",
    "Inputs",
    "default_chunk_rows",
    "evaluate_files",
    "iter_chunks",
    "open_array",
    "open_inputs",
]
