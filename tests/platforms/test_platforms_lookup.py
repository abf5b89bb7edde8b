"""Catalog names as attributes of rhapsody.platforms, resolved through the plugin registry."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import rhapsody.platforms
from rhapsody.hookspecs import hookimpl
from rhapsody.platforms import (
    PlatformDescription,
    PlatformNotFoundError,
    get_platform,
    list_platforms,
)
from rhapsody.plugins import PlatformRegistry, PluginFailure, PluginManager

Install = Callable[[PluginManager], None]


def test_import_from_the_catalog() -> None:
    from rhapsody.platforms import frontera, PlatformDescription, ResourceManager  # noqa: I001

    from rhapsody_platforms import catalog

    assert isinstance(frontera, PlatformDescription)
    assert frontera is catalog.frontera
    assert (frontera.cores_per_node, frontera.resource_manager) == (56, ResourceManager.SLURM)


def test_names_are_listed_and_visible_to_dir() -> None:
    names = list_platforms()
    assert names == sorted(names)
    assert {"frontera", "perlmutter_gpu", "polaris", "frontier", "summit"} <= set(names)
    assert "frontera" in dir(rhapsody.platforms)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(PlatformNotFoundError) as caught:
        from rhapsody.platforms import frontira  # noqa: F401
    message = str(caught.value)
    assert message.startswith("unknown platform 'frontira'; known platforms: aurora, ")
    assert "frontera" in message
    assert isinstance(caught.value, ImportError)


def test_private_names_stay_plain_attribute_errors() -> None:
    assert not hasattr(rhapsody.platforms, "_no_such_thing")
    assert not hasattr(rhapsody.platforms, "__wrapped__")


def test_missing_catalog_says_what_to_install(use_plugin_manager: Install) -> None:
    use_plugin_manager(PluginManager(load_entry_points=False))
    assert list_platforms() == []
    with pytest.raises(ImportError) as caught:
        from rhapsody.platforms import frontera  # noqa: F401
    assert str(caught.value) == (
        "platform 'frontera' is not available; the platform catalog is not installed: "
        "pip install rhapsody-platforms"
    )
    assert isinstance(caught.value, PlatformNotFoundError)


def test_broken_catalog_says_why(use_plugin_manager: Install) -> None:
    manager = PluginManager(load_entry_points=False)
    manager.failures.append(
        PluginFailure("platforms", "rhapsody-platforms", "cannot import 'x': SyntaxError")
    )
    use_plugin_manager(manager)
    with pytest.raises(PlatformNotFoundError, match="installed but failed to load: cannot import"):
        get_platform("frontera")


class _OwnSite:
    @hookimpl
    def rhapsody_register_platforms(self, registry: PlatformRegistry) -> None:
        registry.add("mycluster", PlatformDescription(name="mycluster", resource_manager="pbs"))


def test_other_plugins_can_register_platforms(use_plugin_manager: Install) -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(_OwnSite(), "own-site", "own-site-dist")
    use_plugin_manager(manager)
    from rhapsody.platforms import mycluster

    assert mycluster.partition is None
    assert list_platforms() == ["mycluster"]
    # The official catalog is still missing, and the message still says so.
    with pytest.raises(PlatformNotFoundError, match="pip install rhapsody-platforms"):
        get_platform("frontera")
