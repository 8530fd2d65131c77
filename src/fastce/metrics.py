"""The immutable result object returned by every door of fastce."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from types import MappingProxyType
from typing import Mapping

from fastce.errors import InputError

# Fields beyond the common ones that each task computes (the others do not apply to it).
_TASK_FIELDS = {
    "multiclass": ("brier",),
    "binary": ("brier",),
    "multilabel": ("brier", "hamming_accuracy", "subset_accuracy"),
    "soft": ("target_entropy", "kl_divergence"),
}
_OPTIONAL_FIELDS = ("brier", "hamming_accuracy", "subset_accuracy", "target_entropy", "kl_divergence")
# Entries of Metrics.stderr derived from the others in __post_init__.
_DERIVED_ERRORS = ("cross_entropy_bits", "accuracy")


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
    stderr : Mapping[str, float]
        Standard error of each mean over rows: ``"cross_entropy"``,
        ``"cross_entropy_bits"``, ``"accuracy"``, ``"brier"``, and
        ``"top_k_accuracy"`` (a mapping k -> error), and the task's other
        means (``"hamming_accuracy"``, ``"subset_accuracy"``,
        ``"target_entropy"``, ``"kl_divergence"``).  The sample standard
        deviation (ddof=1) over sqrt(n); with weights, the ratio-estimator
        form sqrt(n/(n-1) sum w^2 (x - mean)^2) / sum w.  Multi-label means
        take rows as the units (a row's labels are not independent draws).
    n_effective : float
        Kish's effective number of rows, (sum w)^2 / sum w^2: ``n`` when
        unweighted; the ``n`` of the Wilson intervals of weighted accuracies.
    n_groups : int
        With ``groups=``: the number of groups, and ``stderr`` holds the
        clustered standard errors (each group one draw); 0 otherwise.

    Use :meth:`interval` for confidence intervals.
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
    stderr: Mapping[str, object] = field(default_factory=dict)
    n_effective: float = math.nan
    n_groups: int = 0

    def __eq__(self, other):
        """Field by field, a NaN equal to a NaN (fields not computed are NaN, also after pickling)."""
        if other.__class__ is not self.__class__:
            return NotImplemented
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if not _same(mine, theirs):
                return False
        return True

    __hash__ = None  # a mapping field: not hashable

    def __post_init__(self):
        object.__setattr__(self, "top_k_accuracy", MappingProxyType(dict(self.top_k_accuracy)))
        stderr = dict(self.stderr)
        if stderr and "cross_entropy" in stderr:
            stderr.setdefault("cross_entropy_bits", stderr["cross_entropy"] / math.log(2.0))
        if "top_k_accuracy" in stderr:
            stderr["top_k_accuracy"] = MappingProxyType(dict(stderr["top_k_accuracy"]))
            stderr.setdefault("accuracy", stderr["top_k_accuracy"].get(1, math.nan))
        object.__setattr__(self, "stderr", MappingProxyType(stderr))

    def __reduce__(self):
        # A mappingproxy cannot be pickled; Metrics must be (Dask workers and
        # multiprocessing send results back that way), so rebuild from dicts.
        values = [_plain(getattr(self, f.name)) for f in fields(self)]
        return (type(self), tuple(values))

    def interval(self, name: str, level: float = 0.95, *, k: int | None = None) -> tuple[float, float]:
        """Confidence interval (low, high) of a reported mean at ``level``.

        ``name``: ``"cross_entropy"``, ``"cross_entropy_bits"``,
        ``"perplexity"``, ``"brier"`` (normal, CLT: mean -/+ z stderr;
        perplexity is exp of the cross-entropy interval), ``"accuracy"`` or
        ``"top_k_accuracy"`` with ``k=`` (Wilson score interval over
        ``n_effective`` rows: ``n`` unweighted, Kish's effective size with
        weights); multi-label ``"subset_accuracy"`` (Wilson) and
        ``"hamming_accuracy"`` (normal, over rows); soft targets'
        ``"target_entropy"`` and ``"kl_divergence"`` (normal).

        >>> import numpy as np, fastce
        >>> z = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
        >>> m = fastce.evaluate(np.array([0, 1, 1, 1]), logits=z)
        >>> low, high = m.interval("accuracy")
        >>> round(low, 3), round(high, 3)
        (0.301, 0.954)
        """
        from fastce import errorbars

        errorbars.check_level(level)
        if not self.stderr:
            raise InputError(f"no standard errors for the {self.task!r} task yet: intervals are not available.",
                             argument="name", value=name)
        if name == "perplexity":
            low, high = self.interval("cross_entropy", level)
            return (_exp(low), _exp(high))
        if name in ("cross_entropy", "cross_entropy_bits", "brier", "target_entropy", "kl_divergence") and (
            name in self.stderr
        ):
            return errorbars.normal_interval(getattr(self, name), self.stderr[name], level)
        if name == "hamming_accuracy" and name in self.stderr:
            # Per-element hits are not independent within a row: a CLT interval over rows, kept in [0, 1].
            low, high = errorbars.normal_interval(self.hamming_accuracy, self.stderr[name], level)
            return (max(0.0, low), min(1.0, high))
        if name in ("accuracy", "subset_accuracy") and k is None:
            name, k = "accuracy", 1
        if name in ("accuracy", "top_k_accuracy"):
            if k not in self.top_k_accuracy:
                raise InputError(f"k={k!r} is not among the top-k values computed: {sorted(self.top_k_accuracy)}.",
                                 argument="k", value=k)
            p = self.top_k_accuracy[k]
            n = self.n_effective
            if self.n_groups:
                # Clustered: the Wilson interval over the number of independent
                # rows the clustered error implies, p (1 - p) / se^2 (n / design effect).
                se = self.stderr["top_k_accuracy"][k]
                if math.isnan(se):  # one group: no clustered error, so no interval (not the rows' own Wilson)
                    return (math.nan, math.nan)
                n = p * (1.0 - p) / (se * se) if se > 0 else self.n_effective
            return errorbars.wilson_interval(p, n, level)
        raise InputError(
            f"no interval for {name!r} in a {self.task!r} result: use 'cross_entropy', 'cross_entropy_bits', "
            "'perplexity', 'accuracy', 'top_k_accuracy' (with k=), and where they apply 'brier', "
            "'hamming_accuracy', 'subset_accuracy', 'target_entropy', 'kl_divergence'.",
            argument="name",
            value=name,
        )

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
        if self.stderr:  # tasks whose errors are not computed yet leave them out
            data["stderr"] = _plain(self.stderr)
            data["n_effective"] = self.n_effective
        if self.n_groups:
            data["n_groups"] = self.n_groups
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
        c = self.num_classes
        classes = f"{c:,} class" if c == 1 else f"{c:,} classes"  # not "1 classes"
        what = {
            "binary": "binary",
            "multilabel": f"multi-label, {c:,} label{'' if c == 1 else 's'}",
            "soft": f"soft targets, {classes}",
        }.get(self.task, classes)
        described = ", ".join([what, mode] + ([str(dtype)] if dtype is not None else []))
        rows = [("rows", f"{self.n:,}  ({described})")]
        if self.n_omitted:
            rows.append(("omitted rows", f"{self.n_omitted:,}  (NaN/+inf scores)"))
        rows.append(("weight sum", f"{self.weight_sum:.10g}"))
        per = " per label" if self.task == "multilabel" else ""
        rows.append((
            "cross-entropy",
            f"{self.cross_entropy:.8g} nats{per}{self._plus_minus('cross_entropy')}  "
            f"({self.cross_entropy_bits:.8g} bits, perplexity {self.perplexity:.6g})",
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
                rows.append(("accuracy" if k == 1 else f"top-{k} accuracy", f"{value:.8g}{self._ci_text(k)}"))
        if self.applies("brier"):
            rows.append(("Brier score", f"{self.brier:.8g}{self._plus_minus('brier')}"))
        if self.n_groups:
            rows.append(("groups", f"{self.n_groups:,}  (error bars clustered by group)"))
        rows += list(extra)
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def _plus_minus(self, name: str) -> str:
        """ " ± stderr" where a finite standard error is known, else nothing."""
        error = self.stderr.get(name, math.nan)
        return f" ± {error:.2g}" if math.isfinite(error) else ""

    def _ci_text(self, k: int) -> str:
        """ "  (95% CI low to high)" of top-k accuracy where known."""
        if not math.isfinite(self.stderr.get("top_k_accuracy", {}).get(k, math.nan)):
            return ""
        low, high = self.interval("top_k_accuracy", k=k)
        return f"  (95% CI {low:.4g} to {high:.4g})"

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        # The constructor call that rebuilds this object: a plain dict for
        # top_k_accuracy, and the NaN-by-default fields of other tasks left out.
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "stderr":
                if not value:
                    continue
                # As given to the constructor: the derived entries (bits, accuracy) are rebuilt from these.
                value = {k: _plain(v) for k, v in value.items() if k not in _DERIVED_ERRORS}
            elif (f.name == "n_effective" and not self.stderr) or (f.name == "n_groups" and not value):
                continue
            elif f.name == "top_k_accuracy":
                value = dict(value)
            elif f.default is not MISSING and _same(value, f.default) and f.name in _OPTIONAL_FIELDS:
                continue
            parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _same(a, b) -> bool:
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return (
            isinstance(a, Mapping) and isinstance(b, Mapping) and a.keys() == b.keys()
            and all(_same(a[k], b[k]) for k in a)
        )
    return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)


def _plain(value):
    """Mappings (mappingproxies included) as plain dicts, recursively."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf
