"""When a task's timeout starts: at the real start for backends whose engine queues tasks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rhapsody.backends.base import BaseExecutionBackend, ExecutionContext, Outcome
from rhapsody.errors import TaskExecutionError
from rhapsody.task import TaskDescription

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class OneAtATime(BaseExecutionBackend):
    """Takes every task at once and runs them one by one, like a scheduler with one worker."""

    backend_name = "one-at-a-time"

    async def _start(self) -> None:
        self._worker = asyncio.Lock()

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        async with self._worker:
            ctx.started()
            await asyncio.sleep(float(task.arguments[0]))
        return Outcome(True)


class QueuingBackend(OneAtATime):
    queues_tasks = True


def sleepers(n: int) -> list[dict[str, Any]]:
    return [
        {"uid": f"s{i}", "executable": "sleep", "arguments": ["0.3"], "timeout": 0.5}
        for i in range(n)
    ]


async def run(backend: BaseExecutionBackend, tasks: list[dict[str, Any]]) -> list[Any]:
    async with backend:
        futures = await backend.submit_tasks(tasks)
        return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 30)


async def test_queued_time_does_not_count_when_the_backend_queues() -> None:
    results = await run(QueuingBackend(), sleepers(3))  # the third waits 0.6 s, runs 0.3 s
    assert [r["state"] for r in results] == ["DONE"] * 3


async def test_without_queues_tasks_the_clock_starts_at_launch() -> None:
    # The contrast: the same backend not declaring its queue times out the third task.
    results = await run(OneAtATime(), sleepers(3))
    assert results[0]["state"] == "DONE"
    assert isinstance(results[2], TaskExecutionError) and "timed out" in str(results[2])
