"""``fastce compare`` over files: the numbers of fastce.compare, resumable, with clear errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

import fastce
from fastce import cli
from test_cli import _env, _main, _run, _wait_for_checkpoint

N, C = 20_000, 12


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    rng = np.random.default_rng(21)
    y = rng.integers(0, C, N)
    za = rng.standard_normal((N, C)).astype(np.float32)
    za[np.arange(N), y] += 1.0
    zb = (za * 1.5 + 0.4 * rng.standard_normal((N, C))).astype(np.float32)
    w = rng.random(N)
    g = np.repeat(np.arange(N // 20), 20)
    for name, array in (("y", y), ("a", za), ("b", zb), ("w", w), ("g", g)):
        np.save(d / f"{name}.npy", array)
    return d, y, za, zb, w, g


def test_json_is_compare_bit_for_bit(models):
    d, y, za, zb, w, g = models
    status, out, err = _main("compare", "--labels", d / "y.npy", "--logits", d / "a.npy", d / "b.npy",
                             "--weights", d / "w.npy", "--groups", d / "g.npy", "--top-k", 1, 3, "--json",
                             "--chunk-rows", 3001)
    assert status == 0 and err == ""
    expected = fastce.compare(y, logits={"a": za, "b": zb}, sample_weight=w, groups=g, top_k=(1, 3))
    assert out == expected.to_json() + "\n"
    data = json.loads(out)
    assert data["models"] == ["a", "b"] and data["pairs"][0]["deltas"][0]["test"] == "paired z (clustered)"


def test_text_names_and_findings(models):
    d, y, za, zb, *_ = models
    status, out, err = _main("compare", "--labels", d / "y.npy", "--logits", d / "a.npy", d / "b.npy",
                             "--names", "base", "tuned")
    assert status == 0, err
    assert out == str(fastce.compare(y, logits={"base": za, "tuned": zb})) + "\n"
    assert "Lowest loss:" in out and "McNemar" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--names", "x"], "--names gives 1 name(s) for 2 model file(s)"),
        (["--top-k", "0"], "top_k"),
    ],
)
def test_usage_errors_exit_2_with_one_line(models, extra, message):
    d, *_ = models
    status, out, err = _main("compare", "--labels", d / "y.npy", "--logits", d / "a.npy", d / "b.npy", *extra)
    assert status == 2 and out == ""
    assert message.replace("top_k", "--top-k") in err and len(err.strip().splitlines()) == 1


def test_compare_offers_only_the_options_it_takes(models, capsys):
    # Its help listed --ignore-index, --precision and --scheduler (each then refused) and said --labels could be
    # left out (it cannot).
    d, *_ = models
    with pytest.raises(SystemExit):
        cli.main(["compare", "--help"])
    text = capsys.readouterr().out
    for option in ("--ignore-index", "--precision", "--scheduler", "may be left out"):
        assert option not in text
    for extra in (["--scheduler", "tcp://nowhere:1"], ["--ignore-index", "-100"], ["--precision", "float64"]):
        with pytest.raises(SystemExit) as exited:  # argparse's refusal, as of any option a command does not take
            cli.main(["compare", "--labels", str(d / "y.npy"), "--logits", str(d / "a.npy"), str(d / "b.npy"), *extra])
        assert exited.value.code == 2 and f"unrecognized arguments: {extra[0]}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse's own refusal of a missing required option
        cli.main(["compare", "--logits", str(d / "a.npy"), str(d / "b.npy")])
    assert exited.value.code == 2 and "required: --labels" in capsys.readouterr().err


def test_mismatched_files_are_refused(models, tmp_path):
    d, y, za, *_ = models
    np.save(tmp_path / "short.npy", za[:100])
    np.save(tmp_path / "narrow.npy", za[:, :5])
    np.save(tmp_path / "float_groups.npy", np.zeros(N))
    for files, message in (
        ([d / "a.npy", tmp_path / "short.npy"], "row counts differ"),
        ([d / "a.npy", tmp_path / "narrow.npy"], "same classes"),
        ([d / "a.npy"], "at least two models"),
    ):
        status, out, err = _main("compare", "--labels", d / "y.npy", "--logits", *files)
        assert status == 2 and message in err
    status, _, err = _main("compare", "--labels", d / "y.npy", "--logits", d / "a.npy", d / "b.npy",
                           "--groups", tmp_path / "float_groups.npy")
    assert status == 2 and "groups must be integer ids" in err


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_killed_compare_resumes_to_the_same_numbers(models, tmp_path, how):
    d, *_ = models
    args = ["compare", "--labels", d / "y.npy", "--logits", d / "a.npy", d / "b.npy", "--json", "--chunk-rows", "700"]
    expected = _run(*args).stdout
    state = tmp_path / "cmp.state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastce", *map(str, args), "--state", str(state), "--checkpoint-seconds", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**{cli._DELAY_ENV: "0.05"}),
    )
    first = _wait_for_checkpoint(proc, state)
    proc.send_signal(getattr(signal, how))
    proc.communicate(timeout=60)
    saved = json.loads(state.read_text())
    assert 0 < first["rows_done"] <= saved["rows_done"] < N and "comparator" in saved
    resumed = _run(*args, "--state", state)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {state} at row {saved['rows_done']:,}" in resumed.stderr
    assert resumed.stdout == expected
    # Another command's checkpoint is refused.
    status, _, err = _main("compare", "--labels", d / "y.npy", "--logits", d / "b.npy", d / "a.npy", "--json",
                           "--state", state)
    assert status == 2 and "does not match this command" in err
