"""rhapsody-py's import paths and constructor arguments of the engine backends
(`rhapsody.backends.DaskExecutionBackend(resources=..., client=...)`,
`rhapsody.backends.execution.radical_pilot.RadicalExecutionBackend(resources=...)`, ...).

Resolved through the plugin registry only when used (importing `rhapsody.backends` still
imports no engine). The classes returned are thin subclasses of the plugins' backends that
translate the original's arguments into ours and pass every other argument through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rhapsody.backends.base import BaseExecutionBackend

#: old class name -> the backend name its plugin registers
CLASSES = {
    "DaskExecutionBackend": "dask",
    "RadicalExecutionBackend": "radical_pilot",
}
_built: dict[str, type[BaseExecutionBackend]] = {}


def engine_class(class_name: str) -> type[BaseExecutionBackend]:
    """The class behind an old name; `BackendError` says which distribution to install."""
    cls = _built.get(class_name)
    if cls is None:
        from rhapsody.plugins import backend_class

        base = backend_class(CLASSES[class_name])
        translate = _dask if class_name == "DaskExecutionBackend" else _radical
        cls = _built[class_name] = type(
            class_name,
            (base,),
            {
                "__init__": _translating_init(base, translate),
                "__module__": base.__module__,
                "__doc__": f"{base.__doc__}\n\nAlso takes rhapsody-py's arguments "
                "(docs/migrating.md).",
            },
        )
    return cls


def _translating_init(base: type[BaseExecutionBackend], translate: Any) -> Any:
    def __init__(self: BaseExecutionBackend, *args: Any, **kwargs: Any) -> None:
        args, kwargs = translate(args, kwargs)
        base.__init__(self, *args, **kwargs)

    return __init__


def _dask(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    # rhapsody-py: DaskExecutionBackend(resources=None, name="dask", cluster=None, client=None),
    # `resources` being the keyword arguments of the local cluster it starts.
    if args and (args[0] is None or isinstance(args[0], Mapping)):
        kwargs.setdefault("resources", args[0])
        args = args[1:]
        if args and isinstance(args[0], str):
            kwargs.setdefault("name", args[0])
            args = args[1:]
    resources = kwargs.pop("resources", None)
    if resources is not None:
        if not isinstance(resources, Mapping):
            raise TypeError(f"resources must be a dict, got {type(resources).__name__}")
        resources = dict(resources)
        for ours in ("n_workers", "threads_per_worker"):
            if ours in resources:
                kwargs.setdefault(ours, resources.pop(ours))
        if resources:
            kwargs["cluster_kwargs"] = {**resources, **(kwargs.get("cluster_kwargs") or {})}
    client = kwargs.pop("client", None)
    if client is not None:  # the scheduler an existing Client talks to
        kwargs.setdefault("address", client.scheduler.address)
    return args, kwargs


def _radical(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    # rhapsody-py: RadicalExecutionBackend(resources=None, raptor_config=None, name=...),
    # `resources` being the pilot description.
    if args and (args[0] is None or isinstance(args[0], Mapping)):
        kwargs.setdefault("resources", args[0])
        args = args[1:]
    resources = kwargs.pop("resources", None)
    if resources is not None:
        if not isinstance(resources, Mapping):
            raise TypeError(f"resources must be a dict, got {type(resources).__name__}")
        kwargs["pilot_description"] = {**resources, **(kwargs.get("pilot_description") or {})}
    if kwargs.pop("raptor_config", None) is not None:
        raise TypeError(
            "raptor_config is not supported: function tasks run in a Raptor master this backend "
            "starts itself; size it with raptor_workers=, raptor_worker_cores=, "
            "raptor_worker_gpus= (docs/backends/radical_pilot.md)"
        )
    return args, kwargs
