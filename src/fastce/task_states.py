"""States of the element-wise tasks: multi-label indicators and soft targets.

Each task's statistics are a mergeable state with the protocol of
:class:`fastce.state.State` (which serves the multi-class and binary tasks):
``task``, ``rows_seen``, ``merge(other)`` (refusing unlike states),
``raise_now(nan_policy, name)`` (errors the rows must raise as soon as they
are read), ``finalize(nan_policy, scores_name=...)`` → :class:`Metrics`,
``to_dict()`` / ``from_dict()`` (strict JSON, every field checked before
anything is allocated; never pickle).  Doors are written against that
protocol only (see ``fastce.readers``).

Both states wrap a :class:`Sums`: exact sums and counters of one kernel
family (``kernels_binary`` for multi-label, ``kernels_soft`` for soft
targets), folded from fixed blocks of rows, so merges are exact and results
never depend on the thread count or on how the rows were split.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from fastce import _exactsum, errorbars
from fastce import kernels_binary as KB
from fastce import kernels_soft as KS
from fastce._warn import user_stacklevel
from fastce.errors import FastCEWarning, InputError, OmittedRowsWarning
from fastce.metrics import Metrics
from fastce.state import (
    MAX_NUM_CLASSES,
    MAX_ROWS,
    _from_json_float,
    _json_bool,
    _json_float,
    _json_int,
    _json_list,
    _MAX_HEX_CHARS,
    _merged_clusters,
    check_first_rows,
    check_nan_policy,
    check_nonnegative_sums,
    check_row_total,
    malformed_reason,
    raise_nonfinite,
    raise_weights_overflow,
    warn_loss_overflow,
)



def per_element_mean(total: float, weight: float, n_cols: int) -> float:
    """``total / (weight * n_cols)``, the per-element mean of a multi-label sum; ``total / weight / n_cols`` where
    that product overflows though the weights' sum does not (every mean was 0.0, or NaN, without a word)."""
    scale = weight * n_cols
    return total / scale if math.isfinite(scale) else total / weight / n_cols

class Sums:
    """Exact sums and counters of one kernel family for a set of rows.

    ``value(c)`` is exact-sum column ``c`` rounded once to float64;
    ``count(c)`` a counter (first-row columns hold the earliest row, -1 for
    none).  ``nonfinite[c]`` counts blocks whose float partial sum of column
    ``c`` was not finite: ``exact_add_at`` cannot hold it, so it is kept here
    and ``value(c)`` is inf for that column (every summed term is
    non-negative, so the exact total is beyond float64: inf is its
    rounding), never the sum of the other blocks.  ``overflowed`` counts
    such blocks over all columns.
    """

    def __init__(self, n_exact: int, n_counts: int, first_column: int):
        self.sums = _exactsum.new_accumulators(n_exact)
        self.minmax = np.array([np.inf, -np.inf])
        self.counts = np.zeros(n_counts, dtype=np.int64)
        self.counts[first_column:] = -1
        self.first_column = first_column
        self.nonfinite = np.zeros(n_exact, dtype=np.int64)
        self.rows_seen = 0
        # (row, "1.5 in column 2", 1.5): the first bad target's entry, which the kernels do not record (see
        # note_bad_targets); kept through merges, not in the JSON.
        self.bad_entry = None

    @property
    def overflowed(self) -> int:
        return int(self.nonfinite.sum())

    def value(self, column: int) -> float:
        if self.nonfinite[column]:
            return math.inf
        return _exactsum.to_float(self.sums[column])

    def weighted_sums_overflow(self, columns) -> bool:
        """Whether any of ``columns`` (weighted sums other than the loss) overflowed float64."""
        return any(self.nonfinite[c] or not math.isfinite(self.value(c)) for c in columns)

    def count(self, column: int) -> int:
        return int(self.counts[column])

    def merge(self, other: "Sums") -> "Sums":
        """A new Sums for the rows of ``self`` followed by those of ``other``."""
        out = Sums(self.sums.shape[0], self.counts.shape[0], self.first_column)
        out.sums = self.sums + other.sums
        _exactsum.normalize(out.sums)
        out.minmax = np.array([min(self.minmax[0], other.minmax[0]), max(self.minmax[1], other.minmax[1])])
        f = self.first_column
        out.counts[:f] = self.counts[:f] + other.counts[:f]
        out.counts[f:] = self.counts[f:]
        later = (out.counts[f:] < 0) & (other.counts[f:] >= 0)
        out.counts[f:][later] = other.counts[f:][later] + self.rows_seen
        out.nonfinite = self.nonfinite + other.nonfinite
        out.rows_seen = self.rows_seen + other.rows_seen
        out.bad_entry = self.bad_entry if self.bad_entry is not None or other.bad_entry is None else (
            other.bad_entry[0] + self.rows_seen, *other.bad_entry[1:])
        return out

    # -- serialisation (inside a task state's dict) ------------------------------
    def to_dict(self) -> dict:
        return {
            "sums": [_exactsum.to_hex(acc) for acc in self.sums],
            "min_score": _json_float(self.minmax[0]),
            "max_score": _json_float(self.minmax[1]),
            "counts": [int(c) for c in self.counts],
            "nonfinite_blocks": [int(c) for c in self.nonfinite],
            "rows_seen": int(self.rows_seen),
        }

    @classmethod
    def from_dict(cls, data, n_exact: int, n_counts: int, first_column: int, width: int = 1, *, nonnegative=(),
                  first_rows=()) -> "Sums":
        """Inverse of ``to_dict``; ValueError/TypeError/KeyError on anything malformed (checked before allocating).

        Column 0 counts rows (at most ``rows_seen``); the other counters
        count rows or elements (at most ``rows_seen * width``).  The sums of
        ``nonnegative`` may not be negative, and each (counter, first row)
        pair of ``first_rows`` must agree (see state.check_first_rows).
        """
        if not isinstance(data, dict):
            raise ValueError(f"sums must be a mapping, got {type(data).__name__}")
        rows_seen = _json_int(data["rows_seen"], "rows_seen", low=0)
        sums = _json_list(data["sums"], "sums")
        counts = _json_list(data["counts"], "counts")
        blocks = _json_list(data["nonfinite_blocks"], "nonfinite_blocks")
        if len(sums) != n_exact or len(counts) != n_counts or len(blocks) != n_exact:
            raise ValueError(
                f"expected {n_exact} sums, {n_counts} counts and {n_exact} nonfinite_blocks; got "
                f"{len(sums)}, {len(counts)} and {len(blocks)}"
            )
        if not all(isinstance(text, str) and len(text) <= _MAX_HEX_CHARS for text in sums):
            raise ValueError("sums must be hexadecimal strings")
        checked = [
            _json_int(c, f"counts[{i}]", low=-1, high=rows_seen - 1) if i >= first_column
            else _json_int(c, f"counts[{i}]", low=0, high=rows_seen if i == 0 else min(MAX_ROWS, rows_seen * width))
            for i, c in enumerate(counts)
        ]
        check_nonnegative_sums(sums, nonnegative)
        check_first_rows(checked, first_rows)
        out = cls(n_exact, n_counts, first_column)
        out.sums = np.stack([_exactsum.from_hex(text) for text in sums])
        out.minmax = np.array([_from_json_float(data["min_score"]), _from_json_float(data["max_score"])])
        out.counts = np.array(checked, dtype=np.int64)
        out.nonfinite = np.array([_json_int(c, "nonfinite_blocks", low=0) for c in blocks], dtype=np.int64)
        out.rows_seen = rows_seen
        return out


# -- shared by the element-wise states and the PyTorch-compatible functions ------------


def bce_loss_total(sums: Sums) -> float:
    """The exact loss sum, inf when an element's loss was infinite or the sum overflowed."""
    if sums.count(KB.N_INF_LOSS) or sums.nonfinite[KB.S_LOSS]:
        return math.inf
    return sums.value(KB.S_LOSS)


def _first_bad_entry(targets, row: int, bad) -> tuple:
    """("1.5 in column 2", 1.5): row ``row`` of ``targets``' first entry that ``bad`` (a test of float64 values)
    flags; (None, None) without the targets (the kernels count a bad row, not its entry)."""
    if targets is None:
        return None, None
    values = np.asarray(targets[row]).reshape(-1).astype(np.float64)
    flagged = np.flatnonzero(bad(values))
    if not flagged.size:
        return None, None
    column = int(flagged[0])
    value = float(values[column])
    return f"{value:g}" + (f" in column {column}" if values.size > 1 else ""), value


def _bce_bad(values):
    return ~((values >= 0.0) & (values <= 1.0))


def _soft_bad(values):
    return ~(np.isfinite(values) & (values >= 0.0))


def note_bad_targets(sums: Sums, targets, soft: bool) -> None:
    """Keep in ``sums`` the entry of the first bad target row of ``targets``, the rows just read into it (its
    errors, raised later, name the value and its column)."""
    first = sums.count(KS.FIRST_BAD_TARGET if soft else KB.FIRST_BAD_TARGET)
    if first >= 0:
        sums.bad_entry = (first, *_first_bad_entry(targets, first, _soft_bad if soft else _bce_bad))


def _bad_entry(sums: Sums, row: int, targets, bad) -> tuple:
    """(text, value) of row ``row``'s bad entry: noted in ``sums``, or found in ``targets``; (None, None)."""
    if sums.bad_entry is not None and sums.bad_entry[0] == row:
        return sums.bad_entry[1:]
    return _first_bad_entry(targets, row, bad)


def raise_bad_bce_targets(sums: Sums, target_name: str, targets=None) -> None:
    """The error of a binary cross-entropy target outside [0, 1] (or NaN), naming its value (see
    note_bad_targets; ``targets``: the rows the sums were read from)."""
    if sums.count(KB.N_BAD_TARGET):
        row = sums.count(KB.FIRST_BAD_TARGET)
        entry, value = _bad_entry(sums, row, targets, _bce_bad)
        raise InputError(
            f"{target_name} row {row} holds {f'{entry},' if entry else 'a value'} outside [0, 1] (or NaN); "
            f"{sums.count(KB.N_BAD_TARGET)} such row(s). Binary cross-entropy needs 0/1 labels or probabilities of "
            "'yes' for every element.",
            argument=target_name,
            row=row,
            value=value,
        )


def check_bce_sums(sums: Sums, *, from_logits: bool, name: str, target_name: str, targets=None) -> None:
    """Raise for what the kernel reported: probabilities outside [0, 1], targets outside [0, 1]."""
    if not from_logits:
        kinds = sorted(
            (
                (KB.N_BELOW0, KB.FIRST_BELOW0, "below 0", sums.minmax[0]),
                (KB.N_ABOVE1, KB.FIRST_ABOVE1, "above 1", sums.minmax[1]),
            ),
            key=lambda kind: sums.count(kind[1]),
        )
        for counter, first, word, value in kinds:
            if sums.count(counter):
                row = sums.count(first)
                raise InputError(
                    f"{name} row {row} holds a value {word} (extreme value {value:g}; {sums.count(counter)} such "
                    "row(s)): these are not probabilities. If they are logits (raw model outputs), pass them as "
                    "logits (binary_cross_entropy_with_logits, or evaluate(..., logits=...)) instead.",
                    argument=name,
                    row=row,
                    value=float(value),
                )
    raise_bad_bce_targets(sums, target_name, targets)


def raise_bce_nan_rows(sums: Sums, name: str) -> None:
    row = sums.count(KB.FIRST_NONFINITE)
    raise InputError(
        f"{name} row {row} holds NaN ({sums.count(KB.N_NONFINITE)} such row(s) in all). Fix the model output, "
        "or pass nan_policy='omit' to skip those rows or nan_policy='propagate' to get NaN.",
        argument=name,
        row=row,
    )


def warn_bce_omitted(sums: Sums, name: str, *, stacklevel: int | None = None) -> None:
    warnings.warn(
        f"nan_policy='omit': skipped {sums.count(KB.N_NONFINITE)} row(s) whose {name} hold NaN "
        f"(first: row {sums.count(KB.FIRST_NONFINITE)}); the result covers the other {sums.count(KB.N_ROWS)} row(s).",
        OmittedRowsWarning,
        stacklevel=user_stacklevel() if stacklevel is None else stacklevel,
    )


def warn_one_hot(sums: Sums, n_cols: int, target_name: str, asked: str, advice: str, *,
                 stacklevel: int | None = None) -> None:
    """Warn when every counted row of an (N, C) target holds exactly one 1 (one label per row, C >= 2) but the
    scores were read as C separate yes/no questions (``asked``: what read each column so), giving both accuracies:
    the per-element one such a reading reports and the argmax one a single label calls for; ``advice`` ends it."""
    rows = sums.count(KB.N_ROWS)
    weight = sums.value(KB.S_WEIGHT)
    if n_cols < 2 or rows == 0 or sums.count(KB.N_ONE_HOT) != rows or weight == 0.0:
        return
    per_element = per_element_mean(sums.value(KB.S_HITS), weight, n_cols)
    argmax = sums.value(KB.S_ARGMAX) / weight
    warnings.warn(
        f"every row of {target_name} has exactly one 1 among {n_cols} columns (one label per row), but {asked} "
        f"as a separate yes/no question, so its per-element accuracy ({per_element:.4f}, mostly "
        f"the easy 'no' columns) is not the accuracy of picking the highest score ({argmax:.4f}); {advice}",
        FastCEWarning,
        stacklevel=user_stacklevel() if stacklevel is None else stacklevel,
    )


def check_soft_sums(sums: Sums, name: str, *, stacklevel: int | None = None, locate=None) -> None:
    """Raise for negative / NaN / infinite target values; warn for rows not summing to 1.

    ``locate(row)``, if given, names a row (default ``"<name> row <row>"``).
    """
    raise_bad_soft_targets(sums, name, locate=locate)
    if sums.count(KS.N_UNNORMALIZED):
        first = sums.count(KS.FIRST_UNNORMALIZED)
        warnings.warn(
            f"{sums.count(KS.N_UNNORMALIZED)} row(s) of {name} do not sum to 1 (first: "
            f"{locate(first) if locate else f'row {first}'}); soft targets should be probability distributions "
            "(divide each row by its sum).",
            FastCEWarning,
            stacklevel=user_stacklevel() if stacklevel is None else stacklevel,
        )


def raise_bad_soft_targets(sums: Sums, name: str, *, locate=None, targets=None) -> None:
    """The error of a soft target row with a negative, NaN or infinite entry (``targets``: see
    raise_bad_bce_targets)."""
    if sums.count(KS.N_BAD_TARGET):
        row = sums.count(KS.FIRST_BAD_TARGET)
        entry, value = _bad_entry(sums, row, targets, _soft_bad)
        entry = f"{entry}, not a probability" if entry else "a negative, NaN or infinite value"
        raise InputError(
            f"{locate(row) if locate else f'{name} row {row}'} holds {entry} "
            f"({sums.count(KS.N_BAD_TARGET)} such row(s)); soft targets are probabilities: non-negative, summing "
            "to 1 over the classes of each row.",
            argument=name,
            row=row,
            value=value,
        )


def unknown_error() -> float:
    """NaN, with a warning: a block's sum of squares went beyond float64, so that error is unknown."""
    warnings.warn(
        "a standard error is unknown (NaN): a block's sum of squared per-row values or squared weights exceeds "
        "the float64 range (values above ~1e154); the means are unaffected. If sample_weight is that large, divide "
        "it by its maximum: only ratios of sample_weight matter.",
        FastCEWarning,
        stacklevel=user_stacklevel(),
    )
    return math.nan


def _apply_nan_policy(nonfinite: int, nan_policy: str, raise_rows, warn_rows):
    """Rows omitted (an int) under raise/omit, or None under propagate with NaN rows."""
    if not nonfinite:
        return 0
    if nan_policy == "raise":
        raise_rows()
    if nan_policy == "omit":
        warn_rows()
        return nonfinite
    return None


def _check_counted(n: int, weight: float, rows_seen: int) -> None:
    if n == 0:
        raise InputError(f"no rows left to evaluate: all {rows_seen} row(s) were skipped (non-finite scores).")
    if weight == 0.0:
        raise InputError(
            "sample_weight sums to zero over the rows counted, so a weighted mean is undefined; "
            "pass at least one positive weight.",
            argument="sample_weight",
        )


class _SumsState:
    """What the two element-wise states share: settings, merge, JSON envelope."""

    task = ""
    FORMAT = ""
    _LAYOUT = (0, 0, 0)  # (exact sums, counters, first first-row counter) of the kernel family
    _NONNEGATIVE_SUMS: tuple = ()  # the exact sums no rows make negative (a loaded state's are checked)
    _FIRST_ROWS: tuple = ()  # (counter, its first row) pairs of the counters (see state.check_first_rows)

    # The means whose clustered errors groups= gives, in the order of the per-row values of the group sums
    # (the row_values of kernels_binary.bce_blocks and kernels_soft.soft_blocks); each a Metrics field.
    GROUPED_MEANS: tuple = ()

    def __init__(self, num_classes: int, from_logits: bool, sums: Sums | None = None, clusters=None):
        self.num_classes = int(num_classes)
        self.from_logits = bool(from_logits)
        self.sums = sums if sums is not None else Sums(*self._LAYOUT)
        self.clusters = clusters  # fastce.groups.GroupSums of rows read with groups=, else None

    @classmethod
    def empty(cls, num_classes: int, *, from_logits: bool = True):
        return cls(num_classes, from_logits)

    @property
    def rows_seen(self) -> int:
        return self.sums.rows_seen

    @rows_seen.setter
    def rows_seen(self, value: int) -> None:
        self.sums.rows_seen = int(value)

    def settings(self) -> tuple:
        return (self.task, self.num_classes, self.from_logits)

    def without_groups(self):
        """This state without its group sums (a copy; the same state when it has none)."""
        return self if self.clusters is None else type(self)(self.num_classes, self.from_logits, self.sums)

    def merge(self, other):
        """A new state for the rows of ``self`` followed by those of ``other`` (exact)."""
        if type(other) is not type(self) or other.settings() != self.settings():
            theirs = other.settings() if hasattr(other, "settings") else type(other).__name__
            raise ValueError(
                f"cannot merge states with different settings (task, num_classes, from_logits): "
                f"{self.settings()} vs {theirs}"
            )
        check_row_total(self.rows_seen + other.rows_seen)
        return type(self)(self.num_classes, self.from_logits, self.sums.merge(other.sums),
                          _merged_clusters(self, other))

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def to_dict(self) -> dict:
        # "groups" only with groups=: a state without them reads as it always did.
        grouped = {} if self.clusters is None else {"groups": self.clusters.to_dict()}
        return {"format": self.FORMAT, "task": self.task, "num_classes": self.num_classes,
                "from_logits": self.from_logits} | self.sums.to_dict() | grouped

    @classmethod
    def from_dict(cls, data: dict):
        """Inverse of :meth:`to_dict`: every field checked before allocating; InputError on any defect."""
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            raise InputError(f"not a fastce {cls.task} state (expected format {cls.FORMAT!r})", argument="state")
        try:
            num_classes = _json_int(data["num_classes"], "num_classes", low=1, high=MAX_NUM_CLASSES)
            from_logits = _json_bool(data["from_logits"], "from_logits")
            if data.get("task") != cls.task:
                raise ValueError(f"task must be {cls.task!r}")
            sums = Sums.from_dict(data, *cls._LAYOUT, width=num_classes, nonnegative=cls._NONNEGATIVE_SUMS,
                                  first_rows=cls._FIRST_ROWS)
            clusters = None
            if data.get("groups") is not None:
                from fastce.groups import GroupSums

                clusters = GroupSums.from_dict(data["groups"])
                if clusters.n_values != len(cls.GROUPED_MEANS):
                    raise ValueError(f"group sums of {clusters.n_values} values, not {len(cls.GROUPED_MEANS)}")
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"malformed fastce state: {malformed_reason(exc)}", argument="state") from exc
        state = cls(num_classes, from_logits, sums, clusters)
        state._check_invariants()
        return state

    def _check_invariants(self) -> None:
        pass

    def _clustered(self, metrics: Metrics) -> Metrics:
        """``metrics`` with the clustered errors of the group sums (rows read with groups=), if any."""
        if self.clusters is None:
            return metrics
        from fastce.groups import clustered_means

        return clustered_means(metrics, self.clusters, self.GROUPED_MEANS)


class MultilabelState(_SumsState):
    """Multi-label: C independent yes/no questions per row (``kernels_binary.bce_blocks``)."""

    task = "multilabel"
    FORMAT = "fastce.multilabel-state/1"
    _LAYOUT = (KB.EXACT_SUMS, KB.NUM_COUNTS, KB.FIRST_COLUMNS)
    # Every exact sum adds terms >= 0 (targets are checked to lie in [0, 1], element losses are >= 0).
    _NONNEGATIVE_SUMS = tuple(range(KB.EXACT_SUMS))
    _FIRST_ROWS = ((KB.N_NONFINITE, KB.FIRST_NONFINITE), (KB.N_BELOW0, KB.FIRST_BELOW0),
                   (KB.N_ABOVE1, KB.FIRST_ABOVE1), (KB.N_BAD_TARGET, KB.FIRST_BAD_TARGET))
    GROUPED_MEANS = ("cross_entropy", "brier", "hamming_accuracy", "subset_accuracy")

    def raise_now(self, nan_policy: str, name: str, *, target_name: str = "y_true") -> None:
        """Errors these rows raise as soon as they are read: bad probabilities or targets, NaN under "raise"."""
        check_bce_sums(self.sums, from_logits=self.from_logits, name=name, target_name=target_name)
        if nan_policy == "raise" and self.sums.count(KB.N_NONFINITE):
            raise_bce_nan_rows(self.sums, name)

    def finalize(self, nan_policy: str = "raise", *, scores_name: str = "scores", target_name: str = "y_true") -> Metrics:
        """Mean per-element binary cross-entropy, subset and Hamming accuracy, per-element Brier."""
        check_nan_policy(nan_policy)
        sums, n_cols = self.sums, self.num_classes
        check_bce_sums(sums, from_logits=self.from_logits, name=scores_name, target_name=target_name)
        omitted = _apply_nan_policy(sums.count(KB.N_NONFINITE), nan_policy, lambda: raise_bce_nan_rows(sums, scores_name),
                                    lambda: warn_bce_omitted(sums, scores_name))
        n = sums.count(KB.N_ROWS)
        weight = sums.value(KB.S_WEIGHT)
        if sums.weighted_sums_overflow((KB.S_BRIER, KB.S_HITS, KB.S_SUBSET, KB.S_ARGMAX, KB.S_WEIGHT)):
            raise_weights_overflow("sample_weight", None)  # never inf / inf for a weighted mean
        if omitted is None:  # propagate
            ce = hamming = subset = brier = math.nan
        else:
            _check_counted(n, weight, self.rows_seen)
            ce = per_element_mean(bce_loss_total(sums), weight, n_cols)
            warn_loss_overflow(ce, sums.count(KB.N_INF_LOSS) > 0, scores_name)
            warn_one_hot(sums, n_cols, target_name,
                         f"the multi-label task (task='multilabel') reads each column of {scores_name}",
                         "for one label per row use the multi-class task (task='auto' or task='multiclass': one-hot "
                         "rows are read as their class indices).")
            hamming = per_element_mean(sums.value(KB.S_HITS), weight, n_cols)
            subset = sums.value(KB.S_SUBSET) / weight
            brier = per_element_mean(sums.value(KB.S_BRIER), weight, n_cols)
        stderr, effective = self._errors(n, ce)
        return self._clustered(Metrics(
            n=n, weight_sum=weight, cross_entropy=ce, accuracy=subset, top_k_accuracy={1: subset},
            n_omitted=omitted or 0, num_classes=n_cols, from_logits=self.from_logits, brier=brier,
            task="multilabel", hamming_accuracy=hamming, subset_accuracy=subset, stderr=stderr,
            n_effective=effective,
        ))

    def _errors(self, n: int, ce: float) -> tuple[dict, float]:
        """Standard errors of the multi-label means, rows as the units (a row's labels are not independent)."""
        sums, n_cols = self.sums, self.num_classes
        if math.isnan(ce):
            nan = math.nan
            return {k: nan for k in ("cross_entropy", "brier", "hamming_accuracy")} | {"top_k_accuracy": {1: nan}}, nan
        ints = _exactsum.to_ints(sums.sums)  # every accumulator converted once

        def error(total, q1, q2, per_label=True):
            if sums.nonfinite[[KB.S_WEIGHT, total, KB.S_W2, q1, q2]].any():
                return unknown_error()
            if errorbars.squares_underflow(n, ints[KB.S_W2], ints[q2], ints[total], 1 << _exactsum.OFFSET):
                warnings.warn(errorbars.SMALL_WEIGHTS, FastCEWarning, stacklevel=user_stacklevel())
                return math.nan
            return errorbars.error_of_sums(n, ints[KB.S_WEIGHT], ints[total], ints[KB.S_W2], ints[q1], ints[q2],
                                           scale_down=n_cols if per_label else 1.0)

        subset = error(KB.S_SUBSET, KB.S_SUBSET_Q, KB.S_SUBSET_Q, per_label=False)
        stderr = {
            "cross_entropy": math.inf if ce == math.inf else error(KB.S_LOSS, KB.S_LOSS_Q1, KB.S_LOSS_Q2),
            "brier": error(KB.S_BRIER, KB.S_BRIER_Q1, KB.S_BRIER_Q2),
            "hamming_accuracy": error(KB.S_HITS, KB.S_HITS_Q1, KB.S_HITS_Q2),
            "subset_accuracy": subset,
            "top_k_accuracy": {1: subset},
        }
        w, w2 = sums.value(KB.S_WEIGHT), sums.value(KB.S_W2)
        return stderr, (w * w / w2 if w2 > 0 else math.nan)


class SoftState(_SumsState):
    """Soft targets: rows of the target are probability distributions (``kernels_soft.soft_blocks``)."""

    task = "soft"
    FORMAT = "fastce.soft-state/1"
    _LAYOUT = (KS.NUM_SUMS, KS.NUM_COUNTS, KS.FIRST_COLUMNS)
    # Not the entropy's and KL's sums: a target entry above 1 (rows not summing to 1 are warned of, not refused)
    # has a negative -q log q, and a row's KL may round below 0.
    _NONNEGATIVE_SUMS = (KS.S_LOSS, KS.S_DENOM, KS.S_HITS, KS.S_LOSS2, KS.S_ENTROPY2, KS.S_KL2)
    _FIRST_ROWS = ((KS.N_NONFINITE, KS.FIRST_NONFINITE), (KS.N_BAD_TARGET, KS.FIRST_BAD_TARGET),
                   (KS.N_UNNORMALIZED, KS.FIRST_UNNORMALIZED))
    GROUPED_MEANS = ("cross_entropy", "target_entropy", "kl_divergence", "accuracy")

    def _check_invariants(self) -> None:
        if not self.from_logits:
            raise InputError("malformed fastce state: soft targets are scored against logits only", argument="state")

    def raise_now(self, nan_policy: str, name: str, *, target_name: str = "y_true") -> None:
        raise_bad_soft_targets(self.sums, target_name)
        if nan_policy == "raise" and self.sums.count(KS.N_NONFINITE):
            raise_nonfinite(name, self.sums.count(KS.FIRST_NONFINITE), self.sums.count(KS.N_NONFINITE), from_logits=True)

    def finalize(self, nan_policy: str = "raise", *, scores_name: str = "logits", target_name: str = "y_true") -> Metrics:
        """Cross-entropy against the targets, their entropy, the KL divergence, argmax agreement."""
        check_nan_policy(nan_policy)
        sums = self.sums
        check_soft_sums(sums, target_name)
        nonfinite = sums.count(KS.N_NONFINITE)

        def raise_rows():
            raise_nonfinite(scores_name, sums.count(KS.FIRST_NONFINITE), nonfinite, from_logits=True)

        def warn_rows():
            warnings.warn(
                f"nan_policy='omit': skipped {nonfinite} row(s) whose {scores_name} hold NaN or +inf (first: row "
                f"{sums.count(KS.FIRST_NONFINITE)}); metrics cover the other {sums.count(KS.N_ROWS)} row(s).",
                OmittedRowsWarning,
                stacklevel=user_stacklevel(),
            )

        omitted = _apply_nan_policy(nonfinite, nan_policy, raise_rows, warn_rows)
        n = sums.count(KS.N_ROWS)
        if omitted is None:
            ce = entropy = kl = accuracy = math.nan
        else:
            _check_counted(n, float(n), self.rows_seen)
            infinite = sums.count(KS.N_INF_LOSS) > 0 or sums.nonfinite[KS.S_LOSS] > 0
            ce = math.inf if infinite else sums.value(KS.S_LOSS) / n
            warn_loss_overflow(ce, sums.count(KS.N_INF_LOSS) > 0, scores_name)
            entropy = sums.value(KS.S_ENTROPY) / n
            kl = math.inf if infinite else sums.value(KS.S_KL) / n
            accuracy = sums.value(KS.S_HITS) / n
        return self._clustered(Metrics(
            n=n, weight_sum=float(n), cross_entropy=ce, accuracy=accuracy, top_k_accuracy={1: accuracy},
            n_omitted=omitted or 0, num_classes=self.num_classes, from_logits=True, task="soft",
            target_entropy=entropy, kl_divergence=kl, stderr=self._errors(n, ce, kl), n_effective=float(n),
        ))

    def _errors(self, n: int, ce: float, kl: float) -> dict:
        """Standard errors of the soft-target means (unweighted rows: s / sqrt(n), ddof = 1)."""
        sums = self.sums
        if math.isnan(ce):
            return {k: math.nan for k in ("cross_entropy", "target_entropy", "kl_divergence")} | {"top_k_accuracy": {1: math.nan}}
        count = n << _exactsum.OFFSET  # n unit weights, as an exact accumulator holds their sum
        ints = _exactsum.to_ints(sums.sums)  # every accumulator converted once

        def error(total, squares):
            if sums.nonfinite[[total, squares]].any():
                return unknown_error()
            return errorbars.error_of_sums(n, count, ints[total], count, ints[total], ints[squares])

        return {
            "cross_entropy": math.inf if ce == math.inf else error(KS.S_LOSS, KS.S_LOSS2),
            "target_entropy": error(KS.S_ENTROPY, KS.S_ENTROPY2),
            "kl_divergence": math.inf if kl == math.inf else error(KS.S_KL, KS.S_KL2),
            "top_k_accuracy": {1: error(KS.S_HITS, KS.S_HITS)},  # a hit is 0 or 1: its square is itself
        }
