"""``Comparator``: :func:`fastce.compare` over rows that arrive in batches.

Like the :class:`~fastce.streaming.Evaluator`, it reads only whole kernel
blocks aligned on row 0 and holds back the rows of an unfinished block (every
model's scores, the labels, weights and groups of fewer than
``ComparisonState.block_rows`` rows) until the next ``update``; so any split of
the rows into ``update`` calls gives ``compare``'s numbers bit for bit.
"""

from __future__ import annotations

import threading

import numpy as np

from fastce.compare import MAX_MODELS, Batch, Comparison, ComparisonState, _confident_below, _top_k, validated_batch
from fastce.errors import InputError
from fastce.readers import Batch as RowsBatch, make_reader
from fastce.readers import _held_targets  # class indices as int64, (n, C) targets as float64
from fastce.state import check_nan_policy
from fastce.streaming import _b64, _Lockable, _one_thread_at_a_time, _unb64, _with_the_other  # its encoding, locks

COMPARATOR_FORMAT = "fastce.comparator/1"
_TASKS = ("multiclass", "binary", "multilabel", "soft")


class Comparator(_Lockable):
    """Streaming :func:`fastce.compare`: ``update`` / ``merge`` / ``result`` / ``state_dict``.

    Parameters
    ----------
    names : sequence of str
        The models, in the order of the score arrays given to ``update``.
    num_classes : int, optional
        The classes of (n, C) scores; leave it out with ``task="binary"``.
    from_logits, top_k, nan_policy, confident_below
        As :func:`fastce.compare`.
    groups : bool, default False
        Whether ``update`` receives a group id per row (clustered errors).
    task : {"multiclass", "binary", "multilabel", "soft"}, default "multiclass"
        ``"binary"``: every batch's scores are 1-D, the logit or probability
        of class 1, with 0/1 labels (as :func:`fastce.compare` reads them);
        ``"multilabel"`` / ``"soft"``: every batch's ``y_true`` is an (n, C)
        indicator / soft-target matrix.

    Examples
    --------
    >>> import numpy as np, fastce
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 5, 900)
    >>> za, zb = rng.normal(size=(900, 5)), rng.normal(size=(900, 5))
    >>> cmp = fastce.Comparator(["A", "B"], 5)
    >>> for s in range(0, 900, 250):
    ...     cmp.update(y[s:s + 250], {"A": za[s:s + 250], "B": zb[s:s + 250]})
    >>> cmp.result().delta("B", "A") == fastce.compare(y, logits={"A": za, "B": zb}).delta("B", "A")
    True
    """

    def __init__(self, names, num_classes: int | None = None, *, from_logits: bool = True, top_k=(1,),
                 nan_policy: str = "raise", confident_below: float = 0.01, groups: bool = False,
                 task: str = "multiclass"):
        names = [str(n) for n in names]
        if len(names) < 2 or len(set(names)) != len(names) or len(names) > MAX_MODELS:
            raise InputError(f"names must be at least two (and at most {MAX_MODELS}) different model names; got "
                             f"{_short_names(names)}.", argument="names")
        if task not in _TASKS:
            raise InputError(f"task={task!r} is not one of {_TASKS}: a Comparator is told its task (fastce.compare "
                             "infers it from the scores' shape and the targets).", argument="task", value=task)
        if task == "binary" and num_classes in (None, 2):
            num_classes = 2
        elif task == "binary":
            raise InputError(f"the binary task has two classes, not {num_classes!r}.", argument="num_classes",
                             value=num_classes)
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise InputError(f"num_classes must be a positive int; got {num_classes!r}.", argument="num_classes")
        check_nan_policy(nan_policy)
        self._nan_policy = nan_policy
        ks = _top_k(top_k, task, int(num_classes))
        self._state = ComparisonState.empty(names, int(num_classes), ks, from_logits=bool(from_logits),
                                            confident_below=_confident_below(confident_below), grouped=bool(groups),
                                            task=task)
        self._block_rows = self._state.block_rows
        self._pending = None  # Batch of fewer than block_rows rows, own copies
        self._lock = threading.RLock()  # one thread at a time (see fastce.streaming._one_thread_at_a_time)

    @property
    def names(self) -> list:
        return list(self._state.names)

    @property
    def block_rows(self) -> int:
        """Rows of one kernel block: batches of whole blocks leave no rows pending."""
        return self._block_rows

    def _settings(self) -> tuple:
        st = self._state
        return (st.names, st.task, st.num_classes, st.top_k, st.from_logits, st.confident_below,
                st.clusters is not None, self._nan_policy)

    @property
    def rows_seen(self) -> int:
        return self._state.rows_seen + (0 if self._pending is None else self._pending.n_rows)

    def _arrays(self, scores) -> list:
        if isinstance(scores, dict):
            if set(scores) != set(self._state.names):
                raise InputError(f"scores must hold the models {self.names}; got {sorted(scores)}.", argument="scores")
            return [scores[n] for n in self._state.names]
        if isinstance(scores, (list, tuple)) and len(scores) == len(self._state.names):
            return list(scores)
        raise InputError(
            f"scores must be a dict {{name: array}} or a list of {len(self._state.names)} arrays, in the order "
            f"{self.names}.",
            argument="scores",
        )

    @_one_thread_at_a_time
    def update(self, y_true, scores, sample_weight=None, groups=None) -> None:
        """Add a batch of rows: labels, every model's scores (dict or list), optional weights and groups.

        A batch of zero rows (no labels, every model's scores empty) is accepted and changes nothing, as
        ``Evaluator.update``'s.
        """
        from fastce.streaming import _globalize

        grouped = self._state.clusters is not None
        if grouped and groups is None:
            raise InputError("this Comparator was created with groups=True: pass groups= to every update.",
                             argument="groups")
        if not grouped and groups is not None:
            raise InputError("pass groups=True when creating the Comparator to use groups=.", argument="groups")
        argument = "logits" if self._state.from_logits else "proba"
        arrays = self._arrays(scores)
        if all(np.shape(a)[:1] == (0,) for a in arrays) and np.size(y_true) == 0:
            return
        try:
            batch = validated_batch(y_true, arrays, self._state.names, argument, sample_weight, groups,
                                    num_classes=self._state.num_classes, task=self._state.task,
                                    from_logits=self._state.from_logits)
        except InputError as exc:
            raise _globalize(exc, self.rows_seen) from None
        self._consume(batch)

    def _consume(self, batch) -> None:
        """Read this batch's whole blocks; keep the rest pending.  All or nothing: the rows are read into
        new states, assigned at the end, so an error or an interrupt (Ctrl-C, a SIGTERM during a run of
        ``fastce compare``) leaves the Comparator as it was, never with some models' rows read.

        The errors these rows must raise now are raised now, as Evaluator.update's (left to result(), a NaN
        row under nan_policy="raise" or a target out of range was accepted, and every later result() raised):
        each part read is checked, and the batch's rows held back are read for the check only, without their
        group sums, when a cheap test says they may raise (reading every held-back row again, with every pair
        and group sum, had made 64-row updates 5x slower at C = 5)."""
        br = self._block_rows
        state, pending = self._state, self._pending
        first = self.rows_seen  # the stream's row of batch row 0 (the held-back rows included)

        def read(rows, base):
            part = self._read(rows)
            self._raise_now(part, base)
            return part

        if pending is not None and (pending.tolerance != batch.tolerance or any(
                p.dtype != v.dtype or pe != e for p, v, pe, e in zip(pending.views, batch.views, pending.eps, batch.eps))):
            state, pending = state.merge(read(pending, state.rows_seen)), None  # a dtype changed: close the block
        offset = 0
        held = 0  # the batch's first row held back, if any
        if pending is not None:
            # Complete the unfinished block with the first rows of this batch (a copy of < one block).
            take = min(batch.n_rows, br - pending.n_rows)
            pending = _concatenate(pending, _slice_copy(batch, 0, take))
            offset = take
            if pending.n_rows == br:
                state, pending = state.merge(read(pending, state.rows_seen)), None
        whole = (batch.n_rows - offset) // br * br
        if whole:
            state = state.merge(read(batch.rows(offset, offset + whole), first + offset))
            offset += whole
        if offset < batch.n_rows:
            pending, held = _slice_copy(batch, offset, batch.n_rows), offset
        if pending is not None and self._may_raise(batch.rows(held, batch.n_rows)):
            self._raise_now(self._read(batch.rows(held, batch.n_rows), grouped=False), first + held)
        self._state, self._pending = state, pending

    def _reader(self):
        """The task's reader (its checks: may_raise, raise_now)."""
        st = self._state
        return make_reader(st.task, st.num_classes, from_logits=st.from_logits)

    def _may_raise(self, rows) -> bool:
        """A cheap test of rows (not read yet): whether reading them could raise (see readers.Reader.may_raise)."""
        reader = self._reader()
        return any(reader.may_raise(RowsBatch(view, eps, rows.labels, rows.weights), self._nan_policy)
                   for view, eps in zip(rows.views, rows.eps))

    def _raise_now(self, part: ComparisonState, base: int) -> None:
        """Raise what the rows of ``part`` must raise now, naming the stream's row (``base``: its first)."""
        from fastce.streaming import _globalize

        st, reader = self._state, self._reader()
        argument = "logits" if st.from_logits else "proba"
        try:
            for name in st.names:
                reader.raise_now(part.states[name], self._nan_policy, f"{argument}[{name!r}]")
        except InputError as exc:
            raise _globalize(exc, base) from None

    def _read(self, rows, grouped: bool = True) -> ComparisonState:
        """A new state of these rows (whole blocks, or the last ones), with this Comparator's settings (``grouped``
        False: without the group sums, for a check)."""
        st = self._state
        grouped = grouped and st.clusters is not None
        part = ComparisonState.empty(st.names, st.num_classes, st.top_k, from_logits=st.from_logits,
                                     confident_below=st.confident_below, grouped=grouped, task=st.task)
        part.read(rows.views, rows.eps, rows.labels, rows.weights, rows.groups if grouped else None, rows.tolerance)
        return part

    def _flushed_state(self) -> ComparisonState:
        """The state with the pending rows read, leaving this Comparator unchanged."""
        if self._pending is None:
            return self._state
        return self._state.merge(self._read(self._pending))

    @_one_thread_at_a_time
    def result(self) -> Comparison:
        """The :class:`~fastce.compare.Comparison` of every row fed so far."""
        state = self._flushed_state()
        argument = "logits" if state.from_logits else "proba"
        state.check_scores(argument)
        return state.finalize(self._nan_policy, scores_name=argument)

    @_with_the_other
    def merge(self, other: "Comparator") -> "Comparator":
        """Add the rows of ``other`` after those of ``self`` (in place; exact when ``self`` has seen a
        multiple of the block's rows, else one block is cut short at the seam, as ``Evaluator.merge``)."""
        if self._nan_policy != other._nan_policy:
            raise InputError(f"cannot merge comparators with nan_policy {self._nan_policy!r} and {other._nan_policy!r}",
                             argument="other")
        self._state = self._flushed_state().merge(other._flushed_state())
        self._pending = None
        return self

    @_one_thread_at_a_time
    def state_dict(self) -> dict:
        """Strict-JSON snapshot (never pickle); see :meth:`from_state_dict`."""
        pending = None
        if self._pending is not None:
            p = self._pending
            pending = {
                "rows": p.n_rows,
                "view_dtypes": [v.dtype.newbyteorder("<").str for v in p.views],
                "eps": list(p.eps),
                "scores": [_b64(v, v.dtype.newbyteorder("<").str) for v in p.views],
                # Class indices as int64, (n, C) targets as float64 (exact for every dtype the readers take).
                "labels": _b64(_held_targets(p.labels), "<i8" if p.labels.ndim == 1 else "<f8"),
                "tolerance": p.tolerance,
                "weights": None if p.weights is None else _b64(p.weights, "<f8"),
                "groups": None if p.groups is None else _b64(p.groups, "<i8"),
            }
        return {"format": COMPARATOR_FORMAT, "nan_policy": self._nan_policy, "state": self._state.to_dict(),
                "pending": pending}

    @classmethod
    def from_state_dict(cls, data) -> "Comparator":
        """Inverse of :meth:`state_dict`; an :class:`~fastce.errors.InputError` (a ValueError) for anything else,
        checked before allocating, as ``Evaluator.from_state_dict``."""
        from fastce.streaming import _VIEW_DTYPES

        if not isinstance(data, dict) or data.get("format") != COMPARATOR_FORMAT:
            raise InputError(f"not a fastce Comparator state (expected format {COMPARATOR_FORMAT!r})", argument="state")
        try:
            state = ComparisonState.from_dict(data.get("state"))
            out = cls(state.names, state.num_classes, from_logits=state.from_logits, top_k=state.top_k,
                      nan_policy=data["nan_policy"], confident_below=state.confident_below,
                      groups=state.clusters is not None, task=state.task)
            out._state = state
            pending = data["pending"]
            if pending is not None:
                if not isinstance(pending, dict):
                    raise ValueError("pending must be a mapping")
                rows = pending["rows"]
                if isinstance(rows, bool) or not isinstance(rows, int) or not 0 < rows < out._block_rows:
                    raise ValueError(f"pending rows out of range: {rows!r}")
                dtypes, eps = pending["view_dtypes"], pending["eps"]
                if not isinstance(dtypes, list) or len(dtypes) != len(state.names) or any(
                    d not in _VIEW_DTYPES for d in dtypes
                ):
                    raise ValueError("pending view dtypes must be one of " + ", ".join(_VIEW_DTYPES))
                if not isinstance(eps, list) or len(eps) != len(dtypes) or any(
                    isinstance(e, bool) or not isinstance(e, float) or not 0.0 < e < 1.0 for e in eps
                ):
                    raise ValueError("pending eps must be floats in (0, 1)")
                scores = pending["scores"]
                if not isinstance(scores, list) or len(scores) != len(dtypes):
                    raise ValueError("pending scores must be one base64 text per model")
                views = []
                for text, dtype in zip(scores, dtypes):
                    shape = (rows,) if state.task == "binary" else (rows, state.num_classes)
                    view = _unb64(text, dtype, rows * (1 if state.task == "binary" else state.num_classes)).reshape(
                        shape)
                    view.flags.writeable = False
                    views.append(view)
                if state.task in ("multilabel", "soft"):
                    labels = _unb64(pending["labels"], "<f8", rows * state.num_classes).reshape(rows, state.num_classes)
                    if not (np.isfinite(labels).all() and (labels >= 0).all() and (labels <= 1).all()):
                        raise ValueError("pending targets must be numbers in [0, 1]")
                else:
                    labels = _unb64(pending["labels"], "<i8", rows)
                    if labels.min() < 0 or labels.max() >= state.num_classes:
                        raise ValueError("pending labels out of range")
                tolerance = pending.get("tolerance", 0.0)
                if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0.0 <= tolerance < 1.0:
                    raise ValueError(f"pending tolerance out of range: {tolerance!r}")
                weights = None if pending["weights"] is None else _unb64(pending["weights"], "<f8", rows)
                if weights is not None and not (np.isfinite(weights).all() and (weights >= 0).all()):
                    raise ValueError("pending weights must be finite and non-negative")
                groups = None if pending["groups"] is None else _unb64(pending["groups"], "<i8", rows)
                if (groups is None) != (state.clusters is None):
                    raise ValueError("pending groups do not match the state")
                out._pending = Batch(views, list(eps), labels, weights, groups, state.task, float(tolerance))
        except (KeyError, TypeError, ValueError) as exc:  # InputError among them
            raise InputError(f"malformed fastce Comparator state: {exc}", argument="state") from exc
        return out


def _short_names(names: list) -> str:
    """The names for a message: all of a few, the count and the first ones of many."""
    return repr(names) if len(names) <= 8 else f"{len(names)} names: {names[:4]!r}..."


def _concatenate(first, second):

    def join(a, b, dtype, n_a, n_b, fill):
        if a is None and b is None:
            return None
        a = np.full(n_a, fill, dtype) if a is None else np.asarray(a, dtype=dtype)
        b = np.full(n_b, fill, dtype) if b is None else np.asarray(b, dtype=dtype)
        return np.concatenate([a, b])

    n_a, n_b = first.n_rows, second.n_rows
    views = [np.concatenate([a, b]) for a, b in zip(first.views, second.views)]
    return Batch(
        views, list(second.eps), np.concatenate([_held_targets(first.labels), _held_targets(second.labels)]),
        join(first.weights, second.weights, np.float64, n_a, n_b, 1.0),
        join(first.groups, second.groups, np.int64, n_a, n_b, 0),
        second.task, second.tolerance,
    )


def _slice_copy(batch, start: int, stop: int):
    """Own copies of rows [start, stop) of a batch (fewer than a block: bounded)."""

    return Batch(
        [np.array(v[start:stop], copy=True) for v in batch.views], list(batch.eps),
        np.array(_held_targets(batch.labels[start:stop]), copy=True),
        None if batch.weights is None else np.array(batch.weights[start:stop], dtype=np.float64),
        None if batch.groups is None else np.array(batch.groups[start:stop], dtype=np.int64),
        batch.task, batch.tolerance,
    )
