"""Records every callback and checks the lifecycle invariants (ARCHITECTURE.md §4) as it goes."""

from __future__ import annotations

import asyncio
from typing import Any

from rhapsody.backends.base import BaseExecutionBackend
from rhapsody.states import DONE, EXECUTING, FINAL_STATES, TRANSITIONS


class InvariantRecorder:
    """Register as a backend callback; collects violations instead of raising inside callbacks.

    Checks, at each callback: (1) states only move along the lifecycle table and final states
    are absorbing; (3) a task starts only when all its dependencies are DONE, and never after
    one of them failed; (4) running tasks never hold more cores/GPUs than the backend offers.
    `check_final` checks (2): exactly one final callback per task, matching its future.
    """

    def __init__(self, backend: BaseExecutionBackend, uid_prefix: str = "") -> None:
        self.backend = backend
        self.prefix = uid_prefix
        self.states: dict[str, list[str]] = {}
        self.deps: dict[str, tuple[str, ...]] = {}
        self.violations: list[str] = []
        self.running: dict[str, tuple[int, int]] = {}
        self.peak_cores = 0
        self.peak_gpus = 0
        self.started: set[str] = set()
        backend.register_callback(self)

    def track(self, tasks: list[dict[str, Any]]) -> None:
        """Remember the dependencies of tasks about to be submitted."""
        for task in tasks:
            self.deps[task["uid"]] = tuple(task.get("dependencies") or ())

    def __call__(self, task: dict[str, Any], state: str) -> None:
        uid = task.get("uid")
        if not isinstance(uid, str) or not uid.startswith(self.prefix) or uid not in self.deps:
            return
        if not isinstance(state, str):
            self.violations.append(f"{uid}: state {state!r} is not a str")
        history = self.states.setdefault(uid, ["NEW"])
        previous = history[-1]
        if state not in TRANSITIONS.get(previous, frozenset()):
            self.violations.append(f"{uid}: illegal transition {previous} -> {state}")
        history.append(state)
        if state == EXECUTING:
            self.started.add(uid)
            for dep in self.deps[uid]:
                dep_state = self.last_state(dep)
                if dep_state != DONE:
                    self.violations.append(f"{uid} started while dependency {dep} was {dep_state}")
            self._account(uid, task, start=True)
        elif previous == EXECUTING:
            self._account(uid, task, start=False)
        if state == DONE:
            for dep in self.deps[uid]:
                if self.last_state(dep) != DONE:
                    self.violations.append(
                        f"{uid} DONE while dependency {dep} is {self.last_state(dep)}"
                    )

    def _account(self, uid: str, task: dict[str, Any], *, start: bool) -> None:
        pool = self.backend.resources
        if pool is None:
            return
        if start:
            need = (int(task.get("cores") or 1), int(task.get("gpus") or 0))
            self.running[uid] = need
            cores = sum(c for c, _ in self.running.values())
            gpus = sum(g for _, g in self.running.values())
            self.peak_cores = max(self.peak_cores, cores)
            self.peak_gpus = max(self.peak_gpus, gpus)
            if cores > pool.total_cores or gpus > pool.total_gpus:
                self.violations.append(
                    f"oversubscribed: {cores} cores / {gpus} GPUs running on "
                    f"{pool.total_cores} / {pool.total_gpus} when {uid} started"
                )
        else:
            self.running.pop(uid, None)

    def last_state(self, uid: str) -> str:
        history = self.states.get(uid)
        if history:
            return history[-1]
        state = self.backend.task_state(uid)
        return state or "UNKNOWN"

    def check_final(self, futures: dict[str, asyncio.Future[Any]]) -> None:
        """(2): each task reached exactly one final state, and its future agrees."""
        for uid, future in futures.items():
            finals = [s for s in self.states.get(uid, []) if s in FINAL_STATES]
            if len(finals) != 1:
                self.violations.append(f"{uid}: {len(finals)} final callbacks ({finals})")
                continue
            if not future.done():
                self.violations.append(f"{uid}: future pending after final state {finals[0]}")
                continue
            final = finals[0]
            if final == DONE and (future.cancelled() or future.exception() is not None):
                self.violations.append(f"{uid}: DONE but its future did not resolve to the task")
            elif final == "FAILED" and (future.cancelled() or future.exception() is None):
                self.violations.append(f"{uid}: FAILED but its future does not raise")
            elif final == "CANCELED" and not future.cancelled():
                self.violations.append(f"{uid}: CANCELED but its future is not cancelled")

    def assert_ok(self) -> None:
        assert not self.violations, "invariant violations:\n" + "\n".join(self.violations[:20])
