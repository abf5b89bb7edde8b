"""Fault-injection soak through every installed backend, plus each backend's own crash mode.

A seeded fraction of the tasks exits non-zero, is SIGKILLed from outside, outlives its timeout,
is cancelled, or depends on one of those; every task must end exactly once, as injected, with
the matching reason, and nothing may be left running (`rhapsody.testing.faults`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import psutil
import pytest
from reliability_support import (
    SOAK_SIZES,
    WAIT,
    installed_backends,
    no_new_children,
    started,
)

import rhapsody
from rhapsody.errors import TaskExecutionError
from rhapsody.testing import InvariantRecorder
from rhapsody.testing.faults import FAULT_KINDS, FaultPlan, FaultSoak

pytestmark = pytest.mark.anyio

SEED = 20_260_501


@pytest.mark.parametrize("name", installed_backends())
async def test_every_injected_fault_is_accounted_for(name: str, tmp_path: Path) -> None:
    # noop runs nothing, so nothing in it can fail or be stopped: its soak checks the
    # accounting of plain tasks and dependencies, and that late cancels are refused.
    kinds = () if name == "noop" else FAULT_KINDS
    plan = FaultPlan.random(SOAK_SIZES.get(name, 200), seed=SEED, kinds=kinds)
    with no_new_children(tmp_path):
        async with started(name, tmp_path / "work") as backend:
            report = await FaultSoak(backend, plan, tmp_path / "pids", wait_timeout=WAIT).run()
    report.assert_ok()
    injected = plan.counts()
    assert {k: r.injected for k, r in report.kinds.items()} == injected
    assert all(injected.get(kind, 0) > 0 for kind in kinds), injected  # each kind exercised


def crash() -> None:
    os._exit(1)


def square(x: int) -> int:
    return x * x


async def test_concurrent_survives_a_crashing_function_process(tmp_path: Path) -> None:
    with no_new_children():
        async with started("concurrent", tmp_path / "work", cores=4) as backend:
            futures = await backend.submit_tasks(
                [
                    {"uid": "crash", "function": crash, "isolation": "process"},
                    *({"uid": f"ok.{i}", "function": square, "args": [i]} for i in range(3)),
                ]
            )
            results: list[Any] = await asyncio.wait_for(
                asyncio.gather(*futures, return_exceptions=True), WAIT
            )
            assert isinstance(results[0], TaskExecutionError)
            assert "worker process exit code 1 before returning a result" in str(results[0])
            assert [r["return_value"] for r in results[1:]] == [0, 1, 4]
            # and the backend keeps serving, isolated processes included
            after = await backend.submit_tasks(
                [{"uid": "after", "function": square, "args": [7], "isolation": "process"}]
            )
            assert (await asyncio.wait_for(after[0], WAIT))["return_value"] == 49


def dask_workers() -> list[psutil.Process]:
    """The embedded cluster's worker processes (children of this process, where the nannies
    run), which name themselves `dask worker [address]`."""
    workers = []
    for proc in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if proc.cmdline()[0].startswith("dask worker"):
                workers.append(proc)
    return workers


@pytest.mark.skipif(not rhapsody.discover_backends().get("dask"), reason="dask not installed")
async def test_dask_loses_no_task_when_a_worker_is_killed(tmp_path: Path) -> None:
    tasks = [
        {"uid": f"w.{i:03d}", "executable": "/bin/sleep", "arguments": ["0.2"]} for i in range(100)
    ]
    with no_new_children():
        async with started("dask", tmp_path / "work") as backend:
            recorder = InvariantRecorder(backend, "w.")
            recorder.track(tasks)
            futures = await backend.submit_tasks(tasks)
            while len(recorder.started) < 10:  # noqa: ASYNC110 - a callback-fed set
                await asyncio.sleep(0.02)
            [victim, *_] = dask_workers()
            victim.kill()
            results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), WAIT)
            recorder.check_final(dict(futures.items()))
            recorder.assert_ok()
            # each task was rerun by dask on a live worker, or failed saying the worker died
            for result in results:
                if isinstance(result, BaseException):
                    assert "the dask worker running the task died" in str(result), result
                else:
                    assert result["state"] == "DONE"
            after = await backend.submit_tasks([{"uid": "after", "executable": "/bin/true"}])
            assert (await asyncio.wait_for(after[0], WAIT))["state"] == "DONE"


@pytest.mark.skipif(not rhapsody.discover_backends().get("dask"), reason="dask not installed")
async def test_dask_timeout_counts_from_the_start_not_from_submission(tmp_path: Path) -> None:
    # One worker thread: the second and third task wait ~1 s and ~2 s for it, then run 1 s
    # each, well within their 1.8 s timeout.
    tasks = [
        {"uid": f"q.{i}", "executable": "/bin/sleep", "arguments": ["1"], "timeout": 1.8}
        for i in range(3)
    ]
    async with started("dask", tmp_path / "work", n_workers=1, threads_per_worker=1) as backend:
        futures = await backend.submit_tasks(tasks)
        results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), WAIT)
    assert [r if isinstance(r, BaseException) else r["state"] for r in results] == ["DONE"] * 3
