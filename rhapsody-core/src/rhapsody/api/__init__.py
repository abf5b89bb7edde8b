"""The object API of the original's newer releases (`from rhapsody.api import Session, ...`)."""

from rhapsody.api.errors import (
    BackendError,
    ResourceError,
    RhapsodyError,
    SessionError,
    TaskExecutionError,
    TaskValidationError,
)
from rhapsody.compat.task_state_manager import TaskStateManager
from rhapsody.inference.task import AITask
from rhapsody.session import Session
from rhapsody.tasks import ComputeTask

__all__ = [
    "AITask",
    "BackendError",
    "ComputeTask",
    "ResourceError",
    "RhapsodyError",
    "Session",
    "SessionError",
    "TaskExecutionError",
    "TaskStateManager",
    "TaskValidationError",
]
