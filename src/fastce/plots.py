"""PNG plots of a Report (matplotlib is an optional extra, imported here only)."""

from __future__ import annotations

import math
import os

import numpy as np

from fastce.errors import InputError

CONFUSION_PLOT_MAX = 64  # above this many classes, plot the most confused classes only


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError(
            'plots need matplotlib: pip install "fastce[plots]" (or pip install matplotlib)', argument="plots"
        ) from exc
    return plt


def write_plots(report, directory) -> list:
    """reliability.png, loss_histogram.png and confusion.png in ``directory`` (created if needed)."""
    return _write(report, directory, (("reliability.png", _reliability), ("loss_histogram.png", _loss_histogram),
                                      ("confusion.png", _confusion)))


def _write(report, directory, draws) -> list:
    """Each ``(file name, draw(plt, report) -> figure)`` of ``draws`` saved as a PNG in ``directory``."""
    plt = _pyplot()
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, draw in draws:
        fig = draw(plt, report)
        path = os.path.join(directory, name)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def write_multilabel_plots(report, directory) -> list:
    """reliability.png (over every row-label answer) and labels.png (the labels carrying the loss) in ``directory``."""
    reliability = lambda plt, r: _reliability(plt, r, what="answers", confidence="p of the predicted yes/no")  # noqa: E731
    return _write(report, directory, (("reliability.png", reliability), ("labels.png", _label_losses)))


def _label_losses(plt, report):
    """The labels carrying most of the loss: their share of it, against an even spread, with their F1."""
    top = report.labels["highest_loss"]
    n_labels = len(report.labels["f1"])
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * max(len(top), 4) + 1.4))
    names = [f"label {row['label']}" for row in top][::-1]
    shares = [100 * row["loss_share"] for row in top][::-1]
    # An infinite loss (a +-inf logit on the wrong side) leaves every share undefined (NaN): such bars are drawn
    # empty and say so (the axis limits took the NaN and matplotlib raised, losing the report's other plot).
    drawn = [share if math.isfinite(share) else 0.0 for share in shares]
    bars = ax.barh(names, drawn, color="#c44e52", edgecolor="black")
    for bar, row, share in zip(bars, top[::-1], shares):
        undefined = "" if math.isfinite(share) else "share undefined (an infinite loss), "
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f"  {undefined}F1 {row['f1']:.2f}", va="center",
                fontsize=8)
    ax.axvline(100 / n_labels, color="black", linestyle="--", linewidth=1, label=f"even spread ({100 / n_labels:.1f}%)")
    ax.set_xlabel("share of the loss (%)")
    ax.set_xlim(0, max(drawn + [100 / n_labels]) * 1.25)
    ax.set_title(f"Labels carrying most of the loss ({len(top)} of {n_labels})")
    # Under the axis, at its right (inside it, the legend covered the last bar's F1).
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, -0.1), fontsize=8, frameon=False)
    return fig


def _reliability(plt, report, *, what: str = "rows", confidence: str = "top-1 probability"):
    cal = report.calibration
    bins = cal["bins"]
    lower, upper = np.asarray(bins["lower"]), np.asarray(bins["upper"])
    acc, weight = np.asarray(bins["accuracy"], dtype=float), np.asarray(bins["weight"], dtype=float)
    conf = np.asarray(bins["confidence"], dtype=float)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    width = upper - lower
    filled = weight > 0
    top.bar(lower[filled], acc[filled], width=width[filled], align="edge", edgecolor="black", color="#4c72b0", label="accuracy")
    top.bar(
        lower[filled], (conf - acc)[filled], bottom=acc[filled], width=width[filled], align="edge",
        color="#dd8452", alpha=0.45, edgecolor="#dd8452", label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_ylabel("accuracy in bin")
    top.set_ylim(0, 1)
    top.set_title(f"Reliability diagram (ECE {cal['ece']:.4f}, {cal['n_bins']} bins)")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(lower, weight / max(weight.sum(), 1e-300), width=width, align="edge", color="gray", edgecolor="black")
    bottom.set_xlabel(f"confidence ({confidence})")
    bottom.set_ylabel(f"share of {what}")
    bottom.set_xlim(0, 1)
    return fig


def _loss_histogram(plt, report):
    hist = report.histograms["loss"]
    edges = np.asarray(hist["edges"], dtype=float)
    weight = np.asarray(hist["weight"], dtype=float)
    loss = np.asarray(hist["loss"], dtype=float)
    # Drop the open-ended first and last bins' infinite/zero edges for a log axis.
    used = np.flatnonzero(weight > 0)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    # The open-ended bins (loss near 0, and past the last edge: infinite losses) have no width on a log axis.
    inner = used[(used >= 1) & (used <= edges.size - 3)]
    if inner.size:
        used = inner
        lo_edge = edges[max(used[0], 1)]
        hi_edge = edges[min(used[-1] + 1, edges.size - 2)]
        shown = np.arange(max(used[0], 1), min(used[-1], edges.size - 3) + 1)
        left, right = edges[shown], edges[shown + 1]
        total_w = weight.sum()
        total_l = loss.sum()
        # Bins are uneven on a log axis (binary edges): plot shares per decade, not per bin.
        decades = np.log10(right / left)
        ax.bar(left, weight[shown] / total_w / decades, width=right - left, align="edge", color="#4c72b0", alpha=0.7,
               label="rows")
        if total_l > 0:
            ax.bar(left, loss[shown] / total_l / decades, width=right - left, align="edge", color="#c44e52", alpha=0.5,
                   label="loss")
        ax.set_xscale("log")
        ax.set_xlim(lo_edge, hi_edge)
        ax.legend(fontsize=8)
    else:  # a blank plot said nothing: say why
        ax.text(0.5, 0.5, f"no loss between {edges[1]:.2g} and {edges[-2]:.4g} nats to show\n"
                f"(rows: {weight[0]:.6g} of loss below {edges[1]:.2g}, {weight[-1]:.6g} at or above {edges[-2]:.4g})",
                ha="center", va="center", transform=ax.transAxes)
    m = report.metrics
    mean_shown = inner.size > 0 and bool(np.isfinite(m.cross_entropy))
    if mean_shown:
        ax.axvline(m.cross_entropy, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("per-row loss, nats (log scale)" + ("; dashed: mean" if mean_shown else ""))
    ax.set_ylabel("share of rows / of loss, per decade")
    ax.set_title("Where the loss comes from")
    return fig


def confusion_classes(matrix: np.ndarray) -> np.ndarray:
    """The class ids the confusion plot shows: all of them up to CONFUSION_PLOT_MAX, else the most confused.

    Above the limit: the classes with the most off-diagonal weight (as true or
    predicted class), only those that are confused at all, in class order;
    when nothing is confused, the classes with the most weight.
    """
    n = matrix.shape[0]
    if n <= CONFUSION_PLOT_MAX:
        return np.arange(n)
    off = matrix.copy()
    np.fill_diagonal(off, 0.0)
    busy = off.sum(axis=0) + off.sum(axis=1)
    if not (busy > 0).any():
        busy = matrix.sum(axis=0) + matrix.sum(axis=1)
    ranked = np.lexsort((np.arange(n), -busy))[:CONFUSION_PLOT_MAX]
    return np.sort(ranked[busy[ranked] > 0]) if (busy[ranked] > 0).any() else np.sort(ranked)


def _confusion(plt, report):
    matrix = report.confusion
    if matrix is None:
        fig, ax = plt.subplots(figsize=(6, 5.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "too many classes for a dense matrix:\nsee report.top_confusions", ha="center", va="center")
        return fig
    matrix = np.asarray(matrix, dtype=float)
    classes = confusion_classes(matrix)
    many = classes.size > 20
    # constrained layout keeps the title, the labels and the colour bar's ticks apart
    fig, ax = plt.subplots(figsize=(8, 7) if many else (6, 5.2), layout="constrained")
    matrix = matrix[np.ix_(classes, classes)]
    row_sums = matrix.sum(axis=1, keepdims=True)
    shown = np.divide(matrix, row_sums, out=np.zeros_like(matrix), where=row_sums > 0)
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="share of the true class's rows")
    # Every tick names its class id (a subset is not 0..n-1): positions would name the wrong classes.
    names = [str(c) for c in classes]
    size = 9 if not many else (7 if classes.size <= 40 else 5)
    ax.set_xticks(range(classes.size), names, fontsize=size, rotation=90 if many else 0)
    ax.set_yticks(range(classes.size), names, fontsize=size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    subset = "" if classes.size == report.confusion.shape[0] else f"\n{classes.size} most confused of {report.confusion.shape[0]} classes"
    fig.suptitle(f"Confusion matrix, row-normalised{subset}")
    return fig
