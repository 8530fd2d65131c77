"""Checks every door applies to a multi-class or binary State once the scores are read.

Probabilities outside [0, 1] raise, rows that do not sum to one warn, and
logits that all look like probabilities warn: the kernels count each kind
as they read, so none of these costs a pass.
"""

from __future__ import annotations

import warnings

import numpy as np

from fastce import kernels as K
from fastce._warn import user_stacklevel
from fastce.errors import FastCEWarning, InputError, ProbabilitiesAsLogitsWarning
from fastce.state import State


def sum_to_one_tolerance(eps: float) -> float:
    """scikit-learn's test for probability rows: |sum - 1| <= 1e-8 + sqrt(eps)."""
    return 1e-8 + float(np.sqrt(eps))


def check_probability_range(state: State, name: str) -> None:
    """Refuse probabilities outside [0, 1]: they are almost always logits.

    Reports the first offending row, whichever of the two kinds it shows.
    """
    kinds = sorted(
        (
            (K.C_BELOW0, K.FIRST_BELOW0, "below 0", state.minmax[0]),
            (K.C_ABOVE1, K.FIRST_ABOVE1, "above 1", state.minmax[1]),
        ),
        key=lambda kind: int(state.counts[kind[1]]),
    )
    for counter, first, word, value in kinds:
        if state.counts[counter]:
            row = int(state.counts[first])
            raise InputError(
                f"{name} row {row} holds a value {word} (extreme value {value:g}; {int(state.counts[counter])} "
                f"such row(s)): these are not probabilities. If they are logits (raw model outputs), "
                f"pass them as logits= instead.",
                argument=name,
                row=row,
                value=float(value),
            )


def warn_unnormalized(state: State, name: str, *, stacklevel: int | None = None) -> None:
    count = int(state.counts[K.C_UNNORMALIZED])
    if count:
        warnings.warn(
            f"{count} row(s) of {name} do not sum to 1 (first: row {int(state.counts[K.FIRST_UNNORMALIZED])}); "
            "cross-entropy assumes probabilities. Normalise them, or pass logits= if they are raw scores.",
            FastCEWarning,
            stacklevel=user_stacklevel() if stacklevel is None else stacklevel,
        )


_PROBA_ADVICE = "pass them as proba= instead (Evaluator(..., from_logits=False); fastce eval --proba FILE)"


def warn_probabilities_as_logits(
    state: State, name: str, *, stacklevel: int | None = None, advice: str = _PROBA_ADVICE, nan_policy: str = "raise"
) -> None:
    """Warn when every row read as logits lies in [0, 1] and sums to 1: almost surely probabilities.

    Softmax of probabilities squashes every row towards uniform, so the loss,
    Brier score and calibration come out wrong without any error.  The
    kernel counts such rows (``C_PROBA_LIKE``, rows summing to 1 within
    ``sum_to_one_tolerance`` of the input's dtype, the proba= row-sum test),
    so this costs no pass; one warning per call, never per row.  Nothing
    when non-finite rows are about to raise under ``nan_policy``, nor when
    every such row is one-hot (``C_ONE_HOT_LIKE``).
    """
    rows = int(state.counts[K.C_ROWS])
    if nan_policy == "raise" and state.counts[K.C_NONFINITE]:
        return
    like = int(state.counts[K.C_PROBA_LIKE])
    # One-hot rows (max exactly 1) are hand-made logits or hard predictions as
    # often as saturated probabilities: they fit, but alone they prove nothing.
    # One class: every probability row is [1], a value logits take by chance.
    evidence = state.num_classes > 1 and like > int(state.counts[K.C_ONE_HOT_LIKE])
    if state.from_logits and rows and like == rows and evidence:
        every = "the only row of" if rows == 1 else f"all {rows} rows of"
        verbs = "is in [0, 1] and sums" if rows == 1 else "are in [0, 1] and sum"
        warnings.warn(
            f"{every} {name} counted {verbs} to 1: these look like probabilities, not logits, and softmax of "
            f"probabilities gives wrong metrics; {advice}.",
            ProbabilitiesAsLogitsWarning,
            stacklevel=user_stacklevel() if stacklevel is None else stacklevel,
        )


def check_probabilities(state: State, name: str, *, stacklevel: int | None = None, nan_policy: str = "raise") -> None:
    """What every door checks once the scores are read.

    Probabilities: values outside [0, 1] raise; rows not summing to one warn,
    pointing ``stacklevel`` frames up (default: the caller of the function
    calling this).  Logits: a warning when they all look like probabilities
    (unless ``nan_policy`` is about to raise).
    """
    if not state.from_logits:
        check_probability_range(state, name)
        warn_unnormalized(state, name, stacklevel=stacklevel)
    else:
        warn_probabilities_as_logits(state, name, stacklevel=stacklevel, nan_policy=nan_policy)
