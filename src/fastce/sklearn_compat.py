"""Drop-ins for scikit-learn 1.9's ``log_loss``, ``accuracy_score`` and ``top_k_accuracy_score``.

Same signatures, values, errors and warnings as scikit-learn (which is never
imported), computed by the fused kernels: no one-hot matrix and no other
(N, C) temporary.  Label handling (any label type, ``labels=``, binary 1-D
scores) works on N-sized arrays only.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from fastce import _accumulate, validation
from fastce._labels import check_consistent_length, encode, encode_labels, to_1d, type_of_target, unique_labels
from fastce.api import sum_to_one_tolerance


class InvalidParameterError(ValueError, TypeError):
    """A parameter has the wrong type or value (scikit-learn's ``InvalidParameterError``)."""


class UndefinedMetricWarning(UserWarning):
    """Same meaning as scikit-learn's warning of that name."""


def _check_bool(value, name: str, function: str) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(
            f"The '{name}' parameter of {function} must be an instance of 'bool' or an instance of "
            f"'numpy.bool'. Got {value!r} instead."
        )


def _check_array_like(value, name: str, function: str, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or isinstance(value, (str, bytes, numbers.Number)) or not (
        hasattr(value, "__len__") or hasattr(value, "shape") or hasattr(value, "__array__")
    ):
        allowed = "an array-like or None" if allow_none else "an array-like"
        raise InvalidParameterError(
            f"The '{name}' parameter of {function} must be {allowed}. Got {value!r} instead."
        )


def _float_scores(x, name: str):
    """scikit-learn's check_array for float predictions, without copying float arrays."""
    array = validation.as_array(x, name)
    if array.dtype.kind == "O":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"could not convert {name} to float: {exc}") from exc
    if array.ndim == 0:
        raise ValueError(
            f"Expected 2D array, got scalar array instead:\narray={array}.\n"
            "Reshape your data either using array.reshape(-1, 1) if your data has a single feature "
            "or array.reshape(1, -1) if it contains a single sample."
        )
    if array.ndim > 2:
        raise ValueError(f"Found array with dim {array.ndim}. None expected <= 2.")
    if array.shape[0] == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={array.shape}) while a minimum of 1 is required."
        )
    return validation.scores(array, name, ndim=(1, 2))


def _raise_nonfinite(state) -> None:
    """scikit-learn's message for NaN/inf predictions."""
    if state.count("nonfinite_rows"):
        raise ValueError("Input contains NaN, infinity or a value too large for dtype('float64').")


def _sample_weight(sample_weight, n_rows: int):
    if sample_weight is None:
        return None
    weights = validation.as_array(sample_weight, "sample_weight")
    if weights.ndim == 0:
        return np.full(n_rows, float(weights))
    if weights.ndim != 1:
        raise ValueError(f"Sample weights must be 1D array or scalar, got {weights.ndim}D array.")
    if weights.shape[0] != n_rows:
        raise ValueError(f"sample_weight.shape == ({weights.shape[0]},), expected ({n_rows},)!")
    if weights.dtype not in (np.float32, np.float64):
        weights = weights.astype(np.float64)
    if not np.isfinite(weights).all():
        raise ValueError("Input sample_weight contains NaN, infinity or a value too large for dtype('float64').")
    return weights


def _weighted_result(total: float, weight_sum: float, normalize: bool) -> float:
    if not normalize:
        return float(total)
    if weight_sum == 0:
        raise ZeroDivisionError("Weights sum to zero, can't be normalized")
    return float(total / weight_sum)


# --------------------------------------------------------------------------- log_loss


def log_loss(y_true, y_proba=None, *, normalize=True, sample_weight=None, labels=None, y_pred="deprecated"):
    """Log loss (clipped cross-entropy) as ``sklearn.metrics.log_loss`` 1.9.

    Probabilities are clipped to ``[eps, 1 - eps]`` with ``eps`` the machine
    epsilon of their dtype, and not renormalised; a warning is given when rows
    do not sum to one.  Columns correspond to the sorted labels.  1-D
    ``y_proba`` is the probability of the greater label.  Extra memory is
    O(N) for label encoding, never O(N x C).

    Examples
    --------
    >>> from fastce import log_loss
    >>> round(log_loss(["spam", "ham", "ham", "spam"], [[.1, .9], [.9, .1], [.8, .2], [.35, .65]]), 5)
    0.21616
    """
    if not (isinstance(y_pred, str) and y_pred == "deprecated"):
        if y_proba is not None:
            raise ValueError("Cannot use both `y_pred` and `y_proba`. `y_pred` is deprecated, use `y_proba` instead.")
        warnings.warn(
            "`y_pred` was renamed to `y_proba` in version 1.9 and will be removed in 1.11. Use `y_proba` instead.",
            FutureWarning,
            stacklevel=2,
        )
        y_proba = y_pred
    _check_array_like(y_true, "y_true", "log_loss")
    _check_array_like(y_proba, "y_proba", "log_loss")
    _check_bool(normalize, "normalize", "log_loss")
    _check_array_like(sample_weight, "sample_weight", "log_loss", allow_none=True)
    _check_array_like(labels, "labels", "log_loss", allow_none=True)

    scores = _float_scores(y_proba, "y_proba")
    view = scores.view
    binary_column = view.ndim == 1 or view.shape[1] == 1
    n_rows = view.shape[0]
    n_columns = 2 if binary_column else view.shape[1]

    def range_errors_first():
        # scikit-learn checks the range of y_proba before anything about labels.
        values = np.asarray(y_proba, dtype=np.float64)
        if np.isnan(values).any() or np.isinf(values).any():
            raise ValueError("Input contains NaN, infinity or a value too large for dtype('float64').")
        if values.max() > 1:
            raise ValueError(f"y_prob contains values greater than 1: {values.max()}")
        if values.min() < 0:
            raise ValueError(f"y_prob contains values lower than 0: {values.min()}")

    try:
        y_array = validation.as_array(y_true, "y_true")
        check_consistent_length(view, y_array, sample_weight)
        weights = _sample_weight(sample_weight, n_rows)
        indices, classes = _log_loss_labels(y_array, labels)
        if len(classes) != n_columns:
            if labels is None:
                raise ValueError(
                    "y_true and y_prob contain different number of classes: {0} vs {1}. Please provide "
                    "the true labels explicitly through the labels argument. Classes found in "
                    "y_true: {2}".format(max(len(classes), 2), n_columns, classes)
                )
            raise ValueError(
                "The number of classes in labels is different from that in y_prob. Classes found in "
                "labels: {0}".format(classes)
            )
    except ValueError:
        range_errors_first()
        raise

    if binary_column:
        state = _accumulate.accumulate_binary_proba(
            view.reshape(-1) if view.ndim == 2 else view,
            indices,
            top_k=(1,),
            sample_weight=weights,
            proba_eps=scores.eps,
        )
    else:
        state = _accumulate.accumulate_matrix(
            view,
            indices,
            top_k=(1,),
            from_logits=False,
            sample_weight=weights,
            proba_eps=scores.eps,
            sum_tolerance=sum_to_one_tolerance(scores.eps),
        )
    _raise_nonfinite(state)
    if state.count("rows_above_1"):
        raise ValueError(f"y_prob contains values greater than 1: {state.minmax[1]}")
    if state.count("rows_below_0"):
        raise ValueError(f"y_prob contains values lower than 0: {state.minmax[0]}")
    if state.count("unnormalized_rows"):
        warnings.warn("The y_prob values do not sum to one. Make sure to pass probabilities.", UserWarning, stacklevel=2)
    return _weighted_result(state.loss_sum, state.weight_sum, normalize)


def _log_loss_labels(y_array, labels):
    """(column index per row, sorted classes) as LabelBinarizer would give them."""
    if y_array.ndim == 2 and y_array.shape[1] > 1:
        # A label indicator matrix: columns are the classes.  Only one-hot rows
        # have a single true class the kernels can read.
        if labels is not None:
            classes = np.unique(to_1d(np.asarray(labels)))
        else:
            classes = np.arange(y_array.shape[1])
        row_sums = y_array.sum(axis=1)
        if not np.all(row_sums == 1) or not set(np.unique(y_array).tolist()) <= {0, 1}:
            raise ValueError(
                "y_true as an indicator matrix must be one-hot (exactly one 1 per row); "
                "pass class labels instead."
            )
        return np.argmax(y_array, axis=1), classes
    y_array = to_1d(y_array)
    if labels is not None:
        labels_array = to_1d(validation.as_array(labels, "labels"))
        classes = unique_labels(labels_array)
        if classes.shape != labels_array.shape or not np.all(classes == labels_array):
            warnings.warn(
                f"Labels passed were {labels}. But this function assumes labels are ordered "
                f"lexicographically. Pass the ordered labels={classes.tolist()} and ensure that "
                "the columns of y_prob correspond to this ordering.",
                UserWarning,
                stacklevel=3,
            )
        if not np.all(np.isin(y_array, labels_array)):
            undeclared = set(y_array.tolist()) - set(labels_array.tolist())
            raise ValueError(f"y_true contains values {undeclared} not belonging to the passed labels {labels}.")
    else:
        classes = unique_labels(y_array)
    if classes.shape[0] == 1:
        if labels is None:
            raise ValueError(
                "y_true contains only one label ({0}). Please provide the list of all expected class "
                "labels explicitly through the labels argument.".format(classes[0])
            )
        raise ValueError("The labels array needs to contain at least two labels, got {0}.".format(classes))
    return encode(y_array, classes), classes


# ------------------------------------------------------------------- accuracy_score


def _argmax_accuracy(y_true, y_score, weights):
    """Accuracy of the argmax of an (N, C) score matrix against class indices."""
    scores = validation.scores(y_score, "y_pred")
    n_rows, n_classes = scores.shape
    labels = validation.class_indices(y_true, "y_true", n_rows, n_classes)
    state = _accumulate.accumulate_matrix(scores.view, labels, top_k=(1,), from_logits=True, sample_weight=weights)
    if state.count("nonfinite_rows"):
        state.finalize("raise", scores_name="y_pred")
    return state.hits(0), state.weight_sum


def accuracy_score(y_true, y_pred, *, normalize=True, sample_weight=None):
    """Accuracy as ``sklearn.metrics.accuracy_score`` 1.9, plus (N, C) score matrices.

    Labels of any type are compared as scikit-learn does (subset accuracy for
    multilabel indicator matrices).  In addition, when ``y_true`` holds class
    indices and ``y_pred`` is a 2-D float matrix of scores (logits or
    probabilities), its row argmax is the prediction (first index wins ties,
    as numpy and torch), computed without materialising the argmax.

    Examples
    --------
    >>> from fastce import accuracy_score
    >>> accuracy_score([0, 2, 1, 3], [0, 1, 2, 3])
    0.5
    >>> accuracy_score([0, 1], [[0.9, 0.1], [0.8, 0.2]])
    0.5
    """
    _check_array_like(y_true, "y_true", "accuracy_score")
    _check_array_like(y_pred, "y_pred", "accuracy_score")
    _check_bool(normalize, "normalize", "accuracy_score")
    _check_array_like(sample_weight, "sample_weight", "accuracy_score", allow_none=True)

    true_array = validation.as_array(y_true, "y_true")
    pred_array = validation.as_array(y_pred, "y_pred")
    if (
        pred_array.ndim == 2
        and pred_array.shape[1] > 1
        and pred_array.dtype.kind == "f"
        and true_array.ndim == 1
        and true_array.dtype.kind in "iu"
        and type_of_target(pred_array) == "continuous-multioutput"
    ):
        check_consistent_length(true_array, pred_array, sample_weight)
        weights = _sample_weight(sample_weight, true_array.shape[0])
        hits, weight_sum = _argmax_accuracy(true_array, pred_array, weights)
        return _weighted_result(hits, weight_sum, normalize)

    y_type, true_array, pred_array = _check_targets(true_array, pred_array)
    check_consistent_length(true_array, pred_array, sample_weight)
    if y_type.startswith("multilabel"):
        score = _rows_equal(true_array, pred_array)
    else:
        score = true_array == pred_array
    weights = _sample_weight(sample_weight, score.shape[0])
    if weights is None:
        return _weighted_result(float(np.count_nonzero(score)), float(score.shape[0]), normalize)
    return _weighted_result(float(np.dot(score, weights)), float(np.sum(weights)), normalize)


def _rows_equal(a, b) -> np.ndarray:
    """Row-wise equality of two (N, C) arrays (dense or sparse), in row chunks."""
    if hasattr(a, "toarray") or hasattr(b, "toarray"):
        a = a.tocsr() if hasattr(a, "tocsr") else a
        b = b.tocsr() if hasattr(b, "tocsr") else b
        diff = a - b
        if hasattr(diff, "getnnz"):
            diff.eliminate_zeros()
            return np.diff(diff.indptr) == 0
        return ~np.any(diff != 0, axis=1)
    out = np.empty(a.shape[0], dtype=bool)
    step = max(1, (1 << 20) // max(1, a.shape[1]))
    for start in range(0, a.shape[0], step):
        out[start : start + step] = np.all(a[start : start + step] == b[start : start + step], axis=1)
    return out


def _check_targets(y_true, y_pred):
    """scikit-learn's ``_check_targets`` for accuracy: the common type of two targets."""
    check_consistent_length(y_true, y_pred)
    type_true = type_of_target(y_true, input_name="y_true")
    type_pred = type_of_target(y_pred, input_name="y_pred")
    y_type = {type_true, type_pred}
    if y_type == {"binary", "multiclass"}:
        y_type = {"multiclass"}
    if len(y_type) > 1:
        raise ValueError(f"Classification metrics can't handle a mix of {type_true} and {type_pred} targets")
    (y_type,) = y_type
    if y_type not in ("binary", "multiclass", "multilabel-indicator"):
        raise ValueError(f"{y_type} is not supported")
    if y_type in ("binary", "multiclass"):
        y_true = to_1d(y_true)
        y_pred = to_1d(y_pred)
        if y_type == "binary":
            try:
                unique = unique_labels(y_true, y_pred)
            except TypeError as exc:
                raise TypeError(
                    "Labels in y_true and y_pred should be of the same type. Got "
                    f"y_true={np.unique(y_true)} and y_pred={np.unique(y_pred)}. Make sure that the "
                    "predictions provided by the classifier coincides with the true labels."
                ) from exc
            if len(unique) > 2:
                y_type = "multiclass"
    return y_type, y_true, y_pred


# -------------------------------------------------------------- top_k_accuracy_score


def top_k_accuracy_score(y_true, y_score, *, k=2, normalize=True, sample_weight=None, labels=None):
    """Top-k accuracy as ``sklearn.metrics.top_k_accuracy_score`` 1.9.

    Tie rule: scikit-learn ranks tied scores by a stable ascending argsort
    read backwards, so among equal scores the *higher* column index wins.
    ``evaluate``'s ``top_k_accuracy`` uses the numpy/torch argmax rule (the
    lower index wins) instead; the two differ only on rows with ties at the
    k-th place.  Computed as the rank of the true class, without sorting.

    Examples
    --------
    >>> import numpy as np
    >>> from fastce import top_k_accuracy_score
    >>> y_true = np.array([0, 1, 2, 2])
    >>> y_score = np.array([[0.5, 0.2, 0.2], [0.3, 0.4, 0.2], [0.2, 0.4, 0.3], [0.7, 0.2, 0.1]])
    >>> top_k_accuracy_score(y_true, y_score, k=2)
    0.75
    """
    _check_array_like(y_true, "y_true", "top_k_accuracy_score")
    _check_array_like(y_score, "y_score", "top_k_accuracy_score")
    if not isinstance(k, numbers.Integral) or isinstance(k, (bool, np.bool_)):
        raise InvalidParameterError(
            f"The 'k' parameter of top_k_accuracy_score must be an int in the range [1, inf). Got {k!r} instead."
        )
    if k < 1:
        raise InvalidParameterError(
            f"The 'k' parameter of top_k_accuracy_score must be an int in the range [1, inf). Got {k!r} instead."
        )
    _check_bool(normalize, "normalize", "top_k_accuracy_score")
    _check_array_like(sample_weight, "sample_weight", "top_k_accuracy_score", allow_none=True)
    _check_array_like(labels, "labels", "top_k_accuracy_score", allow_none=True)

    y_array = to_1d(validation.as_array(y_true, "y_true"))
    y_type = type_of_target(y_array, input_name="y_true")
    if y_type == "binary" and labels is not None and len(labels) > 2:
        y_type = "multiclass"
    if y_type not in {"binary", "multiclass"}:
        raise ValueError(f"y type must be 'binary' or 'multiclass', got '{y_type}' instead.")
    score_array = validation.as_array(y_score, "y_score")
    if y_type == "binary":
        if score_array.ndim == 2 and score_array.shape[1] != 1:
            raise ValueError(
                "`y_true` is binary while y_score is 2d with"
                f" {score_array.shape[1]} classes. If `y_true` does not contain all the"
                " labels, `labels` must be provided."
            )
        score_array = to_1d(score_array)
    elif score_array.ndim != 2:
        raise ValueError(
            "`y_score` needs to be of shape `(n_samples, n_classes)`, since `y_true` contains multiple "
            f"classes. Got `y_score.shape={score_array.shape}`."
        )
    scores = _float_scores(score_array, "y_score")
    check_consistent_length(y_array, scores.view, sample_weight)
    n_score_classes = scores.shape[1] if scores.view.ndim == 2 else 2

    if labels is None:
        classes = unique_labels(y_array)
        n_classes = len(classes)
        if n_classes != n_score_classes:
            raise ValueError(
                f"Number of classes in 'y_true' ({n_classes}) not equal to the number of classes in "
                f"'y_score' ({n_score_classes}).You can provide a list of all known classes by assigning "
                "it to the `labels` parameter."
            )
    else:
        labels = to_1d(validation.as_array(labels, "labels"))
        classes = unique_labels(labels)
        n_classes = len(classes)
        if n_classes != len(labels):
            raise ValueError("Parameter 'labels' must be unique.")
        if not np.array_equal(classes, labels):
            raise ValueError("Parameter 'labels' must be ordered.")
        if n_classes != n_score_classes:
            raise ValueError(
                f"Number of given labels ({n_classes}) not equal to the number of classes in "
                f"'y_score' ({n_score_classes})."
            )
        if len(np.setdiff1d(y_array, classes)):
            raise ValueError("'y_true' contains labels not in parameter 'labels'.")
    if k >= n_classes:
        warnings.warn(
            f"'k' ({k}) greater than or equal to 'n_classes' ({n_classes}) will result in a perfect "
            "score and is therefore meaningless.",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    indices, _ = encode_labels(y_array, classes)
    weights = None if sample_weight is None else _sample_weight(sample_weight, y_array.shape[0])

    if y_type == "binary":
        values = np.asarray(score_array, dtype=np.float64)  # N values: no (N, C) array here
        if not np.isfinite(values).all():
            raise ValueError("Input contains NaN, infinity or a value too large for dtype('float64').")
        if k == 1:
            threshold = 0.5 if values.min() >= 0 and values.max() <= 1 else 0
            hits = (values > threshold).astype(np.int64) == indices
        else:
            hits = np.ones(values.shape[0], dtype=bool)
        if weights is None:
            return _weighted_result(float(np.count_nonzero(hits)), float(hits.shape[0]), normalize)
        return _weighted_result(float(np.dot(hits, weights)), float(np.sum(weights)), normalize)

    state = _accumulate.accumulate_matrix(
        scores.view, indices, top_k=(k,), from_logits=True, ties_to_last=True, sample_weight=weights
    )
    _raise_nonfinite(state)
    k_index = state.top_k.index(k)
    return _weighted_result(state.hits(k_index), state.weight_sum, normalize)


__all__ = ["log_loss", "accuracy_score", "top_k_accuracy_score", "InvalidParameterError", "UndefinedMetricWarning"]
