"""Streaming evaluation: feed rows batch by batch, merge partial results.

:class:`Evaluator` gives the numbers of one :func:`fastce.evaluate` over all
the rows it was fed, whatever the batch sizes, for every task (multi-class,
binary, multi-label, soft targets), in bounded memory: it keeps the task's
state (exact sums, a few counters) plus at most one partial block of rows.

Why the partial block: the kernels sum the rows of a block in float64 and
add the block sums exactly, so the result is exact for a given cut of the
rows into blocks.  ``evaluate`` cuts at multiples of the task's
``block_rows`` from row 0; the Evaluator runs the kernels only on whole
blocks aligned the same way and holds back the rows of an unfinished block
until the next ``update`` (or ``result``).  Any split of the rows into
``update`` calls therefore gives results bit-identical to one ``evaluate``
over all the rows.

The Evaluator knows no task: it talks to the task's reader
(``fastce.readers``), which validates, reads and finalizes.
"""

from __future__ import annotations

import base64
import functools
import threading
from dataclasses import replace

import numpy as np

from fastce import readers, tasks, validation
from fastce.errors import InputError, positions_named, with_row_named
from fastce.metrics import Metrics
from fastce.readers import Batch
from fastce.state import MAX_NUM_CLASSES, State, check_nan_policy, malformed_reason

EVALUATOR_FORMAT = "fastce.evaluator/2"
_FORMAT_1 = "fastce.evaluator/1"  # multi-class only, without "settings": still read
_SCORES = "scores"


class _Lockable:
    """An object with a lock of its own (``_lock``, see _one_thread_at_a_time) that still copies and pickles:
    the lock is left out and made anew."""

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()


def _with_the_other(method):
    """A merge under both objects' locks, taken in one order (by id) whoever merges whom: ``other`` read while
    another thread updates it could pair its new state with its old pending rows."""

    @functools.wraps(method)
    def locked(self, other, *args, **kwargs):
        lock_b = getattr(other, "_lock", None)
        if lock_b is None:
            with self._lock:
                return method(self, other, *args, **kwargs)
        first, second = (self._lock, lock_b) if id(self) <= id(other) else (lock_b, self._lock)
        with first, second:
            return method(self, other, *args, **kwargs)

    return locked


def _one_thread_at_a_time(method):
    """The method under the Evaluator's lock: an update reads the state, runs the kernels with the GIL released
    and stores the result, so two threads' updates at once kept only one of them (rows lost without a word)."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked
# Kernel views the pending rows may have (see validation.scores).
_VIEW_DTYPES = ("<f4", "<f8", "<u2", "<i2")
# The machine epsilon that goes with each view (float32, float64 and integer
# inputs, float16, bfloat16): a state claiming another one was tampered with.
_VIEW_EPS = {"<f4": 2.0**-23, "<f8": 2.0**-52, "<u2": 2.0**-10, "<i2": 2.0**-7}
_INT64 = np.iinfo(np.int64)


def _b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def _unb64(text: str, dtype: str, count: int) -> np.ndarray:
    if not isinstance(text, str):
        raise ValueError(f"expected base64 text, got {type(text).__name__}")
    expected = 4 * -(-count * np.dtype(dtype).itemsize // 3)
    if len(text) != expected:  # checked before decoding: a tampered length allocates nothing
        raise ValueError(f"expected {count} values of {dtype} ({expected} base64 characters), found {len(text)} characters")
    raw = base64.b64decode(text.encode("ascii", errors="replace"), validate=True)
    array = np.frombuffer(raw, dtype=dtype)
    if array.size != count:
        raise ValueError(f"expected {count} values of {dtype}, found {array.size}")
    return array.astype(np.dtype(dtype).newbyteorder("="))


class Evaluator(_Lockable):
    """Every metric of :func:`fastce.evaluate` over rows that arrive in batches, for every task.

    Parameters
    ----------
    num_classes : int, optional
        Number of columns of every score batch (2 for 1-D binary scores).
        None: taken from the first batch.
    task : {"auto", "multiclass", "binary", "multilabel", "soft"}, default "auto"
        "auto" infers the task from the first non-empty ``update`` by
        ``evaluate``'s rules (1-D scores: binary; (n, C) scores with class
        indices or one-hot rows: multi-class; with an (n, C) 0/1 indicator:
        multi-label; with probability rows: soft) and then requires every
        later batch to agree (an error names both otherwise).
    from_logits : bool, default True
        Whether batches hold logits (raw scores) or probabilities, as the
        ``logits=`` / ``proba=`` arguments of :func:`fastce.evaluate`.
    top_k : int or sequence of int, default (1,)
        The k of the top-k accuracies to report (1 is always included;
        multi-class and binary only).
    nan_policy : {"raise", "omit", "propagate"}, default "raise"
        As in :func:`fastce.evaluate`.  With ``"raise"``, an ``update`` whose
        batch holds a NaN/+inf row raises at once, naming the row's global
        number (rows are numbered from 0 across all updates).
    diagnostics : bool or dict, default False
        Also keep what :func:`fastce.diagnose` reports (``report()``), for
        the multi-class, binary and multi-label tasks; a dict passes
        ``diagnose``'s options.
    ignore_index : int, optional
        A label value whose rows are left out (class indices only), as
        :func:`fastce.evaluate`.
    precision : {"input", "float64"}, default "input"
        The math of the scores, as :func:`fastce.evaluate`.
    groups : bool, default False
        Whether every ``update`` gives a group id per row (``groups=``): the
        standard errors are then clustered, as :func:`fastce.evaluate` with
        ``groups=`` (every task; memory grows with the number of groups).

    Notes
    -----
    *Exactness.*  ``result()`` is bit-identical to ``fastce.evaluate`` over
    the concatenation of all the batches, for any split of the rows into
    ``update`` calls, provided the batches share one dtype (a change of
    dtype closes the current block early; probabilities are clipped with
    each batch's own epsilon).  ``merge`` is exact too: the merged
    Evaluator is bit-identical to one that saw both sets of rows when
    ``self`` has seen a multiple of ``block_rows`` rows (or ``other`` has
    seen less than one block); otherwise one block is cut short at the
    seam, which changes the result by less than 1e-12 relatively (all
    summed terms are non-negative and a block holds at most
    ``fastce._config.MAX_BLOCK_ROWS`` rows).
    Counts (``n``, omitted rows) are always exact.

    *Errors.*  ``update`` validates each batch as ``evaluate`` does and is
    all-or-nothing: a batch that raises leaves the Evaluator unchanged.
    Row numbers in error messages and in ``InputError.row`` are global.

    *Memory.*  O(top_k) (O(1) for the element-wise tasks) for the sums,
    plus O(groups) with ``groups=True``, plus fewer than one block of
    pending rows (at most 2**15 scores), whatever the number of rows.

    Examples
    --------
    >>> import numpy as np, fastce
    >>> rng = np.random.default_rng(0)
    >>> logits = rng.normal(size=(1000, 10)).astype(np.float32)
    >>> y = rng.integers(0, 10, size=1000)
    >>> ev = fastce.Evaluator(10, top_k=(1, 5))
    >>> for start in range(0, 1000, 300):
    ...     ev.update(y[start:start + 300], logits[start:start + 300])
    >>> ev.result() == fastce.evaluate(y, logits=logits, top_k=(1, 5))
    True

    Any task, inferred from the first batch (here binary: 1-D logits):

    >>> z, yb = rng.normal(size=1000), rng.integers(0, 2, size=1000)
    >>> eb = fastce.Evaluator()
    >>> eb.update(yb[:400], z[:400]); eb.update(yb[400:], z[400:])
    >>> eb.task, eb.result() == fastce.evaluate(yb, logits=z)
    ('binary', True)
    """

    # The argument the errors name: "scores" (update's), or the door's ("logits", "proba") when evaluate or
    # diagnose feed it (..., C) sequences that do not flatten in place.
    _scores_name = _SCORES

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_undo", None)  # (see _commit: the last update's, for its own restore only)
        if state.get("_diag") is not None:  # added to in place (see _commit): a copy (copy.copy) gets its own
            state["_diag"] = state["_diag"].copy()
        return state

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        task: str = "auto",
        from_logits: bool = True,
        top_k=(1,),
        nan_policy: str = "raise",
        diagnostics=False,
        ignore_index: int | None = None,
        precision: str = "input",
        groups: bool = False,
        _warn_top_k: bool = True,  # False: settings read back from a state, warned about when it was made
    ):
        if num_classes is not None and (
            isinstance(num_classes, (bool, np.bool_))
            or not isinstance(num_classes, (int, np.integer))
            or not 1 <= num_classes <= MAX_NUM_CLASSES  # the bound its state files are read back with
        ):
            raise InputError(
                f"num_classes must be a positive int, at most {MAX_NUM_CLASSES}, or None (taken from the first "
                f"batch); got {num_classes!r}.",
                argument="num_classes",
                value=num_classes,
            )
        check_nan_policy(nan_policy)
        self._requested_task = readers.check_task(task)
        self._num_classes = None if num_classes is None else int(num_classes)
        self._from_logits = bool(from_logits)
        self._top_k_arg = top_k
        self._ignore_index = validation.check_ignore_index(ignore_index)
        self._precision = readers.check_precision(precision)
        if not isinstance(groups, (bool, np.bool_)):
            raise InputError(f"groups must be True or False here (the ids go to update()); got {groups!r}.",
                             argument="groups")
        self._groups = bool(groups)
        self._nan_policy = nan_policy
        self._warn_top_k = _warn_top_k
        self._diag_arg = _check_diagnostics(diagnostics)
        self._reader: readers.Reader | None = None
        self._provisional = False  # a multi-class guess of task="auto", revised by the first batch
        self._lock = threading.RLock()  # see _one_thread_at_a_time
        self._state = None
        self._pending: Batch | None = None
        self._diag = None
        if self._num_classes is not None:
            self._settle("multiclass" if task == "auto" else task, self._num_classes)
            self._provisional = task == "auto"

    # -- the task, decided once ------------------------------------------------------------
    def _settle(self, task: str, num_classes: int) -> None:
        self._reader = readers.make_reader(
            task, num_classes, from_logits=self._from_logits, top_k=self._top_k_arg, ignore_index=self._ignore_index,
            precision=self._precision,
            top_k_stacklevel=0 if self._warn_top_k else None,
        )
        self._num_classes = self._reader.num_classes
        self._state = self._reader.empty()
        self._diag = None
        if self._diag_arg is not None:
            self._diag = self._reader.empty_diagnostics(self._reader.diagnostics_options(self._diag_arg))

    # -- settings and progress -------------------------------------------------
    @property
    def task(self) -> str:
        """The task: as given, or inferred from the first batch ("auto" until then)."""
        return self._reader.task if self._reader is not None else self._requested_task

    @property
    def num_classes(self) -> int | None:
        return self._num_classes

    @property
    def from_logits(self) -> bool:
        return self._from_logits

    @property
    def top_k(self) -> tuple:
        if self._reader is not None:
            return self._reader.top_k
        ks = self._top_k_arg if not isinstance(self._top_k_arg, (int, np.integer)) else (self._top_k_arg,)
        return tuple(sorted({1, *(int(k) for k in ks)}))

    @property
    def nan_policy(self) -> str:
        return self._nan_policy

    @property
    def ignore_index(self) -> int | None:
        return self._ignore_index

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def block_rows(self) -> int:
        """Rows per kernel block: splits at multiples of it never hold rows back (known once the task is)."""
        if self._reader is None:
            raise InputError("the block size is known once the task is: call update() first, or pass task=.")
        return self._reader.block_rows

    @property
    def rows_seen(self) -> int:
        """Rows fed so far (the global number of the next row)."""
        held = len(self._pending) if self._pending is not None else 0
        return (self._state.rows_seen if self._state is not None else 0) + held

    def __repr__(self) -> str:
        return (
            f"Evaluator(num_classes={self.num_classes}, task={self.task!r}, from_logits={self.from_logits}, "
            f"top_k={self.top_k}, nan_policy={self.nan_policy!r}{', groups=True' if self._groups else ''}; "
            f"rows_seen={self.rows_seen})"
        )

    def _settings(self) -> tuple:
        # The diagnostics options count as a setting whatever either side has seen; merge compares
        # the first seven entries (all but the diagnostics' and the reader's) even when a side's task is still
        # open, and the diagnostics' by _same_diagnostics: an open side's options (all of them) against a
        # settled side's (its task's).  Compared as they were, a side that had seen rows never merged with a
        # side of the same settings that had not.
        diagnostics = None
        if self._diag is not None:
            options = self._diag.options
            diagnostics = {name: getattr(options, name) for name in sorted(_DIAGNOSTICS_OPTIONS)
                           if hasattr(options, name)}
        elif self._diag_arg is not None:
            diagnostics = _diagnostics_request(self._diag_arg)
        reader = None if self._reader is None else self._reader.settings()
        return (self._requested_task, self._from_logits, self.top_k, self._nan_policy, self._ignore_index,
                self._precision, self._groups, diagnostics, reader)

    # -- feeding -----------------------------------------------------------------
    @_one_thread_at_a_time
    def update(self, y_true, scores, sample_weight=None, groups=None) -> None:
        """Add a batch of rows.

        Parameters
        ----------
        y_true : array-like, shape (n,) or (n, num_classes)
            Class indices 0..num_classes-1 (0/1 for 1-D binary scores), or
            an (n, C) target: one-hot rows, a multi-label indicator, soft
            targets, as :func:`fastce.evaluate`.
        scores : array-like of float, shape (n, num_classes) or (n,)
            Logits or probabilities (as chosen at construction); float16,
            bfloat16, float32 or float64 are read without a copy.  A batch
            of zero rows is accepted and changes nothing.
        sample_weight : array-like of float, shape (n,), optional
            Non-negative finite row weights (rows of batches given without
            weights weigh 1).
        groups : array-like of int, shape (n,)
            A group id per row, with ``Evaluator(..., groups=True)`` only
            (and then in every batch).

        Sequences: scores of shape (..., C) with targets (...) (or (..., C)),
        class axis last, every position a row, as :func:`fastce.evaluate`.
        """
        if self._groups and groups is None:
            raise InputError("this Evaluator was created with groups=True: pass groups= to every update.",
                             argument="groups")
        if not self._groups and groups is not None:
            raise InputError("pass groups=True when creating the Evaluator to use groups=.", argument="groups")
        array = validation.as_array(scores, self._scores_name)
        if array.ndim > 2:
            from fastce.api import feed_slabs, flat_positions, per_position

            target, flat, weights = flat_positions(y_true, array, sample_weight, self._scores_name)
            groups = per_position(groups, array.shape, "groups")
            with positions_named(array.shape[:-1], first_row=self.rows_seen, stream=True):
                if flat is not None:
                    return self.update(target, flat, weights, groups)
                saved = self._snapshot(own_diagnostics=True)  # the slabs' updates add to the diagnostics in place
                try:
                    feed_slabs(self, target, array, weights, groups)
                except BaseException:
                    self._restore(saved)  # all or nothing, as for any batch
                    raise
            return None
        saved = self._snapshot()
        rows_seen = self.rows_seen
        try:
            try:
                batch = self._validate(y_true, scores, sample_weight, groups)
            except InputError as exc:  # validation numbers rows within the batch
                raise _globalize(exc, rows_seen) from None
            if batch is not None:
                self._commit(*self._consume(batch))  # its errors number rows globally
                self._provisional = False
        except BaseException:
            # All or nothing: a batch that raises leaves the Evaluator (its task included) as it was.
            self._restore(saved)
            raise

    def _snapshot(self, own_diagnostics: bool = False) -> tuple:
        # States and pending rows are never changed in place, so references are a snapshot; the diagnostics state
        # is, by _commit, the last step of an update (after everything that may raise but an interrupt, which
        # _restore undoes with _commit's record): a snapshot taken across several updates copies it
        # (``own_diagnostics``).
        self._undo = None
        diag = self._diag
        if own_diagnostics and diag is not None:
            self._diag = diag.copy()
        return (self._reader, self._provisional, self._num_classes, self._state, diag, self._pending)

    def _restore(self, saved: tuple) -> None:
        undo = getattr(self, "_undo", None)
        if undo is not None:  # an interrupt (Ctrl-C, SIGTERM) during or after _commit's absorb
            self._diag.restore(undo)
            self._undo = None
        self._reader, self._provisional, self._num_classes, self._state, self._diag, self._pending = saved

    def _validate(self, y_true, scores, sample_weight, groups):
        array = validation.as_array(scores, self._scores_name)
        if array.shape[:1] == (0,) and array.ndim in (1, 2):
            labels = validation.as_array(y_true, "y_true")
            if labels.size != 0:
                raise InputError(
                    f"y_true has {labels.size} values but the scores have 0 rows; they must have one label per row.",
                    argument="y_true",
                )
            return None
        undecided = self._undecided()
        binary_possible = (undecided and self._num_classes in (None, 2)) or self.task == "binary"
        ndim = (1, 2) if binary_possible else (2,)
        checked = validation.scores(array, self._scores_name, ndim=ndim, labels=y_true,
                                    call="Evaluator.update(y_true, scores)")
        num_classes = 2 if checked.ndim == 1 else checked.shape[1]
        if undecided:
            task = self._requested_task
            if task == "auto":
                task = tasks.infer_task(y_true, checked.shape)
            if self._num_classes is not None and num_classes != self._num_classes:
                raise InputError(
                    f"{self._scores_name} has shape {tuple(checked.shape)} ({num_classes} classes) but this Evaluator "
                    f"was created with num_classes={self._num_classes}; every batch must have one column per class.",
                    argument=self._scores_name,
                    value=checked.shape,
                )
            if self._reader is None or self._reader.task != task:
                self._settle(task, num_classes)
        elif self._requested_task == "auto":
            tasks.batch_task(y_true, checked.shape, self._reader.task)
        if checked.ndim == 2 and checked.shape[1] != self._num_classes:
            raise InputError(
                f"{self._scores_name} has {checked.shape[1]} columns but this Evaluator was created with num_classes="
                f"{self._num_classes}; every batch must have one column per class.",
                argument=self._scores_name,
                value=checked.shape,
            )
        batch = self._reader.validate(y_true, checked, sample_weight, name=self._scores_name)
        return batch if groups is None else self._reader.with_groups(batch, groups)

    def _read_both(self, batch: Batch, part: bool = False) -> "_Both":
        if self._diag is None:
            return _Both(self._reader.read(batch), None)
        return _Both(*self._reader.read_with_diagnostics(batch, self._diag.options, part=part))

    def _both(self) -> "_Both":
        return _Both(self._state, self._diag)

    def _consume(self, batch: Batch):
        """(new state, the diagnostics' parts, new pending) after this batch (see _commit); raises without side
        effects."""
        br = self._reader.block_rows
        n = len(batch)
        state = self._state
        parts = []  # each read's diagnostics, for the diagnostics state's absorb

        def read(rows: Batch):
            nonlocal state
            both = self._read_both(rows, part=True)
            state = state.merge(both.state)
            parts.append(both.diag)

        pending = self._pending
        offset = 0
        if pending is not None and not pending.same_kind(batch):
            read(pending)  # dtype changed: close the block early
            pending = None
        if pending is not None:
            take = min(n, br - len(pending))
            joined = pending.then(batch.rows(0, take))
            offset = take
            if len(joined) == br:
                read(joined)
                pending = None
            else:
                pending = joined
        whole = (n - offset) // br * br
        if whole:
            read(batch.rows(offset, offset + whole))
            offset += whole
        new_rows = n - offset  # rows of this batch left for a later block
        if offset < n:
            assert pending is None
            pending = batch.rows(offset).owned()
        elif pending is not None:
            new_rows = n  # the whole batch joined the unfinished block
        self._check(state, pending, new_rows)
        return state, parts, pending

    def _commit(self, state, parts, pending) -> None:
        """Take a batch's (state, parts, pending) from _consume: the diagnostics state adds the parts in place
        (its absorb; all or nothing), never handed out as it is (diagnostics_state gives a copy)."""
        if self._diag is not None and parts:
            # What absorb changes, as it is now: an interrupt (KeyboardInterrupt, the command's SIGTERM) can land
            # anywhere in it or after it, and _restore must then give back the diagnostics of the state it
            # restores (a half-absorbed state, checkpointed by the command, could not be resumed).
            self._undo = self._diag.undo_record(parts)
            self._diag.absorb(parts)
        self._state, self._pending = state, pending

    def _check(self, state, pending, new_rows: int) -> None:
        """Errors the batch must raise now: non-finite rows under "raise", bad probabilities or targets."""
        probe = state
        reader = self._reader
        if pending is not None and new_rows:
            held = len(pending) - new_rows
            new = pending.rows(held)
            if reader.may_raise(new, self._nan_policy):
                # Pending rows are read for real later; read the new ones now only to check them
                # (their counters: no group sums, which a probe of rows out of their blocks would not keep).
                gap = reader.empty()
                gap.rows_seen = held
                probe = probe.without_groups().merge(gap.merge(reader.read(replace(new, groups=None))))
        reader.raise_now(probe, self._nan_policy, self._scores_name, previous=self._state)

    # -- combining -------------------------------------------------------------
    @_with_the_other
    def merge(self, other: Evaluator) -> Evaluator:
        """Add the rows of ``other`` after the rows of ``self`` (in place); returns ``self``.

        ``other`` is left unchanged.  Both must have the same task,
        num_classes, from_logits, top_k, nan_policy, ignore_index and
        diagnostics options (compared even when a side has seen no rows; a
        side whose task is still to be inferred takes the other's).  See the
        class notes on exactness.
        """
        if not isinstance(other, Evaluator):
            raise TypeError(f"can only merge another Evaluator, not {type(other).__name__}")
        mine, theirs = self._settings(), other._settings()
        undecided = self._undecided() or other._undecided()
        if mine[:7] != theirs[:7] or not _same_diagnostics(mine[7], theirs[7]) or (
            not undecided and mine[8] != theirs[8]
        ) or (
            undecided and None not in (self._num_classes, other._num_classes)
            and self._num_classes != other._num_classes
        ):
            raise InputError(
                "cannot merge Evaluators with different settings (task, num_classes, from_logits, top_k, ignore_index, "
                f"precision, nan_policy, groups, diagnostics): {mine} vs {theirs}",
                argument="other",
            )
        if other.rows_seen == 0:
            return self
        saved = self._snapshot()
        try:
            return self._merge_rows(other)
        except BaseException:  # all or nothing, as update
            self._restore(saved)
            raise

    def _merge_rows(self, other: Evaluator) -> Evaluator:
        if self._undecided():
            if self._reader is None or self._reader.task != other._reader.task:
                self._settle(other._reader.task, other._num_classes)
            self._provisional = False
        other_state, other_pending = other._state, other._pending
        if other_state.rows_seen == 0:
            if other_pending is not None:  # fewer than one block: feed its rows as a batch
                self._commit(*self._consume(other_pending))
            return self
        both = self._both()
        if self._pending is not None:
            both = both.merge(self._read_both(self._pending))
        both = both.merge(other._both())
        self._state, self._diag = both.state, both.diag
        self._pending = other_pending  # never mutated in place, so sharing is safe
        return self

    def _undecided(self) -> bool:
        """Whether the task is still open: never given, and no row seen to infer it from."""
        return self._reader is None or (self._provisional and self.rows_seen == 0)

    # -- reading -----------------------------------------------------------------
    @_one_thread_at_a_time
    def state(self):
        """The task's state of every row fed so far (the unfinished block included)."""
        self._require_rows()
        if self._pending is None:
            return self._state.merge(self._reader.empty())
        return self._state.merge(self._reader.read(self._pending))

    @_one_thread_at_a_time
    def diagnostics_state(self):
        """The mergeable :class:`~fastce.diagnostics.DiagnosticsState` of every row fed so far."""
        if self._diag_arg is None:
            raise InputError("this Evaluator was created without diagnostics=True.", argument="diagnostics")
        self._require_rows()
        if self._pending is None:
            return self._diag.copy()  # the Evaluator's own is added to in place (see _commit)
        return self._both().merge(self._read_both(self._pending)).diag

    @_one_thread_at_a_time
    def report(self):
        """:class:`~fastce.report.Report` over every row fed so far: what ``fastce.diagnose`` returns.

        Needs ``Evaluator(..., diagnostics=True)``.  Equal to ``fastce.diagnose``
        over all the rows, bit for bit, for any split into ``update`` calls
        (and merges, under the conditions of the class notes): the binned
        sums are exact, the per-class ones exact double-doubles (see
        ``fastce.diagnostics_kernels``).
        """
        diag = self.diagnostics_state()
        return self._reader.report(self.state(), diag, self._nan_policy, self._scores_name)

    @_one_thread_at_a_time
    def result(self) -> Metrics:
        """Metrics over every row fed so far: the object ``fastce.evaluate`` returns.

        Applies ``nan_policy`` and the checks (warning about probability rows
        that do not sum to one, logits that look like probabilities) as
        ``evaluate`` does.  The Evaluator is not changed, so ``update`` may go
        on afterwards.
        """
        return self._finalize(self._scores_name)

    def _finalize(self, name: str) -> Metrics:
        return self._reader.finalize(self.state(), self._nan_policy, name)

    def _require_rows(self) -> None:
        if self.rows_seen == 0:
            raise InputError("this Evaluator has seen no rows yet; call update() first.", argument=_SCORES)

    # -- serialisation -------------------------------------------------------
    @_one_thread_at_a_time
    def state_dict(self) -> dict:
        """JSON-serialisable, exact snapshot (never pickle); see :meth:`from_state_dict`.

        The task travels with it ("auto" while it is still to be inferred).
        """
        pending = None
        if self._pending is not None:
            p = self._pending
            view_dtype = p.view.dtype.newbyteorder("<").str
            pending = {
                "rows": len(p),
                "view_dtype": view_dtype,
                "eps": p.eps,
                "scores": _b64(p.view, view_dtype),
                "labels": _b64(p.targets, "<i8" if p.targets.ndim == 1 else "<f8"),
                "weights": None if p.weights is None else _b64(p.weights, "<f8"),
                "tolerance": p.tolerance,
                **({} if p.groups is None else {"groups": _b64(p.groups, "<i8")}),
            }
        return {
            "format": EVALUATOR_FORMAT,
            "settings": {
                "task": self._requested_task,
                "num_classes": self._num_classes,
                "from_logits": self._from_logits,
                "top_k": list(self.top_k),
                "ignore_index": self._ignore_index,
                "precision": self._precision,
                **({"groups": True} if self._groups else {}),
            },
            "nan_policy": self._nan_policy,
            "state": None if self._state is None else self._state.to_dict(),
            "pending": pending,
            # Diagnostics asked for while the task is still open: the options asked for (else lost on reload).
            "diagnostics": (self._diag.to_dict() if self._diag is not None
                            else None if self._diag_arg is None else {"requested": dict(self._diag_arg)}),
        }

    @classmethod
    def from_state_dict(cls, data: dict) -> Evaluator:
        """Inverse of :meth:`state_dict`; raises :class:`~fastce.errors.InputError` on anything else.

        Every field is checked before anything is allocated (see
        :meth:`fastce.state.State.from_dict` for the bounds); a tampered or
        damaged state raises :class:`~fastce.errors.InputError`, never
        another exception.  States of format ``fastce.evaluator/1``
        (multi-class, before tasks travelled with them) are read too.
        """
        if not isinstance(data, dict) or data.get("format") not in (EVALUATOR_FORMAT, _FORMAT_1):
            raise InputError(f"not a fastce Evaluator state (expected format {EVALUATOR_FORMAT!r})", argument="state")
        nan_policy = data.get("nan_policy")
        if not isinstance(nan_policy, str):
            raise InputError(f"malformed fastce Evaluator state: nan_policy is {type(nan_policy).__name__}", argument="state")
        try:
            settings = _settings_from_dict(data)
            diagnostics, diag_classes = _diagnostics_option(data.get("diagnostics"))
            if diag_classes is not None and diag_classes != settings["num_classes"]:
                # Before anything is built: the diagnostics of num_classes = 2**31 would allocate 64 GiB.
                raise ValueError("the diagnostics' number of classes is not the settings'")
            if diagnostics is not False and diag_classes is None and settings["num_classes"] is not None:
                # Options asked for while the task was open are saved only when the class count was not known
                # (given, the diagnostics are built at once): with one, they would be built here, unchecked.
                raise ValueError("diagnostics asked for with a class count must come with their state")
            evaluator = cls(
                settings["num_classes"], task=settings["task"], from_logits=settings["from_logits"],
                top_k=settings["top_k"], nan_policy=nan_policy, ignore_index=settings["ignore_index"],
                precision=settings["precision"], groups=settings["groups"],
                diagnostics=diagnostics, _warn_top_k=False,
            )
        except InputError as exc:
            raise InputError(f"malformed fastce Evaluator state: {_reason(exc)}", argument="state") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed fastce Evaluator state: {malformed_reason(exc)}", argument="state") from exc
        raw_state = data.get("state")
        if raw_state is None:
            if data.get("pending") is not None or diag_classes is not None:
                raise InputError("malformed fastce Evaluator state: rows without a state", argument="state")
            return evaluator
        if diagnostics is not False and diag_classes is None:
            raise InputError("malformed fastce Evaluator state: a state without its diagnostics", argument="state")
        task = raw_state.get("task", "multiclass") if isinstance(raw_state, dict) else None
        if evaluator._reader is None or (evaluator._provisional and evaluator._reader.task != task):
            if task not in readers.TASKS or settings["num_classes"] is None or settings["task"] not in ("auto", task):
                raise InputError("malformed fastce Evaluator state: unknown task or num_classes", argument="state")
            try:
                evaluator._settle(task, settings["num_classes"])
                evaluator._provisional = False
            except InputError as exc:
                raise InputError(f"malformed fastce Evaluator state: {_reason(exc)}", argument="state") from exc
        if evaluator.top_k != tuple(settings["top_k"]):
            raise InputError("malformed fastce Evaluator state: top_k must be sorted, unique and include 1", argument="state")
        evaluator._state = evaluator._reader.state_from_dict(raw_state)
        clusters = getattr(evaluator._state, "clusters", None)
        if (clusters is not None and not evaluator._groups) or (
            evaluator._groups and clusters is None and evaluator._state.rows_seen
        ):
            raise InputError("malformed fastce Evaluator state: group sums do not match the groups setting",
                             argument="state")
        if data.get("diagnostics") is not None:
            diag = evaluator._reader.diagnostics_from_dict(data["diagnostics"])
            if diag.options != evaluator._diag.options or diag.rows_seen != evaluator._state.rows_seen:
                raise InputError("malformed fastce Evaluator state: diagnostics do not match the state", argument="state")
            evaluator._diag = diag
        raw = data.get("pending")
        if raw is not None:
            try:
                evaluator._pending = _pending_from_dict(raw, evaluator._reader, evaluator._groups)
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"malformed fastce Evaluator state: pending block: {malformed_reason(exc)}", argument="state") from exc
        return evaluator


def _reason(exc: InputError) -> str:
    return str(exc).removeprefix("malformed fastce state: ")


def _settings_from_dict(data: dict) -> dict:
    """The Evaluator's settings of a state dict (format /1: those of its multi-class State)."""
    if data.get("format") == _FORMAT_1:
        state = State.from_dict(data.get("state"))
        if state.ties_to_last:
            raise ValueError("ties_to_last is not supported")
        return {"task": "multiclass", "num_classes": state.num_classes, "from_logits": state.from_logits,
                "top_k": list(state.top_k), "ignore_index": None, "precision": "float64",  # its math then
                "groups": False}
    settings = data["settings"]
    if not isinstance(settings, dict):
        raise ValueError("settings must be a mapping")
    out = {key: settings[key] for key in ("task", "num_classes", "from_logits", "top_k", "ignore_index")}
    out["precision"] = settings.get("precision", "float64")  # states written before precision= used float64 math
    out["groups"] = settings.get("groups", False)  # written only when true
    if out["groups"] is not True and "groups" in settings:
        raise ValueError("groups must be true when given")
    if not isinstance(out["top_k"], list) or not all(
        isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= _INT64.max for k in out["top_k"]
    ):
        raise ValueError("top_k must be a list of positive integers")
    if not isinstance(out["from_logits"], bool):
        raise ValueError("from_logits must be true or false")
    if not isinstance(out["task"], str):
        raise ValueError("task must be a string")
    return out


def _diagnostics_option(raw):
    """(the diagnostics= argument that rebuilds a state dict's diagnostics, or False; their number of classes,
    None when the dict holds only the options asked for while the task was open)."""
    if raw is None:
        return False, None
    from fastce.diagnostics import DIAGNOSTICS_FORMAT, DiagnosticsState
    from fastce.multilabel_report import MultilabelDiagnosticsState

    if isinstance(raw, dict) and set(raw) == {"requested"}:
        if not isinstance(raw["requested"], dict):
            raise ValueError("diagnostics.requested must be a mapping of diagnose options")
        return _check_diagnostics(raw["requested"]), None
    if isinstance(raw, dict) and raw.get("format") == DIAGNOSTICS_FORMAT:
        options = DiagnosticsState.from_dict(raw).options
        names = ("n_bins", "hist_bins", "worst_k", "confident_below", "dense_confusion_max")
        classes = options.num_classes
    else:
        options = MultilabelDiagnosticsState.from_dict(raw).options
        names = ("n_bins", "worst_k", "confident_below")
        classes = options.num_labels
    return {name: getattr(options, name) for name in names}, classes


def _pending_from_dict(raw, reader: readers.Reader, grouped: bool) -> Batch:
    """The unfinished block of a state dict, every field checked before decoding."""
    if not isinstance(raw, dict):
        raise ValueError(f"expected a mapping, got {type(raw).__name__}")
    rows, view_dtype, eps = raw["rows"], raw["view_dtype"], raw["eps"]
    block_rows = reader.block_rows
    if isinstance(rows, bool) or not isinstance(rows, int) or not 0 < rows < block_rows:
        raise ValueError(f"rows must be an integer in 1..{block_rows - 1}, got {str(rows)[:40]}")
    if view_dtype not in _VIEW_DTYPES:  # also refuses non-strings
        raise ValueError(f"view_dtype must be one of {_VIEW_DTYPES}")
    if isinstance(eps, bool) or not isinstance(eps, float) or eps != _VIEW_EPS[view_dtype]:
        raise ValueError(f"eps must be {_VIEW_EPS[view_dtype]!r} for view_dtype {view_dtype}")
    tolerance = raw.get("tolerance", 0.0)
    if isinstance(tolerance, bool) or not isinstance(tolerance, float) or not (
        0.0 < tolerance < 1.0 if reader.task == "soft" else tolerance == 0.0
    ):
        raise ValueError("tolerance must be a float in (0, 1) for soft targets, 0.0 otherwise")
    width = reader.num_classes
    if reader.score_ndim == 1:
        view = _unb64(raw["scores"], view_dtype, rows)
    else:
        view = _unb64(raw["scores"], view_dtype, rows * width).reshape(rows, width)
    if reader.task in ("multiclass", "binary"):
        targets = _unb64(raw["labels"], "<i8", rows)
        valid = (targets >= 0) & (targets < width)
        if reader.ignore_index is not None:
            valid |= targets == reader.ignore_index
        if not valid.all():
            raise ValueError("labels out of range")
    else:
        targets = _unb64(raw["labels"], "<f8", rows * width).reshape(rows, width)
        if not np.isfinite(targets).all() or targets.min() < 0.0:
            raise ValueError("targets must be finite and non-negative")
    weights = None
    if raw["weights"] is not None:
        if reader.task == "soft":
            raise ValueError("soft targets take no weights")
        weights = _unb64(raw["weights"], "<f8", rows)
        if not (np.isfinite(weights) & (weights >= 0)).all():
            raise ValueError("weights must be finite and non-negative")
    if grouped != ("groups" in raw):
        raise ValueError("the pending rows' group ids do not match the groups setting")
    groups = _unb64(raw["groups"], "<i8", rows) if grouped else None
    return Batch(view, eps, targets, weights, tolerance, groups)


class _Both:
    """A task's state and the DiagnosticsState of the same rows (or None), merged together."""

    __slots__ = ("state", "diag")

    def __init__(self, state, diag):
        self.state, self.diag = state, diag

    def merge(self, other: "_Both") -> "_Both":
        diag = None if self.diag is None else self.diag.merge(other.diag)
        return _Both(self.state.merge(other.state), diag)


_DIAGNOSTICS_OPTIONS = {"n_bins", "hist_bins", "worst_k", "confident_below", "dense_confusion_max"}


def _check_diagnostics(diagnostics):
    """None (no diagnostics) or the dict of diagnose() options asked for."""
    if diagnostics is False or diagnostics is None:
        return None
    if diagnostics is True:
        return {}
    if not isinstance(diagnostics, dict):
        raise InputError(
            f"diagnostics must be True, False or a dict of fastce.diagnose options; got {diagnostics!r}.",
            argument="diagnostics",
            value=diagnostics,
        )
    unknown = set(diagnostics) - _DIAGNOSTICS_OPTIONS
    if unknown:
        raise InputError(
            f"unknown diagnostics option(s) {sorted(unknown)}; allowed: {sorted(_DIAGNOSTICS_OPTIONS)}.",
            argument="diagnostics",
        )
    from fastce.diagnostics import DiagnosticsOptions

    DiagnosticsOptions(num_classes=1, **diagnostics)  # each value in its bounds now, not at the first batch
    return dict(diagnostics)


def _diagnostics_request(diagnostics: dict) -> dict:
    """A diagnostics= dict with every option, the defaults filled in: what merge compares while a task is open."""
    from fastce.diagnostics import DiagnosticsOptions

    options = DiagnosticsOptions(num_classes=1, **diagnostics)
    return {name: getattr(options, name) for name in sorted(_DIAGNOSTICS_OPTIONS)}


def _same_diagnostics(mine, theirs) -> bool:
    """Two sides' diagnostics settings (see Evaluator._settings) agree: both without, or equal in every option
    both have (a side whose task is settled has only its task's options: multi-label takes no hist_bins)."""
    if mine is None or theirs is None:
        return mine is theirs
    return all(mine[name] == theirs[name] for name in mine.keys() & theirs.keys())


def _globalize(exc: InputError, base: int) -> InputError:
    """The same error with the batch's row number made global (row ``base`` is the batch's first)."""
    if exc.row is None or base == 0:
        return exc
    row = base + int(exc.row)
    return with_row_named(exc, row, f"row {row}", f"row {row} of the stream")

