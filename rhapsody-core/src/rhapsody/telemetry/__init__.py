"""Telemetry of a session: typed events, OpenTelemetry spans and metrics, resource samples,
a JSONL checkpoint, OTLP and Prometheus exports, and a live dashboard.

Opt-in: `manager = await session.start_telemetry(...)`. Importing this package imports no
OpenTelemetry; `start()` does (install `rhapsody-core[telemetry]`).
"""

from __future__ import annotations

from rhapsody.telemetry.events import (
    TASK_EVENTS,
    BaseEvent,
    ResourceUpdate,
    ServiceReady,
    SessionEnded,
    SessionStarted,
    TaskCanceled,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSubmitted,
    define_event,
    make_event,
)
from rhapsody.telemetry.interfaces import TelemetryReader, TelemetrySubscriber
from rhapsody.telemetry.manager import TelemetryError, TelemetryManager

__all__ = [
    "TASK_EVENTS",
    "BaseEvent",
    "ResourceUpdate",
    "ServiceReady",
    "SessionEnded",
    "SessionStarted",
    "TaskCanceled",
    "TaskCompleted",
    "TaskCreated",
    "TaskFailed",
    "TaskQueued",
    "TaskStarted",
    "TaskSubmitted",
    "TelemetryError",
    "TelemetryManager",
    "TelemetryReader",
    "TelemetrySubscriber",
    "define_event",
    "make_event",
]
