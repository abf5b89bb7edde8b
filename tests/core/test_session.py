"""Session: routing by backend name, one state stream, one shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import rhapsody
from rhapsody import ComputeTask, Session
from rhapsody.backends.execution import ConcurrentExecutionBackend, NoopExecutionBackend
from rhapsody.errors import SessionError, TaskValidationError


def test_session_routes_by_backend_name() -> None:
    async def go() -> None:
        fast = NoopExecutionBackend(name="dry")
        real = ConcurrentExecutionBackend(name="real", cores=1)
        seen: list[tuple[str, str]] = []
        async with Session(backends=[real, fast]) as session:
            session.register_callback(lambda t, s: seen.append((t["uid"], s)))
            futures = await session.submit_tasks(
                [
                    {"uid": "a", "executable": "/bin/echo", "arguments": ["hi"]},
                    {"uid": "b", "executable": "/bin/echo", "backend": "dry"},
                ]
            )
            a, b = await asyncio.gather(*futures)
            assert a["stdout"] == "hi\n" and "stdout" not in b
            await session.wait_tasks()
            with pytest.raises(TaskValidationError, match="no backend named 'nope'"):
                await session.submit_tasks([{"executable": "x", "backend": "nope"}])
        assert real.state() == fast.state() == "SHUTDOWN"
        assert ("a", "DONE") in seen and ("b", "DONE") in seen

    asyncio.run(go())


def test_duplicate_backend_names_are_an_error() -> None:
    with pytest.raises(SessionError, match="two backends are named 'noop'"):
        Session(backends=[NoopExecutionBackend(), NoopExecutionBackend()])


def test_default_session_uses_concurrent_and_close_without_await(tmp_path: Path) -> None:
    async def go() -> None:
        session = rhapsody.Session()
        task = ComputeTask(function=sum, args=[[1, 2, 3]])
        await session.submit_tasks([task])
        done = await task
        assert done is task and task.return_value == 6 and task.state == "DONE"
        assert list(session.backends) == ["concurrent"]
        await session.close()
        with pytest.raises(SessionError, match="closed"):
            await session.submit_tasks([ComputeTask(executable="/bin/true")])

    asyncio.run(go())
    rhapsody.Session().close()  # nothing started: closing needs no event loop


def test_wait_tasks_never_raises_on_failure_and_times_out() -> None:
    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(cores=1)]) as session:
            ok = ComputeTask(executable="/bin/true")
            bad = ComputeTask(executable="/bin/false")
            slow = ComputeTask(executable="/bin/sleep", arguments=["5"])
            await session.submit_tasks([ok, bad])
            await session.wait_tasks([ok, bad])
            assert (ok.state, bad.state) == ("DONE", "FAILED")
            await session.submit_tasks([slow])
            with pytest.raises(asyncio.TimeoutError):
                await session.wait_tasks([slow], timeout=0.2)

    asyncio.run(go())


def test_compute_task_shape() -> None:
    task = ComputeTask(executable="/bin/echo", arguments=["x"], extra_key=1)
    assert task.uid.startswith("task.") and task["extra_key"] == 1 and task.stdout is None
    with pytest.raises(TaskValidationError, match="exactly one"):
        ComputeTask()
    with pytest.raises(TaskValidationError, match="exactly one"):
        ComputeTask(executable="x", function=print)
    import pickle

    clone = pickle.loads(pickle.dumps(task))
    assert clone == task and isinstance(clone, ComputeTask)
