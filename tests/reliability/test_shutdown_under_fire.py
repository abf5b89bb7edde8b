"""`shutdown()` while 100 tasks run and 1,000 wait, on every installed backend: bounded, one
CANCELED callback for every unfinished task, every future cancelled, no process left."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from reliability_support import WAIT, installed_backends, no_new_children, started

from rhapsody.states import CANCELED, DONE, EXECUTING, FINAL_STATES

pytestmark = pytest.mark.anyio

RUNNING = 100
PENDING = 1_000
# Room for 100 sleeping tasks at once (they only sleep: fake slots on 2 cores). A local pilot
# has fake nodes of 8 cores: it rounds 100 cores up to 104, so up to 104 tasks may start.
CAPACITY: dict[str, dict[str, Any]] = {
    "concurrent": {"cores": RUNNING},
    "dask": {"n_workers": 2, "threads_per_worker": RUNNING // 2},
    "radical_pilot": {"cores": RUNNING},
}
SLOTS = {"radical_pilot": 104}


@pytest.mark.parametrize("name", installed_backends())
async def test_shutdown_with_running_and_pending_tasks(name: str, tmp_path: Path) -> None:
    finals: Counter[tuple[str, str]] = Counter()  # (uid, final state): a callback's assert
    # would only be logged by the engine
    executing: set[str] = set()
    all_running = asyncio.Event()

    def on_state(task: dict[str, Any], state: str) -> None:
        if state == EXECUTING:
            executing.add(task["uid"])
            if len(executing) >= RUNNING:
                all_running.set()
        elif state in FINAL_STATES:
            finals[task["uid"], state] += 1

    tasks = [
        {"uid": f"t.{i:04d}", "executable": "/bin/sleep", "arguments": ["30"]}
        for i in range(RUNNING + PENDING)
    ]
    with no_new_children(tmp_path):
        async with started(name, tmp_path / "work", **CAPACITY.get(name, {})) as backend:
            backend.register_callback(on_state)
            futures = await backend.submit_tasks(tasks)
            await asyncio.wait_for(all_running.wait(), WAIT)
            ended_before = {uid for uid, _ in finals}
            # a hang detector, not a speed limit (well under a second for concurrent here)
            await asyncio.wait_for(backend.shutdown(), WAIT)
            assert backend.state() == "SHUTDOWN"
    if name == "noop":  # runs nothing: every task was DONE at once, before the shutdown
        assert finals == Counter({(t["uid"], DONE): 1 for t in tasks})
        return
    assert not ended_before  # 30 s sleeps: nothing ended before the shutdown
    assert RUNNING <= len(executing) <= SLOTS.get(name, RUNNING)  # the others never started
    assert finals == Counter({(t["uid"], CANCELED): 1 for t in tasks})
    assert all(f.cancelled() for f in futures)
