"""rhapsody-py's import path `rhapsody.backends.execution.radical_pilot` (the backend itself
is in the `rhapsody-radical` distribution)."""

from rhapsody.compat.engines import engine_class

RadicalExecutionBackend = engine_class("RadicalExecutionBackend")

__all__ = ["RadicalExecutionBackend"]
