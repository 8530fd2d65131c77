"""The kernels' two vector forms give the same bits: the fused loops (AVX-512 hosts) and the staged ones (AVX2
hosts: _vecmath.STAGED_FORMS; kernels._exp_sums_f32_staged, _logit_columns_f32's three loops).

Each form runs in a fresh process (FASTCE_VECTOR_FORMS picks it whatever the host: both run on either machine
kind), the form other than this process's with a numba cache of its own, on short and long float32 and float16
logits with special values (NaN rows, -inf entries, ties at the max, a max of +inf), top-1 and top-5 (weights
take the same exps and walk); the per-row losses, the metrics and diagnose's report are compared as text (repr
of every float: every bit).

This checks what users get; the float64 sums of float32 exps are often exact, and a sum's last bit often
vanishes in the loss's rounding, so an order changed inside a form may pass here: the raw sums of both forms are
checked bit for bit against a reference in tests/test_column_lanes.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

_SCRIPT = r"""
import json, numpy as np, fastce
out = {}
rng = np.random.default_rng(11)
for dtype, classes in (("float32", (3, 10, 32, 33, 100, 1041)), ("float16", (100,))):
    for c in classes:
        n = 700
        # Rows of every spread: their exps span more than float64's 53 bits, so the sums round (float32 terms
        # over a narrow range sum exactly, in any order).
        spread = rng.choice([1.0, 4.0, 16.0, 40.0], size=(n, 1))
        z = (rng.standard_normal((n, c)) * spread).astype(dtype)
        z[5, :] = np.nan
        z[7, c // 2] = -np.inf
        z[9, 0] = z[9, c - 1] = z[9].max()  # a tie at the max
        z[11, 1] = np.inf                    # a max of +inf
        z[13] = 0                            # every entry at the max
        y = rng.integers(0, c, n)
        key = f"{dtype}-{c}"
        losses = fastce.cross_entropy(z, y, reduction="none", nan_policy="propagate")
        out[key + " losses"] = [repr(float(v)) for v in losses]
        ok = np.isfinite(losses)
        out[key + " metrics"] = repr(fastce.evaluate(y[ok], logits=z[ok], top_k=(1, 5) if c >= 5 else (1,)).to_dict())
        if c == 10:  # the short rows' finish in registers, with diagnose's per-row outputs
            out[key + " diagnose"] = fastce.diagnose(y[ok], logits=z[ok]).to_json()
print("RESULTS " + json.dumps(out))
"""


def _results(form: str, cache: str | None) -> dict:
    """The script's outputs in a fresh process computing with `form`, its kernels compiled into (or loaded from)
    the numba cache `cache`, or this process's cache when None."""
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    if cache is None:
        cache = os.environ.get("NUMBA_CACHE_DIR")
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = cache
    env["FASTCE_VECTOR_FORMS"] = form
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    return json.loads(line.split(" ", 1)[1])


def test_fused_and_staged_forms_give_the_same_bits(tmp_path):
    from fastce._vecmath import STAGED_FORMS

    # numba's cache does not key on the form: the form this process compiles (the host's, or FASTCE_VECTOR_FORMS)
    # shares this process's cache, where the other tests have compiled most of what it runs; the other form
    # compiles into a cache of its own.
    mine, other = ("staged", "fused") if STAGED_FORMS else ("fused", "staged")
    results = {mine: _results(mine, None), other: _results(other, str(tmp_path / other))}
    fused, staged = results["fused"], results["staged"]
    assert fused.keys() == staged.keys() and len(fused) == 15
    differ = [key for key in fused if fused[key] != staged[key]]
    assert not differ, differ
