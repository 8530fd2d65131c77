"""``evaluate``: every metric of fastce from one read of the scores."""

from __future__ import annotations

import numpy as np

from fastce import readers, tasks, validation
from fastce.errors import InputError, positions_named
from fastce.metrics import Metrics
from fastce.state import State, check_nan_policy


def scores_argument(logits, proba) -> tuple:
    """(the scores given, from_logits, their argument name): exactly one of logits= or proba=."""
    if (logits is None) == (proba is None):
        raise InputError(
            "pass exactly one of logits= (raw scores) or proba= (probabilities); "
            f"got {'both' if logits is not None else 'neither'}.",
            argument="logits/proba",
        )
    from_logits = logits is not None
    name = "logits" if from_logits else "proba"
    return (logits if from_logits else proba), from_logits, name


def validated_inputs(y_true, *, logits, proba, sample_weight, top_k, stacklevel: int = 4) -> tuple:
    """(scores, labels, weights, top_k, from_logits, name) of evaluate's arguments, checked at the door.

    ``stacklevel``: the frame a warning names (default: the caller of the function calling this).
    """
    given, from_logits, name = scores_argument(logits, proba)
    scores = validation.scores(given, name)
    n_rows, n_classes = scores.shape
    labels = validation.class_indices(y_true, "y_true", n_rows, n_classes, ignorable=False)  # no ignore_index here
    weights = validation.sample_weight(sample_weight, n_rows)
    ks = validation.top_k_values(top_k, n_classes, stacklevel=stacklevel)
    return scores, labels, weights, ks, from_logits, name


def accumulate(y_true, *, logits=None, proba=None, sample_weight=None, top_k=(1,)) -> tuple[State, str]:
    """Validate the inputs and read them once into a State (the shared door)."""
    scores, labels, weights, ks, from_logits, name = validated_inputs(
        y_true, logits=logits, proba=proba, sample_weight=sample_weight, top_k=top_k, stacklevel=5
    )
    state = readers.read_scores(scores.view, labels, weights, top_k=ks, from_logits=from_logits, eps=scores.eps)
    return state, name


def evaluate(
    y_true,
    *,
    logits=None,
    proba=None,
    sample_weight=None,
    top_k=(1,),
    nan_policy: str = "raise",
    groups=None,
    task: str = "auto",
    ignore_index: int | None = None,
    precision: str = "input",
) -> Metrics:
    """Cross-entropy, accuracy and top-k accuracy from one read of the scores.

    Parameters
    ----------
    y_true : array-like, shape (n_samples,) or (n_samples, n_classes)
        Class indices 0..C-1 (any integer dtype); 0/1 labels for 1-D scores;
        or an (N, C) target: one-hot rows (scored as the class indices they
        are), a 0/1 multi-label indicator, or soft targets (rows summing to
        1).  The task is inferred from these shapes (``Metrics.task``; see
        ``fastce.tasks``).  With (..., C) scores: shape (...) or (..., C).
    logits, proba : array-like of float, shape (n_samples, n_classes) or (n_samples,)
        Exactly one: raw scores (log-softmax cross-entropy) or probabilities
        (clipped log loss, as scikit-learn's ``log_loss``).  1-D scores are a
        binary task: the logit or probability of class 1 (class 1 is
        predicted when z > 0 / p > 0.5).  Multi-label scores are per-element
        logits (sigmoid) or probabilities.  float16, bfloat16, float32 and
        float64 are read without a copy, in any memory layout.  Sequences:
        scores of shape (..., C), class axis last (a language model's
        (B, T, V) logits with (B, T) token ids), every position a row, read
        in place.
    sample_weight : array-like of float, shape (n_samples,), optional
        Non-negative finite row weights.
    top_k : int or sequence of int, default (1,)
        The k of the top-k accuracies to report (1 is always included).
    nan_policy : {"raise", "omit", "propagate"}, default "raise"
        What to do with rows whose scores hold NaN or +inf: raise an error
        naming the first such row, skip them (with a warning saying how many),
        or return NaN.
    groups : array-like of int, shape (n_samples,), optional
        A group id per row (the document a token comes from, the patient of
        an image): ``Metrics.stderr`` is then the clustered standard error,
        treating each group as one draw (``fastce.groups``); memory grows
        with the number of groups, not of rows.  With (..., C) sequences:
        one id per position, or one per sequence (shape ``(n_sequences,)``).
        Every task: each of its means gets its clustered error (multi-label:
        a row's value is its mean over the labels).
    task : {"auto", "multiclass", "binary", "multilabel", "soft"}, default "auto"
        The question to answer; "auto" infers it from the shapes as above.
        Force it when a target could be read two ways (an (N, C) 0/1 target
        whose rows happen to hold one 1 each is one-hot, so multi-class,
        unless ``task="multilabel"``).
    ignore_index : int, optional
        A label value whose rows (positions) are left out of every metric
        and count (PyTorch's padding convention is -100); class-index
        labels only.
    precision : {"input", "float64"}, default "input"
        The math of the scores: "input" computes float16, bfloat16 and
        float32 logits with float32 math (every row's loss within 4 float32
        ulp of the exact value, confident rows included; a loss below
        exp(-156) ~ 2.4e-68 counts as 0) and float64 ones
        with float64 math; "float64" computes any input with float64 math.
        Comparisons (argmax, ranks, ties) are exact in the input's own
        precision either way.

    Returns
    -------
    Metrics
        ``n``, ``weight_sum``, ``cross_entropy`` (nats, never a percent),
        ``accuracy``, ``top_k_accuracy``, ``n_omitted``, ``brier``, ``task``;
        ``hamming_accuracy`` / ``subset_accuracy`` (multi-label) and
        ``target_entropy`` / ``kl_divergence`` (soft targets);
        ``cross_entropy_bits`` and ``perplexity`` as properties.

    Examples
    --------
    >>> import numpy as np, fastce
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], dtype=np.float32)
    >>> m = fastce.evaluate(np.array([0, 1]), logits=logits, top_k=(1, 2))
    >>> round(m.cross_entropy, 4), m.accuracy, m.top_k_accuracy[2]
    (1.5755, 0.5, 1.0)

    Binary, from 1-D logits of class 1:

    >>> b = fastce.evaluate(np.array([1, 0, 1]), logits=np.array([2.0, -1.0, -0.5]))
    >>> b.task, round(b.cross_entropy, 4), round(b.accuracy, 4)
    ('binary', 0.4714, 0.6667)

    Multi-label (each column its own yes/no question):

    >>> y = np.array([[1, 0, 1], [0, 0, 1]])
    >>> ml = fastce.evaluate(y, logits=np.array([[3.0, -2.0, 1.0], [0.5, -1.0, 2.0]]))
    >>> ml.task, round(ml.cross_entropy, 4), ml.subset_accuracy, round(ml.hamming_accuracy, 4)
    ('multilabel', 0.3172, 0.5, 0.8333)

    Token-level language-model scores, (batch, time, vocabulary), padding marked -100:

    >>> z = np.zeros((2, 3, 5), dtype=np.float32); z[..., 1] = 2.0
    >>> tokens = np.array([[1, 1, 4], [1, -100, -100]])
    >>> lm = fastce.evaluate(tokens, logits=z, ignore_index=-100)
    >>> lm.n, round(lm.accuracy, 4), round(lm.perplexity, 3)
    (4, 0.75, 2.541)
    """
    check_nan_policy(nan_policy)
    readers.check_task(task)
    given, from_logits, name = scores_argument(logits, proba)
    array = validation.as_array(given, name)
    if array.ndim > 2:
        return _evaluate_sequences(y_true, array, from_logits, name, sample_weight, top_k, nan_policy, groups, task,
                                   ignore_index, precision)
    scores = validation.scores(array, name, ndim=(1, 2))
    task, y_true = _task_and_targets(task, y_true, scores.shape)
    reader = readers.reader_for_scores(task, scores.shape, name, from_logits=from_logits, top_k=top_k,
                                       ignore_index=ignore_index, precision=precision)
    batch = reader.validate_once(y_true, scores, sample_weight, name=name)
    if groups is not None:
        batch = reader.with_groups(batch, groups)
    return reader.finalize(reader.read(batch), nan_policy, name)


def _task_and_targets(task: str, y_true, scores_shape) -> tuple:
    """(task, targets): ``task`` or the one the shapes ask for; an (N, C) target inferred to be one-hot
    becomes its class indices here, so its rows are not classified a second time by the reader."""
    if task != "auto":
        return task, y_true
    task = tasks.infer_task(y_true, scores_shape)
    target = validation.as_array(y_true, "y_true")
    if task == "multiclass" and target.ndim == 2 and target.shape[1] > 1:
        return task, tasks.one_hot_labels(target)
    return task, y_true


def _evaluate_sequences(y_true, array, from_logits, name, sample_weight, top_k, nan_policy, groups, task, ignore_index,
                        precision):
    """Scores (..., C) with targets (...) or (..., C): the rows are every position, class axis last.

    Read in place when the leading axes merge into one without a copy (any
    C-ordered array, and most slices of one); otherwise the positions are fed
    to an Evaluator one (…, C) slab at a time, which gives the same numbers
    bit for bit in bounded memory.
    """
    if array.size == 0:
        _raise_empty(array, name)
    target, flat, weights = flat_positions(y_true, array, sample_weight, name)
    groups = per_position(groups, array.shape, "groups")
    with positions_named(array.shape[:-1]):
        if flat is not None:
            return evaluate(target, **{"logits" if from_logits else "proba": flat}, sample_weight=weights,
                            top_k=top_k, nan_policy=nan_policy, groups=groups, task=task, ignore_index=ignore_index,
                            precision=precision)
        evaluator = _slab_evaluator(target, array, name, task, from_logits=from_logits, top_k=top_k,
                                    nan_policy=nan_policy, ignore_index=ignore_index, precision=precision,
                                    groups=groups is not None)
        feed_slabs(evaluator, target, array, weights, groups)
        return evaluator._finalize(name)


def _slab_evaluator(target, array, name: str, task: str, **options):
    """The Evaluator that reads (..., C) scores slab by slab (see feed_slabs) as evaluate reads them in place: the
    task inferred from every position's target (not the first slab's: a later slab's rows were refused as
    another task, where the in-place read took them), errors naming ``name``."""
    from fastce.streaming import Evaluator

    if task == "auto":
        task = tasks.infer_task(target, (target.shape[0], array.shape[-1]))
    evaluator = Evaluator(array.shape[-1], task=task, **options)
    evaluator._scores_name = name
    return evaluator


def flat_positions(y_true, array, sample_weight, name: str):
    """(targets, scores, weights) of (..., C) scores with one row per position.

    The scores are an (n, C) view, or None when the leading axes cannot
    merge without a copy (then ``feed_slabs`` reads them); targets and
    weights are reshaped (views of C-ordered arrays).
    """
    n_classes = array.shape[-1]
    if n_classes == 0:  # (it read as an Evaluator's num_classes=0, an argument the caller never passed)
        _raise_empty(array, name)
    target = validation.as_array(y_true, "y_true")
    lead = array.shape[:-1]
    if target.shape == lead:
        flat_target = target.reshape(-1)
    elif target.shape == array.shape:
        flat_target = target.reshape(-1, n_classes)
    else:
        raise InputError(
            f"y_true has shape {target.shape} but {name} has shape {array.shape}: with the class axis last, scores "
            f"(..., C) take class indices of shape {lead} (a label per position) or targets of the scores' shape. "
            "For PyTorch's layout (N, C, d1, ...) with the class axis at position 1, use fastce.cross_entropy, or "
            "pass np.moveaxis(scores, 1, -1).",
            argument="y_true",
            value=target.shape,
        )
    weights = per_position(sample_weight, array.shape, "sample_weight")
    try:
        flat = np.reshape(array, (-1, n_classes), copy=False)
    except ValueError:
        flat = None
    return flat_target, flat, weights


def _raise_empty(array, name: str):
    """The empty-scores error of (..., C) scores, said of the caller's shape (not the flattened one)."""
    raise InputError(f"{name} is empty (shape {array.shape}); pass at least one position and one class.",
                     argument=name, value=array.shape)


def per_position(values, shape, argument: str):
    """``sample_weight`` or ``groups`` of (..., C) scores of ``shape``: one value per position, flattened (or None).

    Group ids may also come one per sequence (shape ``shape[:1]``: the
    document of each sequence), repeated here over its positions (an int64
    per position, as many as the labels).
    """
    if values is None:
        return None
    array = validation.as_array(values, argument)
    lead = tuple(shape[:-1])
    if argument == "groups" and len(lead) > 1 and array.shape == lead[:1]:
        return np.repeat(np.asarray(array), int(np.prod(lead[1:])))
    if array.shape != lead:
        what = "weight" if argument == "sample_weight" else "group id"
        also = f" (or, for group ids, one per sequence, shape {lead[:1]})" if argument == "groups" else ""
        raise InputError(
            f"{argument} has shape {array.shape}; with scores of shape {tuple(shape)} it needs one {what} per "
            f"position, shape {lead}{also}.",
            argument=argument,
            value=array.shape,
        )
    return array.reshape(-1)


def feed_slabs(evaluator, target, array, weights, groups=None) -> None:
    """Feed (..., C) scores that cannot be flattened in place to ``evaluator``, one 2-D slab at a time."""
    lead = array.shape[:-1]
    per_slab = lead[-1]
    for index in np.ndindex(*lead[:-1]):
        start = int(np.ravel_multi_index(index, lead[:-1])) * per_slab
        part = slice(start, start + per_slab)
        evaluator.update(target[part], array[index], None if weights is None else weights[part],
                         **({} if groups is None else {"groups": groups[part]}))


def diagnose(
    y_true,
    *,
    logits=None,
    proba=None,
    sample_weight=None,
    top_k=(1,),
    n_bins: int = 15,
    hist_bins: int = 20,
    worst_k: int = 20,
    confident_below: float = 0.01,
    dense_confusion_max: int = 1024,
    nan_policy: str = "raise",
    task: str = "auto",
    ignore_index: int | None = None,
    precision: str = "input",
    groups=None,
):
    """Why loss and accuracy disagree: a :class:`~fastce.report.Report` from one read of the scores.

    Everything :func:`evaluate` computes, plus: the split of the loss between
    correct, wrong and confidently wrong rows (p(true class) below
    ``confident_below``); the share of the loss carried by the worst 1% of
    rows; the ``worst_k`` rows with the highest loss; calibration (ECE, RMS
    and maximum calibration error over ``n_bins`` equal-width confidence
    bins, with the per-bin data of a reliability diagram) and the Brier
    score; per-class support, recall, precision, F1, macro and weighted F1
    (as scikit-learn), mean loss; the confusion matrix (dense up to
    ``dense_confusion_max`` classes, else the most frequent confusions); and
    histograms of the per-row loss and of p(true class).

    Memory is O(C + bins + k), plus C^2 for a dense confusion matrix, whatever
    N is.  Arguments as :func:`evaluate`; results do not depend on the number
    of threads.

    The task is inferred as :func:`evaluate` infers it.  Binary (1-D scores
    of class 1, 0/1 labels): the same report, for the two classes (the
    confidence is the predicted class's probability), with ``metrics``
    those of the binary task.  Multi-label ((N, C) scores and an (N, C) 0/1
    target): a :class:`~fastce.multilabel_report.MultilabelReport` (per-label
    support, precision, recall, F1 and loss; subset against Hamming
    accuracy; calibration over all elements; the worst rows); ``top_k``
    must stay 1, and ``hist_bins`` and ``dense_confusion_max`` are ignored.
    Soft targets raise :class:`~fastce.errors.InputError` (``evaluate``
    reports their entropy and KL divergence).

    Examples
    --------
    >>> import numpy as np, fastce
    >>> logits = np.array([[4.0, 0.0], [0.0, 4.0], [9.0, 0.0], [3.0, 0.0]])
    >>> r = fastce.diagnose(np.array([0, 1, 1, 0]), logits=logits)
    >>> r.metrics.accuracy, r.loss_split["confidently_wrong"]["rows"]
    (0.75, 1)
    >>> round(r.loss_split["wrong"]["loss_share"], 3)
    0.991

    Binary, from 1-D logits of class 1:

    >>> b = fastce.diagnose(np.array([1, 0, 1, 0]), logits=np.array([2.0, -1.0, -0.5, 3.0]))
    >>> b.metrics.task, b.loss_split["wrong"]["rows"], b.confusion.tolist()
    ('binary', 2, [[1.0, 1.0], [1.0, 1.0]])

    Multi-label (each column its own yes/no question):

    >>> y = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0]])
    >>> ml = fastce.diagnose(y, logits=np.array([[3.0, -2.0, 1.0], [0.5, -1.0, 2.0], [2.0, -0.5, -1.0]]))
    >>> ml.metrics.task, round(ml.accuracy["subset"], 4), round(ml.accuracy["hamming"], 4)
    ('multilabel', 0.3333, 0.7778)
    >>> ml.labels["recall"].tolist(), ml.labels["highest_loss"][0]["label"]
    ([1.0, 0.0, 1.0], 1)
    """
    check_nan_policy(nan_policy)
    readers.check_task(task)
    given, from_logits, name = scores_argument(logits, proba)
    array = validation.as_array(given, name)
    report_options = dict(n_bins=n_bins, hist_bins=hist_bins, worst_k=worst_k, confident_below=confident_below,
                          dense_confusion_max=dense_confusion_max)
    if array.ndim > 2:
        if array.size == 0:
            _raise_empty(array, name)
        target, flat, weights = flat_positions(y_true, array, sample_weight, name)
        groups = per_position(groups, array.shape, "groups")
        with positions_named(array.shape[:-1]):
            if flat is not None:
                return diagnose(target, **{"logits" if from_logits else "proba": flat}, sample_weight=weights,
                                top_k=top_k, nan_policy=nan_policy, task=task, ignore_index=ignore_index,
                                precision=precision, groups=groups, **report_options)
            evaluator = _slab_evaluator(target, array, name, task, from_logits=from_logits, top_k=top_k,
                                        nan_policy=nan_policy, ignore_index=ignore_index, diagnostics=report_options,
                                        precision=precision, groups=groups is not None)
            feed_slabs(evaluator, target, array, weights, groups)
            return evaluator.report()
    scores = validation.scores(array, name, ndim=(1, 2))
    task, y_true = _task_and_targets(task, y_true, scores.shape)
    reader = readers.reader_for_scores(task, scores.shape, name, from_logits=from_logits, top_k=top_k,
                                       ignore_index=ignore_index, precision=precision)
    options = reader.diagnostics_options(report_options)
    batch = reader.validate(y_true, scores, sample_weight, name=name)
    if groups is not None:
        batch = reader.with_groups(batch, groups)
    state, diag = reader.read_with_diagnostics(batch, options)
    return reader.report(state, diag, nan_policy, name)
