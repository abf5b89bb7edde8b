"""Seed import path for the errors: `from rhapsody.api.errors import TaskExecutionError`."""

from rhapsody.errors import (
    BackendError,
    ResourceError,
    RhapsodyError,
    SessionError,
    TaskExecutionError,
    TaskValidationError,
)

__all__ = [
    "BackendError",
    "ResourceError",
    "RhapsodyError",
    "SessionError",
    "TaskExecutionError",
    "TaskValidationError",
]
