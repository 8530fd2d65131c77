"""Mergeable statistics behind ``fastce.diagnose``: one read of the scores.

A :class:`DiagnosticsState` rides along the core kernel: ``score_blocks``
leaves each slice's per-row loss, p(true), p(predicted) and argmax in a
bounded buffer, and :meth:`DiagnosticsState.fold` folds them (in an order
fixed by the rows alone, see ``diagnostics_kernels``) into bins, per-class
sums, the confusion matrix and the worst rows.  Its size is O(C + bins + k), plus C^2
for a dense confusion matrix (C <= ``dense_confusion_max``); above that, the
most frequent confusions are kept in a bounded table.  Never O(N).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from fastce import _config, _exactsum, _json
from fastce import diagnostics_kernels as DK
from fastce import kernels as K
from fastce.errors import InputError
from fastce.state import (
    _MAX_HEX_CHARS, MAX_NUM_CLASSES, MAX_ROWS, State, _from_json_float, _json_int, _json_list, _short, malformed_reason,
    raise_diagnostics_overflow,
)

# Bins of the calibration and p(true) histograms: far above any useful
# resolution, and a bound a state file is checked against before allocating.  Each bin entry is an exact
# accumulator (560 bytes), per thread too: 2**20 bins had asked for 1.6 GiB and kept 0.5 GB after the call.
MAX_BINS = 1 << 12
# A dense confusion matrix holds C x C double-doubles (16 bytes a cell): 4096 classes are 268 MB; 50,000 (allowed
# before, with dense_confusion_max raised) asked for 37 GiB.  Above it the confusion is kept as its sparse pairs.
MAX_DENSE_CONFUSION = 1 << 12
# Classes of a diagnostics state: its per-class sums take ~100 bytes a class (2**31, the State's bound, asked
# for 64 GiB at Evaluator(diagnostics=True) before a row was read); a 4M-class report is far more than anyone reads.
MAX_DIAGNOSTICS_CLASSES = 1 << 22
# Worst rows kept (worst_k): each call's heap and the state hold this many, so it is bounded before anything is
# allocated (2**34 asked of a 600-row diagnose was a MemoryError); a million rows is far more than a report shows.
MAX_WORST = 1 << 20

DIAGNOSTICS_FORMAT = "fastce.diagnostics/2"  # /2: zero_weight_classes, exact bins
WORST_COLUMNS = ("row", "true", "predicted", "p_true", "p_predicted", "loss")


def check_options(options, integer_fields) -> None:
    """Refuse (InputError) integer fields outside their ``(name, low, high)`` bounds and a
    ``confident_below`` outside (0, 1]: the diagnostics options of every task."""
    for name, low, high in integer_fields:
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise InputError(
                f"{name} must be an integer in [{low}, {high}]; got {_short(value)}.", argument=name, value=value
            )
    t = options.confident_below
    if isinstance(t, bool) or not isinstance(t, (int, float, np.floating)) or not 0.0 < float(t) <= 1.0:
        raise InputError(
            f"confident_below is a probability threshold in (0, 1] (default 0.01); got {t!r}.",
            argument="confident_below",
            value=t,
        )


@dataclass(frozen=True)
class DiagnosticsOptions:
    """Settings of the diagnostics; two states merge only when these agree."""

    num_classes: int
    n_bins: int = 15
    hist_bins: int = 20
    worst_k: int = 20
    confident_below: float = 0.01
    dense_confusion_max: int = 1024
    max_pairs: int = 100_000

    def __post_init__(self):
        c = self.num_classes
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool) and MAX_DIAGNOSTICS_CLASSES < c <= MAX_NUM_CLASSES:
            raise InputError(
                f"diagnostics keep sums for every class: {int(c):,} classes is above their limit of "
                f"{MAX_DIAGNOSTICS_CLASSES:,} (2**22); evaluate takes up to {MAX_NUM_CLASSES:,}.",
                argument="num_classes", value=c,
            )
        check_options(self, (
            ("num_classes", 1, MAX_NUM_CLASSES),
            ("n_bins", 1, MAX_BINS),
            ("hist_bins", 1, MAX_BINS),
            ("worst_k", 0, MAX_WORST),
            ("dense_confusion_max", 0, MAX_DENSE_CONFUSION),
            ("max_pairs", 1, MAX_ROWS),
        ))

    @property
    def dense(self) -> bool:
        return self.num_classes <= self.dense_confusion_max

    def layout(self) -> np.ndarray:
        """[C, n_bins, hist_bins, CAL, PTRUE, LOSS, CLASS, CONF] offsets into the flat accumulator."""
        c = self.num_classes
        cal = DK.SPLIT_SIZE
        ptrue = cal + 3 * self.n_bins
        loss = ptrue + 2 * self.hist_bins
        cls = loss + 2 * DK.LOSS_BINS
        conf = cls + DK.CLASS_COLUMNS * c
        size = conf + (c * c if self.dense else 0)
        return np.array([c, self.n_bins, self.hist_bins, cal, ptrue, loss, cls, conf if self.dense else -1, size])


def _empty_worst() -> dict:
    return {
        "row": np.empty(0, dtype=np.int64),
        "true": np.empty(0, dtype=np.int64),
        "predicted": np.empty(0, dtype=np.int64),
        "p_true": np.empty(0),
        "p_predicted": np.empty(0),
        "loss": np.empty(0),
    }


def _two_sum_merge(a_hi, a_lo, b_hi, b_lo):
    """(hi, lo) of (a_hi + a_lo) + (b_hi + b_lo), elementwise, renormalised as ``diagnostics_kernels._add``.

    Exact (so the same as adding the rows one by one) while the pairs' terms
    span < ~106 bits.
    """
    s = a_hi + b_hi
    bp = s - a_hi
    err = (a_hi - (s - bp)) + (b_hi - bp) + (a_lo + b_lo)
    hi = s + err
    return hi, err - (hi - s)


def _zeroed(size: int) -> np.ndarray:
    """A float64 array of zeros, its memory written now, in order.

    np.zeros maps pages that the kernel zeroes on first touch; the dense
    confusion matrix (16 MB at C = 1000) is then touched in random order,
    one page fault per page: 15-17 ms, against 2 ms for this sequential
    fill and 0.6 ms for the same random adds afterwards (measured).
    """
    array = np.empty(size)
    array.fill(0.0)
    return array


@dataclass
class DiagnosticsState:
    """Accumulators of the diagnostics for a set of rows (see module docstring)."""

    options: DiagnosticsOptions
    acc: np.ndarray  # double-double pairs (acc, lo) of the per-class sums and confusion cells ...
    lo: np.ndarray  # ... (their first layout[6] entries, the bins', stay 0: see ``bins``)
    counts: np.ndarray
    # Exact accumulators (``_exactsum``) of the loss split, calibration and histogram sums.
    bins: np.ndarray = field(default_factory=lambda: _exactsum.new_accumulators(0))
    worst: dict = field(default_factory=_empty_worst)
    pair_codes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    pair_weights: np.ndarray = field(default_factory=lambda: np.empty(0))
    pair_lo: np.ndarray = field(default_factory=lambda: np.empty(0))  # their double-double compensations
    pair_error: float = 0.0  # bound on the weight any kept pair may be missing (after pruning)
    weighted: bool = False  # whether any row had a weight other than 1
    rows_seen: int = 0
    # Classes that occur (true or predicted) only in rows of weight 0: present for
    # the macro average as scikit-learn's labels are, though they add no weight.
    zero_weight_classes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @classmethod
    def empty(cls, options: DiagnosticsOptions) -> "DiagnosticsState":
        layout = options.layout()
        size = int(layout[-1])
        return cls(
            options=options,
            acc=_zeroed(size),
            lo=_zeroed(size),
            counts=np.zeros(DK.N_PER_CLASS + options.num_classes, dtype=np.int64),
            bins=_exactsum.new_accumulators(int(layout[6])),
        )

    # -- folding rows -------------------------------------------------------
    def fold(self, first_row: int, labels, weights, stats, pred) -> None:
        """Fold one slice's per-row values (rows numbered from ``first_row``, a block boundary)."""
        losses = DK.scratch("losses", (labels.shape[0],))  # stats[:, 0], contiguous (written by fold_bins)
        self._fold_bins(labels, weights, stats, pred, self.bins, self.counts, losses)
        self._fold_rest(first_row, labels, weights, stats, pred, losses)

    def _fold_bins(self, labels, weights, stats, pred, bins, counts, losses) -> None:
        """fold_bins of one slice into ``bins`` and ``counts``; raises if a block's sum overflowed."""
        opts = self.options
        block_rows = _config.block_rows(opts.num_classes)  # the kernel's blocks: the same rows from every door
        n_chunks = -(-labels.shape[0] // block_rows)
        if n_chunks and DK.fold_bins(labels, weights, stats, pred, float(opts.confident_below), opts.layout(),
                                     block_rows, n_chunks, bins, counts, losses):
            raise_diagnostics_overflow(weights.shape[0] != 0, stats[:, 0])  # weights', or else the losses' overflow

    def _fold_rest(self, first_row: int, labels, weights, stats, pred, losses) -> None:
        """Everything of a slice's fold after _fold_bins (which wrote ``losses``): classes, worst rows, pairs."""
        opts = self.options
        if labels.shape[0]:
            DK.fold_classes(labels, weights, losses, pred, opts.layout(), self.acc, self.lo, self.counts,
                            _config.block_rows(opts.num_classes))
        if opts.worst_k:
            self._fold_worst(first_row, labels, weights, stats, pred, losses)
        if not weights.shape[0] and opts.dense:
            return
        keep = ~np.isnan(losses)  # the rows counted (only these two need them as a mask)
        if weights.shape[0]:
            zero = weights == 0.0
            if zero.any():
                self._add_zero_weight_classes(labels, pred, zero & keep)
            keep &= ~zero
            self.weighted = self.weighted or bool((weights[keep] != 1.0).any())
        if not opts.dense:
            self._fold_pairs(keep & (pred != labels), labels, weights, pred)

    def _add_zero_weight_classes(self, labels, pred, rows) -> None:
        seen = np.concatenate([self.zero_weight_classes, labels[rows], pred[rows]]).astype(np.int64, copy=False)
        self.zero_weight_classes = np.unique(seen)

    def _fold_worst(self, first_row, labels, weights, stats, pred, losses) -> None:
        k = self.options.worst_k
        # Only a loss above the current k-th worst can enter (a tie loses: these rows come after the ones kept).
        floor = float(self.worst["loss"][-1]) if self.worst["row"].size == k else -np.inf
        rows = np.sort(DK.worst_rows(losses, weights, k, floor))  # ascending rows
        fresh = {
            "row": rows.astype(np.int64) + first_row,
            "true": labels[rows].astype(np.int64),
            "predicted": pred[rows].astype(np.int64),
            "p_true": stats[rows, 1].copy(),
            "p_predicted": stats[rows, 2].copy(),
            "loss": stats[rows, 0].copy(),
        }
        self.worst = _merge_worst(self.worst, fresh, k)

    def _fold_pairs(self, wrong, labels, weights, pred) -> None:
        if not wrong.any():
            return
        codes = labels[wrong].astype(np.int64) * self.options.num_classes + pred[wrong]
        w = weights[wrong] if weights.shape[0] else np.ones(codes.size)
        self._add_pairs(codes, w)

    def _add_pairs(self, codes, w, w_lo=None) -> None:
        codes = np.concatenate([self.pair_codes, codes])
        order = np.argsort(codes, kind="stable")
        hi = np.concatenate([self.pair_weights, w])[order]
        lo = np.concatenate([self.pair_lo, np.zeros(w.shape[0]) if w_lo is None else w_lo])[order]
        unique, sums, lows = DK.pair_sums(codes[order], hi, lo)
        cap = self.options.max_pairs
        if unique.size > cap:
            # Keep the heaviest pairs; a pair dropped now and seen again later
            # is short by at most the heaviest weight dropped.
            order = np.lexsort((unique, -sums))
            self.pair_error += float(sums[order[cap]])
            kept = np.sort(order[:cap])
            unique, sums, lows = unique[kept], sums[kept], lows[kept]
        self.pair_codes, self.pair_weights, self.pair_lo = unique, sums, lows

    # -- combining ------------------------------------------------------------
    def copy(self) -> "DiagnosticsState":
        """A state of its own: what :meth:`absorb` changes (the accumulators and counters) copied."""
        return replace(self, acc=self.acc.copy(), lo=self.lo.copy(), counts=self.counts.copy(), bins=self.bins.copy(),
                       worst=dict(self.worst))

    def undo_record(self, parts) -> tuple:
        """What :meth:`absorb` of ``parts`` may change, as it is now, for :meth:`restore`: the attributes (absorb
        rebinds most), the counters and bins (added to in place) and, of the per-class sums and confusion cells
        (added to in place, O(C^2)), the cells the parts' rows reach (O(rows))."""
        opts = self.options
        c, layout = opts.num_classes, opts.layout()
        cls, conf = int(layout[6]), int(layout[7])
        cells = [np.empty(0, dtype=np.int64)]
        for part in parts:
            for _, labels, _, _, pred in getattr(part, "slices", ()):
                labels = labels.astype(np.int64)
                counted = (labels >= 0) & (labels < c) & (pred >= 0) & (pred < c)
                true, predicted = labels[counted], pred[counted].astype(np.int64)
                rows = np.concatenate([true, predicted])
                cells.append((cls + DK.CLASS_COLUMNS * rows[:, None] + np.arange(DK.CLASS_COLUMNS)).ravel())
                if conf >= 0:
                    cells += [conf + true * c + predicted, conf + true * c + true]
        reached = np.unique(np.concatenate(cells))
        return (dict(self.__dict__), self.acc, self.lo, reached, self.acc[reached], self.lo[reached],
                self.bins.copy(), self.counts.copy())

    def restore(self, record) -> None:
        """Back to the state an :meth:`undo_record` recorded (after an absorb of its parts, whole or in part)."""
        attributes, acc, lo, reached, acc_then, lo_then, bins, counts = record
        acc[reached], lo[reached] = acc_then, lo_then
        self.__dict__.clear()
        self.__dict__.update(attributes)
        self.bins[...] = bins
        self.counts[...] = counts

    def absorb(self, parts) -> None:
        """Add, in place, the rows of ``parts`` (DiagnosticsStates, or a small read's :class:`RowsToFold`) after
        those of ``self``, in order: the same bits as merging them; nothing changed when it raises (an interrupt,
        which may land anywhere, is undone by the caller with :meth:`undo_record` and :meth:`restore`).

        A streaming update's diagnostics (see ``fastce.streaming.Evaluator``):
        merging builds a new state, O(C^2) with a dense confusion matrix, and
        so did the fresh state of each read; a batch of 64 rows at C = 1000
        cost 14.7 ms, 700 times its evaluation.  A small read's rows are
        folded here instead, into this state's own arrays: their bins first,
        for every slice of every part, into accumulators of their own (the
        one fold step that can raise: a block's sum overflowing), then the
        rest, which cannot.
        """
        pieces = [piece for part in parts if isinstance(part, RowsToFold) for piece in part.slices]
        for part in parts:
            if not isinstance(part, RowsToFold) and self.options != part.options:
                raise ValueError(f"cannot merge diagnostics with different options: {self.options} vs {part.options}")
        # Every slice's bins into one accumulator (exact: the same bits as one slice at a time), kept zeroed.
        bins = DK.scratch("absorbed_bins", self.bins.shape, np.int64, zeroed=True)
        counts = np.zeros(DK.N_SMALL_COUNTS, dtype=np.int64)
        losses = []
        try:
            for _, labels, weights, stats, pred in pieces:
                losses.append(np.empty(labels.shape[0]))
                self._fold_bins(labels, weights, stats, pred, bins, counts, losses[-1])
            DK.add_exact(self.bins, bins[np.newaxis])
        finally:
            bins[:] = 0
        self.counts[: DK.N_SMALL_COUNTS] += counts
        folded = iter(losses)
        for part in parts:
            if not isinstance(part, RowsToFold):
                self.__dict__.update(self.merge(part).__dict__)
                continue
            for first_row, labels, weights, stats, pred in part.slices:
                self._fold_rest(self.rows_seen + first_row, labels, weights, stats, pred, next(folded))
            self.rows_seen += part.rows_seen

    def merge(self, other: "DiagnosticsState") -> "DiagnosticsState":
        """A new state for the rows of ``self`` followed by those of ``other``."""
        if self.options != other.options:
            raise ValueError(f"cannot merge diagnostics with different options: {self.options} vs {other.options}")
        acc, lo = _two_sum_merge(self.acc, self.lo, other.acc, other.lo)
        bins = self.bins + other.bins
        _exactsum.normalize(bins)
        shifted = dict(other.worst)
        shifted["row"] = other.worst["row"] + self.rows_seen
        merged = DiagnosticsState(
            options=self.options,
            acc=acc,
            lo=lo,
            counts=self.counts + other.counts,
            bins=bins,
            worst=_merge_worst(self.worst, shifted, self.options.worst_k),
            pair_codes=self.pair_codes,
            pair_weights=self.pair_weights,
            pair_lo=self.pair_lo,
            pair_error=self.pair_error + other.pair_error,
            weighted=self.weighted or other.weighted,
            rows_seen=self.rows_seen + other.rows_seen,
            zero_weight_classes=np.union1d(self.zero_weight_classes, other.zero_weight_classes),
        )
        if other.pair_codes.size:
            merged._add_pairs(other.pair_codes, other.pair_weights, other.pair_lo)
        return merged

    # -- reading ----------------------------------------------------------------
    def values(self) -> np.ndarray:
        """The accumulators, compensation applied; the bins' exact sums correctly rounded."""
        values = self.acc + self.lo
        rows = np.flatnonzero(self.bins.any(axis=1))
        for k, total in zip(rows, _exactsum.to_ints(self.bins[rows])):  # one conversion for all (see to_ints)
            values[k] = _exactsum.int_to_float(total)
        return values

    def section(self, name: str, values: np.ndarray | None = None) -> np.ndarray:
        """A named part of ``values`` (default: :meth:`values`; pass it when reading several parts)."""
        opts = self.options
        lay = opts.layout()
        v = self.values() if values is None else values
        c = opts.num_classes
        if name == "split":
            return v[: DK.SPLIT_SIZE]
        if name == "calibration":
            return v[lay[3] : lay[3] + 3 * opts.n_bins].reshape(opts.n_bins, 3)
        if name == "p_true":
            return v[lay[4] : lay[4] + 2 * opts.hist_bins].reshape(opts.hist_bins, 2)
        if name == "loss":
            return v[lay[5] : lay[5] + 2 * DK.LOSS_BINS].reshape(DK.LOSS_BINS, 2)
        if name == "classes":
            return v[lay[6] : lay[6] + DK.CLASS_COLUMNS * c].reshape(c, DK.CLASS_COLUMNS)
        if name == "confusion":
            if not opts.dense:
                return None
            matrix = v[lay[7] : lay[7] + c * c].reshape(c, c)
            # The diagonal is each class's hits (the kernel adds right rows there only: see diagnostics_kernels.
            # _sum_classes_tasks, _count_classes_tasks); states written before that held both, equal.
            # Written into ``v`` itself: values() is a fresh array, and its other sections stay as they are.
            np.fill_diagonal(matrix, v[lay[6] : lay[6] + DK.CLASS_COLUMNS * c].reshape(c, DK.CLASS_COLUMNS)[:, DK.K_HITS])
            return matrix
        raise KeyError(name)

    # -- serialisation ------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-serialisable and exact (floats round-trip through repr)."""
        opts = self.options
        return {
            "format": DIAGNOSTICS_FORMAT,
            "options": {
                "num_classes": opts.num_classes,
                "n_bins": opts.n_bins,
                "hist_bins": opts.hist_bins,
                "worst_k": opts.worst_k,
                "confident_below": float(opts.confident_below),
                "dense_confusion_max": opts.dense_confusion_max,
                "max_pairs": opts.max_pairs,
            },
            "acc": _json.plain(self.acc),
            "lo": _json.plain(self.lo),
            "bins": [_exactsum.to_hex(row) if row.any() else "0x0" for row in self.bins],
            "counts": self.counts.tolist(),
            "worst": {name: _json.plain(self.worst[name]) for name in WORST_COLUMNS},
            "pair_codes": self.pair_codes.tolist(),
            "pair_weights": _json.plain(self.pair_weights),
            "pair_lo": _json.plain(self.pair_lo),
            "pair_error": _json.encode_float(self.pair_error),
            "weighted": self.weighted,
            "rows_seen": self.rows_seen,
            "zero_weight_classes": self.zero_weight_classes.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DiagnosticsState":
        """Inverse of :meth:`to_dict`; refuses anything malformed.

        Options are checked against their bounds, and every array's length
        against the size the options imply, before anything is allocated.
        """
        if not isinstance(data, dict) or data.get("format") != DIAGNOSTICS_FORMAT:
            raise InputError(f"not a fastce diagnostics state (expected format {DIAGNOSTICS_FORMAT!r})", argument="state")
        try:
            options = data["options"]
            if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
                raise ValueError("options must be a mapping")
            opts = DiagnosticsOptions(**options)
            rows_seen = _json_int(data["rows_seen"], "rows_seen", low=0)
            c = opts.num_classes
            size = int(opts.layout()[-1])
            acc = _float_array(data["acc"], "acc", size)
            lo = _float_array(data["lo"], "lo", size)
            if not (np.isfinite(acc).all() and np.isfinite(lo).all()):  # infinite losses are counted, not summed
                raise ValueError("acc and lo must be finite")
            counts = _int_array(data["counts"], "counts", DK.N_PER_CLASS + c, high=rows_seen)  # row counts
            worst = data["worst"]
            if not isinstance(worst, dict):
                raise ValueError("worst must be a mapping")
            n_worst = len(_json_list(worst["row"], "worst row"))
            if n_worst > opts.worst_k:
                raise ValueError(f"{n_worst} worst rows listed, more than worst_k = {opts.worst_k}")
            highs = {"row": rows_seen - 1, "true": c - 1, "predicted": c - 1}
            worst = {
                name: _int_array(worst[name], f"worst {name}", n_worst, high=highs[name])
                if name in highs
                else _float_array(worst[name], f"worst {name}", n_worst)
                for name in WORST_COLUMNS
            }
            n_pairs = len(_json_list(data["pair_codes"], "pair_codes"))
            if n_pairs > opts.max_pairs or (n_pairs and opts.dense):
                raise ValueError(f"{n_pairs} confusion pairs listed (max_pairs = {opts.max_pairs}, dense = {opts.dense})")
            pair_codes = _int_array(data["pair_codes"], "pair_codes", n_pairs, high=c * c - 1)
            pair_weights = _float_array(data["pair_weights"], "pair_weights", n_pairs)
            pair_lo = _float_array(data["pair_lo"], "pair_lo", n_pairs)
            pair_error = _float_array([data["pair_error"]], "pair_error", 1)[0]
            weighted = data["weighted"]
            if not isinstance(weighted, bool):
                raise ValueError(f"weighted must be true or false, got {type(weighted).__name__}")
            n_zero = len(_json_list(data["zero_weight_classes"], "zero_weight_classes"))
            if n_zero > c:
                raise ValueError(f"{n_zero} zero-weight classes listed, more than the {c} classes")
            zero = _int_array(data["zero_weight_classes"], "zero_weight_classes", n_zero, high=c - 1)
            n_bins = int(opts.layout()[6])
            bins = _json_list(data["bins"], "bins")
            if len(bins) != n_bins or not all(isinstance(t, str) and len(t) <= _MAX_HEX_CHARS for t in bins):
                raise ValueError(f"bins must be {n_bins} hexadecimal strings")
            state = cls.empty(opts)
            if bins:
                state.bins = np.stack([_exactsum.from_hex(t) for t in bins])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"malformed fastce diagnostics state: {malformed_reason(exc)}", argument="state") from exc
        state.acc, state.lo, state.counts, state.worst = acc, lo, counts, worst
        state.pair_codes, state.pair_weights, state.pair_lo = pair_codes, pair_weights, pair_lo
        state.pair_error, state.weighted, state.rows_seen = float(pair_error), weighted, rows_seen
        state.zero_weight_classes = np.unique(zero)
        return state


def _int_array(values, name: str, length: int, *, high: int) -> np.ndarray:
    """int64 array of a JSON list of ``length`` integers in [0, high]."""
    values = _json_list(values, name)
    if len(values) != length:
        raise ValueError(f"{name} has {len(values)} values, expected {length}")
    return np.array([_json_int(v, name, low=0, high=high) for v in values], dtype=np.int64)


def _float_array(values, name: str, length: int) -> np.ndarray:
    """float64 array of a JSON list of ``length`` numbers (or the strings "inf", "-inf", "nan")."""
    values = _json_list(values, name)
    if len(values) != length:
        raise ValueError(f"{name} has {len(values)} values, expected {length}")
    return np.array([_from_json_float(v) for v in values], dtype=np.float64)


def _merge_worst(a: dict, b: dict, k: int) -> dict:
    if not b["row"].size:
        return a
    joined = {name: np.concatenate([a[name], b[name]]) for name in WORST_COLUMNS}
    order = np.lexsort((joined["row"], -joined["loss"]))[:k]
    return {name: joined[name][order] for name in WORST_COLUMNS}


# Rows of a read whose per-row values may be held for DiagnosticsState.absorb (RowsToFold): 64 bytes a row, 4 MiB.
FOLD_LATER_ROWS = 1 << 16


class RowsToFold:
    """The per-row values of a small read (each slice's ``on_rows`` arguments, copied), for
    :meth:`DiagnosticsState.absorb` to fold into a state once the batch is accepted."""

    def __init__(self, options: DiagnosticsOptions):
        self.options = options
        self.slices = []
        self.rows_seen = 0

    def fold(self, first_row: int, labels, weights, stats, pred) -> None:
        # Copies: the kernel's buffers (stats, pred) are reused by the next slice, and the caller's arrays
        # (labels, weights) may be refilled before the batch is accepted.
        self.slices.append((first_row, labels.copy(), weights.copy(), stats.copy(), pred.copy()))


def read_with_diagnostics(view, labels, weights, *, top_k, from_logits: bool, eps: float, options: DiagnosticsOptions,
                          ignore_label: int = K.NO_LABEL, precision: str = "input", on_rows=None,
                          fold_later: bool = False):
    """One read of validated scores into a fresh (State, DiagnosticsState) pair.

    Rows labelled ``ignore_label`` are left out of both (the kernel gives
    them NaN per-row values, which the diagnostics skip).  ``on_rows``, if
    given, also receives each slice's per-row values (see ``read_scores``).
    ``fold_later``: a read of up to FOLD_LATER_ROWS rows returns their
    values (RowsToFold) instead of a DiagnosticsState, for a caller that
    adds them to its own with DiagnosticsState.absorb.
    """
    from fastce.readers import read_scores

    diag = RowsToFold(options) if fold_later and labels.shape[0] <= FOLD_LATER_ROWS else DiagnosticsState.empty(options)

    def fold(*rows):
        diag.fold(*rows)
        if on_rows is not None:
            on_rows(*rows)

    state = read_scores(view, labels, weights, top_k=top_k, from_logits=from_logits, eps=eps, on_rows=fold,
                        ignore_label=ignore_label, precision=precision)
    diag.rows_seen = state.rows_seen
    return state, diag


def check_state_pair(state: State, diag: DiagnosticsState) -> None:
    if state.num_classes != diag.options.num_classes:
        raise ValueError("the State and the DiagnosticsState describe different class counts")
