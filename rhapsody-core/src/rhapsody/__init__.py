"""RHAPSODY: Runtime for Heterogeneous APplications, Service Orchestration and DYnamism.

Importing `rhapsody` is cheap: backends, sessions and platforms load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rhapsody.errors import (
    BackendError,
    ResourceError,
    RhapsodyError,
    SessionError,
    TaskExecutionError,
    TaskValidationError,
)
from rhapsody.plugins import discover_backends, get_backend
from rhapsody.states import StateMapper, TasksMainStates

__version__ = "0.1.0"

if TYPE_CHECKING:
    from rhapsody.backends.base import BaseExecutionBackend
    from rhapsody.compat import BackendRegistry, enable_logging, logger
    from rhapsody.compat.backend import BaseBackend
    from rhapsody.inference.task import AITask
    from rhapsody.session import Session
    from rhapsody.sweeps import expand
    from rhapsody.tasks import ComputeTask

_LAZY = {
    "Session": "rhapsody.session",
    "ComputeTask": "rhapsody.tasks",
    "AITask": "rhapsody.inference.task",
    "BaseExecutionBackend": "rhapsody.backends.base",
    "BaseBackend": "rhapsody.compat.backend",
    "expand": "rhapsody.sweeps",
    # rhapsody-py's names (docs/migrating.md)
    "BackendRegistry": "rhapsody.compat",
    "enable_logging": "rhapsody.compat",
    "logger": "rhapsody.compat",
}

__all__ = [
    "AITask",
    "BackendError",
    "BackendRegistry",
    "BaseBackend",
    "BaseExecutionBackend",
    "ComputeTask",
    "ResourceError",
    "RhapsodyError",
    "Session",
    "SessionError",
    "StateMapper",
    "TaskExecutionError",
    "TaskValidationError",
    "TasksMainStates",
    "__version__",
    "discover_backends",
    "enable_logging",
    "expand",
    "get_backend",
    "logger",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rhapsody' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
