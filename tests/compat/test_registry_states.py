"""rhapsody-py 0.6.0's BackendRegistry, StateMapper registration, BackendMainStates,
TaskStateManager and logging (issue 16, items 2, 7 and 10)."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import rhapsody
from rhapsody.api import BackendError, TaskStateManager
from rhapsody.backends.constants import BackendMainStates, StateMapper, TasksMainStates
from rhapsody.backends.execution import NoopExecutionBackend
from rhapsody.plugins import get_plugin_manager, set_plugin_manager


@pytest.fixture(autouse=True)
def fresh_plugins() -> Iterator[None]:
    """Run-time registrations stay inside the test."""
    before = set_plugin_manager(None)
    yield
    set_plugin_manager(before)


class EchoBackend(NoopExecutionBackend):
    backend_name = "echo_compat"


def test_backend_registry_lists_gets_and_registers() -> None:
    names = rhapsody.BackendRegistry.list_backends()
    assert {"concurrent", "noop", "dask", "radical_pilot"} <= set(names)
    assert rhapsody.BackendRegistry.get_backend_class("noop") is NoopExecutionBackend
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        rhapsody.BackendRegistry.get_backend_class("nope")

    rhapsody.BackendRegistry.register_backend("echo_compat", EchoBackend)
    assert "echo_compat" in rhapsody.BackendRegistry.list_backends()
    assert rhapsody.discover_backends()["echo_compat"] is True

    async def main() -> str:
        backend = await rhapsody.get_backend("echo_compat")
        async with rhapsody.Session([backend]) as session:
            [future] = await session.submit_tasks([{"executable": "/bin/true"}])
            return str((await future)["state"])

    assert asyncio.run(main()) == "DONE"
    path = "rhapsody.backends.execution.NoopExecutionBackend"
    rhapsody.BackendRegistry.register_backend("by_path", path)
    assert rhapsody.BackendRegistry.get_backend_class("by_path") is NoopExecutionBackend
    with pytest.raises(BackendError, match="registered by both"):
        rhapsody.BackendRegistry.register_backend("noop", EchoBackend)


def test_state_mapper_registration() -> None:
    class MyBackend:
        pass

    StateMapper.register_backend_tasks_states(
        MyBackend, done_state="fin", failed_state="bad", canceled_state="gone",
        running_state="busy", executing_pending="queued",
    )
    mapper = StateMapper(MyBackend)
    assert mapper.to_main_state("fin") == TasksMainStates.DONE
    assert mapper.to_main_state("busy") == TasksMainStates.RUNNING
    assert mapper.to_main_state("queued") == "EXECUTING_PENDING"
    with pytest.raises(ValueError, match="no state named 'zzz'"):
        mapper.to_main_state("zzz")
    StateMapper.register_backend_tasks_states_with_defaults("mine")
    assert StateMapper("mine").to_main_state("RUNNING") == TasksMainStates.RUNNING
    with pytest.raises(ValueError, match="'unknown'"):
        StateMapper("unknown")
    assert get_plugin_manager().state_mappers.get("mine") is not None


def test_main_states() -> None:
    assert TasksMainStates("RUNNING") is TasksMainStates.RUNNING  # the original's value
    assert TasksMainStates.DONE == "DONE"
    # Our RUNNING is the lifecycle's EXECUTING, what callbacks receive (docs/migrating.md).
    assert TasksMainStates.RUNNING == "EXECUTING" and TasksMainStates.RUNNING != "RUNNING"
    backend = NoopExecutionBackend()
    assert backend.state() == BackendMainStates.INITIALIZED
    assert [str(s) for s in BackendMainStates] == ["INITIALIZED", "RUNNING", "SHUTDOWN"]


def test_task_state_manager_resolves_on_final_states() -> None:
    async def main() -> list[Any]:
        manager = TaskStateManager()
        manager.bind_loop(asyncio.get_running_loop())
        backend = await rhapsody.get_backend("concurrent")
        backend.register_callback(manager.update_task)
        tasks = [
            {"uid": "ok", "executable": "/bin/true"},
            {"uid": "no", "executable": "/bin/false"},
        ]
        waits = [manager.get_wait_future(t["uid"], t) for t in tasks]
        await backend.submit_tasks(tasks)
        done = await asyncio.wait_for(asyncio.gather(*waits), 30)
        late = manager.get_wait_future("ok", tasks[0])  # already final: resolved at once
        await backend.shutdown()
        return [*done, late.done()]

    ok, no, late_done = asyncio.run(main())
    assert (ok["state"], no["state"], late_done) == ("DONE", "FAILED", True)


def test_enable_logging_sends_rhapsody_records_to_the_stream() -> None:
    stream = io.StringIO()
    rhapsody.enable_logging(logging.DEBUG, stream=stream)
    try:
        rhapsody.logger.debug("hello from the test")
        assert "| DEBUG    | [rhapsody] | hello from the test" in stream.getvalue()
        quiet = io.StringIO()
        rhapsody.enable_logging(logging.DEBUG, stream=quiet, force=False)  # kept: first wins
        rhapsody.logger.debug("again")
        assert "again" in stream.getvalue() and quiet.getvalue() == ""
    finally:
        rhapsody.enable_logging(logging.WARNING, stream=io.StringIO())
