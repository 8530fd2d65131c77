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
    return f"{x:+.{digits}f}"


def _points(x: float) -> str:
    return f"{100 * x:+.2f} points"


def _ci(low: float, high: float, fmt) -> str:
    return f"95% CI {fmt(low)} to {fmt(high)}"


def _verdict(d) -> str:
    if math.isnan(d.p_value):
        return "no test possible"
    if d.p_value < SIGNIFICANT:
        return "larger than its error bar"
    return f"within the noise (the smallest difference detectable here is about {abs(d.minimum_detectable()):.3g})"


def _test_name(d) -> str:
    return {"McNemar exact": "McNemar", "paired z": "paired z"}.get(d.test, d.test)


def _loss_phrase(d) -> str:
    low, high = d.interval()
    digits = 4 if abs(d.estimate) < 0.01 else 3
    return (f"{_signed(d.estimate, digits)} nats, {_ci(low, high, lambda v: _signed(v, digits))}, "
            f"{_test_name(d)} {_p(d.p_value)}")


def _accuracy_phrase(d) -> str:
    low, high = d.interval()
    return f"{_points(d.estimate)}, {_ci(low, high, lambda v: _signed(100 * v, 2))}, {_test_name(d)} {_p(d.p_value)}"


def _table(c) -> list[str]:
    width = max(6, *(len(n) for n in c.names))
    lines = [f"{'model':<{width}}  {'cross-entropy (nats, 95% CI)':<30}  {'accuracy (95% CI)':<26}  brier"]
    for name in c.names:
        m = c.metrics[name]
        ce_low, ce_high = m.interval("cross_entropy")
        acc_low, acc_high = m.interval("accuracy")
        lines.append(
            f"{name:<{width}}  {f'{m.cross_entropy:.4f} ({ce_low:.4f}-{ce_high:.4f})':<30}  "
            f"{f'{100 * m.accuracy:.2f}% ({100 * acc_low:.2f}-{100 * acc_high:.2f})':<26}  {m.brier:.4f}"
        )
    return lines


def comparison_text(c) -> str:
    first = c.metrics[c.names[0]]
    clustered = f"; error bars clustered over {first.n_groups:,} groups" if first.n_groups else ""
    scored = "binary: 1-D scores of class 1" if c.state.task == "binary" else f"{first.num_classes} classes"
    lines = [f"Comparison of {len(c.names)} models on the same {first.n:,} rows ({scored}{clustered})", ""]
    lines += _table(c)
    lines += ["", "Findings:"]
    if any(math.isnan(c.metrics[n].cross_entropy) for n in c.names):
        lines.append("- Some metrics are NaN (nan_policy='propagate' with non-finite scores): no comparison possible.")
        return "\n".join(lines)
    by_loss = sorted(c.names, key=lambda n: c.metrics[n].cross_entropy)
    by_accuracy = sorted(c.names, key=lambda n: -c.metrics[n].accuracy)
    best, runner = by_loss[0], by_loss[1]
    d = c.delta(runner, best, "cross_entropy")
    lines.append(
        f"- Lowest loss: {best} ({c.metrics[best].cross_entropy:.4f} nats). {runner}, next, is higher by "
        f"{_loss_phrase(d)}: {_verdict(d)}."
    )
    best, runner = by_accuracy[0], by_accuracy[1]
    d = c.delta(best, runner, "accuracy")
    lines.append(
        f"- Highest accuracy: {best} ({100 * c.metrics[best].accuracy:.2f}%). It leads {runner}, next, by "
        f"{_accuracy_phrase(d)}: {_verdict(d)}."
    )
    for a, b in combinations(c.names, 2):
        acc = c.delta(b, a, "accuracy")
        loss = c.delta(b, a, "cross_entropy")
        if math.isnan(acc.estimate) or math.isnan(loss.estimate) or acc.estimate == 0 or loss.estimate == 0:
            continue
        # Disagreement: more often right (accuracy up) and yet a higher loss, or the reverse.
        if (acc.estimate > 0) == (loss.estimate > 0):
            winner, loser = (b, a) if acc.estimate > 0 else (a, b)
            acc_w, loss_w = (acc, loss) if winner == b else (c.delta(a, b, "accuracy"), c.delta(a, b, "cross_entropy"))
            cw = c.confidently_wrong(winner, loser)
            share = cw["loss_difference_share"]
            if not (math.isfinite(share) and share > 0):
                carried = ""
            elif share <= 1.0:
                carried = f", and they carry {100 * share:.0f}% of the loss difference"
            else:
                carried = (f"; they alone add {cw['loss_difference']:+.3f} nats to {winner}'s mean loss, more than "
                           f"the whole difference: on the other rows {winner}'s loss is lower")
            if cw["rows"]:
                why = (f"{100 * cw['row_share']:.2g}% of rows are confidently wrong under {winner} "
                       f"(p(true) < {c.state.confident_below:g}) and right under {loser}{carried}")
            else:
                why = (f"no row is confidently wrong under {winner} and right under {loser}: its right answers are "
                       "less confident, or its wrong ones more")
            lines.append(
                f"- {winner} is right more often than {loser} ({_accuracy_phrase(acc_w)}) but its loss is higher "
                f"({_loss_phrase(loss_w)}): {why}. Accuracy counts mistakes; cross-entropy weighs how confident "
                "each one was."
            )
    for a, b in combinations(c.names, 2):
        r = c.correlation(a, b)
        if math.isfinite(r):
            lines.append(f"- Per-row losses of {a} and {b} correlate at r = {r:.2f}: pairing the rows is what makes "
                         "the error bars of their differences this narrow." if r > 0.3 else
                         f"- Per-row losses of {a} and {b} correlate at r = {r:.2f}.")
    return "\n".join(lines)
