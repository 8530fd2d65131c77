"""``fastce compare``: several models' score files against the same labels, in bounded memory.

Each ``--logits`` (or ``--proba``) argument is one model: a file, a directory
or a glob of shards.  The rows are read a chunk at a time, every model's
chunk fed to one :class:`~fastce.compare_streaming.Comparator`, so the
result is :func:`fastce.compare` on the loaded arrays, bit for bit, and
``--state`` resumes as ``fastce eval`` does.
"""

from __future__ import annotations

import contextlib
import os
import warnings

from fastce import cli, files
from fastce.compare_streaming import Comparator
from fastce.errors import InputError


def add_compare_parser(commands) -> None:
    cmp = commands.add_parser(
        "compare",
        help="compare models scored on the same rows: which is better, and is the difference real?",
        description=(
            "Every model's metrics with error bars, and their paired differences (exact McNemar test for "
            "accuracy, paired z-test for the losses), from one read of each model's score file. Same "
            "results as fastce.compare on the loaded arrays, bit for bit."
        ),
    )
    scores = cmp.add_mutually_exclusive_group(required=True)
    scores.add_argument("--logits", nargs="+", metavar="FILE", help="one raw-score file (or shard directory) per model")
    scores.add_argument("--proba", nargs="+", metavar="FILE", help="one probability file (or shard directory) per model")
    cmp.add_argument("--names", nargs="+", metavar="NAME", help="the models' names (default: the file names)")
    cmp.add_argument("--confident-below", type=float, default=0.01, metavar="P",
                     help="a wrong row is confidently wrong when p(true class) < P (default: 0.01)")
    cli.add_run_arguments(cmp, compare=True)


def _names(args, paths) -> list:
    if args.names is not None:
        if len(args.names) != len(paths):
            raise cli.UsageError(f"--names gives {len(args.names)} name(s) for {len(paths)} model file(s).")
        return list(args.names)
    stems = [os.path.splitext(os.path.basename(os.path.normpath(p)))[0] or p for p in paths]
    return stems if len(set(stems)) == len(stems) else list(paths)


def run_compare(args, out, err) -> int:
    cli.check_run_options(args)
    paths = args.logits if args.logits is not None else args.proba
    if len(paths) < 2:
        raise cli.UsageError("compare needs at least two models: one --logits (or --proba) file per model.")
    if args.labels is None:
        raise cli.UsageError("compare needs --labels FILE.")
    names = _names(args, paths)
    with contextlib.ExitStack() as stack:
        labels = stack.enter_context(files.open_array(args.labels, role="labels", name=args.labels_name))
        models = [stack.enter_context(files.open_array([p], role="scores", name=args.scores_name)) for p in paths]
        weights = None if args.weights is None else stack.enter_context(
            files.open_array(args.weights, role="weights", name=args.weights_name))
        groups = None if args.groups is None else stack.enter_context(
            files.open_array(args.groups, role="groups", name=args.groups_name))
        # (rows, 1) columns read as (rows,), as evaluate's command reads them
        weights = None if weights is None else files.check_per_position(weights, models[0], "weights")
        groups = None if groups is None else files.check_per_position(groups, models[0], "groups")
        n, shape = models[0].n_rows, tuple(models[0].shape)
        binary = len(shape) == 1  # 1-D scores: of class 1, the binary task (as fastce.compare)
        num_classes = 2 if binary else shape[1]
        for source in [labels, *models[1:], *(s for s in (weights, groups) if s is not None)]:
            if source.n_rows != n:
                raise files.InputFileError(
                    f"row counts differ: {source.where} has {source.n_rows} rows but {models[0].where} has {n}; "
                    "every file must have one row per sample.", argument=source.where,
                )
        for model in models[1:]:
            if tuple(model.shape)[1:] != shape[1:]:
                def scored(source):
                    return "1-D binary scores" if len(source.shape) == 1 else f"{source.shape[1]} classes"

                raise files.InputFileError(
                    f"{model.where} has {scored(model)} but {models[0].where} has {scored(models[0])}: every "
                    "model must score the same classes.", argument=model.where,
                )
        # As fastce eval: --task, or the task the shapes ask for (an (rows, classes) labels file is read once,
        # in chunks, to tell one-hot rows from a multi-label indicator or soft targets).
        task = files.Inputs(scores=models[0], labels=labels, weights=weights,
                            from_logits=args.logits is not None).task(args.task, args.chunk_rows)
        top_k = cli.top_k_option(args, num_classes, err)
        fingerprint = {
            "inputs": {
                "mode": "logits" if args.logits is not None else "proba",
                "models": [[name, m.fingerprint()] for name, m in zip(names, models)],
                "labels": labels.fingerprint(),
                "weights": None if weights is None else weights.fingerprint(),
                "groups": None if groups is None else groups.fingerprint(),
            },
            "options": {"top_k": list(top_k), "nan_policy": args.nan_policy, "confident_below": args.confident_below},
        }
        if task in ("multilabel", "soft"):  # absent otherwise: earlier checkpoints still resume
            fingerprint["options"]["task"] = task
        comparator = Comparator(names, num_classes, from_logits=args.logits is not None, top_k=top_k,
                                nan_policy=args.nan_policy, confident_below=args.confident_below,
                                groups=groups is not None, task=task)
        comparator = cli.resume(args, fingerprint, comparator, n, err, key="comparator",
                                load=Comparator.from_state_dict)
        itemsize = max(m.dtype.itemsize for m in models)
        chunk_rows = args.chunk_rows or files.default_chunk_rows(1 if binary else num_classes, itemsize * len(models),
                                                                 comparator.block_rows)

        def chunks():
            for lo in range(comparator.rows_seen, n, chunk_rows):
                hi = min(lo + chunk_rows, n)
                batch = (
                    labels.read(lo, hi), [m.read(lo, hi) for m in models],
                    None if weights is None else weights.read(lo, hi),
                    None if groups is None else groups.read(lo, hi),
                )
                yield lo, hi, batch

        row_bytes = sum(m.row_bytes for m in models) + labels.row_bytes
        # An error names the file it concerns, as fastce eval's do.
        key = "logits" if args.logits is not None else "proba"
        sources = {"y_true": labels, "sample_weight": weights, "groups": groups}
        sources.update({f"{key}[{name!r}]": model for name, model in zip(names, models)})

        def where(exc):
            source = sources.get(exc.argument)
            return InputError(f"{source.where}: {exc}" if source is not None else str(exc), argument=exc.argument,
                              row=exc.row)

        status = cli.run_chunks(args, comparator, chunks(), n, row_bytes, fingerprint, err, key="comparator",
                                where=where)
        if status is not None:
            return status
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = comparator.result()
            except InputError as exc:
                raise where(exc) from exc
        for warning in caught:
            print(f"fastce: warning: {cli.warning_text(warning)}", file=err)
        out.write((result.to_json() if args.json else str(result)) + "\n")
        out.flush()
    return 0
