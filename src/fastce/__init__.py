"""fastce: fast, exact cross-entropy and accuracy for very large validation sets.

One numba kernel reads each row of scores once and produces a mergeable
:class:`~fastce.state.State`; every function here is a door onto it.
"""

from fastce.api import diagnose, evaluate
from fastce.compare import Comparison, compare
from fastce.compare_streaming import Comparator
from fastce.errors import FastCEWarning, InputError, OmittedRowsWarning, ProbabilitiesAsLogitsWarning, TopKWarning
from fastce.metrics import Metrics
from fastce.report import Report
from fastce.sklearn_compat import accuracy_score, brier_score_loss, log_loss, top_k_accuracy_score
from fastce.state import State
from fastce.streaming import Evaluator
from fastce.torch_binary import binary_cross_entropy, binary_cross_entropy_with_logits
from fastce.torch_compat import cross_entropy

__version__ = "0.1.0"

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
