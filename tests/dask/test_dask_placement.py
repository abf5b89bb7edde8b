"""Where dask runs a task (docs/backends/dask.md, "Resources and GPUs"): when a task's `cores`
become a dask resource restriction (the `restrict_cores` rules), what a restriction does, and a
task too big for the workers the backend last saw running on a bigger one that joined since.

What the scheduler holds for a task is read from the scheduler itself while the task runs."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed", reason="the dask backend needs dask.distributed")

import anyio
import cloudpickle
from distributed import Scheduler, Worker, get_worker

from rhapsody.errors import TaskExecutionError
from rhapsody.states import DONE, EXECUTING
from rhapsody_dask import backend as dask_backend
from rhapsody_dask.backend import DaskExecutionBackend

pytestmark = pytest.mark.anyio

# The workers cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT = 60.0  # bound on every wait: a failure, never a hang
LOOPBACK = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def wait_for_file(path: str) -> str:
    """Runs until `path` exists (bounded), then returns the worker's name."""
    deadline = time.monotonic() + WAIT
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return str(get_worker().name)


def meet(directory: str, me: str, other: str) -> bool:
    """Marks `me` as running, then waits (bounded) for `other`: True if both ran at once."""
    Path(directory, me).touch()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if Path(directory, other).exists():
            return True
        time.sleep(0.02)
    return False


def timed_nap(seconds: float) -> tuple[float, float]:
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def restrictions_of(dask_scheduler: Scheduler, marker: str) -> dict[str, dict[str, float]]:
    """The resource restrictions the scheduler holds for each task whose key has `marker`."""
    return {
        str(key): dict(state.resource_restrictions or {})
        for key, state in dask_scheduler.tasks.items()
        if marker in str(key)
    }


async def until(condition: Callable[[], Any]) -> None:
    # Polls: the condition is set by the backend's callbacks.
    with anyio.fail_after(WAIT):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def restriction_while_running(
    backend: DaskExecutionBackend, uid: str, gate: Path
) -> dict[str, float]:
    """Runs a 1-core task `uid` and returns what the scheduler restricts it to."""
    task = {"uid": uid, "function": wait_for_file, "args": [str(gate)]}
    [future] = await backend.submit_tasks([task])
    try:
        await until(lambda: task.get("state") == EXECUTING)
        assert backend.client is not None
        seen = await backend.client.run_on_scheduler(restrictions_of, marker=f"-{uid}-")
    finally:
        gate.touch()
        with anyio.fail_after(WAIT):
            await future
    assert len(seen) == 1, f"one key for {uid!r}, not {seen}"
    [restriction] = seen.values()
    return restriction


@asynccontextmanager
async def scheduler_with(*workers: dict[str, Any]) -> AsyncIterator[Scheduler]:
    """An in-process scheduler and workers (each `Worker` keyword arguments), on loopback."""
    async with AsyncExitStack() as stack:
        scheduler = await stack.enter_async_context(Scheduler(port=0, **LOOPBACK))
        for options in workers:
            await stack.enter_async_context(Worker(scheduler.address, host="127.0.0.1", **options))
        yield scheduler


# -- the restrict_cores rules --------------------------------------------------------------------
EMBEDDED = [
    # one thread per worker: a thread is a core; unrestricted tasks keep dask's queuing
    pytest.param({"n_workers": 2, "threads_per_worker": 1}, {}, id="1-thread-workers"),
    pytest.param({"n_workers": 1, "threads_per_worker": 2}, {"cores": 1}, id="2-thread-workers"),
    pytest.param(
        {"n_workers": 1, "threads_per_worker": 2, "restrict_cores": False}, {}, id="forced-off"
    ),
    pytest.param(
        {"n_workers": 2, "threads_per_worker": 1, "restrict_cores": True},
        {"cores": 1},
        id="forced-on",
    ),
]


@pytest.mark.parametrize(("options", "restricted"), EMBEDDED)
async def test_embedded_cluster_restricts_by_cores_when_workers_have_several_threads(
    options: dict[str, Any], restricted: dict[str, float], tmp_path: Path
) -> None:
    async with DaskExecutionBackend(**options) as backend:
        seen = await restriction_while_running(backend, "probed", tmp_path / "gate")
    assert seen == restricted


DECLARING = {"nthreads": 1, "resources": {"cores": 1}}
PLAIN = {"nthreads": 1}
ELSEWHERE = [
    pytest.param([DECLARING, DECLARING], None, {"cores": 1}, id="every-worker-declares-cores"),
    pytest.param([DECLARING, PLAIN], None, {}, id="one-worker-declares-none"),
    pytest.param([DECLARING, DECLARING], False, {}, id="forced-off"),
    pytest.param([DECLARING, PLAIN], True, {"cores": 1}, id="forced-on"),
]


@pytest.mark.parametrize(("workers", "restrict", "restricted"), ELSEWHERE)
async def test_address_cluster_restricts_by_cores_when_every_worker_declares_them(
    workers: list[dict[str, Any]],
    restrict: bool | None,
    restricted: dict[str, float],
    tmp_path: Path,
) -> None:
    async with scheduler_with(*workers) as scheduler:
        backend = DaskExecutionBackend(address=scheduler.address, restrict_cores=restrict)
        async with backend:
            seen = await restriction_while_running(backend, "probed", tmp_path / "gate")
        assert seen == restricted


async def test_restrict_cores_on_workers_that_declare_none_fails_clearly() -> None:
    # Forced on, a task needs a worker declaring `cores`: none does, so it cannot run anywhere
    # (rather than waiting in dask's no-worker state for ever).
    async with scheduler_with(PLAIN) as scheduler:
        backend = DaskExecutionBackend(address=scheduler.address, restrict_cores=True)
        async with backend:
            task = {"uid": "t", "function": timed_nap, "args": [0]}
            [future] = await backend.submit_tasks([task])
            with anyio.fail_after(WAIT), pytest.raises(TaskExecutionError) as caught:
                await future
    assert "no worker of the dask cluster can run it: it asks for 1 core(s)" in str(caught.value)
    assert "has 0 core(s) and 0 GPU(s)" in str(caught.value)


# -- what a restriction does ---------------------------------------------------------------------
TWO_CORES = {"nthreads": 2, "resources": {"cores": 2}}


async def test_restricted_tasks_hold_their_cores_on_the_worker() -> None:
    # One worker of 2 threads declaring 2 cores: 2-core tasks run one after the other.
    async with scheduler_with(TWO_CORES) as scheduler:
        backend = DaskExecutionBackend(address=scheduler.address)
        async with backend:
            tasks = [
                {"uid": f"big.{i}", "function": timed_nap, "args": [0.5], "cores": 2}
                for i in range(2)
            ]
            futures = await backend.submit_tasks(tasks)
            with anyio.fail_after(WAIT):
                await asyncio.gather(*futures)
    (_, end_a), (start_b, _) = sorted(t["return_value"] for t in tasks)
    assert end_a <= start_b, f"two 2-core tasks overlapped on 2 cores: {tasks}"


async def test_unrestricted_tasks_share_the_workers_threads(tmp_path: Path) -> None:
    # The same worker with restrict_cores=False: a thread is all a task gets, so the two 2-core
    # tasks run at once, on its two threads (each waits until it sees the other).
    async with scheduler_with(TWO_CORES) as scheduler:
        backend = DaskExecutionBackend(address=scheduler.address, restrict_cores=False)
        async with backend:
            tasks = [
                {"uid": me, "function": meet, "args": [str(tmp_path), me, other], "cores": 2}
                for me, other in (("a", "b"), ("b", "a"))
            ]
            futures = await backend.submit_tasks(tasks)
            with anyio.fail_after(WAIT * 2):
                await asyncio.gather(*futures)
    assert [t["return_value"] for t in tasks] == [True, True], "they did not run at once"


# -- workers that join -----------------------------------------------------------------------------
async def test_a_task_too_big_for_the_workers_seen_runs_on_one_that_joined_since(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The backend keeps the workers' sizes for a while (here: for the whole test), so the
    # 2-core task is first judged against the 1-core worker seen earlier; asked again, the
    # scheduler names the 2-core worker that joined meanwhile, and the task runs there.
    monkeypatch.setattr(dask_backend, "_WORKER_INFO_AGE", 3600.0)
    async with scheduler_with({**DECLARING, "name": "one"}) as scheduler:
        backend = DaskExecutionBackend(address=scheduler.address)
        async with backend:
            small = {"uid": "small", "function": wait_for_file, "args": ["/"]}
            await asyncio.wait_for(asyncio.gather(*await backend.submit_tasks([small])), WAIT)
            assert small["return_value"] == "one"
            async with Worker(scheduler.address, host="127.0.0.1", name="two", **TWO_CORES):
                big = {"uid": "big", "function": wait_for_file, "args": ["/"], "cores": 2}
                [future] = await backend.submit_tasks([big])
                with anyio.fail_after(WAIT):
                    await future
                assert big["state"] == DONE and big["return_value"] == "two"
