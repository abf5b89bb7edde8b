"""What a trace written by `rhapsody.trace.TraceRecorder` (or a telemetry JSONL checkpoint)
says: utilization, critical path and the slowest tasks (for `rhapsody report`)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any

import attrs

from rhapsody.errors import RhapsodyError


class TraceFileError(RhapsodyError):
    """A trace file cannot be read or holds no task spans; names the file."""


@attrs.frozen
class Span:
    """One attempt of one task, times in seconds from the start of the trace."""

    uid: str
    backend: str
    lane: int
    start: float
    end: float
    state: str
    attempt: int
    dependencies: tuple[str, ...]

    @property
    def duration(self) -> float:
        return self.end - self.start


@attrs.frozen
class TraceSummary:
    spans: tuple[Span, ...]
    lanes: tuple[tuple[str, int], ...]  # (backend, lane) pairs that ran at least one attempt
    start: float
    makespan: float  # seconds from the first attempt's start to the last one's end
    busy: float  # lane-seconds spent running attempts
    critical_path: tuple[str, ...]  # uids, first to last
    critical_length: float  # run time summed along the critical path
    task_times: dict[str, float]  # uid -> run time summed over its attempts

    @property
    def utilization(self) -> float:
        """Busy lane-seconds / (lanes x makespan): 1.0 when no lane ever sat idle."""
        capacity = len(self.lanes) * self.makespan
        return self.busy / capacity if capacity > 0 else 1.0

    def slowest(self, count: int) -> list[tuple[str, float]]:
        """The `count` tasks with the longest run time, longest first."""
        ranked = sorted(self.task_times.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:count]


def load(path: str | os.PathLike[str]) -> list[Span]:
    """The task spans of a Chrome trace file written by `TraceRecorder`, or of a telemetry
    checkpoint (JSONL, `session.start_telemetry(checkpoint_path=...)`)."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise TraceFileError(f"{path}: cannot read: {exc.strerror}") from exc
    if text.lstrip().startswith('{"section"'):
        return _load_checkpoint(path, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceFileError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    events = data.get("traceEvents") if isinstance(data, dict) else data
    if not isinstance(events, list):
        raise TraceFileError(f"{path}: not a Chrome trace (no 'traceEvents' list)")
    processes = {
        e.get("pid"): e.get("args", {}).get("name")
        for e in events
        if isinstance(e, dict) and e.get("ph") == "M" and e.get("name") == "process_name"
    }
    spans = []
    for index, event in enumerate(events):
        if not isinstance(event, dict) or event.get("ph") != "X" or event.get("cat") != "task":
            continue
        try:
            spans.append(_span(event, processes))
        except (KeyError, TypeError, ValueError) as exc:
            raise TraceFileError(f"{path}: event #{index} is not a task span: {exc!r}") from exc
    if not spans:
        raise TraceFileError(f"{path}: no task spans (was any task executed?)")
    return spans


# A checkpoint span's status -> the trace's end state of an attempt.
_CHECKPOINT_STATES = {"completed": "DONE", "failed": "FAILED", "canceled": "CANCELED",
                      "retried": "RETRIED"}


def _load_checkpoint(path: str | os.PathLike[str], text: str) -> list[Span]:
    """Task spans of a telemetry checkpoint; times from its first record (SessionStarted)."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(text.splitlines()):  # the run is still writing its last line
                break
            raise TraceFileError(f"{path}:{number}: invalid JSON line") from None
    origin = None
    spans = []
    for number, record in enumerate(records, 1):
        if record.get("section") == "event" and origin is None:
            origin = float(record["event_time"])
        if record.get("section") != "span" or record.get("name") != "task":
            continue
        try:
            attributes = record["attributes"]
            start = float(record["start_time_s"])
            if origin is None:
                origin = start
            spans.append(
                Span(
                    uid=str(attributes["task_id"]),
                    backend=str(attributes.get("backend", "")),
                    lane=int(attributes.get("slot", 0)),
                    start=start - origin,
                    end=float(record["end_time_s"]) - origin,
                    state=_CHECKPOINT_STATES.get(str(attributes.get("status")), "DONE"),
                    attempt=int(attributes.get("attempt", 1)),
                    dependencies=tuple(str(d) for d in record.get("dependencies") or ()),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TraceFileError(f"{path}: record #{number} is not a task span: {exc!r}") from exc
    if not spans:
        raise TraceFileError(f"{path}: no task spans (was any task executed?)")
    return spans


def _span(event: dict[str, Any], processes: dict[Any, Any]) -> Span:
    args = event.get("args") or {}
    start = float(event["ts"]) / 1e6
    return Span(
        uid=str(args.get("uid", event["name"])),
        backend=str(processes.get(event["pid"]) or event["pid"]),
        lane=int(event["tid"]) - 1,
        start=start,
        end=start + float(event["dur"]) / 1e6,
        state=str(args.get("state", "")),
        attempt=int(args.get("attempt", 1)),
        dependencies=tuple(str(d) for d in args.get("dependencies") or ()),
    )


def summarize(spans: list[Span]) -> TraceSummary:
    start = min(s.start for s in spans)
    makespan = max(s.end for s in spans) - start
    task_times: dict[str, float] = defaultdict(float)
    dependencies: dict[str, tuple[str, ...]] = {}
    for span in spans:
        task_times[span.uid] += span.duration
        dependencies[span.uid] = span.dependencies
    path, length = _critical_path(dict(task_times), dependencies)
    return TraceSummary(
        spans=tuple(sorted(spans, key=lambda s: (s.start, s.uid))),
        lanes=tuple(sorted({(s.backend, s.lane) for s in spans})),
        start=start,
        makespan=makespan,
        busy=sum(s.duration for s in spans),
        critical_path=path,
        critical_length=length,
        task_times=dict(task_times),
    )


def _critical_path(
    times: dict[str, float], dependencies: dict[str, tuple[str, ...]]
) -> tuple[tuple[str, ...], float]:
    """The chain of dependent tasks with the largest summed run time: with these run times no
    schedule can finish faster. Dependencies that did not run here (resumed tasks) count 0."""
    children: dict[str, list[str]] = defaultdict(list)
    waiting = {}
    for uid in times:
        known = [d for d in dependencies[uid] if d in times]
        waiting[uid] = len(known)
        for dep in known:
            children[dep].append(uid)
    # Longest path in a DAG, in topological order (Kahn), iterative for long chains.
    ready = sorted(uid for uid, n in waiting.items() if n == 0)
    best: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for uid in ready:
        best[uid], via[uid] = times[uid], None
    while ready:
        uid = ready.pop()
        for child in children[uid]:
            candidate = best[uid] + times[child]
            if candidate > best.get(child, -1.0):
                best[child], via[child] = candidate, uid
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    end = max(best, key=lambda uid: (best[uid], uid))
    chain = [end]
    while (previous := via[chain[-1]]) is not None:
        chain.append(previous)
    return tuple(reversed(chain)), best[end]
