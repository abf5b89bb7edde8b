"""Chrome trace-event recording of task runs (opens in Perfetto and chrome://tracing).

    recorder = TraceRecorder()
    recorder.attach(backend)          # or a Session: each of its backends
    ...                               # run tasks
    recorder.write("trace.json")

Each attempt of a task is one complete ("X") event from EXECUTING to the attempt's end, on the
lane (thread) of its backend (process) that was the lowest free one when it started; every state
change is an instant ("i") event; metadata ("M") events name the processes and lanes. A span's
`args` hold the task's uid, final state of the attempt, attempt number and `dependencies`, which
`rhapsody report` uses for the critical path.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rhapsody.states import EXECUTING, EXECUTING_PENDING, FINAL_STATES
from rhapsody.task import dependency_uids

if TYPE_CHECKING:
    from rhapsody.backends.base import BaseExecutionBackend, Callback
    from rhapsody.session import Session

STATES_TID = 0  # the thread row of each backend that holds the instants of waiting tasks
RETRIED = "RETRIED"  # the end state of an attempt that failed and is retried


class _Attempt:
    __slots__ = ("attempt", "dependencies", "lane", "start")

    def __init__(self, start: float, lane: int, attempt: int, dependencies: list[str]) -> None:
        self.start = start
        self.lane = lane
        self.attempt = attempt
        self.dependencies = dependencies


class TraceRecorder:
    """Collects trace events from backend callbacks (call it from the event loop's thread)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._origin = clock()
        self._events: list[dict[str, Any]] = []
        self._pids: dict[str, int] = {}
        self._busy: dict[int, list[bool]] = {}  # per process: which lanes hold an attempt
        self._running: dict[tuple[int, str], _Attempt] = {}
        self._attempts: dict[tuple[int, str], int] = {}

    def attach(self, target: BaseExecutionBackend | Session) -> None:
        """Record the tasks of a backend, or of every backend a session has now."""
        from rhapsody.session import Session

        backends = target.backends.values() if isinstance(target, Session) else [target]
        for backend in backends:
            backend.register_callback(self.callback(backend.name))

    def callback(self, process: str) -> Callback:
        """A `register_callback` function recording under the process named `process`."""

        def on_state(task: dict[str, Any], state: str) -> None:
            self.record(process, task, state)

        return on_state

    def record(self, process: str, task: dict[str, Any], state: str) -> None:
        """Record that `task`, run by `process` (a backend name), moved to `state`."""
        now = self._now()
        pid = self._pid(process)
        uid = task["uid"]
        key = (pid, uid)
        attempt = self._running.get(key)
        if state == EXECUTING:
            lane = self._free_lane(pid)
            number = self._attempts[key] = self._attempts.get(key, 0) + 1
            attempt = _Attempt(now, lane, number, dependency_uids(task))
            self._running[key] = attempt
        elif attempt is not None and (state in FINAL_STATES or state == EXECUTING_PENDING):
            del self._running[key]
            self._busy[pid][attempt.lane] = False
            end = state if state in FINAL_STATES else RETRIED
            span = _span(pid, uid, attempt, now, end)
            if task.get("exit_code") is not None:
                span["args"]["exit_code"] = task["exit_code"]
            self._events.append(span)
        self._events.append(
            {
                "name": state,
                "cat": "state",
                "ph": "i",
                "s": "t",
                "ts": now,
                "pid": pid,
                "tid": attempt.lane + 1 if attempt is not None else STATES_TID,
                "args": {"uid": uid},
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """The trace as a JSON-ready dict; attempts still running end now, state `RUNNING`."""
        now = self._now()
        open_spans = [
            _span(pid, uid, attempt, now, "RUNNING")
            for (pid, uid), attempt in self._running.items()
        ]
        return {
            "traceEvents": [*self._metadata(), *self._events, *open_spans],
            "displayTimeUnit": "ms",
            "otherData": {"generator": "rhapsody", "clock": "seconds since recording began"},
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the trace as JSON to `path`."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.to_dict(), file)

    # -- helpers -----------------------------------------------------------------------------
    def _now(self) -> float:
        return round((self._clock() - self._origin) * 1e6, 3)  # trace time is in microseconds

    def _pid(self, process: str) -> int:
        pid = self._pids.get(process)
        if pid is None:
            pid = self._pids[process] = len(self._pids) + 1
            self._busy[pid] = []
        return pid

    def _free_lane(self, pid: int) -> int:
        busy = self._busy[pid]
        for lane, taken in enumerate(busy):
            if not taken:
                busy[lane] = True
                return lane
        busy.append(True)
        return len(busy) - 1

    def _metadata(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for process, pid in self._pids.items():
            events.append(_meta("process_name", pid, 0, process))
            events.append(_meta("thread_name", pid, STATES_TID, "task states"))
            for lane in range(len(self._busy[pid])):
                events.append(_meta("thread_name", pid, lane + 1, f"lane {lane}"))
        return events


def _span(pid: int, uid: str, attempt: _Attempt, end: float, state: str) -> dict[str, Any]:
    return {
        "name": uid,
        "cat": "task",
        "ph": "X",
        "ts": attempt.start,
        "dur": round(end - attempt.start, 3),
        "pid": pid,
        "tid": attempt.lane + 1,
        "args": {
            "uid": uid,
            "state": state,
            "attempt": attempt.attempt,
            "dependencies": attempt.dependencies,
        },
    }


def _meta(kind: str, pid: int, tid: int, name: str) -> dict[str, Any]:
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}
