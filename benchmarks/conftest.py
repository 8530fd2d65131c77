"""pytest wiring for the benchmarks (see test_bench.py for what they measure).

* Large shapes carry the ``large`` marker and are deselected unless the
  ``-m`` expression names ``large`` (``pytest benchmarks/ -m large``).
* pyproject's ``addopts`` holds ``--benchmark-disable`` (benchmarks run once,
  as plain tests).  ``--benchmark-only`` would then be a usage error and
  ``--benchmark-json`` would write nothing, so either option also turns on
  ``--benchmark-enable`` here: asking for benchmark output means timing.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    option = config.option
    if getattr(option, "benchmark_only", False) or getattr(option, "benchmark_json", None):
        option.benchmark_enable = True


def _large_selected(config) -> bool:
    return "large" in (config.option.markexpr or "")


def pytest_report_header(config):
    if not _large_selected(config):
        return "fastce benchmarks: small shapes; the large ones are deselected (select them with -m large)"
    return None


def pytest_collection_modifyitems(config, items):
    if _large_selected(config):
        return
    kept, large = [], []
    for item in items:
        (large if item.get_closest_marker("large") is not None else kept).append(item)
    if large:
        config.hook.pytest_deselected(items=large)
        items[:] = kept
