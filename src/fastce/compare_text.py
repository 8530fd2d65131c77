"""``str(Comparison)``: a table of the models with error bars, then findings in plain words."""

from __future__ import annotations

import math
from itertools import combinations

SIGNIFICANT = 0.05  # the level the findings call a difference "real"


def _p(p: float) -> str:
    if math.isnan(p):
        return "p = n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _signed(x: float, digits: int) -> str:
    return _fixed(x, digits, "+")


def _points(x: float) -> str:
    return f"{100 * x:+.2f} points"


def _ci(low: float, high: float, fmt, stderr: float = math.nan) -> str:
    if math.isnan(low) or math.isnan(high):
        return "no interval"
    if stderr == 0.0:  # (nearly) the same difference on every row: a normal interval of zero width says nothing
        return "no interval (the difference is the same, or all but, on every row)"
    return f"95% CI {fmt(low)} to {fmt(high)}"


def _bracket(low: float, high: float, digits: int) -> str:
    """A table's interval, "(low-high)"; "(no interval)" when a bound is not finite (an infinite loss: its
    interval was printed "(-inf-inf)")."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "(no interval)"
    return f"({_fixed(low, digits)}-{_fixed(high, digits)})"


def _fixed(x: float, digits: int, sign: str = "") -> str:
    """x with ``digits`` decimals, or in scientific notation when that would be longer than a line."""
    return f"{x:{sign}.{digits}f}" if not abs(x) >= 1e6 else f"{x:{sign}.{digits}g}"


def _verdict(d) -> str:
    if math.isnan(d.p_value):
        return "no test possible"
    if d.p_value < SIGNIFICANT:
        return "larger than its error bar"
    smallest = abs(d.minimum_detectable())
    if not (math.isfinite(smallest) and smallest > 0.0):  # one row, or no spread: nothing to size the noise by
        return f"within the noise ({d.n:,} row{'' if d.n == 1 else 's'})"
    if d.metric.endswith("accuracy"):  # a share, stated as the estimate is: in points
        return f"within the noise (the smallest difference detectable here is about {100 * smallest:.2g} points)"
    return f"within the noise (the smallest difference detectable here is about {smallest:.3g})"


def _test_name(d) -> str:
    return {"McNemar exact": "McNemar", "paired z": "paired z"}.get(d.test, d.test)


def _loss_phrase(d, unit: str = "nats") -> str:
    if math.isnan(d.estimate):  # an infinite loss on some row: the mean difference is undefined ("+nan nats")
        return "an undefined amount (a row's loss is infinite)"
    low, high = d.interval()
    digits = 4 if abs(d.estimate) < 0.01 else 3
    return (f"{_signed(d.estimate, digits)} {unit}, {_ci(low, high, lambda v: _signed(v, digits), d.stderr)}, "
            f"{_test_name(d)} {_p(d.p_value)}")


def _accuracy_phrase(d) -> str:
    low, high = d.interval()
    return (f"{_points(d.estimate)}, {_ci(low, high, lambda v: _signed(100 * v, 2), d.stderr)}, {_test_name(d)} "
            f"{_p(d.p_value)}")


# Per task: (the table's columns after cross-entropy: (header, Metrics field, as a percentage)), the loss's unit,
# what "accuracy" counts, and why accuracy and loss can disagree.
_TASK_TEXT = {
    "multilabel": ((("subset accuracy (95% CI)", "accuracy", True), ("hamming", "hamming_accuracy", True),
                    ("brier", "brier", False)),
                   "nats per label", "subset accuracy",
                   "Subset accuracy counts rows with every label right; cross-entropy weighs how confident each "
                   "label was."),
    "soft": ((("accuracy (95% CI)", "accuracy", True), ("KL divergence", "kl_divergence", False)),
             "nats", "agreement with the target's most likely class",
             "Accuracy counts agreements with the target's top class; cross-entropy weighs the whole target "
             "distribution."),
}
_CLASS_TEXT = ((("accuracy (95% CI)", "accuracy", True), ("brier", "brier", False)), "nats", "accuracy",
               "Accuracy counts mistakes; cross-entropy weighs how confident each one was.")


def _table(c, columns, unit: str) -> list[str]:
    # The top-k accuracies asked for beyond top-1 (class labels: multi-class, binary), as columns of their own:
    # computed, and in the JSON, they were left out of the text.
    first = c.metrics[c.names[0]]
    if c.state.task not in ("multilabel", "soft"):
        columns = (*columns, *((f"top-{k}", k, True) for k in sorted(first.top_k_accuracy) if k != 1))
    width = max(6, *(len(n) for n in c.names))
    loss_header = f"cross-entropy ({unit}, 95% CI)"
    loss_width = max(30, len(loss_header))
    widths = [max(len(head), 7) for head, _, _ in columns[1:]]  # "100.00%", "0.9889": the header's width at least
    header = f"{'model':<{width}}  {loss_header:<{loss_width}}  {columns[0][0]:<26}  " + "  ".join(
        f"{h:<{w}}" for (h, _, _), w in zip(columns[1:], widths))
    lines = [header.rstrip()]
    for name in c.names:
        m = c.metrics[name]
        ce_low, ce_high = m.interval("cross_entropy")
        acc_low, acc_high = m.interval("accuracy")
        rest = []
        for (head, field, percent), w in zip(columns[1:], widths):
            value = m.top_k_accuracy[field] if isinstance(field, int) else getattr(m, field)
            rest.append(f"{f'{100 * value:.2f}%' if percent else f'{value:.4f}':<{w}}")
        lines.append(
            f"{name:<{width}}  {f'{_fixed(m.cross_entropy, 4)} {_bracket(ce_low, ce_high, 4)}':<{loss_width}}  "
            f"{f'{100 * m.accuracy:.2f}% {_bracket(100 * acc_low, 100 * acc_high, 2)}':<26}  " + "  ".join(rest)
        )
    return [line.rstrip() for line in lines]


def _scored(c, first) -> str:
    if c.state.task == "binary":
        return "binary: 1-D scores of class 1"
    if c.state.task == "multilabel":
        return f"multi-label: {first.num_classes} labels"
    if c.state.task == "soft":
        return f"soft targets over {first.num_classes} classes"
    return f"{first.num_classes} classes"


def comparison_text(c) -> str:
    first = c.metrics[c.names[0]]
    columns, unit, accuracy_name, why_disagree = _TASK_TEXT.get(c.state.task, _CLASS_TEXT)
    groups = f"{first.n_groups:,} group{'' if first.n_groups == 1 else 's'}"
    clustered = f"; error bars clustered over {groups}" if first.n_groups else ""
    rows = {name: c.metrics[name].n for name in c.names}
    if len(set(rows.values())) == 1:
        lines = [f"Comparison of {len(c.names)} models on the same {first.n:,} rows ({_scored(c, first)}{clustered})",
                 ""]
    else:  # nan_policy="omit" left out other rows for each model: the table's means are not over the same rows
        kept = ", ".join(f"{name} {n:,}" for name, n in rows.items())
        lines = [f"Comparison of {len(c.names)} models ({_scored(c, first)}{clustered}); nan_policy='omit' kept "
                 f"different rows for each ({kept}): each model's row of the table is over its own rows, each "
                 "difference below over the rows both models kept", ""]
    lines += _table(c, columns, unit)
    lines += ["", "Findings:"]
    if any(math.isnan(c.metrics[n].cross_entropy) for n in c.names):
        lines.append("- Some metrics are NaN (nan_policy='propagate' with non-finite scores): no comparison possible.")
        return "\n".join(lines)
    shared = len(set(rows.values())) == 1
    best, runner, d = _first_two(c, "cross_entropy", lower=True)
    value = f" ({_fixed(c.metrics[best].cross_entropy, 4)} {unit})" if shared else " (on the rows both kept)"
    if math.isinf(c.metrics[best].cross_entropy) and math.isinf(c.metrics[runner].cross_entropy):
        # Both infinite: neither is lower (the ranking kept the argument order and named one "lowest").
        infinite = [n for n in c.names if math.isinf(c.metrics[n].cross_entropy)]
        lines.append(f"- Lowest loss: none: {'the losses of ' if len(infinite) > 1 else 'the loss of '}"
                     f"{_listed(infinite)} {'are' if len(infinite) > 1 else 'is'} infinite (some row's truth has "
                     "probability 0), so the losses cannot be ranked or compared; the accuracy and Brier score can.")
    elif d.estimate == 0.0:
        lines.append(f"- Lowest loss: {best} and {runner}{value}, tied: the difference is exactly 0.")
    else:
        lines.append(f"- Lowest loss: {best}{value}. {runner}, next, is higher by {_loss_phrase(d, unit)}: "
                     f"{_verdict(d)}.")
    lines.append(_leader(c, "accuracy", accuracy_name, shared))
    if c.state.task == "multilabel":
        lines.append(_leader(c, "hamming_accuracy", "Hamming accuracy (labels right)", shared))
    for a, b in combinations(c.names, 2):
        acc = c.delta(b, a, "accuracy")
        loss = c.delta(b, a, "cross_entropy")
        if math.isnan(acc.estimate) or math.isnan(loss.estimate) or acc.estimate == 0 or loss.estimate == 0:
            continue
        # Disagreement: more often right (accuracy up) and yet a higher loss, or the reverse.
        if (acc.estimate > 0) == (loss.estimate > 0):
            winner, loser = (b, a) if acc.estimate > 0 else (a, b)
            acc_w, loss_w = (acc, loss) if winner == b else (c.delta(a, b, "accuracy"), c.delta(a, b, "cross_entropy"))
            why = _confidently_wrong_phrase(c, winner, loser) if c.state.task in ("multiclass", "binary") else None
            # A difference within the noise is said so here too: the sentence read as a trade-off the data do not
            # show when the line above had called the accuracy lead noise (p = 0.238).
            noise = [what for what, d in (("accuracy", acc_w), ("loss", loss_w)) if not d.p_value < SIGNIFICANT]
            caveat = (f" (the {' and the '.join(noise)} difference{'s are' if len(noise) == 2 else ' is'} within the "
                      "noise: this may be chance)" if noise else "")
            lines.append(
                f"- {winner} is right more often than {loser} ({_accuracy_phrase(acc_w)}) but its loss is higher "
                f"({_loss_phrase(loss_w, unit)}){caveat}" + (f": {why}. " if why else ". ") + why_disagree
            )
    for a, b in combinations(c.names, 2):
        r = c.correlation(a, b)
        if math.isfinite(r):
            lines.append(f"- Per-row losses of {a} and {b} correlate at r = {r:.2f}: pairing the rows is what makes "
                         "the error bars of their differences this narrow." if r > 0.3 else
                         f"- Per-row losses of {a} and {b} correlate at r = {r:.2f}.")
    return "\n".join(lines)


def _listed(names) -> str:
    """"A", "A and B", "A, B and C"."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _first_two(c, field: str, *, lower: bool) -> tuple:
    """(the best model in ``field``, the next, the paired Delta of the worse minus the better (``lower``: a
    loss) or of the better minus the worse (a share)).

    Ranked by each model's own value; where nan_policy="omit" kept other
    rows for each model those are not over the same rows, so the two are
    put in the order of their paired difference, over the rows both kept
    (the ranking said "B, next, is higher by -0.120 nats").
    """
    best, runner = sorted(c.names, key=lambda n: getattr(c.metrics[n], field) * (1 if lower else -1))[:2]
    d = c.delta(runner, best, field) if lower else c.delta(best, runner, field)
    if d.estimate < 0:
        best, runner = runner, best
        d = c.delta(runner, best, field) if lower else c.delta(best, runner, field)
    return best, runner, d


def _leader(c, field: str, name: str, shared: bool) -> str:
    """The finding of the model with the highest ``field`` (a share: accuracy, Hamming accuracy) and its lead
    (``shared``: every model's metrics are over the same rows)."""
    best, runner, d = _first_two(c, field, lower=False)
    value = f" ({100 * getattr(c.metrics[best], field):.2f}%)" if shared else " (on the rows both kept)"
    if d.estimate == 0.0:
        return f"- Highest {name}: {best} and {runner}{value}, tied: the difference is exactly 0."
    return (f"- Highest {name}: {best}{value}. It leads {runner}, next, by {_accuracy_phrase(d)}: {_verdict(d)}"
            f"{_interval_caveat(c, d, best, runner)}.")


def _interval_caveat(c, d, best: str, runner: str) -> str:
    """Where the exact McNemar verdict and the normal interval printed beside it disagree (few rows where the models
    differ: 5 rows, all one way, gave "95% CI +0.06 to +0.94, McNemar p = 0.062: within the noise"), a clause saying
    which to read; "" where they agree."""
    if d.test != "McNemar exact" or math.isnan(d.p_value):
        return ""
    low, high = d.interval()
    if not (math.isfinite(low) and math.isfinite(high)) or (low > 0.0 or high < 0.0) == (d.p_value < SIGNIFICANT):
        return ""
    cells = c.table(runner, best, k=d.k or 1)
    differ = cells["only_a_right"]["rows"] + cells["only_b_right"]["rows"]
    return (f"; the normal interval beside it {'excludes' if low > 0.0 or high < 0.0 else 'includes'} 0, but with "
            f"only {differ:,} row{'' if differ == 1 else 's'} where the two differ it is an approximation: the exact "
            "test decides")


def _confidently_wrong_phrase(c, winner: str, loser: str) -> str:
    """Why a model right more often has the higher loss: its confidently wrong rows (class labels)."""
    cw = c.confidently_wrong(winner, loser)
    share = cw["loss_difference_share"]
    if not (math.isfinite(share) and share > 0):
        carried = ""
    elif share <= 1.0:
        percent = 100 * share  # (.0f said 0% of 0.27%; .2g said 1e+02% of 99.6%)
        carried = f", and they carry {f'{percent:.2g}' if percent < 10 else f'{percent:.0f}'}% of the loss difference"
    else:
        carried = (f"; they alone add {cw['loss_difference']:+.3f} nats to {winner}'s mean loss, more than "
                   f"the whole difference: on the other rows {winner}'s loss is lower")
    if cw["rows"]:
        return (f"{100 * cw['row_share']:.2g}% of rows are confidently wrong under {winner} "
                f"(p(true) < {c.state.confident_below:g}) and right under {loser}{carried}")
    return (f"no row is confidently wrong under {winner} and right under {loser}: its right answers are "
            "less confident, or its wrong ones more")
