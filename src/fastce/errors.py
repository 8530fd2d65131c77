"""Exceptions and warnings raised by fastce (part of the public contract).

Every error names the argument, the offending value and, where there is one,
the row, and says how to fix the input.  ``InputError`` subclasses
``ValueError`` so that code written against scikit-learn's metrics keeps
catching it.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager


class InputError(ValueError):
    """Bad input: names the argument, the value and the row where it was found (and, for (..., C) scores,
    ``position``: the row's index over the leading axes)."""

    def __init__(self, message: str, *, argument: str | None = None, row: int | None = None, value=None,
                 position: tuple | None = None):
        super().__init__(message)
        self.argument = argument
        self.row = row
        self.value = value
        self.position = position


def with_row_named(exc: InputError, row: int, place: str, alone: str | None = None, **fields) -> InputError:
    """``exc`` with its "row N" (N = exc.row) said as ``place`` (a message without one gets ``alone``, or
    ``place``, in parentheses), for row ``row``: an error renumbered or relocated by a caller that knows more of
    where its rows come from."""
    message, count = re.subn(rf"\brow {int(exc.row)}\b", place, str(exc), count=1)
    if not count:
        message = f"{message} ({alone or place})"
    return InputError(message, argument=exc.argument, row=row, value=exc.value, **fields)


@contextmanager
def positions_named(lead: tuple, first_row: int = 0, stream: bool = False):
    """Errors about a row of (..., C) scores, whose rows are their flattened positions, name the position too:
    row 107 of (4, 50, 10) logits is position (2, 7).  ``lead``: the scores' leading axes; ``first_row``: the
    row number of the first position (an Evaluator's rows seen before the batch, ``stream``)."""
    try:
        yield
    except InputError as exc:
        local = None if exc.row is None or exc.position is not None else int(exc.row) - first_row
        if local is None or len(lead) < 2 or not 0 <= local < math.prod(lead):
            raise
        position = []
        for size in reversed(lead):
            local, index = divmod(local, size)
            position.insert(0, index)
        position = tuple(position)
        place = f"position {position} of this batch (row {exc.row} of the stream)" if stream else (
            f"position {position} (row {exc.row} of the {math.prod(lead)} positions)")
        named = with_row_named(exc, exc.row, place, f"at {place}", position=position)
        named.unpositioned = exc  # for a caller naming the place its own way (the command: file, row, position)
        raise named from None


class FastCEWarning(UserWarning):
    """Base class of the warnings fastce emits about the data it was given."""


class OmittedRowsWarning(FastCEWarning, RuntimeWarning):
    """Rows were skipped under ``nan_policy="omit"``."""


class TopKWarning(FastCEWarning):
    """A requested top-k accuracy is 1 by construction: k is at least the number of classes.

    The message is scikit-learn's (``top_k_accuracy_score`` warns the same).
    """


class ProbabilitiesAsLogitsWarning(FastCEWarning):
    """Every row given as logits lies in [0, 1] and sums to 1: probably probabilities (pass ``proba=``)."""
