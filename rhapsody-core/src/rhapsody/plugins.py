"""Plugin loading and the name registries behind `discover_backends()` and `get_backend()`.

Plugins are modules exposed through the `rhapsody.backends` entry-point group. Loading is lazy
(first use), idempotent, and isolated: a plugin that fails to import, or whose hook raises, is
reported by name (warning + `rhapsody plugins`) and never hides the others.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import pluggy

from rhapsody import hookspecs
from rhapsody.errors import BackendError

if sys.version_info >= (3, 12):
    from importlib.metadata import entry_points
else:
    from importlib_metadata import entry_points

if TYPE_CHECKING:
    from rhapsody.backends.base import BaseExecutionBackend
    from rhapsody.platforms import PlatformDescription

ENTRY_POINT_GROUP = "rhapsody.backends"
DISABLED_ENV = "RHAPSODY_DISABLED_PLUGINS"
CORE_DISTRIBUTION = "rhapsody-core"
# Backends we publish separately: discovery lists them even when absent, so that
# `get_backend` can say which distribution to install.
OFFICIAL_BACKENDS: Mapping[str, str] = {
    "dask": "rhapsody-dask",
    "radical_pilot": "rhapsody-radical",
}
OFFICIAL_PLATFORM_CATALOG = "rhapsody-platforms"


class PluginConflictError(BackendError):
    """Two plugins registered the same name."""

    def __init__(self, message: str, name: str = "") -> None:
        super().__init__(message)
        self.name = name


@attrs.frozen
class PluginFailure:
    """A plugin that could not be loaded or whose hook raised."""

    plugin: str
    distribution: str
    error: str


@attrs.frozen
class BackendSpec:
    """A registered backend: where its class lives and which modules its engine needs."""

    name: str
    target: str | type[BaseExecutionBackend]
    requires: tuple[str, ...]
    distribution: str
    plugin: str

    def missing_requirements(self) -> list[str]:
        """Top-level modules the engine needs that are not importable (checked without import)."""
        needed = list(self.requires)
        if isinstance(self.target, str):
            needed.append(self.target.partition(":")[0])
        return [mod for mod in needed if not _module_findable(mod)]

    @property
    def available(self) -> bool:
        return not self.missing_requirements()

    def load(self) -> type[BaseExecutionBackend]:
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
            cls: type[BaseExecutionBackend] = getattr(module, attr)
        except Exception as exc:
            raise BackendError(
                f"backend {self.name!r} (from {self.distribution}) failed to load "
                f"{self.target!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return cls


def _module_findable(name: str) -> bool:
    # find_spec imports the parent packages of a dotted name (cheap namespace/plugin packages),
    # never the module itself: discovery stays free of dask / radical.pilot imports.
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


T = TypeVar("T")


class _NameRegistry(Generic[T]):
    """Name -> value, remembering which distribution registered each name."""

    kind = "name"

    def __init__(self) -> None:
        self._items: dict[str, tuple[T, str]] = {}
        self._distribution = CORE_DISTRIBUTION

    def _add(self, name: str, value: T) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items:
            other = self._items[name][1]
            raise PluginConflictError(
                f"{self.kind} {name!r} is registered by both {other} and {self._distribution}; "
                f"uninstall one or block it with {DISABLED_ENV}",
                name,
            )
        self._items[name] = (value, self._distribution)

    def get(self, name: str) -> T | None:
        item = self._items.get(name)
        return None if item is None else item[0]

    def distribution_of(self, name: str) -> str | None:
        item = self._items.get(name)
        return None if item is None else item[1]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


class BackendRegistry(_NameRegistry[BackendSpec]):
    """Passed to `rhapsody_register_backends`."""

    kind = "backend"
    _plugin = ""

    def add(
        self,
        name: str,
        target: str | type[BaseExecutionBackend],
        *,
        requires: Iterable[str] = (),
    ) -> None:
        """Register backend `name`, implemented by `target` ("module:Class" or a class)."""
        if isinstance(target, str) and ":" not in target:
            raise ValueError(
                f"backend {name!r}: target must look like 'module:Class', got {target!r}"
            )
        self._add(
            name, BackendSpec(name, target, tuple(requires), self._distribution, self._plugin)
        )


class StateMapperRegistry(_NameRegistry[Mapping[str, str]]):
    """Passed to `rhapsody_register_state_mappers`."""

    kind = "state mapper"

    def add(self, backend: str, native_to_lifecycle: Mapping[str, str]) -> None:
        """Register how `backend`'s native state names map onto lifecycle states."""
        from rhapsody.states import canonical

        table = {str(k): canonical(v) for k, v in native_to_lifecycle.items()}
        self._add(backend, table)


class PlatformRegistry(_NameRegistry["PlatformDescription"]):
    """Passed to `rhapsody_register_platforms`."""

    kind = "platform"

    def add(self, name: str, platform: PlatformDescription) -> None:
        """Register a platform description under `name`."""
        self._add(name, platform)


def _disabled_from_env() -> frozenset[str]:
    raw = os.environ.get(DISABLED_ENV, "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


class PluginManager:
    """A typed wrapper around pluggy: callers never touch pluggy directly."""

    def __init__(
        self, *, load_entry_points: bool = True, disabled: Iterable[str] | None = None
    ) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._load_entry_points = load_entry_points
        self._disabled = frozenset(disabled) if disabled is not None else _disabled_from_env()
        self._distributions: dict[str, str] = {}
        self._versions: dict[str, str] = {}
        self.failures: list[PluginFailure] = []
        self._conflicts: dict[str, str] = {}
        self._loaded = False
        self._lock = threading.RLock()
        self._backends: BackendRegistry | None = None
        self._mappers: StateMapperRegistry | None = None
        self._platforms: PlatformRegistry | None = None

    # -- loading -------------------------------------------------------------------------------
    def register(self, plugin: object, name: str, distribution: str, version: str = "") -> None:
        """Register a plugin object (module or instance with hook implementations)."""
        if name in self._disabled:
            return
        self._pm.register(plugin, name=name)
        self._distributions[name] = distribution
        self._versions[name] = version
        self._backends = self._mappers = self._platforms = None

    def load(self) -> None:
        """Load built-in plugins and entry points once; later calls do nothing."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            from rhapsody import builtin_plugins

            for name, plugin in builtin_plugins.PLUGINS.items():
                self.register(plugin, name, CORE_DISTRIBUTION, _core_version())
            if self._load_entry_points:
                self._load_from_entry_points()
            self._pm.check_pending()

    def _load_from_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            version = ep.dist.version if ep.dist is not None else ""
            if ep.name in self._disabled or dist in self._disabled:
                continue
            if self._pm.has_plugin(ep.name):
                self._fail(
                    ep.name,
                    dist,
                    f"plugin name {ep.name!r} is already used by "
                    f"{self._distributions.get(ep.name, 'another plugin')}",
                )
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                self._fail(
                    ep.name, dist, f"cannot import {ep.value!r}: {type(exc).__name__}: {exc}"
                )
                continue
            try:
                self.register(plugin, ep.name, dist, version)
            except Exception as exc:
                self._fail(ep.name, dist, f"{type(exc).__name__}: {exc}")

    def _fail(self, plugin: str, distribution: str, error: str) -> None:
        failure = PluginFailure(plugin, distribution, error)
        self.failures.append(failure)
        warnings.warn(
            f"rhapsody plugin {plugin!r} from {distribution} is broken: {error}",
            RuntimeWarning,
            stacklevel=3,
        )

    # -- registries ----------------------------------------------------------------------------
    def _collect(self, hook_name: str, registry: Any) -> None:
        # Each implementation is called on its own so that the registry knows which distribution
        # is registering (for conflict messages) and one raising plugin does not hide the others.
        caller = getattr(self._pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            registry._distribution = self._distributions.get(impl.plugin_name, impl.plugin_name)
            registry._plugin = impl.plugin_name
            try:
                impl.function(registry=registry)
            except PluginConflictError as exc:
                self._conflicts[exc.name] = str(exc)
                self._fail(impl.plugin_name, registry._distribution, str(exc))
            except Exception as exc:
                self._fail(
                    impl.plugin_name,
                    registry._distribution,
                    f"{hook_name} raised {type(exc).__name__}: {exc}",
                )

    @property
    def backends(self) -> BackendRegistry:
        with self._lock:
            self.load()
            if self._backends is None:
                registry = BackendRegistry()
                self._collect("rhapsody_register_backends", registry)
                self._backends = registry
            return self._backends

    @property
    def state_mappers(self) -> StateMapperRegistry:
        with self._lock:
            self.load()
            if self._mappers is None:
                registry = StateMapperRegistry()
                self._collect("rhapsody_register_state_mappers", registry)
                self._mappers = registry
            return self._mappers

    @property
    def platforms(self) -> PlatformRegistry:
        with self._lock:
            self.load()
            if self._platforms is None:
                registry = PlatformRegistry()
                self._collect("rhapsody_register_platforms", registry)
                self._platforms = registry
            return self._platforms

    def conflict(self, name: str) -> str | None:
        """The conflict message for a name two plugins both registered, if any."""
        _ = self.backends
        return self._conflicts.get(name)

    def plugins_info(self) -> list[dict[str, Any]]:
        """One entry per loaded plugin (like `llm plugins`), then the broken ones."""
        self.load()
        backends, mappers, platforms = self.backends, self.state_mappers, self.platforms
        info: list[dict[str, Any]] = []
        for name, plugin in self._pm.list_name_plugin():
            hooks = sorted(c.name for c in self._pm.get_hookcallers(plugin) or [])
            entry: dict[str, Any] = {
                "name": name,
                "distribution": self._distributions.get(name),
                "version": self._versions.get(name) or None,
                "hooks": hooks,
                "backends": [b for b in backends.names() if backends.get(b).plugin == name],  # type: ignore[union-attr]
            }
            owned_mappers = [
                m for m in mappers.names() if mappers.distribution_of(m) == entry["distribution"]
            ]
            owned_platforms = [
                p
                for p in platforms.names()
                if platforms.distribution_of(p) == entry["distribution"]
            ]
            if owned_mappers:
                entry["state_mappers"] = owned_mappers
            if owned_platforms:
                entry["platforms"] = owned_platforms
            info.append(entry)
        for failure in self.failures:
            info.append(
                {
                    "name": failure.plugin,
                    "distribution": failure.distribution,
                    "error": failure.error,
                }
            )
        return info


def _core_version() -> str:
    from rhapsody import __version__

    return __version__


_default: PluginManager | None = None
_default_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, created and loaded on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PluginManager()
        return _default


def set_plugin_manager(manager: PluginManager | None) -> PluginManager | None:
    """Replace the process-wide manager (tests use a fresh one); returns the previous one."""
    global _default
    with _default_lock:
        previous, _default = _default, manager
        return previous


def discover_backends() -> dict[str, bool]:
    """Every known backend name -> whether it can be used here (plugin installed and its engine
    importable). Official backends that are not installed are listed as False. Imports no engine.
    """
    manager = get_plugin_manager()
    registry = manager.backends
    result = {name: False for name in OFFICIAL_BACKENDS}
    for name in registry.names():
        spec = registry.get(name)
        result[name] = spec is not None and spec.available and manager.conflict(name) is None
    return result


def backend_class(name: str) -> type[BaseExecutionBackend]:
    """The class registered as backend `name`, with an actionable error when it is missing."""
    manager = get_plugin_manager()
    conflict = manager.conflict(name)
    if conflict:
        raise PluginConflictError(conflict, name)
    spec = manager.backends.get(name)
    if spec is None:
        if name in OFFICIAL_BACKENDS:
            raise BackendError(
                f"backend {name!r} is not installed: pip install {OFFICIAL_BACKENDS[name]}"
            )
        known = sorted(set(manager.backends.names()) | set(OFFICIAL_BACKENDS))
        raise BackendError(f"unknown backend {name!r}; known backends: {', '.join(known)}")
    missing = spec.missing_requirements()
    if missing:
        raise BackendError(
            f"backend {name!r} (from {spec.distribution}) cannot run here: missing module(s) "
            f"{', '.join(missing)}; reinstall {spec.distribution}"
        )
    return spec.load()


def get_backend(name: str, /, **kwargs: Any) -> BaseExecutionBackend:
    """Create backend `name`. Usable as is, or awaited (`await get_backend(...)`) to start it."""
    return backend_class(name)(**kwargs)


def state_mapper_table(backend: str) -> Mapping[str, str]:
    """The native-state table registered for `backend` (empty when none was registered)."""
    return get_plugin_manager().state_mappers.get(backend) or {}
