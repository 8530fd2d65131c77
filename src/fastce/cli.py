"""The ``fastce`` command: evaluate score files in bounded memory, resumably.

    fastce eval --labels Y (--logits Z | --proba P) [--top-k 1 5] [--weights W] [--groups G]
                [--json] [--chunk-rows N] [--threads T] [--state FILE] [--scheduler ADDRESS]
    fastce report ... (the same options) [--plots DIR] [--worst-k K] [--bins B]
                [--confident-below P]

Results are bit-identical to :func:`fastce.evaluate` on the loaded arrays,
however the run was cut into chunks or interrupted and resumed.  With
``--scheduler tcp://HOST:PORT`` the workers of a Dask cluster read and
evaluate the files (same numbers, no checkpoint; see :mod:`fastce.dask`).  Exit
status: 0 success, 2 bad input or usage (one line on stderr; ``--debug``
adds the traceback), 130/143 interrupted (SIGINT/SIGTERM, after writing the
checkpoint), 1 internal error.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import stat
import sys
import time
import traceback
import warnings

from fastce import __version__, _compile_log, _json, files, validation
from fastce.errors import InputError, TopKWarning
from fastce.metrics import Metrics
from fastce.progress import make_progress
from fastce.streaming import Evaluator

CHECKPOINT_FORMAT = "fastce.checkpoint/1"
# Test hook: seconds to sleep after each chunk (makes kill-and-resume tests deterministic).
_DELAY_ENV = "FASTCE_TEST_CHUNK_DELAY"


class UsageError(InputError):
    """A problem with the command line or the state file (exit status 2)."""


class _Terminated(Exception):
    """SIGTERM arrived: checkpoint and stop."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastce",
        description="Cross-entropy, log loss and top-k accuracy of huge validation sets, from files.",
    )
    parser.add_argument("--version", action="version", version=f"fastce {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    ev = commands.add_parser(
        "eval",
        help="evaluate scores stored in files",
        description=(
            "Evaluate logits or probabilities stored in .npy, .npz, .npy shards (a directory, a glob or "
            "several files), Parquet or Arrow files, reading a bounded number of rows at a time. Results "
            "equal fastce.evaluate on the loaded arrays, bit for bit."
        ),
    )
    report = commands.add_parser(
        "report",
        help="diagnose scores stored in files: why loss and accuracy disagree",
        description=(
            "The diagnostics of fastce.diagnose (loss split between right and wrong rows, confidently wrong "
            "rows, worst rows, calibration, per-class F1, confusions) over files, in bounded memory, with "
            "optional PNG plots. Same inputs and options as 'fastce eval'."
        ),
    )
    report.add_argument("--plots", metavar="DIR", help="write reliability.png, loss_histogram.png, confusion.png here (needs matplotlib)")
    report.add_argument("--worst-k", type=int, default=20, metavar="K", help="rows with the highest loss to list (default: 20)")
    report.add_argument("--bins", type=int, default=15, metavar="B", help="equal-width confidence bins of the calibration (default: 15)")
    report.add_argument(
        "--confident-below", type=float, default=0.01, metavar="P",
        help="a wrong row is confidently wrong when p(true class) < P (default: 0.01)",
    )
    for command in (ev, report):
        _add_common_arguments(command)
    from fastce.cli_compare import add_compare_parser

    add_compare_parser(commands)
    _add_warmup_parser(commands)
    return parser


def _add_warmup_parser(commands) -> None:
    from fastce.warmup import DTYPES

    warm = commands.add_parser(
        "warmup",
        help="compile the kernels ahead of time (for container images and CI caches)",
        description=(
            "Compile every kernel for the given score dtypes and write them to numba's on-disk cache, so that "
            "later processes start in well under a second. The cache is NUMBA_CACHE_DIR when set, else the "
            "__pycache__ folder next to fastce's sources; it is keyed on the fastce sources, numba's version "
            "and the CPU."
        ),
    )
    warm.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES), metavar="DTYPE",
                      help=f"score dtypes to compile for (default: all of {', '.join(DTYPES)})")
    warm.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _warmup(args, out, err) -> int:
    from fastce.warmup import cache_location, warmup

    print(f"fastce warmup: compiling into the numba cache at {cache_location()}", file=out, flush=True)

    def report(name, seconds):
        print(f"  {name:<10} {seconds:6.1f} s", file=out, flush=True)

    seconds = warmup(args.dtypes, report=report)
    print(f"done in {sum(seconds.values()):.1f} s: later processes load these kernels from the cache.", file=out)
    return 0


def _add_common_arguments(ev: argparse.ArgumentParser) -> None:
    scores = ev.add_mutually_exclusive_group(required=True)
    scores.add_argument("--logits", nargs="+", metavar="FILE", help="raw scores, shape (rows, classes); (rows,): binary")
    scores.add_argument("--proba", nargs="+", metavar="FILE", help="probabilities, shape (rows, classes); (rows,): binary")
    add_run_arguments(ev)


def add_run_arguments(ev: argparse.ArgumentParser, *, compare: bool = False) -> None:
    """The options of every command that reads files: labels, weights, top-k, output, chunks, checkpoints.

    ``compare``: the options ``fastce compare`` takes (its help listed --ignore-index, --precision and
    --scheduler, which it refused, and said --labels could be left out, which it cannot).
    """
    ev.add_argument(
        "--labels", nargs="+", metavar="FILE", required=compare,
        help="integer class indices, shape (rows,), or (rows, classes) targets (one-hot, multi-label 0/1, soft)"
        + ("" if compare else "; may be left out when the scores file is a table holding them"),
    )
    ev.add_argument(
        "--task", choices=("auto", "multiclass", "binary", "multilabel", "soft"), default="auto",
        help="the question to answer (default: inferred from the shapes and values, as fastce.evaluate)",
    )
    if not compare:
        ev.add_argument(
            "--ignore-index", type=int, metavar="LABEL",
            help="leave out rows whose label is LABEL (padding, e.g. -100); class-index labels only",
        )
        ev.add_argument(
            "--precision", choices=("input", "float64"), default="input",
            help="math of the scores: the input's (float32 math for 16/32-bit scores, default) or float64 for any "
            "input",
        )
    ev.add_argument("--weights", nargs="+", metavar="FILE", help="non-negative row weights, shape (rows,)")
    ev.add_argument("--groups", nargs="+", metavar="FILE",
                    help="an integer group id per row (document, patient): clustered error bars")
    ev.add_argument("--top-k", nargs="+", type=int, default=[1], metavar="K", help="k of the top-k accuracies (default: 1)")
    ev.add_argument(
        "--nan-policy", choices=("raise", "omit", "propagate"), default="raise",
        help="rows whose scores hold NaN/+inf: fail (default), skip them, or report NaN",
    )
    ev.add_argument("--key", "--score-column", dest="scores_name", metavar="NAME", help="the .npz member or table column of the scores")
    ev.add_argument("--labels-key", "--label-column", dest="labels_name", metavar="NAME", help="the .npz member or table column of the labels")
    ev.add_argument("--weights-key", "--weight-column", dest="weights_name", metavar="NAME", help="the .npz member or table column of the weights")
    ev.add_argument("--groups-key", "--group-column", dest="groups_name", metavar="NAME", help="the .npz member or table column of the group ids")
    ev.add_argument("--json", action="store_true", help="print one JSON object and nothing else on stdout")
    ev.add_argument("--chunk-rows", type=int, metavar="N", help="rows read at a time (default: about 64 MB of scores)")
    ev.add_argument("--threads", type=int, metavar="T", help="threads of the kernels (default: all cores)")
    ev.add_argument(
        "--state", metavar="FILE",
        help="checkpoint file: written every few seconds; rerunning the same command resumes from it",
    )
    ev.add_argument(
        "--checkpoint-seconds", type=float, default=5.0, metavar="S",
        help="seconds between checkpoints with --state (default: 5)",
    )
    if not compare:
        ev.add_argument(
            "--scheduler", metavar="ADDRESS",
            help="evaluate on the Dask cluster at ADDRESS (tcp://host:port); the workers read the files, "
            "which must be at the same paths for them (needs fastce[dask])",
        )
    ev.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    ev.add_argument("--debug", action="store_true", help="show the traceback of errors")


# ---------------------------------------------------------------------------
# Checkpoints


# Temporary files of a checkpoint: ".STATE.PID.TOKEN.tmp" next to STATE.  The
# pid lets a later run tell a live writer's file from one left by a killed run.
_TEMP_RE = r"\.{name}\.(?:(\d+)\.[0-9a-f]{{8}}|[A-Za-z0-9_]{{8}})\.tmp"  # 2nd form: the mkstemp names earlier versions wrote
# A checkpoint write takes well under a second: a temporary older than this
# whose pid is not running here is stale; one older than _STALE_ANY_SECONDS is
# stale even if its pid runs (the pid may have been reused).
_STALE_SECONDS = 60.0
_STALE_ANY_SECONDS = 600.0


def _write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a mix.

    The file is created with mode 0666 less the umask, as any tool's output
    (a mkstemp file would be 0600 whatever the umask).  A symlink is written
    through: its target is replaced (the rename of a temporary onto the link
    itself turned the link into a file and left its target as it was).
    """
    path = os.path.realpath(path)
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fp:
            fp.write(text)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable; harmless where directories cannot be opened
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _pid_running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    except OSError:  # cannot tell (e.g. no kill on this platform): assume it runs
        return True
    return True


def remove_stale_temporaries(path: str, *, now: float | None = None) -> list:
    """Delete the temporaries of checkpoint ``path`` that killed runs left behind; returns their paths.

    Only files named as :func:`_write_atomic` names them for this very state
    file are considered, and only stale ones: older than a minute with no
    running process of the pid in their name, or older than ten minutes.
    """
    path = os.path.realpath(path)  # where _write_atomic writes them: next to a symlink's target
    directory = os.path.dirname(path)
    pattern = re.compile(_TEMP_RE.format(name=re.escape(os.path.basename(path))))
    now = time.time() if now is None else now
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        candidate = os.path.join(directory, name)
        try:
            st = os.lstat(candidate)
        except OSError:
            continue
        age = now - st.st_mtime
        pid = int(match.group(1)) if match.group(1) else None
        if not stat.S_ISREG(st.st_mode) or pid == os.getpid() or age < _STALE_SECONDS:
            continue
        if age < _STALE_ANY_SECONDS and (pid is None or _pid_running(pid)):
            continue
        try:
            os.unlink(candidate)
            removed.append(candidate)
        except OSError:
            pass
    return removed


def _check_state_path(path: str) -> None:
    """--state must name a regular file (or a symlink to one) or a file to create (a symlink's target, too)."""
    directory = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"--state {path}: directory {directory} does not exist.")
    if os.path.isdir(path):
        raise UsageError(f"--state {path} is a directory; name a file.")
    if os.path.exists(path):
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise UsageError(f"--state {path}: cannot read it ({exc.strerror or exc}).") from None
        if not stat.S_ISREG(mode):
            raise UsageError(
                f"--state {path} is not a regular file (a FIFO, device or socket); name a regular file for the checkpoint."
            )


def save_checkpoint(path: str, fingerprint: dict, evaluator, n_rows: int, *, key: str = "evaluator",
                    positions: int = 1) -> None:
    """Checkpoint a streaming door (an Evaluator, or a Comparator with ``key="comparator"``) that has read
    ``rows_seen / positions`` of the files' ``n_rows`` rows (``positions``: a sequence file's positions a row)."""
    data = {
        "format": CHECKPOINT_FORMAT,
        "fastce_version": __version__,
        "fingerprint": fingerprint,
        "rows_done": evaluator.rows_seen // positions,
        "rows_total": n_rows,
        key: evaluator.state_dict(),
    }
    data["checksum"] = _checksum(data)
    _write_atomic(path, _json.dumps(data))


def _checksum(data: dict) -> str:
    """SHA-256 of a checkpoint's content but its checksum (sorted keys: the same text after a JSON round trip).

    Without it an edited sum (one hex digit) resumed into wrong numbers; the README promises that a damaged or
    edited checkpoint is refused.
    """
    content = {name: value for name, value in data.items() if name != "checksum"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _file_list(value) -> bool:
    """Whether ``value`` is a fingerprint's list of [path, size, mtime] entries."""
    return isinstance(value, list) and all(isinstance(f, list) and len(f) >= 2 for f in value)


def _differences(saved, current, prefix="") -> list:
    """Human names of the parts of two fingerprints that differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            out += _differences(saved.get(key), current.get(key), f"{prefix}{key} ")
        return out
    if saved == current:
        return []
    if prefix.endswith("files ") and _file_list(saved) and _file_list(current):
        if [f[0] for f in saved] != [f[0] for f in current]:
            return [prefix + "(other paths)"]
        if [f[1] for f in saved] != [f[1] for f in current]:
            return [prefix + "(sizes changed)"]
        return [prefix + "(modified since)"]
    return [prefix.strip()]


def load_checkpoint(path: str, fingerprint: dict, *, key: str = "evaluator", load=Evaluator.from_state_dict,
                    positions: int = 1):
    """The Evaluator (or, with ``key``/``load``, the Comparator) saved in ``path``, refused unless it
    was written for these inputs and options.

    Only a regular file is read (a FIFO would block, /dev/zero never end);
    any defect of its content is a :class:`UsageError`.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer before fstat refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UsageError(f"state file {path}: cannot open it ({exc.strerror or exc}).") from None
    with os.fdopen(fd, "rb") as fp:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"state file {path} is not a regular file (a FIFO, device or socket); name a regular file.")
        raw = fp.read()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UsageError(
            f"state file {path} is not a fastce checkpoint (not JSON: {_one_line(str(exc))[:200] or type(exc).__name__}); "
            "pass another --state (a new file, or one an earlier run of this command wrote)."
        ) from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"state file {path} is not a fastce checkpoint; delete it or pass another --state.")
    try:
        intact = data.get("checksum") == _checksum(data)
    except (TypeError, ValueError, RecursionError):  # not serialisable back: edited too
        intact = False
    if not intact:
        raise UsageError(
            f"state file {path} is damaged or was edited (its checksum does not match its content"
            + ("" if "checksum" in data else "; or an older fastce wrote it, without one")
            + "); delete it to start over."
        )
    try:
        diff = _differences(data.get("fingerprint"), fingerprint)
    except RecursionError:
        diff = ["fingerprint (nested too deeply)"]
    if diff:
        raise UsageError(
            f"state file {path} does not match this command: it was written for other inputs or options "
            f"(differs in: {'; '.join(diff)}). Delete it, or pass another --state, to start over."
        )
    try:
        evaluator = load(data[key])
    except (KeyError, ValueError, RecursionError) as exc:
        raise UsageError(f"state file {path} is damaged ({_one_line(str(exc))[:300]}); delete it to start over.") from None
    done, total = data.get("rows_done"), data.get("rows_total")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (done, total)) or not (
        evaluator.rows_seen == done * positions and done <= total
    ):
        raise UsageError(f"state file {path} is damaged (inconsistent row counts); delete it to start over.")
    return evaluator


# ---------------------------------------------------------------------------
# The eval command (its table is Metrics.table, str(Metrics) too)


def _where_for(exc: InputError, inputs, groups=None) -> str | None:
    source = {
        "y_true": inputs.labels, "scores": inputs.scores, "logits": inputs.scores, "proba": inputs.scores,
        "sample_weight": inputs.weights, "groups": groups,
    }.get(exc.argument)
    if source is None:
        return None
    if exc.row is None:
        return source.where
    # Sequence files: the rows the API numbers are positions, B * T of them; a file's rows are sequences.
    positions = getattr(inputs, "positions_per_row", 1)
    row, position = divmod(int(exc.row), positions)
    at = f", position {position}" if positions > 1 else ""
    if hasattr(source, "shard_of") and 0 <= row < source.n_rows:
        # The shard and its own row ("a.npy and 1 more shard(s)" read as if a.npy held it).
        return f"{source.where}, in {source.shard_of(row, at)}"
    if positions > 1 and 0 <= row < source.n_rows:
        return f"{source.where} (its row {row}{at})"
    return source.where


def check_run_options(args) -> None:
    """The checks of --threads, --chunk-rows, --checkpoint-seconds and --state, before any file is read."""
    if args.threads is not None:
        import numba

        if not 1 <= args.threads <= numba.config.NUMBA_NUM_THREADS:
            raise UsageError(f"--threads must be between 1 and {numba.config.NUMBA_NUM_THREADS}; got {args.threads}.")
        args.previous_threads = numba.get_num_threads()  # restored by main(): an in-process caller keeps its count
        numba.set_num_threads(args.threads)
    if args.chunk_rows is not None and args.chunk_rows < 1:
        raise UsageError(f"--chunk-rows must be at least 1; got {args.chunk_rows}.")
    if not args.checkpoint_seconds >= 0:
        raise UsageError(f"--checkpoint-seconds must be >= 0; got {args.checkpoint_seconds}.")
    if args.state:
        _check_state_path(args.state)


def _evaluate(args, out, err) -> int:
    if args.command == "warmup":
        return _warmup(args, out, err)
    if args.command == "compare":
        from fastce.cli_compare import run_compare

        return run_compare(args, out, err)
    check_run_options(args)
    _check_plots(args)
    if args.scheduler:
        return _evaluate_on_cluster(args, out, err)

    with files.open_inputs(
        args.labels,
        logits=args.logits,
        proba=args.proba,
        sample_weight=args.weights,
        scores_name=args.scores_name,
        labels_name=args.labels_name,
        weights_name=args.weights_name,
    ) as inputs, contextlib.ExitStack() as stack:
        n, num_classes = inputs.n_rows, inputs.num_classes
        groups = None
        if args.groups:
            groups = stack.enter_context(files.open_array(args.groups, role="groups", name=args.groups_name))
            groups = files.check_per_position(groups, inputs.scores, "groups")
            if groups.n_rows != n:
                raise files.InputFileError(
                    f"row counts differ: {groups.where} has {groups.n_rows} rows but the scores have {n}; "
                    "--groups needs one group id per row.", argument=groups.where,
                )
        top_k = top_k_option(args, num_classes, err)
        diagnostics = _diagnostics_options(args)
        try:
            task = inputs.task(args.task, args.chunk_rows)
        except InputError as exc:  # a labels file's bad value: name the file, as the rows' errors do
            raise _with_where(exc, inputs) from None
        fingerprint = {
            "inputs": inputs.fingerprint(),
            "options": {"top_k": list(top_k), "nan_policy": args.nan_policy},
        }
        if task != "multiclass" or args.ignore_index is not None:  # absent otherwise: earlier checkpoints still resume
            fingerprint["options"].update(task=task, ignore_index=args.ignore_index)
        # Always: a checkpoint written before precision= was computed with float64 math and is refused
        # ("differs in: options precision") rather than continued with other math.
        fingerprint["options"]["precision"] = args.precision
        if diagnostics:
            fingerprint["options"]["diagnostics"] = diagnostics
        if groups is not None:  # absent otherwise: earlier checkpoints still resume
            fingerprint["groups"] = groups.fingerprint()
        evaluator = Evaluator(
            num_classes, task=task, from_logits=inputs.from_logits, top_k=top_k, nan_policy=args.nan_policy,
            diagnostics=diagnostics or False, ignore_index=args.ignore_index, precision=args.precision,
            groups=groups is not None, _warn_top_k=False,  # warned above
        )
        positions = inputs.positions_per_row
        evaluator = resume(args, fingerprint, evaluator, n, err, positions=positions)
        chunk_rows = args.chunk_rows or inputs.chunk_rows(evaluator.block_rows)
        row_bytes = inputs.scores.row_bytes + inputs.labels.row_bytes
        chunks = (
            (lo, hi, (y, scores, w) + (() if groups is None else (groups.read(lo, hi),)))
            for lo, hi, y, scores, w in files.iter_chunks(inputs, chunk_rows, start=evaluator.rows_seen // positions)
        )
        status = run_chunks(args, evaluator, chunks, n, row_bytes, fingerprint, err,
                            where=lambda exc: _with_where(exc, inputs, groups), positions=positions)
        if status is not None:
            return status
        _finish(evaluator.report if diagnostics else evaluator.result, args, inputs, out, err)
    return 0


def top_k_option(args, num_classes: int, err) -> tuple:
    """--top-k checked against the class count; its warning printed before any row is read."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TopKWarning)
        top_k = validation.top_k_values(args.top_k, num_classes)
    for warning in caught:  # a --top-k >= the class count prints 1
        print(f"fastce: warning: {warning_text(warning)}", file=err)
    return top_k


def resume(args, fingerprint: dict, fresh, n: int, err, *, key: str = "evaluator", load=Evaluator.from_state_dict,
           positions: int = 1):
    """The streaming door to run: ``fresh``, or the one checkpointed in ``--state`` for this command.

    ``positions``: a row of the files is that many rows of the door (a sequence file's positions); the
    checkpoint and the messages count rows of the files, and the reading resumes at ``rows_seen / positions``
    (it resumed at ``rows_seen``, skipping rows of sequence files).
    """
    if not args.state:
        return fresh
    remove_stale_temporaries(args.state)
    if not os.path.exists(args.state):
        save_checkpoint(args.state, fingerprint, fresh, n, key=key, positions=positions)
        return fresh
    saved = load_checkpoint(args.state, fingerprint, key=key, load=load, positions=positions)
    if saved._settings() != fresh._settings() or saved.rows_seen > n * positions:
        # The fingerprint matched, so the state inside was edited.
        raise UsageError(
            f"state file {args.state} is damaged (its {key}'s settings or row count do not match "
            "this command); delete it to start over."
        )
    if saved.rows_seen < n * positions:
        print(f"fastce: resuming from {args.state} at row {saved.rows_seen // positions:,} of {n:,}", file=err)
    return saved


def run_chunks(args, streamer, chunks, n: int, row_bytes: int, fingerprint: dict, err, *, key: str = "evaluator",
               where=None, positions: int = 1) -> int | None:
    """Feed ``chunks`` ((first row, end row, update arguments) each) to ``streamer.update``.

    Shows progress, checkpoints every ``--checkpoint-seconds`` into
    ``--state``, and on Ctrl-C / SIGTERM saves and returns the exit status
    (None when every chunk was fed).  ``where`` rewrites an update's
    InputError (to name the file it concerns).
    """
    delay = float(os.environ.get(_DELAY_ENV) or 0.0)
    progress = make_progress(n, row_bytes, initial=streamer.rows_seen // positions, stream=err,
                             enabled=False if args.no_progress else None)
    last_save = time.monotonic()
    # A first use compiles the kernels (seconds): say so, once, rather than leave the bar frozen at 0%.
    noticed = []

    def notice(_message):
        if not noticed:
            noticed.append(True)
            progress.note(f"fastce: {_compile_log.CLI_NOTICE}")

    compiling = _compile_log.notices(notice)
    try:
        with compiling:
            for lo, hi, batch in chunks:
                try:
                    streamer.update(*batch)
                except InputError as exc:
                    exc = getattr(exc, "unpositioned", exc)  # where names the file's row and position itself
                    raise (where(exc) if where else exc) from exc
                progress.update(hi - lo)
                if delay:
                    time.sleep(delay)
                if args.state and time.monotonic() - last_save >= args.checkpoint_seconds:
                    save_checkpoint(args.state, fingerprint, streamer, n, key=key, positions=positions)
                    last_save = time.monotonic()
    except (KeyboardInterrupt, _Terminated) as exc:
        progress.close()
        status = 130 if isinstance(exc, KeyboardInterrupt) else 143
        if args.state:
            save_checkpoint(args.state, fingerprint, streamer, n, key=key, positions=positions)
            print(
                f"fastce: interrupted at row {streamer.rows_seen // positions:,} of {n:,}; checkpoint saved to {args.state}: "
                "run the same command again to resume.",
                file=err,
            )
        else:
            print(f"fastce: interrupted at row {streamer.rows_seen // positions:,} of {n:,}.", file=err)
        return status
    except BaseException:
        # End the bar's line before main() prints the error, or the message
        # would land inside the bar and the bar be redrawn under it.
        progress.close()
        raise
    progress.close()
    if args.state:
        save_checkpoint(args.state, fingerprint, streamer, n, key=key, positions=positions)
    return None


def _check_plots(args) -> None:
    """``--plots``: fail before reading any row when matplotlib is missing or DIR cannot be a directory."""
    directory = getattr(args, "plots", None)
    if not directory:
        return
    try:
        import matplotlib  # noqa: F401 - only whether it imports
    except ImportError:
        raise UsageError('--plots needs matplotlib: pip install "fastce[plots]" (or pip install matplotlib).') from None
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"--plots {directory} exists and is not a directory; name a directory for the PNG files.")


def _diagnostics_options(args) -> dict | None:
    """The diagnose() options of ``fastce report`` (None for ``fastce eval``)."""
    if args.command != "report":
        return None
    if args.worst_k < 0:
        raise UsageError(f"--worst-k must be >= 0; got {args.worst_k}.")
    if args.bins < 1:
        raise UsageError(f"--bins must be at least 1; got {args.bins}.")
    if not 0.0 < args.confident_below <= 1.0:
        raise UsageError(f"--confident-below is a probability in (0, 1]; got {args.confident_below}.")
    return {"worst_k": args.worst_k, "n_bins": args.bins, "confident_below": args.confident_below}


def _evaluate_on_cluster(args, out, err) -> int:
    """``--scheduler``: one Dask graph over the files, run by the cluster's workers."""
    if args.state:
        raise UsageError("--state cannot be combined with --scheduler: a cluster run is one graph, not resumable chunks.")
    try:
        import dask
        from distributed import Client

        from fastce import dask as fastce_dask
    except ImportError:
        raise UsageError('--scheduler needs dask and distributed: pip install "fastce[dask]".') from None
    with files.open_inputs(
        args.labels, logits=args.logits, proba=args.proba, sample_weight=args.weights,
        scores_name=args.scores_name, labels_name=args.labels_name, weights_name=args.weights_name,
    ) as inputs:  # opened here for the checks and messages of the local path; the workers reopen them
        if len(inputs.scores.shape) > 2:  # fastce.dask reads (rows, classes) or (rows,) scores
            raise UsageError(
                f"--scheduler does not take sequence files: {inputs.scores.where} has shape "
                f"{tuple(inputs.scores.shape)}. Leave --scheduler out (the command reads sequences a bounded chunk "
                "at a time), or save the scores as (rows x positions, classes) with labels to match."
            )
        try:
            task = inputs.task(args.task, args.chunk_rows)
        except InputError as exc:  # a labels file's bad value: name the file, as the rows' errors do
            raise _with_where(exc, inputs) from None
    diagnostics = _diagnostics_options(args)
    task_options = {"task": task, "ignore_index": args.ignore_index, "precision": args.precision}
    # Not the default client: a caller's own client (in-process use) stays the default.
    run = fastce_dask.evaluate_files if diagnostics is None else fastce_dask.diagnose_files
    with Client(args.scheduler, timeout="30s", set_as_default=False) as client, dask.config.set(scheduler=client):
        _finish(
            lambda: run(
                args.labels, logits=args.logits, proba=args.proba, sample_weight=args.weights,
                top_k=args.top_k, nan_policy=args.nan_policy, chunk_rows=args.chunk_rows,
                scores_name=args.scores_name, labels_name=args.labels_name, weights_name=args.weights_name,
                groups=args.groups, groups_name=args.groups_name, **task_options, **(diagnostics or {}),
            ),
            args, inputs, out, err,
        )
    return 0


def _finish(compute, args, inputs, out, err) -> None:
    """Run ``compute`` (-> Metrics or Report), print its warnings on stderr and the result on stdout."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = compute()
        except InputError as exc:
            raise _with_where(exc, inputs) from exc
    for warning in caught:
        print(f"fastce: warning: {warning_text(warning)}", file=err)
    if isinstance(result, Metrics):
        out.write((result.to_json() if args.json else result.table(inputs.scores.dtype)) + "\n")
    else:
        if args.plots:
            for path in result.plot(args.plots):
                print(f"fastce: wrote {path}", file=err)
        out.write((result.to_json() if args.json else str(result)) + "\n")
    out.flush()


def _with_where(exc: InputError, inputs, groups=None) -> InputError:
    """The same error, prefixed with the file it concerns when known."""
    where = _where_for(exc, inputs, groups)
    text = str(exc)
    if where and exc.row is not None and getattr(inputs, "positions_per_row", 1) > 1:
        # The prefix names the file's row and the position; the API's "row 103" is a flattened position, a row
        # a 16-row file does not have.
        text = re.sub(rf"^(\S+) row {int(exc.row)}\b", r"\1 at that position", text, count=1)  # the subject's
    return InputError(f"{where}: {text}" if where else text, argument=exc.argument, row=exc.row)


def warning_text(warning) -> str:
    """A caught warning as the command prints it: one line, the command's flags for the API's argument names,
    and --labels for y_true (a command user passed a labels file, never a y_true)."""
    return re.sub(r"\by_true\b", "--labels", _flag_names(_one_line(str(warning.message))))


def _flag_names(text: str, *, top_k: bool = True) -> str:
    """A message of the Python API with the command's flag names (top_k=[5] -> --top-k 5, task='soft' -> --task
    soft, logits= -> --logits, worst_k -> --worst-k, ...): a user of the command has no Python arguments."""
    if top_k:
        text = re.sub(r"\btop_k=\[([\d, ]+)\]", lambda m: "--top-k " + m.group(1).replace(",", ""), text)
        text = re.sub(r"\btop_k\b", "--top-k", text)
    text = re.sub(r"\bignore_index=(-?\d+)", r"--ignore-index \1", text)
    if "ignore_index" in text:
        text = text.replace("leave it at None", "leave --ignore-index out")
        text = re.sub(r"\bignore_index\b", "--ignore-index", text)
    text = re.sub(r"\b(logits|proba)=(?=[\s.,;)]|$)", r"--\1", text)
    text = re.sub(r"\btask='(\w+)'", r"--task \1", text)
    for name, flag in (("worst_k", "--worst-k"), ("n_bins", "--bins"), ("confident_below", "--confident-below")):
        text = re.sub(rf"\b{name}\b", flag, text)
    text = re.sub(r"^names must", "--names must", text)
    text = text.replace("fastce.evaluate reports", "fastce eval reports")
    text = text.replace("--proba instead (Evaluator(..., from_logits=False); fastce eval --proba FILE)",
                        "--proba FILE instead")
    text = text.replace("swap them back: fastce takes y_true first, the scores as --logits or --proba (PyTorch's "
                        "losses take the scores first).", "swap the files of --labels and --logits (or --proba).")
    text = text.replace("pass scores[:, 0] (1-D binary scores)",
                        "save the scores' one column as a 1-D array (np.save(path, z[:, 0])) for 1-D binary scores")
    return re.sub(r"nan_policy='(\w+)'", r"--nan-policy \1", text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return _one_line(str(exc)) or type(exc).__name__


def main(argv=None, *, out=None, err=None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 on usage errors
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        return _evaluate(args, out, err)
    except KeyboardInterrupt:
        print("fastce: interrupted.", file=err)
        return 130
    except _Terminated:
        print("fastce: terminated.", file=err)
        return 143
    except (InputError, OSError, ValueError) as exc:
        if args.debug:
            traceback.print_exc(file=err)
        message = _describe(exc)
        # The API's argument names, as the flags the user typed (fingerprint diffs keep theirs).
        message = _flag_names(message, top_k=getattr(exc, "argument", None) == "top_k")
        print(f"fastce: error: {message}", file=err)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line (--debug shows where)
        if args.debug:
            traceback.print_exc(file=err)
        print(f"fastce: internal error: {type(exc).__name__}: {_describe(exc)} (rerun with --debug for details)", file=err)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if getattr(args, "previous_threads", None) is not None:
            import numba

            numba.set_num_threads(args.previous_threads)


def _on_sigterm(signum, frame):
    raise _Terminated()
