"""``str(report)``: the diagnostics in plain words, then the tables."""

from __future__ import annotations

import math


def _pct(x: float) -> str:
    if x != x:
        return "n/a"
    if 0 < x < 0.001:
        return "<0.1%"
    return f"{100 * x:.1f}%"


def _times(x: float) -> str:
    """A ratio in plain digits: two significant ones below 10 (5.1), whole numbers above (150, not 1.5e+02)."""
    return f"{x:.2g}" if x < 10 else f"{x:.0f}"


def findings(report) -> list:
    """One plain sentence per thing a newcomer should notice."""
    m = report.metrics
    split = report.loss_split
    cal = report.calibration
    out = [
        f"Cross-entropy is {m.cross_entropy:.4g} nats per row ({m.cross_entropy_bits:.4g} bits, perplexity "
        f"{m.perplexity:.4g}): an average of -log p(true class), not a percentage; 0 is perfect and "
        f"guessing uniformly among {m.num_classes} classes gives {math.log(max(m.num_classes, 1)):.4g}."
    ]
    if math.isnan(m.cross_entropy):
        # nan_policy="propagate": the metrics are NaN, the split and calibration are those of the other rows (they
        # were stated below without a word, beside a table of NaN metrics).
        out.append("Some rows' scores are NaN (nan_policy='propagate'), so the metrics are NaN; the loss split and "
                   "the calibration below cover the rows with finite scores.")
    wrong, right, confident = split["wrong"], split["correct"], split["confidently_wrong"]
    if split["infinite_loss_rows"]:
        # Logits: -inf for the true class, or +inf for another (a 1-D binary logit of +inf with label 0 was
        # described as "a -inf logit"); probabilities: exactly 0 for it.
        why = "an infinite logit against it" if m.from_logits else "a probability of exactly 0 for it"
        out.append(
            f"{split['infinite_loss_rows']} row(s) give the true class probability 0 ({why}), so the "
            "cross-entropy is infinite whatever the other rows do."
        )
    elif wrong["rows"]:
        against = (f"against {right['mean_loss']:.3g} for correct rows" if right["rows"] else "no row is right")
        out.append(
            f"Accuracy counts mistakes, cross-entropy weighs how confident each one was: the {_pct(wrong['row_share'])} "
            f"of rows that are wrong carry {_pct(wrong['loss_share'])} of the loss (mean loss {wrong['mean_loss']:.3g} "
            f"nats, {against})."
        )
        if confident["rows"]:
            out.append(
                f"{_pct(confident['row_share'])} of rows are confidently wrong (p(true class) < {split['threshold']:g}) "
                f"and carry {_pct(confident['loss_share'])} of the loss"
                + (
                    # (Said of the rows, not of the accuracy: "while accuracy stays high" was printed at 40%.)
                    f", {_times(confident['loss_share'] / confident['row_share'])} times their share of the rows: a "
                    "few such rows raise the loss far more than they lower the accuracy."
                    if confident["loss_share"] > 2 * confident["row_share"]
                    else "."
                )
            )
    share = split["worst_1pct_loss_share"]
    if share == share and not split["infinite_loss_rows"]:
        approx = "" if split["worst_1pct_exact"] else " (estimated from the loss histogram)"
        out.append(f"The worst 1% of rows carry {_pct(share)} of the loss{approx}.")
    if cal["ece"] == cal["ece"]:
        out.append(f"Calibration: ECE {cal['ece']:.4f} over {cal['n_bins']} bins; the model is "
                   f"{calibration_tone(cal, 'accuracy')}.")
    return out


def calibration_tone(cal: dict, right: str) -> str:
    """What the calibration says of the model: well calibrated, over- or under-confident on the whole, or
    mis-calibrated both ways (mean confidence matching ``right`` -- "accuracy", "right" -- while the ECE is
    not small: 0.95 confidence on rows right 55% of the time and 0.55 on rows right 95% of the time was called
    "over-confident" from a gap of 4e-16 between two equal percentages)."""
    gap = cal["mean_confidence"] - cal["accuracy"]
    against = f"mean confidence {_pct(cal['mean_confidence'])} against {_pct(cal['accuracy'])} {right}"
    if abs(gap) < 0.01:
        if cal["ece"] < 0.02:
            return "well calibrated: its confidence matches how often it is right"
        return (f"mis-calibrated both ways: over-confident in some confidence bins and under-confident in others, "
                f"which cancel on the whole ({against})")
    return f"{'over' if gap > 0 else 'under'}-confident: {against}"


def _table(rows, header) -> list:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).rjust(w) for v, w in zip(r, widths))  # noqa: E731
    return [line(header)] + [line(r) for r in rows]


def render(report) -> str:
    m = report.metrics
    lines = ["fastce diagnostics", "=" * 18, ""]
    lines += [f"- {s}" for s in findings(report)]
    cal = report.calibration
    lines += ["", *m.table(extra=[
        ("ECE / RMS / MCE", f"{cal['ece']:.4g} / {cal['rms']:.4g} / {cal['mce']:.4g}  ({cal['n_bins']} equal-width bins)"),
        ("macro F1", f"{report.classes['macro_f1']:.6g}   weighted F1 {report.classes['weighted_f1']:.6g}"),
    ]).splitlines()]
    lines += [
        "",
        "loss split",
    ]
    split = report.loss_split
    rows = [
        (name.replace("_", " "), f"{g['rows']:,}", _pct(g["row_share"]), _pct(g["loss_share"]), f"{g['mean_loss']:.4g}")
        for name, g in ((n, split[n]) for n in ("correct", "wrong", "confidently_wrong"))
    ]
    lines += _table(rows, ("rows", "count", "of rows", "of loss", "mean loss"))
    if report.worst:
        lines += ["", f"worst {len(report.worst)} rows"]
        rows = [
            (w["row"], w["true"], w["predicted"], f"{w['p_true']:.3g}", f"{w['p_predicted']:.3g}", f"{w['loss']:.4g}")
            for w in report.worst
        ]
        lines += _table(rows, ("row", "true", "predicted", "p(true)", "p(pred)", "loss"))
    if report.classes["highest_loss"]:
        lines += ["", "classes with the highest mean loss"]
        rows = [
            (c["class"], f"{c['mean_loss']:.4g}", f"{c['recall']:.3g}", f"{c['support']:g}")
            for c in report.classes["highest_loss"]
        ]
        lines += _table(rows, ("class", "mean loss", "recall", "support"))
    if m.task == "binary" and report.confusion is not None:
        c = report.confusion
        lines += ["", "confusion (weight; rows: true class, columns: predicted)"]
        lines += _table([("true 0", f"{c[0, 0]:g}", f"{c[0, 1]:g}"), ("true 1", f"{c[1, 0]:g}", f"{c[1, 1]:g}")],
                        ("", "predicted 0", "predicted 1"))
    elif report.top_confusions:
        lines += ["", "most frequent confusions"]
        rows = [(c["true"], c["predicted"], f"{c['weight']:g}") for c in report.top_confusions[:10]]
        lines += _table(rows, ("true", "predicted", "weight"))
    return "\n".join(lines)
