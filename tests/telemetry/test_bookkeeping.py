"""How the telemetry keeps up with the engine: its callback only logs each state change, and
the bookkeeping is done in batches (when read, at each sampling tick, while exporting) or at
once while events are wanted. Either way it must come to the same records, counts and
failures; and telemetry puts no timer on the event loop (every loop iteration would pay for it).
On the real `concurrent` backend."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs rhapsody-core[telemetry]")

from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.session import Session
from rhapsody.telemetry import TelemetryManager
from rhapsody.telemetry.attempts import as_dict
from rhapsody.telemetry.ticker import Ticker

# Exits 5, then 6, then 0: each attempt of a task with `retries: 2` writes its own exit code.
THIRD_TIME_LUCKY = (
    'n=$(cat count 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > count; '
    '[ "$n" -ge 3 ] && exit 0; exit $((4 + n))'
)


def workflow(directory: Path) -> list[dict[str, Any]]:
    return [
        {"uid": "ok", "executable": "/bin/echo", "arguments": ["hi"]},
        {"uid": "bad", "executable": "/bin/sh", "arguments": ["-c", "exit 3"]},
        {
            "uid": "lucky",
            "executable": "/bin/sh",
            "arguments": ["-c", THIRD_TIME_LUCKY],
            "working_directory": str(directory),
            "retries": 2,
        },
        {"uid": "child", "function": len, "args": ["ab"], "dependencies": ["ok"]},
        {"uid": "orphan", "function": len, "args": ["ab"], "dependencies": ["bad"]},
        *({"uid": f"f{i}", "function": abs, "args": [-i]} for i in range(40)),
    ]


def run(directory: Path, *, subscribe: bool) -> TelemetryManager:
    async def go() -> TelemetryManager:
        session = Session([ConcurrentExecutionBackend(name="local")])
        manager = await session.start_telemetry()
        if subscribe:  # events wanted: every change is booked at once
            manager.subscribe(lambda event: None)
        await session.submit_tasks(workflow(directory))
        await session.wait_tasks()
        await session.close()
        return manager

    return asyncio.run(go())


def attempts(manager: TelemetryManager) -> list[tuple[Any, ...]]:
    """What each attempt was, leaving out its times and slot (which differ between runs)."""
    fields = ("task_id", "attempt", "status", "state", "exit_code", "task_type", "reason")
    found = [tuple(as_dict(r)[f] for f in fields) for r in manager.records]
    return sorted(found, key=lambda row: (row[0], row[1]))


def test_booked_in_a_batch_or_at_once_the_records_counts_and_failures_agree(
    tmp_path: Path,
) -> None:
    batched = run(tmp_path / "a", subscribe=False)
    at_once = run(tmp_path / "b", subscribe=True)
    assert attempts(batched) == attempts(at_once)
    assert len(batched.records) == 44 + 2  # each task that ran (not `orphan`), `lucky` 3 times
    assert batched.task_count() == at_once.task_count()
    assert batched.task_count() == {
        "submitted": 45,
        "completed": 43,
        "failed": 2,
        "canceled": 0,
        "running": 0,
    }
    reasons = [(f["task_id"], f["exit_code"]) for f in batched.failures]
    assert reasons == [(f["task_id"], f["exit_code"]) for f in at_once.failures]
    assert sorted(reasons, key=str) == [("bad", 3), ("orphan", None)]


def test_a_retried_attempt_keeps_what_it_wrote_though_booked_after_the_next_ones(
    tmp_path: Path,
) -> None:
    # Nothing reads until the end: the log is booked after all three attempts ran, and each
    # had overwritten the task's exit code.
    manager = run(tmp_path, subscribe=False)
    lucky = [as_dict(r) for r in manager.records if r[0] == "lucky"]
    assert [(a["attempt"], a["status"], a["exit_code"]) for a in lucky] == [
        (1, "retried", 5),
        (2, "retried", 6),
        (3, "completed", 0),
    ]


def test_no_timer_on_the_loop_and_each_sampling_tick_books_the_log() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        session = Session([ConcurrentExecutionBackend(name="local")])
        for backend in session.backends.values():
            await backend
        manager = await session.start_telemetry(resource_poll_interval=0.05)
        # asyncio's loop looks at its timer heap on every iteration while it holds a timer.
        assert not loop._scheduled  # type: ignore[attr-defined]
        ticked = asyncio.Event()
        sampling = manager._tickers[0]
        poll = sampling._tick

        async def observed() -> None:
            await poll()  # type: ignore[misc]
            ticked.set()

        sampling._tick = observed
        await session.submit_tasks([{"uid": "t", "function": abs, "args": [-1]}])
        await session.wait_tasks()
        assert manager._log  # logged, not yet booked
        await asyncio.wait_for(ticked.wait(), 10)
        assert manager.samples
        assert not manager._log
        assert manager._per_backend["local"][2] == 1  # completed: what Prometheus reads
        await session.close()
        assert not [t for t in threading.enumerate() if t.name.startswith("rhapsody-telemetry")]

    asyncio.run(go())


def test_a_ticker_skips_ticks_while_one_runs_and_outlives_one_that_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        started: list[int] = []
        began = asyncio.Event()
        release = asyncio.Event()

        async def slow() -> None:
            started.append(1)
            began.set()
            await release.wait()
            raise RuntimeError("this tick failed")

        ticker = Ticker(0.01, slow, "rhapsody-telemetry-test")
        await asyncio.wait_for(began.wait(), 10)
        began.clear()
        await asyncio.sleep(0.1)  # ten intervals: none starts while the first still runs
        assert len(started) == 1
        release.set()
        await asyncio.wait_for(began.wait(), 10)  # the next tick comes after the one that raised
        ticker.stop()
        count = len(started)
        await asyncio.sleep(0.1)
        assert len(started) == count  # no tick after stop()

    with caplog.at_level(logging.ERROR, logger="rhapsody.telemetry"):
        asyncio.run(go())
    assert "this tick failed" in caplog.text
    with pytest.raises(ValueError, match="interval"):
        asyncio.run(_ticker_with_interval(0))


async def _ticker_with_interval(interval: float) -> None:
    Ticker(interval, lambda: None, "rhapsody-telemetry-test")


def test_a_metrics_only_export_gets_histograms_and_spans_are_made_only_when_read() -> None:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()

    async def go() -> TelemetryManager:
        session = Session([ConcurrentExecutionBackend(name="local")])
        manager = await session.start_telemetry(metric_readers=[reader])
        await session.submit_tasks(
            [{"uid": f"t{i}", "function": abs, "args": [-i]} for i in range(5)]
        )
        await session.wait_tasks()
        await session.close()
        return manager

    manager = asyncio.run(go())
    data = reader.get_metrics_data()
    counts = {
        metric.name: sum(getattr(p, "count", 0) for p in metric.data.data_points)
        for rm in data.resource_metrics
        for scope in rm.scope_metrics
        for metric in scope.metrics
    }
    assert counts["task_duration_seconds"] == 5  # one point per attempt reached the reader
    # No span exporter: the flushes made no spans (about 50-100 µs each in the SDK) ...
    assert manager._otel is not None and manager._otel.spanned == 0
    # ... and reading makes them all.
    assert len([s for s in manager.read_traces() if s.name == "task"]) == 5
