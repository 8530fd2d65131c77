"""The ``fastce`` command: evaluate score files in bounded memory, resumably.

    fastce eval --labels Y (--logits Z | --proba P) [--top-k 1 5] [--weights W]
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
import json
import os
import re
import signal
import sys
import tempfile
import time
import traceback
import warnings

from fastce import __version__, _json, files, validation
from fastce.errors import InputError
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
    return parser


def _add_common_arguments(ev: argparse.ArgumentParser) -> None:
    scores = ev.add_mutually_exclusive_group(required=True)
    scores.add_argument("--logits", nargs="+", metavar="FILE", help="raw scores, shape (rows, classes)")
    scores.add_argument("--proba", nargs="+", metavar="FILE", help="probabilities, shape (rows, classes)")
    ev.add_argument(
        "--labels", nargs="+", metavar="FILE",
        help="integer class indices, shape (rows,); may be left out when the scores file is a table holding them",
    )
    ev.add_argument("--weights", nargs="+", metavar="FILE", help="non-negative row weights, shape (rows,)")
    ev.add_argument("--top-k", nargs="+", type=int, default=[1], metavar="K", help="k of the top-k accuracies (default: 1)")
    ev.add_argument(
        "--nan-policy", choices=("raise", "omit", "propagate"), default="raise",
        help="rows whose scores hold NaN/+inf: fail (default), skip them, or report NaN",
    )
    ev.add_argument("--key", "--score-column", dest="scores_name", metavar="NAME", help="the .npz member or table column of the scores")
    ev.add_argument("--labels-key", "--label-column", dest="labels_name", metavar="NAME", help="the .npz member or table column of the labels")
    ev.add_argument("--weights-key", "--weight-column", dest="weights_name", metavar="NAME", help="the .npz member or table column of the weights")
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
    ev.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="evaluate on the Dask cluster at ADDRESS (tcp://host:port); the workers read the files, "
        "which must be at the same paths for them (needs fastce[dask])",
    )
    ev.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    ev.add_argument("--debug", action="store_true", help="show the traceback of errors")


# ---------------------------------------------------------------------------
# Checkpoints


def _write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a mix."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
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


def save_checkpoint(path: str, fingerprint: dict, evaluator: Evaluator, n_rows: int) -> None:
    data = {
        "format": CHECKPOINT_FORMAT,
        "fastce_version": __version__,
        "fingerprint": fingerprint,
        "rows_done": evaluator.rows_seen,
        "rows_total": n_rows,
        "evaluator": evaluator.state_dict(),
    }
    _write_atomic(path, _json.dumps(data))


def _differences(saved, current, prefix="") -> list:
    """Human names of the parts of two fingerprints that differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            out += _differences(saved.get(key), current.get(key), f"{prefix}{key} ")
        return out
    if saved == current:
        return []
    if prefix.endswith("files ") and isinstance(saved, list) and isinstance(current, list):
        if [f[0] for f in saved] != [f[0] for f in current]:
            return [prefix + "(other paths)"]
        if [f[1] for f in saved] != [f[1] for f in current]:
            return [prefix + "(sizes changed)"]
        return [prefix + "(modified since)"]
    return [prefix.strip()]


def load_checkpoint(path: str, fingerprint: dict) -> Evaluator:
    """The Evaluator saved in ``path``, refused unless it was written for these inputs and options."""
    try:
        with open(path, encoding="utf-8") as fp:
            data = json.load(fp)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"state file {path} is not a fastce checkpoint (not JSON: {exc}); delete it to start over."
        ) from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"state file {path} is not a fastce checkpoint; delete it or pass another --state.")
    diff = _differences(data.get("fingerprint"), fingerprint)
    if diff:
        raise UsageError(
            f"state file {path} does not match this command: it was written for other inputs or options "
            f"(differs in: {'; '.join(diff)}). Delete it, or pass another --state, to start over."
        )
    try:
        evaluator = Evaluator.from_state_dict(data["evaluator"])
    except (KeyError, ValueError) as exc:
        raise UsageError(f"state file {path} is damaged ({exc}); delete it to start over.") from None
    if evaluator.rows_seen != data.get("rows_done") or evaluator.rows_seen > data.get("rows_total", -1):
        raise UsageError(f"state file {path} is damaged (inconsistent row counts); delete it to start over.")
    return evaluator


# ---------------------------------------------------------------------------
# The eval command (its table is Metrics.table, str(Metrics) too)


def _where_for(exc: InputError, inputs) -> str | None:
    source = {
        "y_true": inputs.labels, "scores": inputs.scores, "logits": inputs.scores, "proba": inputs.scores,
        "sample_weight": inputs.weights,
    }.get(exc.argument)
    return None if source is None else source.where


def _evaluate(args, out, err) -> int:
    if args.threads is not None:
        import numba

        if not 1 <= args.threads <= numba.config.NUMBA_NUM_THREADS:
            raise UsageError(f"--threads must be between 1 and {numba.config.NUMBA_NUM_THREADS}; got {args.threads}.")
        numba.set_num_threads(args.threads)
    if args.chunk_rows is not None and args.chunk_rows < 1:
        raise UsageError(f"--chunk-rows must be at least 1; got {args.chunk_rows}.")
    if not args.checkpoint_seconds >= 0:
        raise UsageError(f"--checkpoint-seconds must be >= 0; got {args.checkpoint_seconds}.")
    if args.state:
        directory = os.path.dirname(os.path.abspath(args.state))
        if not os.path.isdir(directory):
            raise UsageError(f"--state {args.state}: directory {directory} does not exist.")
        if os.path.isdir(args.state):
            raise UsageError(f"--state {args.state} is a directory; name a file.")
    delay = float(os.environ.get(_DELAY_ENV) or 0.0)
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
    ) as inputs:
        n, num_classes = inputs.n_rows, inputs.num_classes
        top_k = validation.top_k_values(args.top_k, num_classes)
        diagnostics = _diagnostics_options(args)
        fingerprint = {
            "inputs": inputs.fingerprint(),
            "options": {"top_k": list(top_k), "nan_policy": args.nan_policy},
        }
        if diagnostics:
            fingerprint["options"]["diagnostics"] = diagnostics
        evaluator = None
        if args.state and os.path.exists(args.state):
            evaluator = load_checkpoint(args.state, fingerprint)
            if evaluator.rows_seen < n:
                print(f"fastce: resuming from {args.state} at row {evaluator.rows_seen:,} of {n:,}", file=err)
        if evaluator is None:
            evaluator = Evaluator(
                num_classes, from_logits=inputs.from_logits, top_k=top_k, nan_policy=args.nan_policy,
                diagnostics=diagnostics or False,
            )
            if args.state:
                save_checkpoint(args.state, fingerprint, evaluator, n)
        chunk_rows = args.chunk_rows or files.default_chunk_rows(num_classes, inputs.scores.dtype.itemsize)
        row_bytes = inputs.scores.row_bytes + inputs.labels.row_bytes
        progress = make_progress(n, row_bytes, initial=evaluator.rows_seen, stream=err, enabled=False if args.no_progress else None)
        last_save = time.monotonic()
        try:
            for lo, hi, y, scores, w in files.iter_chunks(inputs, chunk_rows, start=evaluator.rows_seen):
                try:
                    evaluator.update(y, scores, w)
                except InputError as exc:
                    raise _with_where(exc, inputs) from exc
                progress.update(hi - lo)
                if delay:
                    time.sleep(delay)
                if args.state and time.monotonic() - last_save >= args.checkpoint_seconds:
                    save_checkpoint(args.state, fingerprint, evaluator, n)
                    last_save = time.monotonic()
        except (KeyboardInterrupt, _Terminated) as exc:
            progress.close()
            status = 130 if isinstance(exc, KeyboardInterrupt) else 143
            if args.state:
                save_checkpoint(args.state, fingerprint, evaluator, n)
                print(
                    f"fastce: interrupted at row {evaluator.rows_seen:,} of {n:,}; checkpoint saved to {args.state}: "
                    "run the same command again to resume.",
                    file=err,
                )
            else:
                print(f"fastce: interrupted at row {evaluator.rows_seen:,} of {n:,}.", file=err)
            return status
        progress.close()
        if args.state:
            save_checkpoint(args.state, fingerprint, evaluator, n)
        _finish(evaluator.report if diagnostics else evaluator.result, args, inputs, out, err)
    return 0


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
        pass
    # Not the default client: a caller's own client (in-process use) stays the default.
    diagnostics = _diagnostics_options(args)
    run = fastce_dask.evaluate_files if diagnostics is None else fastce_dask.diagnose_files
    with Client(args.scheduler, timeout="30s", set_as_default=False) as client, dask.config.set(scheduler=client):
        _finish(
            lambda: run(
                args.labels, logits=args.logits, proba=args.proba, sample_weight=args.weights,
                top_k=args.top_k, nan_policy=args.nan_policy, chunk_rows=args.chunk_rows,
                scores_name=args.scores_name, labels_name=args.labels_name, weights_name=args.weights_name,
                **(diagnostics or {}),
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
        print(f"fastce: warning: {_one_line(str(warning.message))}", file=err)
    if isinstance(result, Metrics):
        out.write((result.to_json() if args.json else result.table(inputs.scores.dtype)) + "\n")
    else:
        if args.plots:
            for path in result.plot(args.plots):
                print(f"fastce: wrote {path}", file=err)
        out.write((result.to_json() if args.json else str(result)) + "\n")
    out.flush()


def _with_where(exc: InputError, inputs) -> InputError:
    """The same error, prefixed with the file it concerns when known."""
    where = _where_for(exc, inputs)
    return InputError(f"{where}: {exc}" if where else str(exc), argument=exc.argument, row=exc.row)


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
        message = re.sub(r"nan_policy='(\w+)'", r"--nan-policy \1", _describe(exc))
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


def _on_sigterm(signum, frame):
    raise _Terminated()
