"""The immutable result object returned by every door of fastce."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from types import MappingProxyType
from typing import Mapping

# Fields beyond the common ones that each task computes (the others do not apply to it).
_TASK_FIELDS = {
    "multiclass": ("brier",),
    "binary": ("brier",),
    "multilabel": ("brier", "hamming_accuracy", "subset_accuracy"),
    "soft": ("target_entropy", "kl_divergence"),
}
_OPTIONAL_FIELDS = ("brier", "hamming_accuracy", "subset_accuracy", "target_entropy", "kl_divergence")


@dataclass(frozen=True)
class Metrics:
    """Metrics over the rows counted.

    Attributes
    ----------
    n : int
        Rows counted (after ``nan_policy="omit"`` and ``ignore_index``).
    weight_sum : float
        Sum of the row weights (``n`` when unweighted).
    cross_entropy : float
        Weighted mean negative log-likelihood of the true class, in nats
        (natural log).  From probabilities it is scikit-learn's clipped log
        loss.  It is not a percentage.
    accuracy : float
        Weighted fraction of rows whose highest score is the true class (the
        first index wins ties, as numpy and torch argmax do).
    top_k_accuracy : Mapping[int, float]
        k -> weighted fraction of rows whose true class is among the k highest
        scores (same tie rule).
    n_omitted : int
        Rows skipped because their scores held NaN or +inf (``nan_policy="omit"``).
    num_classes : int
        Number of columns of the score matrix.
    from_logits : bool
        Whether the scores were logits (True) or probabilities (False).
    brier : float
        Weighted mean Brier score, as scikit-learn's ``brier_score_loss``
        (``scale_by_half="auto"``): the mean of sum_j (p_j - [j = y])^2 over
        the classes, halved when there are two classes (then it is the mean
        of (p - y)^2 for the positive class).  From logits, p is the softmax.
        0 is perfect; like cross-entropy it is not a percentage.  Multi-label:
        the mean over elements of (p - y)^2.
    task : str
        What ``evaluate`` inferred from the shapes and targets: "multiclass"
        (one label per row), "binary" (1-D scores), "multilabel" (an (N, C)
        0/1 indicator target: C independent yes/no questions) or "soft"
        (target rows are probability distributions).
    hamming_accuracy, subset_accuracy : float
        Multi-label only (NaN otherwise): the fraction of elements predicted
        right, and of rows with every element right (``accuracy`` is the
        subset accuracy, as scikit-learn's ``accuracy_score``).
    target_entropy, kl_divergence : float
        Soft targets only (NaN otherwise): mean entropy of the target rows and
        mean KL divergence from them to the predicted distribution, in nats;
        ``cross_entropy = target_entropy + kl_divergence``.
    """

    n: int
    weight_sum: float
    cross_entropy: float
    accuracy: float
    top_k_accuracy: Mapping[int, float] = field(default_factory=dict)
    n_omitted: int = 0
    num_classes: int = 0
    from_logits: bool = True
    brier: float = math.nan
    task: str = "multiclass"
    hamming_accuracy: float = math.nan
    subset_accuracy: float = math.nan
    target_entropy: float = math.nan
    kl_divergence: float = math.nan

    def __eq__(self, other):
        """Field by field, a NaN equal to a NaN (fields not computed are NaN, also after pickling)."""
        if other.__class__ is not self.__class__:
            return NotImplemented
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, Mapping):
                if mine.keys() != theirs.keys() or not all(_same(mine[k], theirs[k]) for k in mine):
                    return False
            elif not _same(mine, theirs):
                return False
        return True

    __hash__ = None  # a mapping field: not hashable

    def __post_init__(self):
        object.__setattr__(self, "top_k_accuracy", MappingProxyType(dict(self.top_k_accuracy)))

    def __reduce__(self):
        # A mappingproxy cannot be pickled; Metrics must be (Dask workers and
        # multiprocessing send results back that way), so rebuild from a dict.
        values = [getattr(self, f.name) for f in fields(self)]
        values[[f.name for f in fields(self)].index("top_k_accuracy")] = dict(self.top_k_accuracy)
        return (type(self), tuple(values))

    @property
    def cross_entropy_bits(self) -> float:
        """Cross-entropy in bits (log base 2)."""
        return self.cross_entropy / math.log(2.0)

    @property
    def perplexity(self) -> float:
        """exp(cross_entropy): the effective number of equally likely classes."""
        try:
            return math.exp(self.cross_entropy)
        except OverflowError:
            return math.inf

    def applies(self, name: str) -> bool:
        """Whether the optional field ``name`` (brier, hamming_accuracy, ...) is computed for this task."""
        return name not in _OPTIONAL_FIELDS or name in _TASK_FIELDS.get(self.task, _OPTIONAL_FIELDS)

    def to_dict(self) -> dict:
        """Plain-Python dict of the fields that apply to the task (top_k_accuracy keeps its int keys).

        Fields that do not apply (``hamming_accuracy`` of a multiclass
        result, ...) are left out; see the README's "JSON output".
        """
        data = {
            "n": self.n,
            "weight_sum": self.weight_sum,
            "cross_entropy": self.cross_entropy,
            "cross_entropy_bits": self.cross_entropy_bits,
            "perplexity": self.perplexity,
            "accuracy": self.accuracy,
            "top_k_accuracy": dict(self.top_k_accuracy),
            "n_omitted": self.n_omitted,
            "num_classes": self.num_classes,
            "from_logits": self.from_logits,
            "task": self.task,
        }
        for name in _OPTIONAL_FIELDS:
            if self.applies(name):
                data[name] = getattr(self, name)
        return data

    def to_json(self, **kwargs) -> str:
        """Strict JSON text of :meth:`to_dict` (top-k keys become strings; inf/NaN the strings "inf", "nan").

        ``kwargs`` go to ``json.dumps`` (``indent=2``, ...); the output is
        strict JSON whatever they say.
        """
        from fastce import _json

        kwargs.pop("allow_nan", None)  # nothing non-finite is left to allow
        return _json.dumps(self.to_dict(), **kwargs)

    def table(self, dtype=None, extra=()) -> str:
        """The result as the ``fastce eval`` command prints it: one line per number that applies to the task.

        ``dtype``: the scores' dtype, named on the first line when given;
        ``extra``: more (name, text) rows, aligned with the others (the report's).
        """
        mode = "logits" if self.from_logits else "probabilities"
        what = {
            "binary": "binary",
            "multilabel": f"multi-label, {self.num_classes:,} labels",
            "soft": f"soft targets, {self.num_classes:,} classes",
        }.get(self.task, f"{self.num_classes:,} classes")
        described = ", ".join([what, mode] + ([str(dtype)] if dtype is not None else []))
        rows = [("rows", f"{self.n:,}  ({described})")]
        if self.n_omitted:
            rows.append(("omitted rows", f"{self.n_omitted:,}  (NaN/+inf scores)"))
        rows.append(("weight sum", f"{self.weight_sum:.10g}"))
        per = " per label" if self.task == "multilabel" else ""
        rows.append((
            "cross-entropy",
            f"{self.cross_entropy:.8g} nats{per}  ({self.cross_entropy_bits:.8g} bits, perplexity {self.perplexity:.6g})",
        ))
        if self.task == "soft":
            rows.append(("target entropy", f"{self.target_entropy:.8g} nats"))
            rows.append(("KL divergence", f"{self.kl_divergence:.8g} nats"))
            rows.append(("argmax agreement", f"{self.accuracy:.8g}"))
        elif self.task == "multilabel":
            rows.append(("subset accuracy", f"{self.subset_accuracy:.8g}  (every label right)"))
            rows.append(("Hamming accuracy", f"{self.hamming_accuracy:.8g}  (per label)"))
        else:
            for k, value in sorted(self.top_k_accuracy.items()):
                rows.append(("accuracy" if k == 1 else f"top-{k} accuracy", f"{value:.8g}"))
        if self.applies("brier"):
            rows.append(("Brier score", f"{self.brier:.8g}"))
        rows += list(extra)
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        # The constructor call that rebuilds this object: a plain dict for
        # top_k_accuracy, and the NaN-by-default fields of other tasks left out.
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "top_k_accuracy":
                value = dict(value)
            elif f.default is not MISSING and _same(value, f.default) and f.name in _OPTIONAL_FIELDS:
                continue
            parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)
