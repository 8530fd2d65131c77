"""The examples in the public docstrings run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = [
    "fastce.api", "fastce.sklearn_compat", "fastce.torch_compat", "fastce.torch_binary", "fastce.streaming",
    "fastce.compare", "fastce.compare_streaming", "fastce.metrics", "fastce.dask",
    "fastce.multilabel_report",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
