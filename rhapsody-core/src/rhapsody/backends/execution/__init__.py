"""Core's execution backends (seed import path `rhapsody.backends.execution`)."""

from rhapsody.backends.execution.concurrent import ConcurrentExecutionBackend
from rhapsody.backends.execution.noop import NoopExecutionBackend

__all__ = ["ConcurrentExecutionBackend", "NoopExecutionBackend"]


def __getattr__(name: str) -> object:
    from rhapsody.compat.engines import CLASSES, engine_class

    if name in CLASSES:  # rhapsody-py's names, imported only when asked for
        return engine_class(name)
    raise AttributeError(f"module 'rhapsody.backends.execution' has no attribute {name!r}")
