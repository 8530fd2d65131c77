"""Mergeable sufficient statistics: the one object every door produces.

A ``State`` holds, for the rows it has seen, exact sums (weights, weighted
losses, weighted Brier scores, weighted top-k hits), the score range, and counters of suspicious rows
with the first row where each kind was seen.  ``merge`` is exact, so any
split of the rows and any merge order give the same sums; ``finalize`` turns
a state into :class:`~fastce.metrics.Metrics` under a NaN policy.

States never hold per-row data: their size is O(len(top_k)), whatever N is
(plus O(groups) for the group sums of clustered errors, ``groups=``).
They serialise to strict JSON; users never unpickle anything (dask pickles
states to move them between its workers, as it moves any result).
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, replace

import numpy as np

from fastce import _exactsum, _json, errorbars
from fastce._warn import user_stacklevel
from fastce import kernels as K
from fastce.errors import FastCEWarning, InputError, OmittedRowsWarning
from fastce.metrics import Metrics

STATE_FORMAT = "fastce.state/4"  # /2: the Brier sum; /3: probability-like rows, overflowed sums; /4: second moments
NAN_POLICIES = ("raise", "omit", "propagate")
STATE_TASKS = ("multiclass", "binary")  # the others: fastce.task_states
# Bounds a state file is checked against before anything is allocated.  Row
# counts stay below 2**62, so adding two states' counters can never wrap an
# int64 (merge refuses a sum above it); class ids fit 31 bits, so the
# confusion code label * C + predicted fits an int64.
MAX_ROWS = 2**62 - 1
MAX_NUM_CLASSES = 2**31
_INT64_MAX = 2**63 - 1  # top-k values: any k the kernels can hold (validation.top_k_values)

_COUNTER_NAMES = (
    "rows",
    "nonfinite_rows",
    "inf_loss_rows",
    "ignored_rows",
    "rows_below_0",
    "rows_above_1",
    "unnormalized_rows",
    "probability_like_rows",
    "one_hot_like_rows",
    "overflowed_blocks",
    "first_nonfinite_row",
    "first_inf_loss_row",
    "first_row_below_0",
    "first_row_above_1",
    "first_unnormalized_row",
    "first_overflowed_row",
)
assert len(_COUNTER_NAMES) == K.NUM_ICOUNTS


@dataclass
class State:
    """Partial statistics of a set of rows (see module docstring)."""

    num_classes: int
    top_k: tuple
    from_logits: bool
    ties_to_last: bool
    sums: np.ndarray  # (K.exact_sums_count(len(top_k)), NUM_LIMBS) exact accumulators
    minmax: np.ndarray  # [min score, max score] (probabilities only)
    counts: np.ndarray  # (NUM_ICOUNTS,) int64, see kernels.py
    rows_seen: int = 0  # rows consumed, including skipped ones: numbers the next row
    moment_overflows: int = 0  # block partials of the second moments beyond float64 (see kernels.M_W2)
    task: str = "multiclass"  # or "binary": 1-D scores of class 1 (two classes)
    # With groups= (multi-class, binary): per-group sums of the per-row values behind
    # the clustered standard errors (fastce.groups.GroupSums), None without.
    clusters: object = None

    @classmethod
    def empty(
        cls, num_classes: int, top_k=(1,), *, from_logits: bool = True, ties_to_last: bool = False, task: str = "multiclass"
    ) -> "State":
        if task not in STATE_TASKS or (task == "binary" and num_classes != 2):
            raise ValueError(f"a State holds the tasks {STATE_TASKS} (binary: two classes); got {task!r}, {num_classes}")
        counts = np.zeros(K.NUM_ICOUNTS, dtype=np.int64)
        counts[K.FIRST_NONFINITE :] = -1
        return cls(
            num_classes=int(num_classes),
            top_k=tuple(int(k) for k in top_k),
            from_logits=bool(from_logits),
            ties_to_last=bool(ties_to_last),
            sums=_exactsum.new_accumulators(K.exact_sums_count(len(top_k))),
            minmax=np.array([np.inf, -np.inf]),
            counts=counts,
            task=task,
        )

    def settings(self) -> tuple:
        """What two states must share to merge."""
        return (self.task, self.num_classes, self.top_k, self.from_logits, self.ties_to_last)

    # -- combining -----------------------------------------------------
    def _check_compatible(self, other: "State") -> None:
        theirs = other.settings() if isinstance(other, State) else type(other).__name__
        if self.settings() != theirs:
            raise ValueError(
                "cannot merge states with different settings "
                f"(task, num_classes, top_k, from_logits, ties_to_last): {self.settings()} vs {theirs}"
            )

    def without_groups(self) -> "State":
        """This state without its group sums (a copy; the same state when it has none)."""
        return self if self.clusters is None else replace(self, clusters=None)

    def merge(self, other: "State") -> "State":
        """A new state for the rows of ``self`` followed by the rows of ``other``.

        Sums and counts are exact, so the merge is associative and
        commutative for every reported metric; only the row numbers used in
        error messages depend on the order (``other``'s rows are numbered
        after ``self``'s).
        """
        self._check_compatible(other)
        check_row_total(self.rows_seen + other.rows_seen)
        clusters = _merged_clusters(self, other)
        sums = self.sums + other.sums
        _exactsum.normalize(sums)
        counts = self.counts.copy()
        counts[: K.FIRST_NONFINITE] += other.counts[: K.FIRST_NONFINITE]
        for column in range(K.FIRST_NONFINITE, K.NUM_ICOUNTS):
            if counts[column] < 0 and other.counts[column] >= 0:
                counts[column] = other.counts[column] + self.rows_seen
        return State(
            num_classes=self.num_classes,
            top_k=self.top_k,
            from_logits=self.from_logits,
            ties_to_last=self.ties_to_last,
            sums=sums,
            minmax=np.array([min(self.minmax[0], other.minmax[0]), max(self.minmax[1], other.minmax[1])]),
            counts=counts,
            rows_seen=self.rows_seen + other.rows_seen,
            moment_overflows=self.moment_overflows + other.moment_overflows,
            task=self.task,
            clusters=clusters,
        )

    # -- reading -----------------------------------------------------------
    def count(self, name: str) -> int:
        """A counter by name (see ``counters``)."""
        return int(self.counts[_COUNTER_NAMES.index(name)])

    @property
    def counters(self) -> dict:
        return {name: int(value) for name, value in zip(_COUNTER_NAMES, self.counts)}

    @property
    def weight_sum(self) -> float:
        """Sum of the weights of the rows counted (NaN if a block's weighted sums overflowed)."""
        return self._weighted_sum(K.SUMS_WEIGHT)

    def _weighted_sum(self, row: int, ints: list | None = None) -> float:
        # A block sum that overflowed float64 could not enter the exact
        # accumulator: the exact sum lacks it, so it is unknown, not that.
        if self.counts[K.C_OVERFLOW] > 0:
            return math.nan
        return _exactsum.to_float(self.sums[row]) if ints is None else _exactsum.int_to_float(ints[row])

    def _loss_sum(self, ints: list | None = None) -> float:
        if self.counts[K.C_INF_LOSS] > 0:
            return math.inf
        return _exactsum.to_float(self.sums[K.SUMS_LOSS]) if ints is None else _exactsum.int_to_float(ints[K.SUMS_LOSS])

    @property
    def loss_sum(self) -> float:
        """Sum of weighted per-row losses (inf if any counted row had an infinite loss)."""
        return self._loss_sum()

    @property
    def brier_sum(self) -> float:
        """Sum of weighted per-row Brier scores (full sum over the classes; NaN as weight_sum)."""
        return self._weighted_sum(K.SUMS_BRIER)

    def hits(self, k_index: int) -> float:
        return self._weighted_sum(K.SUMS_TOPK + k_index)

    def _squared_weights(self, ints: list) -> int:
        """The exact sum of the squared weights (scaled integer: ``_exactsum.to_ints``)."""
        return ints[K.SUMS_TOPK + len(self.top_k) + K.M_W2]

    def _squares_underflow(self, ints: list) -> bool:
        """Whether a standard error is unknown for sums of squares below float64's range (errorbars.squares_underflow)."""
        moments = K.SUMS_TOPK + len(self.top_k)
        n, q0, scale = int(self.counts[K.C_ROWS]), self._squared_weights(ints), 1 << _exactsum.OFFSET
        pairs = [(K.SUMS_LOSS, moments + K.M_W2LOSS2), (K.SUMS_BRIER, moments + K.M_W2BRIER2)]
        pairs += [(K.SUMS_TOPK + i, moments + K.M_W2TOPK + i) for i in range(len(self.top_k))]
        return any(errorbars.squares_underflow(n, q0, ints[q2], ints[total], scale) for total, q2 in pairs)

    def standard_errors(self, ints: list | None = None) -> tuple[dict, float]:
        """({metric: standard error}, Kish's effective number of rows) of the finalised means.

        The ratio-estimator standard error of each weighted mean (plain
        s / sqrt(n), ddof=1, for unit weights), from exact sums: see
        ``fastce.errorbars``.  ``top_k_accuracy`` maps k to its error.
        Brier errors carry the same factor as the Brier score (halved for
        two classes).  Call only for a state whose means are defined.
        ``ints``: the accumulators' integers (``_exactsum.to_ints(self.sums)``), if the caller has them.
        """
        ints = _exactsum.to_ints(self.sums) if ints is None else ints
        moments = K.SUMS_TOPK + len(self.top_k)  # the second moments' first row (see kernels.M_W2)
        n = int(self.counts[K.C_ROWS])
        scale = 1 << _exactsum.OFFSET
        weight = ints[K.SUMS_WEIGHT]
        weight_sum = self._weighted_sum(K.SUMS_WEIGHT, ints)
        q0 = self._squared_weights(ints)

        def error(total: int, q1: int, q2: int) -> float:
            if errorbars.squares_underflow(n, q0, q2, total, scale):
                return math.nan  # (finalize warns: _squares_underflow)
            centred = errorbars.centred_square_sum(weight, total, q0, q1, q2, scale)
            return errorbars.standard_error(n, weight_sum, centred)

        if self.moment_overflows:
            nan = math.nan
            return {"cross_entropy": nan, "brier": nan, "top_k_accuracy": {k: nan for k in self.top_k}}, nan
        if self.counts[K.C_INF_LOSS] > 0:
            loss_error = math.inf
        else:
            loss_error = error(ints[K.SUMS_LOSS], ints[moments + K.M_W2LOSS], ints[moments + K.M_W2LOSS2])
        half = 0.5 if self.num_classes == 2 else 1.0
        brier_error = half * error(ints[K.SUMS_BRIER], ints[moments + K.M_W2BRIER], ints[moments + K.M_W2BRIER2])
        top_k = {}
        for i, k in enumerate(self.top_k):
            hits2 = ints[moments + K.M_W2TOPK + i]
            # A hit is 0 or 1: its square is itself.
            top_k[k] = error(ints[K.SUMS_TOPK + i], hits2, hits2)
        underflow = errorbars.squares_underflow(n, q0, 0, 0, scale)
        effective = (weight * weight) / (q0 * scale) if q0 and not underflow else math.nan  # int / int: rounded once
        return {"cross_entropy": loss_error, "brier": brier_error, "top_k_accuracy": top_k}, effective

    def finalize(
        self, nan_policy: str = "raise", *, scores_name: str = "scores", stacklevel: int | None = 3, locate=None
    ) -> Metrics:
        """Metrics for the rows seen, applying ``nan_policy`` to non-finite rows.

        ``stacklevel``: the frame the omitted-rows warning names (default: the
        caller of the function calling this; None: the first frame outside fastce).
        ``locate(row)``, if given, names
        a row in messages (default ``"<scores_name> row <row>"``).
        """
        check_nan_policy(nan_policy)
        nonfinite = int(self.counts[K.C_NONFINITE])
        if nonfinite and nan_policy == "raise":
            raise_nonfinite(
                scores_name, int(self.counts[K.FIRST_NONFINITE]), nonfinite, from_logits=self.from_logits, locate=locate
            )
        if nonfinite and nan_policy == "omit":
            first = int(self.counts[K.FIRST_NONFINITE])
            warnings.warn(
                f"nan_policy='omit': skipped {nonfinite} row(s) whose {scores_name} hold NaN or +inf "
                f"(first: {locate(first) if locate else f'row {first}'}); metrics cover the other "
                f"{int(self.counts[K.C_ROWS])} row(s).",
                OmittedRowsWarning,
                stacklevel=user_stacklevel() if stacklevel is None else stacklevel,
            )
        ints = _exactsum.to_ints(self.sums)  # every sum below from one conversion
        check_weighted_sums(self, ints=ints)
        n = int(self.counts[K.C_ROWS])
        weight_sum = self._weighted_sum(K.SUMS_WEIGHT, ints)
        if nonfinite and nan_policy == "propagate":
            cross_entropy = accuracy = brier = math.nan
            top_k = {k: math.nan for k in self.top_k}
            stderr = {"cross_entropy": math.nan, "brier": math.nan, "top_k_accuracy": dict(top_k)}
            effective = math.nan
        else:
            if n == 0:
                raise InputError(
                    f"no rows left to evaluate: all {self.rows_seen} row(s) were skipped "
                    "(non-finite scores or ignored labels).",
                    argument=scores_name,
                )
            if weight_sum == 0.0:
                raise InputError(
                    "sample_weight sums to zero over the rows counted, so a weighted mean is undefined; "
                    "pass at least one positive weight.",
                    argument="sample_weight",
                )
            cross_entropy = self._loss_sum(ints) / weight_sum
            # scikit-learn's brier_score_loss(scale_by_half="auto"): halved for
            # two classes, so that it is the familiar mean of (p - y)^2.
            brier = self._weighted_sum(K.SUMS_BRIER, ints) / weight_sum * (0.5 if self.num_classes == 2 else 1.0)
            top_k = {k: self._weighted_sum(K.SUMS_TOPK + i, ints) / weight_sum for i, k in enumerate(self.top_k)}
            accuracy = top_k[1] if 1 in top_k else math.nan
            stderr, effective = self.standard_errors(ints)
            # No row's loss infinite (none recorded as the first one), yet the mean is: a block's sum of finite
            # losses left float64's range (kernels.fold_blocks counts such a block in C_INF_LOSS; rows whose weight
            # times their loss does are counted there too, and refused above as weights too large).
            loss_overflow = warn_loss_overflow(cross_entropy, self.counts[K.FIRST_INF_LOSS] >= 0, scores_name,
                                               stacklevel=stacklevel)
            if self.moment_overflows:
                warnings.warn(
                    "standard errors are unknown (NaN): a block's sum of squared per-row losses or squared "
                    "weights exceeds the float64 range (values above ~1e154)"
                    + ("" if loss_overflow else "; the means are unaffected")
                    + ". If sample_weight is that large, divide it by its maximum: only ratios of sample_weight matter.",
                    FastCEWarning,
                    stacklevel=user_stacklevel() if stacklevel is None else stacklevel,
                )
            elif self._squares_underflow(ints):
                warnings.warn(errorbars.SMALL_WEIGHTS, FastCEWarning,
                              stacklevel=user_stacklevel() if stacklevel is None else stacklevel)
        metrics = Metrics(
            n=n,
            weight_sum=weight_sum,
            cross_entropy=cross_entropy,
            accuracy=accuracy,
            top_k_accuracy=top_k,
            n_omitted=nonfinite if nan_policy == "omit" else 0,
            num_classes=self.num_classes,
            from_logits=self.from_logits,
            brier=brier,
            stderr=stderr,
            n_effective=effective,
            task=self.task,
        )
        if self.clusters is not None:
            from fastce.groups import clustered

            metrics = clustered(metrics, self.clusters)
        return metrics

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-serialisable, exact representation."""
        return {
            "format": STATE_FORMAT,
            "task": self.task,
            "num_classes": self.num_classes,
            "top_k": list(self.top_k),
            "from_logits": self.from_logits,
            "ties_to_last": self.ties_to_last,
            "sums": [_exactsum.to_hex(acc) for acc in self.sums],
            "min_score": _json_float(self.minmax[0]),
            "max_score": _json_float(self.minmax[1]),
            "counters": self.counters,
            "rows_seen": self.rows_seen,
            "moment_overflows": self.moment_overflows,
            # Only with groups=: a state without them reads as it always did.
            **({} if self.clusters is None else {"groups": self.clusters.to_dict()}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "State":
        """Inverse of :meth:`to_dict`; refuses anything that is not a fastce state.

        Every field is checked (types, ranges, the bounds ``MAX_ROWS`` and
        ``MAX_NUM_CLASSES``, sizes) before anything is allocated; any defect
        raises :class:`~fastce.errors.InputError` (a ValueError).
        """
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise InputError(f"not a fastce state (expected format {STATE_FORMAT!r})", argument="state")
        try:
            num_classes = _json_int(data["num_classes"], "num_classes", low=1, high=MAX_NUM_CLASSES)
            top_k = tuple(_json_int(k, "top_k", low=1, high=_INT64_MAX) for k in _json_list(data["top_k"], "top_k"))
            if len(set(top_k)) != len(top_k):
                raise ValueError(f"top_k has repeated values: {list(top_k)}")
            sums = _json_list(data["sums"], "sums")
            if len(sums) != K.exact_sums_count(len(top_k)):
                raise ValueError(f"wrong number of sums: {len(sums)} for {len(top_k)} top-k value(s)")
            if not all(isinstance(text, str) and len(text) <= _MAX_HEX_CHARS for text in sums):
                raise ValueError("sums must be hexadecimal strings")
            counters = data["counters"]
            if not isinstance(counters, dict):
                raise ValueError("counters must be a mapping")
            rows_seen = _json_int(data["rows_seen"], "rows_seen", low=0)
            counts = [
                _json_int(counters[name], name, low=-1, high=rows_seen - 1)
                if index >= K.FIRST_NONFINITE
                else _json_int(counters[name], name, low=0, high=rows_seen)
                for index, name in enumerate(_COUNTER_NAMES)
            ]
            check_first_rows(counts, _FIRST_ROW_OF, _COUNTER_NAMES)
            check_nonnegative_sums(sums, range(len(sums)))  # every term summed is >= 0: a negative sum is an edit
            state = cls.empty(
                num_classes,
                top_k,
                from_logits=_json_bool(data["from_logits"], "from_logits"),
                ties_to_last=_json_bool(data["ties_to_last"], "ties_to_last"),
                task=_json_task(data.get("task", "multiclass"), num_classes),
            )
            state.sums = np.stack([_exactsum.from_hex(text) for text in sums])
            state.minmax = np.array([_from_json_float(data["min_score"]), _from_json_float(data["max_score"])])
            state.counts = np.array(counts, dtype=np.int64)
            state.rows_seen = rows_seen
            state.moment_overflows = _json_int(data["moment_overflows"], "moment_overflows", low=0)
            if data.get("groups") is not None:
                from fastce.groups import GroupSums

                state.clusters = GroupSums.from_dict(data["groups"])
                if state.clusters.n_values != 2 + len(top_k):
                    raise ValueError("group sums do not match top_k")
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"malformed fastce state: {malformed_reason(exc)}", argument="state") from exc
        return state


def _merged_clusters(first: State, second: State):
    """The group sums of two states' rows: both have them, or neither (a side without rows takes the other's)."""
    if first.clusters is None and second.clusters is None:
        return None
    if first.clusters is not None and second.clusters is not None:
        return first.clusters.merge(second.clusters)
    bare = first if first.clusters is None else second
    if bare.rows_seen:
        raise ValueError("cannot merge a state with group sums (groups=) and a state of rows read without groups")
    return first.clusters if first.clusters is not None else second.clusters


def _json_float(value) -> float | str:
    """A float for strict JSON: non-finite values become the strings "inf", "-inf", "nan"."""
    return _json.encode_float(value)


def _from_json_float(value) -> float:
    """A float written by ``_json.encode_float`` (a number, or "inf", "-inf", "nan"); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, got {_short(value)}")
    return _json.decode_float(value)


# Each counter of rows whose error names its first row, and the counter of that row (State.counts' indices).
# Not the infinite losses': compare's per-model states count those without a first row.
_FIRST_ROW_OF = ((K.C_NONFINITE, K.FIRST_NONFINITE), (K.C_BELOW0, K.FIRST_BELOW0), (K.C_ABOVE1, K.FIRST_ABOVE1),
                 (K.C_UNNORMALIZED, K.FIRST_UNNORMALIZED), (K.C_OVERFLOW, K.FIRST_OVERFLOW))


def check_first_rows(counts, first_row_of, names=None) -> None:
    """ValueError unless each (counter, first row) pair of ``counts`` agrees: a first row (>= 0) where rows were
    counted, -1 where none were.  A count without its row named an error's "row -1"."""
    for count, first in first_row_of:
        if (counts[count] > 0) != (counts[first] >= 0):
            what, where = (names[count], names[first]) if names else (f"counts[{count}]", f"counts[{first}]")
            raise ValueError(f"{what} is {counts[count]} but {where} is {counts[first]}")


def check_nonnegative_sums(texts, columns) -> None:
    """ValueError when an exact sum (hexadecimal text) of ``columns`` is negative: sums of terms that are never
    negative (weights, losses, squares, counts), so a state holding one was edited, and its means would be."""
    for column in columns:
        if int(texts[column], 16) < 0:
            raise ValueError(f"sum {column} is negative, which no rows give")


# Longest hex text of an exact sum: more digits than from_hex accepts is refused unread.
_MAX_HEX_CHARS = 4 + _exactsum.LIMB_BITS * _exactsum.NUM_LIMBS // 4


def malformed_reason(exc: BaseException) -> str:
    """One line for a parse failure (a KeyError's text is only the key)."""
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}" if exc.args else "missing field"
    return " ".join(str(exc).split())[:300]


def _json_int(value, name: str, *, low: int, high: int = MAX_ROWS) -> int:
    """An integer field in [low, high] (``high`` defaults to ``MAX_ROWS``: no counter can wrap)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {_short(value)}")
    if value < low or value > high:
        limit = f"at most {high}" + (" (MAX_ROWS: counters must not wrap when states merge)" if high == MAX_ROWS else "")
        raise ValueError(f"{name} out of range: {_short(value)} (must be at least {low} and {limit})")
    return int(value)


def _short(value) -> str:
    """repr of a (possibly huge) JSON value, cut to a readable length."""
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else f"an integer of {value.bit_length()} bits"
    return text if len(text) <= 80 else text[:77] + "..."


def check_row_total(rows: int) -> None:
    """Refuse a merge whose row count would pass ``MAX_ROWS`` (an int64 counter would wrap)."""
    if rows > MAX_ROWS:
        raise InputError(
            f"cannot merge: the merged state would count {rows} rows, more than MAX_ROWS = {MAX_ROWS}.",
            argument="state",
        )


def _json_task(value, num_classes: int) -> str:
    if value not in STATE_TASKS:  # also refuses non-strings
        raise ValueError(f"task must be one of {STATE_TASKS}, got {_short(value)}")
    if value == "binary" and num_classes != 2:
        raise ValueError(f"a binary state has two classes, not {num_classes}")
    return value


def _json_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {_short(value)}")
    return bool(value)


def _json_list(value, name: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list, got {_short(value)}")
    return list(value)


def check_nan_policy(nan_policy: str) -> None:
    if nan_policy not in NAN_POLICIES:
        raise InputError(
            f"nan_policy={nan_policy!r} is not one of {NAN_POLICIES}.", argument="nan_policy", value=nan_policy
        )


def check_weighted_sums(state: State, weight_name: str = "sample_weight", ints: list | None = None) -> None:
    """Refuse weights so large that a weighted sum (weights, Brier, top-k hits) overflows float64.

    Never a plausible wrong number instead: a block sum that overflowed
    cannot be added exactly (see kernels.fold_blocks), and a total beyond
    float64 makes every weighted mean inf / inf.  Block sums only overflow
    when the total does (every summed term is non-negative), so the error
    does not depend on how the rows fall into blocks.  Weighted means do not
    change when all weights are divided by one number, hence the advice.
    """
    blocks = int(state.counts[K.C_OVERFLOW])
    ints = _exactsum.to_ints(state.sums) if ints is None else ints  # ``ints``: the caller's, if it has them
    rows = [K.SUMS_WEIGHT, K.SUMS_BRIER] + [K.SUMS_TOPK + i for i in range(len(state.top_k))]
    totals = [_exactsum.int_to_float(ints[row]) for row in rows]
    if not blocks and all(math.isfinite(total) for total in totals):
        return
    raise_weights_overflow(weight_name, int(state.counts[K.FIRST_OVERFLOW]) if blocks else None)


def warn_loss_overflow(total: float, infinite_rows: bool, scores_name: str, *, what: str = "cross_entropy",
                       stacklevel: int | None = None, weight_name: str | None = None) -> bool:
    """Warn when ``total`` (``what``) is inf although no row's (element's) loss is (``infinite_rows`` False,
    from the task's counters): their sum left float64's range.  Returns whether it warned.

    Every task and door warns alike (the soft-target and multi-label means and the PyTorch-style functions
    returned that inf without a word).  ``weight_name``: weights that scale the losses themselves (class
    weights), named as the other possible cause.
    """
    if not math.isinf(total) or infinite_rows:
        return False
    also = f", or from {weight_name} that large" if weight_name else ""
    warnings.warn(
        f"{what} is inf, but no row's loss is: their weighted sum exceeds the float64 range "
        f"(largest float {sys.float_info.max:.4g}), from {scores_name} of magnitude near 1e304 or more{also}, so "
        "the value is not known. Scores that large are almost surely a bug in the model's output.",
        FastCEWarning,
        stacklevel=user_stacklevel() if stacklevel is None else stacklevel,
    )
    return True


def raise_diagnostics_overflow(weighted: bool, losses: np.ndarray, terms_per_row: int = 1) -> None:
    """The error of a diagnostics fold whose block sums left float64's range (diagnose's bins and loss split
    cannot hold an infinite sum, where evaluate's mean can be inf): the weights' fault only if there are weights
    and the slice's finite ``losses`` (per-row losses, NaN for rows not counted; means of ``terms_per_row``
    terms) sum within float64 without them.
    Else the losses overflow whatever the weights: dividing the weights, which the weights' error advises, cannot
    help (weights of 1 with scores near 1e306 were blamed)."""
    if weighted:
        finite = losses[np.isfinite(losses)]
        with np.errstate(over="ignore"):
            if math.isfinite(float(np.sum(finite)) * terms_per_row):
                raise_weights_overflow("sample_weight", None)
    raise InputError(
        f"the rows' losses are so large that their sums overflow float64 (largest float {sys.float_info.max:.4g}), "
        "so diagnose cannot bin or split them (evaluate returns cross_entropy=inf with a FastCEWarning). Scores "
        "of magnitude near 1e304 or more are almost surely a bug in the model's output.",
        argument="scores",
    )


def raise_weights_overflow(weight_name: str, row: int | None) -> None:
    """The error of check_weighted_sums, shared with the other tasks' doors."""
    where = f"; first in the block of rows from row {row}" if row is not None else ""
    raise InputError(
        f"{weight_name} is too large: the weighted sums of the rows overflow float64 (largest float "
        f"{sys.float_info.max:.4g}{where}), so no metric can be computed from them. Weighted means do not change "
        f"when every weight is divided by the same number: divide {weight_name} by its maximum (or any large "
        "constant) and call again.",
        argument=weight_name,
        row=row,
    )


def raise_nonfinite(scores_name: str, row: int, count: int, *, from_logits: bool = True, locate=None) -> None:
    # Logits may be -inf (a masked class), probabilities may not.
    what = "NaN or +inf" if from_logits else "NaN or an infinite value"
    also = "; a row of only -inf counts too" if from_logits else ""
    raise InputError(
        f"{locate(row) if locate else f'{scores_name} row {row}'} holds {what} ({count} such row(s) in all{also}). "
        "Fix the model output, "
        "or pass nan_policy='omit' to skip those rows or nan_policy='propagate' to get NaN.",
        argument=scores_name,
        row=row,
    )
