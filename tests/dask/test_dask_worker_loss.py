"""Every worker of an `address=` cluster lost after tasks were sent: dask would hold them for
ever; the backend fails them once no worker has been connected for `no_worker_timeout` seconds,
and a worker connecting again serves the next tasks. (The same on SLURM, with the workers' jobs
cancelled: tests/slurm/test_slurm_dask_faults.py.)"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed", reason="the dask backend needs dask.distributed")

import anyio
import cloudpickle
from distributed import Scheduler, Worker

from rhapsody.errors import TaskExecutionError
from rhapsody.states import CANCELED, DONE, EXECUTING, FAILED
from rhapsody_dask.backend import DaskExecutionBackend

pytestmark = pytest.mark.anyio

cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT = 60.0
LOOPBACK = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def wait_for_file(path: str) -> None:
    deadline = time.monotonic() + WAIT
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


async def until(condition: Any) -> None:
    with anyio.fail_after(WAIT):
        while not condition():  # noqa: ASYNC110  # polling state the backend sets
            await asyncio.sleep(0.05)


async def test_tasks_held_when_every_worker_is_lost_fail_within_the_bound(
    tmp_path: Path,
) -> None:
    gate = str(tmp_path / "gate")  # frees the lost worker's thread at the end
    async with Scheduler(port=0, **LOOPBACK) as scheduler:
        worker = await Worker(scheduler.address, nthreads=1, host="127.0.0.1")
        backend = await DaskExecutionBackend(address=scheduler.address, no_worker_timeout=1)
        finals: dict[str, list[str]] = {}
        ran: set[str] = set()

        def record(task: dict[str, Any], state: str) -> None:
            if state == EXECUTING:
                ran.add(task["uid"])
            elif state in (DONE, FAILED, CANCELED):
                finals.setdefault(task["uid"], []).append(state)

        backend.register_callback(record)
        try:
            held = {"uid": "held", "function": wait_for_file, "args": [gate]}
            queued = {"uid": "queued", "function": wait_for_file, "args": [gate]}
            dependent = {"uid": "dependent", "function": time.time, "dependencies": ["held"]}
            futures = await backend.submit_tasks([held, queued, dependent])
            await until(lambda: held.get("state") == EXECUTING)
            await worker.close(executor_wait=False)
            with anyio.fail_after(WAIT):
                held_r, queued_r, dependent_r = await asyncio.gather(
                    *futures, return_exceptions=True
                )
            for result in (held_r, queued_r):
                assert isinstance(result, TaskExecutionError), result
                assert "every dask worker was lost" in str(result)
                assert "no_worker_timeout=1 s" in str(result)
            assert isinstance(dependent_r, TaskExecutionError)
            assert "dependency 'held' failed" in str(dependent_r)
            assert "dependent" not in ran

            # Sent while no worker is back: fails at once.
            (late,) = await backend.submit_tasks([{"uid": "late", "function": time.time}])
            with pytest.raises(TaskExecutionError, match="every dask worker was lost"):
                with anyio.fail_after(WAIT):
                    await late

            # A worker connecting again ends it: the next task runs.
            async with Worker(scheduler.address, nthreads=1, host="127.0.0.1"):
                await until(lambda: len(scheduler.workers) == 1)
                back = {"uid": "back", "function": time.time}
                with anyio.fail_after(WAIT):
                    await (await backend.submit_tasks([back]))[0]
                assert back["state"] == DONE
                with anyio.fail_after(WAIT):
                    await backend.shutdown()
        finally:
            Path(gate).touch()
    assert finals == {
        "held": [FAILED],
        "queued": [FAILED],
        "dependent": [FAILED],
        "late": [FAILED],
        "back": [DONE],
    }


async def test_no_worker_timeout_is_validated() -> None:
    with pytest.raises(ValueError, match="no_worker_timeout must be >= 0 seconds, got -1"):
        DaskExecutionBackend(address="tcp://127.0.0.1:1", no_worker_timeout=-1)
