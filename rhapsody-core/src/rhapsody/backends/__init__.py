"""Backends and the seed import paths (`rhapsody.backends`, `.constants`, `.execution`)."""

from rhapsody.backends.base import BaseExecutionBackend, Outcome, TaskFutures
from rhapsody.backends.constants import StateMapper, TasksMainStates
from rhapsody.backends.execution import ConcurrentExecutionBackend, NoopExecutionBackend
from rhapsody.plugins import discover_backends, get_backend

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


def __getattr__(name: str) -> object:
    # `Session` imports this package's base module: resolve it lazily to avoid a cycle.
    if name == "Session":
        from rhapsody.session import Session

        return Session
    if name == "BaseBackend":  # rhapsody-py's abstract contract
        from rhapsody.compat.backend import BaseBackend

        return BaseBackend
    from rhapsody.compat.engines import CLASSES, engine_class

    if name in CLASSES:  # rhapsody-py's names, imported only when asked for
        return engine_class(name)
    raise AttributeError(f"module 'rhapsody.backends' has no attribute {name!r}")
