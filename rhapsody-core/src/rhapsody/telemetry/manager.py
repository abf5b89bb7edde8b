"""`TelemetryManager`: a session's task events, OpenTelemetry spans and metrics, resource samples,
the JSONL checkpoint and the exporters.

It listens to the engine only through `Session.register_callback` (one call per state change)
and keeps that call cheap: event objects are built only when someone subscribed or a checkpoint
is written, spans and metrics go through pre-built attribute dicts. OpenTelemetry is imported
in `start()`, never by importing this module.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from rhapsody.errors import RhapsodyError
from rhapsody.states import (
    CANCELED,
    DONE,
    EXECUTING,
    EXECUTING_PENDING,
    FAILED,
    FINAL_STATES,
    SCHEDULING_PENDING,
)
from rhapsody.task import dependency_uids
from rhapsody.telemetry import events as ev
from rhapsody.telemetry.resources import NodeSampler

if TYPE_CHECKING:
    from rhapsody.backends.base import BaseExecutionBackend
    from rhapsody.session import Session
    from rhapsody.telemetry.dashboard import Dashboard

logger = logging.getLogger("rhapsody.telemetry")

Subscriber = Callable[[ev.BaseEvent], Any]
SPAN_NAME = "task"  # rhapsody-py's name for a task span
SESSION_SPAN = "session"
RETRIED = "retried"  # the status of an attempt that failed and is retried
_STATUS = {DONE: "completed", FAILED: "failed", CANCELED: "canceled"}


class TelemetryError(RhapsodyError, RuntimeError):
    """Telemetry is used before `start_telemetry()`, or its optional packages are missing."""


class _Task:
    """What the manager tracks of one task."""

    __slots__ = ("attempt", "backend", "lane", "queued", "started", "state", "submitted")

    def __init__(self, backend: str, now: float) -> None:
        self.backend = backend
        self.submitted = now
        self.queued: float | None = None
        self.started: float | None = None
        self.lane = -1
        self.attempt = 0
        self.state = SCHEDULING_PENDING


class TelemetryManager:
    """Telemetry of one session; made and started by `await session.start_telemetry()`."""

    def __init__(
        self,
        session_id: str,
        *,
        resource_poll_interval: float = 5.0,
        checkpoint_path: str | os.PathLike[str] | None = None,
        checkpoint_interval: float | None = None,
        span_processors: Sequence[Any] = (),
        metric_readers: Sequence[Any] = (),
        resource_attributes: dict[str, Any] | None = None,
        otlp_endpoint: str | None = None,
        prometheus_port: int | None = None,
        prometheus_host: str = "127.0.0.1",
        node_id: str | None = None,
        default_backend: Callable[[], str | None] = lambda: None,
    ) -> None:
        if resource_poll_interval <= 0:
            raise ValueError(f"resource_poll_interval must be > 0 s, got {resource_poll_interval}")
        if checkpoint_interval is not None and checkpoint_interval <= 0:
            raise ValueError(f"checkpoint_interval must be > 0 s, got {checkpoint_interval}")
        self._session_id = session_id
        self.resource_poll_interval = resource_poll_interval
        self._checkpoint_target = checkpoint_path
        self.checkpoint_interval = checkpoint_interval or resource_poll_interval
        self._extra_processors = list(span_processors)
        self._extra_readers = list(metric_readers)
        self._resource_attributes = dict(resource_attributes or {})
        self._otlp_endpoint = otlp_endpoint
        self._prometheus = None if prometheus_port is None else (prometheus_host, prometheus_port)
        self.node_id = node_id or socket.gethostname()
        self._default_backend = default_backend
        self._subscribers: list[Subscriber] = []
        self._tasks: dict[str, _Task] = {}
        self.counts: dict[str, int] = {}  # current state -> number of tasks in it
        self._finals = {"submitted": 0, "completed": 0, "failed": 0, "canceled": 0}
        self._durations: list[float] = []  # run time of each finished attempt
        self._waits: list[float] = []  # queue wait of each started attempt
        self._busy_core_seconds = 0.0
        self._tokens = {"prompt": 0, "completion": 0}
        self.attempts: list[dict[str, Any]] = []  # finished attempts, in order (the dashboard)
        self.failures: list[dict[str, Any]] = []
        self.services: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []  # resource rows, in order (the dashboard)
        self._lanes: dict[str, list[bool]] = {}
        self._started_at: float | None = None
        self._stopped = False
        self._checkpoint: TextIO | None = None
        self.checkpoint_file: Path | None = None
        self._background: list[asyncio.Task[None]] = []
        self._sampler: NodeSampler | None = None
        self._otel: _Otel | None = None
        self.prometheus_address: str | None = None
        self._targets: list[Session | BaseExecutionBackend] = []
        self._dashboard: Dashboard | None = None

    # -- lifetime ----------------------------------------------------------------------------
    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def running(self) -> bool:
        return self._started_at is not None and not self._stopped

    async def start(self) -> None:
        """Build the OpenTelemetry providers and exporters, open the checkpoint, start sampling."""
        if self._started_at is not None:
            return
        self._otel = _Otel(self)
        if self._checkpoint_target is not None:
            self._open_checkpoint(Path(self._checkpoint_target))
        self._started_at = time.time()
        self._publish(ev.SessionStarted, None, None, self._started_at)
        self._sampler = NodeSampler(self.node_id)
        loop = asyncio.get_running_loop()
        self._background.append(loop.create_task(self._poll_resources()))
        if self._checkpoint is not None:
            self._background.append(loop.create_task(self._checkpoint_metrics()))

    def attach(self, target: Session | BaseExecutionBackend) -> None:
        """Follow every state change of a backend, or of every backend of a session (present
        and future ones)."""
        self._targets.append(target)
        target.register_callback(self._on_state)

    def close(self) -> None:
        """Stop sampling, end the session span, flush every exporter and the checkpoint."""
        if self._started_at is None or self._stopped:
            return
        self._stopped = True
        for task in self._background:
            task.cancel()
        now = time.time()
        # Attempts still running (a close while tasks run) end now, as canceled.
        for uid, record in self._tasks.items():
            if record.started is not None:
                self._end_attempt(uid, record, now, "canceled", None, None)
        self._publish(
            ev.SessionEnded, None, None, now, duration_seconds=now - self._started_at
        )
        if self._checkpoint is not None and self._otel is not None:
            self._write({"section": "metric", **self._otel.metric_snapshot(now)})
        if self._otel is not None:
            self._otel.shutdown(now)
        if self._sampler is not None:
            self._sampler.close()
        if self._dashboard is not None:
            # Open streams send their last update (telemetry stopped) within one interval.
            loop = asyncio.get_event_loop()
            loop.call_later(self._dashboard.interval * 2, self._dashboard.close)
        if self._checkpoint is not None:
            self._checkpoint.close()
            self._checkpoint = None

    stop = close  # rhapsody-py's name

    async def start_dashboard(self, *, port: int = 0, interval: float = 0.5) -> str:
        """Serve the live dashboard on 127.0.0.1:`port` (0: any free port), pushing an update
        every `interval` seconds; returns its URL (with the token). Idempotent."""
        self._require()
        if self._dashboard is None:
            from rhapsody.telemetry.dashboard import Dashboard

            dashboard = Dashboard(self, port=port, interval=interval)
            await dashboard.start()
            self._dashboard = dashboard
        assert self._dashboard.url is not None
        return self._dashboard.url

    @property
    def dashboard_url(self) -> str | None:
        return self._dashboard.url if self._dashboard is not None else None

    # -- subscribers and custom events ---------------------------------------------------------
    def subscribe(self, callback: Subscriber) -> None:
        """Call `callback(event)` for every event from now on; a coroutine function's calls
        are scheduled on the loop. A subscriber that raises is logged; the others still run."""
        if not callable(callback):
            raise TypeError(f"a subscriber must be callable, got {callback!r}")
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        self._subscribers.remove(callback)

    def emit(self, event: ev.BaseEvent) -> None:
        """Publish a custom event (`define_event`) or a built-in one (`ServiceReady`)."""
        if not isinstance(event, ev.BaseEvent):
            raise TypeError(f"emit() takes a BaseEvent, got {type(event).__name__}")
        event.emit_time = time.time()
        if isinstance(event, ev.ServiceReady):
            self.services.append(
                {"task_id": event.task_id, "endpoint": event.endpoint, "time": event.event_time}
            )
        self._dispatch(event)

    # -- reading -------------------------------------------------------------------------------
    def read_metrics(self) -> Any:
        """The current OpenTelemetry `MetricsData` (from an in-memory reader)."""
        return self._require().reader.get_metrics_data()

    def read_traces(self) -> tuple[Any, ...]:
        """Every finished span (`ReadableSpan`): one per task attempt, then the session's."""
        return tuple(self._require().buffer.spans)

    def task_spans(self) -> list[dict[str, Any]]:
        """The task spans as dicts (rhapsody-py's shape, plus attempt, node and lane)."""
        spans = []
        for span in self.read_traces():
            if span.name != SPAN_NAME:
                continue
            attributes = dict(span.attributes or {})
            spans.append(
                {
                    **attributes,
                    "duration_seconds": (span.end_time - span.start_time) / 1e9,
                    "span_id": f"0x{span.context.span_id:016x}",
                    "trace_id": f"0x{span.context.trace_id:032x}",
                }
            )
        return spans

    def task_count(self) -> dict[str, int]:
        """Tasks submitted, completed, failed, canceled, and running now."""
        return {**self._finals, "running": self.counts.get(EXECUTING, 0)}

    def session_duration(self) -> float:
        if self._started_at is None:
            return 0.0
        return time.time() - self._started_at

    def summary(self) -> dict[str, Any]:
        """Counts, run-time and queue-wait statistics, utilisation, tokens, latest resources."""
        elapsed = self.session_duration()
        cores = _cores(self._targets)
        capacity = cores * elapsed
        latest: dict[str, dict[str, Any]] = {}
        for row in self.samples:
            gpu = row.get("gpu_id")
            key = row["node_id"] if gpu is None else f"{row['node_id']}/gpu{gpu}"
            latest[key] = row
        return {
            "session_id": self._session_id,
            "duration_seconds": round(elapsed, 6),
            "tasks": self.task_count(),
            "duration": _stats(self._durations),
            "queue_wait": _stats(self._waits),
            "utilization": {
                "busy_core_seconds": round(self._busy_core_seconds, 6),
                "cores": cores,
                "fraction": round(self._busy_core_seconds / capacity, 6) if capacity else None,
            },
            "tokens": dict(self._tokens),
            "resources": latest,
        }

    # -- the engine's callback (hot path) -----------------------------------------------------
    def _on_state(self, task: dict[str, Any], state: str) -> None:
        if self._stopped:
            return
        now = time.time()
        uid = task["uid"]
        counts = self.counts
        record = self._tasks.get(uid)
        if record is None:
            backend = task.get("backend") or self._default_backend() or "unknown"
            record = self._tasks[uid] = _Task(backend, now)
            self._finals["submitted"] += 1
            assert self._otel is not None
            self._otel.submitted.add(1, self._otel.attrs(backend))
            if self._subscribers or self._checkpoint is not None:
                self._publish(ev.TaskCreated, uid, record.backend, now, attributes=_describe(task))
                if state == SCHEDULING_PENDING:
                    self._publish(ev.TaskSubmitted, uid, record.backend, now)
        else:
            counts[record.state] -= 1
        counts[state] = counts.get(state, 0) + 1
        previous, record.state = record.state, state
        if state == EXECUTING:
            self._start_attempt(uid, record, task, now)
        elif state == EXECUTING_PENDING:
            if previous == EXECUTING:  # a failed attempt that is retried
                self._end_attempt(uid, record, now, RETRIED, task, None)
            record.queued = now
            if self._subscribers or self._checkpoint is not None:
                attributes = {"attempt": record.attempt + 1}
                self._publish(ev.TaskQueued, uid, record.backend, now, attributes=attributes)
        elif state in FINAL_STATES:
            self._finish(uid, record, task, state, now)

    def _start_attempt(self, uid: str, record: _Task, task: dict[str, Any], now: float) -> None:
        otel = self._otel
        assert otel is not None
        record.started = now
        record.attempt += 1
        lanes = self._lanes.setdefault(record.backend, [])
        try:
            record.lane = lanes.index(False)
            lanes[record.lane] = True
        except ValueError:
            record.lane = len(lanes)
            lanes.append(True)
        attrs = otel.attrs(record.backend)
        otel.started.add(1, attrs)
        otel.running.add(1, attrs)
        if record.queued is not None:
            wait = now - record.queued
            self._waits.append(wait)
            otel.queue_wait.record(wait, attrs)
        if self._subscribers or self._checkpoint is not None:
            self._publish(
                ev.TaskStarted,
                uid,
                record.backend,
                now,
                node_id=self.node_id,
                attributes={"attempt": record.attempt, "slot": record.lane},
            )

    def _end_attempt(
        self,
        uid: str,
        record: _Task,
        now: float,
        status: str,
        task: dict[str, Any] | None,
        reason: str | None,
    ) -> float:
        otel = self._otel
        assert otel is not None and record.started is not None
        run = now - record.started
        attrs = otel.attrs(record.backend)
        otel.running.add(-1, attrs)
        otel.duration.record(run, attrs)
        self._durations.append(run)
        cores = int(task.get("cores") or 1) if task is not None else 1
        self._busy_core_seconds += run * cores
        self._lanes[record.backend][record.lane] = False
        attempt = {
            "task_id": uid,
            "backend": record.backend,
            "node_id": self.node_id,
            "slot": record.lane,
            "attempt": record.attempt,
            "start": record.started,
            "end": now,
            "status": status,
        }
        self.attempts.append(attempt)
        span = otel.task_span(uid, record, task, now, status, reason)
        if self._checkpoint is not None:
            self._write(
                {
                    "section": "span",
                    "name": SPAN_NAME,
                    "span_id": f"0x{span.context.span_id:016x}",
                    "trace_id": f"0x{span.context.trace_id:032x}",
                    "parent_span_id": otel.session_span_id,
                    "start_time_s": record.started,
                    "end_time_s": now,
                    "duration_ms": round(run * 1e3, 3),
                    "status_code": "ERROR" if status == "failed" else "OK",
                    "status_description": reason,
                    "attributes": dict(span.attributes or {}),
                    "dependencies": dependency_uids(task) if task is not None else [],
                }
            )
        record.started = None
        return run

    def _finish(
        self, uid: str, record: _Task, task: dict[str, Any], state: str, now: float
    ) -> None:
        otel = self._otel
        assert otel is not None
        status = _STATUS[state]
        reason = None
        if state == FAILED:
            exception = task.get("exception")
            reason = str(exception) if exception is not None else "failed"
        run = 0.0
        if record.started is not None:
            run = self._end_attempt(uid, record, now, status, task, reason)
        self._finals[status] += 1
        attrs = otel.attrs(record.backend)
        otel.finals[state].add(1, attrs)
        usage = task.get("usage")
        if isinstance(usage, dict):
            for kind in ("prompt", "completion"):
                count = usage.get(f"{kind}_tokens")
                if isinstance(count, int) and count > 0:
                    self._tokens[kind] += count
                    otel.tokens.add(count, otel.token_attrs(record.backend, kind))
        if state == FAILED:
            exception = task.get("exception")
            self.failures.append(
                {
                    "task_id": uid,
                    "backend": record.backend,
                    "time": now,
                    "reason": reason,
                    "error_type": type(exception).__name__ if exception else "unknown",
                    "exit_code": task.get("exit_code"),
                }
            )
        if self._subscribers or self._checkpoint is not None:
            fields: dict[str, Any] = {"duration_seconds": run}
            if state == FAILED:
                fields["error_type"] = self.failures[-1]["error_type"]
                fields["attributes"] = {"reason": reason, "exit_code": task.get("exit_code")}
            elif task.get("exit_code") is not None:
                fields["attributes"] = {"exit_code": task["exit_code"]}
            cls = {DONE: ev.TaskCompleted, FAILED: ev.TaskFailed, CANCELED: ev.TaskCanceled}[state]
            self._publish(cls, uid, record.backend, now, **fields)
        del self._tasks[uid]

    # -- publishing ---------------------------------------------------------------------------
    def _publish(
        self,
        cls: type[ev.BaseEvent],
        uid: str | None,
        backend: str | None,
        now: float,
        **fields: Any,
    ) -> None:
        event = cls(
            session_id=self._session_id,
            backend=backend,
            task_id=uid,
            event_time=now,
            emit_time=now,
            **fields,
        )
        self._dispatch(event)

    def _dispatch(self, event: ev.BaseEvent) -> None:
        if self._checkpoint is not None:
            self._write({"section": "event", **event.to_dict()})
        for subscriber in self._subscribers:
            try:
                result = subscriber(event)
                if inspect.isawaitable(result):
                    future = asyncio.ensure_future(result)
                    future.add_done_callback(functools.partial(_log_failure, subscriber))
            except Exception:
                logger.exception(
                    "telemetry subscriber %r raised on %s; ignored", subscriber, event.event_type
                )

    def _write(self, record: dict[str, Any]) -> None:
        assert self._checkpoint is not None
        self._checkpoint.write(json.dumps(record, default=str) + "\n")

    def _open_checkpoint(self, target: Path) -> None:
        if target.is_dir():  # rhapsody-py's meaning: a directory to write a session file into
            target = target / f"{self._session_id}.{int(time.time())}.telemetry.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        # Line-buffered: every record is on disk as soon as it is written (a crash loses none).
        self._checkpoint = open(target, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self.checkpoint_file = target

    # -- background loops ---------------------------------------------------------------------
    async def _poll_resources(self) -> None:
        assert self._sampler is not None and self._otel is not None
        while True:
            await asyncio.sleep(self.resource_poll_interval)
            now = time.time()
            for row in self._sampler.sample():
                row["time"] = now
                self.samples.append(row)
                self._otel.record_resources(row)
                if self._subscribers or self._checkpoint is not None:
                    fields = {k: v for k, v in row.items() if k not in ("time",)}
                    self._publish(ev.ResourceUpdate, None, None, now, **fields)

    async def _checkpoint_metrics(self) -> None:
        assert self._otel is not None
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            if self._checkpoint is not None:
                self._write({"section": "metric", **self._otel.metric_snapshot(time.time())})

    def _require(self) -> _Otel:
        if self._otel is None:
            raise TelemetryError("telemetry is not started: call 'await manager.start()' first")
        return self._otel


class _Otel:
    """The OpenTelemetry side of a manager: providers, instruments, the session span."""

    def __init__(self, manager: TelemetryManager) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.trace import Status, StatusCode
        except ImportError as exc:
            raise TelemetryError(
                "telemetry needs the OpenTelemetry SDK: pip install 'rhapsody-core[telemetry]'"
                f" ({exc})"
            ) from exc
        self._trace = trace
        self._status = Status
        self._codes = StatusCode
        self.session_id = manager.session_id
        resource = Resource.create(
            {
                "service.name": "rhapsody",
                "session_id": manager.session_id,
                "host.name": manager.node_id,
                **manager._resource_attributes,
            }
        )
        self.buffer = SpanBuffer()
        self.tracer_provider = TracerProvider(resource=resource)
        # SpanBuffer has the SpanExporter interface without importing OpenTelemetry at import.
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(cast(Any, self.buffer)))
        processors = list(manager._extra_processors)
        readers: list[Any] = list(manager._extra_readers)
        self.reader = InMemoryMetricReader()
        readers.append(self.reader)
        self._http_server: Any = None
        if manager._otlp_endpoint is not None:
            processors.append(_otlp_span_processor(manager._otlp_endpoint))
            readers.append(_otlp_metric_reader(manager._otlp_endpoint))
        if manager._prometheus is not None:
            reader, server, address = _prometheus_reader(*manager._prometheus)
            readers.append(reader)
            self._http_server = server
            manager.prometheus_address = address
        for processor in processors:
            self.tracer_provider.add_span_processor(processor)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        tracer = self.tracer_provider.get_tracer("rhapsody")
        self.tracer = tracer
        self.session_span = tracer.start_span(
            SESSION_SPAN, attributes={"session_id": manager.session_id}
        )
        self.session_context = trace.set_span_in_context(self.session_span)
        self.session_span_id = f"0x{self.session_span.get_span_context().span_id:016x}"
        meter = self.meter_provider.get_meter("rhapsody")
        self.submitted = meter.create_counter(
            "tasks_submitted", description="Total tasks submitted"
        )
        self.started = meter.create_counter("tasks_started", description="Task attempts started")
        self.finals = {
            DONE: meter.create_counter("tasks_completed", description="Total tasks completed"),
            FAILED: meter.create_counter("tasks_failed", description="Total tasks failed"),
            CANCELED: meter.create_counter("tasks_canceled", description="Total tasks canceled"),
        }
        self.running = meter.create_up_down_counter(
            "tasks_running", description="Tasks currently running"
        )
        self.duration = meter.create_histogram(
            "task_duration_seconds", unit="s", description="Run time of each task attempt"
        )
        self.queue_wait = meter.create_histogram(
            "task_queue_wait_seconds",
            unit="s",
            description="Time from ready to run (dependencies DONE) until the attempt started",
        )
        self.tokens = meter.create_counter(
            "inference_tokens", description="Tokens of AI tasks (token_type: prompt, completion)"
        )
        self.gauges = {
            name: meter.create_gauge(name, unit=unit, description=text)
            for name, unit, text in _RESOURCE_GAUGES
        }
        self.resource_counters = {
            name: meter.create_counter(name, unit="By", description=text)
            for name, text in _RESOURCE_COUNTERS
        }
        self._attrs: dict[str, dict[str, str]] = {}
        self._token_attrs: dict[tuple[str, str], dict[str, str]] = {}
        self._node_attrs: dict[tuple[str, int | None], dict[str, Any]] = {}

    def attrs(self, backend: str) -> dict[str, str]:
        found = self._attrs.get(backend)
        if found is None:
            found = self._attrs[backend] = {"session_id": self.session_id, "backend": backend}
        return found

    def token_attrs(self, backend: str, kind: str) -> dict[str, str]:
        key = (backend, kind)
        found = self._token_attrs.get(key)
        if found is None:
            found = self._token_attrs[key] = {**self.attrs(backend), "token_type": kind}
        return found

    def task_span(
        self,
        uid: str,
        record: _Task,
        task: dict[str, Any] | None,
        end: float,
        status: str,
        reason: str | None,
    ) -> Any:
        assert record.started is not None
        attributes: dict[str, Any] = {
            "session_id": self.session_id,
            "task_id": uid,
            "backend": record.backend,
            "status": status,
            "attempt": record.attempt,
            "node": _node_of(task),
            "slot": record.lane,
        }
        if task is not None:
            attributes["cores"] = int(task.get("cores") or 1)
            attributes["gpus"] = int(task.get("gpus") or 0)
            if task.get("exit_code") is not None:
                attributes["exit_code"] = int(task["exit_code"])
            kind = "executable" if task.get("executable") is not None else "function"
            attributes["task_type"] = kind
        span = self.tracer.start_span(
            SPAN_NAME,
            context=self.session_context,
            attributes=attributes,
            start_time=int(record.started * 1e9),
        )
        if status == "failed":
            span.set_status(self._status(self._codes.ERROR, reason))
        span.end(end_time=int(end * 1e9))
        return span

    def record_resources(self, row: dict[str, Any]) -> None:
        key = (row["node_id"], row.get("gpu_id"))
        attrs = self._node_attrs.get(key)
        if attrs is None:
            attrs = {"session_id": self.session_id, "node_id": row["node_id"]}
            if row.get("gpu_id") is not None:
                attrs["gpu_id"] = str(row["gpu_id"])
            self._node_attrs[key] = attrs
        for name, field in _GAUGE_FIELDS.items():
            value = row.get(field)
            if value is not None:
                self.gauges[name].set(value, attrs)
        for name, field in _COUNTER_FIELDS.items():
            value = row.get(field)
            if value:
                self.resource_counters[name].add(value, attrs)

    def metric_snapshot(self, now: float) -> dict[str, Any]:
        """Every metric summed over its data points (histograms: count and sum)."""
        snapshot: dict[str, Any] = {"checkpoint_time": now}
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    points: list[Any] = list(metric.data.data_points)
                    if hasattr(points[0] if points else None, "bucket_counts"):
                        snapshot[f"{metric.name}_count"] = sum(p.count for p in points)
                        snapshot[f"{metric.name}_sum"] = sum(p.sum for p in points)
                    elif points:
                        snapshot[metric.name] = sum(p.value for p in points)
        return snapshot

    def shutdown(self, now: float) -> None:
        self.session_span.end(end_time=int(now * 1e9))
        for provider in (self.tracer_provider, self.meter_provider):
            try:
                provider.shutdown()
            except Exception:
                logger.exception("telemetry: an exporter failed to shut down")
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()


class SpanBuffer:
    """An in-memory span exporter: `read_traces()` reads what it holds."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_RESOURCE_GAUGES = [
    ("node_cpu_utilization", "%", "Node CPU utilization percent"),
    ("node_memory_utilization", "%", "Node memory utilization percent"),
    ("gpu_utilization", "%", "GPU utilization percent (NVML)"),
    ("gpu_memory_utilization", "%", "GPU memory used, percent of total (NVML)"),
]
_GAUGE_FIELDS = {
    "node_cpu_utilization": "cpu_percent",
    "node_memory_utilization": "memory_percent",
    "gpu_utilization": "gpu_percent",
    "gpu_memory_utilization": "gpu_memory_percent",
}
_RESOURCE_COUNTERS = [
    ("node_disk_read_bytes", "Bytes read from the node's disks"),
    ("node_disk_write_bytes", "Bytes written to the node's disks"),
    ("node_network_sent_bytes", "Bytes the node sent"),
    ("node_network_received_bytes", "Bytes the node received"),
]
_COUNTER_FIELDS = {
    "node_disk_read_bytes": "disk_read_bytes",
    "node_disk_write_bytes": "disk_write_bytes",
    "node_network_sent_bytes": "net_sent_bytes",
    "node_network_received_bytes": "net_recv_bytes",
}


def _otlp_span_processor(endpoint: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"))


def _otlp_metric_reader(endpoint: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    exporter = OTLPMetricExporter(endpoint=endpoint.rstrip("/") + "/v1/metrics")
    return PeriodicExportingMetricReader(exporter)


def _prometheus_reader(host: str, port: int) -> tuple[Any, Any, str]:
    try:
        import prometheus_client
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
    except ImportError as exc:
        raise TelemetryError(
            "prometheus_port needs opentelemetry-exporter-prometheus: "
            f"pip install 'rhapsody-core[telemetry]' ({exc})"
        ) from exc
    registry = prometheus_client.CollectorRegistry()
    reader = PrometheusMetricReader()
    # The reader registers with the global registry; serve a private one so that two sessions
    # of one process do not publish each other's series.
    prometheus_client.REGISTRY.unregister(reader._collector)
    registry.register(reader._collector)
    server, _thread = prometheus_client.start_http_server(port, addr=host, registry=registry)
    return reader, server, f"{host}:{server.server_port}"


def _describe(task: dict[str, Any]) -> dict[str, Any]:
    executable = task.get("executable")
    if executable is not None:
        return {"executable": str(executable), "task_type": "executable"}
    function = task.get("function")
    name = getattr(function, "__qualname__", None) or type(function).__name__
    return {"function": str(name), "task_type": "function"}


def _node_of(task: dict[str, Any] | None) -> str:
    node = task.get("node") if task is not None else None
    return str(node) if node else socket.gethostname()


def _cores(targets: Iterable[Session | BaseExecutionBackend]) -> int:
    """Cores the backends schedule into (those whose engine places tasks itself count 0)."""
    from rhapsody.session import Session

    total = 0
    for target in targets:
        backends = target.backends.values() if isinstance(target, Session) else [target]
        for backend in backends:
            pool = backend.resources
            if pool is not None:
                total += pool.total_cores
    return total


def _stats(values: Iterable[float]) -> dict[str, float | int]:
    values = list(values)
    if not values:
        return {"count": 0, "total_seconds": 0.0, "mean_seconds": 0.0, "min_seconds": 0.0,
                "max_seconds": 0.0}
    total = sum(values)
    return {
        "count": len(values),
        "total_seconds": round(total, 6),
        "mean_seconds": round(total / len(values), 6),
        "min_seconds": round(min(values), 6),
        "max_seconds": round(max(values), 6),
    }


def _log_failure(subscriber: Subscriber, future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error(
            "async telemetry subscriber %r raised; ignored",
            subscriber,
            exc_info=future.exception(),
        )
