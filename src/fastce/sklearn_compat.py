"""Drop-ins for scikit-learn 1.9's ``log_loss``, ``accuracy_score`` and ``top_k_accuracy_score``.

Same signatures, values, errors (type and message) and warnings as
scikit-learn, for any label type and for lists, numpy, pandas and scipy.sparse
inputs; scikit-learn's own tests for these functions pass with these
substituted (``tests/test_sklearn_suite.py``).  scikit-learn is never
imported.  When it is already loaded, the exception and warning classes
raised here are also subclasses of scikit-learn's ``InvalidParameterError``
and ``UndefinedMetricWarning``, so code catching those keeps working.

What differs is how the work is done.  Score matrices are read once, by the
fused kernels, in their own dtype: no one-hot matrix, no clipped or sorted
copy, no other (N, C) temporary.  Labels are encoded with O(N) memory.  Checks
that scikit-learn runs before the computation (finiteness, the [0, 1] range,
rows summing to one) are read from the kernel's counters; only when an error
is certain anyway is the matrix scanned again (in row chunks) to give it
scikit-learn's message in scikit-learn's order.  Results are float64 sums of
the values scikit-learn computes (exactly summed), so they agree with it to
rounding: scikit-learn itself sums float32 probabilities in float32.

One documented extension: ``accuracy_score`` also takes a 2-D float matrix of
scores (logits or probabilities) with integer class indices, and scores its
row argmax (scikit-learn refuses this mix of targets).
"""

from __future__ import annotations

import numbers
import sys
import warnings

import numpy as np

from fastce import _accumulate, validation
from fastce import _labels as L
from fastce._warn import user_stacklevel
from fastce.checks import sum_to_one_tolerance


class InvalidParameterError(ValueError, TypeError):
    """A parameter has the wrong type or value (scikit-learn's ``InvalidParameterError``)."""


class UndefinedMetricWarning(UserWarning):
    """Same meaning as scikit-learn's warning of that name."""


_SKLEARN_TWINS = {
    InvalidParameterError: ("sklearn.utils._param_validation", "InvalidParameterError"),
    UndefinedMetricWarning: ("sklearn.exceptions", "UndefinedMetricWarning"),
}
_COMBINED: dict = {}


def _compatible(cls: type) -> type:
    """``cls``, or a subclass of both it and scikit-learn's twin when scikit-learn is loaded.

    Never imports scikit-learn: a program that has not loaded it cannot be
    catching its classes.
    """
    module_name, name = _SKLEARN_TWINS[cls]
    twin = getattr(sys.modules.get(module_name), name, None)
    if not isinstance(twin, type) or issubclass(cls, twin):
        return cls
    combined = _COMBINED.get((cls, twin))
    if combined is None:
        combined = type(cls.__name__, (cls, twin), {"__module__": cls.__module__, "__doc__": cls.__doc__})
        combined.__qualname__ = cls.__qualname__
        _COMBINED[(cls, twin)] = combined
    return combined


# --------------------------------------------------------------------------- parameters

# (text shown in the message, test); an empty text is a hidden option.
_ARRAY = ("an array-like", L.is_arraylike)
_SPARSE = ("a sparse array or matrix", L.is_sparse)
_NONE = ("None", lambda value: value is None)
_HIDDEN_NONE = ("", lambda value: value is None)
_BOOL = ("an instance of 'bool' or an instance of 'numpy.bool'", lambda value: isinstance(value, (bool, np.bool_)))
_STR = ("an instance of 'str'", lambda value: isinstance(value, str))
_K = ("an int in the range [1, inf)", lambda value: isinstance(value, numbers.Integral) and value >= 1)


def _validate_params(function: str, checks) -> None:
    """scikit-learn's validate_params: the first parameter satisfying none of its options is an error."""
    for name, value, options in checks:
        if any(test(value) for _, test in options):
            continue
        shown = [text for text, _ in options if text]
        allowed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
        raise _compatible(InvalidParameterError)(
            f"The {name!r} parameter of {function} must be {allowed}. Got {value!r} instead."
        )


# --------------------------------------------------------------------------- score matrices


class _Scores:
    """Scores after scikit-learn's check_array, less the finiteness test of 2-D arrays.

    ``array`` keeps the caller's dtype when the kernels can read it or when a
    conversion would copy (N, C) values (integers, bool, non-native byte
    order): those are converted to float64 a row chunk at a time.  ``dtype``
    is the dtype scikit-learn would compute in; ``eps`` its machine epsilon.
    """

    __slots__ = ("array", "dtype", "eps", "checked", "name")

    def __init__(self, array: np.ndarray, dtype: np.dtype, checked: bool, name: str = ""):
        self.array = array
        self.name = name
        self.dtype = np.dtype(dtype)
        self.eps = float(np.finfo(self.dtype).eps) if self.dtype.kind == "f" else float(np.finfo(np.float64).eps)
        self.checked = checked

    @property
    def binary(self) -> bool:
        return self.array.ndim == 1 or self.array.shape[1] == 1

    def column(self) -> np.ndarray:
        return self.array if self.array.ndim == 1 else self.array[:, 0]

    def check_finite(self) -> None:
        """scikit-learn's finiteness error (no-op when already done or all finite)."""
        if not self.checked:
            L.assert_all_finite(self.array, self.name, self.dtype)
            self.checked = True

    def extremes(self) -> tuple[float, float]:
        """(min, max) of all values, read in row chunks."""
        flat = self.array.reshape(self.array.shape[0], -1)
        low, high = np.inf, -np.inf
        for start, stop in L.row_chunks(*flat.shape):
            part = flat[start:stop]
            low, high = min(low, float(part.min())), max(high, float(part.max()))
        return low, high


_LOG_LOSS_DTYPES = (np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.float16))


def _check_scores(x, *, numeric: bool) -> _Scores:
    """check_array(x, ensure_2d=False, dtype=...) as log_loss (float dtypes) or top_k (numeric) call it."""
    array = L.to_numpy(x)
    kind = array.dtype.kind

    def as_float64():
        # from the caller's object, so that numpy's message is check_array's
        return array.astype(np.float64) if isinstance(x, np.ndarray) else np.asarray(x, dtype=np.float64)

    if numeric:
        if kind == "O":
            array = as_float64()
        elif kind in "USV" and not validation.is_float_dtype(array.dtype):
            raise ValueError(
                "dtype='numeric' is not compatible with arrays of bytes/strings.Convert your data to numeric "
                "values explicitly instead."
            )
        dtype = array.dtype
    else:
        if kind not in "biuf" and array.dtype.name != "bfloat16":
            array = as_float64()
        dtype = array.dtype if array.dtype in _LOG_LOSS_DTYPES else np.dtype(np.float64)
    L.check_dims(array)
    scores = _Scores(array, dtype, checked=False)
    if array.ndim < 2 or array.size == 0:
        scores.check_finite()  # N values at most: check now, where scikit-learn does
    L.check_min_size(array)
    return scores


def _direct_view(array: np.ndarray):
    """What the kernels can read as it is (row-major, native float32/64 or float16 bits), or None."""
    dtype = array.dtype
    if not (dtype.isnative and array.flags.c_contiguous):
        return None
    if dtype == np.float64 or dtype == np.float32:
        return array
    if dtype == np.float16:
        return array.view(np.uint16)
    return None


def _readable(part: np.ndarray) -> np.ndarray:
    """A row-major copy of a chunk that the kernels can read."""
    if part.dtype.isnative and part.dtype in _LOG_LOSS_DTYPES:
        return _direct_view(np.ascontiguousarray(part))
    return np.ascontiguousarray(part, dtype=np.float64)


def _kernel_vector(values, dtype):
    """Labels or weights as the kernels are compiled for them.

    The driver converts other dtypes a slice at a time (fresh row-major
    arrays); only a strided or read-only vector of the kernel's own dtype is
    copied here (N values), so that it does not compile another kernel.
    """
    if values is None:
        return None
    values = np.asarray(values)
    if values.dtype != dtype or (values.flags.c_contiguous and values.flags.writeable):
        return values
    return np.array(values, order="C")


def _read(array: np.ndarray, labels, weights, *, binary: bool = False, **options):
    """One kernel read of scores into a State.

    Arrays the kernels cannot read as they are (other dtypes, column-major or
    strided layouts) are copied a row chunk at a time, never as a whole.
    """
    labels = _kernel_vector(labels, np.int64)
    weights = _kernel_vector(weights, np.float64)

    def call(view, labels_part, weights_part):
        if binary:
            return _accumulate.accumulate_binary_proba(
                view, labels_part, top_k=(1,), sample_weight=weights_part, proba_eps=options["proba_eps"]
            )
        return _accumulate.accumulate_matrix(view, labels_part, sample_weight=weights_part, **options)

    view = _direct_view(array)
    if view is not None:
        return call(view, labels, weights)
    if array.ndim == 1:
        return call(_readable(array), labels, weights)
    state = None
    for start, stop in L.row_chunks(*array.shape):
        part = call(
            _readable(array[start:stop]),
            labels[start:stop],
            None if weights is None else weights[start:stop],
        )
        state = part if state is None else state.merge(part)
    return state


def _read_ranks(scores: _Scores, labels, weights, *, k: int, ties_to_last: bool):
    """State whose hits(0) is the weighted count of rows whose true class ranks below k.

    Runs the kernel in probability mode, which reads each row once, computes
    no exponentials and flags any NaN or +-inf; clipping at 0.5 keeps its
    unused loss finite.  Rows whose sum overflows, and blocks whose sums of
    squares do (scores beyond ~1e154: the Brier terms, which make every
    weighted sum of the state unknown, hits included), are re-read in logit
    mode, whose Brier terms are probabilities.
    """
    array = scores.array
    options = dict(top_k=(min(k, array.shape[1]),), ties_to_last=ties_to_last)
    state = _read(array, labels, weights, from_logits=False, proba_eps=0.5, **options)
    if state.count("nonfinite_rows") or state.count("overflowed_blocks"):
        scores.check_finite()  # raises scikit-learn's error if a value is NaN or infinite
        state = _read(array, labels, weights, from_logits=True, **options)
    return state


# --------------------------------------------------------------------------- averages


def _average(values: np.ndarray, weights, normalize: bool) -> float:
    """scikit-learn's ``_average`` on numpy arrays (N values)."""
    if normalize:
        return float(np.average(values, weights=weights))
    if weights is not None:
        return float(np.dot(values, weights))
    return float(np.sum(values, dtype=np.float64))


def _weighted_total(total: float, weight_sum: float, normalize: bool) -> float:
    if not normalize:
        return float(total)
    if weight_sum == 0:
        raise ZeroDivisionError("Weights sum to zero, can't be normalized")
    return float(total / weight_sum)


# --------------------------------------------------------------------------- log_loss


def log_loss(y_true, y_proba=None, *, normalize=True, sample_weight=None, labels=None, y_pred="deprecated"):
    """Log loss (clipped cross-entropy), as ``sklearn.metrics.log_loss`` 1.9.

    Probabilities are clipped to ``[eps, 1 - eps]``, ``eps`` being the machine
    epsilon of their dtype (float64 for dtypes scikit-learn converts), and
    not renormalised; rows not summing to one give a warning.  Columns follow
    the sorted labels; 1-D ``y_proba`` is the probability of the greater
    label.  ``y_true`` may be labels of any type or a label indicator matrix.
    Extra memory is O(N), never O(N x C).

    Examples
    --------
    >>> from fastce import log_loss
    >>> round(log_loss(["spam", "ham", "ham", "spam"], [[.1, .9], [.9, .1], [.8, .2], [.35, .65]]), 5)
    0.21616
    """
    _validate_params(
        "log_loss",
        [
            ("y_true", y_true, (_ARRAY,)),
            ("y_proba", y_proba, (_ARRAY, _HIDDEN_NONE)),
            ("normalize", normalize, (_BOOL,)),
            ("sample_weight", sample_weight, (_ARRAY, _NONE)),
            ("labels", labels, (_ARRAY, _NONE)),
            ("y_pred", y_pred, (_ARRAY, _STR)),
        ],
    )
    if not (isinstance(y_pred, str) and y_pred == "deprecated"):
        if y_proba is not None:
            raise ValueError("Cannot use both `y_pred` and `y_proba`. `y_pred` is deprecated, use `y_proba` instead.")
        warnings.warn(
            "`y_pred` was renamed to `y_proba` in version 1.9 and will be removed in 1.11. Use `y_proba` instead.",
            FutureWarning,
            stacklevel=2,
        )
        y_proba = y_pred

    scores = _check_scores(y_proba, numeric=False)
    n_rows = scores.array.shape[0]
    n_columns = 2 if scores.binary else scores.array.shape[1]
    pending: list = []  # warnings, emitted where scikit-learn emits them

    def value_errors_first():
        # scikit-learn checks the values of y_proba before anything else.
        scores.check_finite()
        low, high = scores.extremes()
        _raise_out_of_range(scores, low, high)
        _flush(pending)

    try:
        L.check_consistent_length(scores.array, y_true, sample_weight)
        weights = _numeric_weights(L.check_sample_weight(sample_weight, n_rows), normalize)
        indicator, encoded, classes = _log_loss_target(y_true, labels, pending)
    except (ValueError, TypeError):
        value_errors_first()
        raise
    if classes.shape[0] != n_columns:
        value_errors_first()
        if not scores.binary and _count_unnormalized(scores):
            _warn_unnormalized()
        if labels is None:
            raise ValueError(
                f"y_true and y_prob contain different number of classes: {classes.shape[0]} vs {n_columns}. "
                "Please provide the true labels explicitly through the labels argument. Classes found in "
                f"y_true: {classes}"
            )
        raise ValueError(
            f"The number of classes in labels is different from that in y_prob. Classes found in labels: {classes}"
        )

    tolerance = sum_to_one_tolerance(scores.eps)

    def read(labels_part, weights_part):
        if scores.binary:
            return _read(scores.column(), labels_part, weights_part, binary=True, proba_eps=scores.eps)
        return _read(
            scores.array, labels_part, weights_part, top_k=(1,), from_logits=False,
            proba_eps=scores.eps, sum_tolerance=tolerance,
        )

    if indicator:
        # Several true classes per row: one read per rank of true class, each
        # row weighted by its indicator value (0 where it has no such class).
        states = [
            read(passed_labels, values if weights is None else values * weights)
            for passed_labels, values in _indicator_passes(encoded)
        ]
        state = states[0]
        loss = sum(s.loss_sum for s in states)
        weight_sum = float(n_rows) if weights is None else float(np.sum(weights, dtype=np.float64))
    else:
        state = read(encoded, weights)
        loss, weight_sum = state.loss_sum, state.weight_sum

    if state.count("nonfinite_rows"):
        value_errors_first()  # raises: NaN/inf, or values out of range whose sum overflowed
    _raise_out_of_range(scores, state.minmax[0], state.minmax[1])
    _flush(pending)
    if state.count("unnormalized_rows"):
        _warn_unnormalized()
    return _weighted_total(loss, weight_sum, normalize)


def _numeric_weights(weights, normalize: bool):
    """Weights as numbers the kernels read; otherwise numpy's own error, as scikit-learn's average gives it."""
    if weights is None or weights.dtype.kind in "biuf":
        return weights
    # numpy's error first, for what it refuses to average (None, strings: scikit-learn's TypeError); astype
    # alone would read None as NaN and "2" as 2.0.
    _average(np.zeros(weights.shape[0]), weights, normalize)
    return weights.astype(np.float64)


# Warnings name the user's line (user_stacklevel): the drop-ins warn from one to three frames down.
def _flush(pending: list) -> None:
    while pending:
        message, category = pending.pop(0)
        warnings.warn(message, category, stacklevel=user_stacklevel())


def _warn_unnormalized() -> None:
    warnings.warn("The y_prob values do not sum to one. Make sure to pass probabilities.", UserWarning,
                  stacklevel=user_stacklevel())


def _raise_out_of_range(scores: _Scores, low: float, high: float) -> None:
    if high > 1:
        raise ValueError(f"y_prob contains values greater than 1: {scores.dtype.type(high)}")
    if low < 0:
        raise ValueError(f"y_prob contains values lower than 0: {scores.dtype.type(low)}")


def _count_unnormalized(scores: _Scores) -> int:
    """Rows of a 2-D probability matrix not summing to one (row chunks)."""
    tolerance = sum_to_one_tolerance(scores.eps)
    count = 0
    for start, stop in L.row_chunks(*scores.array.shape):
        sums = np.sum(scores.array[start:stop], axis=1, dtype=np.float64)
        count += int(np.count_nonzero(~(np.abs(sums - 1.0) <= tolerance)))
    return count


def _binarizer_target(values):
    """The target type of ``values`` as LabelBinarizer.fit checks it (its errors, its messages)."""
    target = L.target(values, "y")
    if "multioutput" in target.type:
        raise ValueError("Multioutput target data is not supported with label binarization")
    if L.num_samples(values) == 0:
        raise ValueError(f"y has 0 samples: {values!r}")
    return target


def _log_loss_target(y_true, labels, pending: list):
    """(is an indicator matrix, encoded labels or the matrix, sorted classes), as LabelBinarizer has them."""
    if labels is not None:
        label_target = _binarizer_target(labels)
        classes = L.unique_labels(label_target)
        if not np.all(classes == labels):
            pending.append(
                (
                    f"Labels passed were {labels}. But this function assumes labels are ordered "
                    f"lexicographically. Pass the ordered labels={classes.tolist()} and ensure that the "
                    "columns of y_prob correspond to this ordering.",
                    UserWarning,
                )
            )
        y_array = L.to_numpy_or_object(y_true)
        if not L.isin(y_array, classes):
            undeclared = set(y_true) - set(labels)
            raise ValueError(f"y_true contains values {undeclared} not belonging to the passed labels {labels}.")
        if classes.shape[0] == 1:
            raise ValueError(f"The labels array needs to contain at least two labels, got {classes}.")
        if y_array.ndim == 2 and y_array.shape[1] > 1:
            true_type = L.type_of_target(y_array)
            if true_type.startswith("multilabel") and not label_target.type.startswith("multilabel"):
                raise ValueError("The object was not fitted with multilabel input.")
            if "multioutput" in true_type:
                raise ValueError("Multioutput target data is not supported with label binarization")
            if true_type == "multilabel-indicator":
                if y_array.shape[1] != classes.shape[0]:
                    raise ValueError(
                        f"classes {classes} mismatch with the labels {np.arange(y_array.shape[1])} found in the data"
                    )
                return True, y_array, classes
        return False, L.encode(L.column_or_1d(y_array), classes, checked=True), classes  # isin said so

    true_target = _binarizer_target(y_true)
    classes = L.unique_labels(true_target)
    if classes.shape[0] == 1:
        raise ValueError(
            f"y_true contains only one label ({classes[0]}). Please provide the list of all expected class "
            "labels explicitly through the labels argument."
        )
    if true_target.type == "multilabel-indicator":
        return True, true_target.array, classes
    # The classes are y_true's own values: every label is one of them.
    return False, L.encode(L.column_or_1d(true_target.array), classes, checked=True), classes


def _indicator_passes(indicator):
    """(labels, values) per rank t: the t-th nonzero column of each row and its value.

    Rows with fewer than t + 1 true classes get label 0 and value 0.  The
    indicator matrix (dense or sparse) is read in row chunks.
    """
    if L.is_sparse(indicator):
        indicator = indicator.tocsr()
    n_rows, n_columns = indicator.shape

    def chunk(start, stop):
        part = indicator[start:stop]
        return part.toarray() if L.is_sparse(part) else np.asarray(part)

    counts = np.empty(n_rows, dtype=np.int64)
    for start, stop in L.row_chunks(n_rows, n_columns):
        counts[start:stop] = np.count_nonzero(chunk(start, stop), axis=1)
    for rank in range(max(1, int(counts.max()))):
        labels = np.zeros(n_rows, dtype=np.int64)
        values = np.zeros(n_rows, dtype=np.float64)
        for start, stop in L.row_chunks(n_rows, n_columns):
            part = chunk(start, stop)
            rows, cols = np.nonzero(part)
            has = counts[start:stop] > rank
            first = np.searchsorted(rows, np.arange(stop - start))
            picked = first[has] + rank
            labels[start:stop][has] = cols[picked]
            values[start:stop][has] = part[rows[picked], cols[picked]]
        yield labels, values


# --------------------------------------------------------------------------- accuracy_score


def accuracy_score(y_true, y_pred, *, normalize=True, sample_weight=None):
    """Accuracy, as ``sklearn.metrics.accuracy_score`` 1.9, plus (N, C) score matrices.

    Labels of any type are compared as scikit-learn does (subset accuracy for
    multilabel indicator matrices, dense or sparse).  In addition, when
    ``y_true`` holds integer class indices and ``y_pred`` is a 2-D float
    matrix of scores (logits or probabilities, not a label indicator matrix),
    its row argmax is the prediction (the first index wins ties, as numpy and
    torch), computed by the kernel without materialising the argmax.

    Examples
    --------
    >>> from fastce import accuracy_score
    >>> accuracy_score([0, 2, 1, 3], [0, 1, 2, 3])
    0.5
    >>> accuracy_score([0, 1], [[0.9, 0.1], [0.8, 0.2]])
    0.5
    """
    _validate_params(
        "accuracy_score",
        [
            ("y_true", y_true, (_ARRAY, _SPARSE)),
            ("y_pred", y_pred, (_ARRAY, _SPARSE)),
            ("normalize", normalize, (_BOOL,)),
            ("sample_weight", sample_weight, (_ARRAY, _NONE)),
        ],
    )
    from_scores = _accuracy_of_scores(y_true, y_pred, normalize, sample_weight)
    if from_scores is not None:
        return from_scores
    y_type, true_array, pred_array, weights = _check_targets(y_true, y_pred, sample_weight)
    if y_type == "multilabel-indicator":
        score = _rows_equal(true_array, pred_array)
    else:
        score = true_array == pred_array
    return _average(score, weights, normalize)


def _accuracy_of_scores(y_true, y_pred, normalize, sample_weight):
    """The score-matrix extension: None unless y_pred is an (N, C) float score matrix."""
    if L.is_sparse(y_true) or L.is_sparse(y_pred):
        return None
    try:
        pred = L.to_numpy(y_pred)
        true = L.to_numpy(y_true)
    except (TypeError, ValueError):
        return None
    if not (pred.ndim == 2 and pred.shape[1] > 1 and pred.shape[0] > 0 and validation.is_float_dtype(pred.dtype)):
        return None
    if true.dtype.kind not in "iu" or not (true.ndim == 1 or (true.ndim == 2 and true.shape[1] == 1)):
        return None
    # type_of_target(y_pred) == "continuous-multioutput", decided from the first
    # rows when they settle it (more than two values, one not an integer).
    head = pred[: max(1, 65536 // pred.shape[1])]
    finite_head = head[np.isfinite(head)]
    if not (np.unique(finite_head).shape[0] > 2 and not L.all_integral(finite_head)):
        if L.type_of_target(pred, "y_pred") != "continuous-multioutput":
            return None
    L.check_consistent_length(true, pred, sample_weight)
    n_rows, n_classes = pred.shape
    weights = _numeric_weights(L.check_sample_weight(sample_weight, n_rows), normalize)
    labels = validation.class_indices(L.column_or_1d(true), "y_true", n_rows, n_classes, ignorable=False)
    scores = _Scores(pred, pred.dtype, checked=False, name="y_pred")
    state = _read_ranks(scores, labels, weights, k=1, ties_to_last=False)
    return _weighted_total(state.hits(0), state.weight_sum, normalize)


def _check_targets(y_true, y_pred, sample_weight):
    """scikit-learn's ``_check_targets``: the common type of two targets, 1-D labels or indicators."""
    L.check_consistent_length(y_true, y_pred, sample_weight)
    true_target = L.target(y_true, "y_true")
    pred_target = L.target(y_pred, "y_pred")
    for raw in (y_true, y_pred):
        if L.num_samples(raw) < 1:
            raise ValueError(
                "Found empty input array (e.g., `y_true` or `y_pred`) while a minimum of 1 sample is required."
            )
    weights = None if sample_weight is None else L.check_sample_weight(sample_weight, L.num_samples(y_true))
    y_type = {true_target.type, pred_target.type}
    if y_type == {"binary", "multiclass"}:
        y_type = {"multiclass"}
    if len(y_type) > 1:
        raise ValueError(
            f"Classification metrics can't handle a mix of {true_target.type} and {pred_target.type} targets"
        )
    (y_type,) = y_type
    if y_type not in ("binary", "multiclass", "multilabel-indicator"):
        raise ValueError(f"{y_type} is not supported")
    true_array, pred_array = true_target.array, pred_target.array
    if y_type in ("binary", "multiclass"):
        try:
            true_array = L.column_or_1d(true_array, "y_true")
            pred_array = L.column_or_1d(pred_array, "y_pred")
        except TypeError as exc:
            if "Sparse data was passed" in str(exc):
                raise TypeError("Sparse input is only supported when targets are of multilabel type") from exc
            raise
    true_target.raw, pred_target.raw = true_array, pred_array  # as scikit-learn passes them on
    classes = L.unique_labels(true_target, pred_target, label_type=y_type)
    if y_type == "binary" and classes.shape[0] > 2:
        y_type = "multiclass"
    return y_type, true_array, pred_array, weights


def _rows_equal(a, b) -> np.ndarray:
    """Row-wise equality of two (N, C) indicator matrices, dense or sparse, in row chunks."""
    a = a.tocsr() if L.is_sparse(a) else a
    b = b.tocsr() if L.is_sparse(b) else b

    def dense(m, start, stop):
        part = m[start:stop]
        return part.toarray() if L.is_sparse(part) else np.asarray(part)

    out = np.empty(a.shape[0], dtype=bool)
    for start, stop in L.row_chunks(*a.shape):
        out[start:stop] = np.all(dense(a, start, stop) == dense(b, start, stop), axis=1)
    return out


# -------------------------------------------------------------- top_k_accuracy_score


def top_k_accuracy_score(y_true, y_score, *, k=2, normalize=True, sample_weight=None, labels=None):
    """Top-k accuracy, as ``sklearn.metrics.top_k_accuracy_score`` 1.9.

    Tie rule: scikit-learn ranks tied scores by a stable ascending argsort
    read backwards, so among equal scores the *higher* column index ranks
    first.  ``evaluate``'s ``top_k_accuracy`` uses the numpy/torch argmax
    rule (the lower index first) instead; the two differ only on rows with a
    tie across the k-th place.  Computed by the kernel as the rank of the true
    class, without sorting.

    Examples
    --------
    >>> import numpy as np
    >>> from fastce import top_k_accuracy_score
    >>> y_true = np.array([0, 1, 2, 2])
    >>> y_score = np.array([[0.5, 0.2, 0.2], [0.3, 0.4, 0.2], [0.2, 0.4, 0.3], [0.7, 0.2, 0.1]])
    >>> top_k_accuracy_score(y_true, y_score, k=2)
    0.75
    """
    _validate_params(
        "top_k_accuracy_score",
        [
            ("y_true", y_true, (_ARRAY,)),
            ("y_score", y_score, (_ARRAY,)),
            ("k", k, (_K,)),
            ("normalize", normalize, (_BOOL,)),
            ("sample_weight", sample_weight, (_ARRAY, _NONE)),
            ("labels", labels, (_ARRAY, _NONE)),
        ],
    )
    true = L.to_numpy(y_true)
    L.check_dims(true)
    L.assert_all_finite(true)
    L.check_min_size(true)
    true = L.column_or_1d(true)
    true_target = L.target(true, "y_true")
    y_type = true_target.type
    if y_type == "binary" and labels is not None and len(labels) > 2:
        y_type = "multiclass"
    if y_type not in ("binary", "multiclass"):
        raise ValueError(f"y type must be 'binary' or 'multiclass', got '{y_type}' instead.")
    scores = _check_scores(y_score, numeric=True)
    try:
        if y_type == "binary":
            if scores.array.ndim == 2 and scores.array.shape[1] != 1:
                raise ValueError(
                    f"`y_true` is binary while y_score is 2d with {scores.array.shape[1]} classes. If `y_true` "
                    "does not contain all the labels, `labels` must be provided."
                )
            scores.array = L.column_or_1d(scores.array)
        elif scores.array.ndim != 2:
            raise ValueError(
                "`y_score` needs to be of shape `(n_samples, n_classes)`, since `y_true` contains multiple "
                f"classes. Got `y_score.shape={scores.array.shape}`."
            )
        L.check_consistent_length(true, scores.array, sample_weight)
        n_score_classes = scores.array.shape[1] if scores.array.ndim == 2 else 2
        classes = _top_k_classes(true_target, labels, n_score_classes)
        encoded = L.encode(true, classes)
    except (ValueError, TypeError):
        scores.check_finite()
        raise
    n_classes = classes.shape[0]

    if y_type == "binary":
        if k >= n_classes:
            _warn_k(k, n_classes)
        if k == 1:
            values = scores.array
            threshold = 0.5 if values.min() >= 0 and values.max() <= 1 else 0
            hits = (values > threshold).astype(np.int64) == encoded
        else:
            hits = np.ones_like(scores.array, dtype=np.bool_)
        return _average(hits, _top_k_weights(sample_weight), normalize)

    weights = _top_k_weights(sample_weight)
    plain = weights is None or (weights.ndim == 1 and weights.dtype.kind in "biuf" and np.isfinite(weights).all())
    if plain and _exact_in_float64(scores.array):
        state = _read_ranks(scores, encoded, weights, k=int(k), ties_to_last=True)
        if k >= n_classes:
            _warn_k(k, n_classes)
        total = state.hits(0)
        if weights is None:
            return _weighted_total(total, state.weight_sum, normalize)
        return _weighted_total(total, float(np.sum(weights, dtype=np.float64)), normalize)
    # Weights numpy itself must judge (non-finite, odd shapes): per-row hits.
    scores.check_finite()
    if k >= n_classes:
        _warn_k(k, n_classes)
    return _average(_top_k_hits(scores.array, encoded, k), weights, normalize)


def _top_k_weights(sample_weight):
    return None if sample_weight is None else L.to_numpy(sample_weight)


def _warn_k(k, n_classes) -> None:
    warnings.warn(
        f"'k' ({k}) greater than or equal to 'n_classes' ({n_classes}) will result in a perfect score and is "
        "therefore meaningless.",
        _compatible(UndefinedMetricWarning),
        stacklevel=user_stacklevel(),
    )


def _top_k_classes(true_target, labels, n_score_classes: int) -> np.ndarray:
    if labels is None:
        classes = true_target.labels
        if classes.shape[0] != n_score_classes:
            raise ValueError(
                f"Number of classes in 'y_true' ({classes.shape[0]}) not equal to the number of classes in "
                f"'y_score' ({n_score_classes}).You can provide a list of all known classes by assigning it to the "
                "`labels` parameter."
            )
        return classes
    labels = L.column_or_1d(labels)
    classes = L.unique_values(labels) if labels.dtype != object else np.unique(labels)
    if classes.shape[0] != labels.shape[0]:
        raise ValueError("Parameter 'labels' must be unique.")
    if not np.array_equal(classes, labels):
        raise ValueError("Parameter 'labels' must be ordered.")
    if classes.shape[0] != n_score_classes:
        raise ValueError(
            f"Number of given labels ({classes.shape[0]}) not equal to the number of classes in 'y_score' "
            f"({n_score_classes})."
        )
    if not L.isin(true_target.array, classes):
        raise ValueError("'y_true' contains labels not in parameter 'labels'.")
    return classes


def _exact_in_float64(scores: np.ndarray) -> bool:
    """Whether every score is a float64 as it is: not so for 64-bit integers beyond 2**53, which float64 rounds
    into ties that scikit-learn, comparing the integers, does not see (those take _top_k_hits)."""
    if scores.dtype.kind not in "iu" or scores.dtype.itemsize < 8:
        return True
    limit = 1 << 53
    for start, stop in L.row_chunks(*scores.shape):
        part = scores[start:stop]
        if part.size and (int(part.max()) > limit or int(part.min()) < -limit):
            return False
    return True


def _top_k_hits(scores: np.ndarray, encoded: np.ndarray, k: int) -> np.ndarray:
    """Per-row top-k hits under scikit-learn's tie rule, in numpy row chunks (slow path): integer scores compared
    as integers, others as float64."""
    n_rows, n_columns = scores.shape
    hits = np.empty(n_rows, dtype=bool)
    columns = np.arange(n_columns)
    for start, stop in L.row_chunks(n_rows, n_columns):
        part = np.asarray(scores[start:stop])
        if part.dtype.kind not in "iu":
            part = part.astype(np.float64)
        label = np.asarray(encoded[start:stop], dtype=np.intp)
        target = part[np.arange(stop - start), label][:, None]
        ahead = np.count_nonzero(part > target, axis=1)
        ahead += np.count_nonzero((part == target) & (columns > label[:, None]), axis=1)
        hits[start:stop] = ahead < k
    return hits


# -------------------------------------------------------------- brier_score_loss

_REAL_OR_STR = ("an instance of 'float', an instance of 'str'", lambda v: isinstance(v, (numbers.Real, str)))
_BOOLEAN = ("an instance of 'bool' or an instance of 'numpy.bool'", lambda v: isinstance(v, (bool, np.bool_)))
_AUTO = ("a str among {'auto'}", lambda v: isinstance(v, str) and v == "auto")


def brier_score_loss(y_true, y_proba, *, sample_weight=None, pos_label=None, labels=None, scale_by_half="auto"):
    """Brier score, as ``sklearn.metrics.brier_score_loss`` 1.9 (binary and multiclass).

    The mean over rows of ``sum_j (p_j - [j is the true class])**2``, halved
    when ``scale_by_half`` is True, or "auto" and there are at most two
    columns (then it is the familiar mean of (p - y)**2 for the positive
    class).  1-D ``y_proba`` is the probability of ``pos_label`` (inferred
    as scikit-learn does); (N, C) columns follow the sorted labels.  The sum
    comes from the same one-read kernel as ``log_loss`` (no one-hot matrix);
    values, errors and warnings are scikit-learn's.

    Examples
    --------
    >>> from fastce import brier_score_loss
    >>> round(brier_score_loss([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.3]), 6)
    0.0375
    >>> round(brier_score_loss(["eggs", "ham", "spam"], [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.2, 0.2, 0.6]]), 6)
    0.146667
    """
    _validate_params(
        "brier_score_loss",
        [
            ("y_true", y_true, (_ARRAY,)),
            ("y_proba", y_proba, (_ARRAY,)),
            ("sample_weight", sample_weight, (_ARRAY, _NONE)),
            ("pos_label", pos_label, (_REAL_OR_STR, _BOOLEAN, _NONE)),
            ("labels", labels, (_ARRAY, _NONE)),
            ("scale_by_half", scale_by_half, (_BOOLEAN, _AUTO)),
        ],
    )
    scores = _check_scores(y_proba, numeric=False)
    if scores.binary:
        total, weights = _binary_brier(y_true, scores, sample_weight, pos_label)
    else:
        total, weights = _multiclass_brier(y_true, scores, sample_weight, labels)
    if isinstance(scale_by_half, str):
        scale_by_half = scores.binary or scores.array.shape[1] < 3
    return float(total) * (0.5 if scale_by_half else 1.0)


def _brier_mean(total: float, weight_sum: float) -> float:
    if weight_sum == 0:
        raise ZeroDivisionError("Weights sum to zero, can't be normalized")
    return total / weight_sum


def _binary_brier(y_true, scores: _Scores, sample_weight, pos_label):
    """scikit-learn's _validate_binary_probabilistic_prediction, then the two-column Brier mean."""
    true = L.column_or_1d(y_true)
    proba = L.column_or_1d(scores.array)
    L.assert_all_finite(true)
    L.assert_all_finite(proba)
    L.check_consistent_length(proba, true, sample_weight)
    weights = L.check_sample_weight(sample_weight, proba.shape[0])
    y_type = L.type_of_target(true, "y_true")
    if y_type != "binary":
        raise ValueError(
            f"The type of the target inferred from y_true is {y_type} but should be binary according to the shape "
            "of y_prob."
        )
    if proba.max() > 1:
        raise ValueError(f"y_prob contains values greater than 1: {proba.max()}")
    if proba.min() < 0:
        raise ValueError(f"y_prob contains values less than 0: {proba.min()}")
    classes = L.unique_values(true) if true.dtype != object else np.unique(true)
    if pos_label is None:
        plain = classes.dtype.kind not in "OUS" and classes.shape[0] <= 2 and any(
            np.array_equal(classes, allowed) for allowed in ([0, 1], [-1, 1], [0], [-1], [1])
        )
        if plain:
            pos_label = 1
        elif classes.dtype.kind in "OUS":
            shown = ", ".join(repr(c) for c in classes.tolist())
            raise ValueError(
                f"y_true takes value in {{{shown}}} and pos_label is not specified: either make y_true take value "
                "in {0, 1} or {-1, 1} or pass pos_label explicitly."
            )
        else:
            pos_label = classes[-1]  # scikit-learn's backward-compatible choice: the greater label
    positive = (true == pos_label).astype(np.int64)
    numeric = _numeric_weights(weights, True)
    state = _read(proba, positive, numeric, binary=True, proba_eps=0.0)
    weight_sum = float(proba.shape[0]) if weights is None else float(np.sum(numeric, dtype=np.float64))
    return _brier_mean(state.brier_sum, weight_sum), weights


def _multiclass_brier(y_true, scores: _Scores, sample_weight, labels):
    """scikit-learn's _validate_multiclass_probabilistic_prediction (as log_loss), then the Brier mean."""
    n_rows, n_columns = scores.array.shape
    pending: list = []

    def value_errors_first():
        scores.check_finite()
        low, high = scores.extremes()
        _raise_out_of_range(scores, low, high)
        _flush(pending)

    try:
        L.check_consistent_length(scores.array, y_true, sample_weight)
        weights = _numeric_weights(L.check_sample_weight(sample_weight, n_rows), True)
        indicator, encoded, classes = _log_loss_target(y_true, labels, pending)
    except (ValueError, TypeError):
        value_errors_first()
        raise
    if classes.shape[0] != n_columns:
        value_errors_first()
        if _count_unnormalized(scores):
            _warn_unnormalized()
        if labels is None:
            raise ValueError(
                f"y_true and y_prob contain different number of classes: {classes.shape[0]} vs {n_columns}. "
                "Please provide the true labels explicitly through the labels argument. Classes found in "
                f"y_true: {classes}"
            )
        raise ValueError(
            f"The number of classes in labels is different from that in y_prob. Classes found in labels: {classes}"
        )
    if indicator:
        # Several true classes per row: the Brier sum is not the kernel's one-label sum.
        value_errors_first()
        total = _indicator_brier(encoded, scores.array, weights)
        unnormalized = _count_unnormalized(scores)
    else:
        state = _read(
            scores.array, encoded, weights, top_k=(1,), from_logits=False, proba_eps=0.0,
            sum_tolerance=sum_to_one_tolerance(scores.eps),
        )
        if state.count("nonfinite_rows"):
            value_errors_first()
        _raise_out_of_range(scores, state.minmax[0], state.minmax[1])
        total = state.brier_sum
        unnormalized = state.count("unnormalized_rows")
    _flush(pending)
    if unnormalized:
        _warn_unnormalized()
    weight_sum = float(n_rows) if weights is None else float(np.sum(weights, dtype=np.float64))
    return _brier_mean(total, weight_sum), weights


def _indicator_brier(indicator, array: np.ndarray, weights) -> float:
    """sum_i w_i sum_j (y_ij - p_ij)**2 for a label indicator matrix, in row chunks."""
    if L.is_sparse(indicator):
        indicator = indicator.tocsr()
    total = 0.0
    for start, stop in L.row_chunks(*array.shape):
        part = indicator[start:stop]
        truth = part.toarray() if L.is_sparse(part) else np.asarray(part)
        rows = np.sum((truth - np.asarray(array[start:stop], dtype=np.float64)) ** 2, axis=1)
        total += float(rows.sum() if weights is None else np.dot(rows, weights[start:stop]))
    return total


__all__ = [
    "log_loss",
    "accuracy_score",
    "top_k_accuracy_score",
    "brier_score_loss",
    "InvalidParameterError",
    "UndefinedMetricWarning",
]
