"""Registers the catalog with RHAPSODY. Import-light: the catalog loads when the hook runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rhapsody.hookspecs import hookimpl

if TYPE_CHECKING:
    from rhapsody.plugins import PlatformRegistry


@hookimpl
def rhapsody_register_platforms(registry: PlatformRegistry) -> None:
    from rhapsody_platforms.catalog import CATALOG

    for platform in CATALOG:
        registry.add(platform.name, platform)
