"""``Report``: what ``fastce.diagnose`` returns, derived from merged states.

Everything here is arithmetic on O(C + bins + k) numbers; the rows were read
once, by the kernels, long before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fastce import _json
from fastce import diagnostics_kernels as DK
from fastce.diagnostics import DiagnosticsState
from fastce.metrics import Metrics
from fastce.state import State

TOP_CONFUSIONS = 20
TOP_LOSS_CLASSES = 10
WORST_SHARE = 0.01  # the "worst 1% of rows"


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def loss_split_of(layout, split, counts, confident_below: float, *, count_key: str, share_key: str,
                  infinite_key: str, infinite_are_wrong: bool = True) -> tuple[dict, float, float]:
    """(loss split, total weight, total loss) of a diagnostics state's "split" sums and counters.

    ``layout`` is the kernel module naming the columns (diagnostics_kernels for
    rows, multilabel_kernels for row-label answers: the same names); the two
    reports name the count, the weight share and the infinite count differently.
    Infinite losses are left out of the sums (their count is kept): with
    ``infinite_are_wrong`` (class labels, 0/1 multi-label targets: an infinite
    loss is p(right answer) = 0) the wrong and confidently wrong means are
    infinite; otherwise (soft multi-label targets, where a right answer's loss
    can be infinite too) every group's mean is unknown (NaN).
    """
    n_inf = int(counts[layout.N_INF])
    total_weight = split[layout.S_W_ALL]
    total_loss = math.inf if n_inf else split[layout.S_L_ALL]

    def group(n, w, loss):
        return {
            count_key: int(n),
            "weight": float(w),
            share_key: _ratio(w, total_weight),
            "loss_share": _ratio(loss, total_loss) if math.isfinite(total_loss) else math.nan,
            "mean_loss": _ratio(loss, w),
        }

    loss_split = {
        "correct": group(counts[layout.N_RIGHT], split[layout.S_W_RIGHT], split[layout.S_L_RIGHT]),
        "wrong": group(counts[layout.N_WRONG], split[layout.S_W_WRONG], split[layout.S_L_WRONG]),
        "confidently_wrong": group(counts[layout.N_CONFWRONG], split[layout.S_W_CONFWRONG],
                                   split[layout.S_L_CONFWRONG]),
        "threshold": float(confident_below),
        infinite_key: n_inf,
    }
    if n_inf:
        # An infinite loss is p(true) = 0: a wrong, confidently wrong answer, left out of the finite loss sums (a
        # mean of 0.0 for a group of such rows only); those groups' means are infinite.
        for name in ("wrong", "confidently_wrong") if infinite_are_wrong else ("correct", "wrong", "confidently_wrong"):
            loss_split[name]["mean_loss"] = math.inf if infinite_are_wrong else math.nan
    return loss_split, total_weight, total_loss


@dataclass(frozen=True)
class Report:
    """Diagnostics of a classifier's scores: why loss and accuracy tell different stories.

    Attributes
    ----------
    metrics : Metrics
        The same numbers as :func:`fastce.evaluate` (cross-entropy in nats,
        accuracy, top-k, Brier).
    loss_split : dict
        For ``"correct"``, ``"wrong"`` and ``"confidently_wrong"`` rows
        (wrong with p(true class) below ``threshold``): ``rows``, ``weight``,
        ``row_share`` (of the weight), ``loss_share`` (of the total loss) and
        ``mean_loss``; plus ``worst_1pct_loss_share`` (share of the loss
        carried by the worst 1% of rows, by weight) and
        ``worst_1pct_exact`` (False when it was interpolated from the loss
        histogram, whose bins are at most 12.5% wide: 8 per power of two).
    worst : list of dict
        The ``worst_k`` rows with the highest loss (ties: lower row first):
        ``row``, ``true``, ``predicted``, ``p_true``, ``p_predicted``, ``loss``.
    calibration : dict
        ``ece``, ``rms`` and ``mce`` (expected, root-mean-square and maximum
        calibration error of the top-1 confidence over equal-width bins; bin
        k holds confidences in (k/B, (k+1)/B], a confidence of 0 in bin 0),
        ``mean_confidence``, ``accuracy``, and ``bins`` (``lower``,
        ``upper``, ``weight``, ``confidence``, ``accuracy`` per bin, for a
        reliability diagram).
    classes : dict
        Per class (arrays of length C): ``support`` (weight of rows of that
        true class), ``rows``, ``predicted`` (weight predicted as it),
        ``recall`` (per-class accuracy), ``precision``, ``f1``,
        ``mean_loss``; ``macro_f1`` and ``weighted_f1`` as scikit-learn
        computes them (over the classes present in y_true or in the
        predictions; an undefined precision or F1 counts as 0); and
        ``highest_loss`` (the classes with the highest mean loss).
    confusion : numpy.ndarray or None
        Weighted (true, predicted) confusion matrix when C <=
        ``dense_confusion_max``, else None.
    top_confusions : list of dict
        The most frequent off-diagonal (true, predicted) pairs with their
        ``weight``; ``confusion_error`` bounds how much weight any of them may
        be missing (0 unless more than ``max_pairs`` distinct pairs occurred).
    histograms : dict
        ``loss`` (``edges``, ``weight``, ``loss``) and ``p_true``
        (``edges``, ``weight``), for plots.
    """

    metrics: Metrics
    loss_split: dict
    worst: list
    calibration: dict
    classes: dict
    confusion: np.ndarray | None
    top_confusions: list
    confusion_error: float
    histograms: dict
    options: dict

    # -- building -----------------------------------------------------------
    @classmethod
    def from_states(
        cls, state: State, diag: DiagnosticsState, *, nan_policy: str = "raise", scores_name: str = "scores",
        stacklevel: int = 4,
    ) -> "Report":
        """The report of merged states; ``stacklevel`` as in ``State.finalize``, one frame further out."""
        metrics = state.finalize(nan_policy, scores_name=scores_name, stacklevel=stacklevel)
        opts = diag.options
        values = diag.values()  # once: a dense confusion matrix makes it C^2 numbers
        split = diag.section("split", values)
        counts = diag.counts
        loss_split, total_weight, total_loss = loss_split_of(
            DK, split, counts, opts.confident_below, count_key="rows", share_key="row_share",
            infinite_key="infinite_loss_rows")
        share, exact = _worst_share(diag, values, total_weight, total_loss)
        loss_split["worst_1pct_loss_share"] = float(share)  # a Python float, as every other entry
        loss_split["worst_1pct_exact"] = exact

        worst = [
            {
                "row": int(diag.worst["row"][i]),
                "true": int(diag.worst["true"][i]),
                "predicted": int(diag.worst["predicted"][i]),
                "p_true": float(diag.worst["p_true"][i]),
                "p_predicted": float(diag.worst["p_predicted"][i]),
                "loss": float(diag.worst["loss"][i]),
            }
            for i in range(diag.worst["row"].size)
        ]
        confusion = diag.section("confusion", values)
        top_confusions = _top_confusions(diag, confusion)
        return cls(
            metrics=metrics,
            loss_split=loss_split,
            worst=worst,
            calibration=_calibration(diag, values, total_weight),
            classes=_classes(diag, values),
            # A view of ``values``, a fresh array of this call's (8 MB at C = 1000: no second copy).
            confusion=confusion,
            top_confusions=top_confusions,
            confusion_error=float(diag.pair_error),
            histograms=_histograms(diag, values),
            options={
                "n_bins": opts.n_bins,
                "hist_bins": opts.hist_bins,
                "worst_k": opts.worst_k,
                "confident_below": float(opts.confident_below),
                "dense_confusion_max": opts.dense_confusion_max,
            },
        )

    # -- output -------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain-Python dict (numpy arrays become lists; the metrics as ``Metrics.to_dict``)."""
        return _json.plain(
            {
                "metrics": self.metrics.to_dict(),
                "loss_split": self.loss_split,
                "worst": self.worst,
                "calibration": self.calibration,
                "classes": self.classes,
                "confusion": self.confusion,
                "top_confusions": self.top_confusions,
                "confusion_error": self.confusion_error,
                "histograms": self.histograms,
                "options": self.options,
                "summary": self.summary(),
            },
            encode=False,
        )

    def to_json(self, **kwargs) -> str:
        """Strict JSON: non-finite floats become the strings "inf", "-inf", "nan" (README: "JSON output")."""
        kwargs.pop("allow_nan", None)  # nothing non-finite is left to allow
        return _json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> list:
        """The plain-words findings, one sentence each (also the top of ``str(report)``)."""
        from fastce.report_text import findings

        return findings(self)

    def __str__(self) -> str:
        from fastce.report_text import render

        return render(self)

    def plot(self, directory) -> list:
        """Write reliability.png, loss_histogram.png and confusion.png into ``directory``; returns the paths.

        Needs matplotlib (``pip install "fastce[plots]"``).
        """
        from fastce.plots import write_plots

        return write_plots(self, directory)


def _worst_share(diag: DiagnosticsState, values, total_weight: float, total_loss: float) -> tuple:
    """Share of the loss carried by the worst 1% of the weight: exact from the worst rows when they cover it."""
    if not math.isfinite(total_loss):
        return 1.0, True
    if total_loss <= 0.0 or total_weight <= 0.0:
        return math.nan, True
    target = WORST_SHARE * total_weight
    worst = diag.worst
    n_worst = worst["row"].size
    if not diag.weighted and n_worst >= math.ceil(target):
        whole = int(math.floor(target))
        loss = math.fsum(worst["loss"][:whole].tolist())
        if whole < n_worst:
            loss += (target - whole) * worst["loss"][whole]
        return loss / total_loss, True
    bins = diag.section("loss", values)
    taken_w = taken_l = 0.0
    for b in range(bins.shape[0] - 1, -1, -1):
        w, wl = bins[b]
        if w <= 0.0:
            continue
        if taken_w + w >= target:
            taken_l += (target - taken_w) / w * wl
            break
        taken_w += w
        taken_l += wl
    return taken_l / total_loss, False


def _calibration(diag: DiagnosticsState, values, total_weight: float) -> dict:
    opts = diag.options
    cal = diag.section("calibration", values)
    weight, conf_sum, hits = cal[:, 0], cal[:, 1], cal[:, 2]
    filled = weight > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(filled, conf_sum / np.where(filled, weight, 1.0), np.nan)
        accuracy = np.where(filled, hits / np.where(filled, weight, 1.0), np.nan)
    gap = np.abs(accuracy - confidence)
    frac = weight / total_weight if total_weight else np.zeros_like(weight)
    ece = float(np.sum(frac[filled] * gap[filled])) if total_weight else math.nan
    rms = float(math.sqrt(np.sum(frac[filled] * gap[filled] ** 2))) if total_weight else math.nan
    mce = float(gap[filled].max()) if filled.any() else math.nan
    edges = np.arange(opts.n_bins + 1) / opts.n_bins
    return {
        "ece": ece,
        "rms": rms,
        "mce": mce,
        "n_bins": opts.n_bins,
        "mean_confidence": _ratio(float(conf_sum.sum()), total_weight),
        "accuracy": _ratio(float(hits.sum()), total_weight),
        "bins": {
            "lower": edges[:-1],
            "upper": edges[1:],
            "weight": weight.copy(),
            "confidence": confidence,
            "accuracy": accuracy,
        },
    }


def _classes(diag: DiagnosticsState, values) -> dict:
    per = diag.section("classes", values)
    support, loss, predicted, hits = per[:, DK.K_SUPPORT], per[:, DK.K_LOSS], per[:, DK.K_PREDICTED], per[:, DK.K_HITS]
    rows = diag.counts[DK.N_PER_CLASS :].copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, hits / np.where(support > 0, support, 1.0), np.nan)
        precision = np.where(predicted > 0, hits / np.where(predicted > 0, predicted, 1.0), np.nan)
        denom = support + predicted
        f1 = np.where(denom > 0, 2.0 * hits / np.where(denom > 0, denom, 1.0), np.nan)
        mean_loss = np.where(support > 0, loss / np.where(support > 0, support, 1.0), np.nan)
    # scikit-learn's labels: classes in y_true or the predictions of any row, whatever its weight.
    present = (support > 0) | (predicted > 0)
    present[diag.zero_weight_classes] = True
    f1_present = np.nan_to_num(f1[present], nan=0.0)
    macro = float(f1_present.mean()) if present.any() else math.nan
    weighted = float(np.sum(f1_present * support[present]) / support.sum()) if support.sum() > 0 else math.nan
    n_inf = int(diag.counts[DK.N_INF])
    if n_inf:
        # Infinite losses are left out of the classes' loss sums: the classes holding them come from the worst rows
        # (infinite losses rank first there); when those are not all listed (more than worst_k), the other classes'
        # means are unknown (NaN), not the finite means of their other rows.
        infinite = diag.worst["loss"] == np.inf
        if infinite.sum() < n_inf:
            mean_loss[support > 0] = np.nan
        mean_loss[np.unique(diag.worst["true"][infinite])] = np.inf
    ranked = np.flatnonzero(support > 0)
    ranked = ranked[np.lexsort((ranked, -mean_loss[ranked]))][:TOP_LOSS_CLASSES]
    return {
        "support": support.copy(),
        "rows": rows,
        "predicted": predicted.copy(),
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "mean_loss": mean_loss,
        "macro_f1": macro,
        "weighted_f1": weighted,
        "highest_loss": [
            {"class": int(c), "mean_loss": float(mean_loss[c]), "support": float(support[c]), "recall": float(recall[c])}
            for c in ranked
        ],
    }


def _top_confusions(diag: DiagnosticsState, confusion) -> list:
    c = diag.options.num_classes
    if confusion is not None:
        codes, weights = DK.heaviest_cells(np.ascontiguousarray(confusion), TOP_CONFUSIONS)
    else:
        codes, weights = diag.pair_codes, diag.pair_weights + diag.pair_lo
        if weights.size > TOP_CONFUSIONS:
            # Only pairs at least as heavy as the TOP_CONFUSIONS-th can be listed.
            kth = np.partition(weights, weights.size - TOP_CONFUSIONS)[weights.size - TOP_CONFUSIONS]
            heavy = weights >= kth
            codes, weights = codes[heavy], weights[heavy]
        order = np.lexsort((codes, -weights))[:TOP_CONFUSIONS]
        codes, weights = codes[order], weights[order]
    return [{"true": int(code // c), "predicted": int(code % c), "weight": float(weight)}
            for code, weight in zip(codes, weights)]


def _histograms(diag: DiagnosticsState, values) -> dict:
    opts = diag.options
    loss = diag.section("loss", values)
    p_true = diag.section("p_true", values)
    return {
        "loss": {"edges": DK.loss_bin_edges(), "weight": loss[:, 0].copy(), "loss": loss[:, 1].copy()},
        "p_true": {"edges": np.arange(opts.hist_bins + 1) / opts.hist_bins, "weight": p_true[:, 0].copy()},
    }
