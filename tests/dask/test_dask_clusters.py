"""The clusters the dask backend runs on: an external scheduler, a cluster object, GPU
workers, workers killed mid-task, and a shutdown that leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import operator
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed", reason="the dask backend needs dask.distributed")

import anyio
import cloudpickle
import dask
import psutil
from distributed import Client, Scheduler, SpecCluster, Worker, get_worker
from distributed.core import Status

import rhapsody
from rhapsody.errors import TaskExecutionError
from rhapsody.states import DONE, EXECUTING
from rhapsody_dask.backend import DaskExecutionBackend

pytestmark = pytest.mark.anyio

# The workers cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT = 60.0  # bound on every wait: a failure, never a hang
LOOPBACK = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def run(backend: DaskExecutionBackend, *tasks: dict[str, Any]) -> list[Any]:
    futures = await backend.submit_tasks(list(tasks))
    with anyio.fail_after(WAIT):
        return await asyncio.gather(*futures, return_exceptions=True)


async def until(condition: Callable[[], Any]) -> Any:
    # Polls: the conditions are set by callbacks and by processes outside this loop.
    with anyio.fail_after(WAIT):
        while not (value := condition()):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return value


def processes_with(marker: str) -> list[psutil.Process]:
    """Live processes with `marker` among their arguments."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if marker in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def running_worker(marker: str, killed: set[int]) -> int | None:
    """The pid of the live worker process (our child) whose task runs `sleep marker`."""
    workers = {p.pid for p in psutil.Process().children()} - killed
    for proc in processes_with(marker):
        with contextlib.suppress(psutil.Error):  # it may have ended meanwhile
            if proc.ppid() in workers:
                return proc.ppid()
    return None


def worker_name() -> str:
    return str(get_worker().name)


def note_pid_then_sleep(path: str, seconds: float) -> int:
    with open(path, "a") as notes:
        notes.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return os.getpid()


async def test_address_connects_to_a_scheduler_it_never_shuts_down() -> None:
    async with (
        Scheduler(port=0, **LOOPBACK) as scheduler,
        Worker(scheduler.address, nthreads=1, host="127.0.0.1"),
    ):
        backend = await rhapsody.get_backend("dask", address=scheduler.address)
        function = {"function": operator.add, "args": [2, 3]}
        executable = {"executable": "/bin/echo", "arguments": ["external"]}
        await run(backend, function, executable)
        assert function["return_value"] == 5 and executable["stdout"] == "external\n"
        with anyio.fail_after(WAIT):
            await backend.shutdown()
        assert scheduler.status == Status.running
        async with Client(scheduler.address, asynchronous=True) as client:
            assert await client.submit(operator.mul, 6, 7) == 42


async def test_cluster_object_and_gpu_routing() -> None:
    options = {"nthreads": 1, "host": "127.0.0.1"}
    workers = {
        "cpu": {"cls": Worker, "options": {**options, "resources": {"cores": 1}}},
        "gpu": {"cls": Worker, "options": {**options, "resources": {"cores": 1, "gpus": 1}}},
    }
    scheduler = {"cls": Scheduler, "options": LOOPBACK}
    async with SpecCluster(workers=workers, scheduler=scheduler, asynchronous=True) as cluster:
        backend = await DaskExecutionBackend(cluster=cluster)
        gpu_tasks = [{"function": worker_name, "gpus": 1} for _ in range(4)]
        any_tasks = [{"function": worker_name} for _ in range(4)]
        await run(backend, *gpu_tasks, *any_tasks)
        assert [t["return_value"] for t in gpu_tasks] == ["gpu"] * 4
        assert all(t["state"] == DONE for t in any_tasks)
        with anyio.fail_after(WAIT):
            await backend.shutdown()
        assert cluster.status == Status.running  # its owner closes it


async def test_workers_that_join_after_the_start_decide_the_placement() -> None:
    # A batch-queued cluster: no worker when the backend starts, a 2-core one later. Whether
    # tasks are restricted by cores is decided when each is sent, from the workers then.
    async with Scheduler(port=0, **LOOPBACK) as scheduler:
        backend = await DaskExecutionBackend(address=scheduler.address)
        waiting = {"function": worker_name, "cores": 2}
        [future] = await backend.submit_tasks([waiting])
        await asyncio.sleep(0.3)
        assert not future.done()  # no worker yet: it waits, neither run nor failed
        options = {"nthreads": 2, "host": "127.0.0.1", "resources": {"cores": 2}}
        async with Worker(scheduler.address, name="two", **options):
            with anyio.fail_after(WAIT):
                await future
            assert waiting["return_value"] == "two"
            too_big = {"uid": "big", "executable": "/bin/true", "cores": 3}
            [error] = await run(backend, too_big)
            assert isinstance(error, TaskExecutionError)
            assert "no worker of the dask cluster can run it: it asks for 3 core(s)" in str(error)
            assert "the largest of the 1 worker(s) connected has 2 core(s)" in str(error)
            with anyio.fail_after(WAIT):
                await backend.shutdown()


async def test_a_multi_core_task_never_oversubscribes_workers_without_cores() -> None:
    # Plain workers (no `cores` resource), one thread each: a 2-core task gets a clear failure
    # instead of running on one thread; 1-core tasks run.
    async with (
        Scheduler(port=0, **LOOPBACK) as scheduler,
        Worker(scheduler.address, nthreads=1, host="127.0.0.1"),
    ):
        backend = await DaskExecutionBackend(address=scheduler.address)
        small = {"function": operator.add, "args": [1, 2]}
        large = {"function": operator.add, "args": [1, 2], "cores": 2}
        done, error = await run(backend, small, large)
        assert done["return_value"] == 3
        assert isinstance(error, TaskExecutionError)
        assert "has 1 core(s) and 0 GPU(s) (threads, as the workers declare no 'cores'" in str(
            error
        )
        with anyio.fail_after(WAIT):
            await backend.shutdown()


async def test_worker_killed_mid_task(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A killed worker's task is retried by dask; killed again, it fails with a clear reason.
    The backend keeps serving, and its shutdown leaves no process and prints nothing."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    # Dask retries a task whose worker died once, and gives up when a second one dies.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        backend = await DaskExecutionBackend(n_workers=2, threads_per_worker=1, work_dir=tmp_path)
    notes = tmp_path / "pids"
    retried = {"function": note_pid_then_sleep, "args": [str(notes), 1.5]}
    [future] = await backend.submit_tasks([retried])
    first = int((await until(lambda: notes.exists() and notes.read_text())).split()[0])
    os.kill(first, signal.SIGKILL)
    with anyio.fail_after(WAIT):
        assert (await future) is retried
    assert retried["return_value"] != first and retried["state"] == DONE

    marker = "61.8034"  # a sleep no other process on this machine runs
    doomed = {"executable": "/bin/sleep", "arguments": [marker]}
    [future] = await backend.submit_tasks([doomed])
    killed: set[int] = set()
    for _ in range(2):  # kill whichever worker runs it, twice
        worker = await until(lambda: running_worker(marker, killed))
        killed.add(worker)
        os.kill(worker, signal.SIGKILL)
    with anyio.fail_after(WAIT):
        error = (await asyncio.gather(future, return_exceptions=True))[0]
    assert isinstance(error, TaskExecutionError)
    assert "the dask worker running the task died" in str(error)

    [after] = await run(backend, {"executable": "/bin/echo", "arguments": ["still serving"]})
    assert after["stdout"] == "still serving\n"

    # Shut down while a function and an executable run and more tasks wait.
    busy = [
        {"function": time.sleep, "args": [30]},
        {"executable": "/bin/sleep", "arguments": [marker]},
        *({"executable": "/bin/true"} for _ in range(4)),
    ]
    futures = await backend.submit_tasks(busy)
    await until(lambda: sum(t.get("state") == EXECUTING for t in busy) == 2)
    capfd.readouterr()  # what the kills above made dask say is not the shutdown's
    with anyio.fail_after(WAIT):
        await backend.shutdown()
    # Everything unfinished is cancelled. Dask does not keep submission order, so a /bin/true
    # may have run (and be DONE) before both sleeps started.
    states = [(t["uid"], t.get("executable"), t["state"]) for t in busy]
    assert futures[0].cancelled() and futures[1].cancelled(), states
    assert all(f.cancelled() or t["state"] == DONE for f, t in zip(futures, busy, strict=True)), (
        states
    )
    assert capfd.readouterr().err == ""
    leftover = [
        p for p in psutil.Process().children(recursive=True) if p.pid not in before and alive(p)
    ]
    assert not leftover, leftover
    # Including the sleeps orphaned by the killed workers.
    await until(lambda: not processes_with(marker))
