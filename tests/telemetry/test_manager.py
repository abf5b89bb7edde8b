"""`session.start_telemetry()`: events for every transition, one span per attempt under the
session's span, metrics, subscribers, summary - on the real `concurrent` backend."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs rhapsody-core[telemetry]")

from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.session import Session
from rhapsody.states import EXECUTING
from rhapsody.telemetry import (
    BaseEvent,
    ServiceReady,
    TelemetryError,
    TelemetryManager,
    TelemetryReader,
    TelemetrySubscriber,
    define_event,
)

STATE_EVENTS = ["TaskCreated", "TaskSubmitted", "TaskQueued", "TaskStarted"]


def flaky_once(marker: list[int]) -> int:
    """Fails on its first call, succeeds on the second (a task with `retries: 1`)."""
    marker.append(1)
    if len(marker) == 1:
        raise RuntimeError("first attempt fails")
    return len(marker)


def metrics_by_name(manager: TelemetryManager) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for resource_metrics in manager.read_metrics().resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def run_workflow(**options: Any) -> tuple[TelemetryManager, list[BaseEvent], Session]:
    async def go() -> tuple[TelemetryManager, list[BaseEvent], Session]:
        session = Session([ConcurrentExecutionBackend(name="local")])
        with pytest.raises(TelemetryError, match="start_telemetry"):
            session.get_telemetry()
        manager = await session.start_telemetry(**options)
        assert session.get_telemetry() is manager
        seen: list[BaseEvent] = []
        manager.subscribe(seen.append)
        marker: list[int] = []
        tasks = [
            {"uid": "ok", "executable": "/bin/echo", "arguments": ["hi"]},
            {"uid": "bad", "executable": "/bin/sh", "arguments": ["-c", "exit 3"]},
            {"uid": "retry", "function": flaky_once, "args": [marker], "retries": 1},
            {"uid": "child", "function": len, "args": ["ab"], "dependencies": ["ok"]},
            {"uid": "orphan", "function": len, "args": ["ab"], "dependencies": ["bad"]},
            {
                "uid": "ai",
                "function": dict,
                "usage": {"prompt_tokens": 11, "completion_tokens": 7},
            },
        ]
        await session.submit_tasks(tasks)
        await session.wait_tasks()
        await session.close()
        return manager, seen, session

    return asyncio.run(go())


@pytest.fixture(scope="module")
def finished() -> tuple[TelemetryManager, list[BaseEvent], Session]:
    return run_workflow(resource_poll_interval=0.05)


def test_every_transition_is_an_event_with_ids_and_times(finished: Any) -> None:
    manager, seen, session = finished
    by_task: dict[str, list[str]] = {}
    for event in seen:
        if event.task_id is not None:
            by_task.setdefault(event.task_id, []).append(event.event_type)
            assert event.session_id == session.uid
            assert event.backend == "local"
            assert len(event.event_id) == 32
            assert event.emit_time >= event.event_time > 0
    assert by_task["ok"] == [*STATE_EVENTS, "TaskCompleted"]
    assert by_task["bad"] == [*STATE_EVENTS, "TaskFailed"]
    # A retried task is queued and started once per attempt.
    assert by_task["retry"] == [*STATE_EVENTS, "TaskQueued", "TaskStarted", "TaskCompleted"]
    # A task whose dependency failed never runs: no queue, no start.
    assert by_task["orphan"] == ["TaskCreated", "TaskSubmitted", "TaskFailed"]
    failed = next(e for e in seen if e.event_type == "TaskFailed" and e.task_id == "bad")
    assert failed.attributes["exit_code"] == 3
    assert "exit" in failed.attributes["reason"]
    assert failed.error_type  # type: ignore[attr-defined]
    assert seen[-1].event_type == "SessionEnded"
    assert not manager.running


def test_one_span_per_attempt_under_the_session_span(finished: Any) -> None:
    manager, _, session = finished
    spans = manager.read_traces()
    root = [s for s in spans if s.name == "session"]
    assert len(root) == 1
    tasks = [s for s in spans if s.name == "task"]
    attempts = sorted((s.attributes["task_id"], s.attributes["status"]) for s in tasks)
    assert attempts == [
        ("ai", "completed"),
        ("bad", "failed"),
        ("child", "completed"),
        ("ok", "completed"),
        ("retry", "completed"),
        ("retry", "retried"),
    ]
    for span in tasks:
        assert span.parent.span_id == root[0].context.span_id
        assert span.context.trace_id == root[0].context.trace_id
        assert span.attributes["backend"] == "local"
        assert span.attributes["session_id"] == session.uid
        assert span.attributes["cores"] == 1 and span.attributes["gpus"] == 0
        assert span.attributes["node"]
        assert span.end_time >= span.start_time
    bad = next(s for s in tasks if s.attributes["task_id"] == "bad")
    assert bad.attributes["exit_code"] == 3
    assert bad.attributes["state"] == "FAILED"
    assert bad.status.status_code.name == "ERROR"
    as_dicts = {(d["task_id"], d["attempt"]) for d in manager.task_spans()}
    assert ("retry", 2) in as_dicts and ("retry", 1) in as_dicts


def test_metrics_count_final_states_times_and_tokens(finished: Any) -> None:
    manager, _, _ = finished
    metrics = metrics_by_name(manager)

    def total(name: str) -> float:
        return sum(p.value for p in metrics[name])

    assert total("tasks_submitted") == 6
    assert total("tasks_completed") == 4
    assert total("tasks_failed") == 2
    assert total("tasks_started") == 6  # attempts: retry ran twice, orphan never
    assert total("tasks_running") == 0
    durations = metrics["task_duration_seconds"]
    assert sum(p.count for p in durations) == 6
    assert sum(p.count for p in metrics["task_queue_wait_seconds"]) == 6
    tokens = {p.attributes["token_type"]: p.value for p in metrics["inference_tokens"]}
    assert tokens == {"prompt": 11, "completion": 7}
    # Per-task ids stay out of metric attributes: 10,000 tasks must not be 10,000 series.
    for points in metrics.values():
        for point in points:
            assert "task_id" not in point.attributes


def test_summary(finished: Any) -> None:
    manager, _, session = finished
    summary = manager.summary()
    assert summary["session_id"] == session.uid
    assert summary["tasks"] == {
        "submitted": 6,
        "completed": 4,
        "failed": 2,
        "canceled": 0,
        "running": 0,
    }
    assert summary["duration"]["count"] == 6
    assert summary["duration"]["max_seconds"] >= summary["duration"]["min_seconds"] >= 0
    assert summary["queue_wait"]["count"] == 6
    assert summary["utilization"]["cores"] >= 1
    assert 0 < summary["utilization"]["fraction"] <= 1
    assert summary["tokens"] == {"prompt": 11, "completion": 7}


def test_subscribers_sync_async_and_a_raising_one_is_isolated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> tuple[list[str], list[str]]:
        session = Session()
        manager = await session.start_telemetry()
        plain: list[str] = []
        awaited: list[str] = []

        def broken(event: BaseEvent) -> None:
            raise ValueError("subscriber bug")

        async def later(event: BaseEvent) -> None:
            await asyncio.sleep(0)
            awaited.append(event.event_type)

        manager.subscribe(broken)
        manager.subscribe(plain.append)  # after the broken one: must still be called
        manager.subscribe(later)
        futures = await session.submit_tasks([{"uid": "t", "function": len, "args": ["x"]}])
        await asyncio.gather(*futures)
        await asyncio.sleep(0.05)
        await session.close()
        return [getattr(e, "event_type", e) for e in plain], awaited  # type: ignore[misc]

    with caplog.at_level(logging.ERROR, logger="rhapsody.telemetry"):
        plain, awaited = asyncio.run(go())
    assert plain[:5] == [*STATE_EVENTS, "TaskCompleted"]
    assert awaited[:5] == [*STATE_EVENTS, "TaskCompleted"]
    assert "subscriber bug" in caplog.text


def test_custom_events_and_service_ready() -> None:
    async def go() -> tuple[list[BaseEvent], TelemetryManager]:
        session = Session()
        manager = await session.start_telemetry()
        seen: list[BaseEvent] = []
        manager.subscribe(seen.append)
        loaded = define_event("myapp.ModelLoaded", model=str, seconds=float)
        manager.emit(loaded(session_id=session.uid, backend=None, model="llama", seconds=2.5))
        manager.emit(
            ServiceReady(
                session_id=session.uid,
                backend="concurrent",
                task_id="svc",
                endpoint="http://127.0.0.1:8000",
            )
        )
        await session.close()
        return seen, manager

    seen, manager = asyncio.run(go())
    assert [e.event_type for e in seen[:2]] == ["myapp.ModelLoaded", "ServiceReady"]
    assert seen[0].model == "llama"  # type: ignore[attr-defined]
    assert manager.services == [
        {"task_id": "svc", "endpoint": "http://127.0.0.1:8000", "time": seen[1].event_time}
    ]
    with pytest.raises(ValueError, match="namespaced"):
        define_event("ModelLoaded")
    with pytest.raises(ValueError, match="already BaseEvent fields"):
        define_event("myapp.Bad", task_id=str)


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="resource_poll_interval"):
        TelemetryManager("s", resource_poll_interval=0)
    with pytest.raises(ValueError, match="checkpoint_interval"):
        TelemetryManager("s", checkpoint_interval=-1)


def test_start_twice_returns_the_running_manager_and_close_twice_is_harmless() -> None:
    async def go() -> None:
        session = Session()
        first = await session.start_telemetry()
        assert await session.start_telemetry() is first
        first.close()
        first.close()
        await session.close()

    asyncio.run(go())


def test_import_rhapsody_and_its_telemetry_imports_no_opentelemetry() -> None:
    code = (
        "import sys, rhapsody, rhapsody.telemetry, rhapsody.session;"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'pynvml',"
        " 'prometheus_client'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_canceled_task_and_extra_processors_readers_and_resource() -> None:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()

    async def go() -> list[BaseEvent]:
        session = Session([ConcurrentExecutionBackend(name="local")])
        manager = await session.start_telemetry(
            span_processors=[SimpleSpanProcessor(exporter)],
            metric_readers=[reader],
            resource_attributes={"cluster": "c1"},
            resource=Resource({"site": "lab"}),
        )
        seen: list[BaseEvent] = []
        started = asyncio.Event()

        def follow(event: BaseEvent) -> None:
            seen.append(event)
            if event.event_type == "TaskStarted" and event.task_id == "long":
                started.set()

        manager.subscribe(follow)
        futures = await session.submit_tasks(
            [
                {"uid": "long", "executable": "/bin/sleep", "arguments": ["60"]},
                {"uid": "after", "function": len, "args": ["ab"], "dependencies": ["long"]},
            ]
        )
        await asyncio.wait_for(started.wait(), 60)
        assert manager.state_counts()[EXECUTING] == 1
        assert await session.backends["local"].cancel_task("long")
        await session.wait_tasks(timeout=60)
        assert futures["long"].cancelled()
        await session.close()
        return seen

    seen = asyncio.run(go())
    ends = {e.task_id: e for e in seen if e.event_type in ("TaskCanceled", "TaskFailed")}
    assert ends["long"].event_type == "TaskCanceled"
    assert ends["long"].duration_seconds > 0  # type: ignore[attr-defined]
    assert ends["after"].event_type == "TaskFailed"  # its dependency was canceled
    # The extra span processor got the same spans: the canceled attempt under the session.
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["task"].attributes["status"] == "canceled"
    assert spans["task"].attributes["state"] == "CANCELED"
    assert spans["task"].parent.span_id == spans["session"].context.span_id
    resource = dict(spans["task"].resource.attributes)
    assert resource["site"] == "lab" and resource["cluster"] == "c1"
    assert resource["service.name"] == "rhapsody"
    # The extra metric reader reads the counters.
    totals: dict[str, float] = {}
    for resource_metrics in reader.get_metrics_data().resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if hasattr(point, "value"):
                        totals[metric.name] = totals.get(metric.name, 0) + point.value
    assert totals["tasks_canceled"] == 1
    assert totals["tasks_failed"] == 1
    assert totals["tasks_running"] == 0


def test_rhapsody_py_reader_subscriber_and_awaitable_stop() -> None:
    async def go() -> tuple[TelemetryManager, list[str], str]:
        session = Session([ConcurrentExecutionBackend(name="local")])
        manager = await session.start_telemetry()
        seen: list[str] = []
        TelemetrySubscriber(manager).subscribe(lambda event: seen.append(event.event_type))
        await session.submit_tasks(
            [{"uid": "a", "executable": "/bin/true"}, {"uid": "b", "function": len, "args": ["x"]}]
        )
        await session.wait_tasks()
        await manager.stop()  # rhapsody-py's stop() is a coroutine
        assert not manager.running
        await session.close()
        return manager, seen, session.uid

    manager, seen, uid = asyncio.run(go())
    assert seen[-1] == "SessionEnded" and "TaskCompleted" in seen
    reader = TelemetryReader(manager)
    assert [s.attributes["task_id"] for s in reader.read_traces(task_id="a")] == ["a"]
    assert {s.name for s in reader.read_traces(session_id=uid)} == {"session", "task"}
    assert len(reader.read_traces(session_id=uid)) == 3
    assert reader.read_traces(session_id="another") == ()
    names = {
        m.name
        for rm in reader.read_metrics().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert "tasks_completed" in names
