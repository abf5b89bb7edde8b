"""The errors RHAPSODY raises. All derive from `RhapsodyError`.

Each also takes the original rhapsody-py's positional form (`BackendError(backend_name, msg)`,
`TaskValidationError(uid, msg)`, `TaskExecutionError(uid, msg, exit_code)`,
`ResourceError(uid, resource_type, msg)`) and then words its message as the original does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RhapsodyError(Exception):
    """Base class of every error raised by RHAPSODY."""

    @property
    def message(self) -> str:
        """The error's message (the original's attribute)."""
        return str(self)


class TaskValidationError(RhapsodyError, ValueError):
    """A task description is invalid; names the task and the offending field."""

    def __init__(self, *args: Any, uid: str | None = None, field: str | None = None) -> None:
        if len(args) == 2:  # the original's (task_uid, message)
            uid, message = args
            subject = f"Task {uid!r} " if uid is not None else "Task "
            text = f"{subject}validation failed: {message}"
        else:
            (message,) = args
            where = []
            if uid is not None:
                where.append(f"task {uid!r}")
            if field is not None:
                where.append(f"field {field!r}")
            text = f"{', '.join(where)}: {message}" if where else message
        super().__init__(text)
        self.uid = uid
        self.field = field

    @property
    def task_uid(self) -> str | None:
        """The original's name for `uid`."""
        return self.uid


class TaskExecutionError(RhapsodyError):
    """A task ended FAILED. `task` is the user's task dict (absent when pickled); `exit_code`
    and `stderr` are the failed executable's (None for other failures)."""

    def __init__(
        self,
        *args: Any,
        uid: str | None = None,
        task: Any = None,
        exit_code: int | None = None,
        stderr: str | None = None,
    ) -> None:
        if len(args) in (2, 3):  # the original's (task_uid, message[, exit_code])
            uid, message = args[0], args[1]
            exit_code = args[2] if len(args) == 3 else exit_code
            code = f" with exit code {exit_code}" if exit_code is not None else ""
            message = f"Task {uid!r} failed{code}: {message}"
        else:
            (message,) = args
        if isinstance(task, Mapping):
            if exit_code is None:
                exit_code = task.get("exit_code")
            if stderr is None:
                stderr = task.get("stderr")
        super().__init__(message)
        self.uid = uid
        self.task = task
        self.exit_code = exit_code
        self.stderr = stderr

    @property
    def task_uid(self) -> str | None:
        """The original's name for `uid`."""
        return self.uid

    def __reduce__(self) -> tuple[Any, ...]:
        # The task dict may hold unpicklable callables: drop it when crossing processes.
        return (
            _rebuild_execution_error,
            (str(self), self.uid, self.exit_code, self.stderr),
        )


def _rebuild_execution_error(
    message: str, uid: str | None, exit_code: int | None = None, stderr: str | None = None
) -> TaskExecutionError:
    return TaskExecutionError(message, uid=uid, exit_code=exit_code, stderr=stderr)


class BackendError(RhapsodyError):
    """A backend cannot be found, loaded, started, or has been shut down."""

    def __init__(self, *args: Any) -> None:
        self.backend_name: str | None = None
        if len(args) == 2:  # the original's (backend_name, message)
            self.backend_name = args[0]
            args = (f"Backend {args[0]!r} failed: {args[1]}",)
        super().__init__(*args)


class ResourceError(RhapsodyError):
    """A resource request cannot be satisfied (e.g. more cores than the node has)."""

    def __init__(self, *args: Any) -> None:
        self.task_uid: str | None = None
        self.resource_type: str | None = None
        if len(args) == 3:  # the original's (task_uid, resource_type, message)
            self.task_uid, self.resource_type, message = args
            where = f"Task {self.task_uid!r} resource" if self.task_uid is not None else "Resource"
            args = (f"{where} error ({self.resource_type}): {message}",)
        super().__init__(*args)


class SessionError(RhapsodyError):
    """A session is misconfigured or used after it was closed."""
