"""Registers the 'radical_pilot' backend. Import-light: the engine (RADICAL-Pilot) loads only in backend.py."""

from __future__ import annotations

from rhapsody.hookspecs import hookimpl
from rhapsody.plugins import BackendRegistry


@hookimpl
def rhapsody_register_backends(registry: BackendRegistry) -> None:
    registry.add("radical_pilot", "rhapsody_radical.backend:RadicalExecutionBackend", requires=["radical.pilot"])
