"""Side-by-side throughput of the `concurrent` and `noop` backends.

Compares, in one run on this machine:
  1. N x /bin/true: ours vs raw asyncio.create_subprocess_exec at the same concurrency vs the
     original RHAPSODY (rhapsody-py, in its own venv);
  2. N trivial function tasks: ours vs rhapsody-py vs a bare ThreadPoolExecutor;
  3. a random DAG (average 2 dependencies per task) through `noop`: per-task overhead and peak
     traced memory per task, vs rhapsody-py's noop without dependencies;
  4. the variants docs/performance.md quotes: functions with 16 slots, functions through
     `run_in_executor` (a user's `executor=`) instead of the backend's own threads, and the
     noop DAG with the garbage collector off (the engine's own cost).

    python benchmarks/bench_concurrent.py            # full sizes (1,000 / 10,000 / 100,000)
    python benchmarks/bench_concurrent.py --quick    # a tenth of each
    python benchmarks/bench_concurrent.py --no-peer  # skip installing/running rhapsody-py
    python benchmarks/bench_concurrent.py --rounds 9 # medians of 9 rounds (default 5)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
import venv
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rhapsody.backends.execution import ConcurrentExecutionBackend, NoopExecutionBackend
from rhapsody.resources import detect_cores

HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".venv-rhapsody-py"
PEER_VERSION = "rhapsody-py==0.6.0"


def trivial(x: int) -> int:
    return x + 1


def peer_python() -> Path | None:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(PEER_VENV)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", PEER_VERSION], check=True)
    return python


def run_peer(python: Path | None, kind: str, n: int) -> float | None:
    if python is None:
        return None
    out = subprocess.run(
        [str(python), str(HERE / "_peer.py"), kind, str(n)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd="/tmp",
    )
    if out.returncode != 0:
        print(f"rhapsody-py {kind} failed: {out.stderr[-500:]}", file=sys.stderr)
        return None
    seconds: float = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    return seconds


async def ours(tasks: list[dict[str, Any]], **kwargs: Any) -> float:
    backend = await ConcurrentExecutionBackend(**kwargs)
    start = time.perf_counter()
    futures = await backend.submit_tasks(tasks)
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - start
    await backend.shutdown()
    return elapsed


async def raw_subprocesses(n: int, concurrency: int) -> float:
    limit = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with limit:
            proc = await asyncio.create_subprocess_exec(
                "/bin/true", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            await proc.communicate()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - start


def bare_threads(n: int, workers: int) -> float:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        start = time.perf_counter()
        wait([pool.submit(trivial, i) for i in range(n)])
        return time.perf_counter() - start


def random_dag(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        k = min(i, rng.choice((0, 1, 2, 3, 4)))  # mean 2 once past the first few tasks
        deps = [f"n{j}" for j in rng.sample(range(i), k)] if k else []
        tasks.append({"uid": f"n{i}", "executable": "/bin/true", "dependencies": deps})
    return tasks


async def noop_dag(
    n: int, traced: bool = False, batches: int = 10, collect: bool = True
) -> list[float]:
    """n tasks submitted in batches (dependencies across batches) through noop: [seconds until
    every task is final (gathered), of which seconds after the last `submit_tasks` returned
    (noop finishes tasks on the loop's next turns)], or with `traced` [peak traced
    bytes/task]. Without `collect`, the garbage collector is off while it runs."""
    tasks = random_dag(n)
    backend = await NoopExecutionBackend()
    step = len(tasks) // batches
    if traced:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    if not collect:
        gc.collect()
        gc.disable()
    start = time.perf_counter()
    futures: list[asyncio.Future[Any]] = []
    for b in range(batches):
        futures.extend(await backend.submit_tasks(tasks[b * step : (b + 1) * step]))
    submitted = time.perf_counter()
    await asyncio.gather(*futures)
    gathered = time.perf_counter()
    gc.enable()
    await backend.shutdown()
    if traced:
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        return [peak / n]
    return [gathered - start, gathered - submitted]


def measure(kind: str, n: int, cores: int) -> list[float]:
    """One measurement, in this (fresh) process."""
    if kind == "ours-true":
        return [asyncio.run(ours([{"executable": "/bin/true"} for _ in range(n)]))]
    if kind == "raw-true":
        return [asyncio.run(raw_subprocesses(n, cores))]
    if kind == "ours-function":
        return [asyncio.run(ours([{"function": trivial, "args": [i]} for i in range(n)]))]
    if kind == "threads-function":
        return [bare_threads(n, cores + 4)]
    if kind == "ours-function-16":
        return [asyncio.run(ours([{"function": trivial, "args": [i]} for i in range(n)], cores=16))]
    if kind == "executor-function":  # run_in_executor on a pool like asyncio's default one
        pool = ThreadPoolExecutor(max_workers=cores + 4)
        tasks = [{"function": trivial, "args": [i]} for i in range(n)]
        return [asyncio.run(ours(tasks, executor=pool))]
    if kind == "ours-noop-nogc":
        return asyncio.run(noop_dag(n, collect=False))
    if kind == "ours-noop":
        return asyncio.run(noop_dag(n))
    if kind == "ours-noop-memory":
        return asyncio.run(noop_dag(n, traced=True))
    raise ValueError(kind)


def run_fresh(kind: str, n: int, cores: int) -> list[float]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", kind, str(n), str(cores)],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    values: list[float] = json.loads(out.stdout.strip().splitlines()[-1])
    return values


def rate(n: int, seconds: float | None) -> str:
    return "-" if seconds is None else f"{n / seconds:,.0f}/s"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{b / a:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--rounds", type=int, default=5, help="median of this many (default 5)")
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)  # KIND N CORES, internal
    args = parser.parse_args()
    if args.measure:
        kind, n, cores = args.measure
        print(json.dumps(measure(kind, int(n), int(cores))))
        return
    scale = 10 if args.quick else 1
    n_exec, n_func, n_dag = 1000 // scale, 10_000 // scale, 100_000 // scale
    cores = detect_cores()
    peer = None if args.no_peer else peer_python()
    console = Console()
    console.print(
        f"[bold]concurrent/noop benchmark[/bold] — {cores} cores, Python {sys.version.split()[0]}"
        f", median of {args.rounds} rounds, each measurement in a fresh process"
    )

    table = Table(title="throughput (higher is better)")
    for col in (
        "workload",
        "ours",
        "baseline",
        "ours / baseline",
        "rhapsody-py",
        "ours / rhapsody-py",
    ):
        table.add_column(col)

    def median_of(*runs: Any) -> list[float | None]:
        """Each run's median seconds over the rounds; the runs take turns within a round, so
        background load hits them alike."""
        times: list[list[float]] = [[] for _ in runs]
        for _ in range(args.rounds):
            for sample, run in zip(times, runs, strict=True):
                seconds = run()
                if seconds is not None:
                    sample.append(seconds)
        return [statistics.median(sample) if sample else None for sample in times]

    t_ours, t_raw, t_peer = median_of(
        lambda: run_fresh("ours-true", n_exec, cores)[0],
        lambda: run_fresh("raw-true", n_exec, cores)[0],
        lambda: run_peer(peer, "true", n_exec),
    )
    table.add_row(
        f"{n_exec} x /bin/true",
        rate(n_exec, t_ours),
        f"raw asyncio, {cores} at a time: {rate(n_exec, t_raw)}",
        ratio(t_ours, t_raw),
        rate(n_exec, t_peer),
        ratio(t_ours, t_peer),
    )

    t_ours, t_pool, t_peer = median_of(
        lambda: run_fresh("ours-function", n_func, cores)[0],
        lambda: run_fresh("threads-function", n_func, cores)[0],
        lambda: run_peer(peer, "function", n_func),
    )
    table.add_row(
        f"{n_func:,} trivial functions",
        rate(n_func, t_ours),
        f"bare ThreadPoolExecutor: {rate(n_func, t_pool)}",
        ratio(t_ours, t_pool),
        rate(n_func, t_peer),
        ratio(t_ours, t_peer),
    )
    console.print(table)

    noop_runs = [run_fresh("ours-noop", n_dag, cores) for _ in range(args.rounds)]
    engine = statistics.median(r[0] for r in noop_runs)
    gather = statistics.median(r[1] for r in noop_runs)
    [per_task_bytes] = run_fresh("ours-noop-memory", n_dag, cores)
    [t_peer] = median_of(lambda: run_peer(peer, "noop", n_dag))
    dag = Table(title=f"noop, {n_dag:,} tasks")
    for col in ("", "per task, median (range)", "tasks/s", "peak traced memory per task"):
        dag.add_column(col)
    low = min(r[0] for r in noop_runs) / n_dag * 1e6
    high = max(r[0] for r in noop_runs) / n_dag * 1e6
    dag.add_row(
        "ours, random DAG (avg 2 deps), 10 batches: submit until all final",
        f"{engine / n_dag * 1e6:.1f} µs ({low:.1f}-{high:.1f})",
        rate(n_dag, engine),
        f"{per_task_bytes:,.0f} B",
    )
    dag.add_row(
        "  of which after the last submit_tasks returned",
        f"{gather / n_dag * 1e6:.1f} µs",
        rate(n_dag, gather),
        "",
    )
    if t_peer is not None:
        dag.add_row(
            "rhapsody-py, no dependencies, 1 batch (returns no futures)",
            f"{t_peer / n_dag * 1e6:.1f} µs",
            rate(n_dag, t_peer),
            "-",
        )
    console.print(dag)

    t_ours, t_16, t_executor = median_of(
        lambda: run_fresh("ours-function", n_func, cores)[0],
        lambda: run_fresh("ours-function-16", n_func, cores)[0],
        lambda: run_fresh("executor-function", n_func, cores)[0],
    )
    [t_nogc] = median_of(lambda: run_fresh("ours-noop-nogc", n_dag, cores)[0])
    variants = Table(title="variants quoted in docs/performance.md")
    for col in ("variant", "result", "vs the default"):
        variants.add_column(col)
    variants.add_row(
        f"{n_func:,} trivial functions, cores={cores} (default)", rate(n_func, t_ours), ""
    )
    variants.add_row("  with cores=16", rate(n_func, t_16), ratio(t_16, t_ours))
    variants.add_row(
        "  through run_in_executor (executor=ThreadPoolExecutor)",
        rate(n_func, t_executor),
        ratio(t_executor, t_ours),
    )
    assert t_nogc is not None
    variants.add_row(
        f"noop DAG, {n_dag:,} tasks, garbage collector off: per task",
        f"{t_nogc / n_dag * 1e6:.1f} µs",
        f"{engine / n_dag * 1e6:.1f} µs with it on",
    )
    console.print(variants)


if __name__ == "__main__":
    main()
