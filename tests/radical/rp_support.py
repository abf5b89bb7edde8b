"""Helpers shared by the RADICAL-Pilot tests (conftest.py and the test modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil

from rhapsody.platforms import PlatformDescription
from rhapsody_radical.backend import RadicalExecutionBackend
from rhapsody_radical.processes import session_processes

HERE = Path(__file__).resolve().parent
#: bound on any single wait for tasks in these tests
WAIT = 90.0


# This machine described as a platform: every pilot test goes through `platform=`, the
# argument that moves a workflow to an HPC allocation (where it names the site's label,
# partition and account instead).
THIS_MACHINE = PlatformDescription(
    name="this machine", resource_manager="local", radical_resource="local.localhost"
)


def make_backend(**kwargs: Any) -> RadicalExecutionBackend:
    """A local test pilot, not started. `local.localhost` lets a pilot claim more cores than the
    machine has: 6 = raptor master (1) + a 2-core raptor worker + 3 for executables."""
    options: dict[str, Any] = {
        "platform": THIS_MACHINE,
        "cores": 6,
        "raptor_worker_cores": 2,
        "runtime": 30,
        "start_timeout": 240.0,
    }
    options.update(kwargs)
    return RadicalExecutionBackend(**options)


def assert_no_session_processes(sid: str) -> None:
    left = []
    for proc in session_processes(sid):
        try:
            left.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.Error:  # exited meanwhile
            continue
    assert not left, f"processes of {sid} left after shutdown: {left}"


class SharedPilot:
    """The one pilot the tests share, started on first use.

    A pilot takes 30-60 s to start and an idle one still keeps the CPUs busy, so there is at most
    one at a time: a test that shuts it down (the conformance kit's shutdown test) hands the
    next test a new one, and so does a conformance class after another one (the kit reuses
    task uids in every class).
    """

    def __init__(self) -> None:
        self.backend: RadicalExecutionBackend | None = None
        self.owner: object = None

    def current(self) -> RadicalExecutionBackend:
        """The running backend, or a new unstarted one (awaiting it starts it)."""
        if self.backend is None or self.backend.state() == "SHUTDOWN":
            self.backend = make_backend()
            self.owner = None
        return self.backend

    async def get(self, owner: object = None) -> RadicalExecutionBackend:
        """The started backend; a fresh one when another conformance class used this one."""
        if owner is not None and self.owner not in (None, owner) and self.backend is not None:
            await self.close()
        backend = await self.current()
        if owner is not None:
            self.owner = owner
        assert isinstance(backend, RadicalExecutionBackend)
        return backend

    async def close(self) -> None:
        backend, self.backend = self.backend, None
        if backend is not None and backend.session is not None:
            sid = backend.session.uid
            await backend.shutdown()
            assert_no_session_processes(sid)


SHARED = SharedPilot()
