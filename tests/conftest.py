"""Shared test configuration.  Shared file: append sections, don't rewrite."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # `import reference` from every test module

try:  # hypothesis: a profile that suits numba (first calls compile) and a 2-core CI box
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "fastce",
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fastce"))
except ImportError:  # pragma: no cover
    pass


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def _kernels_run_so_far() -> list[str]:
    """fastce's numba kernels that hold a compiled (or cache-loaded) signature in this process."""
    from numba.core.dispatcher import Dispatcher

    return sorted(
        f"{name}.{attr}"
        for name, module in list(sys.modules.items())
        if name.startswith("fastce") and module is not None
        for attr, value in vars(module).items()
        if isinstance(value, Dispatcher) and value.overloads
    )


def pytest_collection_finish(session):
    """Collection runs no kernel.  Every pytest-xdist worker collects every module, so a kernel called at import
    (a module-level table of results) is compiled by both workers at once on an empty cache, before any test
    runs: two such tables cost CI a minute.  Compute them in a cached function the tests call."""
    ran = _kernels_run_so_far()
    if ran:
        raise pytest.UsageError(f"test collection ran fastce kernels (compute results in the tests): {ran[:5]}")
