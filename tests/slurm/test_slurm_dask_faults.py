"""Faults of dask on SLURM: a node lost mid-run while its dask worker runs there as a SLURM job
(`scontrol update nodename=n2 state=down`: slurmctld kills the node's jobs), and every worker
lost after tasks were sent (their jobs cancelled). Every task reaches exactly one final state,
the rest of the workflow completes, nothing hangs and no job is left in squeue."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slurm_support import CPUS_PER_NODE, NODES, Cluster

pytest.importorskip("dask_jobqueue", reason="needs rhapsody-dask[jobqueue]")

import anyio

from rhapsody.errors import TaskExecutionError
from rhapsody.platforms import PlatformDescription
from rhapsody.states import CANCELED, DONE, FAILED
from rhapsody_dask.backend import DaskExecutionBackend
from rhapsody_dask.jobqueue import cluster_for

pytestmark = [pytest.mark.slurm, pytest.mark.anyio]

WAIT = 120.0
FINAL = {DONE, FAILED, CANCELED}
VSLURM = PlatformDescription(
    resource_manager="slurm",
    name="vslurm",
    partition="debug",
    cores_per_node=CPUS_PER_NODE,
    mem_per_node=3,
)
LOST = "n2"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def jobqueue(
    slurm: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Any]:
    """A SLURMCluster of one 2-thread worker per job (declaring cores=2); closed after the
    test, which cancels its jobs (a requeued one included)."""
    monkeypatch.setenv("SLURM_CONF", slurm.conf)
    cluster = await cluster_for(
        VSLURM,
        asynchronous=True,
        processes=1,
        scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
        worker_extra_args=["--host", "127.0.0.1"],
        local_directory=str(tmp_path),
        log_directory=str(tmp_path),
    )
    try:
        yield cluster
    finally:
        await cluster.close()


def final_states(backend: DaskExecutionBackend) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}

    def record(task: dict[str, Any], state: str) -> None:
        if state in FINAL:
            seen.setdefault(task["uid"], []).append(state)

    backend.register_callback(record)
    return seen


async def until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT:g} s for {what}")
        await asyncio.sleep(0.1)


def wait_for_other_jobs_to_leave(slurm: Cluster, node: str, ours: set[str]) -> None:
    """Downing a node kills every job on it: let another session's jobs there finish first."""
    deadline = time.monotonic() + WAIT
    while True:
        out = slurm.run("squeue", "-h", "-w", node, "-o", "%i", timeout=30).stdout.split()
        if not set(out) - ours:
            return
        if time.monotonic() > deadline:
            pytest.skip(f"other jobs keep running on {node}; downing it would kill them")
        time.sleep(1)


async def test_a_node_lost_mid_run_reruns_its_tasks_and_the_workflow_completes(
    slurm: Cluster, jobqueue: Any, tmp_path: Path
) -> None:
    jobqueue.scale(jobs=len(NODES))
    try:
        async with DaskExecutionBackend(cluster=jobqueue) as backend:
            assert backend.client is not None
            with anyio.fail_after(WAIT):
                await backend.client.wait_for_workers(len(NODES))
            seen = final_states(backend)
            # Each task notes each node it starts on, and runs long enough to be caught there.
            tasks = [
                {
                    "uid": f"work.{i}",
                    "executable": "/bin/sh",
                    "arguments": [
                        "-c",
                        f"echo $SLURMD_NODENAME >> {tmp_path}/work.{i}; sleep 3; "
                        "echo $SLURMD_NODENAME",
                    ],
                    "cores": CPUS_PER_NODE,  # one at a time per worker: 2 rounds on 3 nodes
                }
                for i in range(2 * len(NODES))
            ]
            after = [
                {"uid": f"after.{i}", "executable": "/bin/true", "dependencies": [f"work.{i}"]}
                for i in range(len(tasks))
            ]
            futures = await backend.submit_tasks([*tasks, *after])

            def started_on_lost() -> list[str]:
                return [
                    p.name for p in tmp_path.glob("work.*") if LOST in p.read_text().split()
                ]

            await until(started_on_lost, f"a task to start on {LOST}")
            ours = {job.job_id for job in jobqueue.workers.values()}
            wait_for_other_jobs_to_leave(slurm, LOST, ours)
            slurm.run(
                "scontrol", "update", f"nodename={LOST}", "state=down", "reason=rhapsody-test"
            )
            with anyio.fail_after(WAIT):
                results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        # Back in service for the next test (ReturnToService=2 may have done it already).
        resume(slurm)
    # Exactly one final state each; a task caught on the lost node was run again by dask on a
    # worker that remains (its output names that node), or failed saying its worker died; the
    # rest completed. (A task that ended on n2 before the loss reports n2.)
    assert sorted(seen) == sorted(t["uid"] for t in [*tasks, *after])
    assert all(len(states) == 1 for states in seen.values()), seen
    on_lost = started_on_lost()
    caught = []
    for task, result in zip(tasks, results[: len(tasks)], strict=True):
        if isinstance(result, TaskExecutionError):
            assert task["uid"] in on_lost and "the dask worker running the task died" in str(result)
            caught.append(task["uid"])
        else:
            assert result["state"] == DONE
            if task["uid"] in on_lost and result["stdout"].strip() != LOST:
                caught.append(task["uid"])
    assert caught, "no task was caught on the lost node"
    for task, result in zip(tasks, results[len(tasks) :], strict=True):
        if isinstance(results[tasks.index(task)], TaskExecutionError):
            assert isinstance(result, TaskExecutionError) and "dependency" in str(result)
        else:
            assert result["state"] == DONE


def resume(slurm: Cluster) -> None:
    subprocess.run(
        ["scontrol", "update", f"nodename={LOST}", "state=resume"],
        env=slurm.env,
        capture_output=True,
        timeout=30,
    )


async def test_every_worker_lost_fails_the_tasks_it_held_within_the_bound(
    slurm: Cluster, jobqueue: Any
) -> None:
    jobqueue.scale(jobs=1)
    async with DaskExecutionBackend(cluster=jobqueue, no_worker_timeout=2) as backend:
        assert backend.client is not None
        with anyio.fail_after(WAIT):
            await backend.client.wait_for_workers(1)
        seen = final_states(backend)
        # A function task: it dies with its worker's process (an executable's own session
        # would outlive a job killed under proctrack/linuxproc).
        held = {"uid": "held", "function": time.sleep, "args": [60]}
        queued = {"uid": "queued", "function": time.sleep, "args": [60]}  # waits for a thread
        dependent = {"uid": "dependent", "executable": "/bin/true", "dependencies": ["held"]}
        futures = await backend.submit_tasks([held, queued, dependent])
        await until(lambda: held.get("state") == "EXECUTING", "the held task to start")
        (job,) = jobqueue.workers.values()
        slurm.run("scancel", job.job_id)
        with anyio.fail_after(WAIT):
            results = await asyncio.gather(*futures, return_exceptions=True)
        # Sent after the loss: fails at once instead of waiting for a worker that never comes.
        (late,) = await backend.submit_tasks([{"uid": "late", "executable": "/bin/true"}])
        with anyio.fail_after(WAIT):
            late_result = await asyncio.gather(late, return_exceptions=True)
    held_result, queued_result, dependent_result = results
    for result in (held_result, queued_result, *late_result):
        assert isinstance(result, TaskExecutionError), result
        assert "every dask worker was lost" in str(result)
        assert "no_worker_timeout=2 s" in str(result)
    assert isinstance(dependent_result, TaskExecutionError)
    assert "dependency 'held' failed" in str(dependent_result)
    assert seen == {uid: [FAILED] for uid in ("held", "queued", "dependent", "late")}
