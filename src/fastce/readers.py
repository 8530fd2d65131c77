"""The one interface between the doors and the kernels: a reader per task.

Every door (``evaluate``, the streaming ``Evaluator``, the command over
files, ``fastce.dask``) is written once against this interface:

* ``tasks.infer_task(y, scores_shape)`` decides which question the shapes
  ask, and ``make_reader(task, ...)`` returns that task's :class:`Reader`;
* ``reader.validate(y, scores, weights)`` checks a batch at the door and
  returns a :class:`Batch` (kernel views, nothing read yet);
  ``reader.validate_once`` does the same for a batch one ``read`` takes
  right away (``evaluate``), and may leave to that read a check its kernel
  makes anyway (``Batch.deferred_check``; the errors are the same);
* ``reader.read(batch)`` reads the batch once into a fresh state; states of
  consecutive batches cut at multiples of ``reader.block_rows`` merge into
  exactly the state of one read of all their rows (the kernels sum fixed
  blocks of rows counted from the first row of each call, then add the block
  sums exactly);
* ``reader.raise_now(state, ...)`` raises what the rows must raise as soon
  as they are read, ``reader.finalize(state, ...)`` applies the NaN policy
  and the checks and returns :class:`~fastce.metrics.Metrics`;
* ``reader.read_with_diagnostics(batch, options)`` also reads what
  ``diagnose`` reports (a second, mergeable state) and
  ``reader.report(state, diag, ...)`` makes the report; with
  ``part=True`` the second is a part for ``diag.absorb([part, ...])``,
  which adds parts in place (a streaming update's, once the batch is
  accepted), and every diagnostics state has ``copy``;
* states follow one protocol: ``merge``, ``rows_seen``, ``to_dict`` /
  ``reader.state_from_dict`` (strict JSON), the task travelling with them.

Adding a task means a kernel, a state and a reader here; the doors do not
change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from fastce import _accumulate, _accumulate_family, _config, tasks, validation
from fastce import kernels as K
from fastce import kernels_binary as KB
from fastce.checks import check_probabilities, check_probability_range, sum_to_one_tolerance
from fastce.errors import InputError
from fastce.metrics import Metrics
from fastce.state import State, raise_nonfinite
from fastce.task_states import MultilabelState, SoftState, note_bad_targets

TASKS = ("multiclass", "binary", "multilabel", "soft")
TASK_CHOICES = ("auto",) + TASKS


@dataclass(frozen=True)
class Batch:
    """Validated rows not yet read: the kernels' views and what goes with them."""

    view: np.ndarray  # scores as the kernels read them: (n,) or (n, C)
    eps: float  # machine epsilon of the scores' dtype (clipping, the row-sum test)
    targets: np.ndarray  # (n,) int64 class indices, or (n, C) targets
    weights: np.ndarray | None  # (n,) float64 row weights, None when unweighted
    tolerance: float = 0.0  # soft targets: the row-sum tolerance of their dtype
    groups: np.ndarray | None = None  # (n,) int64 group ids (clustered errors; see Reader.with_groups), or None
    # A check of the targets that validate left to the first read (Reader.validate_once): the kernel that reads
    # them reports what it would find, and then this raises its error.  Anything else done with the batch
    # runs it first (checked()).
    deferred_check: Callable[[], None] | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return self.view.shape[0]

    def checked(self) -> "Batch":
        """This batch with its deferred check (if any) done: raises what validate would have raised."""
        if self.deferred_check is None:
            return self
        self.deferred_check()
        return replace(self, deferred_check=None)

    def rows(self, start: int, stop: int | None = None) -> "Batch":
        self.checked()
        part = slice(start, stop)
        weights = None if self.weights is None else self.weights[part]
        groups = None if self.groups is None else self.groups[part]
        return Batch(self.view[part], self.eps, self.targets[part], weights, self.tolerance, groups)

    def same_kind(self, other: "Batch") -> bool:
        """Whether rows of ``other`` may share a kernel block with these (same score dtype and epsilons).

        The targets' dtype does not matter: the kernels read every target as
        the float64 (or int64) value it holds exactly.
        """
        return self.view.dtype == other.view.dtype and self.eps == other.eps and self.tolerance == other.tolerance

    def owned(self) -> "Batch":
        """A copy that owns its memory, held back across calls (so the caller may reuse its arrays).

        Class indices become int64 and target matrices float64: exact for
        every dtype the readers accept, and what the kernels read them as.
        """
        self.checked()
        weights = None if self.weights is None else np.array(self.weights, dtype=np.float64)
        groups = None if self.groups is None else np.array(self.groups, dtype=np.int64)
        # Every array copied: np.asarray of int64 labels (a reused buffer, a torch tensor's .numpy()) was the
        # caller's memory, and refilling it changed rows already fed.
        return Batch(np.array(self.view, copy=True), self.eps, _held_targets(self.targets, copy=True), weights,
                     self.tolerance, groups)

    def then(self, other: "Batch") -> "Batch":
        """These rows followed by those of ``other`` (of the same kind)."""
        self.checked(), other.checked()
        n, m = len(self), len(other)
        weights = None
        if self.weights is not None or other.weights is not None:
            ones = lambda w, k: np.ones(k) if w is None else np.asarray(w, dtype=np.float64)  # noqa: E731
            weights = np.concatenate([ones(self.weights, n), ones(other.weights, m)])
        if (self.groups is None) != (other.groups is None):
            raise ValueError("cannot join rows with group ids and rows without")
        groups = None
        if self.groups is not None:
            groups = np.concatenate([np.asarray(self.groups, dtype=np.int64), np.asarray(other.groups, dtype=np.int64)])
        return Batch(
            np.concatenate([self.view, other.view]),
            self.eps,
            np.concatenate([_held_targets(self.targets), _held_targets(other.targets)]),
            weights,
            self.tolerance,
            groups,
        )


def _held_targets(targets: np.ndarray, *, copy: bool = False) -> np.ndarray:
    """Class indices as int64, (n, C) targets as float64 (exact for every accepted dtype); ``copy``: never a view."""
    dtype = np.int64 if targets.ndim == 1 else np.float64
    return np.array(targets, dtype=dtype, copy=True) if copy else np.asarray(targets, dtype=dtype)


class Reader:
    """A task's validation, kernel call, checks and finalizer (see the module docstring)."""

    task = ""
    score_ndim = 2

    def __init__(self, num_classes: int, *, from_logits: bool = True, top_k=(1,), ignore_index=None,
                 precision: str = "input", top_k_stacklevel: int | None = 0):
        self.num_classes = int(num_classes)
        self.from_logits = bool(from_logits)
        self.precision = check_precision(precision)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.top_k = self._check_top_k(top_k, top_k_stacklevel)
        self._check_options()

    # -- what each task defines -------------------------------------------------------
    @property
    def block_rows(self) -> int:
        return _config.block_rows(self.num_classes)

    def _check_top_k(self, top_k, stacklevel) -> tuple:
        tasks.single_k(top_k, {"multilabel": "multi-label", "soft": "soft-target"}.get(self.task, self.task))
        return (1,)

    def _check_options(self) -> None:
        if self.ignore_index is not None:
            raise InputError(
                f"ignore_index applies to class-index labels (the multi-class task), not to the {self.task} task "
                "these shapes ask for; leave it at None.",
                argument="ignore_index",
                value=self.ignore_index,
            )

    def empty(self):
        raise NotImplementedError

    def validate(self, y, scores: validation.Scores, sample_weight, *, name: str = "scores") -> Batch:
        raise NotImplementedError

    def validate_once(self, y, scores: validation.Scores, sample_weight, *, name: str = "scores") -> Batch:
        """validate() for a batch that one read() takes right away (evaluate's door): a reader may leave to
        that read a check its kernel makes anyway as it reads (Batch.deferred_check), saving a pass over
        the inputs.  The errors are validate's, word for word, and come before any other of read's."""
        return self.validate(y, scores, sample_weight, name=name)

    def read(self, batch: Batch):
        raise NotImplementedError

    def with_groups(self, batch: Batch, groups) -> Batch:
        """``batch`` with a group id per row (clustered standard errors), or an InputError."""
        from fastce.groups import check_groups

        batch = batch.checked()  # validate's errors first, as without the deferral
        return replace(batch, groups=np.asarray(check_groups(groups, len(batch)), dtype=np.int64))

    @property
    def group_values(self) -> int:
        """How many per-row values the task's group sums hold (its means with a standard error)."""
        return len(self.empty().GROUPED_MEANS)

    def empty_grouped(self):
        """An empty state of rows read with groups (merges with the states of other grouped batches)."""
        from fastce.groups import GroupSums

        state = self.empty()
        state.clusters = GroupSums(self.group_values)
        return state

    def _group_fold(self, batch: Batch, on_values=None):
        """(group sums, ``on_rows(start, stop, values)``) for a read of ``batch``, (None, None) without groups.

        ``on_rows`` folds the per-row values the kernel wrote for rows [start,
        stop) (NaN first value: the row is not counted; see
        _accumulate_family._drive) by group (fastce.groups): the clustered
        errors cost no second pass over the scores.  ``on_values``, when
        given, receives those values instead (compare's paired sums; the
        batch has no groups then): (None, on_values).
        """
        if on_values is not None:
            if batch.groups is not None:
                raise ValueError("per-row values go to the caller or to the group sums, not both")
            return None, on_values
        if batch.groups is None:
            return None, None
        from fastce.groups import GroupSums

        clusters = GroupSums(self.group_values)

        def on_rows(start, stop, values):
            weights = None if batch.weights is None else batch.weights[start:stop]
            clusters.add_rows(batch.groups[start:stop], values, weights, self.block_rows)

        return clusters, on_rows

    def raise_now(self, state, nan_policy: str, name: str, *, previous=None) -> None:
        raise NotImplementedError

    def finalize(self, state, nan_policy: str, name: str) -> Metrics:
        raise NotImplementedError

    def state_from_dict(self, data):
        raise NotImplementedError

    # -- diagnostics (what diagnose reports beyond the metrics) --------------------------
    def diagnostics_options(self, options: dict):
        """The task's diagnostics settings from ``diagnose``'s options (a dict; absent ones take defaults)."""
        raise InputError(
            "diagnose supports multi-class, binary and multi-label targets; for soft targets fastce.evaluate reports "
            "cross-entropy = target entropy + KL divergence.",
            argument="y_true",
        )

    def empty_diagnostics(self, options):
        raise NotImplementedError

    def read_with_diagnostics(self, batch: Batch, options, *, part: bool = False):
        """(state, diagnostics state) of one read of ``batch``'s rows (merge like the states); with ``part``, the
        second is for the diagnostics state's ``absorb`` only (a small read may give its rows' values)."""
        raise NotImplementedError

    def report(self, state, diag, nan_policy: str, name: str):
        """The report of merged states, after the checks ``finalize`` makes."""
        raise NotImplementedError

    def diagnostics_from_dict(self, data):
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------
    def settings(self) -> tuple:
        """What two streams must share to merge."""
        return (self.task, self.num_classes, self.from_logits, self.top_k, self.ignore_index, self.precision)

    def may_raise(self, batch: Batch, nan_policy: str) -> bool:
        """Whether rows held back must be read now to find the errors they raise (a cheap pre-test)."""
        return True

    def _scores_shape(self, scores: validation.Scores, name: str) -> int:
        shape = tuple(scores.shape)
        if len(shape) != self.score_ndim or (self.score_ndim == 2 and shape[1] != self.num_classes):
            want = "(n,)" if self.score_ndim == 1 else f"(n, {self.num_classes})"
            raise InputError(
                f"{name} has shape {shape}, but this {self.task} evaluation takes scores of shape {want}; every "
                "batch must have the shape of the first.",
                argument=name,
                value=shape,
            )
        return shape[0]

    def _targets(self, y, n_rows: int) -> np.ndarray:
        """An (n, C) target matrix of numbers (values are checked by the kernel)."""
        return validation.target_matrix(y, (n_rows, self.num_classes), what=f"the {self.task} task needs one target per score")


class _StateReader(Reader):
    """Tasks whose statistics are a :class:`~fastce.state.State` (multi-class and binary)."""

    @property
    def group_values(self) -> int:
        return 2 + len(self.top_k)  # loss, Brier term, a hit per k (groups.row_values)

    def _check_top_k(self, top_k, stacklevel) -> tuple:
        return validation.top_k_values(top_k, self.num_classes, stacklevel=stacklevel)

    def _check_options(self) -> None:
        pass

    def empty(self) -> State:
        return State.empty(self.num_classes, self.top_k, from_logits=self.from_logits, task=self.task)

    def state_from_dict(self, data) -> State:
        state = State.from_dict(data)
        theirs = (state.task, state.num_classes, state.top_k, state.from_logits, state.ties_to_last)
        if theirs != (self.task, self.num_classes, self.top_k, self.from_logits, False):
            raise InputError(
                f"malformed fastce state: its settings {theirs} are not those of the evaluation they belong to",
                argument="state",
            )
        return state

    def diagnostics_options(self, options: dict):
        from fastce.diagnostics import DiagnosticsOptions

        return DiagnosticsOptions(num_classes=self.num_classes, **options)

    def empty_diagnostics(self, options):
        from fastce.diagnostics import DiagnosticsState

        return DiagnosticsState.empty(options)

    def diagnostics_from_dict(self, data):
        from fastce.diagnostics import DiagnosticsState

        diag = DiagnosticsState.from_dict(data)
        if diag.options.num_classes != self.num_classes:
            raise InputError("malformed fastce state: diagnostics of another class count", argument="state")
        return diag

    def report(self, state: State, diag, nan_policy: str, name: str):
        from fastce.report import Report

        if self.task == "binary":
            if not self.from_logits:
                check_probability_range(state, name)
        else:
            check_probabilities(state, name, nan_policy=nan_policy)
        return Report.from_states(state, diag, nan_policy=nan_policy, scores_name=name, stacklevel=None)

    def raise_now(self, state: State, nan_policy: str, name: str, *, previous=None) -> None:
        if nan_policy == "raise" and state.counts[K.C_NONFINITE]:
            before = 0 if previous is None else int(previous.counts[K.C_NONFINITE])
            raise_nonfinite(name, int(state.counts[K.FIRST_NONFINITE]), int(state.counts[K.C_NONFINITE]) - before,
                            from_logits=self.from_logits)
        if not self.from_logits:
            check_probability_range(state, name)

    def may_raise(self, batch: Batch, nan_policy: str) -> bool:
        view = batch.view
        if view.dtype == np.uint16:  # float16 bits
            view = view.view(np.float16)
        elif view.dtype == np.int16:  # bfloat16 bits: the high half of a float32
            view = (view.astype(np.int32) << 16).view(np.float32)
        if self.from_logits:
            return nan_policy == "raise" and not np.isfinite(view).all()
        return not np.isfinite(view).all() or view.min() < 0.0 or view.max() > 1.0


def read_scores(view, labels, weights, *, top_k, from_logits: bool, eps: float, on_rows=None,
                ignore_label: int = K.NO_LABEL, precision: str = "input", on_bad_labels=None) -> State:
    """One read of validated scores (``Scores.view``) into a fresh State.

    The kernel call shared by every door: ``eps`` is the machine epsilon of
    the caller's dtype (clipping and the sum-to-one test of probabilities);
    ``on_rows`` receives each slice's per-row diagnostics (see
    ``_accumulate.accumulate_matrix``); ``precision`` is the kernels' math
    (``"input"`` or ``"float64"``, see ``_accumulate.accumulate_matrix``);
    ``on_bad_labels`` a range check of the labels left to the kernel
    (Batch.deferred_check).
    """
    return _accumulate.accumulate_matrix(
        view,
        labels,
        top_k=top_k,
        from_logits=from_logits,
        sample_weight=weights,
        ignore_label=ignore_label,
        proba_eps=0.0 if from_logits else eps,
        # Logits: the same test finds rows that look like probabilities.
        sum_tolerance=sum_to_one_tolerance(eps),
        on_rows=on_rows,
        precision=precision,
        on_bad_labels=on_bad_labels,
    )


def _read_grouped(read, batch: Batch, reader: "Reader"):
    """``read()``, or with the batch's groups, ``read(on_rows)`` folding each row into group sums (fastce.groups)."""
    if batch.groups is None:
        return read()
    from fastce.groups import read_clustered

    return read_clustered(read, batch.groups, reader.top_k, reader.num_classes)


class MulticlassReader(_StateReader):
    """(n, C) scores, one class index per row (or one-hot rows, read as their class)."""

    task = "multiclass"

    def validate(self, y, scores, sample_weight, *, name="scores") -> Batch:
        n_rows = self._scores_shape(scores, name)
        target = validation.as_array(y, "y_true")
        if target.ndim == 2 and target.shape[1] > 1:
            if target.shape != (n_rows, self.num_classes) or tasks.target_kind(target) != tasks.ONE_HOT:
                raise InputError(
                    f"y_true has shape {target.shape}; the multiclass task takes class indices (shape ({n_rows},)) "
                    "or one-hot rows (0/1, exactly one 1 per row). For several labels per row pass "
                    "task='multilabel', for probability rows task='soft'.",
                    argument="y_true",
                    value=target.shape,
                )
            target = tasks.one_hot_labels(target)
        labels = self._labels(target, n_rows)
        return Batch(scores.view, scores.eps, labels, validation.sample_weight(sample_weight, n_rows))

    def validate_once(self, y, scores, sample_weight, *, name="scores") -> Batch:
        """Unweighted logits with class indices, of two classes, or of 3-32 classes in float32 math: the labels'
        range is checked by the kernel as it reads them (the two-class kernel, score_tasks_in_registers: a pass
        over the labels less; with int64 labels and float32 logits they are half the bytes read at C = 2, a
        sixth at C = 10); a label out of range then raises validate's error (kernels.score_blocks'
        on_bad_labels).  Weights are validated after the labels: with them, everything is checked here."""
        float32_math = _accumulate.float32_math(self.precision, scores.view.dtype)
        checked_by_kernel = self.num_classes == 2 or K.in_registers_shape(self.num_classes,
                                                                           scores.view.dtype.itemsize, float32_math)
        if sample_weight is not None or not self.from_logits or not checked_by_kernel:
            return self.validate(y, scores, sample_weight, name=name)
        n_rows = self._scores_shape(scores, name)  # validate's checks, in validate's order
        target = validation.as_array(y, "y_true")
        if target.ndim != 1:
            return self.validate(y, scores, sample_weight, name=name)
        labels = self._labels(target, n_rows, check_range=False)
        if labels.dtype == np.uint64:  # the kernel reads labels as int64: 2**64 - 1 would read as -1 (ignore_index?)
            return self.validate(labels, scores, sample_weight, name=name)
        return Batch(scores.view, scores.eps, labels, None,
                     deferred_check=lambda: self._labels(labels, n_rows, check_range=True))

    def _labels(self, target, n_rows: int, *, check_range: bool = True) -> np.ndarray:
        return validation.class_indices(target, "y_true", n_rows, self.num_classes, ignore_label=self.ignore_index,
                                        check_range=check_range)

    def read(self, batch: Batch) -> State:
        if batch.groups is not None:
            batch = batch.checked()

        def read(on_rows=None):
            # A deferred check (validate_once) runs only when the two-class kernel finds a rare block, or before
            # any other kernel (kernels.score_blocks).
            return read_scores(batch.view, batch.targets, batch.weights, top_k=self.top_k,
                               from_logits=self.from_logits, eps=batch.eps, ignore_label=self.ignore_label,
                               precision=self.precision, on_rows=on_rows, on_bad_labels=batch.deferred_check)

        return _read_grouped(read, batch, self)

    @property
    def ignore_label(self) -> int:
        """``ignore_index`` as the kernels take it (a label no row has when there is none)."""
        return K.NO_LABEL if self.ignore_index is None else self.ignore_index

    def finalize(self, state: State, nan_policy: str, name: str) -> Metrics:
        check_probabilities(state, name, nan_policy=nan_policy)
        return state.finalize(nan_policy, scores_name=name, stacklevel=None)

    def read_with_diagnostics(self, batch: Batch, options, *, part: bool = False):
        from fastce.diagnostics import read_with_diagnostics

        batch = batch.checked()  # validate's errors first, as without the deferral

        def read(on_rows=None):
            return read_with_diagnostics(batch.view, batch.targets, batch.weights, top_k=self.top_k,
                                         from_logits=self.from_logits, eps=batch.eps, options=options,
                                         ignore_label=self.ignore_label, precision=self.precision, on_rows=on_rows,
                                         fold_later=part)

        return _read_grouped(read, batch, self)


class BinaryReader(_StateReader):
    """(n,) scores of class 1 (logits or probabilities) and 0/1 labels."""

    task = "binary"
    score_ndim = 1

    def __init__(self, num_classes: int = 2, **options):
        if num_classes != 2:
            raise InputError(f"the binary task has two classes, not {num_classes}.", argument="num_classes",
                             value=num_classes)
        super().__init__(2, **options)

    @property
    def block_rows(self) -> int:
        return _accumulate_family.binary_block_rows(self.from_logits)

    def validate(self, y, scores, sample_weight, *, name="scores") -> Batch:
        n_rows = self._scores_shape(scores, name)
        labels = self._labels(y, n_rows, check_range=True)
        return Batch(scores.view, scores.eps, labels, validation.sample_weight(sample_weight, n_rows))

    def validate_once(self, y, scores, sample_weight, *, name="scores") -> Batch:
        """Unweighted logits: the labels' range (0 or 1) is checked by the logit kernel as it reads them
        (a pass over the labels less: they are two thirds of the bytes read with int64 labels and float32
        logits); a label out of range then raises validate's error.  Weights are validated after the
        labels: with them, everything is checked here, so that the first error stays the first."""
        if sample_weight is not None or not self.from_logits:
            return self.validate(y, scores, sample_weight, name=name)
        n_rows = self._scores_shape(scores, name)
        labels = self._labels(y, n_rows, check_range=False)
        return Batch(scores.view, scores.eps, labels, None,
                     deferred_check=lambda: self._labels(labels, n_rows, check_range=True))

    def _labels(self, y, n_rows: int, *, check_range: bool) -> np.ndarray:
        return validation.class_indices(y, "y_true", n_rows, 2, ignore_label=self.ignore_index,
                                        note="1-D scores are a binary task: labels are 0 or 1", check_range=check_range,
                                        ignorable=False, one_score_a_row=True)  # the binary task: no ignore_index

    def _check_options(self) -> None:
        Reader._check_options(self)  # the binary kernels have no ignored label

    def read(self, batch: Batch) -> State:
        if batch.groups is not None:
            return self._read_grouped(batch.checked())
        if self.from_logits:
            # A deferred check (validate_once) runs only when the kernel saw a label other than 0 and 1.
            return _accumulate_family.accumulate_binary_logits(batch.view, batch.targets, top_k=self.top_k,
                                                               sample_weight=batch.weights, precision=self.precision,
                                                               on_bad_labels=batch.deferred_check)
        batch = batch.checked()
        return _accumulate.accumulate_binary_proba(batch.view, batch.targets, top_k=self.top_k,
                                                   sample_weight=batch.weights, proba_eps=batch.eps)

    def _read_grouped(self, batch: Batch) -> State:
        """With groups=: one read by compare's binary kernel with a single model.

        That kernel runs evaluate's binary loop (the State is evaluate's, bit
        for bit) and takes each row's loss, Brier term and rank from the same
        loop, in parallel, for the group sums: a second pass over the rows
        cost ~10x the plain read at 16M rows.
        """
        from fastce.compare import ComparisonState

        one = ComparisonState.empty(("scores",), 2, self.top_k, from_logits=self.from_logits, confident_below=0.01,
                                    grouped=True, task="binary")
        one.read([batch.view], [batch.eps], batch.targets, batch.weights, batch.groups, precision=self.precision)
        state = one.states["scores"]
        state.clusters = one.clusters["scores"]
        return state

    def finalize(self, state: State, nan_policy: str, name: str) -> Metrics:
        if not self.from_logits:
            check_probability_range(state, name)
        return state.finalize(nan_policy, scores_name=name, stacklevel=None)

    def read_with_diagnostics(self, batch: Batch, options, *, part: bool = False):
        """The binary State, and the multi-class diagnostics of the rows' two-column equivalent (a state, ``part``
        or not: two classes make it small).

        See ``fastce.diagnose_tasks``: [0, z] for logits, [1 - p, p] for
        probabilities, built a bounded chunk at a time (whole blocks of the
        two-column kernel, so the diagnostics merge exactly across calls).
        """
        from fastce.diagnose_tasks import binary_diagnostics

        batch = batch.checked()
        diag = binary_diagnostics(batch.view, batch.eps, batch.targets, batch.weights, top_k=self.top_k,
                                  from_logits=self.from_logits, options=options)
        return self.read(batch), diag


class MultilabelReader(Reader):
    """(n, C) per-element logits (sigmoid) or probabilities and an (n, C) 0/1 (or soft) indicator target."""

    task = "multilabel"

    def empty(self) -> MultilabelState:
        return MultilabelState.empty(self.num_classes, from_logits=self.from_logits)

    def validate(self, y, scores, sample_weight, *, name="scores") -> Batch:
        n_rows = self._scores_shape(scores, name)
        targets = self._targets(y, n_rows)
        return Batch(scores.view, scores.eps, targets, validation.sample_weight(sample_weight, n_rows))

    def read(self, batch: Batch, on_values=None) -> MultilabelState:
        """One read of ``batch``; ``on_values(start, stop, values)``: see _group_fold."""
        clusters, on_rows = self._group_fold(batch, on_values)
        sums = _accumulate_family.accumulate_bce(batch.view, batch.targets, from_logits=self.from_logits,
                                                 row_weight=batch.weights, on_rows=on_rows,
                                                 float32_math=self._float32_math(batch))
        note_bad_targets(sums, batch.targets, soft=False)  # for the error, raised later, to name the value
        return MultilabelState(self.num_classes, self.from_logits, sums, clusters)

    def _float32_math(self, batch: Batch):
        return _accumulate_family.multilabel_float32_math(batch.view, self.from_logits, self.precision)

    def raise_now(self, state, nan_policy, name, *, previous=None) -> None:
        state.raise_now(nan_policy, name)

    def finalize(self, state, nan_policy, name) -> Metrics:
        return state.finalize(nan_policy, scores_name=name)

    def state_from_dict(self, data) -> MultilabelState:
        return _same_settings(MultilabelState.from_dict(data), self)

    def diagnostics_options(self, options: dict):
        """Per-label tables, calibration over elements, worst rows: ``hist_bins`` and ``dense_confusion_max`` do not apply."""
        from fastce.multilabel_report import MultilabelOptions

        kept = {key: options[key] for key in ("n_bins", "worst_k", "confident_below") if key in options}
        return MultilabelOptions(num_labels=self.num_classes, **kept)

    def empty_diagnostics(self, options):
        from fastce.multilabel_report import MultilabelDiagnosticsState

        return MultilabelDiagnosticsState.empty(options)

    def read_with_diagnostics(self, batch: Batch, options, *, part: bool = False):
        """The state and the multi-label diagnostics (a state, ``part`` or not: O(C))."""
        from fastce.multilabel_report import read_multilabel_diagnostics

        from fastce.task_states import check_bce_sums

        weights = np.empty(0) if batch.weights is None else batch.weights
        # The state first, and its refusal of bad targets or probabilities: a NaN target made the diagnostics'
        # sums NaN, refused as losses overflowing float64 ("scores of magnitude near 1e304").
        state = self.read(batch)
        check_bce_sums(state.sums, from_logits=self.from_logits, name="logits" if self.from_logits else "proba",
                       target_name="y_true")
        diag = read_multilabel_diagnostics(batch.view, batch.targets, weights, from_logits=self.from_logits,
                                           options=options, float32_math=self._float32_math(batch))
        return state, diag

    def report(self, state, diag, nan_policy: str, name: str):
        from fastce.multilabel_report import MultilabelReport

        # Soft targets (0 < y < 1) can give an infinite loss to a right answer (see loss_split_of).
        return MultilabelReport.from_state(self.finalize(state, nan_policy, name), diag,
                                           soft_targets=state.sums.count(KB.N_SOFT) > 0)

    def diagnostics_from_dict(self, data):
        from fastce.multilabel_report import MultilabelDiagnosticsState

        diag = MultilabelDiagnosticsState.from_dict(data)
        if diag.options.num_labels != self.num_classes:
            raise InputError("malformed fastce state: diagnostics of another label count", argument="state")
        return diag


class SoftReader(Reader):
    """(n, C) logits and (n, C) target rows that are probability distributions."""

    task = "soft"

    def _check_options(self) -> None:
        super()._check_options()
        if not self.from_logits:
            raise InputError(
                "soft (probability) targets are scored against logits; pass the model's raw scores as logits=.",
                argument="proba",
            )

    def empty(self) -> SoftState:
        return SoftState.empty(self.num_classes, from_logits=True)

    def validate(self, y, scores, sample_weight, *, name="scores") -> Batch:
        n_rows = self._scores_shape(scores, name)
        if sample_weight is not None:
            raise InputError(
                "sample_weight is not supported with soft targets yet; fold the weights into the target rows' "
                "importance or evaluate the rows separately.",
                argument="sample_weight",
            )
        targets = self._targets(y, n_rows)
        tolerance = 1e-8 + math.sqrt(validation.float_eps(targets.dtype))
        return Batch(scores.view, scores.eps, targets, None, tolerance)

    def read(self, batch: Batch, on_values=None) -> SoftState:
        """One read of ``batch``; ``on_values(start, stop, values)``: see _group_fold."""
        clusters, on_rows = self._group_fold(batch, on_values)
        sums = _accumulate_family.accumulate_soft(batch.view, targets=batch.targets, sum_tolerance=batch.tolerance,
                                                  on_rows=on_rows, precision=self.precision)
        note_bad_targets(sums, batch.targets, soft=True)  # for the error, raised later, to name the value
        return SoftState(self.num_classes, True, sums, clusters)

    def raise_now(self, state, nan_policy, name, *, previous=None) -> None:
        state.raise_now(nan_policy, name)

    def finalize(self, state, nan_policy, name) -> Metrics:
        return state.finalize(nan_policy, scores_name=name)

    def state_from_dict(self, data) -> SoftState:
        return _same_settings(SoftState.from_dict(data), self)


def _same_settings(state, reader: Reader):
    if (state.num_classes, state.from_logits) != (reader.num_classes, reader.from_logits):
        raise InputError(
            f"malformed fastce state: {state.task} state for {state.num_classes} classes (from_logits="
            f"{state.from_logits}) in an evaluation of {reader.num_classes} (from_logits={reader.from_logits})",
            argument="state",
        )
    return state


_READERS = {"multiclass": MulticlassReader, "binary": BinaryReader, "multilabel": MultilabelReader,
            "soft": SoftReader}


def reader_for_scores(task: str, scores_shape, name: str, **options) -> Reader:
    """The reader of ``task`` for scores of ``scores_shape`` (1-D: the binary task; (N, C): the others)."""
    if (task == "binary") != (len(scores_shape) == 1):
        want = "1-D scores of class 1, shape (n,)" if task == "binary" else "scores of shape (n, classes)"
        other = "binary" if len(scores_shape) == 1 else "multiclass, multilabel or soft"
        raise InputError(
            f"task={task!r} takes {want}, but {name} has shape {tuple(scores_shape)} (a {other} task); pass the "
            "scores that task reads, or leave task='auto' to let the shapes decide.",
            argument="task",
            value=task,
        )
    return make_reader(task, 2 if len(scores_shape) == 1 else scores_shape[1], **options)


def make_reader(task: str, num_classes: int, **options) -> Reader:
    """The reader of ``task`` (one of ``TASKS``); ``options``: from_logits, top_k, ignore_index."""
    if task not in _READERS:
        raise InputError(f"task={task!r} is not one of {TASK_CHOICES}.", argument="task", value=task)
    if "ignore_index" in options:
        options["ignore_index"] = validation.check_ignore_index(options["ignore_index"])
    return _READERS[task](num_classes, **options)


PRECISIONS = ("input", "float64")


def check_precision(precision) -> str:
    """"input" (float16/bfloat16/float32 scores in float32 math, float64 in float64) or "float64" (float64 math)."""
    if precision not in PRECISIONS:
        raise InputError(
            f"precision={precision!r} is not one of {PRECISIONS}: \"input\" computes float16, bfloat16 and float32 "
            "scores with float32 math (each row's loss within 4 float32 ulp), \"float64\" computes every input with "
            "float64 math.",
            argument="precision",
            value=precision,
        )
    return precision


def check_task(task) -> str:
    if task not in TASK_CHOICES:
        raise InputError(f"task={task!r} is not one of {TASK_CHOICES}.", argument="task", value=task)
    return task
