"""Chrome traces of runs (`TraceRecorder`, `rhapsody run --trace`) and `rhapsody report`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from rhapsody import Session
from rhapsody.backends.execution import NoopExecutionBackend
from rhapsody.cli import main
from rhapsody.trace import TraceRecorder
from rhapsody.trace_report import TraceFileError, load, summarize


class FakeClock:
    """Seconds set by the test, so the trace's times are exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def play(recorder: TraceRecorder, clock: FakeClock, script: list[tuple[float, str, str]]) -> None:
    """Feed (time, uid, state) transitions of backend 'local'; 'c' depends on 'a'."""
    tasks: dict[str, dict[str, Any]] = {}
    for at, uid, state in script:
        clock.now = at
        task = tasks.setdefault(uid, {"uid": uid, "dependencies": ["a"] if uid == "c" else []})
        recorder.record("local", task, state)


# a: 0-2, b: 0-1 then retried 1-2, c (after a): 2-5. Lanes: a 0, b 1, c reuses lane 0.
SCRIPT = [
    (0.0, "a", "EXECUTING"),
    (0.0, "b", "EXECUTING"),
    (1.0, "b", "EXECUTING_PENDING"),
    (1.0, "b", "EXECUTING"),
    (2.0, "a", "DONE"),
    (2.0, "b", "DONE"),
    (2.0, "c", "EXECUTING"),
    (5.0, "c", "DONE"),
]


def test_spans_lanes_and_metadata() -> None:
    clock = FakeClock()
    recorder = TraceRecorder(clock=clock)
    play(recorder, clock, SCRIPT)
    events = recorder.to_dict()["traceEvents"]
    spans = [
        (e["name"], e["tid"], e["ts"], e["dur"], e["args"]["state"])
        for e in events
        if e["ph"] == "X"
    ]
    assert spans == [
        ("b", 2, 0.0, 1e6, "RETRIED"),
        ("a", 1, 0.0, 2e6, "DONE"),
        ("b", 2, 1e6, 1e6, "DONE"),
        ("c", 1, 2e6, 3e6, "DONE"),
    ]
    c_span = next(e for e in events if e["ph"] == "X" and e["name"] == "c")
    assert c_span["args"]["dependencies"] == ["a"] and c_span["args"]["attempt"] == 1
    names = {(e["name"], e["tid"], e["args"]["name"]) for e in events if e["ph"] == "M"}
    assert names == {
        ("process_name", 0, "local"),
        ("thread_name", 0, "task states"),
        ("thread_name", 1, "lane 0"),
        ("thread_name", 2, "lane 1"),
    }
    assert sum(e["ph"] == "i" for e in events) == len(SCRIPT)


def test_attempt_still_running_is_written_as_running() -> None:
    clock = FakeClock()
    recorder = TraceRecorder(clock=clock)
    play(recorder, clock, SCRIPT[:1])
    clock.now = 4.0
    (span,) = [e for e in recorder.to_dict()["traceEvents"] if e["ph"] == "X"]
    assert span["args"]["state"] == "RUNNING" and span["dur"] == 4e6


def test_summary_utilization_critical_path_and_slowest(tmp_path: Path) -> None:
    clock = FakeClock()
    recorder = TraceRecorder(clock=clock)
    play(recorder, clock, SCRIPT)
    recorder.write(tmp_path / "trace.json")
    summary = summarize(load(tmp_path / "trace.json"))
    assert summary.makespan == pytest.approx(5.0)
    assert summary.lanes == (("local", 0), ("local", 1))
    assert summary.utilization == pytest.approx((2 + 1 + 1 + 3) / (2 * 5))
    assert summary.critical_path == ("a", "c") and summary.critical_length == pytest.approx(5)
    assert summary.slowest(2) == [("c", pytest.approx(3)), ("a", pytest.approx(2))]


def test_run_with_trace_then_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow, trace = tmp_path / "flow.json", tmp_path / "trace.json"
    chain = [
        {"uid": "first", "executable": "/bin/true"},
        {"uid": "second", "executable": "/bin/true", "dependencies": ["first"]},
        {"uid": "third", "executable": "/bin/true", "dependencies": ["second"]},
    ]
    flow.write_text(json.dumps({"tasks": chain}))
    assert main(["run", str(flow), "--no-progress", "--trace", str(trace)]) == 0
    events = json.loads(trace.read_text())["traceEvents"]
    processes = {e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert processes == {"concurrent"}
    spans = {e["name"]: e for e in events if e["ph"] == "X"}
    assert set(spans) == {"first", "second", "third"}
    assert spans["third"]["args"] == {
        "uid": "third",
        "state": "DONE",
        "attempt": 1,
        "dependencies": ["second"],
        "exit_code": 0,
    }
    capsys.readouterr()
    assert main(["report", str(trace), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "critical path: first -> second -> third" in out
    assert "2 slowest tasks" in out and "utilization" in out
    assert main(["report", str(trace), "--top", "0"]) == 2


def test_report_names_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"traceEvents": [')
    assert main(["report", str(bad)]) == 2
    assert "broken.json:1: invalid JSON" in capsys.readouterr().err
    with pytest.raises(TraceFileError, match=r"empty\.json: no task spans"):
        (tmp_path / "empty.json").write_text('{"traceEvents": []}')
        load(tmp_path / "empty.json")


def test_recorder_attached_to_a_session_names_each_backend() -> None:
    async def go() -> dict[str, Any]:
        recorder = TraceRecorder()
        cpu, dry = NoopExecutionBackend(name="cpu"), NoopExecutionBackend(name="dry")
        async with Session(backends=[cpu, dry]) as session:
            recorder.attach(session)
            await session.submit_tasks(
                [
                    {"uid": "x", "executable": "/bin/true"},
                    {"uid": "y", "executable": "/bin/true", "backend": "dry"},
                ]
            )
            await session.wait_tasks()
        return recorder.to_dict()

    events = asyncio.run(go())["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    spans = {e["name"]: names[e["pid"]] for e in events if e["ph"] == "X"}
    assert spans == {"x": "cpu", "y": "dry"}
