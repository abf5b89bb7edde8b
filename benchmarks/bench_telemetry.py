"""What telemetry costs: the same workloads through a `Session` on `concurrent`, telemetry off vs
on (`session.start_telemetry()` with its defaults: 5 s resource polling, no subscribers, no
exporters), side by side.

Made for a noisy shared machine: each round runs every variant once, in an order that
alternates (ABBA...) so that drift hits all of them alike, after one warm-up round that is not
counted. Each run reports its wall time (submission until every task is final) and the CPU
time of this process over the same window (all its threads: the event loop, where telemetry
runs, and the workers; not the executables' processes), which other jobs on the machine
disturb much less than the wall time. The table gives medians with their interquartile range
and the median, over rounds, of each round's own on/off ratio (paired: a slow round slows both).

`--instructions` adds a measure that other jobs do not disturb at all: the machine instructions
each variant executes per task, counted by valgrind (cachegrind) in a run of n tasks minus a
run of none (so imports and start-up cancel out). It needs `valgrind` and takes a few minutes.

    python benchmarks/bench_telemetry.py                 # 10,000 functions, 1,000 executables
    python benchmarks/bench_telemetry.py --quick         # a tenth of each
    python benchmarks/bench_telemetry.py --rounds 21     # default 15
    python benchmarks/bench_telemetry.py --subscriber --checkpoint --prometheus  # heavier set-ups
    python benchmarks/bench_telemetry.py --functions 100000 --executables 0     # other sizes
    python benchmarks/bench_telemetry.py --instructions  # and instructions per task (valgrind)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.session import Session


def trivial(x: int) -> int:
    return x + 1


CHECKPOINTS = Path(tempfile.gettempdir()) / f"bench-telemetry-{os.getuid()}"  # removed at the end
VARIANTS: dict[str, dict[str, Any]] = {
    "on (defaults)": {},
    "on + subscriber": {"_subscriber": True},
    "on + checkpoint": {"checkpoint_path": CHECKPOINTS},  # a directory: one file per session
    # Something exports: the bookkeeping is done every second, during the run.
    "on + Prometheus": {"prometheus_port": 0},
}


def workload(kind: str, n: int) -> list[dict[str, Any]]:
    if kind == "functions":
        return [{"uid": f"f{i}", "function": trivial, "args": [i]} for i in range(n)]
    return [{"uid": f"e{i}", "executable": "/bin/true"} for i in range(n)]


async def one_run(
    kind: str, n: int, telemetry: dict[str, Any] | None, *, exit_when_final: bool = False
) -> tuple[float, ...]:
    """Wall and CPU seconds from submission until every task is final, and wall seconds of
    `session.close()` (with telemetry: the bookkeeping not done yet, ending it, and with a
    checkpoint writing the spans). `exit_when_final`: the process ends there (what the run
    itself costs, for --instructions)."""
    session = Session([ConcurrentExecutionBackend()])
    for backend in session.backends.values():
        await backend
    if telemetry is not None:
        CHECKPOINTS.mkdir(exist_ok=True)
        options = dict(telemetry)
        subscriber = options.pop("_subscriber", False)
        manager = await session.start_telemetry(**options)
        if subscriber:
            manager.subscribe(lambda event: None)
    tasks = workload(kind, n)
    gc.collect()
    cpu, start = time.process_time(), time.perf_counter()
    futures = await session.submit_tasks(tasks)
    await asyncio.gather(*futures)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if exit_when_final:
        os._exit(0)
    await session.close()
    return elapsed, cpu, time.perf_counter() - start - elapsed


def callback_cost(n: int) -> tuple[float, float]:
    """Microseconds per task of the telemetry callback (it logs) and of the bookkeeping of
    that log: n synthetic tasks through the four transitions a task makes
    (SCHEDULING_PENDING, EXECUTING_PENDING, EXECUTING, DONE)."""
    from rhapsody.telemetry import TelemetryManager

    async def go() -> tuple[float, float]:
        manager = TelemetryManager("bench")
        await manager.start()
        tasks = [{"uid": f"t{i}", "backend": "b", "exit_code": 0} for i in range(n)]
        on_state = manager._on_state
        gc.collect()
        start = time.perf_counter()
        for task in tasks:
            on_state(task, "SCHEDULING_PENDING")
            on_state(task, "EXECUTING_PENDING")
            on_state(task, "EXECUTING")
            on_state(task, "DONE")
        logged = time.perf_counter()
        manager.task_count()  # reading books the log
        booked = time.perf_counter()
        manager.close()
        return (logged - start) / n * 1e6, (booked - logged) / n * 1e6

    return asyncio.run(go())


def instructions(kind: str, n: int, variant: str, whole: bool) -> int:
    """Instructions valgrind counts in a process that runs `n` tasks once with `variant`:
    until its session is closed (`whole`), or until the last task is final."""
    with tempfile.NamedTemporaryFile() as out:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={out.name}",
                sys.executable,
                __file__,
                "--one-run",
                variant,
                kind,
                str(n),
                *([] if whole else ["--exit-when-final"]),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def instructions_per_task(sizes: dict[str, int], names: list[str]) -> Table:
    table = Table(
        title="instructions per task (valgrind: a run of n tasks minus a run of none), until "
        "the last task is final, and until the session is closed (all bookkeeping done)"
    )
    for column in ("workload", "variant", "run", "vs off", "run + close", "vs off"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for kind, n in sizes.items():
        counts: dict[str, list[float]] = {name: [] for name in names}
        for whole in (False, True):
            for name in names:
                total = instructions(kind, n, name, whole) - instructions(kind, 0, name, whole)
                counts[name].append(total / n)
        off = counts["off"]
        for name, (run, closed) in counts.items():
            table.add_row(
                f"{n:,} {kind}",
                name,
                f"{run:,.0f}",
                f"{run / off[0]:.3f}x",
                f"{closed:,.0f}",
                f"{closed / off[1]:.3f}x",
            )
    return table


def spread(values: list[float]) -> str:
    """Median (first quartile - third quartile)."""
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"{median:.3f} ({q1:.3f}-{q3:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--subscriber", action="store_true", help="also: one no-op subscriber")
    parser.add_argument("--checkpoint", action="store_true", help="also: a JSONL checkpoint")
    parser.add_argument(
        "--prometheus", action="store_true", help="also: a Prometheus /metrics endpoint"
    )
    parser.add_argument("--functions", type=int, default=10_000, help="default 10,000")
    parser.add_argument("--executables", type=int, default=1_000, help="default 1,000")
    parser.add_argument("--instructions", action="store_true", help="also: valgrind counts")
    parser.add_argument(
        "--one-run", nargs=3, metavar=("VARIANT", "KIND", "N"), help=argparse.SUPPRESS
    )
    parser.add_argument("--exit-when-final", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_run:  # one measured process of --instructions
        variant, kind, n = args.one_run
        options = None if variant == "off" else VARIANTS[variant]
        asyncio.run(one_run(kind, int(n), options, exit_when_final=args.exit_when_final))
        return
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (medians and quartiles)")
    scale = 10 if args.quick else 1
    sizes = {"functions": args.functions // scale, "executables": args.executables // scale}
    sizes = {kind: n for kind, n in sizes.items() if n > 0}
    variants: dict[str, dict[str, Any] | None] = {"off": None, "on (defaults)": {}}
    if args.subscriber:
        variants["on + subscriber"] = VARIANTS["on + subscriber"]
    if args.checkpoint:
        variants["on + checkpoint"] = VARIANTS["on + checkpoint"]
    if args.prometheus:
        variants["on + Prometheus"] = VARIANTS["on + Prometheus"]
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind")
    table = Table(
        title=f"telemetry overhead: {args.rounds} rounds, median (quartiles); ratios: the "
        "median of each round's own ratio to 'off'"
    )
    for column in (
        "workload",
        "variant",
        "wall s",
        "wall vs off",
        "CPU s",
        "CPU vs off",
        "tasks/s",
        "close s",
    ):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for kind, n in sizes.items():
        for options in variants.values():  # warm-up: imports, thread pool, page cache
            asyncio.run(one_run(kind, n // 10 or 1, options))
        runs: dict[str, list[tuple[float, ...]]] = {name: [] for name in variants}
        for round_number in range(args.rounds):
            order = list(variants.items())
            if round_number % 2:
                order.reverse()
            for name, options in order:
                runs[name].append(asyncio.run(one_run(kind, n, options)))
        off = runs["off"]
        for name, values in runs.items():
            walls, cpus, closes = (list(column) for column in zip(*values, strict=True))
            wall_ratio = [v[0] / o[0] for v, o in zip(values, off, strict=True)]
            cpu_ratio = [v[1] / o[1] for v, o in zip(values, off, strict=True)]
            table.add_row(
                f"{n:,} {kind}",
                name,
                spread(walls),
                spread(wall_ratio) + "x",
                spread(cpus),
                spread(cpu_ratio) + "x",
                f"{n / statistics.median(walls):,.0f}",
                f"{statistics.median(closes):.3f}",
            )
    Console(width=160).print(table)
    costs = [callback_cost(100_000 // scale) for _ in range(args.rounds)]
    logged, booked = zip(*costs, strict=True)
    print(
        f"telemetry callback, 4 transitions per task: {min(logged):.2f} us best, "
        f"{statistics.median(logged):.2f} us median per task; their bookkeeping (in a batch): "
        f"{min(booked):.2f} us best, {statistics.median(booked):.2f} us median"
    )
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.instructions:
        Console(width=160).print(instructions_per_task(sizes, list(variants)))
    shutil.rmtree(CHECKPOINTS, ignore_errors=True)


if __name__ == "__main__":
    main()
