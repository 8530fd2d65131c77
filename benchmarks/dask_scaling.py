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

Every figure is the best of ``--repeats`` runs after one warm-up run (the
machine is shared and noisy; the best run is the least disturbed one), and
every result is checked to equal the in-memory Metrics bit for bit.
"""

from __future__ import annotations

import argparse
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


def _best(run, repeats: int):
    result = run()  # warm-up: kernels loaded from numba's cache, pages mapped
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        again = run()
        times.append(time.perf_counter() - t)
        assert again == result
    return min(times), result


def _cluster_times(shard_dir, labels_path, expected, repeats, *, workers, numba_threads, top_k):
    """(best seconds with chunks in the workers' memory, best seconds reading the .npy shards)."""
    import dask
    from distributed import Client, LocalCluster, wait

    import fastce.dask

    env = {"NUMBA_NUM_THREADS": str(numba_threads)}
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, env=env,
        memory_limit=0,  # the page cache of memory-mapped shards is not the workers' to manage
    ) as cluster, Client(cluster) as client, dask.config.set(scheduler=client):
        # The workers read the shards into their own memory (np.array copies out of the map).
        z = fastce.dask.read_array(shard_dir)
        z = z.map_blocks(np.array, dtype=z.dtype).persist()
        y = fastce.dask.read_array(labels_path, role="labels", row_chunks=z.chunks[0]).persist()
        wait([z, y])
        in_memory, result = _best(lambda: fastce.dask.evaluate(y, logits=z, top_k=top_k), repeats)
        assert result == expected, (result, expected)
        del z, y
        files, result = _best(lambda: fastce.dask.evaluate_files(labels_path, logits=shard_dir, top_k=top_k), repeats)
        assert result == expected, (result, expected)
    return in_memory, files


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
    import fastce.files

    directory = args.dir or tempfile.mkdtemp(prefix="fastce-dask-")
    top_k = (1, 5)
    try:
        t = time.perf_counter()
        shard_dir, labels_path = _write_data(directory, args.rows, args.classes, args.shards)
        gib = args.rows * args.classes * 4 / 2**30
        print(f"data: {args.rows:,} x {args.classes:,} float32 logits ({gib:.2f} GiB) in {args.shards} .npy shards "
              f"({time.perf_counter() - t:.1f} s to prepare), cores: {os.cpu_count()}, numba threads: {numba.get_num_threads()}")
        labels = np.load(labels_path)
        shards = sorted(glob.glob(os.path.join(shard_dir, "*.npy")))

        logits = np.concatenate([np.load(p) for p in shards])
        in_memory, expected = _best(lambda: fastce.evaluate(labels, logits=logits, top_k=top_k), args.repeats)
        del logits
        print(f"in memory (np.load, {numba.get_num_threads()} numba threads):  {in_memory:7.3f} s")

        # The local door over the same files (what `fastce eval` runs): fresh memory maps every run.
        local_files, result = _best(lambda: fastce.files.evaluate_files(labels_path, logits=shard_dir, top_k=top_k), args.repeats)
        assert result == expected
        print(f"fastce.files.evaluate_files over the shards (memory-mapped): {local_files:7.3f} s")

        times = {}
        for workers, numba_threads in ((1, os.cpu_count()), (1, 1), (2, 1)):
            times[workers, numba_threads] = _cluster_times(
                shard_dir, labels_path, expected, args.repeats, workers=workers, numba_threads=numba_threads, top_k=top_k
            )
            memory, files = times[workers, numba_threads]
            print(f"dask, {workers} worker(s) x {numba_threads} numba thread(s): {memory:7.3f} s with chunks in "
                  f"worker memory, {files:7.3f} s reading the shards")
        one_full = times[1, os.cpu_count()]
        one, two = times[1, 1], times[2, 1]
        print()
        print(f"overhead, dask 1 worker x {os.cpu_count()} numba threads / in-memory evaluate: "
              f"{one_full[0] / in_memory:.2f}x (chunks in worker memory); "
              f"{one_full[1] / local_files:.2f}x (shards / fastce.files.evaluate_files)")
        print(f"speed-up, 1 -> 2 worker processes (1 numba thread each): {one[0] / two[0]:.2f}x (worker memory), "
              f"{one[1] / two[1]:.2f}x (shards)")
        print(f"2 workers x 1 thread vs 1 worker x {os.cpu_count()} threads (same cores): "
              f"{one_full[0] / two[0]:.2f}x (worker memory), {one_full[1] / two[1]:.2f}x (shards)")
        print(f"all results equal fastce.evaluate bit for bit; best of {args.repeats} runs after a warm-up")
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
