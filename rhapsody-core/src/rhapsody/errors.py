"""The errors RHAPSODY raises. All derive from `RhapsodyError`."""

from __future__ import annotations

from typing import Any


class RhapsodyError(Exception):
    """Base class of every error raised by RHAPSODY."""


class TaskValidationError(RhapsodyError, ValueError):
    """A task description is invalid; names the task and the offending field."""

    def __init__(self, message: str, *, uid: str | None = None, field: str | None = None) -> None:
        where = []
        if uid is not None:
            where.append(f"task {uid!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.uid = uid
        self.field = field


class TaskExecutionError(RhapsodyError):
    """A task ended FAILED. `task` is the user's task dict (absent when pickled)."""

    def __init__(self, message: str, *, uid: str | None = None, task: Any = None) -> None:
        super().__init__(message)
        self.uid = uid
        self.task = task

    def __reduce__(self) -> tuple[Any, ...]:
        # The task dict may hold unpicklable callables: drop it when crossing processes.
        return (_rebuild_execution_error, (str(self), self.uid))


def _rebuild_execution_error(message: str, uid: str | None) -> TaskExecutionError:
    return TaskExecutionError(message, uid=uid)


class BackendError(RhapsodyError):
    """A backend cannot be found, loaded, started, or has been shut down."""


class ResourceError(RhapsodyError):
    """A resource request cannot be satisfied (e.g. more cores than the node has)."""


class SessionError(RhapsodyError):
    """A session is misconfigured or used after it was closed."""
