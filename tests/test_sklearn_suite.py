"""scikit-learn's own tests, run against fastce's drop-ins.

The tests of ``sklearn/metrics/tests/test_classification.py``,
``test_ranking.py`` and ``test_common.py`` (shipped in the installed
scikit-learn wheel) that involve ``log_loss``, ``accuracy_score`` or
``top_k_accuracy_score`` are re-exported here, so pytest collects them as
tests of this module (named ``test_<sklearn module>__<sklearn test>``).  While
each one runs, those three functions are replaced by fastce's everywhere the
test can reach them:

* the module-level names in the three sklearn test modules and in
  ``sklearn.metrics``;
* the entries of test_common's metric dictionaries (``ALL_METRICS`` ...),
  including ``partial(log_loss, normalize=False)`` style entries;
* parametrization values that are the functions themselves (or partials of
  them), which pytest captured when the sklearn module was imported.

Selection.  A sklearn test is taken when

* its code refers to one of the three functions by name, or
* one of its parametrizations names them (function objects, partials, or the
  metric-dictionary keys such as ``"unnormalized_log_loss"``): only those
  parameter values are kept for that parametrization, or
* its code loops over a test_common metric dictionary without being
  parametrized by metric (e.g. ``test_multilabel_representation_invariance``),
  so our functions run among all the others.

Everything else is left out.  Tests that match but are left out are listed in
``DESELECTED``, tests taken by hand in ``INCLUDED``, each with its reason;
parametrization values dropped everywhere (``polars``: not installed) are in
``_SKIPPED_PARAM_VALUES``.  Every selected case shows up here as a pass or a
failure (none is skipped).

``FASTCE_SKLEARN_SUITE_CONTROL=1`` runs the same selection against
scikit-learn's own functions: a control run, which tells failures of the
harness or of the environment from failures of fastce.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import types
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

import sklearn.metrics  # noqa: E402

import fastce  # noqa: E402

_NAMES = ("log_loss", "accuracy_score", "top_k_accuracy_score", "brier_score_loss")
_ORIGINAL = {name: getattr(sklearn.metrics, name) for name in _NAMES}
_REPLACEMENT = {_ORIGINAL[name]: getattr(fastce, name) for name in _NAMES}
_MODULES = ("test_classification", "test_ranking", "test_common")
_METRIC_DICTS = ("ALL_METRICS", "CLASSIFICATION_METRICS", "CONTINUOUS_CLASSIFICATION_METRICS",
                 "CLASSIFICATION_METRICS_REPORT")

_CONTROL = os.environ.get("FASTCE_SKLEARN_SUITE_CONTROL", "") not in ("", "0")

# sklearn test module -> {test name: reason} for matching tests left out.
DESELECTED = {
    "test_classification": {
        "test_brier_score_loss_invalid_inputs": "fails under -W error with scikit-learn's own function too (an "
        "unordered labels= emits a UserWarning the test does not expect); tests/test_family_sklearn.py checks "
        "the same errors",
    },
    "test_ranking": {},
    "test_common": {
        "test_array_api_compliance": "array-API namespace/device test (array_api_strict / torch "
        "devices); fastce is numpy-only",
        "test_mixed_array_api_namespace_input_compliance": "array-API mixed namespace/device "
        "test; fastce is numpy-only",
        "test_array_api_classification_string_input": "array-API namespace test; fastce is numpy-only",
        "test_array_api_classification_mixed_string_numeric_input": "array-API namespace test; "
        "fastce is numpy-only",
        # Checks that sklearn's metric registries are consistent with each
        # other; it calls no metric.
        "test_symmetry_consistency": "checks sklearn's metric lists against each other, calls no metric",
    },
}

# Tests taken although the rules above miss them, with the reason.
INCLUDED = {
    "test_common": {
        "test_symmetry_tests": "runs test_symmetric_metric('accuracy_score') by hand",
    },
}

# Parameter values dropped from every parametrization, with the reason.
_SKIPPED_PARAM_VALUES = {
    "polars": "polars is not installed (sklearn's test would only skip)",
}


# Warning policy.  This module runs under the project's `-W error`, but these
# are scikit-learn's tests, and scikit-learn's own functions emit
# UndefinedMetricWarning in several of them (k >= n_classes in binary
# top_k_accuracy_score cases; ill-defined precision/recall from the other
# metrics of test_no_averaging_labels) without the test expecting it.
# scikit-learn's CI only turns Deprecation/FutureWarnings into errors, so the
# same is done here for that one category (fastce's UndefinedMetricWarning
# subclasses scikit-learn's when it is loaded).  Every other warning stays an
# error.  tests/test_sklearn_compat.py checks fastce's warnings one by one.
pytestmark = [pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")]
if _CONTROL:
    # scikit-learn's type_of_target casts NaN to int64 in the NaN/inf tests.
    pytestmark.append(pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning"))


def _import_quietly(name):
    # sklearn's test modules use markers (thread_unsafe, ...) that sklearn's
    # conftest registers; importing them elsewhere warns about unknown marks.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(f"sklearn.metrics.tests.{name}")


_SK_MODULES = {name: _import_quietly(name) for name in _MODULES}


def _replacement(value):
    """fastce's function for sklearn's (or a partial of it); None if unrelated."""
    try:
        if value in _REPLACEMENT:
            return _REPLACEMENT[value]
    except TypeError:  # unhashable
        return None
    if isinstance(value, functools.partial):
        inner = _replacement(value.func)
        if inner is not None:
            return functools.partial(inner, *value.args, **value.keywords)
    return None


def _our_keys() -> set:
    keys = set()
    common = _SK_MODULES["test_common"]
    for dict_name in _METRIC_DICTS:
        for key, value in getattr(common, dict_name, {}).items():
            if _replacement(value) is not None:
                keys.add(key)
    return keys


_OUR_KEYS = _our_keys()
_ALL_KEYS = set(getattr(_SK_MODULES["test_common"], "ALL_METRICS", {}))


def _is_ours(value) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_is_ours(v) for v in value)
    if isinstance(value, str):
        return value in _OUR_KEYS
    return _replacement(value) is not None


def _is_metric_choice(value) -> bool:
    """A parametrization value that picks a metric (name or function)."""
    if isinstance(value, (tuple, list)):
        return any(_is_metric_choice(v) for v in value)
    if isinstance(value, str):
        return value in _ALL_KEYS
    return callable(value) and getattr(value, "__module__", "").startswith("sklearn.metrics")


def _code_names(code: types.CodeType) -> set:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _param_values(value):
    """(values, marks, id) of one parametrization entry (pytest.param or plain)."""
    if hasattr(value, "values") and hasattr(value, "marks") and hasattr(value, "id"):
        return value
    return None


def _param_id(value):
    target = value.func if isinstance(value, functools.partial) else value
    if callable(target) and hasattr(target, "__name__"):
        if isinstance(value, functools.partial):
            extra = "-".join(f"{k}={v}" for k, v in value.keywords.items())
            return f"{target.__name__}-{extra}" if extra else target.__name__
        return target.__name__
    return None


def _filter_parametrize(mark, keep):
    """A copy of a parametrize mark keeping the entries ``keep`` accepts."""
    argnames, argvalues = mark.args[0], list(mark.args[1])
    kwargs = dict(mark.kwargs)
    ids = kwargs.get("ids")
    chosen, chosen_ids = [], []
    for index, entry in enumerate(argvalues):
        param = _param_values(entry)
        values = param.values if param is not None else entry
        if keep(values):
            chosen.append(entry)
            if isinstance(ids, (list, tuple)):
                chosen_ids.append(ids[index])
    if isinstance(ids, (list, tuple)):
        kwargs["ids"] = chosen_ids
    elif ids is None:
        kwargs["ids"] = _param_id
    return pytest.mark.parametrize(argnames, chosen, **kwargs).mark


def _drop_skipped(values) -> bool:
    flat = values if isinstance(values, (tuple, list)) else (values,)
    return not any(isinstance(v, str) and v in _SKIPPED_PARAM_VALUES for v in flat)


def _select(module_name: str, name: str, func):
    """The marks to run ``func`` with, or None when it is not selected."""
    if name in DESELECTED[module_name]:
        return None
    marks = list(getattr(func, "pytestmark", []))
    parametrize = [m for m in marks if m.name == "parametrize"]

    def entries(mark):
        for entry in mark.args[1]:
            param = _param_values(entry)
            yield param.values if param is not None else entry

    ours_in_params = [m for m in parametrize if any(_is_ours(v) for v in entries(m))]
    code_names = _code_names(func.__code__)
    direct = bool(code_names & set(_NAMES))
    loops_over_dicts = bool(code_names & set(_METRIC_DICTS)) and not any(
        _is_metric_choice(v) for m in parametrize for v in entries(m)
    )
    included = name in INCLUDED.get(module_name, {})
    if not (ours_in_params or direct or loops_over_dicts or included):
        return None
    new_marks = []
    for mark in marks:
        if mark.name == "parametrize":
            if mark in ours_in_params:
                mark = _filter_parametrize(mark, lambda v: _is_ours(v) and _drop_skipped(v))
            else:
                mark = _filter_parametrize(mark, _drop_skipped)
        new_marks.append(mark)
    return new_marks


def _substituted(value):
    if _CONTROL:
        return value
    replacement = _replacement(value)
    return value if replacement is None else replacement


def _wrap(module_name: str, name: str, func, marks):
    @functools.wraps(func)
    def run(*args, **kwargs):
        args = [_substituted(a) for a in args]
        kwargs = {k: _substituted(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)

    run.pytestmark = marks
    run.__name__ = run.__qualname__ = f"test_{module_name[5:]}__{name[5:]}"
    run.__module__ = __name__
    return run


def _collect():
    selected = {}
    for module_name, module in _SK_MODULES.items():
        for name, func in sorted(vars(module).items()):
            if not (name.startswith("test") and inspect.isfunction(func)):
                continue
            if func.__module__ != module.__name__:
                continue  # imported helper, not one of the module's tests
            marks = _select(module_name, name, func)
            if marks is None:
                continue
            wrapped = _wrap(module_name, name, func, marks)
            selected[wrapped.__name__] = wrapped
    return selected


SELECTED = _collect()
globals().update(SELECTED)


# --------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _fastce_instead_of_sklearn(monkeypatch):
    """Put fastce's functions wherever the sklearn tests look them up."""
    if _CONTROL:
        yield
        return
    for module in [*_SK_MODULES.values(), sklearn.metrics]:
        for name in _NAMES:
            if getattr(module, name, None) is _ORIGINAL[name]:
                monkeypatch.setattr(module, name, getattr(fastce, name))
        for dict_name in _METRIC_DICTS:
            table = getattr(module, dict_name, None)
            if isinstance(table, dict):
                for key, value in list(table.items()):
                    replacement = _replacement(value)
                    if replacement is not None:
                        monkeypatch.setitem(table, key, replacement)
    yield


def _global_random_seeds():
    value = os.environ.get("SKLEARN_TESTS_GLOBAL_RANDOM_SEED")
    if value is None:
        return [42]
    if value == "all":
        return list(range(100))
    if "-" in value:
        start, stop = value.split("-")
        return list(range(int(start), int(stop) + 1))
    return [int(value)]


@pytest.fixture(params=_global_random_seeds())
def global_random_seed(request):
    """As scikit-learn's conftest: 42 unless SKLEARN_TESTS_GLOBAL_RANDOM_SEED says otherwise."""
    return request.param


@pytest.fixture(params=[np.float32, np.float64])
def global_dtype(request):
    """As scikit-learn's conftest, with float32 always on (fastce cares about it)."""
    return request.param


def test_selection_is_not_empty():
    """Guards against a scikit-learn upgrade silently leaving nothing selected."""
    assert len(SELECTED) >= 30, sorted(SELECTED)
