"""Dask's native state names and the lifecycle state each one means.

Import-light (no dask import): the plugin registers this table through
`rhapsody_register_state_mappers`, and the backend maps its futures' states through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from rhapsody.states import CANCELED, DONE, EXECUTING, EXECUTING_PENDING, FAILED, SCHEDULING_PENDING

BACKEND_NAME: Final = "dask"

TASK_STATES: Final[Mapping[str, str]] = {
    # Scheduler task states. `processing` only means "assigned to a worker": the task may still
    # wait in that worker's queue, so it is not EXECUTING yet.
    "released": EXECUTING_PENDING,
    "waiting": SCHEDULING_PENDING,
    "no-worker": EXECUTING_PENDING,
    "queued": EXECUTING_PENDING,
    "processing": EXECUTING_PENDING,
    "memory": DONE,
    "erred": FAILED,
    "cancelled": CANCELED,
    "lost": FAILED,
    "forgotten": CANCELED,
    # Worker task states in which the task's code is running: what the backend reports as
    # EXECUTING (the runner announces it from the worker thread).
    "executing": EXECUTING,
    "long-running": EXECUTING,
    # Client `Future.status` values, which the backend reads once a future settles.
    "pending": EXECUTING_PENDING,
    "finished": DONE,
    "error": FAILED,
}
