"""fastce: fast, exact cross-entropy and accuracy for very large validation sets.

One numba kernel reads each row of scores once and produces a mergeable
:class:`~fastce.state.State`; every function here is a door onto it.
"""

import importlib

from fastce.api import diagnose, evaluate
from fastce.compare import Comparison, compare
from fastce.compare_streaming import Comparator
from fastce.errors import FastCEWarning, InputError, OmittedRowsWarning, ProbabilitiesAsLogitsWarning, TopKWarning
from fastce.metrics import Metrics
from fastce.state import State
from fastce.streaming import Evaluator

__version__ = "0.1.0"

# Imported on first use (PEP 562): the report and the scikit-learn and PyTorch doors.  Not
# compare: importing the submodule fastce.compare later would bind the name to the module.
_LAZY = {
    "Report": "fastce.report",
    "accuracy_score": "fastce.sklearn_compat",
    "brier_score_loss": "fastce.sklearn_compat",
    "log_loss": "fastce.sklearn_compat",
    "top_k_accuracy_score": "fastce.sklearn_compat",
    "binary_cross_entropy": "fastce.torch_binary",
    "binary_cross_entropy_with_logits": "fastce.torch_binary",
    "cross_entropy": "fastce.torch_compat",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once: later lookups are plain attribute reads
        return value
    raise AttributeError(f"module 'fastce' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "Comparator",
    "Comparison",
    "Evaluator",
    "FastCEWarning",
    "InputError",
    "Metrics",
    "Report",
    "OmittedRowsWarning",
    "ProbabilitiesAsLogitsWarning",
    "State",
    "TopKWarning",
    "accuracy_score",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "brier_score_loss",
    "compare",
    "cross_entropy",
    "diagnose",
    "evaluate",
    "log_loss",
    "top_k_accuracy_score",
    "__version__",
]
