"""fastce.dask on a LocalCluster: overhead against in-memory ``fastce.evaluate``, and 1 -> 2 workers.

Usage::

    python benchmarks/dask_scaling.py [--rows 500000] [--classes 1000] [--shards 8] [--repeats 5]
                                      [--dir DIR] [--keep]

What it does:

1. writes ``--rows`` x ``--classes`` float32 logits (2 GB by default) as
   ``--shards`` .npy files plus a labels .npy into ``--dir`` (a new temp
   directory unless given; existing files of the right shape are reused);
2. times ``fastce.evaluate`` on the whole array loaded into this process's
   memory (numba's default threads: every core) -- the in-memory path -- and
   ``fastce.files.evaluate_files`` over the shards (the local door to the
   same files, memory-mapped afresh on every run, as ``fastce eval`` does);
3. on LocalClusters of worker processes, times ``fastce.dask.evaluate`` on
   the same rows held in the workers' memory (read there from the shards and
   persisted: the fair match for the in-memory path), and
   ``fastce.dask.evaluate_files`` over the shards (each worker memory-maps
   its chunks: the match for the memory-mapped path).  The 2 GB never go
   through the client or the scheduler: shipping them from the client would
   measure pickling and sockets, not fastce, and files on a shared file
   system or data already on the workers is how a cluster holds a
   validation set.  Configurations:

   * 1 worker, 1 task thread, numba on every core (the fair match for the
     in-memory path, which uses every core): the overhead ratio;
   * 1 worker and 2 workers, 1 task thread and 1 numba thread each: the
     speed-up from adding a worker process;
   * 2 workers x 1 numba thread (both cores, like the first cluster).

All clusters are up at once and the runs go round robin, so every
configuration meets the same spells of load from other jobs; every figure
is the best of ``--repeats`` runs after one warm-up run (the machine is
shared and noisy; the best run is the least disturbed one), and every
result is checked to equal the in-memory Metrics bit for bit.  Memory: the
array in this process plus one copy in each cluster's workers (4 copies).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import os
import shutil
import tempfile
import time

import numpy as np


def _write_data(directory: str, rows: int, classes: int, shards: int) -> tuple[str, str]:
    shard_dir = os.path.join(directory, "logits")
    labels_path = os.path.join(directory, "labels.npy")
    bounds = np.linspace(0, rows, shards + 1).astype(int)
    existing = sorted(glob.glob(os.path.join(shard_dir, "*.npy")))
    if len(existing) == shards and os.path.exists(labels_path):
        shapes = [np.load(p, mmap_mode="r").shape for p in existing]
        if shapes == [(int(b - a), classes) for a, b in zip(bounds[:-1], bounds[1:])]:
            return shard_dir, labels_path
    os.makedirs(shard_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        block = rng.standard_normal((int(hi - lo), classes), dtype=np.float32)
        block *= 3
        np.save(os.path.join(shard_dir, f"part-{i:04d}.npy"), block)
        del block
    np.save(labels_path, rng.integers(0, classes, size=rows))
    return shard_dir, labels_path


def _start_cluster(stack, shard_dir, labels_path, *, workers, numba_threads):
    """A LocalCluster, its client, and the rows read into its workers' memory from the shards."""
    from distributed import Client, LocalCluster, futures_of, wait

    import fastce.dask

    cluster = stack.enter_context(LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
        env={"NUMBA_NUM_THREADS": str(numba_threads)},
        memory_limit=0,  # the page cache of memory-mapped shards is not the workers' to manage
    ))
    client = stack.enter_context(Client(cluster, set_as_default=False))
    z = fastce.dask.read_array(shard_dir)
    z = z.map_blocks(np.array, dtype=z.dtype)  # a copy out of the map: rows in worker memory
    y = fastce.dask.read_array(labels_path, role="labels", row_chunks=z.chunks[0])
    z, y = client.persist([z, y])
    with client.as_current():
        wait(futures_of(z) + futures_of(y))
    return client, z, y


def _on(client, run):
    import dask

    def on_cluster():
        with dask.config.set(scheduler=client):
            return run()

    return on_cluster


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", help="where to write (or reuse) the data; default: a new temp directory")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)

    import numba

    import fastce
    import fastce.dask
    import fastce.files

    directory = args.dir or tempfile.mkdtemp(prefix="fastce-dask-")
    top_k = (1, 5)
    cores = os.cpu_count()
    configs = ((1, cores), (1, 1), (2, 1))  # (worker processes, numba threads per worker)
    try:
        t = time.perf_counter()
        shard_dir, labels_path = _write_data(directory, args.rows, args.classes, args.shards)
        gib = args.rows * args.classes * 4 / 2**30
        print(f"data: {args.rows:,} x {args.classes:,} float32 logits ({gib:.2f} GiB) in {args.shards} .npy shards "
              f"({time.perf_counter() - t:.1f} s to prepare), cores: {cores}, numba threads here: {numba.get_num_threads()}")
        labels = np.load(labels_path)
        logits = np.concatenate([np.load(p) for p in sorted(glob.glob(os.path.join(shard_dir, "*.npy")))])

        runs = {
            "memory": lambda: fastce.evaluate(labels, logits=logits, top_k=top_k),
            # the local door over the same files (what `fastce eval` runs): fresh memory maps every run
            "files": lambda: fastce.files.evaluate_files(labels_path, logits=shard_dir, top_k=top_k),
        }
        with contextlib.ExitStack() as stack:
            for workers, threads in configs:
                client, z, y = _start_cluster(stack, shard_dir, labels_path, workers=workers, numba_threads=threads)
                runs["memory", workers, threads] = _on(
                    client, functools.partial(fastce.dask.evaluate, y, logits=z, top_k=top_k)
                )
                runs["files", workers, threads] = _on(
                    client, functools.partial(fastce.dask.evaluate_files, labels_path, logits=shard_dir, top_k=top_k)
                )
            # Round robin: every configuration sees the same spells of load from other jobs.
            expected = runs["memory"]()
            for name, run in runs.items():
                assert run() == expected, name  # also the warm-up (kernels loaded from numba's cache)
            best = {name: float("inf") for name in runs}
            for _ in range(args.repeats):
                for name, run in runs.items():
                    t = time.perf_counter()
                    result = run()
                    best[name] = min(best[name], time.perf_counter() - t)
                    assert result == expected, name

        print(f"in this process, fastce.evaluate on the loaded array:      {best['memory']:7.3f} s")
        print(f"in this process, fastce.files.evaluate_files on the shards: {best['files']:7.3f} s")
        for workers, threads in configs:
            print(f"dask, {workers} worker process(es) x {threads} numba thread(s): "
                  f"{best['memory', workers, threads]:7.3f} s with the rows in worker memory, "
                  f"{best['files', workers, threads]:7.3f} s reading the shards")
        full, one, two = (("memory",) + configs[0]), (("memory",) + configs[1]), (("memory",) + configs[2])
        print()
        print(f"overhead, dask 1 worker x {cores} numba threads / fastce.evaluate: {best[full] / best['memory']:.2f}x "
              f"(rows in worker memory); {best[('files',) + configs[0]] / best['files']:.2f}x "
              "(shards, vs fastce.files.evaluate_files)")
        print(f"speed-up, 1 -> 2 worker processes (1 numba thread each): {best[one] / best[two]:.2f}x "
              f"(rows in worker memory); {best[('files',) + configs[1]] / best[('files',) + configs[2]]:.2f}x (shards)")
        print(f"2 workers x 1 numba thread vs 1 worker x {cores} (same cores): {best[full] / best[two]:.2f}x "
              f"(rows in worker memory); {best[('files',) + configs[0]] / best[('files',) + configs[2]]:.2f}x (shards)")
        print(f"every result equals fastce.evaluate bit for bit; best of {args.repeats} round-robin runs after a warm-up")
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
