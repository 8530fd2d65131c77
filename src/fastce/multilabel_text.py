"""``str(report)`` of a multi-label report: the findings in plain words, then the tables."""

from __future__ import annotations

import math

from fastce.report_text import _pct, _table, calibration_tone

# "Much lower": the subset accuracy this far below the Hamming accuracy is worth a sentence.
_SUBSET_GAP = 0.1
# Name the fewest labels carrying at least this share of the loss (at most _MAX_NAMED of them).
_LOSS_COVER = 0.5
_MAX_NAMED = 5


def _names(labels) -> str:
    labels = [str(j) for j in labels]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def findings(report) -> list:
    """One plain sentence per thing a newcomer should notice."""
    m = report.metrics
    c = m.num_classes
    out = [(
        f"Cross-entropy is {m.cross_entropy:.4g} nats per label (mean binary cross-entropy over {m.n:,} rows x "
        f"{c:,} labels; {m.cross_entropy_bits:.4g} bits): an average of -log p(right answer), not a percentage; "
        f"0 is perfect and answering p = 0.5 everywhere gives {math.log(2):.4g}."
    )]
    subset, hamming = report.accuracy["subset"], report.accuracy["hamming"]
    if subset == subset and hamming == hamming:
        if hamming - subset > _SUBSET_GAP:
            out.append(
                f"Subset accuracy (every label of a row right) is {_pct(subset)}, much lower than the Hamming "
                f"accuracy (labels right) of {_pct(hamming)}: a row counts as right only when all {c:,} of its "
                "labels are, so a few wrong labels are enough to make most rows wrong."
            )
        else:
            out.append(f"Subset accuracy (every label of a row right) is {_pct(subset)}, Hamming accuracy (labels "
                       f"right) {_pct(hamming)}.")
    split = report.loss_split
    if split["infinite_loss_elements"]:
        out.append(
            f"{split['infinite_loss_elements']} row-label answer(s) give probability 0 to the right answer (an infinite "
            "logit on the wrong side), so the cross-entropy is infinite whatever the other answers are."
        )
    else:
        out.extend(_loss_labels(report))
        wrong, confident = split["wrong"], split["confidently_wrong"]
        if wrong["count"]:
            out.append(
                f"Wrong answers ({_pct(wrong['share'])} of all row-label answers) carry {_pct(wrong['loss_share'])} "
                f"of the loss (mean {wrong['mean_loss']:.3g} nats, "
                + (f"against {split['correct']['mean_loss']:.3g} for right answers)" if split["correct"]["count"]
                   else "no answer is right)")
                + (
                    f"; {_pct(confident['share'])} are confidently wrong (p(right answer) < {split['threshold']:g}) "
                    f"and carry {_pct(confident['loss_share'])}."
                    if confident["count"] else "."
                )
            )
    never = [j for j in range(c) if report.labels["predicted"][j] == 0]
    if never:
        listed = _names(never[:_MAX_NAMED]) + (" ..." if len(never) > _MAX_NAMED else "")
        out.append(
            f"{len(never)} label(s) are never predicted positive ({listed}): their precision and F1 count as 0."
        )
    cal = report.calibration
    if cal["ece"] == cal["ece"]:
        out.append(f"Calibration over all labels: ECE {cal['ece']:.4f} over {cal['n_bins']} bins; the model is "
                   f"{calibration_tone(cal, 'right')}.")
    return out


def _loss_labels(report) -> list:
    """Which labels carry the loss, when it is concentrated (the fewest covering half of it)."""
    labels = report.labels
    c = len(labels["f1"])
    ranked = [h for h in labels["highest_loss"] if h["loss_share"] == h["loss_share"]]
    if c < 2 or not ranked:
        return []
    named, share = [], 0.0
    for h in ranked[:_MAX_NAMED]:
        named.append(h)
        share += h["loss_share"]
        if share >= _LOSS_COVER:
            break
    even = len(named) / c
    which = "Label" if len(named) == 1 else "Labels"
    verb = "carries" if len(named) == 1 else "carry"
    means = ", ".join(f"{h['mean_loss']:.3g}" for h in named)
    f1s = ", ".join(f"{h['f1']:.2f}" for h in named)
    text = (f"{which} {_names(h['label'] for h in named)} {verb} {_pct(share)} of the loss (mean loss "
            f"{means} nats; F1 {f1s})")
    if share > 1.5 * even:
        text += f", against {_pct(even)} if the loss were spread evenly over the {c} labels."
    else:
        text += ": together, about their even share."
        top = ranked[0]["loss_share"]
        if len(named) > 1 and top > 1.4 / c:
            text = (text[:-1] + f"; label {ranked[0]['label']} alone carries {_pct(top)}, "
                    f"{top * c:.1f}x an even share ({_pct(1 / c)}).")
    return [text]


def render(report) -> str:
    m = report.metrics
    lines = ["fastce diagnostics (multi-label)", "=" * 32, ""]
    lines += [f"- {s}" for s in findings(report)]
    cal = report.calibration
    labels = report.labels
    lines += ["", *m.table(extra=[
        ("ECE / RMS / MCE", f"{cal['ece']:.4g} / {cal['rms']:.4g} / {cal['mce']:.4g}  ({cal['n_bins']} equal-width bins)"),
        ("macro F1", f"{labels['macro_f1']:.6g}   micro F1 {labels['micro_f1']:.6g}"),
    ]).splitlines()]
    split = report.loss_split
    lines += ["", "loss split over row-label answers"]
    rows = [
        (name.replace("_", " "), f"{g['count']:,}", _pct(g["share"]), _pct(g["loss_share"]), f"{g['mean_loss']:.4g}")
        for name, g in ((n, split[n]) for n in ("correct", "wrong", "confidently_wrong"))
    ]
    lines += _table(rows, ("answers", "count", "of answers", "of loss", "mean loss"))
    if labels["highest_loss"]:
        lines += ["", "labels carrying the most loss"]
        rows = [
            (h["label"], _pct(h["loss_share"]), f"{h['mean_loss']:.4g}", f"{h['support']:g}", f"{h['precision']:.3g}",
             f"{h['recall']:.3g}", f"{h['f1']:.3g}")
            for h in labels["highest_loss"]
        ]
        lines += _table(rows, ("label", "of loss", "mean loss", "support", "precision", "recall", "F1"))
    if report.worst:
        lines += ["", f"worst {len(report.worst)} rows (row loss: mean over the row's labels)"]
        rows = [(w["row"], f"{w['loss']:.4g}", w["wrong_labels"], w["worst_label"]) for w in report.worst]
        lines += _table(rows, ("row", "loss", "wrong labels", "worst label"))
    return "\n".join(lines)
