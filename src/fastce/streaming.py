"""Streaming evaluation: feed rows batch by batch, merge partial results.

:class:`Evaluator` gives the numbers of one :func:`fastce.evaluate` over all
the rows it was fed, whatever the batch sizes, in bounded memory: it keeps
a :class:`~fastce.state.State` (exact sums, a few counters) plus at most one
partial block of rows (fewer than ``fastce._config.block_rows(C)`` rows, at
most 2**15 scores).

Why the partial block: the kernels sum the rows of a block in float64 and
add the block sums exactly, so the result is exact for a given cut of the
rows into blocks.  ``evaluate`` cuts at multiples of ``block_rows`` from row
0; the Evaluator runs the kernels only on whole blocks aligned the same way
and holds back the rows of an unfinished block until the next ``update`` (or
``result``).  Any split of the rows into ``update`` calls therefore gives
results bit-identical to one ``evaluate`` over all the rows.
"""

from __future__ import annotations

import base64
import re

import numpy as np

from fastce import _config, validation
from fastce import kernels as K
from fastce.api import check_probabilities, check_probability_range, read_scores
from fastce.errors import InputError
from fastce.metrics import Metrics
from fastce.state import MAX_NUM_CLASSES, State, check_nan_policy, malformed_reason, raise_nonfinite

EVALUATOR_FORMAT = "fastce.evaluator/1"
_SCORES = "scores"
# Kernel views the pending rows may have (see validation.scores).
_VIEW_DTYPES = ("<f4", "<f8", "<u2", "<i2")
# The machine epsilon that goes with each view (float32, float64 and integer
# inputs, float16, bfloat16): a state claiming another one was tampered with.
_VIEW_EPS = {"<f4": 2.0**-23, "<f8": 2.0**-52, "<u2": 2.0**-10, "<i2": 2.0**-7}


class _Pending:
    """Rows of an unfinished block, validated but not yet read by the kernels."""

    __slots__ = ("eps", "labels", "view", "weights")

    def __init__(self, view: np.ndarray, eps: float, labels: np.ndarray, weights):
        self.view = view  # (p, C) kernel view, own copy
        self.eps = eps  # machine epsilon of the caller's dtype
        self.labels = labels  # (p,) int64
        self.weights = weights  # (p,) float64, or None when every row so far is unweighted

    def __len__(self) -> int:
        return self.labels.shape[0]

    def same_kind(self, view: np.ndarray, eps: float) -> bool:
        return self.view.dtype == view.dtype and self.eps == eps


def _ones_if_none(weights, n: int):
    return np.ones(n, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)


def _concat_weights(first, n_first: int, second, n_second: int):
    if first is None and second is None:
        return None
    return np.concatenate([_ones_if_none(first, n_first), _ones_if_none(second, n_second)])


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


class Evaluator:
    """Cross-entropy and accuracy over rows that arrive in batches.

    Parameters
    ----------
    num_classes : int
        Number of columns of every score batch.
    from_logits : bool, default True
        Whether batches hold logits (raw scores) or probabilities, as the
        ``logits=`` / ``proba=`` arguments of :func:`fastce.evaluate`.
    top_k : int or sequence of int, default (1,)
        The k of the top-k accuracies to report (1 is always included).
    nan_policy : {"raise", "omit", "propagate"}, default "raise"
        As in :func:`fastce.evaluate`.  With ``"raise"``, an ``update`` whose
        batch holds a NaN/+inf row raises at once, naming the row's global
        number (rows are numbered from 0 across all updates).

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

    *Memory.*  O(top_k) for the sums, plus fewer than one block of pending
    rows (at most 2**15 scores), whatever the number of rows.

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
    """

    def __init__(
        self,
        num_classes: int,
        *,
        from_logits: bool = True,
        top_k=(1,),
        nan_policy: str = "raise",
        diagnostics=False,
        _warn_top_k: bool = True,  # False: settings read back from a state, warned about when it was made
    ):
        if (
            isinstance(num_classes, (bool, np.bool_))
            or not isinstance(num_classes, (int, np.integer))
            or not 1 <= num_classes <= MAX_NUM_CLASSES  # the bound its state files are read back with
        ):
            raise InputError(
                f"num_classes must be a positive int, at most {MAX_NUM_CLASSES}; got {num_classes!r}.",
                argument="num_classes",
                value=num_classes,
            )
        check_nan_policy(nan_policy)
        num_classes = int(num_classes)
        ks = validation.top_k_values(top_k, num_classes, stacklevel=3 if _warn_top_k else None)
        self._state = State.empty(num_classes, ks, from_logits=bool(from_logits))
        self._nan_policy = nan_policy
        self._block_rows = _config.block_rows(num_classes)
        self._pending: _Pending | None = None
        self._diag = _diagnostics_state(diagnostics, num_classes)

    # -- settings and progress -------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self._state.num_classes

    @property
    def from_logits(self) -> bool:
        return self._state.from_logits

    @property
    def top_k(self) -> tuple:
        return self._state.top_k

    @property
    def nan_policy(self) -> str:
        return self._nan_policy

    @property
    def block_rows(self) -> int:
        """Rows per kernel block: splits at multiples of it never hold rows back."""
        return self._block_rows

    @property
    def rows_seen(self) -> int:
        """Rows fed so far (the global number of the next row)."""
        return self._state.rows_seen + (len(self._pending) if self._pending is not None else 0)

    def __repr__(self) -> str:
        return (
            f"Evaluator(num_classes={self.num_classes}, from_logits={self.from_logits}, top_k={self.top_k}, "
            f"nan_policy={self.nan_policy!r}; rows_seen={self.rows_seen})"
        )

    def _settings(self) -> tuple:
        # The diagnostics options count as a setting whatever either side has seen.
        diagnostics = None if self._diag is None else self._diag.options
        return (self.num_classes, self.top_k, self.from_logits, self.nan_policy, diagnostics)

    # -- feeding -----------------------------------------------------------------
    def update(self, y_true, scores, sample_weight=None) -> None:
        """Add a batch of rows.

        Parameters
        ----------
        y_true : array-like of int, shape (n,)
            Class indices 0..num_classes-1.
        scores : array-like of float, shape (n, num_classes)
            Logits or probabilities (as chosen at construction); float16,
            bfloat16, float32 or float64 are read without a copy.  A batch
            of zero rows is accepted and changes nothing.
        sample_weight : array-like of float, shape (n,), optional
            Non-negative finite row weights (rows of batches given without
            weights weigh 1).
        """
        try:
            batch = self._validate(y_true, scores, sample_weight)
        except InputError as exc:  # validation numbers rows within the batch
            raise _globalize(exc, self.rows_seen) from None
        if batch is not None:
            both, self._pending = self._consume(*batch)  # its errors number rows globally
            self._state, self._diag = both.state, both.diag

    def _validate(self, y_true, scores, sample_weight):
        array = validation.as_array(scores, _SCORES)
        if array.ndim == 2 and array.shape[0] == 0 and array.shape[1] == self.num_classes:
            labels = validation.as_array(y_true, "y_true")
            if labels.size != 0:
                raise InputError(
                    f"y_true has {labels.size} values but the scores have 0 rows; they must have one label per row.",
                    argument="y_true",
                )
            return None
        checked = validation.scores(array, _SCORES, labels=y_true, call="Evaluator.update(y_true, scores)")
        n_rows, n_classes = checked.shape
        if n_classes != self.num_classes:
            raise InputError(
                f"{_SCORES} has {n_classes} columns but this Evaluator was created with num_classes="
                f"{self.num_classes}; every batch must have one column per class.",
                argument=_SCORES,
                value=checked.shape,
            )
        labels = validation.class_indices(y_true, "y_true", n_rows, n_classes)
        weights = validation.sample_weight(sample_weight, n_rows)
        return checked.view, checked.eps, labels, weights

    def _read(self, view, labels, weights, eps) -> State:
        """Rows read for their State only (checks; the diagnostics are not touched)."""
        return read_scores(view, labels, weights, top_k=self.top_k, from_logits=self.from_logits, eps=eps)

    def _read_both(self, view, labels, weights, eps) -> "_Both":
        if self._diag is None:
            return _Both(self._read(view, labels, weights, eps), None)
        from fastce.diagnostics import read_with_diagnostics

        return _Both(
            *read_with_diagnostics(
                view, labels, weights, top_k=self.top_k, from_logits=self.from_logits, eps=eps, options=self._diag.options
            )
        )

    def _read_pending(self, pending: _Pending) -> "_Both":
        return self._read_both(pending.view, pending.labels, pending.weights, pending.eps)

    def _both(self) -> "_Both":
        return _Both(self._state, self._diag)

    def _consume(self, view, eps, labels, weights):
        """(new state, new pending) after this batch; raises without side effects."""
        br = self._block_rows
        n = view.shape[0]
        state = self._both()
        pending = self._pending
        offset = 0
        if pending is not None and not pending.same_kind(view, eps):
            state = state.merge(self._read_pending(pending))  # dtype changed: close the block early
            pending = None
        if pending is not None:
            p = len(pending)
            take = min(n, br - p)
            joined = _Pending(
                np.concatenate([pending.view, view[:take]]),
                eps,
                np.concatenate([pending.labels, np.asarray(labels[:take], dtype=np.int64)]),
                _concat_weights(pending.weights, p, None if weights is None else weights[:take], take),
            )
            offset = take
            if len(joined) == br:
                state = state.merge(self._read_pending(joined))
                pending = None
            else:
                pending = joined
        whole = (n - offset) // br * br
        if whole:
            part = slice(offset, offset + whole)
            state = state.merge(self._read_both(view[part], labels[part], None if weights is None else weights[part], eps))
            offset += whole
        new_rows = n - offset  # rows of this batch left for a later block
        if offset < n:
            assert pending is None
            pending = _Pending(
                np.array(view[offset:], copy=True),
                eps,
                np.array(labels[offset:], dtype=np.int64),
                None if weights is None else np.array(weights[offset:], dtype=np.float64),
            )
        elif pending is not None:
            new_rows = n  # the whole batch joined the unfinished block
        self._check(state.state, pending, new_rows)
        return state, pending

    def _check(self, state: State, pending, new_rows: int) -> None:
        """Errors the batch must raise now: non-finite rows under "raise", probabilities outside [0, 1]."""
        probe = state
        if pending is not None and new_rows and self._may_raise(pending.view[len(pending) - new_rows :]):
            # Pending rows are read for real later; read the new ones now only to check them.
            held = len(pending) - new_rows
            gap = State.empty(self.num_classes, self.top_k, from_logits=self.from_logits)
            gap.rows_seen = held
            part = self._read(
                pending.view[held:],
                pending.labels[held:],
                None if pending.weights is None else pending.weights[held:],
                pending.eps,
            )
            probe = probe.merge(gap.merge(part))
        if self._nan_policy == "raise" and probe.counts[K.C_NONFINITE]:
            new = int(probe.counts[K.C_NONFINITE]) - int(self._state.counts[K.C_NONFINITE])
            raise_nonfinite(_SCORES, int(probe.counts[K.FIRST_NONFINITE]), new, from_logits=self.from_logits)
        if not self.from_logits:
            check_probability_range(probe, _SCORES)

    def _may_raise(self, view: np.ndarray) -> bool:
        """Whether held-back rows need the kernel's check (a cheap numpy pre-test says no for clean rows)."""
        if view.dtype == np.uint16:  # float16 bits
            view = view.view(np.float16)
        elif view.dtype == np.int16:  # bfloat16 bits: the high half of a float32
            view = (view.astype(np.int32) << 16).view(np.float32)
        if self.from_logits:
            return self._nan_policy == "raise" and not np.isfinite(view).all()
        return not np.isfinite(view).all() or view.min() < 0.0 or view.max() > 1.0

    # -- combining -------------------------------------------------------------
    def merge(self, other: Evaluator) -> Evaluator:
        """Add the rows of ``other`` after the rows of ``self`` (in place); returns ``self``.

        ``other`` is left unchanged.  Both must have the same num_classes,
        from_logits, top_k, nan_policy and diagnostics options (compared even
        when a side has seen no rows).  See the class notes on exactness.
        """
        if not isinstance(other, Evaluator):
            raise TypeError(f"can only merge another Evaluator, not {type(other).__name__}")
        if self._settings() != other._settings():
            raise ValueError(
                "cannot merge Evaluators with different settings (num_classes, top_k, from_logits, nan_policy, "
                f"diagnostics): {self._settings()} vs {other._settings()}"
            )
        other_state, other_pending = other._state, other._pending
        if other_state.rows_seen == 0:
            if other_pending is not None:  # fewer than one block: feed its rows as a batch
                both, pending = self._consume(
                    other_pending.view, other_pending.eps, other_pending.labels, other_pending.weights
                )
                self._state, self._diag, self._pending = both.state, both.diag, pending
            return self
        both = self._both()
        if self._pending is not None:
            both = both.merge(self._read_pending(self._pending))
        both = both.merge(other._both())
        self._state, self._diag = both.state, both.diag
        self._pending = other_pending  # never mutated in place, so sharing is safe
        return self

    # -- reading -----------------------------------------------------------------
    def state(self) -> State:
        """A :class:`State` of every row fed so far (the unfinished block included)."""
        if self._pending is None:
            return self._state.merge(State.empty(self.num_classes, self.top_k, from_logits=self.from_logits))
        p = self._pending
        return self._state.merge(self._read(p.view, p.labels, p.weights, p.eps))

    def diagnostics_state(self):
        """The mergeable :class:`~fastce.diagnostics.DiagnosticsState` of every row fed so far."""
        if self._diag is None:
            raise InputError("this Evaluator was created without diagnostics=True.", argument="diagnostics")
        both = self._both()
        if self._pending is not None:
            both = both.merge(self._read_pending(self._pending))
        return both.diag

    def report(self):
        """:class:`~fastce.report.Report` over every row fed so far: what ``fastce.diagnose`` returns.

        Needs ``Evaluator(..., diagnostics=True)``.  Equal to ``fastce.diagnose``
        over all the rows, bit for bit, for any split into ``update`` calls
        (and merges, under the conditions of the class notes): the binned
        sums are exact, the per-class ones exact double-doubles (see
        ``fastce.diagnostics_kernels``).
        """
        from fastce.report import Report

        diag = self.diagnostics_state()
        return Report.from_states(self._checked_state(), diag, nan_policy=self._nan_policy, scores_name=_SCORES)

    def result(self) -> Metrics:
        """Metrics over every row fed so far: the object ``fastce.evaluate`` returns.

        Applies ``nan_policy`` and the probability checks (warning about rows
        that do not sum to one) as ``evaluate`` does.  The Evaluator is not
        changed, so ``update`` may go on afterwards.
        """
        return self._checked_state().finalize(self._nan_policy, scores_name=_SCORES)

    def _checked_state(self) -> State:
        """The state of every row, after evaluate's probability checks (warnings name the user's line)."""
        if self.rows_seen == 0:
            raise InputError("this Evaluator has seen no rows yet; call update() first.", argument=_SCORES)
        state = self.state()
        check_probabilities(state, _SCORES, stacklevel=5, nan_policy=self._nan_policy)
        return state

    # -- serialisation -------------------------------------------------------
    def state_dict(self) -> dict:
        """JSON-serialisable, exact snapshot (never pickle); see :meth:`from_state_dict`."""
        pending = None
        if self._pending is not None:
            p = self._pending
            view_dtype = p.view.dtype.newbyteorder("<").str
            pending = {
                "rows": len(p),
                "view_dtype": view_dtype,
                "eps": p.eps,
                "scores": _b64(p.view, view_dtype),
                "labels": _b64(p.labels, "<i8"),
                "weights": None if p.weights is None else _b64(p.weights, "<f8"),
            }
        return {
            "format": EVALUATOR_FORMAT,
            "nan_policy": self._nan_policy,
            "state": self._state.to_dict(),
            "pending": pending,
            "diagnostics": None if self._diag is None else self._diag.to_dict(),
        }

    @classmethod
    def from_state_dict(cls, data: dict) -> Evaluator:
        """Inverse of :meth:`state_dict`; raises ValueError on anything else.

        Every field is checked before anything is allocated (see
        :meth:`fastce.state.State.from_dict` for the bounds); a tampered or
        damaged state raises :class:`~fastce.errors.InputError`, never
        another exception.
        """
        if not isinstance(data, dict) or data.get("format") != EVALUATOR_FORMAT:
            raise InputError(f"not a fastce Evaluator state (expected format {EVALUATOR_FORMAT!r})", argument="state")
        state = State.from_dict(data.get("state"))
        if state.ties_to_last:
            raise InputError("malformed fastce Evaluator state: ties_to_last is not supported", argument="state")
        nan_policy = data.get("nan_policy")
        if not isinstance(nan_policy, str):
            raise InputError(f"malformed fastce Evaluator state: nan_policy is {type(nan_policy).__name__}", argument="state")
        try:
            evaluator = cls(
                state.num_classes, from_logits=state.from_logits, top_k=state.top_k, nan_policy=nan_policy, _warn_top_k=False
            )
        except InputError as exc:
            raise InputError(f"malformed fastce Evaluator state: {exc}", argument="state") from exc
        if evaluator.top_k != state.top_k:
            raise InputError("malformed fastce Evaluator state: top_k must be sorted, unique and include 1", argument="state")
        evaluator._state = state
        if data.get("diagnostics") is not None:
            from fastce.diagnostics import DiagnosticsState

            diag = DiagnosticsState.from_dict(data["diagnostics"])
            if diag.options.num_classes != state.num_classes or diag.rows_seen != state.rows_seen:
                raise InputError("malformed fastce Evaluator state: diagnostics do not match the state", argument="state")
            evaluator._diag = diag
        raw = data.get("pending")
        if raw is not None:
            try:
                evaluator._pending = _pending_from_dict(raw, state.num_classes, evaluator.block_rows)
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"malformed fastce Evaluator state: pending block: {malformed_reason(exc)}", argument="state") from exc
        return evaluator


def _pending_from_dict(raw, num_classes: int, block_rows: int) -> _Pending:
    """The unfinished block of a state dict, every field checked before decoding."""
    if not isinstance(raw, dict):
        raise ValueError(f"expected a mapping, got {type(raw).__name__}")
    rows, view_dtype, eps = raw["rows"], raw["view_dtype"], raw["eps"]
    if isinstance(rows, bool) or not isinstance(rows, int) or not 0 < rows < block_rows:
        raise ValueError(f"rows must be an integer in 1..{block_rows - 1}, got {str(rows)[:40]}")
    if view_dtype not in _VIEW_DTYPES:  # also refuses non-strings
        raise ValueError(f"view_dtype must be one of {_VIEW_DTYPES}")
    if isinstance(eps, bool) or not isinstance(eps, float) or eps != _VIEW_EPS[view_dtype]:
        raise ValueError(f"eps must be {_VIEW_EPS[view_dtype]!r} for view_dtype {view_dtype}")
    view = _unb64(raw["scores"], view_dtype, rows * num_classes).reshape(rows, num_classes)
    labels = _unb64(raw["labels"], "<i8", rows)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError("labels out of range")
    weights = None
    if raw["weights"] is not None:
        weights = _unb64(raw["weights"], "<f8", rows)
        if not (np.isfinite(weights) & (weights >= 0)).all():
            raise ValueError("weights must be finite and non-negative")
    return _Pending(view, eps, labels, weights)


class _Both:
    """A State and the DiagnosticsState of the same rows (or None), merged together."""

    __slots__ = ("state", "diag")

    def __init__(self, state: State, diag):
        self.state, self.diag = state, diag

    def merge(self, other: "_Both") -> "_Both":
        diag = None if self.diag is None else self.diag.merge(other.diag)
        return _Both(self.state.merge(other.state), diag)


def _diagnostics_state(diagnostics, num_classes: int):
    """None, or an empty DiagnosticsState for ``diagnostics`` (True, or a dict of diagnose()'s options)."""
    if diagnostics is False or diagnostics is None:
        return None
    from fastce.diagnostics import DiagnosticsOptions, DiagnosticsState

    if diagnostics is True:
        options = {}
    elif isinstance(diagnostics, dict):
        options = dict(diagnostics)
    else:
        raise InputError(
            f"diagnostics must be True, False or a dict of fastce.diagnose options; got {diagnostics!r}.",
            argument="diagnostics",
            value=diagnostics,
        )
    allowed = {"n_bins", "hist_bins", "worst_k", "confident_below", "dense_confusion_max"}
    unknown = set(options) - allowed
    if unknown:
        raise InputError(
            f"unknown diagnostics option(s) {sorted(unknown)}; allowed: {sorted(allowed)}.", argument="diagnostics"
        )
    return DiagnosticsState.empty(DiagnosticsOptions(num_classes=num_classes, **options))


def _globalize(exc: InputError, base: int) -> InputError:
    """The same error with the batch's row number made global (row ``base`` is the batch's first)."""
    if exc.row is None or base == 0:
        return exc
    row = base + int(exc.row)
    message, count = re.subn(rf"\brow {int(exc.row)}\b", f"row {row}", str(exc), count=1)
    if not count:
        message = f"{message} (row {row} of the stream)"
    return InputError(message, argument=exc.argument, row=row, value=exc.value)
