"""What telemetry costs: the same workloads through a `Session` on `concurrent`, telemetry off vs
on (`session.start_telemetry()` with its defaults: 5 s resource polling, no subscribers, no
exporters), side by side. Rounds interleave the variants, in alternating order, so that drift on
the machine hits all of them.

    python benchmarks/bench_telemetry.py                 # 10,000 functions, 1,000 executables
    python benchmarks/bench_telemetry.py --quick         # a tenth of each
    python benchmarks/bench_telemetry.py --rounds 7      # medians of 7 rounds (default 5)
    python benchmarks/bench_telemetry.py --subscriber --checkpoint   # heavier set-ups too
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
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


def workload(kind: str, n: int) -> list[dict[str, Any]]:
    if kind == "functions":
        return [{"uid": f"f{i}", "function": trivial, "args": [i]} for i in range(n)]
    return [{"uid": f"e{i}", "executable": "/bin/true"} for i in range(n)]


async def one_round(kind: str, n: int, telemetry: dict[str, Any] | None) -> tuple[float, float]:
    """Seconds from submission until every task is final, and seconds of `session.close()`
    (with telemetry: ending it, which makes the spans of every attempt)."""
    session = Session([ConcurrentExecutionBackend()])
    for backend in session.backends.values():
        await backend
    if telemetry is not None:
        subscriber = telemetry.pop("_subscriber", False)
        manager = await session.start_telemetry(**telemetry)
        if subscriber:
            manager.subscribe(lambda event: None)
    tasks = workload(kind, n)
    gc.collect()
    start = time.perf_counter()
    futures = await session.submit_tasks(tasks)
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - start
    await session.close()
    return elapsed, time.perf_counter() - start - elapsed


def callback_cost(n: int) -> float:
    """Microseconds the telemetry callback adds per task: n synthetic tasks through the four
    transitions a task makes (SCHEDULING_PENDING, EXECUTING_PENDING, EXECUTING, DONE)."""
    from rhapsody.telemetry import TelemetryManager

    async def go() -> float:
        manager = TelemetryManager("bench")
        await manager.start()
        tasks = [{"uid": f"t{i}", "backend": "b", "exit_code": 0} for i in range(n)]
        on_state = manager._on_state
        start = time.perf_counter()
        for task in tasks:
            on_state(task, "SCHEDULING_PENDING")
            on_state(task, "EXECUTING_PENDING")
            on_state(task, "EXECUTING")
            on_state(task, "DONE")
        elapsed = time.perf_counter() - start
        manager.close()
        return elapsed / n * 1e6

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--subscriber", action="store_true", help="also: one no-op subscriber")
    parser.add_argument("--checkpoint", action="store_true", help="also: a JSONL checkpoint")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    sizes = {"functions": 10_000 // scale, "executables": 1_000 // scale}
    variants: dict[str, dict[str, Any] | None] = {"off": None, "on (defaults)": {}}
    tmp = Path(tempfile.mkdtemp(prefix="bench-telemetry-"))
    if args.subscriber:
        variants["on + subscriber"] = {"_subscriber": True}
    if args.checkpoint:
        variants["on + checkpoint"] = {"checkpoint_path": tmp}
    table = Table(title=f"telemetry overhead, {args.rounds} rounds (best / median seconds)")
    for column in ("workload", "variant", "best s", "median s", "tasks/s (median)",
                   "median vs off", "close s (median)"):
        table.add_column(column, justify="right" if column != "variant" else "left")
    for kind, n in sizes.items():
        times: dict[str, list[float]] = {name: [] for name in variants}
        closes: dict[str, list[float]] = {name: [] for name in variants}
        for round_number in range(args.rounds):
            order = list(variants.items())
            if round_number % 2:  # alternate the order too: drift within a round cancels out
                order.reverse()
            for name, options in order:
                copy = None if options is None else dict(options)
                elapsed, closing = asyncio.run(one_round(kind, n, copy))
                times[name].append(elapsed)
                closes[name].append(closing)
        off = statistics.median(times["off"])
        for name, values in times.items():
            median = statistics.median(values)
            table.add_row(
                f"{n:,} {kind}",
                name,
                f"{min(values):.3f}",
                f"{median:.3f}",
                f"{n / median:,.0f}",
                f"{median / off:.3f}x",
                f"{statistics.median(closes[name]):.3f}",
            )
    Console(width=150).print(table)
    costs = [callback_cost(100_000 // scale) for _ in range(args.rounds)]
    print(
        f"telemetry callback, 4 transitions per task: {min(costs):.2f} us best, "
        f"{statistics.median(costs):.2f} us median per task"
    )


if __name__ == "__main__":
    main()
