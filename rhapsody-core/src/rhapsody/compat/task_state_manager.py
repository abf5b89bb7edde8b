"""rhapsody-py's `TaskStateManager`: futures that resolve when a task reaches a final state,
fed by backend callbacks (`backend.register_callback(manager.update_task)`)."""

from __future__ import annotations

import asyncio
from typing import Any

from rhapsody.states import FINAL_STATES, canonical


class TaskStateManager:
    """Tracks task states reported through `update_task` and lets callers wait for them."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._terminal: set[str] = set(FINAL_STATES)
        self._states: dict[str, str] = {}
        self._waiters: dict[str, asyncio.Future[Any]] = {}

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the wait futures belong to (default: the running loop)."""
        self._loop = loop

    def set_terminal_states(self, states: set[str]) -> None:
        """Replace the set of states that end a wait."""
        self._terminal = {_name(s) for s in states}

    def get_wait_future(self, uid: str, task: dict[str, Any]) -> asyncio.Future[Any]:
        """A future resolving to `task` once it is in a terminal state (at once if it is)."""
        future = self._waiters.get(uid)
        if future is None:
            loop = self._loop or asyncio.get_running_loop()
            future = self._waiters[uid] = loop.create_future()
            if self._is_terminal(self._states.get(uid) or task.get("state")):
                future.set_result(task)
        return future

    def update_task(self, task: dict[str, Any], state: str, **kwargs: object) -> None:
        """Record `state` for `task` (and `kwargs` into it); resolve its waiter when terminal.
        Call it on the event loop's thread (as backend callbacks are)."""
        uid = task["uid"]
        task.update(kwargs)
        self._states[uid] = state
        future = self._waiters.get(uid)
        if future is not None and not future.done() and self._is_terminal(state):
            future.set_result(task)

    def _is_terminal(self, state: object) -> bool:
        return isinstance(state, str) and _name(state) in self._terminal


def _name(state: object) -> str:
    text = str(getattr(state, "value", state))
    try:
        return canonical(text)
    except ValueError:
        return text
