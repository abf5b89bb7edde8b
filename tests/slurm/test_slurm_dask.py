"""dask on the SLURM cluster: workers as SLURM jobs, built from a `PlatformDescription` by
`rhapsody_dask.jobqueue.cluster_for` (dask-jobqueue's SLURMCluster), one per node; multi-core
tasks placed on workers that have the cores, and a task larger than any worker failed clearly."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from slurm_support import CPUS_PER_NODE, NODES, Cluster

pytest.importorskip("dask_jobqueue", reason="needs rhapsody-dask[jobqueue]")

import anyio

from rhapsody.errors import TaskExecutionError
from rhapsody.platforms import PlatformDescription
from rhapsody_dask.backend import DaskExecutionBackend
from rhapsody_dask.jobqueue import cluster_for

pytestmark = [pytest.mark.slurm, pytest.mark.anyio]

WAIT = 120.0
VSLURM = PlatformDescription(
    resource_manager="slurm",
    name="vslurm",
    partition="debug",
    cores_per_node=CPUS_PER_NODE,
    mem_per_node=3,  # GB; a job asking more than a node's RealMemory (4000 MB) is refused
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# What each task reports: the node its worker runs on (a job step's SLURMD_NODENAME). Only
# executables and library functions: the workers cannot import the test modules, and dask
# pickles a function of this module by reference.
NODE_AFTER_A_WHILE = {
    "executable": "/bin/sh",
    "arguments": ["-c", "sleep 0.5; echo $SLURMD_NODENAME"],
}


async def test_workers_as_jobs_run_multi_core_tasks_on_every_node(
    slurm: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", slurm.conf)
    cluster = await cluster_for(
        VSLURM,
        asynchronous=True,
        processes=1,  # one worker of 2 threads per node: it declares cores=2
        scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
        worker_extra_args=["--host", "127.0.0.1"],
        local_directory=str(tmp_path),
        log_directory=str(tmp_path),
    )
    try:
        cluster.scale(jobs=len(NODES))
        async with DaskExecutionBackend(cluster=cluster) as backend:
            assert backend.client is not None
            with anyio.fail_after(WAIT):
                await backend.client.wait_for_workers(len(NODES))
            tasks = [
                {**NODE_AFTER_A_WHILE, "cores": CPUS_PER_NODE} for _ in range(2 * len(NODES))
            ]
            tasks.append({"function": os.getenv, "args": ["SLURMD_NODENAME"], "cores": 2})
            tasks.append({"uid": "too.big", "executable": "/bin/true", "cores": 3})
            futures = await backend.submit_tasks(tasks)
            with anyio.fail_after(WAIT):
                results = await asyncio.gather(*futures, return_exceptions=True)
        *done, function, too_big = results
        # 2-core tasks on 2-core workers, one per node: every node ran some.
        assert {task["stdout"].strip() for task in done} == set(NODES)
        assert function["return_value"] in NODES
        assert isinstance(too_big, TaskExecutionError)
        assert "asks for 3 core(s) and 0 GPU(s), the largest of the 3 worker(s)" in str(too_big)
    finally:
        await cluster.close()
