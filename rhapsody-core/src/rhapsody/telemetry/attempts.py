"""The plain records the manager keeps (tuples and lists: cheap to make on the event loop).

A finished attempt is a tuple indexed by the constants below, its last item the task dict (or
a snapshot of the fields read here, for an attempt that was retried); `as_dict` names its
fields. A backend's counters are a list indexed by SUBMITTED ... RUNNING.
"""

from __future__ import annotations

from typing import Any

# Fields of an attempt record.
TASK_ID, BACKEND, NODE, SLOT, ATTEMPT, START, END, STATUS, WAIT, TASK = range(10)
# What an attempt record reads from its task.
TASK_FIELDS = (
    "cores",
    "gpus",
    "exit_code",
    "function",
    "prompt",
    "messages",
    "exception",
    "model",
    "dependencies",
    "node",
)

# An attempt's status -> the lifecycle state it ended in (RETRIED: failed, to be retried).
STATES = {"completed": "DONE", "failed": "FAILED", "canceled": "CANCELED", "retried": "RETRIED"}

# A backend's counters.
SUBMITTED, STARTED, COMPLETED, FAILED, CANCELED, RUNNING = range(6)


def task_type(task: dict[str, Any]) -> str:
    """`ai` (a prompt or chat messages: an AI task), `function` or `executable`."""
    if task.get("prompt") is not None or task.get("messages") is not None:
        return "ai"
    return "function" if task.get("function") is not None else "executable"


def ai_attributes(record: tuple[Any, ...]) -> dict[str, Any]:
    """What a span adds for an AI task's attempt: its `model` and the tokens its `usage`
    counts (`prompt_tokens`, `completion_tokens`), where the task has them."""
    task = record[TASK] or {}
    found: dict[str, Any] = {}
    if task.get("model") is not None:
        found["model"] = str(task["model"])
    usage = task.get("usage")
    if isinstance(usage, dict):
        for key in ("prompt_tokens", "completion_tokens"):
            if isinstance(usage.get(key), int):
                found[key] = usage[key]
    return found


def cores(record: tuple[Any, ...]) -> int:
    return int((record[TASK] or {}).get("cores") or 1)


def as_dict(record: tuple[Any, ...]) -> dict[str, Any]:
    """An attempt record with its field names (the task's dependencies left out)."""
    task = record[TASK] or {}
    exception = task.get("exception")
    return {
        "task_id": record[TASK_ID],
        "backend": record[BACKEND],
        "node_id": record[NODE],
        "slot": record[SLOT],
        "attempt": record[ATTEMPT],
        "start": record[START],
        "end": record[END],
        "status": record[STATUS],
        "state": STATES[record[STATUS]],
        "queue_wait": record[WAIT],
        "cores": int(task.get("cores") or 1),
        "gpus": int(task.get("gpus") or 0),
        "exit_code": task.get("exit_code"),
        "task_type": task_type(task),
        "reason": None if exception is None else str(exception),
    }
