"""A backend written against rhapsody-py 0.6.0's abstract BaseBackend works in our Session and
through get_backend (issue 16, item 8)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import rhapsody
from rhapsody import ComputeTask, Session
from rhapsody.api import SessionError
from rhapsody.backends.base import BaseBackend
from rhapsody.backends.constants import StateMapper
from rhapsody.plugins import set_plugin_manager


@pytest.fixture(autouse=True)
def fresh_plugins() -> Iterator[None]:
    before = set_plugin_manager(None)
    yield
    set_plugin_manager(before)


class InlineBackend(BaseBackend):
    """Runs function tasks inline, as a user of the original writes a backend."""

    def __init__(self) -> None:
        super().__init__(name="inline")
        self._callback: Any = None
        self.cancelled: list[str] = []
        self.stopped = False
        StateMapper.register_backend_tasks_states(
            self, done_state="ok", failed_state="err", canceled_state="gone", running_state="go"
        )

    def register_callback(self, func: Any) -> None:
        self._callback = func

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        for task in tasks:
            if task["executable"] == "/never":  # parks until cancelled
                continue
            self._callback(task, "go")
            try:
                task["return_value"] = task["function"](*task["args"], **task["kwargs"])
                self._callback(task, "ok")
            except Exception as exc:
                task["exception"] = exc
                self._callback(task, "err")

    async def cancel_task(self, uid: str) -> bool:
        self.cancelled.append(uid)
        return True

    async def shutdown(self) -> None:
        self.stopped = True

    def state(self) -> str:
        return "RUNNING"

    def task_state_cb(self, task: dict[str, Any], state: str) -> None:
        pass

    def build_task(self, task: dict[str, Any]) -> None:
        pass

    def get_task_states_map(self) -> StateMapper:
        return StateMapper(self)


def _boom() -> None:
    raise KeyError("k")


def test_an_original_backend_runs_in_a_session() -> None:
    backend = InlineBackend()

    async def main() -> tuple[list[Any], list[Any]]:
        async with Session([backend]) as session:
            first = ComputeTask(function=lambda: 41)
            second = ComputeTask(function=lambda x: x + 1, args=[41], dependencies=[first.uid])
            failing = ComputeTask(function=_boom)
            parked = ComputeTask(executable="/never")
            await session.submit_tasks([first, second, failing, parked])
            done = await asyncio.gather(first, second)
            with pytest.raises(KeyError):
                await failing
            await asyncio.sleep(0.1)
            await next(iter(session.backends.values())).cancel_task(parked.uid)
            return list(done), await session.wait_tasks()

    done, everything = asyncio.run(main())
    assert [t.return_value for t in done] == [41, 42]
    assert [t.state for t in everything] == ["DONE", "DONE", "FAILED", "CANCELED"]
    assert {t.backend for t in everything} == {"inline"}
    assert backend.cancelled == [everything[3].uid] and backend.stopped


def test_the_original_contract_is_abstract_and_missing_methods_are_named() -> None:
    class Half(BaseBackend):
        async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
            pass

    with pytest.raises(TypeError, match=r"abstract methods.*cancel_task"):
        Half()  # type: ignore[abstract]

    class NotABackend:
        async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
            pass

    with pytest.raises(SessionError, match="lacks register_callback, cancel_task, shutdown"):
        Session([NotABackend()])  # type: ignore[list-item]


def test_a_registered_original_backend_comes_from_get_backend() -> None:
    rhapsody.BackendRegistry.register_backend("inline", InlineBackend)
    backend = rhapsody.get_backend("inline")
    assert isinstance(backend, InlineBackend)

    async def main() -> int:
        async with Session([backend]) as session:  # type: ignore[list-item]
            task = ComputeTask(function=lambda: 7)
            await session.submit_tasks([task])
            return int((await task).return_value)

    assert asyncio.run(main()) == 7
