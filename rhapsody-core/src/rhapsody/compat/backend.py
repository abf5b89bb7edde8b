"""rhapsody-py's abstract `BaseBackend` contract, and the adapter that runs a backend written
against it on our engine.

Such a backend implements `submit_tasks(tasks)` (returning None), `cancel_task(uid)`,
`shutdown()`, `state()`, `task_state_cb`, `build_task`, `get_task_states_map()`, and reports
each task's states to the callbacks given to `register_callback`. `Session` (and
`Session.add_backend`) wraps it in `LegacyBackend`, an engine backend: our engine keeps the
dependency graph, futures, timeouts and retries, and hands the legacy backend one task at a
time when it is ready to run.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from rhapsody.backends.base import BaseExecutionBackend, ExecutionContext, Outcome
from rhapsody.errors import SessionError
from rhapsody.states import CANCELED, DONE, EXECUTING, FAILED, canonical
from rhapsody.task import TaskDescription

#: what the adapter calls on a legacy backend
CONTRACT = ("submit_tasks", "register_callback", "cancel_task", "shutdown")


class BaseBackend(abc.ABC):
    """rhapsody-py's base class of a backend: subclass it and implement the abstract methods.

    (A backend written for this project subclasses `BaseExecutionBackend` instead and
    implements only `_execute`: see the backend author guide.)
    """

    supports_implicit_data_linking: bool = False
    supports_explicit_data_linking: bool = False

    def __init__(self, name: str | None = None) -> None:
        self._name = name
        self._callbacks: list[Callable[[dict[str, Any], str], Any]] = []
        self.attached_to: list[Any] = []
        self.is_attached = False

    @property
    def name(self) -> str:
        return self._name or type(self).__name__.lower()

    def register_callback(self, func: Callable[[dict[str, Any], str], Any]) -> None:
        """Subscribe `func(task, state)`; the backend calls every subscriber on each change."""
        self._callbacks.append(func)

    @abc.abstractmethod
    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        """Start running `tasks`; report their states to the callbacks."""

    @abc.abstractmethod
    async def cancel_task(self, uid: str) -> bool:
        """Cancel task `uid`; False if it is unknown or already final."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop everything this backend started."""

    @abc.abstractmethod
    def state(self) -> str:
        """The backend's state (INITIALIZED, RUNNING, SHUTDOWN)."""

    @abc.abstractmethod
    def task_state_cb(self, task: dict[str, Any], state: str) -> None:
        """Called when a task's state changes."""

    @abc.abstractmethod
    def build_task(self, task: dict[str, Any]) -> None:
        """Prepare a task for execution."""

    @abc.abstractmethod
    def get_task_states_map(self) -> Any:
        """The backend's `StateMapper`."""

    def link_implicit_data_deps(self, src_task: dict[str, Any], dst_task: dict[str, Any]) -> None:
        """Data dependencies between tasks (nothing to do by default)."""
        return None

    def link_explicit_data_deps(
        self,
        src_task: dict[str, Any] | None = None,
        dst_task: dict[str, Any] | None = None,
        file_name: str | None = None,
        file_path: str | None = None,
    ) -> dict[str, Any] | None:
        """Where `dst_task` finds a file (nothing to do by default)."""
        return None


def adapt(backend: object) -> BaseExecutionBackend:
    """`backend` as an engine backend: itself, or a `LegacyBackend` around a backend of the
    original's contract. `SessionError` names the methods it lacks."""
    if isinstance(backend, BaseExecutionBackend):
        return backend
    missing = [m for m in CONTRACT if not callable(getattr(backend, m, None))]
    if missing:
        raise SessionError(
            f"not a backend: {backend!r} (a rhapsody-py BaseBackend needs "
            f"{', '.join(CONTRACT)}; it lacks {', '.join(missing)})"
        )
    return LegacyBackend(backend)


class LegacyBackend(BaseExecutionBackend):
    """Runs a backend of rhapsody-py's `BaseBackend` contract on the engine."""

    backend_name = "legacy"

    def __init__(self, backend: Any) -> None:
        name = getattr(backend, "name", None)
        super().__init__(name if isinstance(name, str) and name else type(backend).__name__)
        self.backend = backend
        self._waiting: dict[str, tuple[asyncio.Future[Outcome], ExecutionContext, Any]] = {}
        self._to_main: Callable[[Any], Any] | None = None
        self._thread: int | None = None
        self._ended_there: set[str] = set()  # uids the legacy backend reported CANCELED

    async def _start(self) -> None:
        self._thread = threading.get_ident()
        self.backend.register_callback(self._on_state)
        mapper = getattr(self.backend, "get_task_states_map", None)
        mapper = mapper() if callable(mapper) else None
        to_main = getattr(mapper, "to_main_state", None)
        self._to_main = to_main if callable(to_main) else None

    async def _stop(self) -> None:
        await self.backend.shutdown()

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        from rhapsody.tasks import ComputeTask

        fields = ComputeTask.from_dict(_fields_of(task))  # the original hands its backends these
        assert self._loop is not None
        future: asyncio.Future[Outcome] = self._loop.create_future()
        self._waiting[task.uid] = (future, ctx, fields)
        try:
            await self.backend.submit_tasks([fields])
            return await future
        except asyncio.CancelledError:
            if task.uid not in self._ended_there:  # cancelled here: tell the legacy backend
                with contextlib.suppress(Exception):
                    await self.backend.cancel_task(task.uid)
            raise
        finally:
            self._waiting.pop(task.uid, None)
            self._ended_there.discard(task.uid)

    def _on_state(self, task: Any, state: Any) -> None:
        if threading.get_ident() != self._thread and self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_state_here, task, state)
        else:
            self._on_state_here(task, state)

    def _on_state_here(self, task: Any, state: Any) -> None:
        uid = task.get("uid") if hasattr(task, "get") else None
        if not isinstance(uid, str) or uid not in self._waiting:
            return  # not one of ours, or already over
        entry = self._waiting[uid]
        future, ctx, fields = entry
        main = self._main_state(state)
        if main == EXECUTING:
            ctx.started()
        elif future.done():
            return
        elif main == DONE:
            future.set_result(_outcome(fields, True))
        elif main == FAILED:
            future.set_result(_outcome(fields, False))
        elif main == CANCELED:
            self._ended_there.add(uid)
            future.cancel()

    def _main_state(self, state: Any) -> str | None:
        if self._to_main is not None:
            with contextlib.suppress(Exception):
                state = self._to_main(state)
        text = str(getattr(state, "value", state))
        try:
            return canonical(text)
        except ValueError:
            return None


def _fields_of(task: TaskDescription) -> dict[str, Any]:
    fields: dict[str, Any] = {"uid": task.uid}
    if task.executable is not None:
        fields["executable"] = task.executable
        fields["arguments"] = list(task.arguments)
    else:
        fields["function"] = task.function
        fields["args"] = task.args
        fields["kwargs"] = dict(task.kwargs)
    for name in ("environment", "working_directory", "timeout"):
        if getattr(task, name) is not None:
            fields[name] = getattr(task, name)
    fields["cores"], fields["gpus"] = task.cores, task.gpus
    if task.backend_kwargs:
        fields["task_backend_specific_kwargs"] = dict(task.backend_kwargs)
    return fields


def _outcome(fields: Any, ok: bool) -> Outcome:
    results = {k: fields.get(k) for k in ("stdout", "stderr", "exit_code", "return_value")}
    if ok:
        return Outcome(True, **results)
    exception = fields.get("exception")
    if isinstance(exception, BaseException):
        return Outcome.raised(exception)
    reason = fields.get("stderr") or (
        f"exit code {fields.get('exit_code')}" if fields.get("exit_code") is not None else "failed"
    )
    return Outcome.failure(str(reason).strip() or "failed", **results)
