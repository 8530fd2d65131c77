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
