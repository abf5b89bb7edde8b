"""Memory stays flat over many batches, and the event loop stays responsive under a large
backlog. The bounds are generous (leak and hang detectors); benchmarks/soak.py reports the
figures at full size."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from reliability_support import WAIT, no_new_children

from rhapsody.backends.execution import ConcurrentExecutionBackend, NoopExecutionBackend
from rhapsody.testing.load import Heartbeat, memory_growth

pytestmark = pytest.mark.anyio


def noop_task(i: int) -> dict[str, Any]:
    return {"function": print}


def true_task(i: int) -> dict[str, Any]:
    return {"executable": "/bin/true"}


async def test_noop_memory_is_flat() -> None:
    # Measured: ~115 B/task, the uid -> final state the engine keeps so that later submissions
    # can depend on any earlier task. A task dict or future kept alive would cost over 1 KB.
    backend = await NoopExecutionBackend()
    try:
        growth = await memory_growth(backend, 20_000, noop_task)
    finally:
        await backend.shutdown()
    assert growth.per_task < 1024, growth


async def test_concurrent_memory_is_flat(tmp_path: Path) -> None:
    # Measured: ~100 B/task. The bound allows for the allocator's page-sized steps over only
    # 2,000 tasks; a leaked child, pipe buffer or task dict would cost several KB each.
    with no_new_children():
        backend = await ConcurrentExecutionBackend(work_dir=tmp_path)
        try:
            growth = await memory_growth(backend, 2_000, true_task, batch=200, warmup=400)
        finally:
            await backend.shutdown()
    assert growth.per_task < 2048, growth


async def test_event_loop_stays_responsive_with_10000_pending(tmp_path: Path) -> None:
    with no_new_children():
        backend = await ConcurrentExecutionBackend(cores=2, work_dir=tmp_path)
        async with Heartbeat() as beat:
            futures = await backend.submit_tasks(
                [{"executable": "/bin/sleep", "arguments": ["30"]} for _ in range(10_000)]
            )
            await asyncio.sleep(0.5)  # 2 running, 9,998 waiting
            await asyncio.wait_for(backend.shutdown(), WAIT)
    assert all(f.cancelled() for f in futures)
    assert beat.beats > 0
    # a hang detector only: the loop was never held for seconds (measured: ~0.1 s, the
    # admission of the 10,000-task batch)
    assert beat.worst < 2.0, beat.worst
