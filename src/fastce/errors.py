"""Exceptions and warnings raised by fastce (part of the public contract).

Every error names the argument, the offending value and, where there is one,
the row, and says how to fix the input.  ``InputError`` subclasses
``ValueError`` so that code written against scikit-learn's metrics keeps
catching it.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: names the argument, the value and the row where it was found."""

    def __init__(self, message: str, *, argument: str | None = None, row: int | None = None, value=None):
        super().__init__(message)
        self.argument = argument
        self.row = row
        self.value = value


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
