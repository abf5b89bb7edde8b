"""The engine's invariants under random graphs, delays, failures, cancellations and resources.

A fault-injecting backend (no processes, so hypothesis can run hundreds of examples) exercises
the same engine every real backend uses.
"""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

from rhapsody.backends.base import BaseExecutionBackend, ExecutionContext, Outcome
from rhapsody.resources import ResourcePool
from rhapsody.task import TaskDescription
from rhapsody.testing import BackendConformance
from rhapsody.testing.machine import loop_caller, run_state_machine


class FlakyBackend(BaseExecutionBackend):
    """Sleeps `delay` and fails when told to, through `task_backend_specific_kwargs`."""

    backend_name = "flaky"

    def __init__(self) -> None:
        super().__init__(resources=ResourcePool(3, ["0", "1"]))

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        options = task.backend_kwargs
        await asyncio.sleep(options.get("queue_delay", 0))
        ctx.started()
        await asyncio.sleep(options.get("delay", 0))
        if options.get("fail"):
            return Outcome.failure("injected failure", exit_code=1)
        return Outcome(True, return_value=ctx.gpu_ids)


def flaky_task(kind: str) -> dict[str, Any]:
    options = {
        "ok": {"delay": 0.0},
        "fail": {"delay": 0.001, "fail": True},
        "slow": {"delay": 0.02, "queue_delay": 0.005},
        "long": {"delay": 10.0, "queue_delay": 0.005},  # the kit cancels it while it runs
    }[kind]
    return {"function": print, "task_backend_specific_kwargs": options}


def test_engine_invariants_hold_for_random_graphs() -> None:
    loop = asyncio.new_event_loop()
    call = loop_caller(loop)
    backend = FlakyBackend()
    try:
        call(backend._ensure_started)
        recorder = run_state_machine(backend, flaky_task, call, max_examples=300, steps=15)
        # The run really exercised contention, failures and the GPU pool.
        assert recorder.peak_cores == 3
        assert recorder.peak_gpus >= 1
        finals = [h[-1] for h in recorder.states.values()]
        assert {"DONE", "FAILED", "CANCELED"} <= set(finals)
    finally:
        call(backend.shutdown)
        loop.close()


class TestFlakyConformance(BackendConformance):
    """The fault-injecting backend is also a conforming backend."""

    # It only pretends to run tasks: the checks of what tasks do are skipped.
    runs_executables = False
    runs_functions = False

    def make_backend(self) -> FlakyBackend:
        return FlakyBackend()

    def make_task(self, kind: str) -> dict[str, Any] | None:
        return flaky_task(kind)


class OversubscribingBackend(FlakyBackend):
    """Claims one core while scheduling into three: the invariant check must notice."""

    @property
    def resources(self) -> ResourcePool:
        return ResourcePool(1, ["0", "1"])


def test_state_machine_detects_a_broken_backend() -> None:
    loop = asyncio.new_event_loop()
    call = loop_caller(loop)
    backend = OversubscribingBackend()
    try:
        call(backend._ensure_started)
        try:
            run_state_machine(backend, flaky_task, call, max_examples=50)
        except Exception as exc:  # AssertionError, or a group of them after shrinking
            assert "oversubscribed" in "".join(traceback.format_exception(exc))
        else:
            raise AssertionError("the state machine did not detect oversubscription")
    finally:
        call(backend.shutdown)
        loop.close()


def test_bookkeeping_of_finished_tasks_is_pruned() -> None:
    from rhapsody.backends.execution import NoopExecutionBackend

    async def go() -> None:
        backend = await NoopExecutionBackend()
        for batch in range(20):
            tasks = [
                {
                    "uid": f"p{batch}.{i}",
                    "executable": "x",
                    "dependencies": [f"p{batch - 1}.{i}"] if batch else [],
                }
                for i in range(500)
            ]
            futures = await backend.submit_tasks(tasks)
            await asyncio.gather(*futures)
        graph = backend._graph
        assert not graph.live and not backend._queues
        assert len(graph.finished) == 10_000
        assert set(graph.finished.values()) == {"DONE"}
        await backend.shutdown()

    asyncio.run(go())
