"""Helpers shared by the RADICAL-Pilot tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rhapsody_radical.backend import RadicalExecutionBackend
from rhapsody_radical.processes import session_processes

HERE = Path(__file__).resolve().parent
#: cores of a test pilot: raptor takes two (master + worker), executables get the rest
PILOT_CORES = 4
START_TIMEOUT = 240.0
#: bound on any single wait for tasks in these tests
WAIT = 90.0


def make_backend(**kwargs: Any) -> RadicalExecutionBackend:
    """A local test pilot (`local.localhost`), not started."""
    options: dict[str, Any] = {"cores": PILOT_CORES, "runtime": 30, "start_timeout": START_TIMEOUT}
    options.update(kwargs)
    return RadicalExecutionBackend(**options)


def assert_no_session_processes(sid: str) -> None:
    left = [f"{p.pid} {p.name()}" for p in session_processes(sid)]
    assert not left, f"processes of {sid} left after shutdown: {left}"
