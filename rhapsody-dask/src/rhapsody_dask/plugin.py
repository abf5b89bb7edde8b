"""Registers the 'dask' backend and its state table.

Import-light: dask.distributed loads only in backend.py, when the backend is created.
"""

from __future__ import annotations

from rhapsody.hookspecs import hookimpl
from rhapsody.plugins import BackendRegistry, StateMapperRegistry
from rhapsody_dask.states import BACKEND_NAME, TASK_STATES


@hookimpl
def rhapsody_register_backends(registry: BackendRegistry) -> None:
    registry.add(
        BACKEND_NAME, "rhapsody_dask.backend:DaskExecutionBackend", requires=["distributed"]
    )


@hookimpl
def rhapsody_register_state_mappers(registry: StateMapperRegistry) -> None:
    registry.add(BACKEND_NAME, TASK_STATES)
