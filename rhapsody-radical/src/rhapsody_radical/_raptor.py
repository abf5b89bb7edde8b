"""Raptor master and worker that close two start-up races of RADICAL-Pilot 1.103.

Loaded by file path inside the pilot (`raptor_file`), so this module uses absolute imports
only. Each fix makes a callback that RADICAL-Pilot registers in `__init__` wait until
`__init__` has created what the callback uses; the waits are bounded, so a genuinely broken
start-up still fails instead of hanging.
"""

from __future__ import annotations

import time
from typing import Any

import radical.pilot as rp  # type: ignore[import-untyped]

# Both constructors finish within a few seconds (they sleep 1 s to let ZMQ settle).
_INIT_WAIT = 120.0


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
    never finishes. `_result_thread` is assigned last in `__init__`."""

    def _request_cb(self, tasks: Any) -> Any:
        _wait_for(self, "_result_thread")
        return super()._request_cb(tasks)
