"""Coercion and checks at the door: every public function validates here, once.

Kernels read float32, float64, and float16 / bfloat16 through 16-bit integer
views (numba has no half types on the CPU).  Anything else is converted here
or refused with an error naming the argument, the value and the row.
Nothing here copies an (N, C) array unless its dtype or byte order cannot be
read directly (integers, bool, big-endian): that copy is the documented price.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from fastce._warn import user_stacklevel
from fastce.errors import InputError, TopKWarning

_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _is_bfloat16(dtype: np.dtype) -> bool:
    return dtype.name == "bfloat16"


def is_float_dtype(dtype: np.dtype) -> bool:
    """A floating-point dtype: numpy's (kind "f") or ml_dtypes' bfloat16 (whose kind is "V")."""
    return dtype.kind == "f" or _is_bfloat16(dtype)


def as_array(x, name: str) -> np.ndarray:
    """numpy view of an array-like (lists, pandas, memmaps, CPU tensors); refuses None."""
    if x is None:
        raise InputError(f"{name} is required; got None.", argument=name)
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor: read without importing torch
        x = _tensor_to_numpy(x, name)
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name} could not be read as an array: {exc}", argument=name) from exc


def _tensor_to_numpy(tensor, name: str) -> np.ndarray:
    """numpy view of a CPU copy of a torch tensor; bfloat16 becomes ml_dtypes.bfloat16 (no copy)."""
    tensor = tensor.detach().cpu()
    if str(getattr(tensor, "dtype", "")) == "torch.bfloat16":
        # Tensor.numpy() refuses bfloat16: reinterpret the bits instead.
        try:
            import ml_dtypes
        except ImportError:
            return tensor.float().numpy()
        import torch  # the caller passed a tensor, so torch is importable

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError) as exc:
        raise InputError(
            f"{name} is a tensor of dtype {tensor.dtype} that numpy cannot read ({exc}); "
            "convert it first, for example x.float().",
            argument=name,
            value=tensor.dtype,
        ) from exc


class Scores:
    """A validated score array: ``view`` is what the kernels read.

    ``dtype`` is the caller's dtype (for eps), ``eps`` its machine epsilon.
    """

    __slots__ = ("view", "dtype", "eps", "shape")

    def __init__(self, view: np.ndarray, dtype: np.dtype):
        self.view = view
        self.dtype = dtype
        self.shape = view.shape
        if dtype.kind == "f" or _is_bfloat16(dtype):
            self.eps = float(_finfo_eps(dtype))
        else:
            self.eps = float(np.finfo(np.float64).eps)

    @property
    def ndim(self) -> int:
        return len(self.shape)


def float_eps(dtype: np.dtype) -> float:
    """Machine epsilon of a float dtype (bfloat16 included); float64's for anything else."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f" or _is_bfloat16(dtype):
        return _finfo_eps(dtype)
    return float(np.finfo(np.float64).eps)


def _finfo_eps(dtype: np.dtype) -> float:
    if _is_bfloat16(dtype):
        import ml_dtypes  # only reachable when the caller already has bfloat16 arrays

        return float(ml_dtypes.finfo(dtype).eps)
    return float(np.finfo(dtype).eps)


def scores(x, name: str, *, ndim=(2,), labels=None, call: str | None = None) -> Scores:
    """Validate an (N, C) (or, where allowed, (N,)) score array.

    ``labels`` and ``call`` (e.g. ``"cross_entropy(input, target)"``) are
    only read when the shape is wrong, to say what went wrong: arguments
    passed in the other order, or PyTorch's unbatched form.
    """
    array = as_array(x, name)
    if array.ndim not in ndim:
        shapes = " or ".join({1: "(n_samples,)", 2: "(n_samples, n_classes)"}[d] for d in ndim)
        raise InputError(
            f"{name} must have shape {shapes}; got an array of shape {array.shape}." + _shape_hint(array, labels, call),
            argument=name,
            value=array.shape,
        )
    if array.size == 0:
        raise InputError(f"{name} is empty (shape {array.shape}); pass at least one row and one class.", argument=name)
    dtype = array.dtype
    if _is_bfloat16(dtype):
        view = array.view(np.int16)
    elif dtype == np.float16 or dtype == np.dtype(">f2"):
        view = array.astype(np.float16, copy=False).view(np.uint16)
    elif dtype.kind == "f" and dtype.itemsize in (4, 8):
        view = array if dtype.isnative else array.astype(dtype.newbyteorder("="))
    elif dtype.kind in "biu":
        view = array.astype(np.float64)
        dtype = view.dtype
    else:
        raise InputError(
            f"{name} has dtype {array.dtype}; pass float16, bfloat16, float32 or float64 scores "
            "(for example np.asarray(x, dtype=np.float32)).",
            argument=name,
            value=array.dtype,
        )
    return Scores(view, dtype)


def _shape_hint(array: np.ndarray, labels, call: str | None) -> str:
    """Why scores of the wrong number of dimensions were probably passed, and what to pass instead."""
    if array.ndim != 1:
        return ""
    other = None
    if labels is not None and call is not None:
        try:
            other = as_array(labels, "labels")
        except InputError:
            other = None
    if other is not None and other.ndim == 2 and other.shape[1] > 1:
        return (
            f" The other argument has shape {other.shape}: the arguments look swapped. {call} takes them in "
            "this order (scikit-learn's metrics take the labels first, PyTorch's losses the scores first)."
        )
    if other is not None and other.ndim == 0:
        return (
            " With a single class index as the label this is PyTorch's unbatched form (one sample), which "
            "fastce does not take: pass a batch of one row, the scores as x[None] (shape (1, C)) and the "
            "label as [y]."
        )
    return (
        " A 1-D array holds one score per row: for binary scores (of class 1) use fastce.evaluate, which "
        "takes them, or pass both columns: np.stack([np.zeros_like(z), z], axis=1) for logits z, "
        "np.stack([1 - p, p], axis=1) for probabilities p."
    )


def _first_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def class_indices(y, name: str, n_rows: int, num_classes: int, *, ignore_label=None, note=None,
                  check_range: bool = True, ignorable: bool = True, one_score_a_row: bool = False) -> np.ndarray:
    """Validate integer class indices in [0, num_classes) (or equal to ``ignore_label``).

    ``note`` replaces "(the scores have C columns)" in the out-of-range message.  ``ignorable``: whether the
    door takes ``ignore_index`` (only then does a negative label's message suggest it).  ``one_score_a_row``:
    the scores are 1-D (binary), where a 2-D ``y`` is most likely the scores, passed in its place.
    """
    labels = as_array(y, name)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        # (One-hot targets are taken as they are beside scores of their shape: "pass labels.argmax(axis=1)"
        # was said to users who had passed the scores and the labels the other way round.)
        also = (f" Targets of one column per class (one-hot, multi-label or soft) go with scores of their own "
                f"shape, (n, {labels.shape[1]})." if labels.ndim == 2 else "")
        if labels.ndim == 2 and one_score_a_row:
            also += (f" The scores have one value a row: if {name} and the scores were swapped (passed the other way "
                     "round), swap them back: fastce takes y_true first, the scores as logits= or proba= (PyTorch's "
                     "losses take the scores first).")
        raise InputError(
            f"{name} must be a 1-D array of class indices here; got shape {labels.shape}.{also}",
            argument=name,
            value=labels.shape,
        )
    if labels.shape[0] != n_rows:
        raise InputError(
            f"{name} has {labels.shape[0]} rows but the scores have {n_rows}; they must have one label per row.",
            argument=name,
            value=labels.shape[0],
        )
    return _class_values(labels, name, num_classes, ignore_label, note, lambda row: f"{name} row {row}",
                         check_range, ignorable)


def class_index_array(y, name: str, shape: tuple, num_classes: int, *, ignore_label=None, note=None) -> np.ndarray:
    """Validate class indices of any ``shape`` (a PyTorch K-dimensional target) without copying them.

    Errors name the offending element by its index, ``target[n, d1, ...]``;
    the exception's ``row`` is its position in C order.
    """
    labels = as_array(y, name)
    if labels.shape != tuple(shape):
        raise InputError(
            f"{name} must have shape {tuple(shape)}; got {labels.shape}.", argument=name, value=labels.shape
        )

    def subject(row: int) -> str:
        return f"{name}[{', '.join(str(int(i)) for i in np.unravel_index(row, labels.shape))}]"

    return _class_values(labels, name, num_classes, ignore_label, note, subject)


# Large label arrays are range-checked in chunks of this many elements (1 MiB
# of int64: the max reads from L2 the chunk the min just read from memory),
# a stride of chunks per thread.
_RANGE_CHUNK = 1 << 17


def _value_range(values: np.ndarray):
    """(min, max) of an integer array: for a large 1-D one, one read from memory, on every thread.

    numpy's ``min()`` and ``max()`` are two single-threaded reads of the
    whole array: 137 ms for 2**27 int64 labels on a 2-core Sapphire Rapids,
    as long as fastce's kernel then took to score two-class rows (52 ms
    chunked, 2 threads; numpy releases the GIL in its reductions).
    """
    ranges = _chunk_results(values, lambda part: (part.min(), part.max()))
    return min(low for low, _ in ranges), max(high for _, high in ranges)


def _finite_non_negative(values: np.ndarray) -> bool:
    """Whether every entry of a float array is finite and >= 0 (as ``_value_range``: one read, every thread, no
    temporaries).  numpy's min and max propagate NaN, which then fails both tests."""
    return values.size == 0 or all(_chunk_results(values, lambda part: bool(part.min() >= 0.0 and part.max() < np.inf)))


def _chunk_results(values: np.ndarray, reduce) -> list:
    """``reduce(part)`` of each chunk of _RANGE_CHUNK entries of a large 1-D array, the chunks a stride per
    thread (numpy releases the GIL in its reductions); of the whole array when it is small or not 1-D."""
    if values.ndim != 1 or values.shape[0] < 8 * _RANGE_CHUNK:
        return [reduce(values)]
    from fastce._parallel import each_chunk

    n_chunks = -(-values.shape[0] // _RANGE_CHUNK)
    results = [None] * n_chunks

    def work(chunk):
        results[chunk] = reduce(values[chunk * _RANGE_CHUNK:(chunk + 1) * _RANGE_CHUNK])

    each_chunk(n_chunks, work)
    return results


def _class_values(labels, name, num_classes, ignore_label, note, subject, check_range=True, ignorable=True):
    """Integer dtype and values in [0, num_classes) (or ``ignore_label``); ``subject(row)`` names an element.

    ``check_range`` False: the dtype only (a caller whose kernel checks the values as it reads them, and
    calls this again to raise the error when one is out of range: readers.BinaryReader.validate_once).
    """
    if labels.dtype == np.bool_:
        labels = labels.view(np.uint8)
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f":
            non_integer = ~np.isfinite(labels) | (labels != np.round(labels))
            if non_integer.any():
                row = _first_row(non_integer)
                value = labels.reshape(-1)[row]
                raise InputError(
                    f"{name} must hold integer class indices; {subject(row)} is {value.item()!r}.",
                    argument=name,
                    row=row,
                    value=value,
                )
        raise InputError(
            f"{name} has dtype {labels.dtype}; pass integer class indices 0..{num_classes - 1} "
            "(for example y.astype(np.int64)).",
            argument=name,
            value=labels.dtype,
        )
    if not labels.dtype.isnative:
        labels = labels.astype(labels.dtype.newbyteorder("="))
    if not check_range:
        return labels
    low, high = _value_range(labels)
    if low < 0 or high >= num_classes:
        bad = (labels < 0) | (labels >= num_classes)
        if ignore_label is not None:
            bad &= labels != ignore_label
        if bad.any():
            row = _first_row(bad)
            value = labels.reshape(-1)[row]
            # Stated as a condition: the chunked doors (fastce.dask, files, Evaluator batches) see one chunk's labels,
            # where a 0 elsewhere cannot be seen ("Labels look 1-based" was said of 0-based labels there).  Over the
            # labels that are not ignored: padding (-100, or 255 in uint8) hid the hint where sequences need it.
            if ignore_label is not None:
                kept = labels[labels != ignore_label]
                low, high = (int(kept.min()), int(kept.max())) if kept.size else (low, high)
            hint = (
                f" If the labels run from 1 to {num_classes} (none is 0), they are 1-based: subtract 1."
                if low >= 1 and high == num_classes
                else ""
            )
            if value < 0 and ignore_label is None and ignorable and name == "y_true":
                hint = f" If {int(value)} marks padding or positions to leave out, pass ignore_index={int(value)}."
            if num_classes == 1 and value == 1:  # a one-output (sigmoid) model's scores beside 0/1 labels
                hint = (" Scores of one column are a softmax over one class here; for a one-output (sigmoid) binary "
                        "model pass scores[:, 0] (1-D binary scores), or a target of shape (N, 1) as a one-label "
                        "multi-label task (task='multilabel').")
            raise InputError(
                f"{subject(row)} is {int(value)}, outside the valid class indices 0..{num_classes - 1} "
                f"({note or f'the scores have {num_classes} column' + ('s' if num_classes != 1 else '')}).{hint}",
                argument=name,
                row=row,
                value=int(value),
            )
    return labels


def target_matrix(y, shape: tuple, name: str = "y_true", *, what: str = "one target per score") -> np.ndarray:
    """A target array of the scores' ``shape`` holding numbers (0/1 labels or probabilities; values are
    checked by the kernels as they read them).  Bool targets are viewed as uint8, nothing is copied."""
    targets = as_array(y, name)
    if targets.shape != tuple(shape):
        raise InputError(
            f"{name} has shape {targets.shape}; {what}" + ("" if "shape" in what else f", shape {tuple(shape)}") + ".",
            argument=name,
            value=targets.shape,
        )
    if targets.dtype.kind not in "biuf" and not _is_bfloat16(targets.dtype):
        raise InputError(
            f"{name} has dtype {targets.dtype}; pass numbers in [0, 1] (0/1 labels or probabilities).",
            argument=name,
            value=targets.dtype,
        )
    return targets.view(np.uint8) if targets.dtype == np.bool_ else targets


def sample_weight(w, n_rows: int, name: str = "sample_weight"):
    """Validate per-row weights: 1-D, finite, non-negative; None stays None."""
    if w is None:
        return None
    weights = as_array(w, name)
    if weights.ndim != 1 or weights.shape[0] != n_rows:
        raise InputError(
            f"{name} must have shape ({n_rows},), one weight per row; got shape {weights.shape}.",
            argument=name,
            value=weights.shape,
        )
    if weights.dtype not in _NATIVE_FLOATS:
        if weights.dtype.kind not in "biuf":
            raise InputError(f"{name} has dtype {weights.dtype}; pass float weights.", argument=name)
        weights = weights.astype(np.float64)
    if _finite_non_negative(weights):
        return weights
    bad = ~np.isfinite(weights) | (weights < 0)  # (a full-size mask: only to name the first bad row)
    if bad.any():
        row = _first_row(bad)
        raise InputError(
            f"{name} row {row} is {weights[row].item()!r}; weights must be finite and non-negative.",
            argument=name,
            row=row,
            value=weights[row],
        )
    return weights


MAX_TOP_K_VALUES = 1024


def top_k_values(top_k, num_classes: int, *, stacklevel: int | None = 3) -> tuple:
    """The k values to report: positive ints, deduplicated, sorted, always including 1.

    Warns (:class:`~fastce.errors.TopKWarning`, once, naming the frame
    ``stacklevel`` up) when a k > 1 asked for is at least ``num_classes``:
    that accuracy is 1 by construction.  ``stacklevel=None``: no warning;
    ``stacklevel=0``: name the first frame outside fastce (the user's line).
    """
    if isinstance(top_k, numbers.Integral):
        top_k = (top_k,)
    try:
        if isinstance(top_k, (str, bytes)):
            raise TypeError("a string is not a sequence of ints")
        items = list(top_k)
        if not all(isinstance(k, numbers.Integral) for k in items):
            raise TypeError("non-integer value")  # 2.7 must not silently become 2
        values = [int(k) for k in items]
    except (TypeError, ValueError) as exc:
        raise InputError(f"top_k must be an int or a sequence of ints; got {top_k!r}.", argument="top_k") from exc
    for k in values:
        if k < 1:
            raise InputError(f"top_k values must be >= 1; got {k}.", argument="top_k", value=k)
        if k > _MAX_K:
            raise InputError(f"top_k values must be at most {_MAX_K}; got {k}.", argument="top_k", value=k)
    ks = tuple(sorted(set(values) | {1}))
    if len(ks) > MAX_TOP_K_VALUES:
        # Each k holds its own exact sums and per-block columns (~2 KB): 10**6 of them took 2 GB and 15 s.
        raise InputError(f"top_k asks for {len(ks):,} distinct k values; at most {MAX_TOP_K_VALUES} are kept.",
                         argument="top_k", value=len(ks))
    meaningless = [k for k in ks if k > 1 and k >= num_classes]
    if meaningless and stacklevel is not None:
        k = meaningless[0]
        warnings.warn(
            f"'k' ({k}) greater than or equal to 'n_classes' ({num_classes}) will result in a perfect score and is "
            f"therefore meaningless (top_k={list(meaningless)} with {num_classes} classes).",
            TopKWarning,
            stacklevel=user_stacklevel() if stacklevel == 0 else stacklevel,
        )
    return ks


# The kernels hold k in an int64.
_MAX_K = int(np.iinfo(np.int64).max)


def check_ignore_index(ignore_index, *, allow_none: bool = True):
    """``ignore_index`` as a Python int (or None, where allowed), refused unless it is an int64 label value.

    Every door checks it (through readers.make_reader): a float such as 1.5
    compared equal to no label in some paths and was cast to 1 in others,
    leaving out class 1's rows without a word.
    """
    if ignore_index is None and allow_none:
        return None
    if (
        isinstance(ignore_index, (bool, np.bool_))
        or not isinstance(ignore_index, numbers.Integral)
        or not np.iinfo(np.int64).min < int(ignore_index) <= np.iinfo(np.int64).max
    ):
        what = "None or an int64 label value" if allow_none else "an int64 class index"
        raise InputError(
            f"ignore_index must be {what} (PyTorch's padding convention is -100); got {ignore_index!r}.",
            argument="ignore_index",
            value=ignore_index,
        )
    return int(ignore_index)
