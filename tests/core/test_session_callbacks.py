"""A session's callbacks reach every backend it has, including those added after them
(docs/session.md)."""

from __future__ import annotations

import asyncio

from rhapsody import Session
from rhapsody.backends.execution import ConcurrentExecutionBackend, NoopExecutionBackend


def test_callbacks_reach_backends_added_later() -> None:
    async def go() -> None:
        seen: list[tuple[str, str]] = []
        async with Session(backends=[NoopExecutionBackend(name="first")]) as session:
            session.register_callback(lambda t, s: seen.append((t["uid"], s)))
            session.add_backend(ConcurrentExecutionBackend(name="later", cores=1))
            futures = await session.submit_tasks(
                [
                    {"uid": "on-first", "executable": "/bin/true", "backend": "first"},
                    {"uid": "on-later", "executable": "/bin/true", "backend": "later"},
                ]
            )
            await asyncio.gather(*futures)
        for uid in ("on-first", "on-later"):
            states = [s for u, s in seen if u == uid]
            assert states[-1] == "DONE" and "EXECUTING" in states, (uid, states)
            assert states.count("DONE") == 1, (uid, states)

    asyncio.run(go())
