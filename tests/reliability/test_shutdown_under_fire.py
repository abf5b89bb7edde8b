"""`shutdown()` while 100 tasks run and 1,000 wait: bounded, one CANCELED callback for every
unfinished task, every future cancelled, no process left."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from reliability_support import WAIT, no_new_children

from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.states import CANCELED, EXECUTING, FINAL_STATES

pytestmark = pytest.mark.anyio

RUNNING = 100
PENDING = 1_000


async def test_shutdown_with_running_and_pending_tasks(tmp_path: Path) -> None:
    finals: Counter[tuple[str, str]] = Counter()  # (uid, final state): a callback's assert
    # would only be logged by the engine
    executing: set[str] = set()
    all_running = asyncio.Event()

    def on_state(task: dict[str, Any], state: str) -> None:
        if state == EXECUTING:
            executing.add(task["uid"])
            if len(executing) == RUNNING:
                all_running.set()
        elif state in FINAL_STATES:
            finals[task["uid"], state] += 1

    with no_new_children():
        # 100 fake cores: the tasks only sleep.
        backend = await ConcurrentExecutionBackend(cores=RUNNING, work_dir=tmp_path)
        backend.register_callback(on_state)
        tasks = [
            {"uid": f"t.{i:04d}", "executable": "/bin/sleep", "arguments": ["30"]}
            for i in range(RUNNING + PENDING)
        ]
        futures = await backend.submit_tasks(tasks)
        await asyncio.wait_for(all_running.wait(), WAIT)
        # a hang detector, not a speed limit (it takes well under a second here)
        await asyncio.wait_for(backend.shutdown(), WAIT)
    assert len(executing) == RUNNING  # the other 1,000 never started
    assert finals == Counter({(t["uid"], CANCELED): 1 for t in tasks})
    assert all(f.cancelled() for f in futures)
    assert backend.state() == "SHUTDOWN"
