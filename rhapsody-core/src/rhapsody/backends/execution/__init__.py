"""Core's execution backends (seed import path `rhapsody.backends.execution`)."""

from rhapsody.backends.execution.concurrent import ConcurrentExecutionBackend
from rhapsody.backends.execution.noop import NoopExecutionBackend

__all__ = ["ConcurrentExecutionBackend", "NoopExecutionBackend"]
