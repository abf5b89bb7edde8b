"""Backends and the seed import paths (`rhapsody.backends`, `.constants`, `.execution`)."""

from rhapsody.backends.base import BaseBackend, BaseExecutionBackend, Outcome, TaskFutures
from rhapsody.backends.constants import StateMapper, TasksMainStates
from rhapsody.backends.execution import ConcurrentExecutionBackend, NoopExecutionBackend
from rhapsody.plugins import discover_backends, get_backend
from rhapsody.session import Session

__all__ = [
    "BaseBackend",
    "BaseExecutionBackend",
    "ConcurrentExecutionBackend",
    "NoopExecutionBackend",
    "Outcome",
    "Session",
    "StateMapper",
    "TaskFutures",
    "TasksMainStates",
    "discover_backends",
    "get_backend",
]
