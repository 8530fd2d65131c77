"""Evaluation on a Dask cluster: the same kernels per block, small states through a tree.

``pip install "fastce[dask]"``.  Dask is imported inside these functions only,
so ``import fastce`` never imports it.

How a Dask array of scores becomes :class:`~fastce.metrics.Metrics`:

1. At the door (on the client, from metadata only): labels, scores and
   weights are checked for shape and dtype; labels and weights are given the
   row chunks of the scores, and the class axis is joined into one chunk.
2. Each row chunk runs the in-memory kernel driver
   (:func:`fastce.readers.read_scores`) on its rows and returns a partial
   :class:`~fastce.state.State` -- O(top_k) numbers, whatever its size.
3. Partial states merge in row order through a tree; the client receives one
   merged state and finalises it exactly as :func:`fastce.evaluate` does
   (same NaN policy, errors and warnings).

*Bit-identical to* ``fastce.evaluate``.  The kernels sum rows in float64
within blocks of the task reader's ``block_rows`` rows counted from row 0,
and add block sums exactly.  A chunk therefore reads only the whole blocks
it holds; the rows of a block cut by a chunk boundary (fewer than one block,
at most 2**15 scores, on each side of each boundary) are copied out and read
together by a small "seam" task.  Every block is summed over the same rows
in the same order as in memory, so every number equals ``fastce.evaluate``
bit for bit, for any chunking -- and only those few seam rows and the states
ever leave the worker that holds a chunk.

Errors found on the workers (a label out of range, a negative weight) name
the row's global number; when several chunks hold bad rows, the first row
is reported, as in memory.

:func:`reduce_row_blocks` is the generic part (per-chunk function, seams,
ordered tree merge) for other statistics to reuse, e.g. a Dask door for
diagnostics: give it a function from row arrays to a mergeable partial.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field

import numpy as np

from fastce import files, validation
from fastce.api import scores_argument
from fastce.errors import InputError
from fastce.state import State, check_nan_policy

__all__ = ["diagnose", "diagnose_files", "evaluate", "evaluate_files", "read_array", "reduce_row_blocks"]

# Partial states merged per task of the tree.
DEFAULT_SPLIT_EVERY = 8


def _import_dask():
    try:
        import dask
        import dask.array as da
    except ImportError:
        raise ImportError(
            'fastce.dask needs dask and distributed: pip install "fastce[dask]"'
        ) from None
    return dask, da


# ---------------------------------------------------------------------------
# The generic map / seam / ordered-tree reduction


def _plan_chunk(start: int, stop: int, n_rows: int, block: int):
    """Split rows [start, stop) of one chunk into whole blocks and cut-block fragments.

    Returns ``(interior, fragments)``: ``interior`` is ``(lo, hi)`` in global
    rows (whole blocks only; the short last block of the array counts as
    whole), or None; ``fragments`` are ``(lo, hi, block_index)`` pieces of
    blocks that continue in a neighbouring chunk.
    """
    first = min(-(-start // block) * block, n_rows)  # first block boundary >= start
    last = n_rows if stop == n_rows else stop // block * block  # last boundary <= stop
    if first > last:  # the chunk lies inside one block
        return None, [(start, stop, start // block)]
    fragments = []
    if start < first:
        fragments.append((start, first, start // block))
    if last < stop:
        fragments.append((last, stop, last // block))
    return ((first, last) if first < last else None), fragments


def _take(arrays, lo: int, hi: int, copy: bool):
    out = []
    for array in arrays:
        if array is None:
            out.append(None)
        else:
            part = array[lo:hi]
            # A fragment outlives its task: copy it, or it would pin the whole chunk in memory.
            out.append(np.array(part, copy=True) if copy else part)
    return tuple(out)


def _chunk_task(read, start, interior, fragments, *blocks):
    """(partial of the chunk's whole blocks or None, row arrays of its fragments)."""
    partial = None
    if interior is not None:
        lo, hi = interior
        partial = read(*_take(blocks, lo - start, hi - start, copy=False), lo)
    pieces = [_take(blocks, lo - start, hi - start, copy=True) for lo, hi, _ in fragments]
    return partial, pieces


def _seam_task(read, row0, *pieces):
    """Partial of one block whose rows came from several chunks (in row order)."""
    joined = []
    for column in zip(*pieces):
        joined.append(None if column[0] is None else np.concatenate(column))
    return read(*joined, row0)


def _merge_in_order(merge, *partials):
    result = partials[0]
    for partial in partials[1:]:
        result = merge(result, partial)
    return result


def reduce_row_blocks(arrays, read, merge, *, align_rows: int = 1, split_every: int = DEFAULT_SPLIT_EVERY):
    """A Delayed of ``merge`` over ``read`` of every row range of ``arrays``, in row order.

    Parameters
    ----------
    arrays : sequence of dask arrays or None
        Row-aligned inputs: same length and the same row chunks; 2-D arrays
        have one chunk along axis 1.  None entries are passed on as None.
    read : callable
        ``read(*row_arrays, first_row) -> partial``: numpy arrays of the rows
        of one range (never empty) and the global number of its first row.
        Must be picklable (a module-level function or a functools.partial).
    merge : callable
        ``merge(left, right) -> partial`` for ``left``'s rows followed by
        ``right``'s; called in row order only, so it may be order-sensitive.
    align_rows : int, default 1
        The row ranges given to ``read`` never straddle a multiple of
        ``align_rows`` unless they contain whole aligned blocks only: rows of
        an aligned block cut by chunk boundaries are gathered (a copy of
        fewer than ``align_rows`` rows per side of each boundary) and read
        together.  With the kernels' block size, ``read`` sees exactly the
        blocks an in-memory pass would.
    split_every : int, default 8
        Partials merged per task of the tree.

    Returns
    -------
    dask.delayed.Delayed
        Computes to the merged partial.  Nothing is computed here.
    """
    dask, _ = _import_dask()
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    present = [a for a in arrays if a is not None]
    row_chunks = tuple(int(c) for c in present[0].chunks[0])
    n_rows = sum(row_chunks)
    if n_rows == 0:
        raise ValueError("no rows to reduce")
    if any(tuple(a.chunks[0]) != present[0].chunks[0] or any(len(c) != 1 for c in a.chunks[1:]) for a in present):
        raise ValueError("arrays must share their row chunks and have one chunk along every other axis")
    if split_every < 2:
        raise ValueError(f"split_every must be at least 2; got {split_every}")
    block = max(1, int(align_rows))
    present = list(dask.optimize(*present))  # the arrays' own optimisations (fused slicing, ...)
    optimized = iter(present)
    arrays = [None if a is None else next(optimized) for a in arrays]
    chunk_keys = [None if a is None else [_row_key(a, i) for i in range(len(row_chunks))] for a in arrays]

    # One graph layer for the whole reduction: a layer per task would make
    # Dask's graph culling quadratic in the number of chunks.  Explicit
    # references (TaskRef), not key-shaped tuples: keys of persisted arrays
    # live on the cluster, and a tuple naming one would be taken literally.
    from dask._task_spec import Task, TaskRef

    name = "fastce-reduce-" + dask.base.tokenize(read, merge, block, split_every, [a.name for a in present])
    layer = {}

    def add(key, func, *args):
        layer[key] = Task(key, func, *args)
        return TaskRef(key)

    units = []  # (first row, reference to a partial)
    seams: dict[int, list] = {}  # block index -> references to fragments, in row order
    start = 0
    for i, size in enumerate(row_chunks):
        stop = start + size
        if size:
            interior, fragments = _plan_chunk(start, stop, n_rows, block)
            inputs = [None if keys is None else TaskRef(keys[i]) for keys in chunk_keys]
            chunk = add((name + "-chunk", i), _chunk_task, read, start, interior, fragments, *inputs)
            if interior is not None:
                # A task of its own, run where the chunk is: only the partial travels on.
                units.append((interior[0], add((name + "-partial", i), operator.getitem, chunk, 0)))
            for j, (_, _, index) in enumerate(fragments):
                seams.setdefault(index, []).append(add((name + "-fragment", i, j), _fragment, chunk, j))
        start = stop
    for index, pieces in seams.items():
        units.append((index * block, add((name + "-seam", index), _seam_task, read, index * block, *pieces)))
    units.sort(key=lambda unit: unit[0])
    level = [ref for _, ref in units]
    depth = 0
    while len(level) > 1:
        level = [
            add((name + "-merge", depth, j // split_every), _merge_in_order, merge, *level[j : j + split_every])
            for j in range(0, len(level), split_every)
        ]
        depth += 1
    add(name, _identity, level[0])
    graph = HighLevelGraph.from_collections(name, layer, dependencies=present)
    return Delayed(name, graph)


def _row_key(array, i: int):
    key = (array.name, i)
    return key + (0,) * (array.ndim - 1)


def _fragment(chunk_result, j: int):
    return chunk_result[1][j]


def _identity(x):
    return x


# ---------------------------------------------------------------------------
# evaluate: partials, door, finalize


@dataclass
class _Partial:
    """A State plus the first input errors found on the workers (by kind: 0 labels, 1 weights)."""

    state: State
    errors: dict = field(default_factory=dict)
    diag: object = None  # a DiagnosticsState of the same rows (fastce.dask.diagnose)


def _read_rows(scores, targets, weights, groups, first_row, *, reader, name, options=None) -> _Partial:
    """Validate one range of rows as ``evaluate`` does, then read it with the task's reader.

    With diagnostics ``options`` (fastce.dask.diagnose), the partial also
    holds the rows' diagnostics state; with ``groups`` (ids of these rows),
    the state holds their group sums.
    """
    n_rows = scores.shape[0]
    checked = validation.scores(scores, name, ndim=(1, 2))
    try:
        batch = reader.validate(targets, checked, weights, name=name)
        if groups is not None:
            batch = reader.with_groups(batch, groups)
    except InputError as exc:
        # With groups, empty group sums: they merge with their neighbours' sums.
        state = reader.empty() if groups is None else reader.empty_grouped()
        state.rows_seen = n_rows  # keeps the rows after these numbered right
        diag = None
        if options is not None:
            diag = reader.empty_diagnostics(options)
            diag.rows_seen = n_rows
        # Label errors before weight errors before group errors, whichever chunk holds them, as in memory.
        kind = {"sample_weight": 1, "groups": 2}.get(exc.argument, 0)
        return _Partial(state, {kind: _globalize(exc, first_row)}, diag)
    if options is None:
        return _Partial(reader.read(batch), {}, None)
    state, diag = reader.read_with_diagnostics(batch, options)
    return _Partial(state, {}, diag)


def _merge_partials(left: _Partial, right: _Partial) -> _Partial:
    errors = dict(right.errors)
    errors.update(left.errors)  # left's rows come first: its errors name earlier rows
    diag = None if left.diag is None else left.diag.merge(right.diag)
    return _Partial(left.state.merge(right.state), errors, diag)


def _globalize(exc: InputError, first_row: int) -> InputError:
    from fastce.streaming import _globalize as globalize

    return globalize(exc, first_row)


def _finalize(partial: _Partial, nan_policy: str, name: str, reader=None, stacklevel: int = 4):
    """What ``fastce.evaluate`` (or ``diagnose``) does after its read: errors, checks, NaN policy.

    Warnings name the first frame outside fastce: the user's line when this
    runs on the client; under ``compute=False`` it runs where the last task
    runs.
    """
    if partial.errors:
        raise partial.errors[min(partial.errors)]
    state = partial.state
    if partial.diag is not None:
        return reader.report(state, partial.diag, nan_policy, name)
    return reader.finalize(state, nan_policy, name)


def _is_dask_array(x) -> bool:
    _, da = _import_dask()
    return isinstance(x, da.Array)


def _check_known_chunks(array, name: str) -> None:
    if any(np.isnan(size) for sizes in array.chunks for size in sizes) or any(np.isnan(d) for d in array.shape):
        raise InputError(
            f"{name} has unknown chunk sizes (shape {array.shape}), so rows cannot be matched to labels; "
            f"call {name}.compute_chunk_sizes() first (or build the array with known lengths, "
            "e.g. DataFrame.to_dask_array(lengths=True)).",
            argument=name,
            value=array.shape,
        )


def _scores_array(x, name: str):
    _, da = _import_dask()
    if x is None:
        raise InputError(f"{name} is required; got None.", argument=name)
    if not _is_dask_array(x):
        raise InputError(
            f"{name} must be a dask array here; got {type(x).__name__}. For arrays in memory call "
            "fastce.evaluate, or wrap them with dask.array.from_array(x, chunks=(rows, -1)).",
            argument=name,
            value=type(x).__name__,
        )
    _check_known_chunks(x, name)
    if x.ndim not in (1, 2):
        raise InputError(
            f"{name} must have shape (n_samples, n_classes), or (n_samples,) for binary scores of class 1; got a "
            f"dask array of shape {x.shape}.",
            argument=name,
            value=x.shape,
        )
    if 0 in x.shape:
        raise InputError(f"{name} is empty (shape {x.shape}); pass at least one row and one class.", argument=name)
    dtype = x.dtype
    if not (dtype.kind in "fbiu" and dtype.itemsize <= 8 or dtype.name == "bfloat16"):
        raise InputError(
            f"{name} has dtype {dtype}; pass float16, bfloat16, float32 or float64 scores "
            "(for example x.astype(np.float32)).",
            argument=name,
            value=dtype,
        )
    if x.ndim == 2 and len(x.chunks[1]) > 1:
        # Each row's scores must be in one block for the kernel: join the class axis
        # (moves data between workers once, never to the client).
        x = x.rechunk({1: -1})
    return x


def _row_array(x, name: str, scores, *, what: str):
    """Labels or weights as a 1-D dask array with the row chunks of ``scores``."""
    _, da = _import_dask()
    n_rows = scores.shape[0]
    if _is_dask_array(x):
        _check_known_chunks(x, name)
        array = x
    else:
        array = validation.as_array(x, name)
    if what == "labels" and array.ndim == 2 and array.shape[1] == 1:  # as evaluate: (n, 1) labels, not weights
        array = array[:, 0]
    if what == "labels" and array.ndim == 2 and scores.ndim == 2 and array.shape == scores.shape:
        # One column per class: one-hot rows, a multi-label indicator or soft targets.
        if array.dtype.kind not in "biuf" and array.dtype.name != "bfloat16":
            raise InputError(f"{name} has dtype {array.dtype}; pass 0/1 labels or probabilities.", argument=name,
                             value=array.dtype)
        if not _is_dask_array(array):
            return da.from_array(array, chunks=(scores.chunks[0], -1))
        return array.rechunk({0: scores.chunks[0], 1: -1})
    if array.ndim != 1:
        hint = " For one-hot targets pass labels.argmax(axis=1)." if what == "labels" else ""
        raise InputError(
            f"{name} must be a 1-D array of {what}; got shape {array.shape}.{hint}", argument=name, value=array.shape
        )
    if array.shape[0] != n_rows:
        raise InputError(
            f"{name} has {array.shape[0]} rows but the scores have {n_rows}; they must have one {what[:-1]} per row.",
            argument=name,
            value=array.shape[0],
        )
    dtype = array.dtype
    if what == "labels" and dtype.kind not in "biu":
        raise InputError(
            f"{name} has dtype {dtype}; pass integer class indices 0..{(scores.shape[1] if scores.ndim == 2 else 2) - 1} "
            "(for example y.astype(np.int64)).",
            argument=name,
            value=dtype,
        )
    if what == "weights" and dtype.kind not in "biuf":
        raise InputError(f"{name} has dtype {dtype}; pass float weights.", argument=name, value=dtype)
    if what == "groups" and dtype.kind not in "biu":
        raise InputError(f"{name} has dtype {dtype}; pass integer group ids.", argument=name, value=dtype)
    if not _is_dask_array(array):
        return da.from_array(array, chunks=(scores.chunks[0],))
    if array.chunks[0] != scores.chunks[0]:
        array = array.rechunk({0: scores.chunks[0]})  # a 1-D array: cheap to move
    return array


def evaluate(
    y_true,
    *,
    logits=None,
    proba=None,
    sample_weight=None,
    top_k=(1,),
    nan_policy: str = "raise",
    compute: bool = True,
    split_every: int = DEFAULT_SPLIT_EVERY,
    task: str = "auto",
    ignore_index: int | None = None,
    precision: str = "input",
    groups=None,
):
    """:func:`fastce.evaluate` over Dask arrays, bit-identical to it, in one pass on the workers, for every task.

    Parameters
    ----------
    y_true : dask array or array-like, shape (n_samples,) or (n_samples, n_classes)
        Class indices 0..C-1 (0/1 for binary scores), or an (N, C) target
        (one-hot, multi-label indicator, soft), as in :func:`fastce.evaluate`.
        A numpy array is split along the row chunks of the scores.  With
        ``task="auto"`` an (N, C) target is read once before the scores, to
        tell its kind (pass ``task=`` to skip that read).
    logits, proba : dask array of float, shape (n_samples, n_classes) or (n_samples,)
        Exactly one, as in :func:`fastce.evaluate` (1-D: binary scores of
        class 1).  Any row chunking; the class axis is joined into one chunk
        if it is split.
    sample_weight : dask array or array-like of float, shape (n_samples,), optional
        Non-negative finite row weights.
    top_k : int or sequence of int, default (1,)
    nan_policy : {"raise", "omit", "propagate"}, default "raise"
        As in :func:`fastce.evaluate`.
    compute : bool, default True
        False returns a ``dask.delayed.Delayed`` instead, without computing
        anything; its ``compute()`` gives the Metrics.  Errors are then
        raised by ``compute()``; warnings (rows not summing to one, omitted
        rows) are emitted where the last task runs -- on a worker, under
        ``dask.distributed`` -- so prefer ``compute=True`` to see them.
    split_every : int, default 8
        Partial states merged per task of the reduction tree.
    task, ignore_index, precision
        As in :func:`fastce.evaluate`.
    groups : dask array or array-like of int, shape (n_samples,), optional
        A group id per row: clustered standard errors, as in
        :func:`fastce.evaluate` (every task); the per-group sums travel in
        the partial states (O(groups) each).

    Returns
    -------
    Metrics, or Delayed when ``compute=False``
        The Metrics that ``fastce.evaluate`` returns on the same rows, bit
        for bit.  Runs on the current Dask scheduler: a
        ``distributed.Client`` if one is active, otherwise Dask's default.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastce, fastce.dask
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(1000, 10)).astype(np.float32)
    >>> y = rng.integers(0, 10, size=1000)
    >>> logits = da.from_array(z, chunks=(300, 10))
    >>> m = fastce.dask.evaluate(y, logits=logits, top_k=(1, 5))
    >>> m == fastce.evaluate(y, logits=z, top_k=(1, 5))
    True
    >>> lazy = fastce.dask.evaluate(y, logits=logits, compute=False)  # nothing computed yet
    >>> lazy.compute().accuracy == m.accuracy
    True
    """
    return _run(y_true, logits, proba, sample_weight, top_k, nan_policy, compute, split_every, None, task, ignore_index,
                precision, groups)


def _run(y_true, logits, proba, sample_weight, top_k, nan_policy, compute, split_every, diagnostics, task="auto",
         ignore_index=None, precision="input", groups=None):
    """evaluate (``diagnostics`` None) or diagnose (a dict of DiagnosticsOptions) over dask arrays."""
    from fastce import readers

    dask, _ = _import_dask()
    check_nan_policy(nan_policy)
    readers.check_task(task)
    given, from_logits, name = scores_argument(logits, proba)
    scores = _scores_array(given, name)
    labels = _row_array(y_true, "y_true", scores, what="labels")
    weights = None if sample_weight is None else _row_array(sample_weight, "sample_weight", scores, what="weights")
    ids = None if groups is None else _row_array(groups, "groups", scores, what="groups")
    if task == "auto":
        task = _infer_task(labels, scores)
    reader = readers.reader_for_scores(task, scores.shape, name, from_logits=from_logits, top_k=top_k,
                                       ignore_index=ignore_index, precision=precision)
    options = None if diagnostics is None else reader.diagnostics_options(diagnostics)
    read = functools.partial(_read_rows, reader=reader, name=name, options=options)
    partial = reduce_row_blocks([scores, labels, weights, ids], read, _merge_partials, align_rows=reader.block_rows,
                                split_every=split_every)
    if not compute:
        return dask.delayed(_finalize, pure=True)(partial, nan_policy, name, reader)
    # The client receives one small partial state and finalises it; warnings
    # point at the line that called evaluate / diagnose.
    return _finalize(partial.compute(), nan_policy, name, reader)


def _infer_task(labels, scores) -> str:
    """evaluate's task rules over dask arrays; an (N, C) target is read once, chunk by chunk, to tell its kind."""
    from fastce import tasks

    if scores.ndim == 1:
        return "binary"
    if labels.ndim == 1:
        return "multiclass"
    dask, _ = _import_dask()
    starts = np.cumsum([0, *labels.chunks[0][:-1]])
    blocks = labels.to_delayed().ravel()
    flags = dask.compute(*[dask.delayed(tasks.chunk_flags, pure=True)(int(s), b, labels.dtype)
                           for s, b in zip(starts, blocks)])
    return tasks.TASK_OF_KIND[tasks.kind_of_flags(flags)]


# ---------------------------------------------------------------------------
# compare: one ComparisonState per range of rows, merged in row order


def compare(
    y_true,
    *,
    logits=None,
    proba=None,
    names=None,
    sample_weight=None,
    top_k=(1,),
    nan_policy: str = "raise",
    confident_below: float = 0.01,
    groups=None,
    task: str = "auto",
    compute: bool = True,
    split_every: int = DEFAULT_SPLIT_EVERY,
):
    """:func:`fastce.compare` over Dask arrays (one per model), in one pass on the workers.

    Arguments as :func:`fastce.compare` (``logits``/``proba`` a dict or a list
    of dask arrays, every model the same shape; other row chunkings are
    rechunked to the first model's), plus ``compute`` and ``split_every`` as
    :func:`evaluate`.  With ``task="auto"`` an (N, C) target is read once
    before the scores, to tell its kind (as :func:`evaluate`).  Each range of whole kernel blocks becomes a
    ``ComparisonState`` on a worker; only those states (O(models^2), plus
    O(groups) with ``groups=``) travel, merged in row order.  The result
    equals ``fastce.compare`` on the same rows for any chunking (without
    ``groups=``: bit for bit; with it, the per-group double-double sums merge
    exactly within their documented range).

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastce, fastce.dask
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 4, 900)
    >>> za, zb = rng.normal(size=(900, 4)), rng.normal(size=(900, 4))
    >>> c = fastce.dask.compare(y, logits={"A": da.from_array(za, chunks=(250, 4)), "B": da.from_array(zb, chunks=(400, 4))})
    >>> c.delta("B", "A") == fastce.compare(y, logits={"A": za, "B": zb}).delta("B", "A")
    True
    """
    from fastce import readers
    from fastce.compare import _confident_below, _models, _top_k, check_same_shape, compare_block_rows

    dask, _ = _import_dask()
    check_nan_policy(nan_policy)
    container, from_logits, argument = scores_argument(logits, proba)
    model_names, arrays = _models(container, names, argument)
    scores = [_scores_array(a, f"{argument}[{n!r}]") for n, a in zip(model_names, arrays)]
    check_same_shape(model_names, [s.shape for s in scores], argument)
    scores = [s if s.chunks[0] == scores[0].chunks[0] else s.rechunk({0: scores[0].chunks[0]}) for s in scores]
    labels = _row_array(y_true, "y_true", scores[0], what="labels")
    weights = None if sample_weight is None else _row_array(sample_weight, "sample_weight", scores[0], what="weights")
    ids = None if groups is None else _row_array(groups, "groups", scores[0], what="groups")
    readers.check_task(task)
    if task == "auto":
        task = _infer_task(labels, scores[0])
    num_classes = 2 if scores[0].ndim == 1 else int(scores[0].shape[1])
    ks = _top_k(top_k, task, num_classes)
    read = functools.partial(
        _read_compare_rows, names=tuple(model_names), top_k=ks, from_logits=from_logits,
        confident_below=_confident_below(confident_below), argument=argument, task=task, num_classes=num_classes,
    )
    partial = reduce_row_blocks(
        [labels, weights, ids, *scores], read, _merge_partials,
        align_rows=compare_block_rows(task, num_classes, from_logits), split_every=split_every,
    )
    if not compute:
        return dask.delayed(_finalize_comparison, pure=True)(partial, nan_policy, argument)
    return _finalize_comparison(partial.compute(), nan_policy, argument)


def _read_compare_rows(labels, weights, groups, *scores_then_first_row, names, top_k, from_logits, confident_below,
                       argument, task, num_classes) -> _Partial:
    """The ComparisonState of one range of rows (validated as ``compare`` validates), errors kept for the client."""
    from fastce.compare import ComparisonState, validated_batch

    *scores, first_row = scores_then_first_row
    state = ComparisonState.empty(names, num_classes, top_k, from_logits=from_logits,
                                  confident_below=confident_below, grouped=groups is not None, task=task)
    try:
        batch = validated_batch(labels, scores, names, argument, weights, groups, num_classes=num_classes, task=task,
                                from_logits=from_logits)
    except InputError as exc:
        for model_state in state.states.values():
            model_state.rows_seen = scores[0].shape[0]  # keeps the rows after these numbered right
        return _Partial(state, {0: _globalize(exc, first_row)})
    state.read(batch.views, batch.eps, batch.labels, batch.weights, batch.groups, batch.tolerance)
    return _Partial(state, {})


def _finalize_comparison(partial: _Partial, nan_policy: str, argument: str, stacklevel: int | None = None):
    # stacklevel None: the warnings name the first frame outside fastce (a fixed depth named dask.py's line).
    if partial.errors:
        raise partial.errors[min(partial.errors)]
    state = partial.state
    state.check_scores(argument, stacklevel=stacklevel)
    return state.finalize(nan_policy, scores_name=argument)


# ---------------------------------------------------------------------------
# Files on the cluster


def _read_file_rows(pieces, role, name):
    """Rows of one chunk: ``pieces`` are (path, lo, hi) ranges of files, concatenated in order."""
    parts = []
    for path, lo, hi in pieces:
        with files.open_array(path, role=role, name=name) as source:
            rows = source.read(lo, hi)
            if role != "scores" and rows.ndim == 2 and rows.shape[1] == 1:
                rows = rows[:, 0]
            parts.append(rows)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _natural_ranges(source, n_rows: int, chunk_rows: int | None) -> list:
    """Row ranges that follow the storage (shards, row groups) and hold at most ``chunk_rows`` rows.

    Tables default to one chunk per row group (record batch): a task reading
    part of a group decodes it from the group's start.
    """
    if source.kind in ("parquet", "arrow"):
        bounds = [int(b) for b in source._starts]
        if chunk_rows is None:
            return list(zip(bounds[:-1], bounds[1:]))
    elif source.kind == "npy-shards":
        bounds = [int(b) for b in source.starts]
    else:
        bounds = [0, n_rows]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        for start in range(lo, hi, chunk_rows):
            out.append((start, min(start + chunk_rows, hi)))
    return out


def _file_pieces(source, lo: int, hi: int) -> list:
    """(path, lo, hi) pieces of the files of ``source`` holding its rows [lo, hi)."""
    if source.kind != "npy-shards":
        return [(source.paths[0], lo, hi)]
    pieces = []
    for path, start, stop in zip(source.paths, source.starts[:-1], source.starts[1:]):
        a, b = max(lo, int(start)), min(hi, int(stop))
        if a < b:
            pieces.append((path, a - int(start), b - int(start)))
    return pieces


def read_array(paths, *, role: str = "scores", name: str | None = None, chunk_rows: int | None = None, row_chunks=None):
    """A dask array of the rows stored in files, read on the workers.

    Only headers and metadata are read here; each chunk is memory-mapped
    (.npy, uncompressed .npz) or decoded (Parquet row groups, Arrow record
    batches) by the worker that runs it.  The files must be reachable at the
    same paths from every worker (a shared file system).

    Parameters
    ----------
    paths : str, path or list of them
        As :func:`fastce.files.open_array`: a file, a directory or glob of
        .npy shards, or several .npy files.
    role : {"scores", "labels", "weights"}
        What the array holds (default names and checks, as in ``fastce.files``).
    name : str, optional
        The .npz member or table column.
    chunk_rows : int, optional
        At most this many rows per chunk.  Default: about 64 MB of scores
        (a whole number of kernel blocks) for .npy/.npz, one chunk per row
        group (record batch) for Parquet (Arrow).  Chunks never straddle a
        shard or a row group.
    row_chunks : tuple of int, optional
        Exact row chunks instead (used to match labels to the chunks of the
        scores).

    Returns
    -------
    dask.array.Array
    """
    dask, da = _import_dask()
    with files.open_array(paths, role=role, name=name) as source:
        if source.kind == "npz-compressed":
            raise files.InputFileError(
                f"{source.where} is a compressed .npz member, which can only be read from its start; a cluster "
                "reads chunks anywhere. Save it with np.save or np.savez (uncompressed), or as Parquet.",
                argument=source.where,
            )
        n_rows = source.n_rows
        shape_rest = tuple(source.shape[1:])
        if role != "scores" and shape_rest == (1,):
            shape_rest = ()
        dtype = source.dtype
        if row_chunks is not None:
            if sum(row_chunks) != n_rows:
                raise InputError(
                    f"{source.where} has {n_rows} rows but the scores have {sum(row_chunks)}; they must have "
                    "one row per sample.",
                    argument=source.where,
                    value=n_rows,
                )
            bounds = np.cumsum([0, *row_chunks])
            ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        else:
            if chunk_rows is None and source.kind not in ("parquet", "arrow"):
                width = int(np.prod(shape_rest, dtype=np.int64)) if shape_rest else 1
                chunk_rows = files.default_chunk_rows(max(1, width), dtype.itemsize)
            if chunk_rows is not None and chunk_rows < 1:
                raise InputError(f"chunk_rows must be >= 1; got {chunk_rows}.", argument="chunk_rows", value=chunk_rows)
            ranges = _natural_ranges(source, n_rows, None if chunk_rows is None else int(chunk_rows))
        pieces = [_file_pieces(source, lo, hi) for lo, hi in ranges]
        where = source.where
    token = dask.base.tokenize(where, role, name, [files._stat(p) for p in _all_paths(pieces)], ranges)
    chunks = []
    for (lo, hi), chunk_pieces in zip(ranges, pieces):
        task = dask.delayed(_read_file_rows, pure=True)(
            chunk_pieces, role, name, dask_key_name=f"fastce-read-{role}-{token}-{lo}"
        )
        chunks.append(da.from_delayed(task, shape=(hi - lo, *shape_rest), dtype=dtype))
    return da.concatenate(chunks, axis=0) if len(chunks) > 1 else chunks[0]


def _all_paths(pieces) -> list:
    return sorted({path for chunk in pieces for path, _, _ in chunk})


def evaluate_files(
    labels=None,
    *,
    logits=None,
    proba=None,
    sample_weight=None,
    top_k=(1,),
    nan_policy: str = "raise",
    chunk_rows: int | None = None,
    scores_name=None,
    labels_name=None,
    weights_name=None,
    compute: bool = True,
    task: str = "auto",
    ignore_index: int | None = None,
    precision: str = "input",
    groups=None,
    groups_name=None,
):
    """:func:`fastce.files.evaluate_files` on the current Dask scheduler (files read by the workers).

    Same arguments and the same Metrics, bit for bit, for every task (1-D
    score files are binary; (rows, classes) label files one-hot, multi-label
    or soft); ``groups``: a file of one integer group id per row (clustered
    errors, as :func:`evaluate`; ``groups_name``: its .npz member or table column).  With a
    ``distributed.Client`` active, every worker must see the files at the
    same paths.  ``compute=False`` returns a Delayed, as in :func:`evaluate`.
    """
    return _over_files(evaluate, labels, logits=logits, proba=proba, sample_weight=sample_weight,
                       chunk_rows=chunk_rows, scores_name=scores_name, labels_name=labels_name,
                       weights_name=weights_name, top_k=top_k, nan_policy=nan_policy, compute=compute,
                       task=task, ignore_index=ignore_index, precision=precision, groups=groups,
                       groups_name=groups_name)


def _over_files(func, labels, *, logits, proba, sample_weight, chunk_rows, scores_name, labels_name,
                weights_name, groups=None, groups_name=None, **kwargs):
    """``func`` (evaluate or diagnose) over dask arrays read from files by the workers."""
    if (logits is None) == (proba is None):
        raise files.InputFileError("pass exactly one of logits or proba files.")
    from_logits = logits is not None
    scores = read_array(logits if from_logits else proba, role="scores", name=scores_name, chunk_rows=chunk_rows)
    if labels is None:
        paths = files._expand(logits if from_logits else proba)
        if len(paths) != 1 or files._sniff(paths[0])[:4] != files._PARQUET_MAGIC and files._sniff(paths[0])[:6] != files._ARROW_MAGIC:
            raise files.InputFileError(
                "a labels file is required (unless the scores are a Parquet/Arrow table holding them)."
            )
        labels = paths[0]
    row_chunks = tuple(int(c) for c in scores.chunks[0])
    y = read_array(labels, role="labels", name=labels_name, row_chunks=row_chunks)
    w = None
    if sample_weight is not None:
        w = read_array(sample_weight, role="weights", name=weights_name, row_chunks=row_chunks)
    if groups is not None:
        kwargs["groups"] = read_array(groups, role="groups", name=groups_name, row_chunks=row_chunks)
    if from_logits:
        return func(y, logits=scores, sample_weight=w, **kwargs)
    return func(y, proba=scores, sample_weight=w, **kwargs)


def diagnose(
    y_true,
    *,
    logits=None,
    proba=None,
    sample_weight=None,
    top_k=(1,),
    n_bins: int = 15,
    hist_bins: int = 20,
    worst_k: int = 20,
    confident_below: float = 0.01,
    dense_confusion_max: int = 1024,
    nan_policy: str = "raise",
    compute: bool = True,
    split_every: int = DEFAULT_SPLIT_EVERY,
    task: str = "auto",
    ignore_index: int | None = None,
    precision: str = "input",
    groups=None,
):
    """:func:`fastce.diagnose` over Dask arrays: the same report, in one pass on the workers, for every task
    ``diagnose`` takes (multi-class, binary, multi-label).

    Arguments as :func:`fastce.diagnose` and :func:`evaluate` (``compute=False``
    returns a Delayed).  Each row chunk reads its rows into a partial state
    and diagnostics state (O(C + bins + k), plus C^2 for a dense confusion
    matrix); they merge in row order through a tree.  The report equals
    ``fastce.diagnose``'s bit for bit (worst rows with global row numbers),
    for any chunking: the binned sums are exact, the per-class sums exact
    double-doubles (see ``fastce.diagnostics_kernels``).

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastce, fastce.dask
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(1000, 10))
    >>> y = rng.integers(0, 10, size=1000)
    >>> r = fastce.dask.diagnose(y, logits=da.from_array(z, chunks=(300, 10)))
    >>> r.worst[0]["row"] == fastce.diagnose(y, logits=z).worst[0]["row"]
    True
    """
    diagnostics = dict(
        n_bins=n_bins, hist_bins=hist_bins, worst_k=worst_k, confident_below=confident_below,
        dense_confusion_max=dense_confusion_max,
    )
    return _run(y_true, logits, proba, sample_weight, top_k, nan_policy, compute, split_every, diagnostics, task,
                ignore_index, precision, groups)


def diagnose_files(labels=None, *, logits=None, proba=None, sample_weight=None, chunk_rows=None,
                   scores_name=None, labels_name=None, weights_name=None, groups=None, groups_name=None, **options):
    """:func:`diagnose` over files read by the workers (as :func:`evaluate_files`); ``options`` go to diagnose."""
    return _over_files(diagnose, labels, logits=logits, proba=proba, sample_weight=sample_weight,
                       chunk_rows=chunk_rows, scores_name=scores_name, labels_name=labels_name,
                       weights_name=weights_name, groups=groups, groups_name=groups_name, **options)
