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
            assert a["stdout"] == "hi\n" and b["stdout"] is None  # noop runs nothing
            await session.wait()
            with pytest.raises(TaskValidationError, match="no backend named 'nope'"):
                await session.submit_tasks([{"executable": "x", "backend": "nope"}])
        assert real.state() == fast.state() == "SHUTDOWN"
        assert ("a", "DONE") in seen and ("b", "DONE") in seen

    asyncio.run(go())


def test_duplicate_backend_names_are_an_error() -> None:
    with pytest.raises(SessionError, match="two backends are named 'dry'"):
        Session(backends=[NoopExecutionBackend(name="dry"), NoopExecutionBackend(name="dry")])


class _Probe(NoopExecutionBackend):
    backend_name = "probe"  # a name no other test uses: the default-name table is per process


def test_default_names_are_unique_among_live_backends() -> None:
    async def go() -> None:
        first, second, third = _Probe(), _Probe(), _Probe()
        assert [first.name, second.name, third.name] == ["probe", "probe.2", "probe.3"]
        assert _Probe(name="probe").name == "probe"  # an explicit name is taken as given
        session = Session(backends=[first, second])  # told apart: no error
        assert first.is_attached and first.attached_to == [session.uid]
        assert not third.is_attached
        await first
        await first.shutdown()  # a shut-down backend frees its name
        assert _Probe().name == "probe"
        await session.close()

    asyncio.run(go())


def test_the_default_backend_is_named_concurrent_whatever_else_lives() -> None:
    async def go() -> None:
        elsewhere = ConcurrentExecutionBackend(cores=1)
        async with Session() as session:
            task = ComputeTask(function=abs, args=[-1], backend="concurrent")
            await session.submit_tasks([task])
            assert await task is task and task.return_value == 1
        assert elsewhere.state() == "INITIALIZED"  # untouched by the session

    asyncio.run(go())


def test_a_session_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    async def go() -> None:
        async with Session() as session:
            await session.registry_start()
            await session.submit_tasks([ComputeTask(executable="/bin/echo", arguments=["x"])])
            assert len(await session.wait_tasks(timeout=30)) == 1

    asyncio.run(go())
    assert list(tmp_path.iterdir()) == []


def test_done_tasks_carry_their_result_field_even_when_empty() -> None:
    async def go() -> None:
        async with ConcurrentExecutionBackend(cores=1) as backend:
            silent = {"function": lambda: None}
            quiet = {"executable": "/bin/true"}
            await asyncio.gather(*await backend.submit_tasks([silent, quiet]))
        assert "return_value" in silent and silent["return_value"] is None
        assert quiet["stdout"] == ""

    asyncio.run(go())


def test_capture_stdio_writes_the_streams_to_the_work_dir(tmp_path: Path) -> None:
    async def go() -> None:
        # AsyncFlow assigns a str work directory to `_work_dir`.
        backend = ConcurrentExecutionBackend(cores=1, max_output=4)
        backend._work_dir = str(tmp_path / "engine")
        script = "echo short; echo 'a longer line than max_output' >&2; exit 2"
        small = ComputeTask(executable="/bin/echo", arguments=["hi"], capture_stdio=True)
        spilled = ComputeTask(executable="/bin/sh", arguments=["-c", script], capture_stdio=True)
        function = ComputeTask(function=print, args=["not captured"], capture_stdio=True)
        async with Session(backends=[backend]) as session:
            await session.submit_tasks([small, spilled, function])
            await session.wait_tasks(timeout=30)
        assert Path(small.stdout) == tmp_path / "engine" / f"{small.uid}.stdout"
        assert Path(small.stdout).read_text() == "hi\n" and Path(small.stderr).read_text() == ""
        assert spilled.state == "FAILED" and spilled.exit_code == 2
        assert Path(spilled.stdout).read_text() == "short\n"  # over max_output: the spill file
        assert Path(spilled.stderr).read_text() == "a longer line than max_output\n"
        # not captured to a file: a ComputeTask reports its return value's text, as rhapsody-py
        assert function.stdout == "None" and function.return_value is None

    asyncio.run(go())


def test_capture_stdio_on_noop_leaves_other_tasks_alone(tmp_path: Path) -> None:
    async def go() -> None:
        async with NoopExecutionBackend(work_dir=tmp_path) as backend:
            captured = {"executable": "x", "capture_stdio": True}
            plain = {"executable": "x"}
            await asyncio.gather(*await backend.submit_tasks([captured, plain]))
        assert Path(captured["stdout"]).read_text() == "" and plain["stdout"] is None

    asyncio.run(go())


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
