"""Every task through every door: the Evaluator, the command over files and state files equal evaluate bit for bit."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastce
from fastce import cli
from fastce.errors import InputError, OmittedRowsWarning

TASKS = ("multiclass", "binary", "multilabel", "soft")


def _strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


def _data(task: str, n: int, c: int = 6, *, seed: int = 0, dtype=np.float32, weighted: bool = False, nan_rows=()):
    """(y, scores, weights, from_logits) of ``task``; logits in general, probabilities for one binary variant."""
    rng = np.random.default_rng(seed)
    if task == "binary":
        scores = (2 * rng.standard_normal(n)).astype(dtype)
        y = rng.integers(0, 2, n)
    else:
        scores = (2 * rng.standard_normal((n, c))).astype(dtype)
        if task == "multiclass":
            y = rng.integers(0, c, n)
        elif task == "multilabel":
            y = (rng.random((n, c)) < 0.3).astype(np.uint8)
            y[0] = [1, 1] + [0] * (c - 2)  # at least one row that is not one-hot
        else:
            y = rng.random((n, c)) ** 3
            y /= y.sum(axis=1, keepdims=True)
    for row in nan_rows:
        scores[row] = np.nan
    weights = rng.random(n) * 3 if weighted and task != "soft" else None
    return y, scores, weights


def _evaluate(task, y, scores, weights=None, **options):
    return fastce.evaluate(y, logits=scores, sample_weight=weights, **options)


@pytest.mark.parametrize("task", TASKS)
def test_each_task_is_inferred_and_reported(task):
    y, z, _ = _data(task, 300)
    m = _evaluate(task, y, z)
    assert m.task == task
    assert fastce.evaluate(y, logits=z, task=task) == m


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    task=st.sampled_from(TASKS),
    n=st.integers(1, 3000),
    cuts=st.lists(st.floats(0, 1), max_size=6),
    dtype=st.sampled_from([np.float32, np.float64, np.float16]),
    weighted=st.booleans(),
    policy=st.sampled_from(["raise", "omit"]),
)
def test_evaluator_equals_evaluate_bit_for_bit_for_any_split(task, n, cuts, dtype, weighted, policy):
    nan_rows = () if policy == "raise" or n < 3 else (n // 3,)
    y, z, w = _data(task, n, dtype=dtype, weighted=weighted, nan_rows=nan_rows)
    options = dict(nan_policy=policy)
    with pytest.warns(OmittedRowsWarning) if nan_rows else _no_warning():
        expected = _evaluate(task, y, z, w, **options)
    bounds = sorted({0, n, *(int(c * n) for c in cuts)})
    ev = fastce.Evaluator(**options)
    for lo, hi in zip(bounds, bounds[1:]):
        ev.update(y[lo:hi], z[lo:hi], None if w is None else w[lo:hi])
        if lo % 2:  # a JSON round trip mid-stream changes nothing
            ev = fastce.Evaluator.from_state_dict(_strict_loads(json.dumps(ev.state_dict(), allow_nan=False)))
    assert ev.task == task
    with pytest.warns(OmittedRowsWarning) if nan_rows else _no_warning():
        assert ev.result() == expected


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("task", TASKS)
def test_merge_of_two_streams_equals_evaluate(task):
    y, z, w = _data(task, 5000, weighted=True)
    first = fastce.Evaluator(task=task)
    block = None
    first.update(y[:10], z[:10], None if w is None else w[:10])
    block = first.block_rows
    cut = 3 * block if 3 * block < 5000 else block
    first = fastce.Evaluator(task=task)
    second = fastce.Evaluator(task=task)
    first.update(y[:cut], z[:cut], None if w is None else w[:cut])
    second.update(y[cut:], z[cut:], None if w is None else w[cut:])
    assert first.merge(second).result() == _evaluate(task, y, z, w)


@pytest.mark.parametrize("task", TASKS)
def test_state_dicts_carry_the_task_and_refuse_another(task):
    y, z, w = _data(task, 700, weighted=True)
    ev = fastce.Evaluator()
    ev.update(y, z, w)
    data = _strict_loads(json.dumps(ev.state_dict(), allow_nan=False))
    assert (data["state"].get("task", "multiclass")) == task
    again = fastce.Evaluator.from_state_dict(data)
    assert again.task == task and again.result() == ev.result()
    state = ev.state()
    assert type(state).from_dict(state.to_dict()).to_dict() == state.to_dict()
    other = "soft" if task != "soft" else "multilabel"
    data["settings"]["task"] = other
    with pytest.raises(InputError, match="fastce .*state"):
        fastce.Evaluator.from_state_dict(data)


def test_state_merge_refuses_unlike_tasks():
    y, z, _ = _data("multilabel", 50)
    ys, zs, _ = _data("soft", 50)
    a = fastce.Evaluator()
    a.update(y, z)
    b = fastce.Evaluator()
    b.update(ys, zs)
    with pytest.raises(ValueError, match="different settings"):
        a.state().merge(b.state())
    with pytest.raises(ValueError, match="different settings"):
        a.merge(b)


def test_auto_task_requires_later_batches_to_agree():
    y, z, _ = _data("multilabel", 100)
    ev = fastce.Evaluator()
    ev.update(y[:50], z[:50])
    with pytest.raises(InputError, match=r"shape \(50,\).*first batch made this a multilabel"):
        ev.update(np.zeros(50, dtype=np.int64), z[50:])
    one_hot = np.eye(6, dtype=np.uint8)[np.arange(50) % 6]
    ev.update(one_hot, z[50:])  # one-hot rows are indicator rows too
    mc = fastce.Evaluator()
    mc.update(np.arange(6) % 6, z[:6])
    with pytest.raises(InputError, match="multi-label targets, but the first batch made this a multiclass"):
        mc.update(y[:50], z[:50])
    binary = fastce.Evaluator()
    binary.update(np.array([0, 1]), np.array([0.5, -1.0]))
    with pytest.raises(InputError, match=r"first batch made this a binary evaluation"):
        binary.update(np.array([0, 1]), np.zeros((2, 3)))
    assert binary.rows_seen == 2  # a refused batch changes nothing


def test_a_refused_first_batch_leaves_the_task_open():
    ev = fastce.Evaluator()
    with pytest.raises(InputError):
        ev.update(np.array([0, 5]), np.zeros(2))  # 1-D scores: binary, but label 5
    assert ev.task == "auto" and ev.rows_seen == 0
    y, z, _ = _data("multiclass", 20)
    ev.update(y, z)
    assert ev.task == "multiclass"


def test_evaluator_options_of_other_tasks_are_refused_clearly():
    with pytest.raises(InputError, match="top_k"):
        fastce.Evaluator(task="multilabel", num_classes=4, top_k=(1, 2))
    with pytest.raises(InputError, match="logits="):
        fastce.Evaluator(task="soft", num_classes=4, from_logits=False)
    with pytest.raises(InputError, match="ignore_index applies to class-index labels"):
        fastce.Evaluator(task="multilabel", num_classes=4, ignore_index=-100)
    with pytest.raises(InputError, match="diagnose supports multi-class, binary and multi-label targets"):
        fastce.Evaluator(task="soft", diagnostics=True, num_classes=4)
    ys, zs, _ = _data("soft", 10)
    with pytest.raises(InputError, match="sample_weight is not supported with soft targets"):
        fastce.Evaluator().update(ys, zs, np.ones(10))


# -- sequences and ignore_index ------------------------------------------------------------------


def _reference_loss(z, y):
    """float64 numpy reference: mean of logsumexp(z) - z[y] over the positions kept."""
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]
    picked = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    return (lse - picked).mean()


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_sequence_scores_with_ignore_index(layout):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((3, 40, 7)).astype(np.float32)
    y = rng.integers(0, 7, (3, 40))
    y[:, 30:] = -100
    y[1, :5] = -100
    base = fastce.evaluate(y, logits=z, ignore_index=-100, top_k=(1, 3))
    kept = y != -100
    assert base.n == kept.sum()
    assert base.cross_entropy == pytest.approx(_reference_loss(z[kept], y[kept]), rel=1e-6)
    assert base.accuracy == pytest.approx((z[kept].argmax(-1) == y[kept]).mean(), abs=0)
    if layout == "F":
        other, labels = np.asfortranarray(z), y
    elif layout == "C":
        other, labels = z.copy(), y.copy()
    else:
        big = np.zeros((3, 80, 7), dtype=np.float32)
        big[:, ::2] = z
        other, labels = big[:, ::2], y
    assert fastce.evaluate(labels, logits=other, ignore_index=-100, top_k=(1, 3)) == base
    ev = fastce.Evaluator(7, top_k=(1, 3), ignore_index=-100)
    for b in range(3):
        ev.update(y[b], z[b])
    assert ev.result() == base


def test_sequence_multilabel_and_errors():
    rng = np.random.default_rng(6)
    z = rng.standard_normal((4, 9, 5))
    y = (rng.random((4, 9, 5)) < 0.4).astype(np.uint8)
    y[0, 0] = [1, 1, 0, 0, 0]
    m = fastce.evaluate(y, logits=z)
    assert m.task == "multilabel" and m == fastce.evaluate(y.reshape(-1, 5), logits=z.reshape(-1, 5))
    with pytest.raises(InputError, match=r"class axis last.*np.moveaxis"):
        fastce.evaluate(np.zeros((4, 5), dtype=np.int64), logits=z)
    with pytest.raises(InputError, match="no rows left"):
        fastce.evaluate(np.full((4, 9), -100), logits=z, ignore_index=-100)
    with pytest.raises(InputError, match="ignore_index applies to class-index labels"):
        fastce.evaluate(y, logits=z, ignore_index=-100)
    with pytest.raises(InputError, match="ignore_index applies to class-index labels.*not to the binary task"):
        fastce.evaluate(np.array([0, -100]), logits=np.zeros(2), ignore_index=-100)


def _not_flattenable(a):
    """The same values, in a layout whose leading axes do not merge in place (read slab by slab)."""
    return np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1)


@pytest.mark.parametrize("door", ["evaluate", "diagnose"])
def test_sequence_task_and_errors_do_not_depend_on_the_layout(door):
    # The slab-by-slab read inferred the task from its first (T, C) slab only (a later slab of multi-label rows was
    # refused as another task) and its errors named "scores" instead of the door's argument.
    call = getattr(fastce, door)
    rng = np.random.default_rng(8)
    z = rng.standard_normal((4, 5, 3))
    y = np.zeros((4, 5, 3), dtype=np.int64)
    y[..., 0] = 1  # the first sequence one-hot...
    y[1:, :, 1] = rng.integers(0, 2, (3, 5))  # ...the others multi-label
    expected = fastce.evaluate(y, logits=z)
    assert expected.task == "multilabel"
    got = call(_not_flattenable(y), logits=_not_flattenable(z))
    assert (got if door == "evaluate" else got.metrics) == expected
    bad = z.copy()
    bad[3, 0, 1] = np.nan
    for scores, name in ((bad, "logits"), (np.exp(bad) / np.exp(bad).sum(-1, keepdims=True), "proba")):
        labels = rng.integers(0, 3, (4, 5))
        with pytest.raises(InputError) as flat:
            call(labels, **{name: scores})
        with pytest.raises(InputError) as slabs:
            call(labels, **{name: _not_flattenable(scores)})
        assert slabs.value.argument == flat.value.argument == name
        assert str(slabs.value) == str(flat.value) and slabs.value.row == flat.value.row == 15


def test_ignore_index_in_two_dimensional_evaluate_matches_dropping_the_rows():
    rng = np.random.default_rng(7)
    z = rng.standard_normal((1000, 9))
    y = rng.integers(0, 9, 1000)
    y[::3] = -1
    m = fastce.evaluate(y, logits=z, ignore_index=-1)
    dropped = fastce.evaluate(y[y != -1], logits=z[y != -1])
    assert m.n == dropped.n and m.accuracy == dropped.accuracy
    assert m.cross_entropy == pytest.approx(dropped.cross_entropy, rel=1e-14)
    with pytest.raises(InputError, match="row 0 is -1"):
        fastce.evaluate(y, logits=z)



@pytest.mark.parametrize("value", [1.5, 1.0, True, np.float32(1.0), "1", 2**63])
def test_every_door_refuses_an_ignore_index_that_is_not_an_int64(value):
    # 1.5 once left out class 1's rows through evaluate, diagnose and fastce.dask (cast to 1 on the way), while
    # the Evaluator and cross_entropy refused it.
    import dask.array as da

    import fastce.dask

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 60)
    z = rng.standard_normal((60, 4)).astype(np.float32)
    doors = {
        "evaluate": lambda: fastce.evaluate(y, logits=z, ignore_index=value),
        "sequences": lambda: fastce.evaluate(y.reshape(6, 10), logits=z.reshape(6, 10, 4), ignore_index=value),
        "diagnose": lambda: fastce.diagnose(y, logits=z, ignore_index=value),
        "Evaluator": lambda: fastce.Evaluator(ignore_index=value),
        "cross_entropy": lambda: fastce.cross_entropy(z, y, ignore_index=value),
        "dask": lambda: fastce.dask.evaluate(da.from_array(y, 20), logits=da.from_array(z, (20, 4)),
                                             ignore_index=value),
    }
    for door, call in doors.items():
        with pytest.raises(InputError, match="ignore_index must be") as caught:
            call()
        assert caught.value.argument == "ignore_index", door

# -- the command over files ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    out = {}
    for task in TASKS:
        y, z, _ = _data(task, 4000, seed=11)
        np.save(d / f"{task}_y.npy", y)
        np.save(d / f"{task}_z.npy", z)
        out[task] = (d / f"{task}_y.npy", d / f"{task}_z.npy", _evaluate(task, y, z))
    return out


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("chunk", [None, "333"])
def test_eval_command_takes_every_task(task_files, task, chunk):
    y, z, expected = task_files[task]
    argv = ["eval", "--labels", str(y), "--logits", str(z), "--json", "--no-progress"]
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(argv + (["--chunk-rows", chunk] if chunk else []), out=out, err=err) == 0, err.getvalue()
    assert out.getvalue() == expected.to_json() + "\n"
    forced = io.StringIO()
    assert cli.main(argv + ["--task", task], out=forced, err=io.StringIO()) == 0
    assert forced.getvalue() == out.getvalue()


def test_eval_command_ignore_index_and_refusals(task_files, tmp_path):
    rng = np.random.default_rng(12)
    z = rng.standard_normal((500, 4)).astype(np.float32)
    y = rng.integers(0, 4, 500)
    y[::5] = -100
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "z.npy", z)
    out, err = io.StringIO(), io.StringIO()
    argv = ["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--json", "--no-progress"]
    assert cli.main(argv + ["--ignore-index", "-100"], out=out, err=err) == 0, err.getvalue()
    assert out.getvalue() == fastce.evaluate(y, logits=z, ignore_index=-100).to_json() + "\n"
    err = io.StringIO()
    assert cli.main(argv, out=io.StringIO(), err=err) == 2
    assert "--ignore-index -100" in err.getvalue()
    y_ml, z_ml, _ = task_files["multilabel"]
    err = io.StringIO()
    report = ["report", "--labels", str(y_ml), "--logits", str(z_ml), "--no-progress", "--plots", str(tmp_path / "p")]
    assert cli.main(report, out=io.StringIO(), err=err) == 0, err.getvalue()
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["labels.png", "reliability.png"]
    assert (tmp_path / "p" / "labels.png").read_bytes()[:4] == b"\x89PNG"
    y_b, z_b, _ = task_files["binary"]
    err = io.StringIO()
    assert cli.main(["eval", "--labels", str(y_b), "--logits", str(z_b), "--task", "multiclass"], out=io.StringIO(),
                    err=err) == 2
    assert "--task multiclass takes scores of shape (rows, classes)" in err.getvalue()
    y_soft, z_soft, _ = task_files["soft"]
    err = io.StringIO()
    assert cli.main(["report", "--labels", str(y_soft), "--logits", str(z_soft), "--no-progress"], out=io.StringIO(),
                    err=err) == 2
    assert "for soft targets fastce eval reports" in err.getvalue()


def _kill_after_a_checkpoint(args, state) -> dict:
    """Run the command ``args`` (slowed down), kill it once ``state`` holds rows, and return that checkpoint."""
    import time

    env = dict(__import__("os").environ, **{cli._DELAY_ENV: "0.05"})
    proc = subprocess.Popen([sys.executable, "-m", "fastce", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if state.exists() and json.loads(state.read_text())["rows_done"] > 0:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    return json.loads(state.read_text())


@pytest.mark.parametrize("task", ["binary", "multilabel", "soft"])
def test_killed_run_of_every_task_resumes_to_the_same_numbers(task, tmp_path):
    y, z, _ = _data(task, 60_000, seed=13)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "z.npy", z)
    expected = _evaluate(task, y, z).to_json() + "\n"
    state = tmp_path / "run.state"
    args = ["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--json",
            "--chunk-rows", "2500", "--state", str(state), "--checkpoint-seconds", "0.05"]
    saved = _kill_after_a_checkpoint(args, state)
    assert 0 < saved["rows_done"] < 60_000
    resumed = subprocess.run([sys.executable, "-m", "fastce", *args], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    assert resumed.stdout == expected


def test_killed_run_over_sequence_files_resumes_at_the_right_sequence(tmp_path):
    # The checkpoint counted positions (B x T) and the resumed run skipped to that many sequences: rows left out
    # and a wrong cross-entropy, exit status 0.
    rng = np.random.default_rng(21)
    y = rng.integers(0, 5, (3000, 4))
    y[rng.random(y.shape) < 0.1] = -100
    z = rng.standard_normal((3000, 4, 5)).astype(np.float32)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "z.npy", z)
    expected = fastce.evaluate(y, logits=z, ignore_index=-100).to_json() + "\n"
    state = tmp_path / "run.state"
    args = ["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--json",
            "--ignore-index", "-100", "--chunk-rows", "100", "--state", str(state), "--checkpoint-seconds", "0.05"]
    saved = _kill_after_a_checkpoint(args, state)
    assert 0 < saved["rows_done"] < 3000 and saved["rows_total"] == 3000
    assert saved["evaluator"]["state"]["rows_seen"] + (saved["evaluator"]["pending"] or {}).get("rows", 0) == (
        4 * saved["rows_done"])
    resumed = subprocess.run([sys.executable, "-m", "fastce", *args], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at row {saved['rows_done']:,} of 3,000" in resumed.stderr
    assert resumed.stdout == expected
    again = subprocess.run([sys.executable, "-m", "fastce", *args], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout == expected, again.stderr  # a finished run, rerun


def test_sequence_files_take_a_weight_and_a_group_per_position(tmp_path):
    # The command refused (B, T) weights when opening the file and (B,) ones at the first batch: sequence files
    # could not be weighted at all; nor take a group id per position, which the README lists.
    rng = np.random.default_rng(23)
    y = rng.integers(0, 5, (300, 4))
    y[rng.random(y.shape) < 0.1] = -100
    z = rng.standard_normal((300, 4, 5)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, (300, 4))
    g = rng.integers(0, 40, (300, 4))
    for name, array in (("y", y), ("z", z), ("w", w), ("g", g), ("w_row", w[:, 0]), ("g_row", g[:, 0])):
        np.save(tmp_path / f"{name}.npy", array)
    base = ["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--json",
            "--ignore-index", "-100", "--chunk-rows", "7", "--no-progress"]
    for weights, groups, expected in (
        ("w", "g", fastce.evaluate(y, logits=z, sample_weight=w, groups=g, ignore_index=-100)),
        ("w", "g_row", fastce.evaluate(y, logits=z, sample_weight=w, groups=np.repeat(g[:, :1], 4, axis=1),
                                       ignore_index=-100)),
    ):
        out, err = io.StringIO(), io.StringIO()
        args = [*base, "--weights", str(tmp_path / f"{weights}.npy"), "--groups", str(tmp_path / f"{groups}.npy")]
        assert cli.main(args, out=out, err=err) == 0, err.getvalue()
        assert out.getvalue() == expected.to_json() + "\n"
    err = io.StringIO()
    assert cli.main([*base, "--weights", str(tmp_path / "w_row.npy")], out=io.StringIO(), err=err) == 2
    assert "must have shape (300, 4) (one a position)" in err.getvalue()


def test_an_edited_checkpoint_is_refused(tmp_path):
    y, z, _ = _data("multiclass", 3000, seed=22)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "z.npy", z)
    state = tmp_path / "run.state"
    args = ["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--state", str(state)]
    assert cli.main(args, out=io.StringIO(), err=io.StringIO()) == 0
    text = state.read_text()
    data = json.loads(text)
    sums = data["evaluator"]["state"]["sums"]
    digit = next(i for i, c in enumerate(sums[1]) if c in "123456789abcdef" and i > 2)
    sums[1] = sums[1][:digit] + ("1" if sums[1][digit] != "1" else "2") + sums[1][digit + 1:]
    state.write_text(json.dumps(data))
    err = io.StringIO()
    assert cli.main(args, out=io.StringIO(), err=err) == 2
    assert "damaged or was edited" in err.getvalue()
    del data["checksum"]
    data["evaluator"]["state"]["sums"] = json.loads(text)["evaluator"]["state"]["sums"]
    state.write_text(json.dumps(data))
    err = io.StringIO()
    assert cli.main(args, out=io.StringIO(), err=err) == 2 and "without one" in err.getvalue()


# -- fastce.dask -------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("chunks", [(1000,), (333, 4000, 17, 2650), (7000,)])
def test_dask_equals_evaluate_for_every_task_and_chunking(task, chunks):
    da = pytest.importorskip("dask.array")
    import fastce.dask

    y, z, w = _data(task, sum(chunks), seed=21, weighted=True)
    row_chunks = (tuple(chunks),)
    dz = da.from_array(z, chunks=row_chunks + z.shape[1:])
    dy = da.from_array(y, chunks=(tuple(reversed(chunks)),) + y.shape[1:])  # other chunks than the scores: rechunked
    got = fastce.dask.evaluate(dy, logits=dz, sample_weight=w)
    assert got.task == task and got == _evaluate(task, y, z, w)


@pytest.mark.parametrize("task", TASKS)
def test_dask_files_and_errors_for_every_task(task_files, task):
    pytest.importorskip("dask.array")
    import dask
    import fastce.dask

    y, z, expected = task_files[task]
    with dask.config.set(scheduler="synchronous"):
        got = fastce.dask.evaluate_files(str(y), logits=str(z), chunk_rows=1500)
    assert got == expected
    if task in ("multilabel", "soft"):
        bad = np.load(y).astype(np.float64)
        bad[2500, 1] = 2.0
        da = pytest.importorskip("dask.array")
        with pytest.raises(InputError, match="y_true row 2500 holds 2.0"):
            fastce.dask.evaluate(da.from_array(bad, chunks=(1000, -1)), logits=da.from_array(np.load(z), chunks=(1000, -1)))


def test_diagnose_and_evaluator_take_sequences_with_ignore_index():
    rng = np.random.default_rng(8)
    z = rng.standard_normal((3, 50, 6)).astype(np.float32)
    y = rng.integers(0, 6, (3, 50))
    y[:, 40:] = -100
    kept = y != -100
    r = fastce.diagnose(y, logits=z, ignore_index=-100, worst_k=5)
    plain = fastce.diagnose(y[kept], logits=z[kept], worst_k=5)
    assert r.metrics.n == kept.sum() == plain.metrics.n
    assert r.metrics == fastce.evaluate(y, logits=z, ignore_index=-100)
    assert r.confusion.tolist() == plain.confusion.tolist()
    assert r.loss_split["wrong"]["rows"] == plain.loss_split["wrong"]["rows"]
    rows = np.flatnonzero(kept.reshape(-1))
    assert [w["row"] for w in r.worst] == [int(rows[w["row"]]) for w in plain.worst]  # positions of the flat rows
    assert fastce.diagnose(y, logits=np.asfortranarray(z), ignore_index=-100, worst_k=5).to_json() == r.to_json()
    ev = fastce.Evaluator(6, diagnostics={"worst_k": 5}, ignore_index=-100)
    ev.update(y[:2], z[:2])
    ev.update(y[2:], np.asfortranarray(z[2:]))
    assert ev.report().to_json() == r.to_json()
    assert ev.result() == r.metrics
    with pytest.raises(InputError, match="ignore_index applies to class-index labels"):
        fastce.diagnose(np.zeros(5, dtype=np.int64), logits=np.zeros(5), ignore_index=-100)


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
def test_reports_of_every_task_from_every_door(task, tmp_path):
    """diagnose, the Evaluator (any split, JSON round trip), fastce report and fastce.dask.diagnose: one report."""
    y, z, w = _data(task, 9000, seed=31, weighted=True)
    expected = fastce.diagnose(y, logits=z, sample_weight=w, worst_k=7).to_json()
    ev = fastce.Evaluator(diagnostics={"worst_k": 7})
    for lo, hi in ((0, 1234), (1234, 5000), (5000, 9000)):
        ev.update(y[lo:hi], z[lo:hi], w[lo:hi])
        ev = fastce.Evaluator.from_state_dict(_strict_loads(json.dumps(ev.state_dict(), allow_nan=False)))
    assert ev.task == task and ev.report().to_json() == expected
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "w.npy", w)
    out, err = io.StringIO(), io.StringIO()
    argv = ["report", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--weights",
            str(tmp_path / "w.npy"), "--worst-k", "7", "--json", "--no-progress", "--chunk-rows", "2000"]
    assert cli.main(argv, out=out, err=err) == 0, err.getvalue()
    assert out.getvalue() == expected + "\n"
    da = pytest.importorskip("dask.array")
    from fastce import dask as fastce_dask

    got = fastce_dask.diagnose(y, logits=da.from_array(z, chunks=(2500,) + z.shape[1:]), sample_weight=w, worst_k=7)
    assert got.to_json() == expected


def test_commands_take_sequence_files(tmp_path):
    rng = np.random.default_rng(41)
    z = rng.standard_normal((12, 30, 9)).astype(np.float32)
    y = rng.integers(0, 9, (12, 30))
    y[:, 25:] = -100
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    files = ["--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--ignore-index", "-100"]
    for command, expected in (("eval", fastce.evaluate(y, logits=z, ignore_index=-100)),
                              ("report", fastce.diagnose(y, logits=z, ignore_index=-100))):
        out, err = io.StringIO(), io.StringIO()
        assert cli.main([command, *files, "--json", "--no-progress", "--chunk-rows", "5"], out=out, err=err) == 0, err.getvalue()
        assert out.getvalue() == expected.to_json() + "\n"
    np.save(tmp_path / "bad.npy", y[:, :20])
    err = io.StringIO()
    assert cli.main(["eval", "--labels", str(tmp_path / "bad.npy"), "--logits", str(tmp_path / "z.npy")],
                    out=io.StringIO(), err=err) == 2
    assert "take labels of shape (12, 30)" in err.getvalue()


def test_evaluator_states_of_the_earlier_format_still_load():
    y, z, _ = _data("multiclass", 700)
    ev = fastce.Evaluator(6, top_k=(1, 2), precision="float64")  # format 1 predates precision=: float64 math
    ev.update(y, z)
    data = ev.state_dict()
    old = {"format": "fastce.evaluator/1", "nan_policy": data["nan_policy"], "pending": data["pending"],
           "diagnostics": None, "state": {k: v for k, v in data["state"].items() if k != "task"}}
    again = fastce.Evaluator.from_state_dict(old)
    assert again.task == "multiclass" and again.result() == ev.result()


@pytest.mark.parametrize("task", TASKS)
def test_every_task_is_bit_identical_for_one_and_two_threads(task):
    import numba

    y, z, w = _data(task, 140_000, seed=51, weighted=True)  # above _config.SERIAL_BELOW_ELEMENTS: the pool runs
    threads = numba.get_num_threads()
    results = []
    try:
        for count in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(count)
            metrics = _evaluate(task, y, z, w)
            report = fastce.diagnose(y, logits=z, sample_weight=w).to_json() if task != "soft" else None
            results.append((metrics, report))
    finally:
        numba.set_num_threads(threads)
    assert results[0] == results[1]


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(task=st.sampled_from(TASKS), cuts=st.lists(st.integers(1, 4999), min_size=1, max_size=5, unique=True))
def test_dask_any_chunking_equals_evaluate(task, cuts):
    da = pytest.importorskip("dask.array")
    import dask
    from fastce import dask as fastce_dask

    y, z, w = _data(task, 5000, seed=52, weighted=True)
    bounds = [0, *sorted(cuts), 5000]
    chunks = tuple(b - a for a, b in zip(bounds, bounds[1:]))
    with dask.config.set(scheduler="synchronous"):
        got = fastce_dask.evaluate(da.from_array(y, chunks=(chunks,) + y.shape[1:]),
                                   logits=da.from_array(z, chunks=(chunks,) + z.shape[1:]), sample_weight=w)
    assert got == _evaluate(task, y, z, w)


def test_a_task_that_does_not_fit_the_scores_says_so():
    for task, scores in (("binary", np.zeros((2, 3))), ("multiclass", np.zeros(2)), ("soft", np.zeros(2))):
        with pytest.raises(InputError, match=rf"task='{task}' takes .* but logits has shape"):
            fastce.evaluate(np.array([0, 1]), logits=scores, task=task)
        with pytest.raises(InputError, match=rf"task='{task}' takes"):
            fastce.diagnose(np.array([0, 1]), logits=scores, task=task)


@pytest.mark.parametrize("sharded", [True, False])
def test_errors_over_sequence_files_name_the_file_row_and_position(tmp_path, sharded):
    # The API numbers positions (B * T); the command took that number for a row of the files: another shard was
    # named (or none), and the row was a position.
    rng = np.random.default_rng(0)
    n_seq, length, n_classes = 3, 5, 4
    (tmp_path / "z").mkdir(), (tmp_path / "y").mkdir()
    parts = [(rng.standard_normal((n_seq, length, n_classes)).astype(np.float32),
              rng.integers(0, n_classes, (n_seq, length))) for _ in range(3)]
    parts[0][1][1, 0] = 9  # a bad label: the first shard, its sequence 1, position 0
    parts[2][0][0, 1, 0] = np.nan  # a NaN: the last shard, its sequence 0, position 1

    def run(labels_part, scores_part):
        if sharded:
            for i, (z, y) in enumerate(parts):
                np.save(tmp_path / "z" / f"part{i}.npy", z if i != 2 else scores_part)
                np.save(tmp_path / "y" / f"part{i}.npy", y if i != 0 else labels_part)
            argv = ["eval", "--labels", str(tmp_path / "y"), "--logits", str(tmp_path / "z"), "--no-progress"]
        else:
            np.save(tmp_path / "z.npy", np.concatenate([parts[0][0], parts[1][0], scores_part]))
            np.save(tmp_path / "y.npy", np.concatenate([labels_part, parts[1][1], parts[2][1]]))
            argv = ["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--no-progress"]
        err = io.StringIO()
        assert cli.main(argv, out=io.StringIO(), err=err) == 2
        return err.getvalue()

    message = run(parts[0][1], np.nan_to_num(parts[2][0]))
    assert ("y/part0.npy (its row 1, position 0)" if sharded else "y.npy (its row 1, position 0)") in message, message
    fixed = parts[0][1].copy()
    fixed[1, 0] = 0
    message = run(fixed, parts[2][0])
    assert ("z/part2.npy (its row 0, position 1)" if sharded else "z.npy (its row 6, position 1)") in message, message


def test_one_based_hint_survives_padding():
    # The range behind the hint took the padding in (-100, or 255 in uint8): the hint was gone for sequences.
    z = np.zeros((2, 3, 5), dtype=np.float32)
    y = np.array([[5, 1, -100], [2, 3, -100]])
    hint = "If the labels run from 1 to 5 (none is 0), they are 1-based: subtract 1."
    with pytest.raises(InputError, match=re.escape(hint)):
        fastce.evaluate(y, logits=z, ignore_index=-100)
    with pytest.raises(InputError, match=re.escape(hint)):
        fastce.evaluate(np.where(y < 0, 255, y).astype(np.uint8), logits=z, ignore_index=255)
    with pytest.raises(InputError, match=re.escape(hint)):
        fastce.cross_entropy(z.reshape(6, 5), y.reshape(6))  # ignore_index=-100 by default


@pytest.mark.parametrize("shape", [(2, 3, 0), (0, 3, 4), (2, 0, 4)])
def test_empty_sequence_scores_are_named_with_their_shape(shape):
    y = np.zeros(shape[:-1], dtype=np.int64)
    for door in (fastce.evaluate, fastce.diagnose):
        with pytest.raises(InputError, match=re.escape(f"logits is empty (shape {shape})")) as info:
            door(y, logits=np.zeros(shape, dtype=np.float32))
        assert info.value.argument == "logits"  # was num_classes, never passed, for (2, 3, 0)


def test_one_column_scores_with_a_one_column_target_are_a_one_label_indicator():
    # A one-output (sigmoid) model's (N, 1) logits beside an (N, 1) 0/1 target (PyTorch's shapes) were read as
    # class indices over one class: all-zero targets gave cross-entropy 0 and accuracy 1, silently.
    import torch

    rng = np.random.default_rng(4)
    z = rng.normal(size=(300, 1)) * 2
    y = (rng.uniform(size=(300, 1)) < 0.3).astype(np.int64)
    for target in (y, np.zeros_like(y), y.astype(np.float32)):
        expected = torch.nn.functional.binary_cross_entropy_with_logits(
            torch.from_numpy(z), torch.from_numpy(target.astype(np.float64))).item()
        m = fastce.evaluate(target, logits=z)
        assert m.task == "multilabel" and m.cross_entropy == pytest.approx(expected, rel=1e-14)
        assert m.accuracy == np.mean((z > 0) == (target > 0.5))
        assert m == fastce.evaluate(target, logits=z, task="multilabel")
        ev = fastce.Evaluator()
        ev.update(target[:100], z[:100])
        ev.update(target[100:], z[100:])
        assert ev.result() == m
        p = 1.0 / (1.0 + np.exp(-z))
        assert fastce.evaluate(target, proba=p).task == "multilabel"
    assert fastce.diagnose(y, logits=z).metrics.task == "multilabel"
    # Labels of shape (N,) stay class indices (a softmax over one class); a label 1 says what to pass instead.
    with pytest.raises(InputError, match=r"the scores have 1 column\)\. .*pass scores\[:, 0\] \(1-D binary"):
        fastce.evaluate(y[:, 0], logits=z)
    ev = fastce.Evaluator()
    ev.update(y, z)
    with pytest.raises(InputError, match=r"\(class indices\), but the first batch made this a multilabel"):
        ev.update(y[:, 0], z)
    ev = fastce.Evaluator()
    ev.update(np.zeros(5, np.int64), z[:5])
    with pytest.raises(InputError, match="is a one-label indicator .* made this a multiclass evaluation"):
        ev.update(y, z)


def test_one_hot_targets_forced_to_the_multi_label_task_warn_at_every_door(tmp_path):
    # task="multilabel" on one-hot rows (one label per row) reports a per-element accuracy, mostly the easy "no"
    # columns, far above the argmax accuracy the single label calls for: the seed question "binary or categorical
    # cross-entropy?".  binary_cross_entropy warned; evaluate and every door through the multi-label state did not.
    import warnings

    rng = np.random.default_rng(9)
    z = (2 * rng.standard_normal((400, 8))).astype(np.float32)
    one_hot = np.eye(8, dtype=np.uint8)[rng.integers(0, 8, 400)]
    per_element = np.mean((z > 0) == (one_hot > 0.5))
    argmax = np.mean(z.argmax(axis=1) == one_hot.argmax(axis=1))
    expected = rf"exactly one 1 among 8 columns .*multi-label task .*\({per_element:.4f}.*\({argmax:.4f}\).*multi-class"

    def evaluator():
        ev = fastce.Evaluator(task="multilabel")
        ev.update(one_hot[:150], z[:150])
        ev.update(one_hot[150:], z[150:])
        return ev.result()

    np.save(tmp_path / "y.npy", one_hot)
    np.save(tmp_path / "z.npy", z)
    doors = {
        "evaluate": lambda: fastce.evaluate(one_hot, logits=z, task="multilabel"),
        "Evaluator": evaluator,
        "diagnose": lambda: fastce.diagnose(one_hot, logits=z, task="multilabel"),
        "compare": lambda: fastce.compare(one_hot, logits={"a": z, "b": z[::-1].copy()}, task="multilabel"),
    }
    for door, call in doors.items():
        with pytest.warns(fastce.FastCEWarning) as record:
            call()
        assert any(re.search(expected, str(w.message)) for w in record), door  # compare: one warning a model
    err = io.StringIO()
    argv = ["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "z.npy"), "--no-progress"]
    assert cli.main(argv + ["--task", "multilabel"], out=io.StringIO(), err=err) == 0
    assert re.search(expected, err.getvalue().replace("\n", " ")), err.getvalue()
    assert "every row of --labels" in err.getvalue() and "--task multilabel" in err.getvalue()  # the command's words
    # Quiet where the rows are not all one-hot, and where one-hot rows are read as the class indices they are.
    some_not = one_hot.copy()
    some_not[3, (one_hot[3].argmax() + 1) % 8] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastce.evaluate(some_not, logits=z, task="multilabel")
        fastce.evaluate(one_hot, logits=z)
        fastce.evaluate(one_hot[:, :1], logits=z[:, :1])  # a one-label indicator: one column, no single-label reading


@pytest.mark.parametrize("task", TASKS)
def test_a_state_with_a_negative_sum_or_a_count_without_its_row_is_refused(task):
    # Edited state dicts loaded: a negated weight sum gave weight_sum -4608 and accuracy -0.34, and a count of NaN
    # rows with no first row gave "scores row -1 holds NaN".  Every sum checked adds terms >= 0.
    y, z, _ = _data(task, 20000)  # whole blocks: rows in the state, not pending
    ev = fastce.Evaluator()
    ev.update(y, z)
    good = json.loads(json.dumps(ev.state_dict()))
    assert good["state"]["rows_seen"] > 0
    fastce.Evaluator.from_state_dict(good)
    state = good["state"]
    for i, text in enumerate(state["sums"]):
        if task == "soft" and i in (2, 3):  # the targets' entropy and the KL divergence: sums that may be < 0
            continue
        edited = json.loads(json.dumps(good))
        edited["state"]["sums"][i] = "-0x1" if int(text, 16) == 0 else "-" + text
        with pytest.raises(InputError, match=f"sum {i} is negative") as caught:
            fastce.Evaluator.from_state_dict(edited)
        assert caught.value.argument == "state"
    edited = json.loads(json.dumps(good))
    if "counters" in state:  # multi-class and binary: named counters
        edited["state"]["counters"]["nonfinite_rows"] = 1
        pattern = "nonfinite_rows is 1 but first_nonfinite_row is -1"
    else:
        edited["state"]["counts"][1] = 1
        pattern = r"counts\[1\] is 1 but counts\[\d+\] is -1"
    with pytest.raises(InputError, match=pattern):
        fastce.Evaluator.from_state_dict(edited)
