"""``compare``: is model B really better than model A, on the same rows?

Every model's scores are read once, in the same row blocks as ``evaluate``;
each read yields that model's :class:`~fastce.state.State` (so its
``Metrics`` equal ``evaluate`` on its own, bit for bit) and the per-row
loss, Brier term and rank of the true class, which are folded pair by pair
into exact paired sums (``compare_kernels``) and then dropped: memory is
O(models^2 x top-k values) plus one slice of rows, never O(N).

The paired statistics (see ``errorbars`` for the formulas):
- ``delta(b, a, metric)``: mean under B minus mean under A over the rows
  counted under both, with the standard error of the per-row paired
  differences (ddof=1; ratio-estimator form with weights);
- p-values: the exact McNemar test (two-sided binomial on the discordant row
  counts, unweighted) for accuracy and top-k accuracy, the paired z-test for
  cross-entropy and Brier;
- ``table(a, b)``: rows and weights both right / only A right / only B right /
  both wrong;
- the Pearson correlation of the two models' per-row losses; the minimum
  difference detectable at this n (80% power by default).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from fastce import _accumulate, _accumulate_family, _config, _exactsum, errorbars, tasks, validation
from fastce import compare_kernels as PK
from fastce import compare_values as CV
from fastce import kernels as K
from fastce import kernels_binary as KB
from fastce.api import scores_argument
from fastce.readers import Batch as RowsBatch, check_task, make_reader
from fastce.checks import check_probabilities, check_probability_range, sum_to_one_tolerance
from fastce._warn import user_stacklevel
from fastce.errors import FastCEWarning, InputError
from fastce.state import State, check_nan_policy, check_nonnegative_sums

COMPARISON_FORMAT = "fastce.comparison/1"
# Rows per slice of the per-model path: its per-row buffers (40 bytes a row and model) stay ~10 MB.
_APART_ROWS = 1 << 18
LOSS_METRICS = ("cross_entropy", "brier")
ACCURACY_METRICS = ("accuracy", "top_k_accuracy")


# Models in one comparison: a pair's exact sums are ~19 KB, its per-call scratch more; 128 models are 8,128 pairs
# (2,000 models had raised a MemoryError, 400 took 17 s on ten rows).
MAX_MODELS = 128

def _models(container, names, argument: str) -> tuple[list, list]:
    """(names, arrays) of ``logits=`` / ``proba=``: a dict, or a sequence with optional ``names=``."""
    if isinstance(container, dict):
        if names is not None:
            raise InputError(f"{argument}= is a dict: its keys are the names; drop names=.", argument="names")
        listed_names, arrays = [str(k) for k in container], list(container.values())
    elif isinstance(container, (list, tuple)):
        arrays = list(container)
        if names is None:
            listed_names = [chr(ord("A") + i) if i < 26 else f"model {i}" for i in range(len(arrays))]
        else:
            listed_names = [str(n) for n in names]
            if len(listed_names) != len(arrays):
                raise InputError(
                    f"names= has {len(listed_names)} name(s) for {len(arrays)} model(s): give one name per model.",
                    argument="names",
                )
    else:
        raise InputError(
            f"{argument}= must be a dict {{name: scores}} or a list of score arrays (one per model), "
            f"got {type(container).__name__}.",
            argument=argument,
        )
    if len(arrays) < 2:
        raise InputError(f"{argument}= holds {len(arrays)} model(s): compare needs at least two.", argument=argument)
    if len(arrays) > MAX_MODELS:
        raise InputError(
            f"{argument}= holds {len(arrays)} models; compare keeps the paired sums of every pair (~19 KB a pair, and "
            f"its scratch), at most {MAX_MODELS} models: compare the most relevant ones, or in groups.",
            argument=argument, value=len(arrays))
    if len(set(listed_names)) != len(listed_names):
        raise InputError(f"model names must differ, got {listed_names}.", argument="names")
    return listed_names, arrays


# The pair sums that no rows make negative (counts, weights, squares, losses and their products; the outcome
# table's rows, weights and squared weights follow from PK.P_TABLE on): a loaded state's are checked.
_NONNEGATIVE_PAIR_SUMS = (PK.P_ROWS, PK.P_W, PK.P_W2, PK.P_W2DL2, PK.P_W2DB2, PK.P_FINITE_ROWS, PK.P_INF_ROWS,
                          PK.P_LA, PK.P_LB, PK.P_LA2, PK.P_LB2, PK.P_LAB, PK.P_CWB_ROWS, PK.P_CWB_W, PK.P_CWA_ROWS,
                          PK.P_CWA_W)


def compare(
    y_true,
    *,
    logits=None,
    proba=None,
    names=None,
    sample_weight=None,
    top_k=(1,),
    nan_policy: str = "raise",
    confident_below: float = 0.01,
    groups=None,
    task: str = "auto",
) -> "Comparison":
    """Metrics of several models on the same rows, and whether their differences are real.

    Parameters
    ----------
    y_true : array-like, shape (n_samples,) or (n_samples, n_classes)
        The targets, shared by every model: class indices (0/1 for binary
        scores), or an (n_samples, n_classes) matrix as ``evaluate`` reads
        it: one-hot rows (their class), a multi-label indicator or soft
        targets (rows that are distributions).
    logits, proba : dict {name: array} or list of arrays, each (n_samples, n_classes) or (n_samples,)
        Exactly one, as in :func:`fastce.evaluate`; every model the same
        shape.  1-D scores are binary: the logit or probability of class 1,
        read by evaluate's binary kernels.
    names : list of str, optional
        Names of the models when ``logits``/``proba`` is a list (default A, B, C...).
    sample_weight, top_k, nan_policy
        As :func:`fastce.evaluate`.  With ``nan_policy="omit"`` each model's
        metrics skip its own non-finite rows, and the paired statistics use
        the rows counted under both models.
    confident_below : float
        p(true class) below this makes a wrong row "confidently wrong" (the
        findings of ``str(comparison)``).
    groups : array-like of int, shape (n_samples,), optional
        A group id per row: every standard error (each model's and the
        paired ones) is then clustered (``fastce.groups``), and the p-values
        of accuracy differences come from the z-test with that error (the
        exact McNemar test assumes independent rows).
    task : {"auto", "multiclass", "binary", "multilabel", "soft"}, default "auto"
        As :func:`fastce.evaluate`: inferred from the shapes and, for an
        (n, C) target, its values.  Multi-label and soft-target comparisons
        report their task's means (see ``compare_values.TASK_METRICS``):
        cross-entropy, Brier, Hamming and subset accuracy (multi-label);
        cross-entropy, KL divergence and argmax agreement (soft).

    Returns
    -------
    Comparison

    Examples
    --------
    >>> import numpy as np, fastce
    >>> y = np.array([0, 1, 1, 0, 1, 0])
    >>> a = np.array([[2., 0.], [0., 1.], [1., 0.], [3., 0.], [0., 2.], [0., 1.]])
    >>> c = fastce.compare(y, logits={"A": a, "B": a * 2})
    >>> d = c.delta("B", "A", "cross_entropy")
    >>> round(d.estimate, 4), c.table("A", "B")["both_right"]["rows"]
    (0.1962, 4)
    """
    check_nan_policy(nan_policy)
    container, from_logits, argument = scores_argument(logits, proba)
    model_names, arrays = _models(container, names, argument)
    batch = validated_batch(y_true, arrays, model_names, argument, sample_weight, groups, task=check_task(task),
                            from_logits=from_logits)
    ks = _top_k(top_k, batch.task, batch.num_classes)
    state = ComparisonState.empty(model_names, batch.num_classes, ks, from_logits=from_logits,
                                  confident_below=_confident_below(confident_below), grouped=groups is not None,
                                  task=batch.task)
    state.read(batch.views, batch.eps, batch.labels, batch.weights, batch.groups, batch.tolerance)
    state.check_scores(argument)
    return state.finalize(nan_policy, scores_name=argument)


def _int_ratio(num: int, den: int) -> float:
    """``num / den`` of two of a pair's exact scaled integers (NaN for a zero ``den``), +-inf where the quotient
    is beyond float64 (as _exactsum.int_to_float for one): only a tampered state gets there (a real one's are
    means), and Python's int division raised an OverflowError from ``to_json()`` or ``str()`` of one that loaded."""
    if not den:
        return math.nan
    try:
        return num / den
    except OverflowError:
        return math.inf if (num > 0) == (den > 0) else -math.inf


@dataclass
class Batch:
    """Validated rows of every model: kernel views and epsilons in model order, targets, weights, groups."""

    views: list
    eps: list
    labels: object  # (n,) class indices, or the (n, C) targets of the multi-label and soft-target tasks
    weights: object
    groups: object
    task: str = "multiclass"
    tolerance: float = 0.0  # soft targets: the row-sum tolerance of their dtype (readers.Batch.tolerance)

    @property
    def n_rows(self) -> int:
        return self.views[0].shape[0]

    @property
    def num_classes(self) -> int:
        return 2 if self.views[0].ndim == 1 else self.views[0].shape[1]

    def rows(self, start: int, stop: int) -> "Batch":
        """Rows [start, stop) of every model (views, not copies)."""
        part = slice(start, stop)
        return Batch([v[part] for v in self.views], self.eps, self.labels[part],
                     None if self.weights is None else self.weights[part],
                     None if self.groups is None else self.groups[part], self.task, self.tolerance)


def _top_k(top_k, task: str, num_classes: int) -> tuple:
    """The top-k values of a comparison of ``task``: the element-wise tasks have one accuracy (k = 1)."""
    if task in CV.TASK_METRICS:
        tasks.single_k(top_k, {"multilabel": "multi-label", "soft": "soft-target"}[task])
        return (1,)
    return validation.top_k_values(top_k, num_classes, stacklevel=0)  # the warning names the user's line


def validated_batch(y_true, arrays, names, argument: str, sample_weight, groups, num_classes=None,
                    task="auto", from_logits: bool = True) -> Batch:
    """Check one batch of rows for every model (same shape), as ``evaluate`` checks its arguments.

    ``task``: "auto" infers it as ``evaluate`` does; ``num_classes``, when
    given, is that of the comparison the rows must join.
    """
    scores = [validation.scores(x, f"{argument}[{name!r}]", ndim=(1, 2)) for name, x in zip(names, arrays)]
    check_same_shape(names, [s.shape for s in scores], argument)
    n_rows = scores[0].shape[0]
    binary = len(scores[0].shape) == 1
    target = validation.as_array(y_true, "y_true")
    if task == "auto":
        task = tasks.infer_task(target, scores[0].shape)
    if binary != (task == "binary"):
        want = "1-D scores of class 1, shape (n,)" if task == "binary" else "scores of shape (n, classes)"
        raise InputError(
            f"{argument} have shape {scores[0].shape}, but this {task} comparison takes {want}.",
            argument=argument, value=scores[0].shape,
        )
    n_classes = 2 if binary else scores[0].shape[1]
    if num_classes is not None and n_classes != num_classes:
        raise InputError(
            f"{argument} have {n_classes} columns, not the {num_classes} classes of this comparison.",
            argument=argument, value=scores[0].shape,
        )
    ids = None
    if groups is not None:
        from fastce.groups import check_groups

        ids = check_groups(groups, n_rows)
    if task in CV.TASK_METRICS:
        # The task's reader checks the targets as evaluate's does (their values: in the kernel), whatever rows a
        # batch holds: a batch whose rows happen to look one-hot or soft is still read as this task's.
        rows = make_reader(task, n_classes, from_logits=from_logits).validate(target, scores[0], sample_weight,
                                                                             name=f"{argument}[{names[0]!r}]")
        return Batch([s.view for s in scores], [s.eps for s in scores], rows.targets, rows.weights, ids, task,
                     rows.tolerance)
    note = "1-D scores are a binary task: labels are 0 or 1" if binary else None
    labels = validation.class_indices(_class_labels(target, n_rows, n_classes, task), "y_true", n_rows, n_classes,
                                      note=note, ignorable=False, one_score_a_row=binary)  # no ignore_index
    weights = validation.sample_weight(sample_weight, n_rows)
    return Batch([s.view for s in scores], [s.eps for s in scores], labels, weights, ids, task)


def _class_labels(target, n_rows: int, n_classes: int, task: str):
    """Class indices of a multi-class or binary comparison: ``target`` as it is, or one-hot rows (n, C) read
    as their class (as evaluate reads them); other (n, C) targets get an error naming their task."""
    if target.ndim != 2 or target.shape[1] == 1 or target.shape != (n_rows, n_classes):
        return target  # class_indices says what is wrong with other shapes
    kind = tasks.target_kind(target)
    if kind != tasks.ONE_HOT:
        found = {tasks.MULTILABEL: "multi-label", tasks.SOFT: "soft"}[kind]
        raise InputError(
            f"y_true of shape {target.shape} holds {found} targets, not one-hot rows: a {task} comparison takes "
            f"class indices (or one-hot rows). For {found} targets compare with task="
            f"{'multilabel' if kind == tasks.MULTILABEL else 'soft'!r} and (n, classes) scores.",
            argument="y_true", value=target.shape,
        )
    return tasks.one_hot_labels(target)


def check_same_shape(names, shapes, argument: str) -> None:
    """Every model's scores must have the first one's shape (the same rows and classes)."""
    for name, shape in zip(names, shapes):
        if shape != shapes[0]:
            raise InputError(
                f"{argument}[{name!r}] has shape {shape}, {argument}[{names[0]!r}] has {shapes[0]}: "
                "every model must score the same rows and classes.",
                argument=argument,
            )


def _confident_below(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise InputError(
            f"confident_below={value!r} must be a probability in (0, 1), e.g. 0.01.",
            argument="confident_below", value=value,
        )
    return float(value)


def compare_block_rows(task: str, num_classes: int, from_logits: bool) -> int:
    """Rows per kernel block: evaluate's for the task, so each model's State is evaluate's, bit for bit."""
    if task == "binary":
        return _accumulate_family.binary_block_rows(from_logits)
    return _config.block_rows(num_classes)


def _pair_values(task: str, n_k: int) -> int:
    """Per-row values behind a comparison's group sums: loss, Brier term and a hit per k (multi-class,
    binary; groups.row_values), or the four values the element-wise kernels write (compare_values)."""
    return _accumulate_family.ROW_VALUES if task in CV.TASK_METRICS else 2 + n_k


def _top_k_of(state) -> tuple:
    """A model state's top-k values; (1,) for the element-wise tasks, whose one accuracy is k = 1."""
    return getattr(state, "top_k", (1,))


def _empty_state(task: str, num_classes: int, top_k, from_logits: bool):
    if task in CV.TASK_METRICS:
        return make_reader(task, num_classes, from_logits=from_logits).empty()
    return State.empty(num_classes, top_k, from_logits=from_logits, task=task)


def _state_from_dict(data):
    """A model's state in a comparison's JSON: its "task" says which task's state it is."""
    from fastce.task_states import MultilabelState, SoftState

    kind = {"multilabel": MultilabelState, "soft": SoftState}.get(data.get("task") if isinstance(data, dict) else None)
    return State.from_dict(data) if kind is None else kind.from_dict(data)


@dataclass
class ComparisonState:
    """Mergeable statistics of a comparison: each model's State and exact paired sums per pair."""

    names: tuple
    num_classes: int
    top_k: tuple
    from_logits: bool
    confident_below: float
    states: dict  # name -> State
    pairs: dict  # (name_a, name_b), a before b in ``names`` -> (P columns, NUM_LIMBS) exact accumulators
    nonfinite_pair_sums: int = 0
    # With groups: per model and per pair, GroupSums of the per-row values (see groups.row_values)
    # and of their paired differences; None without.
    clusters: dict | None = None
    task: str = "multiclass"  # or "binary": 1-D scores of class 1 (each model's State has that task)
    # Per pair, the columns where some block's partial sum was not finite (left out of the exact sums, counted
    # in nonfinite_pair_sums): the numbers that need them are unknown, never silently wrong.
    dropped: dict = field(default_factory=dict)

    @classmethod
    def empty(cls, names, num_classes, top_k, *, from_logits: bool, confident_below: float,
              grouped: bool = False, task: str = "multiclass") -> "ComparisonState":
        from fastce.groups import GroupSums

        names = tuple(names)
        values = _pair_values(task, len(top_k))
        clusters = None
        if grouped:
            clusters = {key: GroupSums(values) for key in list(names) + list(combinations(names, 2))}
        width = CV.value_pair_columns(values) if task in CV.TASK_METRICS else PK.pair_columns(len(top_k))
        return cls(
            names=names,
            num_classes=int(num_classes),
            top_k=tuple(top_k),
            from_logits=bool(from_logits),
            confident_below=float(confident_below),
            states={n: _empty_state(task, num_classes, top_k, from_logits) for n in names},
            pairs={p: _exactsum.new_accumulators(width) for p in combinations(names, 2)},
            clusters=clusters,
            task=task,
        )

    @property
    def block_rows(self) -> int:
        return compare_block_rows(self.task, self.num_classes, self.from_logits)

    @property
    def rows_seen(self) -> int:
        """The rows read (every model reads the same rows)."""
        return self.states[self.names[0]].rows_seen

    def read(self, views, eps, labels, weights, groups=None, tolerance: float = 0.0, precision: str = "input") -> None:
        """Read every model's validated scores (kernel views, in ``names`` order; ``eps`` each one's
        machine epsilon) over the same slices of whole blocks, the first at a block boundary.

        ``labels``: class indices, or the (n, C) targets of the multi-label
        and soft-target tasks (``tolerance``: soft targets' row-sum tolerance).
        ``precision``: evaluate's (compare has no such option: ``"input"``; the
        binary reader's groups= path passes its own) for class-index tasks.
        """
        if self.task in CV.TASK_METRICS:
            self._read_values(views, eps, labels, weights, groups, tolerance)
        elif len({v.dtype for v in views}) == 1:
            self._read_together(views, eps[0], labels, weights, groups, precision)
        else:
            score = self._score_binary if self.task == "binary" else self._score_matrix
            self._read_apart(views, eps, labels, weights, groups, functools.partial(score, precision=precision))

    def check_scores(self, argument: str, stacklevel: int | None = None) -> None:
        """What every door checks once the scores are read (as evaluate checks them, per model; the
        multi-label and soft-target states check theirs as they finalize)."""
        for name in self.names:
            if self.task in CV.TASK_METRICS:
                continue
            if self.task == "binary":
                if not self.from_logits:
                    check_probability_range(self.states[name], f"{argument}[{name!r}]")
            else:
                check_probabilities(self.states[name], f"{argument}[{name!r}]", stacklevel=stacklevel)

    def _read_together(self, views, eps, labels, weights, groups, precision: str) -> None:
        """Every model's block, then the block's pairs, in one kernel (compare_kernels.compare_blocks, or
        compare_binary_blocks for 1-D binary scores)."""
        n_rows = views[0].shape[0]
        row_elements = 1 if views[0].ndim == 1 else views[0].shape[1]
        block_rows = self.block_rows
        max_blocks = min(_accumulate.blocks_per_call(views, block_rows), max(1, -(-n_rows // block_rows)))
        if self.clusters is not None:
            # The per-row statistics of groups= (40 bytes a row and model) for ~_APART_ROWS rows at most: a
            # call of 512 binary logit blocks is 4M rows (160 MB a model).
            max_blocks = min(max_blocks, max(1, _APART_ROWS // block_rows))
        slice_rows = max_blocks * block_rows
        n_models, n_k = len(self.names), len(self.top_k)
        ks = _accumulate.kernel_input(np.asarray(self.top_k, dtype=np.int64))
        fsums = np.empty((n_models, max_blocks, K.fsums_columns(n_k)))
        icounts = np.empty((n_models, max_blocks, K.NUM_ICOUNTS), dtype=np.int64)
        pair_fsums = np.empty((len(self.pairs), max_blocks, PK.pair_columns(n_k)))
        # Per-row statistics only for the clustered errors of groups=.
        row_stats = np.empty((n_models, slice_rows if self.clusters is not None else 0, K.ROW_STATS_COLUMNS))
        mode = K.MODE_LOGITS if self.from_logits else K.MODE_PROBA
        float32_math = _accumulate.float32_math(precision, views[0].dtype)

        def kernel(parts, part_labels, part_weights, nblocks):
            if self.task == "binary":
                PK.compare_binary_blocks(parts, part_labels, part_weights, ks, self.from_logits, float32_math,
                                         0.0 if self.from_logits else float(eps), self.confident_below, row_stats,
                                         nblocks, block_rows, fsums, icounts, pair_fsums)
                return
            PK.compare_blocks(parts, part_labels, part_weights, ks, mode, 0.0 if self.from_logits else float(eps),
                              # As evaluate: logits rows in [0, 1] count as probability-like only when they sum to 1.
                              float(sum_to_one_tolerance(eps)), float32_math, self.confident_below,
                              row_stats, nblocks, block_rows, fsums, icounts, pair_fsums)

        for start in range(0, n_rows, slice_rows):
            stop = min(start + slice_rows, n_rows)
            nblocks = -(-(stop - start) // block_rows)
            parts = [_accumulate.kernel_input(v[start:stop]) for v in views]
            part_labels = _accumulate.kernel_input(labels[start:stop], np.int64)
            part_weights = _accumulate._slice(weights, start, stop, np.float64)
            with _accumulate.threads_for((stop - start) * row_elements * n_models):
                kernel(parts, part_labels, part_weights, nblocks)
            for m, name in enumerate(self.names):
                part = State.empty(self.num_classes, self.top_k, from_logits=self.from_logits, task=self.task)
                _accumulate.fold_call(part, fsums[m], icounts[m], nblocks, 0, block_rows)
                part.rows_seen += stop - start
                self.states[name] = self.states[name].merge(part)
            for p, key in enumerate(self.pairs):
                self._fold_pair(key, pair_fsums[p], nblocks)
            if self.clusters is not None:
                stats = {n: row_stats[m, : stop - start] for m, n in enumerate(self.names)}
                self._fold_groups(groups[start:stop], stats, part_weights, block_rows)

    def _score_matrix(self, view, labels, weights, eps: float, stats, precision: str = "input") -> State:
        """One model's State of (n, C) scores, each row's statistics into ``stats``."""
        return _accumulate.accumulate_matrix(
            view, labels, top_k=self.top_k, from_logits=self.from_logits, sample_weight=weights,
            proba_eps=0.0 if self.from_logits else eps, sum_tolerance=sum_to_one_tolerance(eps), row_stats=stats,
            precision=precision,
        )

    def _score_binary(self, view, labels, weights, eps: float, stats, precision: str = "input") -> State:
        """One model's State of 1-D binary scores (evaluate's binary kernels), each row's statistics into
        ``stats`` (kernels_binary.binary_row_stats) right after each kernel call."""
        proba_eps = 0.0 if self.from_logits else float(eps)
        # The per-row statistics by the State's own math.
        float32_math = _accumulate_family.binary_float32_math(view, precision) if self.from_logits else None

        def on_rows(start, stop, part_labels, _weights):
            KB.binary_row_stats(_accumulate.kernel_input(view[start:stop]), part_labels, self.from_logits,
                                proba_eps, float32_math, stats[start:stop])

        if self.from_logits:
            return _accumulate_family.accumulate_binary_logits(view, labels, top_k=self.top_k, sample_weight=weights,
                                                               on_rows=on_rows, precision=precision)
        return _accumulate.accumulate_binary_proba(view, labels, top_k=self.top_k, sample_weight=weights,
                                                   proba_eps=proba_eps, on_rows=on_rows)

    def _read_apart(self, views, eps, labels, weights, groups, score) -> None:
        """Models of different dtypes: each scored on its own (``score``: its State, its per-row statistics
        into a buffer), then the pairs from the buffers."""
        n_rows = views[0].shape[0]
        block_rows = self.block_rows
        blocks = max(1, min(_config.BLOCKS_PER_CALL, _APART_ROWS // block_rows))
        slice_rows = block_rows * blocks
        ks = np.asarray(self.top_k, dtype=np.int64)
        fsums = np.empty((1, blocks, PK.pair_columns(len(self.top_k))))
        buffers = {n: np.empty((min(slice_rows, n_rows), K.ROW_STATS_COLUMNS)) for n in self.names}
        for start in range(0, n_rows, slice_rows):
            stop = min(start + slice_rows, n_rows)
            part_labels = labels[start:stop]
            part_weights = None if weights is None else weights[start:stop]
            for name, view, view_eps in zip(self.names, views, eps):
                part = score(view[start:stop], part_labels, part_weights, view_eps, buffers[name][: stop - start])
                self.states[name] = self.states[name].merge(part)
            w = _accumulate.kernel_input(np.empty(0) if part_weights is None else part_weights, np.float64)
            for a, b in self.pairs:
                with _config.PARALLEL_LOCK:
                    nblocks = PK.pair_blocks(buffers[a][: stop - start], buffers[b][: stop - start], w, ks,
                                             self.confident_below, block_rows, fsums)
                self._fold_pair((a, b), fsums[0], nblocks)
            if self.clusters is not None:
                self._fold_groups(groups[start:stop], {n: buffers[n][: stop - start] for n in self.names},
                                  w, block_rows)

    def _read_values(self, views, eps, targets, weights, groups, tolerance: float) -> None:
        """The multi-label and soft-target tasks: each model read by its task's reader (evaluate's read, so
        its state is evaluate's, bit for bit), whose kernel writes each row's values as it reads the row
        (see compare_values); then the pairs' sums of those values, a slice of whole blocks at a time."""
        reader = make_reader(self.task, self.num_classes, from_logits=self.from_logits)
        n_rows = views[0].shape[0]
        block_rows = self.block_rows
        slice_rows = block_rows * max(1, min(_config.BLOCKS_PER_CALL, _APART_ROWS // block_rows))
        n_values = _pair_values(self.task, len(self.top_k))
        buffers = {n: np.empty((min(slice_rows, n_rows), n_values)) for n in self.names}
        fsums = np.empty((-(-min(slice_rows, max(1, n_rows)) // block_rows), CV.value_pair_columns(n_values)))
        for start in range(0, n_rows, slice_rows):
            stop = min(start + slice_rows, n_rows)
            part_weights = None if weights is None else weights[start:stop]
            for name, view, view_eps in zip(self.names, views, eps):
                rows = RowsBatch(view[start:stop], view_eps, targets[start:stop], part_weights, tolerance)

                def keep(lo, hi, values, out=buffers[name]):
                    out[lo:hi] = values

                self.states[name] = self.states[name].merge(reader.read(rows, on_values=keep))
            w = _accumulate.kernel_input(np.empty(0) if part_weights is None else part_weights, np.float64)
            for a, b in self.pairs:
                nblocks = CV.value_pair_blocks(buffers[a][: stop - start], buffers[b][: stop - start], w,
                                               CV.HIT_COLUMN, block_rows, fsums)
                self._fold_pair((a, b), fsums, nblocks)
            if self.clusters is not None:
                self._fold_values(groups[start:stop], {n: buffers[n][: stop - start] for n in self.names}, w,
                                  block_rows)

    def _fold_pair(self, key, fsums, nblocks: int) -> None:
        """Add a pair's block sums exactly; note the columns of the partials that were not finite."""
        dropped = np.zeros(fsums.shape[1], dtype=np.bool_)
        self.nonfinite_pair_sums += PK.fold_exact(fsums, nblocks, self.pairs[key], dropped)
        if dropped.any():
            self.dropped[key] = tuple(sorted(set(self.dropped.get(key, ())) | set(np.flatnonzero(dropped).tolist())))

    def _fold_groups(self, ids, rows, weights, block_rows) -> None:
        from fastce.groups import row_values

        self._fold_values(ids, {n: row_values(rows[n], self.top_k, self.num_classes) for n in self.names}, weights,
                          block_rows)

    def _fold_values(self, ids, values, weights, block_rows) -> None:
        """Each model's per-row values (NaN first value: not counted) and each pair's differences, by group."""
        for n in self.names:
            self.clusters[n].add_rows(ids, values[n], weights, block_rows)
        for a, b in self.pairs:
            joint = ~np.isnan(values[a][:, 0]) & ~np.isnan(values[b][:, 0])
            with np.errstate(invalid="ignore"):
                difference = values[b] - values[a]  # NaN where both losses are infinite: left undefined
            self.clusters[(a, b)].add(ids, joint, difference, weights, block_rows)

    def merge(self, other: "ComparisonState") -> "ComparisonState":
        """The rows of ``self`` followed by those of ``other`` (exact, like State.merge)."""
        mine = (self.names, self.task, self.num_classes, self.top_k, self.from_logits, self.confident_below)
        theirs = (other.names, other.task, other.num_classes, other.top_k, other.from_logits, other.confident_below)
        if mine != theirs:
            raise ValueError(
                "cannot merge comparisons with different settings "
                f"(names, task, num_classes, top_k, from_logits, confident_below): {mine} vs {theirs}"
            )
        pairs = {}
        for key, acc in self.pairs.items():
            pairs[key] = acc + other.pairs[key]
            _exactsum.normalize(pairs[key])
        if (self.clusters is None) != (other.clusters is None):
            raise ValueError("cannot merge a comparison with groups= and one without")
        clusters = None if self.clusters is None else {
            key: self.clusters[key].merge(other.clusters[key]) for key in self.clusters
        }
        return ComparisonState(
            names=self.names, num_classes=self.num_classes, top_k=self.top_k, from_logits=self.from_logits,
            confident_below=self.confident_below,
            states={n: self.states[n].merge(other.states[n]) for n in self.names},
            pairs=pairs, nonfinite_pair_sums=self.nonfinite_pair_sums + other.nonfinite_pair_sums,
            clusters=clusters, task=self.task,
            dropped={key: tuple(sorted(set(self.dropped.get(key, ())) | set(other.dropped.get(key, ()))))
                     for key in self.pairs if key in self.dropped or key in other.dropped},
        )

    def to_dict(self) -> dict:
        return {
            "format": COMPARISON_FORMAT,
            "names": list(self.names),
            "confident_below": self.confident_below,
            "states": {n: self.states[n].to_dict() for n in self.names},
            "pairs": [{"a": a, "b": b, "sums": [_exactsum.to_hex(acc) for acc in self.pairs[(a, b)]]}
                      | ({"dropped": list(self.dropped[(a, b)])} if (a, b) in self.dropped else {})
                      for a, b in self.pairs],
            "nonfinite_pair_sums": self.nonfinite_pair_sums,
            "groups": None if self.clusters is None else {
                "models": {n: self.clusters[n].to_dict() for n in self.names},
                "pairs": [self.clusters[key].to_dict() for key in self.pairs],
            },
        }

    @classmethod
    def from_dict(cls, data) -> "ComparisonState":
        """Inverse of :meth:`to_dict`; a ValueError for anything else."""
        try:
            if not isinstance(data, dict) or data.get("format") != COMPARISON_FORMAT:
                raise ValueError(f"expected format {COMPARISON_FORMAT!r}")
            names = data["names"]
            if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
                raise ValueError("names must be a list of at least two strings")
            if len(names) > MAX_MODELS:
                raise ValueError(f"at most {MAX_MODELS} models")
            if len(set(names)) != len(names):
                raise ValueError("names repeat")
            states = data["states"]
            if not isinstance(states, dict) or set(states) != set(names):
                raise ValueError("states must map every name to a state")
            parsed = {n: _state_from_dict(states[n]) for n in names}
            first = parsed[names[0]]
            for n in names:
                s = parsed[n]
                if (s.task, s.num_classes, _top_k_of(s), s.from_logits) != (
                    first.task, first.num_classes, _top_k_of(first), first.from_logits
                ):
                    raise ValueError(f"state {n!r} has other settings than {names[0]!r}")
                if s.clusters is not None:  # a comparison keeps its group sums apart ("groups" below)
                    raise ValueError(f"state {n!r} holds group sums")
            confident_below = data["confident_below"]
            if isinstance(confident_below, bool) or not isinstance(confident_below, (int, float)) or not (
                0.0 < confident_below < 1.0
            ):
                raise ValueError(f"confident_below must be in (0, 1), got {confident_below!r}")
            out = cls.empty(names, first.num_classes, _top_k_of(first), from_logits=first.from_logits,
                            confident_below=float(confident_below), task=first.task)
            for n in names:  # what empty() makes and the kernels assume (accepted, ties_to_last broke a later merge)
                if getattr(parsed[n], "ties_to_last", False) != getattr(out.states[n], "ties_to_last", False):
                    raise ValueError(f"state {n!r} has ties_to_last={parsed[n].ties_to_last!r}")
            out.states = parsed
            pairs = data["pairs"]
            if not isinstance(pairs, list) or len(pairs) != len(out.pairs):
                raise ValueError("wrong number of pairs")
            for entry, key in zip(pairs, out.pairs):
                if not isinstance(entry, dict) or (entry.get("a"), entry.get("b")) != key:
                    raise ValueError(f"pairs must list {list(out.pairs)} in order")
                sums = entry["sums"]
                if not isinstance(sums, list) or len(sums) != out.pairs[key].shape[0] or not all(
                    isinstance(t, str) for t in sums
                ):
                    raise ValueError("pair sums must be a list of hexadecimal strings")
                if first.task in ("multiclass", "binary"):  # the other tasks' pair sums have layouts of their own
                    check_nonnegative_sums(sums, _NONNEGATIVE_PAIR_SUMS + tuple(range(PK.P_TABLE, len(sums))))
                out.pairs[key] = np.stack([_exactsum.from_hex(t) for t in sums])
                dropped = entry.get("dropped", [])
                if not isinstance(dropped, list) or not all(
                    isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(sums) for c in dropped
                ):
                    raise ValueError("dropped must list column indices of the pair sums")
                if dropped:
                    out.dropped[key] = tuple(sorted(set(dropped)))
            count = data["nonfinite_pair_sums"]
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < 2**62:
                raise ValueError(f"nonfinite_pair_sums out of range: {count!r}")
            out.nonfinite_pair_sums = count
            grouped = data["groups"]
            if grouped is not None:
                from fastce.groups import GroupSums

                if not isinstance(grouped, dict) or not isinstance(grouped.get("models"), dict) or not isinstance(
                    grouped.get("pairs"), list
                ) or set(grouped["models"]) != set(names) or len(grouped["pairs"]) != len(out.pairs):
                    raise ValueError("groups must hold the group sums of every model and pair")
                clusters = {n: GroupSums.from_dict(grouped["models"][n]) for n in names}
                clusters.update({key: GroupSums.from_dict(d) for key, d in zip(out.pairs, grouped["pairs"])})
                if any(c.n_values != _pair_values(out.task, len(out.top_k)) for c in clusters.values()):
                    raise ValueError("group sums do not match top_k")
                out.clusters = clusters
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"malformed fastce comparison state: {exc!s}") from exc
        return out

    def finalize(self, nan_policy: str = "raise", *, scores_name: str = "logits") -> "Comparison":
        metrics = {n: _finalize_model(self.states[n], nan_policy, f"{scores_name}[{n!r}]") for n in self.names}
        if self.clusters is not None:
            from fastce.groups import clustered, clustered_means

            if self.task in CV.TASK_METRICS:
                means = type(self.states[self.names[0]]).GROUPED_MEANS
                metrics = {n: clustered_means(m, self.clusters[n], means) for n, m in metrics.items()}
            else:
                metrics = {n: clustered(m, self.clusters[n]) for n, m in metrics.items()}
        propagate = nan_policy == "propagate" and any(math.isnan(m.cross_entropy) for m in metrics.values())
        if self.task in CV.TASK_METRICS:
            n_values = _pair_values(self.task, len(self.top_k))
            pairs = {key: CV.ValuePairSums(acc, n_values, propagate, self.dropped.get(key, ()))
                     for key, acc in self.pairs.items()}
        else:
            pairs = {key: _PairSums(acc, propagate, self.dropped.get(key, ())) for key, acc in self.pairs.items()}
        return Comparison(self, metrics, pairs)


def _finalize_model(state, nan_policy: str, name: str):
    if isinstance(state, State):
        return state.finalize(nan_policy, scores_name=name, stacklevel=None)
    return state.finalize(nan_policy, scores_name=name)


class _PairSums(CV.ExactPairSums):
    """The paired sums of a multi-class or binary pair (compare_kernels' P_* columns): a table per top-k value."""

    CORRELATION_COLUMNS = (PK.P_FINITE_ROWS, PK.P_LA, PK.P_LB, PK.P_LA2, PK.P_LB2, PK.P_LAB)

    def table_column(self, k_index: int) -> int:
        return PK.P_TABLE + PK.TABLE_COLUMNS * k_index


@dataclass(frozen=True)
class Delta:
    """A paired difference: mean under ``b`` minus mean under ``a``, over the rows counted under both."""

    metric: str
    b: str
    a: str
    estimate: float
    stderr: float
    n: int
    p_value: float
    test: str  # "McNemar exact" or "paired z"
    k: int | None = None

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Normal interval of the paired difference: estimate -/+ z stderr."""
        return errorbars.normal_interval(self.estimate, self.stderr, level)

    def minimum_detectable(self, level: float = 0.95, power: float = 0.8) -> float:
        """The smallest true difference this n detects at ``level`` with probability ``power``."""
        return errorbars.minimum_detectable_difference(self.stderr, level=level, power=power)

    def to_dict(self) -> dict:
        low, high = self.interval()
        return {
            "metric": self.metric, "k": self.k, "b": self.b, "a": self.a, "estimate": self.estimate,
            "stderr": self.stderr, "interval_95": [low, high], "n": self.n, "p_value": self.p_value,
            "test": self.test,
        }


class Comparison:
    """What :func:`fastce.compare` returns: each model's Metrics and their paired differences."""

    def __init__(self, state: ComparisonState, metrics: dict, pairs: dict):
        self.state = state
        self.names = list(state.names)
        self.metrics = metrics
        self._pairs = pairs

    # -- pair statistics ------------------------------------------------------
    def _pair(self, a: str, b: str):
        for name in (a, b):
            if name not in self.metrics:
                raise KeyError(f"no model named {name!r}; the models are {self.names}")
        if a == b:
            raise ValueError(f"compare a model with another one, not with itself ({a!r}).")
        if (a, b) in self._pairs:
            return self._pairs[(a, b)], 1.0
        return self._pairs[(b, a)], -1.0

    def _k_index(self, k) -> int:
        if self.state.task in CV.TASK_METRICS and k != 1:
            raise ValueError(f"k={k!r}: a {self.state.task} comparison has one accuracy (k=1).")
        if k not in self.state.top_k:
            raise ValueError(f"k={k!r} is not among the top-k values computed: {list(self.state.top_k)}.")
        return self.state.top_k.index(k)

    def delta(self, b: str, a: str, metric: str = "cross_entropy", *, k: int | None = None) -> Delta:
        """Mean of ``metric`` under ``b`` minus under ``a``, with its paired error bar and p-value.

        ``metric``: "cross_entropy", "brier" (paired z-test), "accuracy" or
        "top_k_accuracy" with ``k=`` (exact McNemar test).  Multi-label:
        "cross_entropy", "brier", "hamming_accuracy" (paired z) and
        "subset_accuracy" (= "accuracy", McNemar); soft targets:
        "cross_entropy", "kl_divergence" (paired z) and "accuracy" (argmax
        agreement, McNemar).
        """
        sums, sign = self._pair(a, b)
        if self.state.task in CV.TASK_METRICS:
            return self._value_delta(sums, sign, a, b, metric, k)
        n = round(sums.value(PK.P_ROWS))
        if metric in LOSS_METRICS:
            if metric == "cross_entropy":
                columns, rows = (PK.P_DL, PK.P_W2DL, PK.P_W2DL2), round(sums.value(PK.P_FINITE_ROWS))
                infinite = round(sums.value(PK.P_INF_ROWS))
            else:
                columns, rows, infinite = (PK.P_DB, PK.P_W2DB, PK.P_W2DB2), n, 0
            half = 0.5 if (metric == "brier" and self.state.num_classes == 2) else 1.0
            total, q1, q2 = columns
            return self._mean_delta(metric, a, b, sign, half, sums, (PK.P_W, total, PK.P_W2, q1, q2), infinite != 0,
                                    rows, n, 0 if metric == "cross_entropy" else 1)
        if metric in ACCURACY_METRICS:
            k = 1 if (metric == "accuracy" and k is None) else k
            i = self._k_index(k)
            return self._hit_delta("top_k_accuracy" if k != 1 else "accuracy", a, b, sums, sign, i,
                                   (PK.P_W, PK.P_W2), n, 2 + i, k=k)
        raise ValueError(
            f"metric={metric!r} is not one of 'cross_entropy', 'brier', 'accuracy', 'top_k_accuracy'."
        )

    def _value_delta(self, sums, sign: float, a: str, b: str, metric: str, k) -> Delta:
        """delta() of the multi-label and soft-target tasks, from compare_values' sums."""
        self._k_index(1 if k is None else k)
        metric, column, kind = CV.metric_of(self.state.task, metric)
        n = sums.count(CV.V_ROWS)
        if kind == "mean":
            at = CV.value_column(column)
            rows = sums.count(CV.V_FINITE_ROWS) if column == 0 else n - sums.count(at)
            return self._mean_delta(metric, a, b, sign, 1.0, sums, (CV.V_W, at + 1, CV.V_W2, at + 2, at + 3),
                                    sums.count(at) != 0, rows, n, column)
        return self._hit_delta(metric, a, b, sums, sign, 0, (CV.V_W, CV.V_W2), n, column)

    def _mean_delta(self, metric, a, b, sign, half, sums, columns, undefined, rows, n, group_column) -> Delta:
        """The paired z-test of a mean's difference from the pair's exact sums: ``columns`` = those of
        (weight, sum w d, sum w^2, sum w^2 d, sum w^2 d^2) over ``rows`` rows; ``undefined`` when a
        difference was not finite (an infinite loss): then NaN."""
        weight, total, w2, q1, q2 = (sums.ints[c] for c in columns)
        nan = math.nan
        estimate = sign * half * _int_ratio(total, weight)
        if undefined or sums.dropped_any(columns[:2]):
            estimate = nan
        stderr = self._stderr(sums, columns, rows, weight, total, w2, q1, q2, half)
        if undefined:
            stderr = nan
        test = "paired z"
        if self.state.clusters is not None:
            stderr, test = self._clustered_error(a, b, group_column, estimate)
        p_value = _z_p(estimate, stderr)
        if sums.propagate:
            estimate = stderr = p_value = nan
        return Delta(metric, b, a, estimate, stderr, n, p_value, test)

    def _hit_delta(self, metric, a, b, sums, sign, k_index, weights, n, group_column, k=None) -> Delta:
        """The difference of a hit rate (b - a) from the k_index-th table's cells only A right and only B
        right (rows, weight, squared weight; swapped when the pair is stored as (b, a)), ``weights`` the
        columns of (weight, sum w^2); the exact McNemar test (a z-test with groups=)."""
        first, second = (PK.ONLY_A, PK.ONLY_B) if sign > 0 else (PK.ONLY_B, PK.ONLY_A)
        cells = [sums.table_column(k_index) + 3 * cell for cell in (first, second)]
        only_a, only_b = ([sums.ints[c + i] for i in range(3)] for c in cells)
        weight, w2 = (sums.ints[c] for c in weights)
        # d = hit_b - hit_a is +1 on rows right under b only, -1 under a only, 0 elsewhere.
        total = only_b[1] - only_a[1]
        estimate = _int_ratio(total, weight)
        columns = (weights[0], cells[0] + 1, cells[1] + 1, weights[1], cells[0] + 2, cells[1] + 2)
        if sums.dropped_any(columns[:3]):
            estimate = math.nan
        stderr = self._stderr(sums, columns, n, weight, total, w2, only_b[2] - only_a[2], only_b[2] + only_a[2])
        counts = (_exactsum.int_to_float(only_a[0]), _exactsum.int_to_float(only_b[0]))
        p_value = errorbars.mcnemar_exact_p(*map(round, counts)) if all(map(math.isfinite, counts)) else math.nan
        test = "McNemar exact"
        if self.state.clusters is not None:
            # McNemar assumes independent rows: with groups, the z-test on the clustered error.
            stderr, test = self._clustered_error(a, b, group_column, estimate)
            p_value = _z_p(estimate, stderr)
        if sums.propagate:
            estimate = stderr = p_value = math.nan
        return Delta(metric, b, a, estimate, stderr, n, p_value, test, k=k)

    @staticmethod
    def _stderr(sums, columns, rows, weight, total, w2, q1, q2, half=1.0) -> float:
        """The paired standard error; unknown (NaN, with a warning) when a block's partial sum in one of
        ``columns`` went beyond float64 and was left out of the exact sums."""
        if sums.dropped_any(columns):
            warnings.warn(
                "a paired standard error is unknown (NaN): a block's sum of squared differences or squared weights "
                "exceeds the float64 range (values above ~1e154); so is the difference itself when its own sum "
                "does. If sample_weight is that large, divide it by its maximum: only ratios of sample_weight matter.",
                FastCEWarning, stacklevel=user_stacklevel(),
            )
            return math.nan
        if errorbars.squares_underflow(rows, w2, q2, total, 1 << _exactsum.OFFSET):
            warnings.warn(errorbars.SMALL_WEIGHTS, FastCEWarning, stacklevel=user_stacklevel())
            return math.nan
        centred = errorbars.centred_square_sum(weight, total, w2, q1, q2, 1 << _exactsum.OFFSET)
        return half * errorbars.standard_error(rows, _exactsum.int_to_float(weight), centred)

    def _clustered_error(self, a: str, b: str, column: int, estimate: float) -> tuple[float, str]:
        """(clustered standard error of the b - a difference in ``column``, the test's name)."""
        if (a, b) in self.state.clusters:
            error = self.state.clusters[(a, b)].standard_error(column, estimate)
        else:
            error = self.state.clusters[(b, a)].standard_error(column, -estimate)
        return error, "paired z (clustered)"

    def table(self, a: str, b: str, *, k: int = 1) -> dict:
        """Rows and weights where both are right, only ``a``, only ``b``, or neither (top-``k``; multi-label:
        every label right, the subset hit; soft targets: the argmax of the target's)."""
        sums, sign = self._pair(a, b)
        i = self._k_index(k)
        cells = {name: sums.cell(i, c) for name, c in (
            ("both_right", PK.BOTH_RIGHT), ("only_a_right", PK.ONLY_A), ("only_b_right", PK.ONLY_B),
            ("both_wrong", PK.BOTH_WRONG))}
        if sign < 0:
            cells["only_a_right"], cells["only_b_right"] = cells["only_b_right"], cells["only_a_right"]
        return {name: {"rows": rows, "weight": w} for name, (rows, w, _) in cells.items()}

    def correlation(self, a: str, b: str) -> float:
        """Pearson correlation of the two models' per-row losses (unweighted, rows with finite losses)."""
        sums, _ = self._pair(a, b)
        n, la, lb, la2, lb2, lab = (sums.ints[c] for c in sums.CORRELATION_COLUMNS)
        if sums.dropped_any(sums.CORRELATION_COLUMNS):
            return math.nan  # a partial sum beyond float64 (losses above ~1e154): unknown
        # From the exact scaled integers: n sum xy - sum x sum y (every term
        # carries the same scale, which cancels in the ratio).
        cov = n * lab - la * lb
        var_a = n * la2 - la * la
        var_b = n * lb2 - lb * lb
        if n < 2 * (1 << _exactsum.OFFSET) or var_a <= 0 or var_b <= 0:
            return math.nan
        # At most 1: the sums of squares and of products come from block sums rounded each its own way, and
        # identical models gave 1.0000000000000004.  int / int is correctly rounded (as a Fraction's float).
        return min(1.0, (cov * cov / (var_a * var_b)) ** 0.5) * (1.0 if cov >= 0 else -1.0)

    def confidently_wrong(self, under: str, other: str) -> dict:
        """Rows confidently wrong under ``under`` (p(true) < confident_below) and right under ``other``.

        Their rows, weight, share of the rows, and share of the loss
        difference (under minus other) they carry: NaN when a row of the
        pair has an infinite loss (its difference is undefined, as in
        ``delta``).  Multi-class and binary comparisons only (a ValueError
        otherwise).
        """
        if self.state.task in CV.TASK_METRICS:
            raise ValueError(f"confidently wrong rows are counted for class labels; not in a {self.state.task} "
                             "comparison.")
        sums, sign = self._pair(other, under)
        rows_col, w_col, dl_col = (PK.P_CWB_ROWS, PK.P_CWB_W, PK.P_CWB_DL) if sign > 0 else (
            PK.P_CWA_ROWS, PK.P_CWA_W, PK.P_CWA_DL)
        rows = round(sums.value(rows_col))
        weight = sums.value(w_col)
        carried = sign * sums.value(dl_col)
        total = sign * sums.value(PK.P_DL)
        weight_all = sums.value(PK.P_W)
        if sums.dropped_any((PK.P_W, PK.P_DL, dl_col)) or round(sums.value(PK.P_INF_ROWS)):
            # A partial sum beyond float64 was left out, or a row's loss was infinite (its difference is undefined,
            # as delta's, and the kernel adds 0 for it): the share is unknown.
            carried = math.nan
        return {
            "rows": rows,
            "weight": weight,
            "row_share": rows / max(1, round(sums.value(PK.P_ROWS))),
            # Their sum of w (loss under `under` - loss under `other`), per unit of the whole weight:
            # their part of the mean loss difference.
            "loss_difference": carried / weight_all if weight_all else math.nan,
            "loss_difference_share": carried / total if total else math.nan,
        }

    # -- output ---------------------------------------------------------------
    def metric_names(self) -> list:
        """The metrics ``delta`` compares in this comparison (with ``k=`` for top-k accuracy)."""
        if self.state.task in CV.TASK_METRICS:
            return list(CV.TASK_METRICS[self.state.task])
        return ["cross_entropy", "brier", "top_k_accuracy"]

    def to_dict(self) -> dict:
        pairs = []
        value_task = self.state.task in CV.TASK_METRICS
        for a, b in combinations(self.names, 2):
            if value_task:
                deltas = [self.delta(b, a, metric).to_dict() for metric in self.metric_names()]
            else:
                deltas = [self.delta(b, a, "cross_entropy").to_dict(), self.delta(b, a, "brier").to_dict()]
                deltas += [self.delta(b, a, "top_k_accuracy", k=k).to_dict() for k in self.state.top_k]
            pairs.append({
                "a": a, "b": b, "deltas": deltas,
                "table": {str(k): self.table(a, b, k=k) for k in self.state.top_k},
                "loss_correlation": self.correlation(a, b),
                "confidently_wrong": None if value_task else {b: self.confidently_wrong(b, a),
                                                              a: self.confidently_wrong(a, b)},
            })
        return {"task": self.state.task, "models": self.names,
                "metrics": {n: self.metrics[n].to_dict() for n in self.names}, "pairs": pairs}

    def to_json(self, **kwargs) -> str:
        """Strict JSON (RFC 8259), encoded as every fastce result (``fastce._json``: inf/NaN as strings)."""
        from fastce import _json

        kwargs.pop("allow_nan", None)
        return _json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        from fastce.compare_text import comparison_text

        return comparison_text(self)

    def __repr__(self) -> str:
        return f"<Comparison of {self.names} over {self.metrics[self.names[0]].n} rows ({self.state.task})>"


def _z_p(estimate: float, stderr: float) -> float:
    """Two-sided p-value of estimate / stderr; 0 for an exact nonzero difference, NaN when undefined (an
    infinite error, beyond float64, tests nothing)."""
    if stderr == math.inf:
        return math.nan
    if stderr > 0:
        return errorbars.two_sided_normal_p(estimate / stderr)
    return math.nan if math.isnan(stderr) or math.isnan(estimate) or estimate == 0 else 0.0
