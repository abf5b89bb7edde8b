"""Resource rows from where tasks run: a backend that defines `sample_resources` (dask: every
worker's node) adds its nodes' rows to the client's own."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import anyio
import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs rhapsody-core[telemetry]")
pytest.importorskip("distributed", reason="needs rhapsody-dask")

from rhapsody.session import Session
from rhapsody.telemetry import ResourceUpdate
from rhapsody.telemetry.resources import sample_this_node


def test_sample_this_node_has_a_node_row_and_no_gpu_rows_without_gpus() -> None:
    rows = sample_this_node()
    assert rows[0]["node_id"] == socket.gethostname()
    assert rows[0]["gpu_id"] is None
    assert 0 <= rows[0]["memory_percent"] <= 100
    gpu_rows = rows[1:]
    try:
        import pynvml

        pynvml.nvmlInit()
        expected = pynvml.nvmlDeviceGetCount()
    except Exception:  # no driver, no GPU, no nvidia-ml-py: no GPU rows
        expected = 0
    assert len(gpu_rows) == expected
    for row in gpu_rows:
        assert 0 <= row["gpu_percent"] <= 100 and 0 <= row["gpu_memory_percent"] <= 100


def test_dask_workers_report_their_nodes() -> None:
    from rhapsody_dask.backend import DaskExecutionBackend

    async def go() -> tuple[list[Any], list[ResourceUpdate], str]:
        backend = DaskExecutionBackend(n_workers=2, threads_per_worker=1)
        session = Session([backend])
        await backend
        manager = await session.start_telemetry(resource_poll_interval=0.3)
        updates: list[ResourceUpdate] = []
        manager.subscribe(lambda e: updates.append(e) if isinstance(e, ResourceUpdate) else None)
        direct = await backend.sample_resources()
        futures = await session.submit_tasks([{"executable": "/bin/true"} for _ in range(4)])
        await asyncio.gather(*futures)
        for _ in range(100):  # a few polls: generous for a loaded machine
            if any(u.backend == backend.name for u in updates):
                break
            await asyncio.sleep(0.1)
        await session.close()
        return direct, updates, backend.name

    direct, updates, name = asyncio.run(go())
    # Both workers answer, each with its node's rows.
    assert len({row["worker"] for row in direct}) == 2
    assert {row["node_id"] for row in direct} == {socket.gethostname()}
    # The workers run on this host: one row per node and round, not one per worker.
    rounds: dict[float, list[ResourceUpdate]] = {}
    for update in updates:
        rounds.setdefault(update.event_time, []).append(update)
    for rows in rounds.values():
        keys = [(u.node_id, u.gpu_id) for u in rows]
        assert len(keys) == len(set(keys))
    # This host's row is the workers' (they run the tasks), naming the backend and a worker.
    from_workers = [u for u in updates if u.backend == name and u.gpu_id is None]
    assert from_workers, "no resource sample from the dask workers arrived"
    assert from_workers[0].attributes["worker"].startswith("tcp://127.0.0.1:")
    assert from_workers[0].cpu_percent is not None


def test_dask_task_spans_name_the_worker_node_not_the_client() -> None:
    from rhapsody_dask.backend import DaskExecutionBackend

    async def go() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        backend = DaskExecutionBackend(n_workers=1, threads_per_worker=1)
        session = Session([backend])
        # The client's node named otherwise: a span naming this host got it from the worker.
        manager = await session.start_telemetry(node_id="the-client")
        tasks = [
            {"uid": "e", "executable": "/bin/true"},
            {"uid": "f", "function": abs, "args": [-1]},
            {"uid": "s", "executable": "/bin/sleep", "arguments": ["3"]},
        ]
        futures = await session.submit_tasks(tasks)
        with anyio.fail_after(60):
            while tasks[2].get("state") != "EXECUTING":  # noqa: ASYNC110 - the engine's dict
                await asyncio.sleep(0.01)
        running = manager.running_attempts()  # the dashboard's open bars: known at the start
        await asyncio.gather(*futures)
        await session.close()
        return tasks, manager.task_spans(), running

    tasks, spans, running = asyncio.run(go())
    here = socket.gethostname()
    assert [task["node"] for task in tasks] == [here] * 3
    assert sorted((s["task_id"], s["node"]) for s in spans) == [(u, here) for u in "efs"]
    assert [(r["task_id"], r["node_id"]) for r in running] == [("s", here)]
