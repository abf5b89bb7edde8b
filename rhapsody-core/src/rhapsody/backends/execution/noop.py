"""`noop`: completes every task without running it, honouring dependencies, cancellation and
states.

Useful to measure the engine's own overhead and to dry-run a workflow's graph. Tasks finish
on the event loop's next turn, after `submit_tasks` returns (as the original's noop does): a
callback registered right after the submission still sees every final state.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

from rhapsody.backends.base import BaseExecutionBackend, ExecutionContext, Outcome
from rhapsody.task import TaskDescription

_DONE = Outcome(True)


class _Attempt(asyncio.Future):  # type: ignore[type-arg]
    """A future whose done-callbacks the backend calls itself when it completes the batch:
    asyncio would schedule one loop callback per task (measured: twice the per-task cost)."""

    _done_callbacks: list[Callable[[_Attempt], object]]

    def add_done_callback(self, fn: Callable[[_Attempt], object], **_: object) -> None:
        self._done_callbacks.append(fn)

    def complete(self) -> None:
        if not self.done():  # cancelled: its callbacks are already scheduled
            self.set_result(_DONE)
            for fn in self._done_callbacks:
                fn(self)

    def cancel(self, msg: object = None) -> bool:
        if not super().cancel(msg):
            return False
        loop = self.get_loop()
        for fn in self._done_callbacks:
            loop.call_soon(fn, self)
        return True


class NoopExecutionBackend(BaseExecutionBackend):
    backend_name = "noop"
    runs_mpi = True  # it runs nothing: an MPI task completes like any other

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # Attempts launched since the last turn: one loop callback completes them all.
        self._launched: list[_Attempt] = []

    def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> asyncio.Future[Outcome]:  # type: ignore[override]
        assert self._loop is not None
        future = _Attempt(loop=self._loop)
        future._done_callbacks = []
        if not self._launched:
            self._loop.call_soon(self._complete_launched)
        self._launched.append(future)
        return future

    def _complete_launched(self) -> None:
        launched, self._launched = self._launched, []
        # As `submit_tasks` does for admission: completing a batch allocates a few objects per
        # task, and gen-0 passes over them trigger full collections of the caller's heap.
        pause = gc.isenabled()
        if pause:
            gc.disable()
        # One scheduling pass for the batch, as when tasks finish inside a launch: each
        # completion would otherwise run a pass of its own (measured: 8x the engine's cost).
        self._scheduling = True
        try:
            for future in launched:
                future.complete()
            self._scheduling = False
            self._schedule()
        finally:
            self._scheduling = False
            if pause:
                gc.enable()
