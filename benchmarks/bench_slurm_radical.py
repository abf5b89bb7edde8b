"""`radical_pilot` on the 3-node SLURM test cluster: our backend, plain RADICAL-Pilot on the same
pilot, and a plain loop of `srun` steps in the pilot's job at the same concurrency.

    tests/slurm/cluster.sh start && export SLURM_CONF=/tmp/rhapsody-slurm/slurm.conf
    python benchmarks/bench_slurm_radical.py [--executables 300] [--mpi 30] [--rounds 3]
                                             [--launch-method mpirun|srun]

One pilot of 3 nodes x 2 cores (6 slots) is submitted through our backend from the platform
description of the tests (`tests/slurm/test_slurm_radical.py`: mpirun starts every task, since
srun cannot start Open MPI's ranks across these nodes; `--launch-method srun --mpi 0` measures
the executables with srun instead). Two workloads: `/bin/true`, and a
3-rank mpi4py program (`tests/slurm/scripts/mpi_hello.py`: MPI_Init, a gather, a check of the
world size). Three variants of each:

- rhapsody: task dicts through `submit_tasks`, awaiting their futures;
- plain RP: the same tasks as `rp.TaskDescription`s on the backend's own task manager (a pilot
  belongs to one task manager), one `submit_tasks`, `wait_tasks` in a thread;
- srun: what a user's script would do in the pilot's allocation without RADICAL-Pilot:
  `srun --jobid=<pilot job> --overlap -N1 -n1 -w <node> /bin/true`, 6 at a time, one per free
  core; the MPI program under `mpirun -np 3` (which starts its daemons with srun steps in that
  job), 2 at a time on 3 cores each: the concurrency the pilot's 6 cores give the others.

Times run from submission to the last result; the pilot's start is not timed. Variants rotate
inside each round, so background load hits them alike; the table shows each one's median.
RADICAL-Pilot runs hermetically (a temporary HOME) and on loopback (RADICAL_DEFAULT_IFACE=lo).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import radical.pilot as rp  # type: ignore[import-untyped]

from rhapsody.platforms import PlatformDescription
from rhapsody.testing.probes import OPEN_MPI_LOOPBACK
from rhapsody_radical.backend import RadicalExecutionBackend
from rhapsody_radical.hermetic import hermetic

WAIT = 900.0  # seconds any one variant may take
NODES = ("n1", "n2", "n3")
CORES_PER_NODE = 2
HELLO = str(Path(__file__).resolve().parents[1] / "tests" / "slurm" / "scripts" / "mpi_hello.py")
MPI_SETUP = [
    "export " + " ".join(f"{name}={value}" for name, value in OPEN_MPI_LOOPBACK.items()),
    "export SLURM_EXPORT_ENV=ALL",
]
VSLURM = PlatformDescription(
    resource_manager="slurm",
    name="vslurm",
    partition="debug",
    cores_per_node=CORES_PER_NODE,
    mem_per_node=3,
    launch_method="mpirun",
    env_setup=MPI_SETUP,
)
# Where the two concurrent 3-rank runs of the srun variant go: 6 cores, none shared.
MPI_HOSTS = ("n1:2,n2:1", "n2:1,n3:2")


def executable(n: int) -> dict[str, Any]:
    return {"executable": "/bin/true"}


def mpi(n: int) -> dict[str, Any]:
    return {"executable": sys.executable, "arguments": [HELLO, "3"], "ranks": 3}


class Plain:
    """The plain RADICAL-Pilot API on the backend's task manager and pilot."""

    def __init__(self, backend: RadicalExecutionBackend) -> None:
        self.tmgr = backend.task_manager

    def _run(self, descriptions: list[Any]) -> int:
        tasks = self.tmgr.submit_tasks(descriptions)
        self.tmgr.wait_tasks([t.uid for t in tasks], timeout=WAIT)
        unfinished = [t.uid for t in tasks if t.state not in rp.FINAL]
        if unfinished:
            raise RuntimeError(f"plain RADICAL-Pilot: {len(unfinished)} task(s) still running")
        return failed([t.stderr for t in tasks if t.state != rp.DONE])

    async def run(self, make: Callable[[int], dict[str, Any]], n: int) -> int:
        descriptions = [rp.TaskDescription(make(i)) for i in range(n)]
        return await asyncio.to_thread(self._run, descriptions)


def failed(stderrs: list[Any]) -> int:
    """How many failed; the first one's error is shown (they are counted in the table)."""
    if stderrs:
        tail = str(stderrs[0]).strip().splitlines()[-8:]
        print(f"    {len(stderrs)} failed, e.g.:", *tail, sep="\n      ")
    return len(stderrs)


async def ours(backend: RadicalExecutionBackend, tasks: list[dict[str, Any]]) -> int:
    futures = await backend.submit_tasks(tasks)
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), WAIT)
    errors = [r for r in results if isinstance(r, BaseException)]
    return failed([f"{e}\n{getattr(e, 'stderr', None) or ''}" for e in errors])


async def _launch(argv: list[str], env: dict[str, str]) -> str | None:
    """None, or the error of a failed launch."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        return f"{' '.join(argv)} exited with {proc.returncode}: {err.decode()}"
    return None


async def srun_loop(job: str, n: int) -> int:
    """n steps of /bin/true in the pilot's job, one per free core (6 at a time)."""
    free = asyncio.Queue[str]()
    for node in NODES:
        for _ in range(CORES_PER_NODE):
            free.put_nowait(node)

    async def one() -> str | None:
        node = await free.get()
        try:
            return await _launch(
                ["srun", f"--jobid={job}", "--overlap", "-N1", "-n1", "-w", node, "/bin/true"],
                dict(os.environ),
            )
        finally:
            free.put_nowait(node)

    errors = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), WAIT)
    return failed([e for e in errors if e is not None])


async def mpirun_loop(job: str, n: int) -> int:
    """n runs of the MPI program under mpirun in the pilot's job, 2 at a time on 3 cores each."""
    env = {
        **os.environ,
        **OPEN_MPI_LOOPBACK,
        # what mpirun reads to find the allocation, and to start its daemons in it with srun
        "SLURM_JOB_ID": job,
        "SLURM_JOBID": job,
        "SLURM_NODELIST": "n[1-3]",
        "SLURM_JOB_NODELIST": "n[1-3]",
        "SLURM_TASKS_PER_NODE": f"{CORES_PER_NODE}(x{len(NODES)})",
        "SLURM_OVERLAP": "1",
    }
    free = asyncio.Queue[str]()
    for hosts in MPI_HOSTS:
        free.put_nowait(hosts)

    async def one() -> str | None:
        hosts = await free.get()
        try:
            argv = ["mpirun", "-np", "3", "-host", hosts, sys.executable, HELLO, "3"]
            return await _launch(argv, env)
        finally:
            free.put_nowait(hosts)

    errors = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), WAIT)
    return failed([e for e in errors if e is not None])


def pilot_job(backend: RadicalExecutionBackend) -> str:
    """The pilot's SLURM job id, as its agent's environment recorded it in the sandbox."""
    sandbox = Path(str(backend.pilot.pilot_sandbox).removeprefix("file://localhost"))
    for line in (sandbox / "env" / "bs0_orig.env").read_text().splitlines():
        if line.startswith("SLURM_JOB_ID="):
            return line.partition("=")[2].strip("'\"")
    raise RuntimeError(f"no SLURM_JOB_ID in {sandbox}/env/bs0_orig.env")


async def timed(job: Callable[[], Awaitable[int]]) -> tuple[float, int]:
    """The seconds `job` took, and how many of its tasks failed."""
    start = time.perf_counter()
    failures = await job()
    return time.perf_counter() - start, failures


async def main(args: argparse.Namespace) -> None:
    backend = RadicalExecutionBackend(
        platform=VSLURM, nodes=len(NODES), runtime=60, launch_method=args.launch_method
    )
    began = time.perf_counter()
    await backend
    job = pilot_job(backend)
    print(
        f"pilot active after {time.perf_counter() - began:.1f} s: SLURM job {job}, 3 nodes, "
        f"tasks started with {args.launch_method}"
    )
    try:
        plain = Plain(backend)
        workloads: dict[str, dict[str, Callable[[], Awaitable[int]]]] = {
            f"{args.executables} x /bin/true": {
                "rhapsody": lambda: ours(backend, [executable(i) for i in range(args.executables)]),
                "plain RP": lambda: plain.run(executable, args.executables),
                "srun": lambda: srun_loop(job, args.executables),
            },
            f"{args.mpi} x 3-rank MPI": {
                "rhapsody": lambda: ours(backend, [mpi(i) for i in range(args.mpi)]),
                "plain RP": lambda: plain.run(mpi, args.mpi),
                "srun": lambda: mpirun_loop(job, args.mpi),
            },
        }
        variants = {w: runs for w, runs in workloads.items() if not w.startswith("0 x")}
        times: dict[str, dict[str, list[float]]] = {
            w: {name: [] for name in runs} for w, runs in variants.items()
        }
        failures = {w: dict.fromkeys(runs, 0) for w, runs in variants.items()}
        for round_ in range(args.rounds):
            for workload, runs in variants.items():
                names = list(runs)
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    seconds, failures_now = await timed(runs[name])
                    times[workload][name].append(seconds)
                    failures[workload][name] += failures_now
                    print(f"  round {round_ + 1} {workload:<18}{name:<10}{seconds:7.2f} s")
        counts = {
            f"{args.executables} x /bin/true": args.executables,
            f"{args.mpi} x 3-rank MPI": args.mpi,
        }
        print(f"\nmedian of {args.rounds} rounds, seconds (tasks/s):")
        print(
            f"{'workload':<20}{'rhapsody':>17}{'plain RP':>17}{'srun':>17}"
            f"{'vs RP':>8}{'vs srun':>9}"
        )
        for workload, by_variant in times.items():
            n = counts[workload]
            med = {name: statistics.median(s) for name, s in by_variant.items()}
            cells = "".join(
                f"{med[v]:>8.2f} ({n / med[v]:5.1f}/s)" for v in ("rhapsody", "plain RP", "srun")
            )
            print(
                f"{workload:<20}{cells}{med['rhapsody'] / med['plain RP']:>7.2f}x"
                f"{med['rhapsody'] / med['srun']:>8.2f}x"
            )
        print("\nfailed tasks over all rounds (launches that failed; counted in the times):")
        for workload, by_variant in failures.items():
            print(f"  {workload:<20}" + "  ".join(f"{v} {k}" for v, k in by_variant.items()))
    finally:
        began = time.perf_counter()
        await backend.shutdown()
        print(f"\nshutdown took {time.perf_counter() - began:.1f} s")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executables", type=int, default=300)
    parser.add_argument("--mpi", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--launch-method",
        default="mpirun",
        choices=["mpirun", "srun"],
        help="how the agent starts tasks; srun cannot start the MPI workload here (use --mpi 0)",
    )
    args = parser.parse_args()
    if args.launch_method == "srun" and args.mpi:
        parser.error("srun cannot start Open MPI's ranks across the test cluster: add --mpi 0")
    return args


if __name__ == "__main__":
    arguments = parse()
    if not os.environ.get("SLURM_CONF"):
        sys.exit("set SLURM_CONF to the cluster's slurm.conf (tests/slurm/cluster.sh start)")
    with tempfile.TemporaryDirectory(prefix="rhapsody-bench-slurm-") as home, hermetic(home):
        os.environ["RADICAL_DEFAULT_IFACE"] = "lo"
        asyncio.run(main(arguments))
