"""A results file: one JSON line per task, written as each task finishes.

    results = ResultsFile("results.jsonl")
    backend.register_callback(results.record)
    ...
    results.close()

Each line is written whole by one `write` system call as the task reaches its final state, so
a run killed at any moment leaves a file of complete lines (see docs/cli.md for the fields).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from rhapsody.states import EXECUTING, FINAL_STATES
from rhapsody.sweeps import PARAMETERS

#: The result fields copied into a record when the task has them.
RESULT_FIELDS = (
    "stdout",
    "stderr",
    "return_value",
    "stdout_file",
    "stderr_file",
    "endpoint",
    "response",
    "usage",
)


class ResultsFile:
    """JSON Lines of finished tasks. Use `record` as a backend callback (loop thread)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._submitted: dict[str, float] = {}
        self._started: dict[str, float] = {}

    def record(self, task: Mapping[str, Any], state: str) -> None:
        """A backend callback: note the times; write the task's line when `state` is final."""
        uid = task["uid"]
        now = time.time()
        self._submitted.setdefault(uid, now)
        if state == EXECUTING:
            self._started.setdefault(uid, now)  # the first attempt's start
        elif state in FINAL_STATES:
            started = self._started.pop(uid, None)
            submitted = self._submitted.pop(uid, None)
            self._write(_record(task, state, submitted, started, now, resumed=False))

    def resumed(self, tasks: Iterable[Mapping[str, Any]]) -> None:
        """Write the lines of tasks resumed from a journal (DONE, with their recorded results)."""
        for task in tasks:
            self._write(_record(task, task.get("state", "DONE"), None, None, None, resumed=True))

    def _write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            return
        data = (_dumps(record) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        """Close the file. Idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _record(
    task: Mapping[str, Any],
    state: str,
    submitted: float | None,
    started: float | None,
    finished: float | None,
    *,
    resumed: bool,
) -> dict[str, Any]:
    reason = task.get("exception")
    record: dict[str, Any] = {
        "uid": task["uid"],
        "state": state,
        "reason": None if reason is None else str(reason),
        "exit_code": task.get("exit_code"),
        "parameters": task.get(PARAMETERS) or {},
        "submitted": submitted,
        "started": started,
        "finished": finished,
        "run_time": None if started is None or finished is None else finished - started,
        "resumed": resumed,
    }
    for field in RESULT_FIELDS:
        if task.get(field) is not None:
            record[field] = task[field]
    return record


def _dumps(record: dict[str, Any]) -> str:
    try:
        return json.dumps(record, allow_nan=False, default=repr)
    except (ValueError, TypeError):  # NaN, infinity, or keys JSON cannot spell
        return json.dumps(_plain(record), allow_nan=False, default=repr)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {
            key if isinstance(key, str) else repr(key): _plain(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
