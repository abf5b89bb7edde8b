"""The raptor master and worker the backend runs (instead of RADICAL-Pilot 1.103's own).

Loaded by file path inside the pilot (`raptor_file`), so this module uses absolute imports
only. Two start-up races are closed: a callback that RADICAL-Pilot registers in `__init__` waits
until `__init__` has created what it uses (bounded, so a broken start-up still fails instead of
hanging). And the worker imports what a function task needs once, not once per task.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import radical.pilot as rp  # type: ignore[import-untyped]
import radical.pilot.constants as rpc  # type: ignore[import-untyped]
import radical.pilot.states as rps  # type: ignore[import-untyped]
import radical.utils as ru  # type: ignore[import-untyped]

from rhapsody_radical import _call

# Both constructors finish within a few seconds (they sleep 1 s to let ZMQ settle).
_INIT_WAIT = 120.0
_SETTLE = 1.0  # seconds a ZMQ publisher takes to be heard (RADICAL-Pilot's own figure)


def _wait_for(obj: object, attribute: str) -> None:
    deadline = time.monotonic() + _INIT_WAIT
    while not hasattr(obj, attribute) and time.monotonic() < deadline:
        time.sleep(0.01)


class Master(rp.raptor.Master):  # type: ignore[misc]
    """A worker's registration can arrive on the control channel before the master has its
    request/result queues and task service; answering it then raises AttributeError and the
    worker never learns where to fetch work. `_info` is assigned once all of them exist."""

    def control_cb(self, topic: str, msg: dict[str, Any]) -> Any:
        _wait_for(self, "_info")
        return super().control_cb(topic, msg)


class Worker(rp.raptor.DefaultWorker):  # type: ignore[misc]
    """Requests can arrive as soon as the request getter exists, before the worker has made
    its slot table and result queue; the dispatch then dies with AttributeError and the task
    never finishes. `_result_thread` is assigned last in RADICAL-Pilot's `__init__`, and our
    `_states` after it.

    Each task runs in a process forked from the worker, which would import the function's
    modules afresh every time (seconds for a scientific stack). Unpacking the call here first
    imports them into the worker, where every later fork finds them.

    RADICAL-Pilot's worker reports no state when it starts a task: the client only learns
    AGENT_EXECUTING when the result comes back (its task manager replays the states passed).
    A function task would look queued while it runs, its timeout and cancellation would be
    those of a queued task. So the worker publishes AGENT_EXECUTING itself once a task has its
    cores, on the agent's state channel, flagged for forwarding to the client.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bridge = self._reg[f"bridges.{rpc.STATE_PUBSUB}"]
        self._states = ru.zmq.Publisher(rpc.STATE_PUBSUB, url=bridge["addr_pub"], log=self._log)
        # A new publisher's first messages are lost until its connection is up (RADICAL-Pilot
        # lets its own settle for 1 s): the first state waits for that, no later one does.
        self._states_from = time.monotonic() + _SETTLE

    def _alloc(self, task: dict[str, Any]) -> bool:
        allocated: bool = super()._alloc(task)
        if allocated:
            time.sleep(max(0.0, self._states_from - time.monotonic()))
            state = {"uid": task["uid"], "type": "task", "state": rps.AGENT_EXECUTING}
            update = {"cmd": "update", "arg": [state], "fwd": True}
            self._states.put(rpc.STATE_PUBSUB, update)
        return allocated

    def _request_cb(self, tasks: Any) -> Any:
        _wait_for(self, "_states")  # assigned once __init__ is done (after `_result_thread`)
        for task in tasks if isinstance(tasks, list) else [tasks]:
            _import_for(task)
        return super()._request_cb(tasks)


def _import_for(task: dict[str, Any]) -> None:
    description = task.get("description") or {}
    if description.get("mode") != rp.TASK_FUNCTION:
        return
    try:
        call, _, _ = rp.PythonTask.get_func_attr(description.get("function"))
        if isinstance(call, functools.partial) and call.func is _call.call:
            _call.unpack_call(*call.args)
    except Exception:  # the task's own process reports what is wrong with it
        return
