"""Load probes: memory retained per task after many batches, and event-loop responsiveness.

growth = await memory_growth(backend, 200_000, noop_task)   # RSS after warm-up vs the end
async with Heartbeat() as beat:                               # worst lag of a 10 ms sleeper
    ...
beat.worst
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from typing import Any

import attrs
import psutil

from rhapsody.backends.base import BaseExecutionBackend

TaskFactory = Callable[[int], dict[str, Any]]


def rss() -> int:
    """This process's resident memory in bytes, after a full collection."""
    gc.collect()
    return int(psutil.Process().memory_info().rss)


@attrs.frozen
class MemoryGrowth:
    tasks: int  # tasks run after the warm-up
    rss_start: int  # bytes, after the warm-up
    rss_end: int

    @property
    def per_task(self) -> float:
        """Bytes retained per task (negative when memory shrank)."""
        return (self.rss_end - self.rss_start) / self.tasks


async def run_batches(
    backend: BaseExecutionBackend, n: int, make_task: TaskFactory, batch: int, first: int = 0
) -> None:
    """Submit `n` tasks in batches of `batch`, waiting for each batch; keep no future."""
    for start in range(first, first + n, batch):
        futures = await backend.submit_tasks(
            [make_task(i) for i in range(start, min(start + batch, first + n))]
        )
        await asyncio.gather(*futures, return_exceptions=True)


async def memory_growth(
    backend: BaseExecutionBackend,
    n: int,
    make_task: TaskFactory,
    *,
    batch: int = 1_000,
    warmup: int = 2_000,
) -> MemoryGrowth:
    """RSS after `warmup` tasks (allocator pools, caches and imports settled) and after `n`
    more, each run in batches whose futures are dropped."""
    await run_batches(backend, warmup, make_task, batch)
    start = rss()
    await run_batches(backend, n, make_task, batch, first=warmup)
    return MemoryGrowth(n, start, rss())


class Heartbeat:
    """A coroutine sleeping `interval` in a loop; `worst` is the largest lateness seen, in
    seconds: how long the event loop was held by something else."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.worst = 0.0
        self.beats = 0
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.worst = max(self.worst, time.perf_counter() - before - self.interval)
            self.beats += 1

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.ensure_future(self._beat())
        await asyncio.sleep(0)  # it is beating before the block starts
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
