"""rhapsody-py's free-form dask worker resources, `task_backend_specific_kwargs["resources"]`
(issue 16, item 9), written as a user of the original writes them: `ComputeTask`s awaited
after `backend.submit_tasks`, on real dask clusters whose workers declare resources."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("distributed", reason="the dask backend needs dask.distributed")

import cloudpickle
from distributed import Nanny, Scheduler, SpecCluster

from rhapsody import ComputeTask, Session
from rhapsody.backends import DaskExecutionBackend
from rhapsody.errors import ResourceError, TaskExecutionError, TaskValidationError

pytestmark = pytest.mark.anyio

# The workers cannot import this test module: ship its functions by value (a user's script is
# `__main__`, which cloudpickle ships by value anyway).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT = 60.0  # bound on every wait: a failure, never a hang


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def where(seconds: float = 0.0) -> tuple[str, float, float]:
    """The address of the worker that ran it, and when it ran there."""
    from distributed import get_worker

    start = time.time()
    time.sleep(seconds)
    return get_worker().address, start, time.time()


@pytest.fixture
async def cluster(tmp_path: Any) -> AsyncIterator[SpecCluster]:
    """Two workers of two threads that declare `cores` (as dask-jobqueue's do here); only
    `special` declares free-form resources."""
    worker = {"nthreads": 2, "host": "127.0.0.1", "local_directory": str(tmp_path)}
    specs = {
        "plain": {"cls": Nanny, "options": {**worker, "resources": {"cores": 2}}},
        "special": {
            "cls": Nanny,
            "options": {**worker, "resources": {"cores": 2, "MEMORY": 8e9, "foo": 1}},
        },
    }
    scheduler = {
        "cls": Scheduler,
        "options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
    }
    async with SpecCluster(workers=specs, scheduler=scheduler, asynchronous=True) as cluster:
        await cluster.wait_for_workers(2)
        yield cluster


def special_address(cluster: SpecCluster) -> str:
    workers = cluster.scheduler.workers.items()  # the scheduler runs in this process
    [address] = [address for address, w in workers if "foo" in w.resources]
    return address


async def test_tasks_run_only_on_workers_declaring_their_resources(cluster: SpecCluster) -> None:
    backend = await DaskExecutionBackend(cluster=cluster)
    try:
        tasks = [
            ComputeTask(
                function=where,
                args=[0.3],
                task_backend_specific_kwargs={"resources": {"foo": 1, "MEMORY": 4e9}},
            )
            for _ in range(4)
        ]
        await backend.submit_tasks(tasks)
        results = await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
    finally:
        await backend.shutdown()
    special = special_address(cluster)
    assert {r.return_value[0] for r in results} == {special}
    # 'foo': 1 on a worker of two free threads: dask ran them one at a time
    spans = sorted(r.return_value[1:] for r in results)
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans))


async def test_resources_are_merged_with_the_tasks_cores(cluster: SpecCluster) -> None:
    backend = await DaskExecutionBackend(cluster=cluster)
    try:
        both = ComputeTask(
            function=where, cores=2, task_backend_specific_kwargs={"resources": {"MEMORY": 4e9}}
        )
        too_many = ComputeTask(
            function=where, cores=3, task_backend_specific_kwargs={"resources": {"foo": 1}}
        )
        await backend.submit_tasks([both, too_many])
        done, failed = await asyncio.wait_for(
            asyncio.gather(both, too_many, return_exceptions=True), WAIT
        )
    finally:
        await backend.shutdown()
    assert done.return_value[0] == special_address(cluster)
    assert isinstance(failed, TaskExecutionError)
    assert "no worker of the dask cluster can run it: it asks for 3 core(s)" in str(failed)


async def test_a_resource_no_worker_declares_fails_saying_so(cluster: SpecCluster) -> None:
    backend = await DaskExecutionBackend(cluster=cluster)
    try:
        tasks = [
            ComputeTask(function=where, task_backend_specific_kwargs={"resources": wanted})
            for wanted in ({"GPU_A100": 1}, {"foo": 2})
        ]
        await backend.submit_tasks(tasks)
        errors = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT)
    finally:
        await backend.shutdown()
    assert [task.state for task in tasks] == ["FAILED", "FAILED"]
    for error, asked in zip(errors, ("{'GPU_A100': 1}", "{'foo': 2}"), strict=True):
        assert isinstance(error, TaskExecutionError)
        assert (
            f"no worker of the dask cluster can run it: it asks for the worker resources {asked}, "
            "and none of the 2 worker(s) connected declares them "
            "(declared: {'MEMORY': 8000000000, 'foo': 1})"
        ) in str(error)


def test_the_local_cluster_of_the_original_declares_resources_and_checks_them() -> None:
    async def main() -> None:
        backend = await DaskExecutionBackend(
            resources={"n_workers": 1, "threads_per_worker": 2, "resources": {"foo": 2}}
        )
        try:
            fits = ComputeTask(
                function=where, cores=2, task_backend_specific_kwargs={"resources": {"foo": 2}}
            )
            await backend.submit_tasks([fits])
            assert (await asyncio.wait_for(fits, WAIT)).state == "DONE"
            for wanted in ({"foo": 3}, {"bar": 1}):
                task = ComputeTask(
                    function=where, task_backend_specific_kwargs={"resources": wanted}
                )
                with pytest.raises(ResourceError, match="asks for the dask worker resources") as e:
                    await backend.submit_tasks([task])
                assert f"task {task.uid!r}" in str(e.value)
                assert "each worker of the embedded dask cluster declares {'foo': 2}" in str(
                    e.value
                )
        finally:
            await backend.shutdown()

    asyncio.run(main())


MALFORMED = [
    ("MEMORY", "must be a dict of dask worker resource names to amounts"),
    ({"foo": -1}, "the amount of 'foo' must be a positive number, got -1"),
    ({"foo": 0}, "the amount of 'foo' must be a positive number, got 0"),
    ({"foo": "lots"}, "the amount of 'foo' must be a positive number, got 'lots'"),
    ({"foo": True}, "the amount of 'foo' must be a positive number, got True"),
    ({"foo": float("nan")}, "the amount of 'foo' must be a positive number, got nan"),
    ({1: 1}, "resource names must be non-empty strings"),
    ({"cores": 2}, "'cores' is the dask backend's own resource"),
    ({"gpus": 1}, "'gpus' is the dask backend's own resource"),
]


def test_malformed_resources_are_refused_naming_the_task_and_the_field() -> None:
    async def main() -> None:
        backend = await DaskExecutionBackend(resources={"n_workers": 1, "threads_per_worker": 1})
        try:
            for resources, message in MALFORMED:
                task = ComputeTask(
                    executable="/bin/true", task_backend_specific_kwargs={"resources": resources}
                )
                with pytest.raises(TaskValidationError) as caught:
                    await backend.submit_tasks([task])
                assert caught.value.task_uid == task.uid
                assert "task_backend_specific_kwargs" in str(caught.value)
                assert message in str(caught.value)
        finally:
            await backend.shutdown()

    asyncio.run(main())


def test_malformed_worker_resources_of_the_local_cluster_are_refused() -> None:
    with pytest.raises(ValueError, match="'cores' is the dask backend's own resource"):
        DaskExecutionBackend(resources={"resources": {"cores": 4}})
    with pytest.raises(ValueError, match="the amount of 'foo' must be a positive number"):
        DaskExecutionBackend(resources={"resources": {"foo": -1}})


def test_concurrent_refuses_resources_instead_of_ignoring_them() -> None:
    async def main() -> None:
        async with Session() as session:  # the concurrent backend
            task = ComputeTask(
                executable="/bin/true", task_backend_specific_kwargs={"resources": {"foo": 1}}
            )
            with pytest.raises(TaskValidationError, match="on the dask backend only") as caught:
                await session.submit_tasks([task])
            assert caught.value.task_uid == task.uid

    asyncio.run(main())


def test_radical_pilot_refuses_resources_as_an_unknown_field() -> None:
    pytest.importorskip("rhapsody_radical")
    from rhapsody.task import TaskDescription
    from rhapsody_radical.translate import check

    task = TaskDescription.from_dict(
        {"executable": "/bin/true", "task_backend_specific_kwargs": {"resources": {"foo": 1}}},
        "t",
    )
    with pytest.raises(TaskValidationError, match="unknown RADICAL-Pilot field"):
        check(task)
