"""Registers the 'radical_pilot' backend and its state table.

Import-light: RADICAL-Pilot itself loads only in backend.py, when the backend is created.
"""

from __future__ import annotations

from rhapsody.hookspecs import hookimpl
from rhapsody.plugins import BackendRegistry, StateMapperRegistry
from rhapsody_radical.states import TASK_STATES

BACKEND_NAME = "radical_pilot"


@hookimpl
def rhapsody_register_backends(registry: BackendRegistry) -> None:
    registry.add(
        BACKEND_NAME, "rhapsody_radical.backend:RadicalExecutionBackend", requires=["radical.pilot"]
    )


@hookimpl
def rhapsody_register_state_mappers(registry: StateMapperRegistry) -> None:
    registry.add(BACKEND_NAME, TASK_STATES)
