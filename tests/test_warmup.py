"""``fastce warmup`` and the first-use compile notices (fastce._compile_log)."""

from __future__ import annotations

import io
import logging

import pytest
from numba import njit

from fastce import _compile_log, cli, kernels
from fastce.progress import LineProgress
from fastce.warmup import DTYPES, warmup


def test_warmup_command_compiles_each_dtype_and_says_where():
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["warmup", "--dtypes", "float64", "float32"], out=out, err=err) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("fastce warmup: compiling into the numba cache at ")
    assert [line.split()[0] for line in lines[1:3]] == ["float64", "float32"]
    assert all(line.rstrip().endswith(" s") for line in lines[1:3])
    assert lines[-1].startswith("done in ") and "from the cache" in lines[-1]
    assert err.getvalue() == ""


def test_warmup_refuses_unknown_dtypes():
    with pytest.raises(ValueError, match="dtypes must be among float32, float64, float16, bfloat16; got float12"):
        warmup(["float12"])
    err = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["warmup", "--dtypes", "int8"], out=io.StringIO(), err=err)
    assert exit_info.value.code == 2


def test_warmup_default_is_every_dtype():
    parser = cli.build_parser()
    assert parser.parse_args(["warmup"]).dtypes == list(DTYPES)


def _probe_kernel():
    """A new njit function whose module is a fastce one: calling it compiles it (a real numba:compile event)."""
    namespace = {"__name__": "fastce.probe"}
    exec("def probe(x):\n    return x + 1\n", namespace)
    return njit(namespace["probe"])


def test_a_compile_is_announced_to_callbacks_and_logged(caplog):
    messages = []
    kernel = _probe_kernel()
    with caplog.at_level(logging.INFO, logger="fastce"), _compile_log.notices(messages.append):
        assert kernel(41) == 42
        assert kernel(1) == 2  # compiled already: no second notice
    assert len(messages) == 1
    assert messages[0] == "compiling fastce kernel probe (int64), first use with this numba cache"
    logged = [r.getMessage() for r in caplog.records if r.name == "fastce"]
    assert logged[0] == messages[0]
    assert logged[1].startswith("compiled fastce kernel probe in ") and logged[1].endswith(" s")
    # Outside the block the callback hears nothing more.
    kernel(1.5)
    assert len(messages) == 1


def test_a_general_kernels_compile_names_its_path():
    """A general kernel compiles once per path its mode and math arguments pick (kernels.general_tokens): the
    notice says which, so that a second compile of the same kernel does not look like a bug."""
    namespace = {"__name__": "fastce.probe"}
    exec("def general(x, logits, proba_eps, float32_math):\n    return x + 1\n", namespace)
    kernel = njit(namespace["general"])
    messages = []
    with _compile_log.notices(messages.append):
        tokens = kernels.general_tokens
        for mode, math in ((kernels.MODE_LOGITS, True), (kernels.MODE_PROBA, True), (kernels.MODE_LOGITS, False)):
            assert kernel(1.0, *tokens(mode, 1e-15, math)) == 2.0
    assert messages == [f"compiling fastce kernel general (float64, {path}), first use with this numba cache"
                        for path in ("logits in float32 math", "probabilities", "logits in float64 math")]


@pytest.mark.parametrize("module", ["somebody_else", None])
def test_compiles_of_other_code_are_not_announced(module):
    """Other packages' functions, and exec'd ones whose __module__ is None, compile as usual, unannounced."""
    messages = []
    namespace = {"__name__": module}
    exec("def other(x):\n    return x * 2\n", namespace)
    with _compile_log.notices(messages.append):
        assert njit(namespace["other"])(3) == 6
    assert messages == []


def test_progress_line_shows_a_note_above_the_bar():
    stream = io.StringIO()
    bar = LineProgress(1000, 4000, stream=stream, min_interval=0.0)
    bar.update(100)
    bar.note("fastce: compiling fastce kernel score_tasks for float32 scores, first use")
    bar.update(900)
    bar.close()
    lines = stream.getvalue().split("\n")
    bar_line, note = lines[0].split("\r")[1:]
    # The note overwrites the bar's line (padded to cover it) and ends it; the bar goes on below.
    assert note.startswith("fastce: compiling fastce kernel score_tasks") and len(note) >= len(bar_line)
    assert "10.0%" in lines[1] and "100.0%" in lines[-2] and lines[-1] == ""


def test_tqdm_progress_note_goes_above_the_bar():
    tqdm = pytest.importorskip("tqdm")
    from fastce.progress import TqdmProgress

    stream = io.StringIO()
    bar = TqdmProgress(tqdm.tqdm, 100, 10, stream=stream)
    bar.note("fastce: compiling")
    bar.update(100)
    bar.close()
    assert "fastce: compiling\n" in stream.getvalue()


def test_the_cli_says_once_that_it_compiles(tmp_path, monkeypatch):
    """Every chunk's update compiles something (a probe), but the bar shows one notice, above it."""
    import numpy as np

    from fastce import streaming

    rng = np.random.default_rng(0)
    np.save(tmp_path / "z.npy", rng.standard_normal((3000, 4)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 4, 3000))
    update = streaming.Evaluator.update

    def compiling_update(self, *args, **kwargs):
        _probe_kernel()(1)  # a fresh fastce-module function: a real compile event
        return update(self, *args, **kwargs)

    monkeypatch.setattr(streaming.Evaluator, "update", compiling_update)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    err = Terminal()
    argv = ["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--chunk-rows", "1000"]
    assert cli.main(argv, out=io.StringIO(), err=err) == 0
    assert err.getvalue().count(_compile_log.CLI_NOTICE) == 1, err.getvalue()
