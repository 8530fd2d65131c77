"""What users read: strict JSON from every writer, ``str`` and ``repr`` of results (issue 14, items 11 and 12)."""

from __future__ import annotations

import functools
import io
import json
import math
import warnings

import numpy as np
import pytest

import fastce
from fastce import cli
from fastce.diagnostics import DiagnosticsState
from fastce.metrics import Metrics
from fastce.state import State


def strict_loads(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity, as RFC 8259 (and JavaScript's JSON.parse) do."""

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@functools.cache
def _results() -> dict:
    """{name: Metrics} for every task, with finite, infinite and NaN values.  Computed by the first test that
    asks, not when the module is collected: every pytest-xdist worker collects every module, and kernels
    compiled during collection are compiled by both workers at once (~25 s each on an empty cache)."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(40, 4))
    y = rng.integers(0, 4, size=40)
    inf_true = z.copy()
    inf_true[5, y[5]] = -np.inf  # a -inf logit on the true class: an infinite loss
    nan_row = z.copy()
    nan_row[7, 1] = np.nan
    indicator = (rng.uniform(size=(40, 4)) < 0.4).astype(np.float64)
    indicator[0] = [1, 1, 0, 0]  # two labels in a row: multi-label
    soft = _softmax(rng.normal(size=(40, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastce.OmittedRowsWarning)
        results = [
            ("multiclass", fastce.evaluate(y, logits=z, top_k=(1, 3))),
            ("multiclass-proba", fastce.evaluate(y, proba=_softmax(z))),
            ("multiclass-inf", fastce.evaluate(y, logits=inf_true)),
            ("multiclass-nan", fastce.evaluate(y, logits=nan_row, nan_policy="propagate")),
            ("multiclass-omit", fastce.evaluate(y, logits=nan_row, nan_policy="omit")),
            ("binary", fastce.evaluate(y % 2, logits=z[:, 0])),
            ("binary-inf", fastce.evaluate(np.r_[1, y[1:] % 2], logits=np.r_[-np.inf, z[1:, 0]])),
            ("multilabel", fastce.evaluate(indicator, logits=z)),
            ("multilabel-nan", fastce.evaluate(indicator, logits=nan_row, nan_policy="propagate")),
            ("soft", fastce.evaluate(soft, logits=z)),
            ("soft-inf", fastce.evaluate(soft, logits=inf_true)),
        ]
    assert [name for name, _ in results] == NAMES
    return dict(results)


NAMES = ["multiclass", "multiclass-proba", "multiclass-inf", "multiclass-nan", "multiclass-omit", "binary",
         "binary-inf", "multilabel", "multilabel-nan", "soft", "soft-inf"]
APPLIES = {
    "multiclass": {"brier"},
    "binary": {"brier"},
    "multilabel": {"brier", "hamming_accuracy", "subset_accuracy"},
    "soft": {"target_entropy", "kl_divergence"},
}
OPTIONAL = {"brier", "hamming_accuracy", "subset_accuracy", "target_entropy", "kl_divergence"}


def _decoded(value):
    """Inverse of the documented encoding of non-finite floats."""
    return {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}.get(value, value) if isinstance(value, str) else value


def _same(a, b) -> bool:
    if isinstance(b, dict):  # nested (stderr): JSON keys are strings
        return isinstance(a, dict) and set(a) == {str(k) for k in b} and all(
            _same(_decoded(a[str(k)]), v) for k, v in b.items()
        )
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("name", NAMES)
def test_metrics_json_is_strict_and_holds_only_what_applies(name):
    m = _results()[name]
    assert m.task == name.split("-")[0] or name.startswith("multiclass")
    data = strict_loads(m.to_json())
    assert strict_loads(m.to_json(indent=2, allow_nan=True)) == data  # strict whatever json.dumps is told
    assert OPTIONAL & set(data) == APPLIES[m.task]  # fields of other tasks are absent
    assert set(m.to_dict()) == set(data)
    for key, value in m.to_dict().items():
        if key == "top_k_accuracy":
            assert {int(k): _decoded(v) for k, v in data[key].items()}.keys() == value.keys()
            assert all(_same(_decoded(data[key][str(k)]), v) for k, v in value.items())
        else:
            assert _same(_decoded(data[key]), value), key
    if name.endswith("-inf"):
        assert data["cross_entropy"] == "inf" and data["perplexity"] == "inf"
    if name.endswith("-nan"):
        assert data["cross_entropy"] == "nan"


@pytest.mark.parametrize("name", NAMES)
def test_str_is_the_commands_table_and_repr_is_faithful(name):
    m = _results()[name]
    text = str(m)
    assert "mappingproxy" not in text and "\n" in text
    assert "bits" in text and "perplexity" in text and f"{m.n:,}" in text
    assert ("Brier score" in text) == (m.task != "soft")
    assert ("Hamming accuracy" in text) == (m.task == "multilabel")
    assert ("KL divergence" in text) == (m.task == "soft")
    assert ("omitted rows" in text) == bool(m.n_omitted)
    if m.task == "multiclass":
        assert "nan" not in text or name.endswith("-nan")
    r = repr(m)
    assert "mappingproxy" not in r and r.startswith("Metrics(")
    assert eval(r, {"Metrics": Metrics, "nan": math.nan, "inf": math.inf}) == m  # faithful


def test_str_of_the_readme_main_job():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2000, 100), dtype=np.float32)
    y = rng.integers(0, 100, 2000)
    m = fastce.evaluate(y, logits=z, top_k=(1, 5))
    lines = str(m).splitlines()
    assert [line.split("  ")[0] for line in lines] == [
        "rows", "weight sum", "cross-entropy", "accuracy", "top-5 accuracy", "Brier score"
    ]
    assert lines[0].split(None, 1)[1] == "2,000  (100 classes, logits)"
    assert f"{m.cross_entropy_bits:.8g} bits" in lines[2] and f"perplexity {m.perplexity:.6g}" in lines[2]


def test_command_table_is_str_of_metrics(tmp_path):
    # One formatter: `fastce eval` prints Metrics.table with the scores' dtype, nothing else.
    rng = np.random.default_rng(1)
    z = rng.normal(size=(300, 6)).astype(np.float32)
    y = rng.integers(0, 6, size=300)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"),
                     "--top-k", "1", "3", "--no-progress"], out=out, err=err) == 0, err.getvalue()
    m = fastce.evaluate(y, logits=z, top_k=(1, 3))
    assert out.getvalue() == m.table("float32") + "\n"
    assert out.getvalue().replace(", float32)", ")") == str(m) + "\n"


def _report_inputs():
    rng = np.random.default_rng(5)
    z = rng.normal(scale=2.0, size=(600, 5))
    y = rng.integers(0, 5, size=600)
    z[9, y[9]] = -np.inf  # infinite loss: worst row, loss shares NaN
    return y, z


def test_report_json_is_strict_with_infinite_and_nan_values():
    y, z = _report_inputs()
    r = fastce.diagnose(y[:200] % 3, logits=z[:200, :4])  # class 3 never true nor predicted: NaN recall, F1
    text = r.to_json()
    data = strict_loads(text)
    assert data["metrics"]["cross_entropy"] == "inf" and data["worst"][0]["loss"] == "inf"
    assert "nan" in data["classes"]["recall"] and "hamming_accuracy" not in data["metrics"]
    assert data["metrics"] == strict_loads(r.metrics.to_json())


def test_state_files_are_strict_and_round_trip():
    y, z = _report_inputs()
    ev = fastce.Evaluator(5, diagnostics=True)
    ev.update(y[:517], z[:517])  # leaves a pending block
    text = json.dumps(ev.state_dict(), allow_nan=False)  # raises on any bare NaN/Infinity
    data = strict_loads(text)
    again = fastce.Evaluator.from_state_dict(data)
    assert again.state_dict() == ev.state_dict()
    ev.update(y[517:], z[517:])
    again.update(y[517:], z[517:])
    assert again.report().to_json() == ev.report().to_json()
    diag = ev.diagnostics_state()
    assert diag.worst["loss"][0] == math.inf
    d = strict_loads(json.dumps(diag.to_dict(), allow_nan=False))
    assert DiagnosticsState.from_dict(d).to_dict() == diag.to_dict()
    state = ev.state()
    s = strict_loads(json.dumps(state.to_dict(), allow_nan=False))
    assert State.from_dict(s).to_dict() == state.to_dict()
    empty = State.empty(3)  # min/max of no rows: +inf / -inf
    assert strict_loads(json.dumps(empty.to_dict(), allow_nan=False))["min_score"] == "inf"
    assert State.from_dict(empty.to_dict()).minmax.tolist() == [math.inf, -math.inf]


def test_command_writers_are_strict(tmp_path):
    y, z = _report_inputs()
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    common = ["--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--no-progress", "--json"]
    for command in ("eval", "report"):
        state = tmp_path / f"{command}.state"
        out, err = io.StringIO(), io.StringIO()
        assert cli.main([command, *common, "--state", str(state), "--chunk-rows", "100"], out=out, err=err) == 0
        data = strict_loads(out.getvalue())
        metrics = data if command == "eval" else data["metrics"]
        assert metrics["cross_entropy"] == "inf"
        strict_loads(state.read_text())  # the checkpoint, with the infinite worst loss of `report`
        expected = fastce.evaluate(y, logits=z) if command == "eval" else fastce.diagnose(y, logits=z)
        assert out.getvalue() == expected.to_json() + "\n"
