"""RHAPSODY's `dask` backend against plain `client.submit`, on the same cluster, same run.

    python benchmarks/bench_dask.py [--functions 2000] [--executables 500] [--chain 200]
                                    [--rounds 3] [--workers 2] [--threads 1] [--slurm]

The cluster is an embedded LocalCluster of `--workers` processes, or with `--slurm` a
dask-jobqueue SLURMCluster on the 3-node test cluster (`tests/slurm/cluster.sh start`, then
`export SLURM_CONF=/tmp/rhapsody-slurm/slurm.conf`): one worker job per node (`--workers`
jobs) of `--threads` threads, scheduler and workers on 127.0.0.1, built from a
`PlatformDescription` by `rhapsody_dask.jobqueue.cluster_for` as the SLURM tests do.

Workloads: trivial function tasks, `/bin/true` executables (plain dask runs them with
`subprocess.run(..., capture_output=True)`, as our runner captures output), and a chain of
dependent tasks, one submission (both pass the previous task's future as an argument, so the
scheduler chains them: our engine hands a task to the backend while its dependency runs, see
`chains_dependencies` in docs/backend-authors.md). A further plain-dask column
adds the worker-side start event our backend uses to report RUNNING, to isolate its cost.
Variants alternate inside each round, so background load hits them alike; the table shows each
variant's best and median time over the rounds (on a shared machine the best is the cost
without interference, the median what a run meets).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from distributed import Client, get_worker

from rhapsody_dask.backend import DaskExecutionBackend


def trivial(x: int) -> int:
    return x + 1


def trivial_announced(x: int, topic: str) -> int:
    # What our runner adds to every task: one event to the client when the task starts.
    worker = get_worker()
    worker.log_event(topic, worker.get_current_task())
    return x + 1


def run_true() -> int:
    return subprocess.run(["/bin/true"], capture_output=True, check=False).returncode


def chained(previous: int) -> int:
    return previous + 1


async def plain_functions(client: Client, n: int) -> None:
    await client.gather([client.submit(trivial, i, pure=False) for i in range(n)])


async def plain_functions_announced(client: Client, n: int) -> None:
    client.subscribe_topic("bench-started", lambda event: None)
    futures = [client.submit(trivial_announced, i, "bench-started", pure=False) for i in range(n)]
    await client.gather(futures)
    client.unsubscribe_topic("bench-started")


async def plain_executables(client: Client, n: int) -> None:
    await client.gather([client.submit(run_true, pure=False) for _ in range(n)])


async def plain_chain(client: Client, n: int) -> None:
    future = client.submit(chained, 0, pure=False)
    for _ in range(n - 1):
        future = client.submit(chained, future, pure=False)
    await future


_batch = 0


async def ours(
    backend: DaskExecutionBackend, make: Callable[[int, str], dict[str, Any]], n: int
) -> None:
    global _batch
    _batch += 1
    prefix = f"b{_batch}."
    futures = await backend.submit_tasks([make(i, prefix) for i in range(n)])
    await asyncio.gather(*futures)


def function_task(i: int, prefix: str) -> dict[str, Any]:
    return {"uid": f"{prefix}{i}", "function": trivial, "args": [i]}


def executable_task(i: int, prefix: str) -> dict[str, Any]:
    return {"uid": f"{prefix}{i}", "executable": "/bin/true"}


def chain_task(i: int, prefix: str) -> dict[str, Any]:
    deps = [f"{prefix}{i - 1}"] if i else []
    return {"uid": f"{prefix}{i}", "function": chained, "args": [i], "dependencies": deps}


async def timed(run: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await run()
    return time.perf_counter() - start


async def slurm_cluster(jobs: int, threads: int, logs: str) -> Any:
    """Worker jobs on the SLURM test cluster, as tests/slurm/test_slurm_dask.py builds them."""
    from rhapsody.platforms import PlatformDescription
    from rhapsody_dask.jobqueue import cluster_for

    platform = PlatformDescription(
        resource_manager="slurm",
        name="vslurm",
        partition="debug",
        cores_per_node=2,
        mem_per_node=3,
    )
    cluster = await cluster_for(
        platform,
        asynchronous=True,
        processes=1,
        cores=threads,
        scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
        worker_extra_args=["--host", "127.0.0.1"],
        local_directory=logs,
        log_directory=logs,
    )
    cluster.scale(jobs=jobs)
    return cluster


async def main(args: argparse.Namespace) -> None:
    cluster = None
    if args.slurm:
        logs = tempfile.mkdtemp(prefix="bench-dask-slurm-")
        cluster = await slurm_cluster(args.workers, args.threads, logs)
        backend = DaskExecutionBackend(cluster=cluster)
        where = f"SLURMCluster {args.workers} worker job(s) x {args.threads} thread(s)"
    else:
        backend = DaskExecutionBackend(n_workers=args.workers, threads_per_worker=args.threads)
        where = f"LocalCluster {args.workers} worker(s) x {args.threads} thread(s)"
    await backend
    client = backend.client
    assert client is not None
    try:
        await client.wait_for_workers(args.workers)
        # Warm up both paths: worker imports, connections, serialisation caches.
        await plain_functions(client, 50)
        await ours(backend, function_task, 50)
        await ours(backend, executable_task, 10)
        rows: list[tuple[str, int, dict[str, Callable[[], Awaitable[None]]]]] = [
            (
                f"{args.functions} trivial functions",
                args.functions,
                {
                    "plain dask": lambda: plain_functions(client, args.functions),
                    "plain + start event": lambda: plain_functions_announced(
                        client, args.functions
                    ),
                    "rhapsody dask": lambda: ours(backend, function_task, args.functions),
                },
            ),
            (
                f"{args.executables} x /bin/true",
                args.executables,
                {
                    "plain dask": lambda: plain_executables(client, args.executables),
                    "rhapsody dask": lambda: ours(backend, executable_task, args.executables),
                },
            ),
            (
                f"chain of {args.chain} dependent tasks",
                args.chain,
                {
                    "plain dask": lambda: plain_chain(client, args.chain),
                    "rhapsody dask": lambda: ours(backend, chain_task, args.chain),
                },
            ),
        ]
        print(f"{where}, {args.rounds} alternating rounds: best and median\n")
        header = (
            f"{'workload':34} {'variant':20} {'best s':>7} {'median s':>9} {'tasks/s':>8} "
            f"{'best vs plain':>14} {'median vs plain':>16}"
        )
        print(header)
        print("-" * len(header))
        for title, count, variants in rows:
            if count < 1:  # skipped with --functions 0 and the like
                continue
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, run in variants.items():
                    times[name].append(await timed(run))
            plain_best, plain_median = (
                min(times["plain dask"]),
                statistics.median(times["plain dask"]),
            )
            for name, samples in times.items():
                best, median = min(samples), statistics.median(samples)
                print(
                    f"{title:34} {name:20} {best:7.2f} {median:9.2f} {count / best:8.0f} "
                    f"{best / plain_best:13.2f}x {median / plain_median:15.2f}x"
                )
    finally:
        await backend.shutdown()
        if cluster is not None:
            await cluster.close()


if __name__ == "__main__":  # worker processes are spawned: they re-import this module
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", type=int, default=2000)
    parser.add_argument("--executables", type=int, default=500)
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--slurm", action="store_true", help="workers as SLURM jobs")
    asyncio.run(main(parser.parse_args()))
