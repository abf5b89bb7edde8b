"""Throughput of trivial AsyncFlow function tasks through three backends, side by side.

    python benchmarks/bench_asyncflow.py                 # 1,000 tasks, 5 rounds
    python benchmarks/bench_asyncflow.py --tasks 200 --rounds 3

Every round runs each backend in a fresh process with the same workload, through AsyncFlow
0.6.0's `WorkflowEngine` unchanged; the backends take turns, so load from elsewhere on the
machine spreads over all of them:
  * `rhapsody concurrent`   - this repository's ConcurrentExecutionBackend;
  * `asyncflow local`       - AsyncFlow's own LocalExecutionBackend (ThreadPoolExecutor);
  * `rhapsody-py concurrent` - the original RHAPSODY's ConcurrentExecutionBackend, installed
    with AsyncFlow in benchmarks/.venv-rhapsody-py (created on first use; gitignored).
A round submits N independent `async def` tasks at once and waits for all of them; the time
runs from the first task call to the last result. Engine start and shutdown are not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".venv-rhapsody-py"
PEER_PACKAGES = ("rhapsody-py", "radical-asyncflow==0.6.0")
ASYNCFLOW = "radical.asyncflow"


# -- the worker: runs in a fresh process, prints one JSON line ----------------------------------
async def _make_backend(kind: str) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    if kind == "rhapsody":
        from rhapsody.backends.execution import ConcurrentExecutionBackend

        return await ConcurrentExecutionBackend()
    if kind == "asyncflow":
        from radical.asyncflow import LocalExecutionBackend

        return await LocalExecutionBackend(ThreadPoolExecutor())
    if kind == "rhapsody-py":  # the original's documented use, in its own venv
        from rhapsody.backends import ConcurrentExecutionBackend as PeerBackend

        return await PeerBackend(ThreadPoolExecutor())
    raise ValueError(f"unknown backend kind {kind!r}")


async def _round(kind: str, tasks: int, work_dir: str) -> float:
    from radical.asyncflow import WorkflowEngine

    backend = await _make_backend(kind)
    flow = await WorkflowEngine.create(backend=backend, work_dir=work_dir)

    @flow.function_task
    async def trivial(i: int) -> int:
        return i

    start = time.perf_counter()
    results = await asyncio.gather(*(trivial(i) for i in range(tasks)))
    elapsed = time.perf_counter() - start
    assert results == list(range(tasks)), "wrong results"
    await flow.shutdown()
    return elapsed


def worker(kind: str, tasks: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-asyncflow-") as work_dir:
        print(json.dumps({"seconds": asyncio.run(_round(kind, tasks, work_dir))}))


# -- the driver ---------------------------------------------------------------------------------
def _peer_python() -> Path:
    """The rhapsody-py venv's interpreter, creating the venv or adding AsyncFlow as needed."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PEER_VENV} ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(PEER_VENV)
    probe = subprocess.run(
        [python, "-c", f"import rhapsody.backends, {ASYNCFLOW}"], capture_output=True, cwd="/"
    )
    if probe.returncode != 0:
        print(f"installing {' '.join(PEER_PACKAGES)} into {PEER_VENV} ...", file=sys.stderr)
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", *PEER_PACKAGES], check=True, timeout=900
        )
    return python


def _run_worker(python: Path | str, kind: str, tasks: int) -> float:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the peer must not see this repository's `rhapsody`
    out = subprocess.run(
        [python, str(Path(__file__).resolve()), "--worker", kind, "--tasks", str(tasks)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd="/",
        env=env,
    )
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    seconds: float = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    return seconds


def _version(python: Path | str, dist: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd="/")
    return out.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.tasks)
        return

    peer = _peer_python()
    runs: list[tuple[str, Path | str, str, str]] = [
        ("rhapsody concurrent", sys.executable, "rhapsody", "rhapsody-core"),
        ("asyncflow local", sys.executable, "asyncflow", "radical.asyncflow"),
        ("rhapsody-py concurrent", peer, "rhapsody-py", "rhapsody-py"),
    ]
    print(
        f"{args.tasks} trivial AsyncFlow function tasks, {args.rounds} rounds each, "
        f"radical.asyncflow {_version(sys.executable, 'radical.asyncflow')}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    times: dict[str, list[float]] = {label: [] for label, *_ in runs}
    for _ in range(args.rounds):
        for label, python, kind, _dist in runs:
            times[label].append(_run_worker(python, kind, args.tasks))
    header = f"{'backend':<24}{'version':>10}{'best s':>10}{'median s':>10}{'tasks/s':>10}"
    print(header)
    print("-" * len(header))
    for label, python, _kind, dist in runs:
        best = min(times[label])
        print(
            f"{label:<24}{_version(python, dist):>10}{best:>10.3f}"
            f"{statistics.median(times[label]):>10.3f}{args.tasks / best:>10.0f}"
        )


if __name__ == "__main__":
    main()
