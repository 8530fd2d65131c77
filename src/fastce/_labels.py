"""Label handling for the scikit-learn drop-ins: N-sized work only.

Class labels of any type (ints, strings, floats, pandas) are mapped to the
column indices the kernels read.  Integer labels in a small range take a
counting path (no sort), which is what keeps ``log_loss`` on 10^9 rows fast.
"""

from __future__ import annotations

import numpy as np

# Integer labels spanning fewer values than this are counted, not sorted.
_COUNTING_RANGE = 1 << 22


def to_1d(y) -> np.ndarray:
    """A 1-D view of y; (N, 1) column vectors are flattened."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        return y[:, 0]
    if y.ndim == 0:
        return y.reshape(1)
    if y.ndim != 1:
        raise ValueError(f"y should be a 1d array, got an array of shape {y.shape} instead.")
    return y


def _num_samples(x) -> int:
    if hasattr(x, "shape") and len(x.shape) > 0:
        return int(x.shape[0])
    return len(x)


def check_consistent_length(*arrays) -> None:
    """scikit-learn's message for arrays of different lengths (None skipped)."""
    lengths = [_num_samples(x) for x in arrays if x is not None]
    if len(set(lengths)) > 1:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: {lengths}")


def unique_labels(y) -> np.ndarray:
    """Sorted unique values of a 1-D label array; raises TypeError on mixed types."""
    y = np.asarray(y)
    if y.dtype.kind in "iu" and y.size:
        low, high = int(y.min()), int(y.max())
        if high - low < _COUNTING_RANGE:
            present = np.bincount((y - low).astype(np.intp, copy=False), minlength=high - low + 1) > 0
            return (np.flatnonzero(present) + low).astype(y.dtype)
    if y.dtype.kind == "O":
        kinds = {isinstance(v, str) for v in y.ravel().tolist()}
        if len(kinds) > 1:
            raise TypeError("Mix of label input types (string and number)")
    return np.unique(y)


def encode(y, classes: np.ndarray) -> np.ndarray:
    """Column index of each label in the sorted ``classes``; ValueError if one is missing."""
    y = np.asarray(y)
    if y.dtype.kind in "iu" and classes.dtype.kind in "iu" and classes.size:
        low, high = int(classes[0]), int(classes[-1])
        if np.array_equal(classes, np.arange(low, high + 1)) and y.size:
            if int(y.min()) < low or int(y.max()) > high:
                missing = np.setdiff1d(y, classes)
                raise ValueError(f"y contains previously unseen labels: {missing.tolist()}")
            # Labels already are 0..C-1 (the common case): no copy at all.
            return y if low == 0 else (y - low)
    indices = np.searchsorted(classes, y)
    indices = np.minimum(indices, len(classes) - 1)
    found = classes[indices] == y
    if not np.all(found):
        missing = np.unique(y[~found])
        raise ValueError(f"y contains previously unseen labels: {missing.tolist()}")
    return indices


def encode_labels(y, classes) -> tuple[np.ndarray, np.ndarray]:
    """(indices, classes): ``classes`` sorted unique of y when None."""
    y = to_1d(y)
    classes = unique_labels(y) if classes is None else np.asarray(classes)
    return encode(y, classes), classes


def _is_integral(y: np.ndarray) -> bool:
    return y.dtype.kind in "biu" or (y.dtype.kind == "f" and bool(np.all(y == np.round(y))))


def type_of_target(y, input_name: str = "") -> str:
    """scikit-learn's target types: binary, multiclass, multilabel-indicator, continuous, ..."""
    if hasattr(y, "toarray"):  # scipy.sparse
        values = y.data if hasattr(y, "data") else y.toarray().ravel()
        if y.ndim == 2 and y.shape[1] > 1 and np.all(np.isin(values, (0, 1))):
            return "multilabel-indicator"
        y = y.toarray()
    y = np.asarray(y)
    if y.ndim > 2 or (y.dtype == object and y.size and not isinstance(y.flat[0], str)):
        return "unknown"
    if y.ndim == 2 and y.shape[1] == 0:
        return "unknown"
    multioutput = y.ndim == 2 and y.shape[1] > 1
    if multioutput and y.dtype.kind in "biuf" and _is_integral(y) and np.unique(y).size <= 2:
        if set(np.unique(y).tolist()) <= {0, 1}:
            return "multilabel-indicator"
    suffix = "-multioutput" if multioutput else ""
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            name = f"Input {input_name}" if input_name else "Input"
            raise ValueError(f"{name} contains NaN, infinity or a value too large for dtype('float64').")
        if not _is_integral(y):
            return "continuous" + suffix
    if multioutput:
        return "multiclass" + suffix
    if unique_labels(y).shape[0] > 2:
        return "multiclass"
    return "binary"
