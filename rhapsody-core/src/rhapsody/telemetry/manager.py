"""`TelemetryManager`: a session's task events, spans and metrics, resource samples, the JSONL
checkpoint and the exports.

It follows the engine only through `register_callback` (one call per state change), and that
call only logs the change: the bookkeeping (counters, attempt records, slots) is done in batches
when something reads, at every resource-sampling tick, and every second while exporting; at
once, with typed event objects, only while someone subscribed or a checkpoint is written.
OpenTelemetry data is made from the records in batches too (`rhapsody.telemetry.otel`).
OpenTelemetry is imported by `start()`, never by this module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import heapq
import inspect
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rhapsody.errors import RhapsodyError
from rhapsody.states import (
    CANCELED,
    DONE,
    EXECUTING,
    EXECUTING_PENDING,
    FAILED,
    SCHEDULING_PENDING,
)
from rhapsody.task import dependency_uids
from rhapsody.telemetry import attempts as at
from rhapsody.telemetry import events as ev
from rhapsody.telemetry.resources import BYTE_FIELDS, NodeSampler
from rhapsody.telemetry.ticker import Ticker

if TYPE_CHECKING:
    from rhapsody.backends.base import BaseExecutionBackend
    from rhapsody.session import Session
    from rhapsody.telemetry.dashboard import Dashboard
    from rhapsody.telemetry.otel import Otel

logger = logging.getLogger("rhapsody.telemetry")

Subscriber = Callable[[ev.BaseEvent], Any]
RETRIED = "retried"  # the status of an attempt that failed and is retried
EXPORT_INTERVAL = 1.0  # seconds between batches to exporters (spans, histogram points)
_RESOURCE_FIELDS = {f.name for f in dataclasses.fields(ev.ResourceUpdate)} - {
    f.name for f in dataclasses.fields(ev.BaseEvent)
} | {"node_id"}
_FINAL = {
    DONE: ("completed", at.COMPLETED),
    FAILED: ("failed", at.FAILED),
    CANCELED: ("canceled", at.CANCELED),
}


class TelemetryError(RhapsodyError, RuntimeError):
    """Telemetry is used before it started, or its optional packages are missing."""


class _Backend:
    """What the manager tracks of one backend: its counters and its slots (lanes)."""

    __slots__ = ("counters", "free", "lanes", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.counters = [0, 0, 0, 0, 0, 0]  # indexed by attempts.SUBMITTED ... RUNNING
        self.free: list[int] = []  # a heap of the lanes freed by attempts that ended
        self.lanes = 0  # lanes made so far


# A running attempt (TelemetryManager._running): a tuple indexed by these (_WHERE: the node
# its backend said it started on, or None).
_BACKEND, _STARTED, _LANE, _ATTEMPT, _QUEUED, _WHERE = range(6)


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
        resource: Any = None,
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
        self.checkpoint_interval = checkpoint_interval or min(resource_poll_interval, 1.0)
        self.span_processors = list(span_processors)
        self.metric_readers = list(metric_readers)
        self.resource_attributes = dict(resource_attributes or {})
        self.resource = resource  # an OpenTelemetry Resource merged over ours (rhapsody-py's)
        self.otlp_endpoint = otlp_endpoint
        self.prometheus = None if prometheus_port is None else (prometheus_host, prometheus_port)
        self.prometheus_address: str | None = None
        self.node_id = node_id or socket.gethostname()
        self._default_backend = default_backend
        self._subscribers: list[Subscriber] = []
        self._eventful = False  # someone wants event objects: subscribers or the checkpoint
        # Every live task is in one of these three, by uid. The callback touches data that
        # stays small and hot in the cache (`_waiting` holds only tasks with unfinished
        # dependencies, `_running` only running ones); only `_queued` grows with the backlog.
        self._waiting: set[str] = set()  # SCHEDULING_PENDING: waiting for dependencies
        self._queued: dict[str, float] = {}  # EXECUTING_PENDING: since when
        self._running: dict[str, tuple[Any, ...]] = {}  # EXECUTING: _BACKEND, _STARTED, ...
        self._retried: dict[str, int] = {}  # attempts that failed and were retried, by uid
        self._backend_of: dict[str, _Backend] = {}
        self._per_backend: dict[str, list[int]] = {}
        self._tokens: dict[tuple[str, str], int] = {}
        self._records: list[tuple[Any, ...]] = []
        self._failures: list[dict[str, Any]] = []
        # The engine's callback only logs (task, state, time); `_catch_up` does the
        # bookkeeping of the log in batches, when something reads, exports or subscribes.
        self._log: list[Any] = []  # task, state, time, task, state, time, ...
        self._catching_up = False
        self._on_state, self._send_states_to = _state_log(self._log)
        self.services: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []  # resource rows, in order
        self.resource_latest: dict[tuple[str, int | None], dict[str, Any]] = {}
        self.resource_totals: dict[tuple[str, int | None], dict[str, float]] = {}
        self.started_at = 0.0
        self._started = False
        self._stopped = False
        self._checkpoint: TextIO | None = None
        self._checkpointed = 0  # records already written to the checkpoint
        self.checkpoint_file: Path | None = None
        self._tickers: list[Ticker] = []
        self._sampler: NodeSampler | None = None
        self._otel: Otel | None = None
        self._targets: list[Session | BaseExecutionBackend] = []
        self._dashboard: Dashboard | None = None

    # -- lifetime ----------------------------------------------------------------------------
    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def running(self) -> bool:
        return self._started and not self._stopped

    async def start(self) -> None:
        """Build the OpenTelemetry providers and exporters, open the checkpoint, start sampling."""
        if self._started:
            return
        from rhapsody.telemetry.otel import Otel

        self.started_at = time.time()
        self._otel = Otel(self)
        try:
            if self._checkpoint_target is not None:
                self._open_checkpoint(Path(self._checkpoint_target))
        except OSError:
            self._otel.shutdown(time.time())
            raise
        self._started = True
        self._publish(ev.SessionStarted, None, None, self.started_at)
        self._sampler = NodeSampler(self.node_id)
        self._tickers.append(
            Ticker(self.resource_poll_interval, self._poll_resources, "rhapsody-telemetry-sampling")
        )
        if self._checkpoint is not None or self._otel.exporting:
            interval = self.checkpoint_interval if self._checkpoint is not None else EXPORT_INTERVAL
            self._tickers.append(
                Ticker(interval, lambda: self._flush(time.time()), "rhapsody-telemetry-flush")
            )

    def attach(self, target: Session | BaseExecutionBackend) -> None:
        """Follow every state change of a backend, or of every backend of a session (present
        and future ones)."""
        self._targets.append(target)
        target.register_callback(self._on_state)
        target.register_service_callback(self._on_service_ready)

    def _on_service_ready(self, task: dict[str, Any], endpoint: str | None) -> None:
        self.emit(
            ev.ServiceReady(
                session_id=self._session_id,
                backend=task.get("backend"),
                task_id=task.get("uid"),
                endpoint=endpoint or "",
            )
        )

    def close(self) -> None:
        """Stop sampling, end the session span, flush every exporter and the checkpoint."""
        if not self._started or self._stopped:
            return
        self._catch_up()
        self._stopped = True
        self._follow()  # state changes from now on are dropped
        for ticker in self._tickers:
            ticker.stop()
        now = time.time()
        # Attempts still running (a close while tasks run) end now, as canceled.
        running, self._running = self._running, {}
        for uid, attempt in running.items():
            self._end_attempt(uid, attempt, now, "canceled", {})
        self._publish(ev.SessionEnded, None, None, now, duration_seconds=now - self.started_at)
        assert self._otel is not None
        # Spans are made now only for those who take them away: exporters and the checkpoint.
        # Otherwise read_traces() makes them when (if ever) it is called.
        if self._otel.exporting or self._checkpoint is not None:
            self._flush(now)
        self._otel.shutdown(now)
        if self._sampler is not None:
            self._sampler.close()
        if self._dashboard is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # closed outside the loop: nothing can be streamed any more
                self._dashboard.close()
            else:
                # Open streams send their last update (telemetry stopped) within one interval.
                loop.call_later(self._dashboard.interval * 2, self._dashboard.close)
        if self._checkpoint is not None:
            self._checkpoint.close()
            self._checkpoint = None
            self._eventful = bool(self._subscribers)

    async def stop(self) -> None:
        """rhapsody-py's name, a coroutine there: the same as `close()`."""
        self.close()

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
        self._eventful = True
        self._follow()

    def unsubscribe(self, callback: Subscriber) -> None:
        self._subscribers.remove(callback)
        self._eventful = bool(self._subscribers) or self._checkpoint is not None
        self._follow()

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
    # What the bookkeeping keeps, brought up to date first (see `_catch_up`).
    @property
    def records(self) -> list[tuple[Any, ...]]:
        """Finished attempts (tuples, fields in rhapsody.telemetry.attempts), in order."""
        self._catch_up()
        return self._records

    @property
    def per_backend(self) -> dict[str, list[int]]:
        """Per backend: tasks submitted, started, completed, failed, canceled, running."""
        self._catch_up()
        return self._per_backend

    @property
    def tokens_by_backend(self) -> dict[tuple[str, str], int]:
        """Inference tokens per (backend, "prompt" or "completion")."""
        self._catch_up()
        return self._tokens

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Failed tasks in order: task_id, backend, time, reason, error_type, exit_code."""
        self._catch_up()
        return self._failures

    def read_metrics(self) -> Any:
        """The current OpenTelemetry `MetricsData` (from an in-memory reader)."""
        otel = self._require()
        otel.flush(self.records)
        return otel.reader.get_metrics_data()

    def read_traces(self) -> tuple[Any, ...]:
        """Every finished span (`ReadableSpan`): one per task attempt, and the session's once
        telemetry is closed."""
        otel = self._require()
        otel.flush(self.records)
        return tuple(otel.buffer.spans)

    def task_spans(self) -> list[dict[str, Any]]:
        """The task spans as dicts (rhapsody-py's shape, plus attempt, node and slot)."""
        spans = []
        for span in self.read_traces():
            if span.name != "task":
                continue
            spans.append(
                {
                    **dict(span.attributes or {}),
                    "duration_seconds": (span.end_time - span.start_time) / 1e9,
                    "span_id": f"0x{span.context.span_id:016x}",
                    "trace_id": f"0x{span.context.trace_id:032x}",
                }
            )
        return spans

    def task_count(self) -> dict[str, int]:
        """Tasks submitted, completed, failed, canceled, and running now."""
        totals = [sum(c[i] for c in self.per_backend.values()) for i in range(6)]
        return {
            "submitted": totals[at.SUBMITTED],
            "completed": totals[at.COMPLETED],
            "failed": totals[at.FAILED],
            "canceled": totals[at.CANCELED],
            "running": totals[at.RUNNING],
        }

    def state_counts(self) -> dict[str, int]:
        """Tasks PENDING (waiting for dependencies or a slot), EXECUTING, DONE, FAILED and
        CANCELED now."""
        count = self.task_count()
        final = count["completed"] + count["failed"] + count["canceled"]
        return {
            "PENDING": count["submitted"] - final - count["running"],
            EXECUTING: count["running"],
            DONE: count["completed"],
            FAILED: count["failed"],
            CANCELED: count["canceled"],
        }

    def session_duration(self) -> float:
        return time.time() - self.started_at if self._started else 0.0

    def summary(self) -> dict[str, Any]:
        """Counts, run-time and queue-wait statistics, utilisation, tokens, latest resources."""
        elapsed = self.session_duration()
        cores = _cores(self._targets)
        busy = sum((r[at.END] - r[at.START]) * at.cores(r) for r in self.records)
        tokens = {"prompt": 0, "completion": 0}
        for (_, kind), count in self.tokens_by_backend.items():
            tokens[kind] += count
        latest = {
            node if gpu is None else f"{node}/gpu{gpu}": row
            for (node, gpu), row in self.resource_latest.items()
        }
        return {
            "session_id": self._session_id,
            "duration_seconds": round(elapsed, 6),
            "tasks": self.task_count(),
            "duration": _stats(r[at.END] - r[at.START] for r in self.records),
            "queue_wait": _stats(r[at.WAIT] for r in self.records if r[at.WAIT] is not None),
            "utilization": {
                "busy_core_seconds": round(busy, 6),
                "cores": cores,
                "fraction": round(busy / (cores * elapsed), 6) if cores and elapsed else None,
            },
            "tokens": tokens,
            "resources": latest,
        }

    def running_attempts(self) -> list[dict[str, Any]]:
        """Attempts running now (the dashboard's open bars)."""
        self._catch_up()
        return [
            {
                "task_id": uid,
                "backend": r[_BACKEND].name,
                "node_id": r[_WHERE] or self.node_id,
                "slot": r[_LANE],
                "attempt": r[_ATTEMPT],
                "start": r[_STARTED],
            }
            for uid, r in list(self._running.items())
        ]

    # -- the bookkeeping of the engine's state changes ---------------------------------------
    # The engine's callback (`_state_log`) only appends (task, state, time) to `_log`: four
    # appends per task amid the engine's own work. This catches up with the log in one loop,
    # touching little memory (`_waiting` and `_running` stay small, only `_queued` grows with
    # the backlog) and allocating one tuple per attempt; rare cases (retries, tasks first seen
    # late, failures, events) call helpers. OpenTelemetry data is made later still, in batches.
    def _catch_up(self) -> None:
        """Do the bookkeeping of every state change logged so far (idempotent, not reentrant:
        a call made while it runs, from a subscriber, returns at once)."""
        log = self._log
        if not log or self._catching_up:
            return
        self._catching_up = True
        waiting, queued, running = self._waiting, self._queued, self._running
        retried, backend_of = self._retried, self._backend_of
        index = 0
        try:
            entries = iter(log)  # a list's iterator also yields what is appended meanwhile
            for task, state, now in zip(entries, entries, entries, strict=True):
                index += 3
                uid = task["uid"]
                if state == EXECUTING:
                    backend = backend_of.get(task.get("backend", "")) or self._backend(task)
                    since = queued.pop(uid, None)
                    if since is None:  # a backend that skips EXECUTING_PENDING, or first seen
                        self._not_queued(uid, task, backend, now)
                    free = backend.free
                    if free:
                        lane = heapq.heappop(free)  # the lowest free slot, as the trace does
                    else:
                        lane = backend.lanes
                        backend.lanes = lane + 1
                    attempt = retried.get(uid, 0) + 1 if retried else 1
                    running[uid] = (backend, now, lane, attempt, since, task.get("node"))
                    counters = backend.counters
                    counters[at.STARTED] += 1
                    counters[at.RUNNING] += 1
                    if self._eventful:
                        attributes = {"attempt": attempt, "slot": lane}
                        self._publish(
                            ev.TaskStarted,
                            uid,
                            backend.name,
                            now,
                            node_id=task.get("node") or self.node_id,
                            attributes=attributes,
                        )
                # A dict in place of the state: queued again after a failed attempt, with what
                # that attempt wrote to the task (`_state_log`).
                elif state == EXECUTING_PENDING or type(state) is dict:
                    if uid in waiting:
                        waiting.remove(uid)
                    else:
                        self._requeued(uid, task, now, state if type(state) is dict else None)
                    queued[uid] = now
                    if self._eventful:
                        attributes = {"attempt": retried.get(uid, 0) + 1}
                        name = self._backend(task).name
                        self._publish(ev.TaskQueued, uid, name, now, attributes=attributes)
                elif state == SCHEDULING_PENDING:
                    backend = backend_of.get(task.get("backend", "")) or self._backend(task)
                    backend.counters[at.SUBMITTED] += 1
                    waiting.add(uid)
                    if self._eventful:
                        self._announce(uid, task, backend.name, now)
                else:
                    final = _FINAL.get(state)
                    if final is None:
                        continue
                    attempt_record = running.pop(uid, None)
                    if attempt_record is not None:
                        backend = attempt_record[_BACKEND]
                        self._end_attempt(uid, attempt_record, now, final[0], task)
                        run = now - attempt_record[_STARTED]
                    else:
                        backend = self._never_started(uid, task, now)
                        run = 0.0
                    if retried:
                        retried.pop(uid, None)
                    backend.counters[final[1]] += 1
                    usage = task.get("usage")
                    if usage is not None:
                        self._count_tokens(backend.name, usage)
                    if state == FAILED or self._eventful:
                        self._report_end(uid, backend.name, task, state, now, run)
        finally:
            del log[:index]
            self._catching_up = False

    def _put_now(self, entry: tuple[Any, ...]) -> None:
        """Where the engine's callback sends state changes while events are wanted."""
        self._log.extend(entry)
        self._catch_up()

    def _follow(self) -> None:
        """Send the engine's state changes where they are wanted now: done at once while
        someone wants events (subscribers, the checkpoint), else logged for `_catch_up`."""
        self._catch_up()  # changes logged so far make no events: they happened before
        if self._stopped:
            self._send_states_to(_drop)
        else:
            self._send_states_to(self._put_now if self._eventful else None)

    def _backend(self, task: dict[str, Any]) -> _Backend:
        """The record of the backend that runs `task` (made for its first task)."""
        name = task.get("backend") or self._default_backend() or "unknown"
        backend = self._backend_of.get(name)
        if backend is None:
            backend = self._backend_of[name] = _Backend(name)
            self._per_backend[name] = backend.counters
        return backend

    def _first_seen(self, uid: str, task: dict[str, Any], backend: _Backend, now: float) -> None:
        """Count a task seen for the first time in a later state (submitted before telemetry
        started, or canceled before it was scheduled), as SCHEDULING_PENDING does."""
        backend.counters[at.SUBMITTED] += 1
        if self._eventful:
            self._announce(uid, task, backend.name, now)

    def _announce(self, uid: str, task: dict[str, Any], backend: str, now: float) -> None:
        self._publish(ev.TaskCreated, uid, backend, now, attributes=_describe(task))
        self._publish(ev.TaskSubmitted, uid, backend, now)

    def _requeued(
        self, uid: str, task: dict[str, Any], now: float, snapshot: dict[str, Any] | None
    ) -> None:
        """EXECUTING_PENDING of a task that was not waiting: a failed attempt to be retried
        (`snapshot`: what it wrote to the task, taken when it was logged), or a task submitted
        before telemetry started."""
        failed = self._running.pop(uid, None)
        if failed is not None:
            self._retried[uid] = failed[_ATTEMPT]
            self._end_attempt(uid, failed, now, RETRIED, snapshot or _snapshot(task))
        else:
            self._first_seen(uid, task, self._backend(task), now)

    def _not_queued(self, uid: str, task: dict[str, Any], backend: _Backend, now: float) -> None:
        """EXECUTING of a task never seen queued: its backend skipped EXECUTING_PENDING, or
        it was submitted before telemetry started."""
        if uid in self._waiting:
            self._waiting.remove(uid)
        else:
            self._first_seen(uid, task, backend, now)

    def _never_started(self, uid: str, task: dict[str, Any], now: float) -> _Backend:
        """The backend of a task that ends without running (its dependencies failed, it was
        canceled, it failed to start); counted submitted if not seen before."""
        backend = self._backend(task)
        if uid in self._waiting:
            self._waiting.remove(uid)
        elif self._queued.pop(uid, None) is None:  # from NEW (canceled before scheduling)
            self._first_seen(uid, task, backend, now)
        return backend

    def _end_attempt(
        self,
        uid: str,
        running: tuple[Any, ...],
        now: float,
        status: str,
        task: dict[str, Any] | None,
    ) -> None:
        """Record the attempt that ends now. `task` is read later (spans, summary, dashboard):
        a final attempt passes the task dict itself, whose fields no longer change; a retried
        one passes a snapshot, since the next attempt overwrites them. The caller has taken
        `running` out of `_running`."""
        backend = running[_BACKEND]
        backend.counters[at.RUNNING] -= 1
        lane = running[_LANE]
        heapq.heappush(backend.free, lane)
        started, queued = running[_STARTED], running[_QUEUED]
        self._records.append(
            (
                uid,
                backend.name,
                # Where it ran: the client's host, unless the backend wrote the task's node.
                (task.get("node") if task else None) or running[_WHERE] or self.node_id,
                lane,
                running[_ATTEMPT],
                started,
                now,
                status,
                None if queued is None else started - queued,
                task,
            )
        )

    def _report_end(
        self, uid: str, backend: str, task: dict[str, Any], state: str, now: float, run: float
    ) -> None:
        """The failure list (a FAILED task) and the final event (if wanted) of a task."""
        if state == FAILED:
            exception = task.get("exception")
            self._failures.append(
                {
                    "task_id": uid,
                    "backend": backend,
                    "time": now,
                    "reason": "failed" if exception is None else str(exception),
                    "error_type": "unknown" if exception is None else type(exception).__name__,
                    "exit_code": task.get("exit_code"),
                }
            )
        if not self._eventful:
            return
        fields: dict[str, Any] = {"duration_seconds": run}
        if state == FAILED:
            failure = self._failures[-1]
            fields["error_type"] = failure["error_type"]
            fields["attributes"] = {"reason": failure["reason"], "exit_code": failure["exit_code"]}
        elif task.get("exit_code") is not None:
            fields["attributes"] = {"exit_code": task["exit_code"]}
        cls = {DONE: ev.TaskCompleted, FAILED: ev.TaskFailed, CANCELED: ev.TaskCanceled}[state]
        self._publish(cls, uid, backend, now, **fields)

    def _count_tokens(self, backend: str, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for kind in ("prompt", "completion"):
            count = usage.get(f"{kind}_tokens")
            if isinstance(count, int) and count > 0:
                key = (backend, kind)
                self._tokens[key] = self._tokens.get(key, 0) + count

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

    # -- batches: OpenTelemetry data and the checkpoint ---------------------------------------
    def _flush(self, now: float) -> None:
        otel = self._otel
        assert otel is not None
        # Spans only for those who take them away: span exporters, the checkpoint's span lines.
        spans = otel.flush(self.records, spans=otel.exporting_spans or self._checkpoint is not None)
        if self._checkpoint is None:
            return
        # Spans of the records not yet written (those of `spans` and any flushed by a read).
        first = len(self.records) - len(spans)
        for index in range(self._checkpointed, len(self.records)):
            span = spans[index - first] if index >= first else None
            self._write(_span_record(self.records[index], span, otel.session_span_id))
        self._checkpointed = len(self.records)
        self._write({"section": "metric", **otel.metric_snapshot(now)})

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
        self._eventful = True
        self._follow()

    # -- background loops ---------------------------------------------------------------------
    # -- periodic work (ticks of `Ticker`s: no timer on the event loop) ---------------------
    async def _poll_resources(self) -> None:
        """One round of resource sampling: every backend's nodes, then this one. It also
        catches up with the state log, which so holds at most one interval of changes."""
        assert self._sampler is not None
        self._catch_up()
        # The backends' rows first: of a node sampled twice (a worker on the client's
        # host), the row kept names the backend that runs tasks there.
        rows: list[dict[str, Any]] = []
        for backend in self._backends():
            rows.extend(await self._remote_rows(backend))
        # psutil and NVML calls block (NVML for milliseconds per GPU): off the event loop.
        rows.extend(await asyncio.to_thread(self._sampler.sample))
        if self._stopped:
            return
        now = time.time()
        seen: set[tuple[str, int | None]] = set()
        for row in rows:
            key = (row["node_id"], row.get("gpu_id"))
            if key in seen:  # two workers (or the client and a worker) on one node
                continue
            seen.add(key)
            row["time"] = now
            self.samples.append(row)
            self.resource_latest[key] = row
            totals = self.resource_totals.setdefault(key, {})
            for field in BYTE_FIELDS:
                if row.get(field) is not None:
                    totals[field] = totals.get(field, 0.0) + row[field]
            if self._eventful:
                fields = {k: v for k, v in row.items() if k in _RESOURCE_FIELDS}
                attributes = {"worker": row["worker"]} if "worker" in row else {}
                self._publish(
                    ev.ResourceUpdate,
                    None,
                    row.get("backend"),
                    now,
                    attributes=attributes,
                    **fields,
                )

    def _backends(self) -> list[BaseExecutionBackend]:
        from rhapsody.session import Session

        found: list[BaseExecutionBackend] = []
        for target in self._targets:
            found.extend(target.backends.values() if isinstance(target, Session) else [target])
        return found

    async def _remote_rows(self, backend: BaseExecutionBackend) -> list[dict[str, Any]]:
        """The rows of the nodes `backend` runs tasks on, if it reports them (see resources)."""
        sample = getattr(backend, "sample_resources", None)
        if sample is None or backend.state() != "RUNNING":
            return []
        try:
            rows: list[dict[str, Any]] = await asyncio.wait_for(
                sample(), self.resource_poll_interval
            )
        except Exception as exc:  # a worker lost, a slow cluster: this round has no rows
            logger.warning("%s: resource sampling failed: %r", backend.name, exc)
            return []
        for row in rows:
            row.setdefault("backend", backend.name)
        return rows

    def _require(self) -> Otel:
        if self._otel is None:
            raise TelemetryError("telemetry is not started: call 'await manager.start()' first")
        return self._otel


def _span_record(record: tuple[Any, ...], span: Any, parent: str) -> dict[str, Any]:
    """A checkpoint `span` line (rhapsody-py's shape, plus dependencies for the report)."""
    fields = at.as_dict(record)
    attributes = {
        key: fields[key]
        for key in (
            "task_id",
            "backend",
            "status",
            "attempt",
            "slot",
            "cores",
            "gpus",
            "exit_code",
            "task_type",
        )
    }
    attributes["node"] = fields["node_id"]
    if fields["task_type"] == "ai":
        attributes.update(at.ai_attributes(record))
    line: dict[str, Any] = {
        "section": "span",
        "name": "task",
        "parent_span_id": parent,
        "start_time_s": fields["start"],
        "end_time_s": fields["end"],
        "duration_ms": round((fields["end"] - fields["start"]) * 1e3, 3),
        "status_code": "ERROR" if fields["status"] == "failed" else "OK",
        "status_description": fields["reason"],
        "attributes": attributes,
        "dependencies": dependency_uids(record[at.TASK] or {}),
    }
    if span is not None:
        line["span_id"] = f"0x{span.context.span_id:016x}"
        line["trace_id"] = f"0x{span.context.trace_id:032x}"
    return line


def _state_log(
    log: list[Any],
) -> tuple[Callable[[dict[str, Any], str], None], Callable[[Any], None]]:
    """The engine's callback, and how to say where it sends its entries: `task, state, time`
    appended to the flat list `log` (the default, `None`), or passed as a tuple to a function
    instead. Flat: three references per entry and no object the garbage collector tracks (a
    tuple per entry made the collector walk the whole log again and again).

    A task queued again after a failed attempt (EXECUTING_PENDING while it has an `attempt`,
    which the engine writes only to tasks with retries) is logged with, in place of its state,
    what that attempt wrote to the task (a dict), which the next attempt overwrites before the
    log may be read."""
    put: Callable[[tuple[Any, ...]], None] = log.extend
    clock = time.time

    def on_state(task: dict[str, Any], state: str) -> None:
        if state == EXECUTING_PENDING and "attempt" in task:
            put((task, _snapshot(task), clock()))
        else:
            put((task, state, clock()))

    def send_to(target: Callable[[tuple[Any, ...]], None] | None) -> None:
        nonlocal put
        put = log.extend if target is None else target

    return on_state, send_to


def _drop(entry: tuple[Any, ...]) -> None:
    """Where state changes go once telemetry is closed."""


def _snapshot(task: dict[str, Any]) -> dict[str, Any]:
    """What an attempt record reads of a task, as it is now."""
    return {key: task.get(key) for key in at.TASK_FIELDS}


def _describe(task: dict[str, Any]) -> dict[str, Any]:
    """TaskCreated's attributes: what the task runs and its `task_type`."""
    kind = at.task_type(task)
    if kind == "ai":
        model = task.get("model")
        return {"task_type": kind} if model is None else {"model": str(model), "task_type": kind}
    if kind == "executable":
        return {"executable": str(task.get("executable")), "task_type": kind}
    function = task.get("function")
    name = getattr(function, "__qualname__", None) or type(function).__name__
    return {"function": str(name), "task_type": kind}


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
        return {
            "count": 0,
            "total_seconds": 0.0,
            "mean_seconds": 0.0,
            "min_seconds": 0.0,
            "max_seconds": 0.0,
        }
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
