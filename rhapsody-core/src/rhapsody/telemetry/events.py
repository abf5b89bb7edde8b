"""Typed telemetry events (plain dataclasses: importing them imports no OpenTelemetry).

Names, fields and meanings follow rhapsody-py 0.6.0's `rhapsody.telemetry.events`: every event
has `event_id`, `event_type` (the class name), `event_time` (when it happened, epoch seconds),
`emit_time` (when it was published), `session_id`, `backend`, `task_id`, `node_id` and free-form
`attributes`. `define_event("myapp.Thing", field=type)` makes a custom event type.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from typing import Any, TypeVar

E = TypeVar("E", bound="BaseEvent")


# Unique ids without uuid4's cost per event: a random prefix per process and a counter.
_PREFIX = os.urandom(8).hex()
_counter = itertools.count()


def _new_id() -> str:
    return f"{_PREFIX}{next(_counter):016x}"


@dataclasses.dataclass(kw_only=True)
class BaseEvent:
    """Fields every event carries."""

    session_id: str
    backend: str | None
    task_id: str | None = None
    node_id: str | None = None
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)
    event_time: float = dataclasses.field(default_factory=time.time)
    emit_time: float = dataclasses.field(default_factory=time.time)
    event_id: str = dataclasses.field(default_factory=_new_id)
    event_type: str = dataclasses.field(init=False, default="")

    def __post_init__(self) -> None:
        self.event_type = type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        """The event's fields as a dict (the checkpoint's `event` records)."""
        fields = dict(self.__dict__)
        fields["attributes"] = dict(self.attributes)
        return fields


@dataclasses.dataclass(kw_only=True)
class SessionStarted(BaseEvent):
    """Telemetry started for a session."""


@dataclasses.dataclass(kw_only=True)
class SessionEnded(BaseEvent):
    """Telemetry of a session stopped; `duration_seconds` since it started."""

    duration_seconds: float = 0.0


@dataclasses.dataclass(kw_only=True)
class TaskCreated(BaseEvent):
    """The engine admitted the task (its first state change)."""


@dataclasses.dataclass(kw_only=True)
class TaskSubmitted(BaseEvent):
    """The task was handed to its backend's scheduler (SCHEDULING_PENDING)."""


@dataclasses.dataclass(kw_only=True)
class TaskQueued(BaseEvent):
    """Its dependencies are DONE and it waits for a slot (EXECUTING_PENDING); again on a retry."""


@dataclasses.dataclass(kw_only=True)
class TaskStarted(BaseEvent):
    """An attempt started running (EXECUTING)."""


@dataclasses.dataclass(kw_only=True)
class TaskCompleted(BaseEvent):
    """DONE; `duration_seconds` is the last attempt's run time."""

    duration_seconds: float = 0.0


@dataclasses.dataclass(kw_only=True)
class TaskFailed(BaseEvent):
    """FAILED; `error_type` is the exception's class name, `attributes["reason"]` the reason."""

    duration_seconds: float = 0.0
    error_type: str = "unknown"


@dataclasses.dataclass(kw_only=True)
class TaskCanceled(BaseEvent):
    """CANCELED."""

    duration_seconds: float = 0.0


@dataclasses.dataclass(kw_only=True)
class ServiceReady(BaseEvent):
    """A service task passed its readiness probe; `endpoint` is where it listens.

    Published by the services capability (issue: services and inference) through
    `TelemetryManager.emit`; the dashboard lists these under "services"."""

    endpoint: str = ""


@dataclasses.dataclass(kw_only=True)
class ResourceUpdate(BaseEvent):
    """One sample of one node (`gpu_id` None) or of one GPU of a node (`gpu_id` set).

    Percentages are 0-100; disk and network figures are bytes since the previous sample."""

    cpu_percent: float | None = None
    memory_percent: float | None = None
    gpu_percent: float | None = None
    gpu_memory_percent: float | None = None
    gpu_id: int | None = None
    disk_read_bytes: float | None = None
    disk_write_bytes: float | None = None
    net_sent_bytes: float | None = None
    net_recv_bytes: float | None = None


TASK_EVENTS: tuple[type[BaseEvent], ...] = (
    TaskCreated,
    TaskSubmitted,
    TaskQueued,
    TaskStarted,
    TaskCompleted,
    TaskFailed,
    TaskCanceled,
)


def define_event(name: str, **fields: type) -> type[BaseEvent]:
    """A new event type named `name` (namespaced: `"myapp.ModelLoaded"`) with extra `fields`
    (each defaults to its type's empty value: `""`, `0`, `None` for other types)."""
    if "." not in name or not all(part.isidentifier() for part in name.split(".")):
        raise ValueError(
            f"define_event: name {name!r} must be namespaced dotted identifiers "
            "(e.g. 'myapp.ModelLoaded'), so custom events cannot collide with built-in ones"
        )
    taken = {f.name for f in dataclasses.fields(BaseEvent)}
    clash = sorted(taken & set(fields))
    if clash:
        raise ValueError(f"define_event {name!r}: fields {clash} are already BaseEvent fields")
    specs = [
        (field, kind, dataclasses.field(default_factory=kind if kind in _EMPTY else _none))
        for field, kind in fields.items()
    ]
    cls = dataclasses.make_dataclass(name, specs, bases=(BaseEvent,), kw_only=True)
    cls.__post_init__ = _named_post_init(name)  # type: ignore[attr-defined]
    return cls


_EMPTY = (str, int, float)


def _none() -> None:
    return None


def _named_post_init(name: str) -> Any:
    def post_init(self: BaseEvent) -> None:
        self.event_type = name

    return post_init


def make_event(cls: type[E], *, session_id: str, backend: str | None, **fields: Any) -> E:
    """An event of type `cls` happening now."""
    return cls(session_id=session_id, backend=backend, **fields)
