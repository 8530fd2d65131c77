"""``evaluate``: every metric of fastce from one read of the scores."""

from __future__ import annotations

import warnings

import numpy as np

from fastce import _accumulate, validation
from fastce import kernels as K
from fastce.errors import FastCEWarning, InputError, ProbabilitiesAsLogitsWarning
from fastce.metrics import Metrics
from fastce.state import State, check_nan_policy


def sum_to_one_tolerance(eps: float) -> float:
    """scikit-learn's test for probability rows: |sum - 1| <= 1e-8 + sqrt(eps)."""
    return 1e-8 + float(np.sqrt(eps))


def check_probability_range(state: State, name: str) -> None:
    """Refuse probabilities outside [0, 1]: they are almost always logits.

    Reports the first offending row, whichever of the two kinds it shows.
    """
    kinds = sorted(
        (
            (K.C_BELOW0, K.FIRST_BELOW0, "below 0", state.minmax[0]),
            (K.C_ABOVE1, K.FIRST_ABOVE1, "above 1", state.minmax[1]),
        ),
        key=lambda kind: int(state.counts[kind[1]]),
    )
    for counter, first, word, value in kinds:
        if state.counts[counter]:
            row = int(state.counts[first])
            raise InputError(
                f"{name} row {row} holds a value {word} (extreme value {value:g}; {int(state.counts[counter])} "
                f"such row(s)): these are not probabilities. If they are logits (raw model outputs), "
                f"pass them as logits= instead.",
                argument=name,
                row=row,
                value=float(value),
            )


def warn_unnormalized(state: State, name: str, *, stacklevel: int = 3) -> None:
    count = int(state.counts[K.C_UNNORMALIZED])
    if count:
        warnings.warn(
            f"{count} row(s) of {name} do not sum to 1 (first: row {int(state.counts[K.FIRST_UNNORMALIZED])}); "
            "cross-entropy assumes probabilities. Normalise them, or pass logits= if they are raw scores.",
            FastCEWarning,
            stacklevel=stacklevel,
        )


_PROBA_ADVICE = "pass them as proba= instead (Evaluator(..., from_logits=False); fastce eval --proba FILE)"


def warn_probabilities_as_logits(
    state: State, name: str, *, stacklevel: int = 3, advice: str = _PROBA_ADVICE, nan_policy: str = "raise"
) -> None:
    """Warn when every row read as logits lies in [0, 1] and sums to 1: almost surely probabilities.

    Softmax of probabilities squashes every row towards uniform, so the loss,
    Brier score and calibration come out wrong without any error.  The
    kernel counts such rows (``C_PROBA_LIKE``, rows summing to 1 within
    ``sum_to_one_tolerance`` of the input's dtype, the proba= row-sum test),
    so this costs no pass; one warning per call, never per row.  Nothing
    when non-finite rows are about to raise under ``nan_policy``, nor when
    every such row is one-hot (``C_ONE_HOT_LIKE``).
    """
    rows = int(state.counts[K.C_ROWS])
    if nan_policy == "raise" and state.counts[K.C_NONFINITE]:
        return
    like = int(state.counts[K.C_PROBA_LIKE])
    # One-hot rows (max exactly 1) are hand-made logits or hard predictions as
    # often as saturated probabilities: they fit, but alone they prove nothing.
    # One class: every probability row is [1], a value logits take by chance.
    evidence = state.num_classes > 1 and like > int(state.counts[K.C_ONE_HOT_LIKE])
    if state.from_logits and rows and like == rows and evidence:
        every = "the only row of" if rows == 1 else f"all {rows} rows of"
        verbs = "is in [0, 1] and sums" if rows == 1 else "are in [0, 1] and sum"
        warnings.warn(
            f"{every} {name} counted {verbs} to 1: these look like probabilities, not logits, and softmax of "
            f"probabilities gives wrong metrics; {advice}.",
            ProbabilitiesAsLogitsWarning,
            stacklevel=stacklevel,
        )


def check_probabilities(state: State, name: str, *, stacklevel: int = 4, nan_policy: str = "raise") -> None:
    """What every door checks once the scores are read.

    Probabilities: values outside [0, 1] raise; rows not summing to one warn,
    pointing ``stacklevel`` frames up (default: the caller of the function
    calling this).  Logits: a warning when they all look like probabilities
    (unless ``nan_policy`` is about to raise).
    """
    if not state.from_logits:
        check_probability_range(state, name)
        warn_unnormalized(state, name, stacklevel=stacklevel)
    else:
        warn_probabilities_as_logits(state, name, stacklevel=stacklevel, nan_policy=nan_policy)


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
    labels = validation.class_indices(y_true, "y_true", n_rows, n_classes)
    weights = validation.sample_weight(sample_weight, n_rows)
    ks = validation.top_k_values(top_k, n_classes, stacklevel=stacklevel)
    return scores, labels, weights, ks, from_logits, name


def accumulate(y_true, *, logits=None, proba=None, sample_weight=None, top_k=(1,)) -> tuple[State, str]:
    """Validate the inputs and read them once into a State (the shared door)."""
    scores, labels, weights, ks, from_logits, name = validated_inputs(
        y_true, logits=logits, proba=proba, sample_weight=sample_weight, top_k=top_k, stacklevel=5
    )
    state = read_scores(scores.view, labels, weights, top_k=ks, from_logits=from_logits, eps=scores.eps)
    return state, name


def read_scores(view, labels, weights, *, top_k, from_logits: bool, eps: float, on_rows=None) -> State:
    """One read of validated scores (``Scores.view``) into a fresh State.

    The kernel call shared by every door: ``eps`` is the machine epsilon of
    the caller's dtype (clipping and the sum-to-one test of probabilities);
    ``on_rows`` receives each slice's per-row diagnostics (see
    ``_accumulate.accumulate_matrix``).
    """
    return _accumulate.accumulate_matrix(
        view,
        labels,
        top_k=top_k,
        from_logits=from_logits,
        sample_weight=weights,
        proba_eps=0.0 if from_logits else eps,
        # Logits: the same test finds rows that look like probabilities.
        sum_tolerance=sum_to_one_tolerance(eps),
        on_rows=on_rows,
    )


def evaluate(
    y_true,
    *,
    logits=None,
    proba=None,
    sample_weight=None,
    top_k=(1,),
    nan_policy: str = "raise",
    groups=None,
) -> Metrics:
    """Cross-entropy, accuracy and top-k accuracy from one read of the scores.

    Parameters
    ----------
    y_true : array-like, shape (n_samples,) or (n_samples, n_classes)
        Class indices 0..C-1 (any integer dtype); 0/1 labels for 1-D scores;
        or an (N, C) target: one-hot rows (scored as the class indices they
        are), a 0/1 multi-label indicator, or soft targets (rows summing to
        1).  The task is inferred from these shapes (``Metrics.task``; see
        ``fastce.tasks``).
    logits, proba : array-like of float, shape (n_samples, n_classes) or (n_samples,)
        Exactly one: raw scores (log-softmax cross-entropy) or probabilities
        (clipped log loss, as scikit-learn's ``log_loss``).  1-D scores are a
        binary task: the logit or probability of class 1 (class 1 is
        predicted when z > 0 / p > 0.5).  Multi-label scores are per-element
        logits (sigmoid) or probabilities.  float16, bfloat16, float32 and
        float64 are read without a copy, in any memory layout.
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
        with the number of groups, not of rows.  Multi-class tasks only
        for now.

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
    """
    check_nan_policy(nan_policy)
    if (logits is None) != (proba is None):
        # Binary (1-D scores), multi-label and soft targets: see fastce.tasks.
        from fastce import tasks

        name = "logits" if logits is not None else "proba"
        scores = validation.scores(logits if logits is not None else proba, name, ndim=(1, 2))
        metrics, labels = tasks.evaluate_by_task(
            y_true, scores=scores, from_logits=logits is not None, name=name, sample_weight=sample_weight,
            top_k=top_k, nan_policy=nan_policy,
        )
        if metrics is not None:
            if groups is not None:
                raise InputError(
                    f"groups= (clustered standard errors) is supported for the multi-class task for now, not for "
                    f"the {metrics.task!r} task these shapes ask for.",
                    argument="groups",
                )
            return metrics
        y_true = y_true if labels is None else labels
    if groups is not None:
        return _evaluate_clustered(y_true, logits, proba, sample_weight, top_k, nan_policy, groups)
    state, name = accumulate(y_true, logits=logits, proba=proba, sample_weight=sample_weight, top_k=top_k)
    check_probabilities(state, name, nan_policy=nan_policy)
    return state.finalize(nan_policy, scores_name=name)


def _evaluate_clustered(y_true, logits, proba, sample_weight, top_k, nan_policy, groups) -> Metrics:
    """evaluate with groups=: the same read, its per-row values folded into per-group sums."""
    from fastce import _config
    from fastce import groups as G

    scores, labels, weights, ks, from_logits, name = validated_inputs(
        y_true, logits=logits, proba=proba, sample_weight=sample_weight, top_k=top_k
    )
    n_rows, n_classes = scores.shape
    ids = G.check_groups(groups, n_rows)
    clusters = G.GroupSums(2 + len(ks))
    block_rows = _config.block_rows(n_classes)

    def fold(start, _labels, weights_part, stats, _pred):
        stop = start + stats.shape[0]
        counted = ~np.isnan(stats[:, K.S_LOSS])
        clusters.add(ids[start:stop], counted, G.row_values(stats, ks, n_classes), weights_part, block_rows)

    state = read_scores(scores.view, labels, weights, top_k=ks, from_logits=from_logits, eps=scores.eps, on_rows=fold)
    check_probabilities(state, name)
    return G.clustered(state.finalize(nan_policy, scores_name=name), clusters)


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
    from fastce.diagnostics import DiagnosticsOptions, read_with_diagnostics
    from fastce.report import Report

    check_nan_policy(nan_policy)
    if (logits is None) != (proba is None):
        # Binary (1-D scores), multi-label and soft targets: the rules of evaluate (fastce.tasks).
        from fastce import diagnose_tasks, tasks

        given, from_logits, name = scores_argument(logits, proba)
        scores = validation.scores(given, name, ndim=(1, 2))
        task, target = tasks.infer_task(y_true, scores)
        if task == "soft":
            diagnose_tasks.refuse_soft_targets()
        if task != "multiclass":
            if task == "multilabel":
                tasks._single_k(top_k, "multi-label")
            options = DiagnosticsOptions(
                num_classes=2 if task == "binary" else scores.shape[1], n_bins=n_bins, hist_bins=hist_bins,
                worst_k=worst_k, confident_below=confident_below, dense_confusion_max=dense_confusion_max,
            )
            run = diagnose_tasks.diagnose_binary if task == "binary" else diagnose_tasks.diagnose_multilabel
            return run(scores, y_true if task == "binary" else target, from_logits=from_logits, name=name,
                       sample_weight=sample_weight, top_k=top_k, nan_policy=nan_policy, options=options)
        y_true = y_true if target is None else target  # one-hot rows: their class indices
    scores, labels, weights, ks, from_logits, name = validated_inputs(
        y_true, logits=logits, proba=proba, sample_weight=sample_weight, top_k=top_k
    )
    n_classes = scores.shape[1]
    options = DiagnosticsOptions(
        num_classes=n_classes,
        n_bins=n_bins,
        hist_bins=hist_bins,
        worst_k=worst_k,
        confident_below=confident_below,
        dense_confusion_max=dense_confusion_max,
    )
    state, diag = read_with_diagnostics(scores.view, labels, weights, top_k=ks, from_logits=from_logits, eps=scores.eps, options=options)
    check_probabilities(state, name, nan_policy=nan_policy)
    return Report.from_states(state, diag, nan_policy=nan_policy, scores_name=name)
