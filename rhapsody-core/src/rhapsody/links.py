"""Dependencies between tasks that run on different backends of one `Session`.

Each backend keeps its own dependency graph. When a task on backend B depends on a task that
runs on backend A (an AI task on `inference` using a model server started on `concurrent`,
or a simulation using its answer), B is told to `expect` that uid, and this module tells B how
it ended (`resolve`), or that the service it stands for is ready, as A reports it.
"""

from __future__ import annotations

from typing import Any

from rhapsody.backends.base import READY, BaseExecutionBackend
from rhapsody.states import FINAL_STATES


class BackendLinks:
    """The uids that backends wait for on other backends, and who waits."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[BaseExecutionBackend]] = {}
        self._ready: dict[str, str | None] = {}  # services ready now -> endpoint
        self.watching: set[str] = set()  # backend names whose states are watched

    def link(self, uid: str, source: BaseExecutionBackend, target: BaseExecutionBackend) -> None:
        """Tasks on `target` depend on `uid`, which runs (or will run) on `source`."""
        target.expect(uid)
        state = source.task_state(uid)
        if state in FINAL_STATES:
            target.resolve(uid, state)
            return
        waiting = self._waiting.setdefault(uid, [])
        if target not in waiting:
            waiting.append(target)
        if uid in self._ready:
            target.resolve(uid, READY, self._ready[uid])

    def on_state(self, task: dict[str, Any], state: str) -> None:
        """A backend callback: pass final states on to the backends waiting for them."""
        if state in FINAL_STATES:
            uid = task.get("uid")
            self._ready.pop(uid, None)  # type: ignore[arg-type]
            for target in self._waiting.pop(uid, ()):  # type: ignore[arg-type]
                target.resolve(uid, state)  # type: ignore[arg-type]

    def on_ready(self, task: dict[str, Any], endpoint: str | None) -> None:
        """A backend's service callback: release what waits for this service elsewhere."""
        uid = task["uid"]
        self._ready[uid] = endpoint
        for target in self._waiting.get(uid, ()):
            target.resolve(uid, READY, endpoint)
