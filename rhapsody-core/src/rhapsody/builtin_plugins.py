"""Core's own backends, registered as built-in plugins (not through entry points)."""

from __future__ import annotations

from rhapsody.hookspecs import hookimpl
from rhapsody.plugins import BackendRegistry


class ConcurrentPlugin:
    @hookimpl
    def rhapsody_register_backends(self, registry: BackendRegistry) -> None:
        registry.add(
            "concurrent", "rhapsody.backends.execution.concurrent:ConcurrentExecutionBackend"
        )


class NoopPlugin:
    @hookimpl
    def rhapsody_register_backends(self, registry: BackendRegistry) -> None:
        registry.add("noop", "rhapsody.backends.execution.noop:NoopExecutionBackend")


class InferencePlugin:
    @hookimpl
    def rhapsody_register_backends(self, registry: BackendRegistry) -> None:
        registry.add(
            "inference", "rhapsody.inference.backend:InferenceBackend", requires=("httpx",)
        )


PLUGINS: dict[str, object] = {
    "concurrent": ConcurrentPlugin(),
    "noop": NoopPlugin(),
    "inference": InferencePlugin(),
}
