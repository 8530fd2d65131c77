"""``diagnose`` for multi-label scores: a mergeable state and the report derived from it.

:class:`MultilabelDiagnosticsState` holds, for a set of rows, per-label sums
(support, predicted positives, true positives, loss), the loss split and
calibration bins over all elements, and the worst rows: O(C + bins + k)
numbers whatever N is.  It is filled by ``multilabel_kernels`` (one read of
each block of rows) and merges like every fastce state (sums add; worst rows
merge by loss, ties to the lower row), so the numbers do not depend on the
thread count or on how the rows were split.

Precision: every sum is float64 within the kernel's fixed blocks of rows
(counted from row 0), then a double-double (106-bit) sum over blocks, exact
while a sum stays below ~2^53 times its smallest block term (always for the
counts and weights of unweighted rows).

:class:`MultilabelReport` is what :func:`fastce.diagnose` returns for an
(N, C) 0/1 indicator target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from fastce import _accumulate, _config, _json
from fastce import multilabel_kernels as MK
from fastce.diagnostics import MAX_BINS, MAX_DIAGNOSTICS_CLASSES, MAX_WORST, _two_sum_merge, check_options
from fastce.diagnostics import _float_array as _floats
from fastce.diagnostics import _int_array as _ints
from fastce.errors import InputError
from fastce.metrics import Metrics
from fastce.report import _ratio, loss_split_of
from fastce.state import MAX_ROWS, raise_diagnostics_overflow

WORST_COLUMNS = ("row", "loss", "wrong_labels", "worst_label")
TOP_LOSS_LABELS = 10
MULTILABEL_FORMAT = "fastce.multilabel_diagnostics/1"


@dataclass(frozen=True)
class MultilabelOptions:
    """Settings of the multi-label diagnostics; two states merge only when these agree."""

    num_labels: int
    n_bins: int = 15
    worst_k: int = 20
    confident_below: float = 0.01

    def __post_init__(self):
        check_options(self, (("num_labels", 1, MAX_DIAGNOSTICS_CLASSES), ("n_bins", 1, MAX_BINS),
                             ("worst_k", 0, MAX_WORST)))

    def layout(self) -> tuple[int, int, int]:
        return MK.layout(self.num_labels, self.n_bins)


def _empty_worst() -> dict:
    return {
        "row": np.empty(0, dtype=np.int64),
        "loss": np.empty(0),
        "wrong_labels": np.empty(0, dtype=np.int64),
        "worst_label": np.empty(0, dtype=np.int64),
    }


def _merge_worst(a: dict, b: dict, k: int) -> dict:
    if not b["row"].size:
        return a
    joined = {name: np.concatenate([a[name], b[name]]) for name in WORST_COLUMNS}
    order = np.lexsort((joined["row"], -joined["loss"]))[:k]
    return {name: joined[name][order] for name in WORST_COLUMNS}


@dataclass
class MultilabelDiagnosticsState:
    """Accumulators of the multi-label diagnostics for a set of rows (see the module docstring)."""

    options: MultilabelOptions
    hi: np.ndarray  # double-double pairs (hi, lo) of the sums (layout: multilabel_kernels)
    lo: np.ndarray
    counts: np.ndarray
    worst: dict = field(default_factory=_empty_worst)
    weighted: bool = False  # whether any counted row had a weight other than 1
    rows_seen: int = 0

    @classmethod
    def empty(cls, options: MultilabelOptions) -> MultilabelDiagnosticsState:
        size = options.layout()[2]
        return cls(options, np.zeros(size), np.zeros(size), np.zeros(MK.count_size(options.num_labels), dtype=np.int64))

    def merge(self, other: MultilabelDiagnosticsState) -> MultilabelDiagnosticsState:
        """A new state for the rows of ``self`` followed by those of ``other``."""
        if self.options != other.options:
            raise ValueError(f"cannot merge diagnostics with different options: {self.options} vs {other.options}")
        hi, lo = _two_sum_merge(self.hi, self.lo, other.hi, other.lo)
        shifted = dict(other.worst)
        shifted["row"] = other.worst["row"] + self.rows_seen
        return MultilabelDiagnosticsState(
            options=self.options,
            hi=hi,
            lo=lo,
            counts=self.counts + other.counts,
            worst=_merge_worst(self.worst, shifted, self.options.worst_k),
            weighted=self.weighted or other.weighted,
            rows_seen=self.rows_seen + other.rows_seen,
        )

    def copy(self) -> MultilabelDiagnosticsState:
        """A state of its own (see DiagnosticsState.copy)."""
        return replace(self, hi=self.hi.copy(), lo=self.lo.copy(), counts=self.counts.copy(), worst=dict(self.worst))

    def undo_record(self, parts) -> dict:
        """What :meth:`absorb` may change (it rebinds attributes only), for :meth:`restore`."""
        return dict(self.__dict__)

    def restore(self, record) -> None:
        self.__dict__.clear()
        self.__dict__.update(record)

    def absorb(self, parts) -> None:
        """Add the rows of ``parts`` (states of the same options) after those of ``self``, in place, all or nothing
        (see DiagnosticsState.absorb): by merging, O(C) a part."""
        merged = self
        for part in parts:
            merged = merged.merge(part)
        self.__dict__.update(merged.__dict__)

    def values(self) -> np.ndarray:
        return self.hi + self.lo

    def to_dict(self) -> dict:
        """JSON-serialisable and exact (floats round-trip through repr)."""
        o = self.options
        return {
            "format": MULTILABEL_FORMAT,
            "options": {"num_labels": o.num_labels, "n_bins": o.n_bins, "worst_k": o.worst_k,
                        "confident_below": float(o.confident_below)},
            "hi": _json.plain(self.hi),
            "lo": _json.plain(self.lo),
            "counts": self.counts.tolist(),
            "worst": {name: _json.plain(self.worst[name]) for name in WORST_COLUMNS},
            "weighted": self.weighted,
            "rows_seen": self.rows_seen,
        }

    @classmethod
    def from_dict(cls, data: dict) -> MultilabelDiagnosticsState:
        """Inverse of :meth:`to_dict`; refuses anything malformed before allocating."""
        from fastce.state import _json_int, _json_list, malformed_reason

        if not isinstance(data, dict) or data.get("format") != MULTILABEL_FORMAT:
            raise InputError(f"not a fastce multi-label diagnostics state (expected format {MULTILABEL_FORMAT!r})",
                             argument="state")
        try:
            options = data["options"]
            if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
                raise ValueError("options must be a mapping")
            opts = MultilabelOptions(**options)
            rows_seen = _json_int(data["rows_seen"], "rows_seen", low=0)
            size = opts.layout()[2]
            hi = _floats(data["hi"], "hi", size)
            lo = _floats(data["lo"], "lo", size)
            if not (np.isfinite(hi).all() and np.isfinite(lo).all()):
                raise ValueError("hi and lo must be finite")
            counts = _ints(data["counts"], "counts", MK.count_size(opts.num_labels), high=MAX_ROWS * opts.num_labels)
            worst = data["worst"]
            if not isinstance(worst, dict):
                raise ValueError("worst must be a mapping")
            n_worst = len(_json_list(worst["row"], "worst row"))
            if n_worst > opts.worst_k:
                raise ValueError(f"{n_worst} worst rows listed, more than worst_k = {opts.worst_k}")
            highs = {"row": rows_seen - 1, "wrong_labels": opts.num_labels, "worst_label": opts.num_labels - 1}
            worst = {
                name: _ints(worst[name], f"worst {name}", n_worst, high=highs[name]) if name in highs
                else _floats(worst[name], f"worst {name}", n_worst)
                for name in WORST_COLUMNS
            }
            weighted = data["weighted"]
            if not isinstance(weighted, bool):
                raise ValueError(f"weighted must be true or false, got {type(weighted).__name__}")
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"malformed fastce multi-label diagnostics state: {malformed_reason(exc)}",
                             argument="state") from exc
        return cls(opts, hi, lo, counts, worst, weighted, rows_seen)


def _kernel_target(part: np.ndarray) -> np.ndarray:
    from fastce._accumulate_family import as_kernel_target

    return as_kernel_target(part)


def read_multilabel_diagnostics(scores, targets, weights, *, from_logits: bool, options: MultilabelOptions,
                                rows_per_call: int | None = None, float32_math=None) -> MultilabelDiagnosticsState:
    """One read of a validated (N, C) score view and its (N, C) targets into a fresh state.

    ``weights``: float64 (N,) row weights or an empty array.  Rows go to the
    kernel one slice at a time (``rows_per_call``, rounded to whole blocks;
    default: a few MiB of scores), so the scratch never grows with N.
    ``float32_math``: the logits' math (True: float32, None: float64; see
    _accumulate_family.multilabel_float32_math).
    """
    from fastce._accumulate import kernel_input

    n_rows, n_cols = scores.shape
    state = MultilabelDiagnosticsState.empty(options)
    block_rows = _config.block_rows(n_cols)
    if rows_per_call is None:
        blocks = _config.COPY_BYTES_PER_CALL // (8 * block_rows * n_cols)
    else:
        blocks = -(-rows_per_call // block_rows)
    max_blocks = max(1, min(_config.BLOCKS_PER_CALL, blocks, -(-n_rows // block_rows)))
    size = options.layout()[2]
    partials = np.empty((max_blocks, size))
    block_counts = np.empty((max_blocks, MK.count_size(n_cols)), dtype=np.int64)
    step = max_blocks * block_rows
    row_loss = np.empty(min(step, n_rows))
    row_wrong = np.empty(row_loss.shape[0], dtype=np.int64)
    row_worst = np.empty(row_loss.shape[0], dtype=np.int64)
    mode = MK.KB.MODE_LOGITS if from_logits else MK.KB.MODE_PROBA
    empty = kernel_input(np.empty(0))
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        m = stop - start
        nblocks = -(-m // block_rows)
        w = weights[start:stop] if weights.shape[0] else empty
        with _accumulate.threads_for(n_rows * n_cols):  # the kernel lock; small inputs on one thread
            MK.multilabel_blocks(
                kernel_input(scores[start:stop]), _kernel_target(targets[start:stop]), kernel_input(w, np.float64),
                mode, float(options.confident_below), np.int64(options.n_bins), nblocks, block_rows, partials,
                block_counts, row_loss[:m], row_wrong[:m], row_worst[:m], float32_math,
            )
        if MK.fold_partials(partials, block_counts, nblocks, state.hi, state.lo, state.counts):
            raise_diagnostics_overflow(weights.shape[0] != 0, row_loss[:m], n_cols)
        kept = ~np.isnan(row_loss[:m])
        if weights.shape[0]:
            state.weighted = state.weighted or bool((w[kept] != 1.0).any())
        if options.worst_k:
            _fold_worst(state, start, np.flatnonzero(kept), row_loss[:m], row_wrong[:m], row_worst[:m])
    state.rows_seen = n_rows
    return state


def _fold_worst(state, first_row, rows, loss, wrong, worst_label) -> None:
    k = state.options.worst_k
    if state.worst["row"].size == k:
        rows = rows[loss[rows] > state.worst["loss"][-1]]  # a tie loses: these rows come later
    if rows.size > k:
        kth = np.partition(loss[rows], rows.size - k)[rows.size - k]
        above = rows[loss[rows] > kth]
        tied = rows[loss[rows] == kth][: k - above.size]
        rows = np.sort(np.concatenate([above, tied]))
    fresh = {
        "row": rows.astype(np.int64) + first_row,
        "loss": loss[rows].copy(),
        "wrong_labels": wrong[rows].copy(),
        "worst_label": worst_label[rows].copy(),
    }
    state.worst = _merge_worst(state.worst, fresh, k)




@dataclass(frozen=True)
class MultilabelReport:
    """Diagnostics of multi-label scores (C independent yes/no questions per row).

    Attributes
    ----------
    metrics : Metrics
        The same numbers as :func:`fastce.evaluate` (``task == "multilabel"``:
        mean binary cross-entropy per label in nats, subset and Hamming
        accuracy, Brier).
    labels : dict
        Per label (arrays of length C): ``support`` (weight of rows where the
        label is positive, target > 0.5), ``positives`` (their number),
        ``predicted`` (weight predicted positive: z > 0 / p > 0.5),
        ``precision``, ``recall``, ``f1`` (an undefined ratio counts as 0,
        as scikit-learn's ``zero_division=0``), ``mean_loss`` (mean binary
        cross-entropy of that label over the rows, nats), ``loss_share``
        (its share of the total loss); ``macro_f1`` and ``micro_f1``; and
        ``highest_loss``, the labels carrying most of the loss.
    accuracy : dict
        ``subset`` (rows with every label right) and ``hamming`` (labels
        right), side by side.
    loss_split : dict
        Over elements (one per row and label): ``correct``, ``wrong`` and
        ``confidently_wrong`` answers (wrong with p(right answer) below
        ``threshold``), each with ``count``, ``weight``, ``share`` (of the
        weight), ``loss_share`` and ``mean_loss``.
    calibration : dict
        As the multi-class report's, over all elements: an element's
        confidence is the probability of the answer it predicts (p for
        "yes", 1 - p for "no"); ``ece``, ``rms``, ``mce``, ``n_bins``,
        ``mean_confidence``, ``accuracy`` (the Hamming accuracy) and
        per-bin ``bins``.
    worst : list of dict
        The ``worst_k`` rows with the highest row loss (mean over the row's
        labels; ties: lower row first): ``row``, ``loss``, ``wrong_labels``
        and ``worst_label`` (the label with the row's highest loss).

    Examples
    --------
    >>> import numpy as np, fastce
    >>> y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    >>> r = fastce.diagnose(y, logits=np.array([[2.0, -1.0], [1.0, -3.0], [-2.0, 0.5], [-1.0, 4.0]]))
    >>> r.labels["precision"].tolist(), r.labels["recall"].tolist(), r.labels["support"].tolist()
    ([1.0, 0.5], [1.0, 0.5], [2.0, 2.0])
    >>> r.accuracy
    {'subset': 0.5, 'hamming': 0.75}
    >>> r.worst[0]["row"], r.worst[0]["worst_label"], round(r.worst[0]["loss"], 3)
    (3, 1, 2.166)
    """

    metrics: Metrics
    labels: dict
    accuracy: dict
    loss_split: dict
    calibration: dict
    worst: list
    options: dict

    @classmethod
    def from_state(cls, metrics: Metrics, diag: MultilabelDiagnosticsState, *,
                   soft_targets: bool = True) -> MultilabelReport:
        """The report of a merged state and the metrics of the same rows; ``soft_targets``: whether any row's
        targets were soft (then an infinite loss may be a right answer's: see report.loss_split_of)."""
        opts = diag.options
        cal_at, label_at, _ = opts.layout()
        v = diag.values()
        c = opts.num_labels
        split = v[: MK.SPLIT_SIZE]
        counts = diag.counts
        loss_split, total_weight, total_loss = loss_split_of(
            MK, split, counts, opts.confident_below, count_key="count", share_key="share",
            infinite_key="infinite_loss_elements", infinite_are_wrong=not soft_targets)
        per = v[label_at:].reshape(c, MK.LABEL_COLUMNS)
        row_weight = total_weight / c  # every counted row adds its weight once per label
        labels = _labels(per, counts[MK.N_SMALL:].reshape(c, MK.LABEL_COUNTS), row_weight, total_loss)
        cal = v[cal_at:label_at].reshape(opts.n_bins, 3)
        calibration = _calibration(cal, total_weight, opts.n_bins)
        worst = [
            {
                "row": int(diag.worst["row"][i]),
                "loss": float(diag.worst["loss"][i]),
                "wrong_labels": int(diag.worst["wrong_labels"][i]),
                "worst_label": int(diag.worst["worst_label"][i]),
            }
            for i in range(diag.worst["row"].size)
        ]
        return cls(
            metrics=metrics,
            labels=labels,
            accuracy={"subset": metrics.subset_accuracy, "hamming": metrics.hamming_accuracy},
            loss_split=loss_split,
            calibration=calibration,
            worst=worst,
            options={"n_bins": opts.n_bins, "worst_k": opts.worst_k, "confident_below": float(opts.confident_below)},
        )

    def to_dict(self) -> dict:
        """Plain-Python dict (numpy arrays become lists; the metrics as ``Metrics.to_dict``)."""
        return _json.plain(
            {
                "task": "multilabel",
                "metrics": self.metrics.to_dict(),
                "labels": self.labels,
                "accuracy": self.accuracy,
                "loss_split": self.loss_split,
                "calibration": self.calibration,
                "worst": self.worst,
                "options": self.options,
                "summary": self.summary(),
            },
            encode=False,
        )

    def to_json(self, **kwargs) -> str:
        """Strict JSON: non-finite floats become the strings "inf", "-inf", "nan" (README: "JSON output")."""
        kwargs.pop("allow_nan", None)
        return _json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> list:
        """The plain-words findings, one sentence each (also the top of ``str(report)``)."""
        from fastce.multilabel_text import findings

        return findings(self)

    def plot(self, directory) -> list:
        """Write reliability.png and labels.png into ``directory``; returns the paths (needs matplotlib)."""
        from fastce.plots import write_multilabel_plots

        return write_multilabel_plots(self, directory)

    def __str__(self) -> str:
        from fastce.multilabel_text import render

        return render(self)


def _labels(per, counts, row_weight: float, total_loss: float) -> dict:
    support, predicted, tp, loss = (per[:, k] for k in range(MK.LABEL_COLUMNS))
    positives, infinite = counts[:, 0].copy(), counts[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1.0), 0.0)
        recall = np.where(support > 0, tp / np.where(support > 0, support, 1.0), 0.0)
        denom = support + predicted
        f1 = np.where(denom > 0, 2.0 * tp / np.where(denom > 0, denom, 1.0), 0.0)
        mean_loss = np.where(infinite > 0, np.inf, loss / row_weight if row_weight else np.nan)
        share = np.where(infinite > 0, np.nan, loss / total_loss) if math.isfinite(total_loss) and total_loss > 0 \
            else np.full(support.shape, np.nan)
    all_support, all_predicted, all_tp = float(support.sum()), float(predicted.sum()), float(tp.sum())
    micro = 2.0 * all_tp / (all_support + all_predicted) if all_support + all_predicted > 0 else 0.0
    if np.isnan(share).all():
        ranked = np.flatnonzero(infinite > 0)[:TOP_LOSS_LABELS]
    else:
        ranked = np.lexsort((np.arange(share.size), -np.nan_to_num(share, nan=-1.0)))[:TOP_LOSS_LABELS]
    return {
        "support": support.copy(),
        "positives": positives,
        "predicted": predicted.copy(),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_loss": mean_loss,
        "loss_share": share,
        "macro_f1": float(f1.mean()),
        "micro_f1": micro,
        "highest_loss": [
            {"label": int(j), "loss_share": float(share[j]), "mean_loss": float(mean_loss[j]),
             "support": float(support[j]), "precision": float(precision[j]), "recall": float(recall[j]),
             "f1": float(f1[j])}
            for j in ranked
        ],
    }


def _calibration(cal, total_weight: float, n_bins: int) -> dict:
    weight, conf_sum, hits = cal[:, 0], cal[:, 1], cal[:, 2]
    filled = weight > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(filled, conf_sum / np.where(filled, weight, 1.0), np.nan)
        accuracy = np.where(filled, hits / np.where(filled, weight, 1.0), np.nan)
    gap = np.abs(accuracy - confidence)
    frac = weight / total_weight if total_weight else np.zeros_like(weight)
    edges = np.arange(n_bins + 1) / n_bins
    return {
        "ece": float(np.sum(frac[filled] * gap[filled])) if total_weight else math.nan,
        "rms": float(math.sqrt(np.sum(frac[filled] * gap[filled] ** 2))) if total_weight else math.nan,
        "mce": float(gap[filled].max()) if filled.any() else math.nan,
        "n_bins": n_bins,
        "mean_confidence": _ratio(float(conf_sum.sum()), total_weight),
        "accuracy": _ratio(float(hits.sum()), total_weight),
        "bins": {"lower": edges[:-1], "upper": edges[1:], "weight": weight.copy(), "confidence": confidence,
                 "accuracy": accuracy},
    }
