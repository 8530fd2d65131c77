"""Targets for the scikit-learn drop-ins: scikit-learn's rules, N-sized work only.

This module reimplements the parts of scikit-learn's input handling that its
metrics' behaviour depends on -- array conversion, ``type_of_target``,
``unique_labels``, ``column_or_1d``, ``check_consistent_length``,
``_check_sample_weight`` -- with the same results and messages, without
importing scikit-learn (or scipy: sparse inputs are recognised by duck typing).

Memory: 1-D work (unique labels, encoding) allocates O(N); anything that reads
an (N, C) array does it in row chunks of about ``CHUNK_ELEMENTS`` elements, so
no (N, C) temporary is ever made.  Integer labels in a small range are counted
(``np.bincount``), not sorted, which keeps label handling O(N) on huge inputs.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from fastce import _label_presence

# Elements per row chunk when an (N, C) array has to be read in numpy.
CHUNK_ELEMENTS = 1 << 20
# Integer labels spanning fewer values than this are counted, not sorted.
_COUNTING_RANGE = 1 << 22
_CHUNK_VALUES = 1 << 16  # labels converted at a time by unique_values
_INT64_BOUND = float(2**63)

_MATRIX_MESSAGE = (
    "np.matrix is not supported. Please convert to a numpy array with np.asarray. For more "
    "information see: https://numpy.org/doc/stable/reference/generated/numpy.matrix.html"
)
_LEGACY_MULTILABEL_MESSAGE = (
    "You appear to be using a legacy multi-label data representation. Sequence of sequences "
    "are no longer supported; use a binary array or sparse matrix instead - the "
    "MultiLabelBinarizer transformer can convert to this format."
)


def rows_per_chunk(n_columns: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, int(n_columns)))


def row_chunks(n_rows: int, n_columns: int):
    """(start, stop) pairs covering ``n_rows`` rows, about CHUNK_ELEMENTS elements each."""
    step = rows_per_chunk(n_columns)
    for start in range(0, n_rows, step):
        yield start, min(start + step, n_rows)


# --------------------------------------------------------------------------- kinds of input


def is_sparse(x) -> bool:
    """scipy.sparse matrix or array, recognised without importing scipy."""
    return hasattr(x, "tocsr") and hasattr(x, "nnz") and hasattr(x, "format")


def is_arraylike(x) -> bool:
    """scikit-learn's "array-like" parameter constraint (sparse matrices are not)."""
    if is_sparse(x):
        return False
    return (hasattr(x, "__len__") or hasattr(x, "shape") or hasattr(x, "__array__")) and not np.isscalar(x)


def _is_pandas(x) -> bool:
    return type(x).__module__.split(".")[0] == "pandas"


def num_samples(x) -> int:
    """Number of rows of an array-like, with scikit-learn's errors."""
    message = f"Expected sequence or array-like, got {type(x)}"
    if hasattr(x, "fit") and callable(x.fit):
        raise TypeError(message)
    shape = getattr(x, "shape", None)
    if shape is not None:
        if len(shape) == 0:
            raise TypeError(
                f"Input should have at least 1 dimension i.e. satisfy `len(x.shape) > 0`, got scalar `{x!r}` instead."
            )
        if isinstance(shape[0], numbers.Integral):
            return int(shape[0])
    if not hasattr(x, "__len__") and not hasattr(x, "shape"):
        if not hasattr(x, "__array__"):
            raise TypeError(message)
        x = np.asarray(x)
    try:
        return len(x)
    except TypeError as exc:
        raise TypeError(message) from exc


def check_consistent_length(*arrays) -> None:
    """All non-None arguments have the same number of rows."""
    lengths = [num_samples(x) for x in arrays if x is not None]
    if len(set(lengths)) > 1:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: {[int(n) for n in lengths]!r}")


# --------------------------------------------------------------------------- conversion


def _pandas_to_numpy(x) -> np.ndarray:
    dtypes = list(x.dtypes) if hasattr(x, "columns") else [x.dtype]
    extension = [d for d in dtypes if not isinstance(d, np.dtype)]
    if not extension:
        return np.asarray(x)
    numeric = all(
        isinstance(d, np.dtype) or (getattr(d, "kind", "O") in "biuf" and hasattr(d, "numpy_dtype")) for d in dtypes
    )
    if numeric:
        missing = np.asarray(x.isna()).any()
        if missing:
            return x.to_numpy(dtype=np.float64, na_value=np.nan)
        target = np.result_type(*[d if isinstance(d, np.dtype) else np.dtype(d.numpy_dtype) for d in dtypes])
        return x.to_numpy(dtype=target)
    if any(getattr(d, "kind", "") == "O" and "str" in str(d).lower() for d in extension):
        return x.to_numpy(dtype=object)
    return np.asarray(x)


def _torch_to_numpy(x) -> np.ndarray:
    from fastce import validation

    return validation.as_array(x, "input")


def to_numpy(x, dtype=None) -> np.ndarray:
    """numpy array of an array-like as scikit-learn's check_array converts it (no other checks).

    Refuses np.matrix and complex data with scikit-learn's messages.  Arrays
    already of the right dtype are returned as they are (no copy).
    """
    if isinstance(x, np.matrix):
        raise TypeError(_MATRIX_MESSAGE)
    if isinstance(x, np.ndarray) and (dtype is None or x.dtype == dtype):
        array = x
    else:
        # Complex values refused before any cast (no warnings.catch_warnings: it swaps the process's filters, and
        # from several threads at once it left an "error" filter for ComplexWarning behind).
        if hasattr(x, "detach") and hasattr(x, "cpu"):
            array = _torch_to_numpy(x)
        elif _is_pandas(x):
            array = _pandas_to_numpy(x)
        else:
            array = np.asarray(x)
        if array.dtype.kind == "c":
            raise ValueError(f"Complex data not supported\n{x}\n")
        if dtype is not None and array.dtype != dtype:
            array = array.astype(dtype)
    if array.dtype.kind == "c":
        raise ValueError(f"Complex data not supported\n{array}\n")
    return array


def to_numpy_or_object(x) -> np.ndarray:
    """``to_numpy``, falling back to an object array for ragged sequences."""
    try:
        return to_numpy(x)
    except ValueError as exc:
        if str(exc).startswith("Complex data not supported"):
            raise
        return np.asarray(x, dtype=object)


# --------------------------------------------------------------------------- checks


def _finite_flags(array: np.ndarray) -> tuple[bool, bool]:
    """(has NaN, has +-inf) of a float array, read in row chunks."""
    has_nan = has_inf = False
    if array.size == 0:
        return has_nan, has_inf
    flat = array.reshape(array.shape[0], -1) if array.ndim >= 1 else array.reshape(1, 1)
    for start, stop in row_chunks(flat.shape[0], flat.shape[1]):
        part = flat[start:stop]
        if part.dtype.name == "bfloat16":
            part = part.astype(np.float32)
        if np.isfinite(part).all():
            continue
        has_nan = has_nan or bool(np.isnan(part).any())
        has_inf = has_inf or bool(np.isinf(part).any())
        if has_nan:
            break
    return has_nan, has_inf


def nonfinite_message(has_nan: bool, input_name: str, dtype) -> str:
    """scikit-learn's message for NaN or infinite values."""
    kind = "NaN" if has_nan else f"infinity or a value too large for {np.dtype(dtype)!r}"
    padded = f"{input_name} " if input_name else ""
    return f"Input {padded}contains {kind}."


def assert_all_finite(array: np.ndarray, input_name: str = "", msg_dtype=None) -> None:
    """scikit-learn's _assert_all_finite: floats must be finite, objects must not be NaN."""
    if array.dtype == object:
        if any(value != value for value in array.reshape(-1).tolist()):
            raise ValueError("Input contains NaN")
        return
    if array.dtype.kind != "f" and array.dtype.name != "bfloat16":
        return
    has_nan, has_inf = _finite_flags(array)
    if has_nan or has_inf:
        raise ValueError(nonfinite_message(has_nan, input_name, msg_dtype if msg_dtype is not None else array.dtype))


def check_dims(array: np.ndarray) -> None:
    """check_array's test on the number of dimensions."""
    if array.ndim >= 3:
        raise ValueError(f"Found array with dim {array.ndim}, while dim <= 2 is required.")


def check_min_size(array: np.ndarray) -> None:
    """check_array's tests on the size: at least one row, and one column if 2-D."""
    n = num_samples(array)
    if n < 1:
        raise ValueError(f"Found array with {n} sample(s) (shape={array.shape}) while a minimum of 1 is required.")
    if array.ndim == 2 and array.shape[1] < 1:
        raise ValueError(
            f"Found array with {array.shape[1]} feature(s) (shape={array.shape}) while a minimum of 1 is required."
        )


def column_or_1d(y, input_name: str = "") -> np.ndarray:
    """1-D view of y; (N, 1) columns are flattened (silently, as the metrics do)."""
    if is_sparse(y):
        name = f" for {input_name}" if input_name else ""
        raise TypeError(
            f"Sparse data was passed{name}, but dense data is required. Use '.toarray()' to convert to a dense "
            "numpy array."
        )
    array = to_numpy(y)
    check_dims(array)
    if array.ndim == 1:
        return array
    if array.ndim == 2 and array.shape[1] == 1:
        return array[:, 0]
    raise ValueError(f"y should be a 1d array, got an array of shape {array.shape} instead.")


def check_sample_weight(sample_weight, n_samples: int) -> np.ndarray | None:
    """scikit-learn's _check_sample_weight(force_float_dtype=False): dtype kept, values checked."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        weights = np.full(n_samples, sample_weight)
    else:
        weights = to_numpy(sample_weight)
        check_dims(weights)
        assert_all_finite(weights, "sample_weight")
        check_min_size(weights)
        if weights.ndim != 1:
            raise ValueError(
                f"Sample weights must be 1D array or scalar, got {weights.ndim}D array. Expected either a scalar "
                f"value or a 1D array of length {n_samples}."
            )
        if weights.shape != (n_samples,):
            raise ValueError(f"sample_weight.shape == {weights.shape}, expected {(n_samples,)}!")
    if not np.any(weights != 0):
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return weights


# --------------------------------------------------------------------------- unique values


def _integral_mask(part: np.ndarray) -> np.ndarray:
    """Values equal to their int64 cast (as scikit-learn tests it), without a cast warning."""
    # (the bounds become inf in float16: every float16 value is within them)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.isfinite(part) & (part == np.trunc(part)) & (part >= -_INT64_BOUND) & (part < _INT64_BOUND)


def all_integral(array: np.ndarray) -> bool:
    """Every value of a float array is integral (and finite), read in row chunks."""
    if array.size == 0:
        return True
    flat = array.reshape(array.shape[0], -1) if array.ndim >= 1 else array.reshape(1, 1)
    for start, stop in row_chunks(flat.shape[0], flat.shape[1]):
        if not _integral_mask(flat[start:stop]).all():
            return False
    return True


def unique_values(y: np.ndarray) -> np.ndarray:
    """Sorted unique values of a 1-D (or column) array; O(N) for small-range integers."""
    y = y.reshape(-1) if y.ndim != 1 else y
    if y.dtype.kind in "iu" and y.size:
        if _label_presence.supports(y):
            # Large vectors: one parallel pass (fastce._label_presence), its extremes kept for the rest.
            values, low, high = _label_presence.present_values(y)
            if values is not None:
                return values
        else:
            low, high = int(y.min()), int(y.max())
        if high - low < _COUNTING_RANGE:
            # bincount needs intp: convert a chunk at a time, not the whole vector.
            present = np.zeros(high - low + 1, dtype=bool)
            step = max(_CHUNK_VALUES, high - low + 1)  # no more counts per chunk than values
            for start in range(0, y.shape[0], step):
                shifted = _minus(y[start : start + step], low).astype(np.intp, copy=False)
                present |= np.bincount(shifted, minlength=high - low + 1) > 0
            # Back from the offsets in y's width, wrapping as _minus did (no int64 overflow near uint64's top).
            unsigned = np.dtype(f"u{y.dtype.itemsize}")
            values = np.flatnonzero(present).astype(unsigned) + unsigned.type(low % (1 << (8 * y.dtype.itemsize)))
            return values.view(f"{y.dtype.kind}{y.dtype.itemsize}").astype(y.dtype)
    return np.unique(y)


def distinct_values(array: np.ndarray, limit: int) -> np.ndarray | None:
    """Sorted distinct values of any array if there are at most ``limit``, else None (row chunks)."""
    if array.size == 0:
        return np.unique(array)
    flat = array.reshape(array.shape[0], -1) if array.ndim >= 1 else array.reshape(1, 1)
    seen = None
    for start, stop in row_chunks(flat.shape[0], flat.shape[1]):
        part = np.unique(flat[start:stop])
        seen = part if seen is None else np.union1d(seen, part)
        if seen.shape[0] > limit:
            return None
    return seen if seen is not None else np.unique(flat)


# --------------------------------------------------------------------------- type_of_target


class Target:
    """A target as scikit-learn sees it: its type, numpy (or sparse) array, and sorted labels."""

    __slots__ = ("type", "array", "raw", "_labels")

    def __init__(self, kind: str, array, labels=None, raw=None):
        self.type = kind
        self.array = array
        self.raw = array if raw is None else raw
        self._labels = labels

    @property
    def labels(self) -> np.ndarray:
        """Sorted unique labels (column indices for indicator matrices)."""
        if self._labels is None:
            if self.type == "multilabel-indicator":
                self._labels = np.arange(self.array.shape[1])
            else:
                self._labels = unique_values(self.array)
        return self._labels


def _sparse_target(y, input_name: str) -> Target:
    if y.format in ("dok", "lil"):
        y = y.tocsr()
    data = np.asarray(y.data)
    if y.ndim == 2 and y.shape[1] > 1:
        labels = np.unique(data)
        if data.shape[0] == 0 or (
            (labels.size == 1 or (labels.size == 2 and 0 in labels))
            and (y.dtype.kind in "biu" or (y.dtype.kind == "f" and all_integral(labels)))
        ):
            return Target("multilabel-indicator", y)
    if not min(y.shape):
        return Target("unknown", y)
    suffix = "-multioutput" if y.shape[1] > 1 else ""
    if y.dtype.kind == "f" and not all_integral(data):
        assert_all_finite(data, input_name)
        return Target("continuous" + suffix, y)
    # scikit-learn counts the unique values of a sparse matrix as one, so only
    # the number of values stored in the first row decides.
    if y.ndim == 2 and len(y.tocsr()[[0], :].data) > 1:
        return Target("multiclass" + suffix, y)
    return Target("binary", y)


def target(y, input_name: str = "") -> Target:
    """scikit-learn's ``type_of_target`` (same types, same errors), keeping what it computed."""
    result = _target(y, input_name)
    result.raw = y
    return result


def _target(y, input_name: str) -> Target:
    valid = (isinstance(y, Sequence) or is_sparse(y) or hasattr(y, "__array__")) and not isinstance(y, str)
    if not valid:
        raise ValueError(f"Expected array-like (array or non-string sequence), got {y!r}")
    if type(y).__name__ in ("SparseSeries", "SparseArray"):
        raise ValueError("y cannot be class 'SparseSeries' or 'SparseArray'")
    if is_sparse(y):
        return _sparse_target(y, input_name)
    array = to_numpy_or_object(y)

    if array.ndim == 2 and array.shape[1] > 1:  # scikit-learn's is_multilabel
        distinct = distinct_values(array, 2)
        if distinct is not None and (
            array.dtype.kind in "biu" or (array.dtype.kind == "f" and bool(_integral_mask(distinct).all()))
        ):
            return Target("multilabel-indicator", array)

    if array.ndim >= 1 and array.shape[0] > 0:
        first = array[0]
        if isinstance(first, bytes):
            raise TypeError(
                "Support for labels represented as bytes is not supported. Convert the labels to a string or "
                "integer format."
            )
        if not hasattr(first, "__array__") and isinstance(first, Sequence) and not isinstance(first, str):
            raise ValueError(_LEGACY_MULTILABEL_MESSAGE)

    if array.ndim not in (1, 2):
        return Target("unknown", array)
    if not min(array.shape):
        return Target("binary" if array.ndim == 1 else "unknown", array)
    if array.dtype == object and not isinstance(array.flat[0], str):
        # scikit-learn sorts the values first (attach_unique): mixed types ([1, "a"]) raise its TypeError there.
        np.unique(array)
        return Target("unknown", array)
    multioutput = array.ndim == 2 and array.shape[1] > 1
    suffix = "-multioutput" if multioutput else ""
    if array.dtype.kind == "f" and not all_integral(array):
        assert_all_finite(array, input_name)
        return Target("continuous" + suffix, array)
    if multioutput:
        return Target("multiclass-multioutput", array)
    labels = unique_values(array)
    return Target("multiclass" if labels.shape[0] > 2 else "binary", array, labels)


def type_of_target(y, input_name: str = "") -> str:
    return target(y, input_name).type


def _is_str(value) -> bool:
    return isinstance(value, str)


def unique_labels(*targets: Target, label_type: str | None = None) -> np.ndarray:
    """scikit-learn's ``unique_labels`` of already typed targets."""
    if label_type is None:
        types = {t.type for t in targets}
        if types == {"binary", "multiclass"}:
            types = {"multiclass"}
        if len(types) > 1:
            raise ValueError(f"Mix type of y not allowed, got types {types}")
        (label_type,) = types
    if label_type == "multilabel-indicator":
        if len({t.array.shape[1] for t in targets}) > 1:
            raise ValueError("Multi-label binary indicator input with different numbers of labels")
        return np.arange(targets[0].array.shape[1])
    if label_type not in ("binary", "multiclass"):
        raise ValueError(f"Unknown label type: {tuple(t.raw for t in targets)!r}")
    parts = [t.labels for t in targets]
    # scikit-learn takes the set of a plain sequence's items as they are (so
    # ["a", 1] mixes types, and nested lists are unhashable) and the unique
    # values of anything else.
    kinds = set()
    for t, part in zip(targets, parts):
        if isinstance(t.raw, Sequence) and not hasattr(t.raw, "__array__"):
            kinds.update(_is_str(v) for v in set(t.raw))
        elif part.dtype.kind in "US":
            kinds.add(True)
        elif part.dtype == object:
            kinds.update(_is_str(v) for v in part.tolist())
        else:
            kinds.add(False)
    if len(kinds) > 1:
        details = " and ".join(f"{p}" for p in parts)
        raise ValueError(f"Mix of label input types (string and number); Got {details}.")
    if all(p.dtype.kind in "biuf" for p in parts):
        result = parts[0]
        for part in parts[1:]:
            result = np.union1d(result, part)
        return result
    values = set()
    for part in parts:
        values.update(part.tolist())
    return np.asarray(sorted(values))


# --------------------------------------------------------------------------- encoding


def _int_range(classes: np.ndarray):
    """(low, high) when ``classes`` are the consecutive integers low..high, else None."""
    if classes.dtype.kind not in "iu" or not classes.size:
        return None
    low, high = int(classes[0]), int(classes[-1])
    if high - low + 1 == classes.shape[0]:
        return low, high
    return None


def _minus(y: np.ndarray, low: int) -> np.ndarray:
    """``y - low`` for integer ``y`` whose values are all >= ``low`` (``y`` itself when low is 0).

    In y's own signed dtype the difference can overflow (int8 labels -100 and
    100 are 200 apart); in the unsigned dtype of the same width it cannot, and
    the wrapping subtraction of the two's-complement bits is exact there.
    No wider copy: the result has y's item size, as before.
    """
    if low == 0:
        return y
    unsigned = np.dtype(f"u{y.dtype.itemsize}").newbyteorder(y.dtype.byteorder)
    return y.view(unsigned) - unsigned.type(low % (1 << (8 * y.dtype.itemsize)))


def _extremes(y: np.ndarray) -> tuple[int, int]:
    """(smallest, largest) of a non-empty integer array: one parallel pass for large vectors
    (fastce._label_presence), numpy's two for the rest."""
    if _label_presence.supports(y):
        return _label_presence.present_values(y)[1:]
    return int(y.min()), int(y.max())


def isin(y: np.ndarray, classes: np.ndarray) -> np.ndarray | bool:
    """Whether every value of y is one of ``classes`` (sorted unique); True/False."""
    span = _int_range(classes)
    if span is not None and y.dtype.kind in "iu":
        if not y.size:
            return True
        low, high = _extremes(y)
        return low >= span[0] and high <= span[1]
    return bool(np.all(np.isin(y, classes)))


def encode(y: np.ndarray, classes: np.ndarray, *, checked: bool = False) -> np.ndarray:
    """Column index of each label of 1-D y in the sorted ``classes`` (all must be present).

    Integer labels that already are 0..C-1 are returned as they are (no copy).  ``checked``: every value of y
    is known to be one of ``classes`` (they came from y, or ``isin`` said so): the range check, a pass over y,
    is left out.
    """
    span = _int_range(classes)
    if span is not None and y.dtype.kind in "iu":
        if y.size and not checked:
            low, high = _extremes(y)
            if low < span[0] or high > span[1]:
                raise ValueError(f"y contains previously unseen labels: {np.setdiff1d(y, classes).tolist()}")
        return _minus(y, span[0])
    if (y.dtype.kind in "biuf" and classes.dtype.kind in "biuf") or y.dtype.kind == classes.dtype.kind:
        indices = np.searchsorted(classes, y)
    else:
        indices = np.searchsorted(classes.astype(object), y.astype(object, copy=False))
    np.minimum(indices, len(classes) - 1, out=indices)
    found = classes[indices] == y
    if not np.all(found):
        raise ValueError(f"y contains previously unseen labels: {np.unique(y[~np.asarray(found)]).tolist()}")
    return indices
