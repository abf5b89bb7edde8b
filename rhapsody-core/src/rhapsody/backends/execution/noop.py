"""`noop`: completes every task at once, honouring dependencies, cancellation and states.

Useful to measure the engine's own overhead and to dry-run a workflow's graph.
"""

from __future__ import annotations

from rhapsody.backends.base import BaseExecutionBackend, ExecutionContext, Outcome
from rhapsody.task import TaskDescription

_DONE = Outcome(True)


class NoopExecutionBackend(BaseExecutionBackend):
    backend_name = "noop"

    def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:  # type: ignore[override]
        return _DONE
