"""Registers the 'dask' backend. Import-light: the engine (dask.distributed) loads only in backend.py."""

from __future__ import annotations

from rhapsody.hookspecs import hookimpl
from rhapsody.plugins import BackendRegistry


@hookimpl
def rhapsody_register_backends(registry: BackendRegistry) -> None:
    registry.add("dask", "rhapsody_dask.backend:DaskExecutionBackend", requires=["distributed"])
