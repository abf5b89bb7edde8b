"""rhapsody-py 0.6.0's two thin views of a `TelemetryManager`: `TelemetrySubscriber` (push:
events) and `TelemetryReader` (pull: metrics and spans, filtered by session or task)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rhapsody.telemetry.manager import Subscriber, TelemetryManager


class TelemetrySubscriber:
    """Receives the events of `manager`: `subscribe(callback)` as the manager's own."""

    def __init__(self, manager: TelemetryManager) -> None:
        self._manager = manager

    def subscribe(self, callback: Subscriber) -> None:
        self._manager.subscribe(callback)


class TelemetryReader:
    """Reads the metrics and spans of `manager`."""

    def __init__(self, manager: TelemetryManager) -> None:
        self._manager = manager

    def read_metrics(self) -> Any:
        """The current OpenTelemetry `MetricsData`."""
        return self._manager.read_metrics()

    def read_traces(
        self, session_id: str | None = None, task_id: str | None = None
    ) -> tuple[Any, ...]:
        """The finished spans, only those with these `session_id` / `task_id` attributes when
        given (the session span has no `task_id`)."""
        spans = self._manager.read_traces()
        wanted = {"session_id": session_id, "task_id": task_id}
        wanted = {key: value for key, value in wanted.items() if value is not None}
        return tuple(
            span
            for span in spans
            if all((span.attributes or {}).get(key) == value for key, value in wanted.items())
        )
