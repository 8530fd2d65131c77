"""The same numbers in a process that compiled the kernels and in one that loaded them from numba's cache.

CI runners compile on their first call and compare numbers between runs; a
user's first run compiles, the next ones load.  Each case runs twice in
fresh processes sharing one empty ``NUMBA_CACHE_DIR``: the first compiles
and writes the cache, the second loads it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, fastce
    C, weighted, top_k = int(sys.argv[1]), sys.argv[2] == "w", tuple(int(k) for k in sys.argv[3].split(","))
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 20_000
    kind = sys.argv[5] if len(sys.argv) > 5 else "logits"
    rng = np.random.default_rng(C)
    if C == 1:  # binary: 1-D logits
        z, y = rng.standard_normal(n), rng.integers(0, 2, n)
    else:
        z, y = (2 * rng.standard_normal((n, C))).astype(np.float32), rng.integers(0, C, n)
    w = rng.random(n) if weighted else None
    if kind == "compare":
        # Another door first: the kernels it compiles or loads must not change evaluate's bits.
        c = fastce.compare(y, logits={"A": z, "B": z + rng.standard_normal(z.shape).astype(z.dtype)},
                           sample_weight=w, top_k=top_k)
        print(c.to_json())
    if kind == "proba":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        m = fastce.evaluate(y, proba=(e / e.sum(axis=1, keepdims=True)).astype(np.float32), sample_weight=w,
                            top_k=top_k)
    else:
        m = fastce.evaluate(y, logits=z.astype(np.float64) if kind == "float64" else z, sample_weight=w,
                            top_k=top_k)
    print(json.dumps({k: float(v).hex() if isinstance(v, float) else v for k, v in m.to_dict().items()},
                     default=lambda d: {str(k): float(x).hex() for k, x in d.items()}))
    """
)


def _twice(tmp_path, *args) -> tuple[str, str]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    runs = [subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, env=env, check=True)
            for _ in range(2)]
    return runs[0].stdout, runs[1].stdout


@pytest.mark.parametrize("case", [("1", "u", "1"), ("2", "w", "1"), ("10", "u", "1,5"), ("24", "w", "1,5"),
                                  ("100", "w", "1"),
                                  # The case that differed (Brier standard error) before tests/test_one_copy.py's rule.
                                  ("1000", "u", "1,2", "40000"),
                                  ("300", "w", "1,5", "20000", "proba"),
                                  ("300", "u", "1,3", "20000", "float64"),
                                  ("10", "w", "1,2", "20000", "compare")], ids="-".join)
def test_a_fresh_compile_and_the_cache_give_the_same_bits(tmp_path, case):
    compiled, cached = _twice(tmp_path, *case)
    assert compiled == cached
