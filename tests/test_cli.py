"""The ``fastce`` command, run as users run it: real files, subprocesses, kills."""

from __future__ import annotations

import io
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import fastce
from fastce import _config, cli
from fastce.progress import LineProgress, SilentProgress, make_progress

N, C = 6_000, 24


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((N, C)) * 2).astype(np.float32)
    labels = rng.integers(0, C, size=N)
    weights = rng.random(N)
    np.save(d / "z.npy", logits)
    np.save(d / "y.npy", labels)
    np.save(d / "w.npy", weights)
    e = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    np.save(d / "p.npy", e / e.sum(axis=1, keepdims=True))
    return d, logits, labels, weights


def _env(**extra):
    env = dict(os.environ)
    env.pop(cli._DELAY_ENV, None)
    env.update(extra)
    return env


def _run(*args, env=None, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "fastce", *map(str, args)],
        capture_output=True, text=True, env=env or _env(), check=False, **kwargs,
    )


def _main(*args):
    out, err = io.StringIO(), io.StringIO()
    status = cli.main([str(a) for a in args], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


# -- results -----------------------------------------------------------------------


def test_json_output_is_evaluate_bit_for_bit_and_alone_on_stdout(files):
    d, logits, labels, weights = files
    result = _run("eval", "--labels", d / "y.npy", "--logits", d / "z.npy", "--weights", d / "w.npy", "--top-k", 1, 5, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # not a terminal: no progress bar
    expected = fastce.evaluate(labels, logits=logits, sample_weight=weights, top_k=(1, 5))
    assert result.stdout == expected.to_json() + "\n"
    data = json.loads(result.stdout)
    assert {"n", "weight_sum", "cross_entropy", "accuracy", "top_k_accuracy"} <= set(data)
    assert data["top_k_accuracy"]["5"] == expected.top_k_accuracy[5]


def test_console_script_and_table_output(files):
    d, _logits, labels, _ = files
    script = shutil.which("fastce", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("fastce console script not installed in this environment")
    result = subprocess.run(
        [script, "eval", "--labels", d / "y.npy", "--proba", d / "p.npy", "--top-k", "3"],
        capture_output=True, text=True, env=_env(), check=False,
    )
    assert result.returncode == 0, result.stderr
    expected = fastce.evaluate(labels, proba=np.load(d / "p.npy"), top_k=3)
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["rows", f"{N:,}"] and "probabilities" in lines[0]
    assert any(line.startswith("cross-entropy") and f"{expected.cross_entropy:.8g} nats" in line for line in lines)
    assert any(line.startswith("top-3 accuracy") for line in lines)
    assert any(line.startswith("accuracy") and f"{expected.accuracy:.8g}" in line for line in lines)


def test_the_command_freezes_the_heap_only_in_its_own_process(monkeypatch):
    """The console script and ``python -m fastce`` run ``command()``: the exit status of ``main()``, the
    heap frozen for the exit's collection (see fastce.__main__); ``main()`` called in-process leaves the
    collector alone."""
    from importlib.metadata import entry_points

    import fastce.__main__ as entry

    scripts = {e.name: e.value for e in entry_points(group="console_scripts") if e.name == "fastce"}
    assert scripts == {"fastce": "fastce.__main__:command"}
    frozen = []
    monkeypatch.setattr(entry.gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(cli, "main", lambda argv=None: 3)
    assert entry.main() == 3 and frozen == []
    assert entry.command() == 3 and frozen == [True]


@pytest.mark.parametrize("extra", [["--chunk-rows", "777"], ["--chunk-rows", "1", "--threads", "1"], ["--no-progress"]])
def test_chunking_and_threads_do_not_change_a_bit(files, extra):
    d, logits, labels, _ = files
    if extra[:2] == ["--chunk-rows", "1"]:
        extra = ["--chunk-rows", str(_config.block_rows(C) * 3 + 1)] + extra[2:]
    import numba

    threads = numba.get_num_threads()
    try:
        status, out, err = _main("eval", "--labels", d / "y.npy", "--logits", d / "z.npy", "--json", *extra)
    finally:
        numba.set_num_threads(threads)
    assert status == 0, err
    assert out == fastce.evaluate(labels, logits=logits).to_json() + "\n"


def test_warnings_go_to_stderr_as_one_line(files, tmp_path):
    d, logits, _labels, _ = files
    bad = logits.copy()
    bad[[10, 4000]] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    status, out, err = _main("eval", "--labels", d / "y.npy", "--logits", tmp_path / "nan.npy", "--nan-policy", "omit", "--json")
    assert status == 0
    assert json.loads(out)["n_omitted"] == 2
    assert err.count("\n") == 1 and err.startswith("fastce: warning:") and "first: row 10" in err


# -- errors ----------------------------------------------------------------------------


def _error_cases(d, tmp_path):
    np.save(tmp_path / "short.npy", np.zeros(10, np.int64))
    np.save(tmp_path / "float_labels.npy", np.zeros(N))
    np.save(tmp_path / "vector.npy", np.zeros((N, 2, 2), np.float32))
    np.save(tmp_path / "obj.npy", np.array([None] * N, dtype=object), allow_pickle=True)
    (tmp_path / "text.npy").write_text("not numpy\n")
    bad_labels = np.load(d / "y.npy")
    bad_labels[4321] = C
    np.save(tmp_path / "bad_labels.npy", bad_labels)
    nan = np.load(d / "z.npy")
    nan[5555, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    y, z = d / "y.npy", d / "z.npy"
    return {
        "missing": (["--labels", tmp_path / "nope.npy", "--logits", z], "nope.npy: no such file"),
        "rows": (["--labels", tmp_path / "short.npy", "--logits", z], "short.npy has 10 rows but"),
        "dtype": (["--labels", tmp_path / "float_labels.npy", "--logits", z], "labels must be integer"),
        "shape": (["--labels", y, "--logits", tmp_path / "vector.npy"], "scores (..., classes) take labels of shape"),
        "not npy": (["--labels", y, "--logits", tmp_path / "text.npy"], "is not an .npy file"),
        "pickle": (["--labels", tmp_path / "obj.npy", "--logits", z], "never loads pickles"),
        "label value": (["--labels", tmp_path / "bad_labels.npy", "--logits", z, "--chunk-rows", "1000"], "y_true row 4321 is 24"),
        "nan": (["--labels", y, "--logits", tmp_path / "nan.npy", "--chunk-rows", "1000"], "scores row 5555 holds NaN"),
        "threads": (["--labels", y, "--logits", z, "--threads", "0"], "--threads must be between 1"),
        "state dir": (["--labels", y, "--logits", z, "--state", tmp_path / "no" / "s.json"], "does not exist"),
    }


def test_errors_print_one_line_and_exit_2(files, tmp_path):
    d = files[0]
    for name, (args, needle) in _error_cases(d, tmp_path).items():
        status, out, err = _main("eval", *args)
        assert status == 2, name
        assert out == "", name
        assert err.count("\n") == 1 and err.startswith("fastce: error: "), (name, err)
        assert needle in err, (name, err)
    status, out, err = _main("eval", "--labels", tmp_path / "nope.npy", "--logits", d / "z.npy", "--debug")
    assert status == 2 and "Traceback (most recent call last)" in err and err.rstrip().endswith("no such file.")


def test_error_exit_status_in_a_real_process(files, tmp_path):
    d = files[0]
    (tmp_path / "x.npy").write_bytes(b"\x80\x04K\x01.")  # a pickle
    result = _run("eval", "--labels", d / "y.npy", "--logits", tmp_path / "x.npy")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "holds a Python pickle" in result.stderr
    usage = _run("eval", "--labels", d / "y.npy")  # neither --logits nor --proba
    assert usage.returncode == 2 and "one of the arguments --logits --proba is required" in usage.stderr


def test_cli_messages_name_the_flags_and_say_how_to_fix(files, tmp_path):
    d, logits, labels, _ = files
    y, z = d / "y.npy", d / "z.npy"
    status, out, err = _main("eval", "--labels", y, "--logits", z, "--top-k", "0")
    assert (status, out) == (2, "") and err == "fastce: error: --top-k values must be >= 1; got 0.\n"
    np.save(tmp_path / "float_labels.npy", labels.astype(np.float64))
    status, out, err = _main("eval", "--labels", tmp_path / "float_labels.npy", "--logits", z)
    assert status == 2 and "labels must be integer class indices" in err and "y.astype(np.int64)" in err


def test_top_k_at_least_the_class_count_warns_once_on_stderr(files):
    d, logits, labels, _ = files
    status, out, err = _main("eval", "--labels", d / "y.npy", "--logits", d / "z.npy", "--top-k", "5", str(C), "99", "--json")
    assert status == 0 and json.loads(out)["top_k_accuracy"][str(C)] == 1.0
    assert err == (
        f"fastce: warning: 'k' ({C}) greater than or equal to 'n_classes' ({C}) will result in a perfect score and is "
        f"therefore meaningless (--top-k {C} 99 with {C} classes).\n"
    )


# -- checkpoints ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """A file that takes a few seconds with the test delay: 40 chunks."""
    d = tmp_path_factory.mktemp("slow")
    rng = np.random.default_rng(3)
    n, c = 100_000, 10
    logits = rng.standard_normal((n, c)).astype(np.float32)
    labels = rng.integers(0, c, size=n)
    np.save(d / "z.npy", logits)
    np.save(d / "y.npy", labels)
    expected = fastce.evaluate(labels, logits=logits, top_k=(1, 5)).to_json() + "\n"
    # 2500 rows per chunk: not a multiple of the block, so checkpoints hold back rows too
    args = ["eval", "--labels", d / "y.npy", "--logits", d / "z.npy", "--top-k", "1", "5", "--json", "--chunk-rows", "2500"]
    return d, args, expected, n


def _wait_for_checkpoint(proc, state, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if state.exists():
            data = json.loads(state.read_text())  # written atomically: always whole
            if data["rows_done"] > 0:
                return data
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_to_exactly_the_same_numbers(slow, tmp_path, how):
    _d, args, expected, n = slow
    state = tmp_path / "run.state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastce", *map(str, args), "--state", str(state), "--checkpoint-seconds", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**{cli._DELAY_ENV: "0.05"}),
    )
    first = _wait_for_checkpoint(proc, state)
    proc.send_signal(getattr(signal, how))
    out, err = proc.communicate(timeout=60)
    if how == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 143 and "run the same command again to resume" in err
    assert out == ""
    saved = json.loads(state.read_text())
    assert 0 < first["rows_done"] <= saved["rows_done"] < n
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] or how == "SIGKILL"
    resumed = _run(*args, "--state", state)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {state} at row {saved['rows_done']:,}" in resumed.stderr
    assert resumed.stdout == expected
    assert json.loads(state.read_text())["rows_done"] == n
    # a finished checkpoint answers at once, with the same numbers
    status, out, err = _main(*args, "--state", state)
    assert (status, out, err) == (0, expected, "")


def test_checkpoint_of_other_inputs_or_options_is_refused(slow, tmp_path, files):
    d, args, expected, _n = slow
    state = tmp_path / "s.json"
    assert _main(*args, "--state", state)[1] == expected
    status, out, err = _main(*args[:-4], "--top-k", "1", "--json", "--state", state)
    assert status == 2 and "does not match this command" in err and "top_k" in err
    status, out, err = _main("eval", "--labels", d / "y.npy", "--proba", d / "z.npy", "--state", state)
    assert status == 2 and "does not match" in err and "mode" in err
    os.utime(d / "z.npy", ns=(time.time_ns(), time.time_ns() + 10**9))
    status, out, err = _main(*args, "--state", state)
    assert (status, out) == (2, "") and "scores files (modified since)" in err
    state.write_text("{not json")
    status, out, err = _main(*args, "--state", state)
    assert (status, out) == (2, "") and "not a fastce checkpoint" in err and err.count("\n") == 1
    state.write_text(json.dumps({"format": "something else"}))
    assert _main(*args, "--state", state)[0] == 2


def test_checkpoints_are_written_atomically(slow, tmp_path, monkeypatch):
    _d, args, expected, n = slow
    state = tmp_path / "s.json"
    real_replace = os.replace
    seen = []

    def replace(src, dst):
        seen.append((os.path.dirname(src), os.path.basename(src), json.loads(Path(src).read_text())["rows_done"]))
        if state.exists():  # the old checkpoint stays whole until the rename
            assert json.loads(state.read_text())["format"] == cli.CHECKPOINT_FORMAT
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert _main(*args, "--state", state, "--checkpoint-seconds", "0")[1] == expected
    assert len(seen) >= n // 2500  # one per chunk, plus start and end
    assert all(directory == str(tmp_path) and name.startswith(".s.json.") for directory, name, _ in seen)
    assert [rows for *_, rows in seen] == sorted(rows for *_, rows in seen)
    assert sorted(os.listdir(tmp_path)) == ["s.json"]


def _fresh_with_rows(data, rows):
    """``data`` turned into a checkpoint at row 0 whose evaluator claims ``rows`` rows counted."""
    evaluator = fastce.Evaluator(10, top_k=(1, 5)).state_dict()
    evaluator["state"]["counters"]["rows"] = rows
    data.update(rows_done=0, evaluator=evaluator)


def _checkpoint_of(args, state):
    """A finished checkpoint of ``args`` in ``state`` (its JSON)."""
    assert _main(*args, "--state", state)[0] == 0
    return json.loads(state.read_text())


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: _fresh_with_rows(d, 2**63 - 1000),  # printed "n": -9223372036854675809, exit 0
        lambda d: d["evaluator"]["state"]["counters"].update(rows=2**63 - 1000),
        lambda d: d["evaluator"]["state"].update(rows_seen=float("inf")),
        lambda d: d["evaluator"]["state"].update(num_classes=-10),
        lambda d: d["evaluator"].update(pending={"rows": 3, "view_dtype": "<f4", "eps": 2.0**-23, "scores": 5,
                                                 "labels": None, "weights": None}),
        lambda d: d["evaluator"].update(nan_policy="omit"),  # fingerprint says raise
        lambda d: d.update(rows_total="many"),
        lambda d: d["fingerprint"]["inputs"]["scores"].update(files=[1, 2]),
        lambda d: d.update(evaluator=[]),
    ],
)
def test_tampered_checkpoint_exits_2_with_one_line(slow, tmp_path, tamper):
    _d, args, _expected, _n = slow
    state = tmp_path / "s.json"
    data = _checkpoint_of(args, state)
    tamper(data)
    state.write_text(json.dumps(data))
    status, out, err = _main(*args, "--state", state)
    assert (status, out) == (2, "") and err.startswith("fastce: error: state file") and err.count("\n") == 1, err


def test_state_must_be_a_regular_file_or_a_link_to_one(slow, tmp_path):
    _d, args, expected, _n = slow
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    zero = tmp_path / "zero"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero):
        result = _run(*args, "--state", path, timeout=60)  # used to hang (FIFO) or read until out of memory
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert "is not a regular file" in result.stderr and result.stderr.count("\n") == 1
    with pytest.raises(cli.UsageError, match="not a regular file"):  # the reader itself never blocks on a FIFO
        cli.load_checkpoint(str(fifo), {})
    real = tmp_path / "real.json"
    _checkpoint_of(args, real)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert _main(*args, "--state", link) == (0, expected, "")
    # A fresh checkpoint through a link is written to its target: the link stays a link.
    real.unlink()  # a dangling link: a fresh run
    assert _main(*args, "--state", link) == (0, expected, "")
    assert link.is_symlink() and json.loads(real.read_text())["rows_done"] > 0


def test_stale_temporaries_of_killed_runs_are_removed(slow, tmp_path):
    _d, args, expected, _n = slow
    state = tmp_path / "s.json"
    now = time.time()
    dead = 2**22 + 12345  # above Linux's pid_max: never a running process
    files = {  # name: (age in seconds, removed?)
        f".s.json.{dead}.0123abcd.tmp": (120, True),  # dead writer, over a minute old
        f".s.json.{dead}.0123abce.tmp": (5, False),  # too fresh to judge
        f".s.json.{os.getppid()}.0123abcf.tmp": (120, False),  # its writer still runs
        f".s.json.{os.getppid()}.0123abd0.tmp": (700, True),  # ten minutes: stale whatever the pid
        ".s.json.ab_c1234.tmp": (700, True),  # an older fastce's mkstemp name
        ".s.json.ab_c1235.tmp": (120, False),  # ... no pid: kept until ten minutes
        f".other.json.{dead}.0123abcd.tmp": (700, False),  # another state file's
        f".s.json.{dead}.0123abcd.tmp.keep": (700, False),  # not our pattern
        "s.json.tmp": (700, False),
    }
    for name, (age, _) in files.items():
        (tmp_path / name).write_text("partial")
        os.utime(tmp_path / name, (now - age, now - age))
    assert _main(*args, "--state", state) == (0, expected, "")
    left = set(os.listdir(tmp_path))
    assert left == {"s.json"} | {name for name, (_, removed) in files.items() if not removed}


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoint_follows_the_umask(slow, tmp_path, umask, mode):
    _d, args, expected, _n = slow
    state = tmp_path / "s.json"
    old = os.umask(umask)
    try:
        assert _main(*args, "--state", state)[1] == expected
    finally:
        os.umask(old)
    assert os.stat(state).st_mode & 0o777 == mode


# -- optional dependencies ------------------------------------------------------------------


def _no_reading(monkeypatch):
    """Make any read of rows fail the test: optional dependencies are checked before."""
    def refuse(*args, **kwargs):
        raise AssertionError("rows were read before the missing dependency was reported")

    monkeypatch.setattr(cli.files, "iter_chunks", refuse)


def test_plots_without_matplotlib_fail_before_reading(files, tmp_path, monkeypatch):
    d, *_ = files
    _no_reading(monkeypatch)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    status, out, err = _main("report", "--labels", d / "y.npy", "--logits", d / "z.npy", "--plots", tmp_path / "plots")
    assert (status, out) == (2, "") and err == 'fastce: error: --plots needs matplotlib: pip install "fastce[plots]" (or pip install matplotlib).\n'
    assert not (tmp_path / "plots").exists()


def test_plots_into_a_file_fail_before_reading(files, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    d, *_ = files
    _no_reading(monkeypatch)
    (tmp_path / "taken").write_text("")
    status, out, err = _main("report", "--labels", d / "y.npy", "--logits", d / "z.npy", "--plots", tmp_path / "taken")
    assert (status, out) == (2, "") and "is not a directory" in err


def test_scheduler_and_parquet_without_their_extras_fail_before_reading(files, tmp_path, monkeypatch):
    d, *_ = files
    _no_reading(monkeypatch)
    monkeypatch.setitem(sys.modules, "distributed", None)
    status, out, err = _main("eval", "--labels", d / "y.npy", "--logits", d / "z.npy", "--scheduler", "tcp://127.0.0.1:1")
    assert (status, out) == (2, "") and "--scheduler needs dask and distributed" in err
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    (tmp_path / "t.parquet").write_bytes(b"PAR1" + b"\0" * 64)
    status, out, err = _main("eval", "--logits", tmp_path / "t.parquet")
    assert (status, out) == (2, "") and "needs pyarrow" in err


# -- progress -------------------------------------------------------------------------------


@pytest.mark.parametrize("request_size", [True, False])
def test_progress_bar_on_a_terminal_and_never_on_stdout(slow, request_size):
    pty = pytest.importorskip("pty")
    _d, args, expected, _n = slow
    leader, follower = pty.openpty()
    if request_size:
        import fcntl
        import struct
        import termios

        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastce", *map(str, args)],
        stdout=subprocess.PIPE, stderr=follower, text=True, env=_env(**{cli._DELAY_ENV: "0.01"}),
    )
    os.close(follower)
    out, _ = proc.communicate(timeout=120)
    chunks = []
    while True:
        try:
            piece = os.read(leader, 65536)
        except OSError:
            break
        if not piece:
            break
        chunks.append(piece)
    os.close(leader)
    shown = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert out == expected  # stdout holds the JSON and nothing else
    assert "GB/s" in shown and ("100%" in shown or "100.0%" in shown)  # tqdm, or the built-in line


def test_builtin_progress_line():
    stream = io.StringIO()
    bar = LineProgress(1000, 4000, initial=100, stream=stream, min_interval=0.0)
    bar.update(400)
    bar.update(500)
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\n")
    assert "1k/1k rows 100.0%" in text and "rows/s" in text and "GB/s" in text and "ETA" in text


def test_progress_is_silent_off_a_terminal_and_falls_back_without_tqdm(monkeypatch):
    assert isinstance(make_progress(10, 1, stream=io.StringIO()), SilentProgress)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now fails
    bar = make_progress(10, 1, stream=Terminal())
    assert isinstance(bar, LineProgress)


def test_progress_rate_follows_recent_throughput(monkeypatch):
    from fastce import progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    bar = LineProgress(100_000, 1_000_000, stream=stream, min_interval=0.0)  # 1 MB a row
    clock[0] += 10.0  # a slow first chunk (the kernels compile)
    bar.update(100)
    for _ in range(50):  # then 2,000 rows (2 GB) a second
        clock[0] += 0.1
        bar.update(200)
    last = bar.line().split()
    assert last[last.index("GB/s") - 1] == "2.00"  # since the start it would read 0.73
    assert last[last.index("rows/s") - 1] == "2k"
    for _ in range(40):  # a slowdown shows within the window
        clock[0] += 0.1
        bar.update(50)
    last = bar.line().split()
    assert last[last.index("GB/s") - 1] == "0.50"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("bar", ["tqdm", "line"])
def test_an_error_mid_run_ends_the_bar_line_first(tmp_path, monkeypatch, bar):
    if bar == "line":
        monkeypatch.setitem(sys.modules, "tqdm", None)
    else:
        pytest.importorskip("tqdm")
    n, c = 20_000, 4
    rng = np.random.default_rng(1)
    labels = rng.integers(0, c, n)
    labels[n - 10] = c  # out of range, in the last chunk
    np.save(tmp_path / "y.npy", labels)
    np.save(tmp_path / "z.npy", rng.standard_normal((n, c)).astype(np.float32))
    monkeypatch.setenv(cli._DELAY_ENV, "0.02")
    err = _Terminal()
    status = cli.main(
        ["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--chunk-rows", "1000"],
        out=io.StringIO(), err=err,
    )
    text = err.getvalue()
    assert status == 2
    shown, message = text.split("fastce: error: ")
    assert "GB/s" in shown and shown.endswith("\n")  # the bar's line was ended before the error...
    assert message.count("\n") == 1 and message.endswith("\n")  # ...and nothing was drawn after it
    assert f"y_true row {n - 10} is {c}" in message


# -- memory -------------------------------------------------------------------------------


def test_anonymous_memory_does_not_grow_with_the_file(tmp_path):
    """A 300 MB float32 file: RssAnon grows by a small constant, not by the file."""
    rows, classes = 75_000, 1000
    block = np.random.default_rng(0).standard_normal((1000, classes)).astype(np.float32)
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(rows, classes))
    for start in range(0, rows, 1000):
        big[start : start + 1000] = block
    big.flush()
    del big
    np.save(tmp_path / "y.npy", np.arange(rows) % classes)
    np.save(tmp_path / "small.npy", block[:100])
    np.save(tmp_path / "small_y.npy", np.arange(100) % classes)
    script = textwrap.dedent(
        f"""
        import io, json, threading, time
        from fastce import cli

        def anon():
            with open("/proc/self/status") as fp:
                for line in fp:
                    if line.startswith("RssAnon:"):
                        return int(line.split()[1]) * 1024

        d = {str(tmp_path)!r}
        # warm up: same code path, tiny file (imports, kernel cache, thread pool)
        assert cli.main(["eval", "--labels", d + "/small_y.npy", "--logits", d + "/small.npy"], out=io.StringIO()) == 0
        base = peak = anon()
        done = False

        def sample():
            global peak
            while not done:
                peak = max(peak, anon())
                time.sleep(0.001)

        thread = threading.Thread(target=sample)
        thread.start()
        status = cli.main(["eval", "--labels", d + "/y.npy", "--logits", d + "/big.npy", "--json"], out=io.StringIO())
        done = True
        thread.join()
        print(json.dumps({{"status": status, "base": base, "peak": max(peak, anon())}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == 0
    growth = report["peak"] - report["base"]
    print(f"RssAnon {report['base'] / 2**20:.1f} MiB -> peak {report['peak'] / 2**20:.1f} MiB")
    file_size = os.path.getsize(tmp_path / "big.npy")
    assert file_size > 290e6
    assert growth < 32 * 2**20, f"RssAnon grew by {growth / 2**20:.1f} MiB reading a {file_size / 2**20:.0f} MiB file"


def test_messages_name_the_commands_flags_not_python_arguments(tmp_path):
    # "pass them as logits= instead", "leave it at None", "worst_k must be ...": the command has no such arguments.
    rng = np.random.default_rng(0)
    z = rng.standard_normal((300, 4)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "p.npy", np.abs(z) + 1)
    np.save(tmp_path / "y.npy", rng.integers(0, 4, 300))
    np.save(tmp_path / "ym.npy", (rng.random((300, 4)) < 0.3).astype(np.int64))
    y, zf, pf, ym = (str(tmp_path / f) for f in ("y.npy", "z.npy", "p.npy", "ym.npy"))
    for args, wanted in (
        (["eval", "--labels", y, "--proba", pf], "pass them as --logits instead"),
        (["eval", "--labels", ym, "--logits", zf, "--ignore-index", "-100", "--task", "multilabel"],
         "--ignore-index applies to class-index labels"),
        (["report", "--labels", y, "--logits", zf, "--worst-k", "2000000"], "--worst-k must be an integer"),
        (["compare", "--labels", y, "--logits", zf, zf, "--names", "a", "a"], "--names must be"),
    ):
        status, out, err = _main(*args, "--no-progress")
        assert status == 2 and wanted in err, err
        assert not re.search(r"\b(logits|proba)=|worst_k|ignore_index|leave it at None", err), err


def test_errors_name_the_labels_file_and_the_shard_that_holds_the_row(tmp_path):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((300, 4)).astype(np.float32)
    targets = (rng.random((300, 4)) < 0.3).astype(np.int64)
    targets[5, 3] = 2
    np.save(tmp_path / "targets.npy", targets)
    np.save(tmp_path / "z.npy", z)
    status, out, err = _main("eval", "--labels", tmp_path / "targets.npy", "--logits", tmp_path / "z.npy")
    assert status == 2 and f"{tmp_path / 'targets.npy'}: y_true row 5 holds 2.0" in err
    (tmp_path / "shards").mkdir()
    bad = z.copy()
    bad[250, 1] = np.nan
    np.save(tmp_path / "shards" / "a.npy", bad[:200])
    np.save(tmp_path / "shards" / "b.npy", bad[200:])
    np.save(tmp_path / "y.npy", rng.integers(0, 4, 300))
    status, out, err = _main("eval", "--labels", tmp_path / "y.npy", "--logits", tmp_path / "shards", "--no-progress")
    assert status == 2 and f"in {tmp_path / 'shards' / 'b.npy'} (its row 50): scores row 250" in err, err


def test_weights_and_groups_saved_as_a_column_are_read_as_one_value_a_row(tmp_path):
    # A (rows, 1) file passed the up-front check, then failed at the first chunk (exit 2, a checkpoint written).
    rng = np.random.default_rng(0)
    z = rng.standard_normal((300, 4)).astype(np.float32)
    y = rng.integers(0, 4, 300)
    w = rng.random(300)
    g = np.arange(300) // 10
    for name, array in (("z", z), ("z2", z[:, ::-1].copy()), ("y", y), ("w", w), ("wcol", w[:, None]), ("g", g),
                        ("gcol", g[:, None])):
        np.save(tmp_path / f"{name}.npy", array)
    base = ["--labels", tmp_path / "y.npy", "--json"]
    for command, scores in (("eval", ["--logits", tmp_path / "z.npy"]),
                            ("compare", ["--logits", tmp_path / "z.npy", tmp_path / "z2.npy"])):
        vector = _main(command, *scores, *base, "--weights", tmp_path / "w.npy", "--groups", tmp_path / "g.npy")
        column = _main(command, *scores, *base, "--weights", tmp_path / "wcol.npy", "--groups", tmp_path / "gcol.npy",
                       "--state", tmp_path / f"{command}.state")
        assert vector[0] == 0 and column == vector, column[2]


def test_one_column_labels_and_scores_files_are_a_one_label_indicator_as_evaluate(tmp_path):
    # fastce eval read (rows, 1) labels beside (rows, 1) logits as class indices over one class (a label 1 was
    # "outside 0..0", and its hint said to pass a target of shape (N, 1): what the file held); evaluate reads them
    # as a one-label multi-label indicator. Integer or float labels.
    rng = np.random.default_rng(3)
    z = rng.normal(size=(500, 1))
    y = (rng.uniform(size=(500, 1)) < 0.4).astype(np.int64)
    np.save(tmp_path / "z.npy", z)
    for dtype in (np.int64, np.float32):
        np.save(tmp_path / "y.npy", y.astype(dtype))
        status, out, err = _main("eval", "--labels", tmp_path / "y.npy", "--logits", tmp_path / "z.npy", "--json",
                                 "--no-progress")
        assert status == 0, err
        assert out == fastce.evaluate(y.astype(dtype), logits=z).to_json() + "\n"
        assert json.loads(out)["task"] == "multilabel"


def test_a_sequence_files_error_names_the_file_row_and_position_once(tmp_path):
    # The command names the file's row and position itself; the API's "position (2, 7) of this batch (row 107 of
    # the stream)" came after it, naming the same place twice and a batch the user never made.
    rng = np.random.default_rng(2)
    z = rng.normal(size=(4, 50, 10)).astype(np.float32)
    z[2, 7, 3] = np.nan
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", rng.integers(0, 10, size=(4, 50)))
    status, _, err = _main("eval", "--labels", tmp_path / "y.npy", "--logits", tmp_path / "z.npy", "--no-progress")
    assert status == 2
    assert "z.npy (its row 2, position 7): scores at that position holds NaN" in err and "of this batch" not in err
    assert "107" not in err


def test_command_messages_for_one_column_scores_sequence_files_on_a_cluster_and_a_data_file_as_state(tmp_path):
    # Found by a hunt of the command: Python-only advice (scores[:, 0]), a --scheduler error about "a dask array"
    # the user never made, and "delete it to start over" said of a data file passed as --state.
    rng = np.random.default_rng(6)
    np.save(tmp_path / "z1.npy", rng.normal(size=(50, 1)))
    np.save(tmp_path / "y.npy", rng.integers(0, 2, size=50))
    status, _, err = _main("eval", "--labels", tmp_path / "y.npy", "--logits", tmp_path / "z1.npy", "--no-progress")
    assert status == 2 and "np.save(path, z[:, 0])" in err and "scores[:, 0]" not in err
    status, _, err = _main("eval", "--labels", tmp_path / "y.npy", "--logits", tmp_path / "z1.npy", "--no-progress",
                           "--state", tmp_path / "y.npy")
    assert status == 2 and "is not a fastce checkpoint" in err and "delete" not in err and "pass another --state" in err
    np.save(tmp_path / "zs.npy", rng.normal(size=(4, 5, 3)))
    np.save(tmp_path / "ys.npy", rng.integers(0, 3, size=(4, 5)))
    pytest.importorskip("distributed")
    status, _, err = _main("eval", "--labels", tmp_path / "ys.npy", "--logits", tmp_path / "zs.npy", "--no-progress",
                           "--scheduler", "tcp://127.0.0.1:1")
    assert status == 2 and "--scheduler does not take sequence files" in err


def test_the_task_of_a_targets_file_is_read_in_chunks_of_the_chunk_size(tmp_path, monkeypatch):
    # Telling one-hot rows from a multi-label indicator read 65,536 rows at a time whatever --chunk-rows (8.4 GB
    # for 32,000 float32 columns): now --chunk-rows, or ~64 MiB of labels.
    from fastce import tasks

    rng = np.random.default_rng(7)
    np.save(tmp_path / "z.npy", rng.normal(size=(3000, 8)))
    np.save(tmp_path / "y.npy", (rng.uniform(size=(3000, 8)) < 0.3).astype(np.int8))
    reads = []
    kind_of_chunks = tasks.kind_of_chunks

    def recording(chunks, dtype):
        return kind_of_chunks(((lo, reads.append(chunk.shape[0]) or chunk) for lo, chunk in chunks), dtype)

    monkeypatch.setattr(tasks, "kind_of_chunks", recording)
    status, _, err = _main("eval", "--labels", tmp_path / "y.npy", "--logits", tmp_path / "z.npy", "--no-progress",
                           "--chunk-rows", "100")
    assert status == 0, err
    assert reads and max(reads) <= 100


def test_a_sequence_files_weights_error_keeps_its_block_row(tmp_path):
    # The row taken out of the API's message for sequence files is the subject's only ("y_true row 103 is"):
    # "first in the block of rows from row 512" lost its number ("from), so").
    rng = np.random.default_rng(0)
    np.save(tmp_path / "z.npy", rng.normal(size=(4, 300, 3)))
    np.save(tmp_path / "y.npy", rng.integers(0, 3, size=(4, 300)))
    w = np.ones((4, 300))
    w[2, 100:] = 1e308
    np.save(tmp_path / "w.npy", w)
    status, _, err = _main("eval", "--labels", tmp_path / "y.npy", "--logits", tmp_path / "z.npy", "--weights",
                           tmp_path / "w.npy", "--no-progress")
    assert status == 2 and "rows from)" not in err and "first in the block of rows from row " in err
