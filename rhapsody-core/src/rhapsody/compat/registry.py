"""rhapsody-py's `BackendRegistry`: a thin face of our plugin registry."""

from __future__ import annotations

from rhapsody.backends.base import BaseExecutionBackend
from rhapsody.plugins import backend_class, discover_backends, get_plugin_manager

RUNTIME_DISTRIBUTION = "registered at run time"


class BackendRegistry:
    """`list_backends()`, `get_backend_class(name)`, `register_backend(name, cls)`."""

    @staticmethod
    def list_backends() -> list[str]:
        """Every backend name known here (installed or not: see `discover_backends()`)."""
        return list(discover_backends())

    @staticmethod
    def get_backend_class(name: str) -> type[BaseExecutionBackend]:
        """The class of backend `name`; `BackendError` names what to install when missing."""
        return backend_class(name)

    @staticmethod
    def register_backend(name: str, backend_class: type[BaseExecutionBackend] | str) -> None:
        """Register `backend_class` (a class, "module:Class" or "module.Class") as `name`, for
        `get_backend(name)` and `Session`. A name already registered is an error."""
        if isinstance(backend_class, str) and ":" not in backend_class:
            module, _, cls = backend_class.rpartition(".")
            backend_class = f"{module}:{cls}"
        registry = get_plugin_manager().backends
        before = registry._distribution
        registry._distribution = RUNTIME_DISTRIBUTION
        try:
            registry.add(name, backend_class)
        finally:
            registry._distribution = before
