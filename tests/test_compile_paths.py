"""What a first call compiles: the general kernels take the mode and the math as types (kernels.general_tokens),
so numba compiles only the path a call takes.

Checked in a fresh process with an empty numba cache: a kernel loaded from the cache is not typed again (its
steps are never compiled there), and this process's other tests may have compiled any step already.  Each
check counts a step's compiled signatures, so it fails if the path that should have been pruned was typed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_SCRIPT = """
import json, numpy as np, fastce
from fastce import kernels as K

STEPS = ("_logits_row", "_exp_sums_f32", "_exp_sums_f32_staged", "exp_sums", "exp_sums_wide", "_exp_true",
         "_probability_like_row", "_proba_row", "_exp_columns")
seen = {}

def note(name):
    seen[name] = {step: len(getattr(K, step).overloads) for step in STEPS}

rng = np.random.default_rng(0)
long_labels, short_labels = rng.integers(0, 40, 300), rng.integers(0, 10, 300)
long_logits = rng.standard_normal((300, 40)).astype(np.float32)
short_logits = rng.standard_normal((300, 10))
fastce.evaluate(long_labels, proba=rng.dirichlet(np.ones(40), 300).astype(np.float32))
fastce.evaluate(short_labels, proba=rng.dirichlet(np.ones(10), 300))
note("probabilities first")
fastce.evaluate(long_labels, logits=long_logits)
note("then float32 logits")
fastce.evaluate(long_labels, logits=long_logits, precision="float64")
note("then float64 math")
fastce.evaluate(short_labels, logits=short_logits)
note("then short float64 logits")
print("COMPILED", json.dumps(seen))
"""


def test_each_path_compiles_only_its_own_steps(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")  # empty: every kernel is compiled, not loaded
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("COMPILED ")]
    seen = json.loads(line.split(" ", 1)[1])
    none = dict.fromkeys(seen["probabilities first"], 0)
    # Probabilities (long and short rows) compile none of the logits' steps: no row walk of logits, no exps.
    assert seen["probabilities first"] == dict(none, _proba_row=1)
    # float32 logits: the float32 exp leaf only, not the float64 one (a run-time choice compiled both), in
    # the form of this host's vector registers (kernels._row_exp_sums).
    from fastce._vecmath import STAGED_FORMS  # the subprocess inherits FASTCE_VECTOR_FORMS, if set

    leaf = "_exp_sums_f32_staged" if STAGED_FORMS else "_exp_sums_f32"
    long_logits = {"_logits_row": 1, leaf: 1, "_exp_true": 1, "_probability_like_row": 1}
    assert seen["then float32 logits"] == dict(none, _proba_row=1, **long_logits)
    # precision="float64" on the same logits: a row walk of its own, with the float64 leaf of this host's form
    # (exp_sums with AVX2's 16 registers, the fused exp_sums_wide with AVX-512's 32).
    leaf64 = {"exp_sums" if STAGED_FORMS else "exp_sums_wide": 1}
    assert seen["then float64 math"] == dict(none, _proba_row=1, **dict(long_logits, _logits_row=2, **leaf64))
    # Short float64 logits: the general short-row path's logits steps, compiled now (none were before).
    assert seen["then short float64 logits"] == dict(none, _proba_row=1, _exp_columns=1,
                                                     **dict(long_logits, _logits_row=2, **leaf64))


_OTHER_DOORS_SCRIPT = """
import json, numpy as np, fastce
from numba.core import event
from fastce import compare_kernels as CK, kernels_binary as KB

compiled = []

class Listener(event.Listener):
    def on_start(self, data):
        pass

    def on_end(self, data):
        compiled.append(data.data["dispatcher"].py_func.__qualname__)

event.register("numba:compile", Listener())
rng = np.random.default_rng(0)
labels = rng.integers(0, 10, 300)
logits = rng.standard_normal((300, 10)).astype(np.float32)
seen = {}
fastce.compare(labels, logits={"a": logits, "b": logits[::-1].copy()})
seen["compare"] = {step: len(getattr(CK, step).overloads) for step in ("_pair_sums", "_clean_pair_sums")}
fastce.compare(labels, logits={"a": logits, "b": logits[::-1].copy()}, sample_weight=rng.uniform(size=300))
seen["weighted compare"] = {step: len(getattr(CK, step).overloads) for step in ("_pair_sums", "_clean_pair_sums")}
fastce.evaluate((logits > 0.5).astype(np.float32), logits=logits)
seen["multi-label logits"] = len(KB._element_terms.overloads)
fastce.evaluate(labels, logits=logits, groups=labels % 3)
seen["compiled"] = sorted(set(compiled))
print("COMPILED", json.dumps(seen))
"""


def test_other_doors_compile_only_what_they_run(tmp_path):
    """An unweighted compare of short float32 logits (every block it pairs is clean) types no masked pair sums,
    a weighted one does; a multi-label kernel types its own mode's element loop only.  A second process with
    that cache compiles nothing, groups= included (numba's typed-Dict methods, called from Python, compile in
    every process: they are called from cached kernels only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", _OTHER_DOORS_SCRIPT], env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (line,) = [line for line in proc.stdout.splitlines() if line.startswith("COMPILED ")]
        runs.append(json.loads(line.split(" ", 1)[1]))
    first, second = runs
    assert first["compare"] == {"_pair_sums": 0, "_clean_pair_sums": 1}
    assert first["weighted compare"] == {"_pair_sums": 1, "_clean_pair_sums": 1}
    assert first["multi-label logits"] == 1
    assert first["compiled"] and second["compiled"] == []
