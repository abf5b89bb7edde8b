"""Hook specifications a RHAPSODY plugin implements (pluggy project name "rhapsody").

A plugin is one module that declares hook implementations with `hookimpl`, exposed through the
`rhapsody.backends` entry-point group. It must stay import-light: name the heavy engine module by
string, never import it here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from rhapsody.plugins import BackendRegistry, PlatformRegistry, StateMapperRegistry

PROJECT_NAME = "rhapsody"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def rhapsody_register_backends(registry: BackendRegistry) -> None:
    """Register execution backends by name.

    :param registry: call ``registry.add(name, "package.module:Class", requires=[...])``;
        ``requires`` lists the top-level modules the engine needs, checked without importing.
    """


@hookspec
def rhapsody_register_state_mappers(registry: StateMapperRegistry) -> None:
    """Register a backend's native state names and the lifecycle state each maps to.

    :param registry: call ``registry.add(backend_name, {"native": "LIFECYCLE_STATE", ...})``.
    """


@hookspec
def rhapsody_register_platforms(registry: PlatformRegistry) -> None:
    """Register HPC platform descriptions by name.

    :param registry: call ``registry.add(name, platform_description)``.
    """
