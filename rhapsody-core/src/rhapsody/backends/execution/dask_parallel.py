"""rhapsody-py's import path `rhapsody.backends.execution.dask_parallel` (the backend itself
is in the `rhapsody-dask` distribution)."""

from rhapsody.compat.engines import engine_class

DaskExecutionBackend = engine_class("DaskExecutionBackend")

__all__ = ["DaskExecutionBackend"]
