"""pytest-benchmark: fastce.diagnose beside fastce.evaluate on the same logits.

Small shapes run once in CI (so this never rots); ``-m large`` times 1 GiB
of float32 logits per shape.  ``benchmarks/diagnose_cost.py`` prints the
diagnose / evaluate ratio directly.  No assertion is made about time.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_data as bd  # noqa: E402

import fastce  # noqa: E402

SHAPES = [pytest.param("small", c, id=f"small-C{c}") for c in (10, 1000)] + [
    pytest.param("large", c, id=f"large-C{c}", marks=pytest.mark.large) for c in (100, 1000, 32000)
]


@pytest.fixture(scope="module")
def cases():
    made = {}

    def get(size, c):
        if (size, c) not in made:
            made.clear()
            elements = bd.LARGE_ELEMENTS if size == "large" else bd.SMALL_ELEMENTS
            made[(size, c)] = bd.make_logits(bd.rows_for(elements, c), c, seed=c)
        return made[(size, c)]

    return get


@pytest.mark.parametrize("size, c", SHAPES)
@pytest.mark.parametrize("what", ["evaluate", "diagnose"])
def test_diagnose_cost(benchmark, cases, size, c, what):
    labels, logits = cases(size, c)
    benchmark.group = f"diagnose vs evaluate C={c} {size}"
    benchmark.extra_info.update(N=int(logits.shape[0]), C=c, bytes=int(logits.nbytes))
    fn = fastce.evaluate if what == "evaluate" else fastce.diagnose
    result = benchmark(fn, labels, logits=logits)
    metrics = result if what == "evaluate" else result.metrics
    assert metrics == fastce.evaluate(labels, logits=logits)
    if what == "diagnose":
        assert np.sum(result.confusion) == metrics.n  # unweighted: a count per row
        assert result.loss_split["correct"]["rows"] + result.loss_split["wrong"]["rows"] == metrics.n
