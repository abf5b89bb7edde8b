"""RHAPSODY's `radical_pilot` backend against the plain RADICAL-Pilot API, same pilot, same run.

    python benchmarks/bench_radical.py [--executables 200] [--functions 200] [--rounds 3]
                                       [--cores 4] [--resource local.localhost]

One pilot is started through our backend. The plain variant uses the backend's own
`rp.TaskManager` (RADICAL-Pilot attaches a pilot to one task manager only), submits all tasks
with one `submit_tasks` call and waits with `wait_tasks` (in a thread); function tasks go to the
raptor master our backend started (both variants use the same master and worker), as
`rp.PythonTask`s. The backend's callback sees the plain tasks too and ignores them. Our variant
submits the same tasks as task dicts and awaits their futures. Times run from submission to the
last result; the pilot and raptor start-up are not timed. Variants alternate inside each round
(the order flips every round), so background load hits them alike; the table shows each
variant's median over the rounds.

On `local.localhost` RADICAL-Pilot is run hermetically (`rhapsody_radical.hermetic`, a temporary
HOME) and listens on loopback only (the backend confines local pilots). As root, a private
network namespace also keeps its ports from colliding with other jobs, e.g.
`unshare -n sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/bench_radical.py'`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any

import radical.pilot as rp  # type: ignore[import-untyped]

from rhapsody_radical.backend import RadicalExecutionBackend
from rhapsody_radical.hermetic import hermetic

WAIT = 600.0  # seconds any one variant may take


def trivial(x: int) -> int:
    return x + 1


class Plain:
    """The plain RADICAL-Pilot API on the backend's task manager and pilot."""

    def __init__(self, backend: RadicalExecutionBackend) -> None:
        self.tmgr = backend.task_manager
        self.raptor_uid: str | None = None

    def run(self, descriptions: list[Any]) -> None:
        tasks = self.tmgr.submit_tasks(descriptions)
        self.tmgr.wait_tasks([t.uid for t in tasks], timeout=WAIT)
        bad = [t.uid for t in tasks if t.state != rp.DONE]
        if bad:
            raise RuntimeError(f"plain RADICAL-Pilot: {len(bad)} task(s) not DONE, e.g. {bad[0]}")

    async def executables(self, n: int) -> None:
        tds = [rp.TaskDescription({"executable": "/bin/true"}) for _ in range(n)]
        await asyncio.to_thread(self.run, tds)

    async def functions(self, n: int) -> None:
        tds = [
            rp.TaskDescription(
                {
                    "mode": rp.TASK_FUNCTION,
                    "raptor_id": self.raptor_uid,
                    "function": rp.PythonTask(trivial, (i,), {}),
                }
            )
            for i in range(n)
        ]
        await asyncio.to_thread(self.run, tds)


async def ours(backend: RadicalExecutionBackend, tasks: list[dict[str, Any]]) -> None:
    futures = await backend.submit_tasks(tasks)
    await asyncio.wait_for(asyncio.gather(*futures), WAIT)


async def timed(job: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await job()
    return time.perf_counter() - start


async def main(args: argparse.Namespace) -> None:
    backend = RadicalExecutionBackend(args.resource, cores=args.cores, runtime=60)
    began = time.perf_counter()
    await backend
    print(
        f"pilot active after {time.perf_counter() - began:.1f} s on {args.resource} "
        f"({args.cores} cores)"
    )
    try:
        plain = Plain(backend)
        began = time.perf_counter()
        await ours(backend, [{"function": trivial, "args": [0]}])  # starts raptor
        plain.raptor_uid = backend.raptor_uid
        print(f"raptor up and first function done after {time.perf_counter() - began:.1f} s")
        batch = iter(range(10**6))

        def executables() -> list[dict[str, Any]]:
            b = next(batch)
            return [
                {"uid": f"e{b}.{i}", "executable": "/bin/true"} for i in range(args.executables)
            ]

        def functions() -> list[dict[str, Any]]:
            b = next(batch)
            return [
                {"uid": f"f{b}.{i}", "function": trivial, "args": [i]}
                for i in range(args.functions)
            ]

        variants: dict[str, dict[str, Callable[[], Awaitable[None]]]] = {
            f"{args.executables} x /bin/true": {
                "plain RP": lambda: plain.executables(args.executables),
                "rhapsody": lambda: ours(backend, executables()),
            },
            f"{args.functions} x function": {
                "plain RP": lambda: plain.functions(args.functions),
                "rhapsody": lambda: ours(backend, functions()),
            },
        }
        times: dict[str, dict[str, list[float]]] = {
            w: {"plain RP": [], "rhapsody": []} for w in variants
        }
        for round_ in range(args.rounds):
            for workload, runs in variants.items():
                order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
                for name in order:
                    times[workload][name].append(await timed(runs[name]))
        print(f"\nmedian of {args.rounds} rounds, seconds (tasks/s):")
        print(f"{'workload':<22}{'plain RP':>18}{'rhapsody':>18}{'ratio':>8}")
        for workload, by_variant in times.items():
            n = args.executables if "true" in workload else args.functions
            plain_s = statistics.median(by_variant["plain RP"])
            ours_s = statistics.median(by_variant["rhapsody"])
            print(
                f"{workload:<22}{plain_s:>8.2f} ({n / plain_s:5.1f}/s)"
                f"{ours_s:>8.2f} ({n / ours_s:5.1f}/s){ours_s / plain_s:>7.2f}x"
            )
        print("\nevery round, seconds:")
        for workload, by_variant in times.items():
            for name, seconds in by_variant.items():
                print(f"  {workload:<22}{name:<10}" + " ".join(f"{s:6.2f}" for s in seconds))
    finally:
        await backend.shutdown()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executables", type=int, default=200)
    parser.add_argument("--functions", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--cores", type=int, default=4, help="pilot cores (local.localhost pretends to have them)"
    )
    parser.add_argument("--resource", default="local.localhost")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    with ExitStack() as stack:
        if arguments.resource.startswith("local."):
            home = stack.enter_context(tempfile.TemporaryDirectory(prefix="rhapsody-bench-rp-"))
            stack.enter_context(hermetic(home))
        asyncio.run(main(arguments))
