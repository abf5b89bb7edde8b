"""Reliability soak: fault injection per backend, memory over many tasks, event-loop lag.

    python benchmarks/soak.py                          # full sizes, concurrent + noop + dask
    python benchmarks/soak.py --backends concurrent,noop
    python benchmarks/soak.py --quick                  # a tenth of each size
    python benchmarks/soak.py --backends radical_pilot --no-load   # a hermetic local pilot

Prints Markdown tables (the ones in docs/reliability.md):
  1. per backend and fault kind (rhapsody.testing.faults): tasks injected, accounted for (one
     final state with the injected reason), lost, and the median / worst time to recover;
  2. RSS growth over 200,000 noop tasks and 20,000 concurrent tasks, submitted in batches
     whose futures are dropped (after a warm-up);
  3. the worst lag of a 10 ms heartbeat coroutine while 10,000 concurrent tasks are pending.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

import rhapsody
from rhapsody.testing.faults import FAULT_KINDS, FaultPlan, FaultSoak, KindReport
from rhapsody.testing.load import Heartbeat, memory_growth

SOAK_SIZES = {"concurrent": 10_000, "noop": 10_000, "dask": 2_000, "radical_pilot": 200}
OPTIONS: dict[str, dict[str, Any]] = {
    "concurrent": {"cores": 64},  # the fault tasks mostly sleep: fake slots
    "dask": {"n_workers": 2, "threads_per_worker": 4},
    # as the CI soak: RADICAL-Pilot rounds the 6 cores up to 8 here; runtime in minutes
    "radical_pilot": {"cores": 6, "raptor_worker_cores": 2, "runtime": 60, "start_timeout": 300},
}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


async def fault_soak(name: str, n: int, seed: int, scratch: Path) -> list[str]:
    kinds = () if name == "noop" else FAULT_KINDS
    plan = FaultPlan.random(n, seed=seed, kinds=kinds)
    with contextlib.ExitStack() as stack:
        if name == "radical_pilot":  # a scratch HOME and no time server: the pilot inherits it
            from rhapsody_radical.hermetic import hermetic

            stack.enter_context(hermetic(scratch / "rp-home"))
        options = OPTIONS.get(name, {})
        backend = await rhapsody.get_backend(name, work_dir=scratch / "work", **options)
        try:
            report = await FaultSoak(backend, plan, scratch / "pids", wait_timeout=3600).run()
        finally:
            await backend.shutdown()
    rows = []
    for kind in ("ok", *kinds):
        r = report.kinds.get(kind, KindReport())
        rows.append(
            f"| {name} | {kind} | {r.injected} | {r.accounted} | {r.lost} | "
            f"{_ms(r.recover_median())} / {_ms(r.recover_max())} |"
        )
    rows.append(
        f"| {name} | **all** ({report.seconds:.1f} s) | {n} | "
        f"{sum(r.accounted for r in report.kinds.values())} | {report.lost} | |"
    )
    for problem in report.problems[:20]:
        print("PROBLEM:", problem)
    return rows


async def load(scale: float) -> list[str]:
    rows = []
    noop = await rhapsody.get_backend("noop")
    try:
        n = int(200_000 * scale)
        growth = await memory_growth(noop, n, lambda i: {"function": print}, batch=1_000)
    finally:
        await noop.shutdown()
    rows.append(_growth_row("noop", growth))
    concurrent = await rhapsody.get_backend("concurrent")
    try:
        n = int(20_000 * scale)
        growth = await memory_growth(
            concurrent, n, lambda i: {"executable": "/bin/true"}, batch=500, warmup=1_000
        )
        rows.append(_growth_row("concurrent (/bin/true)", growth))
        n = int(10_000 * scale)
        started = time.perf_counter()
        async with Heartbeat(0.01) as beat:
            futures = await concurrent.submit_tasks([{"executable": "/bin/true"} for _ in range(n)])
            await asyncio.gather(*futures)
        seconds = time.perf_counter() - started
    finally:
        await concurrent.shutdown()
    rows.append(
        f"| heartbeat lag, {n:,} concurrent tasks pending | worst {beat.worst * 1000:.0f} ms "
        f"({beat.beats} beats over {seconds:.1f} s) |"
    )
    return rows


def _growth_row(what: str, growth: Any) -> str:
    return (
        f"| RSS growth, {growth.tasks:,} {what} tasks | "
        f"{(growth.rss_end - growth.rss_start) / 2**20:+.1f} MiB "
        f"({growth.per_task:.0f} B/task; {growth.rss_start / 2**20:.0f} -> "
        f"{growth.rss_end / 2**20:.0f} MiB) |"
    )


async def main(args: argparse.Namespace) -> None:
    found = rhapsody.discover_backends()
    names = [n for n in args.backends.split(",") if n]
    print(
        f"machine: {platform.node()}, {psutil.cpu_count()} CPUs "
        f"({len(os.sched_getaffinity(0))} usable), {psutil.virtual_memory().total / 2**30:.0f} GiB,"
        f" Python {platform.python_version()}, seed {args.seed}\n"
    )
    print("| backend | fault | injected | accounted for | lost | recover (median / worst) |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for name in names:
        if not found.get(name):
            print(f"| {name} | not installed | | | | |")
            continue
        n = max(50, int(SOAK_SIZES.get(name, 200) * args.scale))
        with tempfile.TemporaryDirectory(prefix=f"soak-{name}-") as scratch:
            for row in await fault_soak(name, n, args.seed, Path(scratch)):
                print(row, flush=True)
    if not args.no_load:
        print("\n| load | figure |\n| --- | --- |")
        for row in await load(args.scale):
            print(row, flush=True)


if __name__ == "__main__":  # dask spawns its workers: they import this module
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="concurrent,noop,dask")
    parser.add_argument("--seed", type=int, default=20_260_501)
    parser.add_argument("--quick", dest="scale", action="store_const", const=0.1, default=1.0)
    parser.add_argument("--no-load", action="store_true", help="skip the memory and lag figures")
    asyncio.run(main(parser.parse_args()))
