"""A raptor that dies or a pilot that ends while tasks run fails them with the reason (own
pilot).

docs/backends/radical_pilot.md: "A pilot that ends while tasks run (runtime over, killed)
fails them with `pilot on <resource> ended <state>` and its logs; later tasks fail at once. A
raptor master or worker that dies fails the function tasks likewise."
"""

from __future__ import annotations

import pytest

pytest.importorskip(
    "radical.pilot", reason="radical.pilot is not installed: pip install rhapsody-radical"
)

import asyncio
import signal
from pathlib import Path
from typing import Any

import anyio
import psutil
import rp_tasks
from rp_support import WAIT, assert_no_session_processes, make_backend

from rhapsody.errors import TaskExecutionError
from rhapsody.states import EXECUTING, FAILED
from rhapsody_radical.backend import RadicalExecutionBackend
from rhapsody_radical.processes import session_processes

pytestmark = [pytest.mark.anyio, pytest.mark.radical]


def _kill(sid: str, chosen: Any) -> list[int]:
    """SIGKILL the processes of session `sid` for which `chosen(proc)` is true."""
    killed = []
    for proc in session_processes(sid):
        try:
            if chosen(proc):
                proc.send_signal(signal.SIGKILL)
                killed.append(proc.pid)
        except psutil.Error:  # gone meanwhile
            continue
    return killed


def _task_id(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get("RP_TASK_ID")
    except psutil.Error:
        return None


def _command(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


async def _running(backend: RadicalExecutionBackend, uid: str) -> None:
    with anyio.fail_after(WAIT):
        while backend.task_state(uid) != EXECUTING:  # noqa: ASYNC110 - engine state
            await asyncio.sleep(0.05)


async def _failure(future: asyncio.Future[Any]) -> str:
    with anyio.fail_after(WAIT):
        await asyncio.wait([future])
    error = future.exception()
    assert isinstance(error, TaskExecutionError), error
    assert error.task is not None and error.task["state"] == FAILED
    return str(error)


async def test_a_dying_raptor_then_an_ending_pilot_fail_their_tasks(
    radical_home: Path, tmp_path: Path
) -> None:
    backend = make_backend()
    await backend
    assert backend.session is not None
    sid = backend.session.uid
    try:
        # the raptor master dies under a running function task
        pidfile = tmp_path / "pid"
        [call] = await backend.submit_tasks(
            [{"uid": "die.f", "function": rp_tasks.nap_noting_pid, "args": [str(pidfile), 300]}]
        )
        await _running(backend, "die.f")
        master = backend.raptor_uid
        assert master is not None
        assert _kill(sid, lambda p: _task_id(p) == master), "no raptor master process found"
        reason = await _failure(call)
        assert f"raptor task {master} ended" in reason, reason
        # later function tasks fail at once, with the same reason; executables still run
        [late, still] = await backend.submit_tasks(
            [
                {"uid": "die.f2", "function": rp_tasks.double, "args": [1]},
                {"uid": "die.x", "executable": "/bin/true"},
            ]
        )
        assert f"raptor task {master} ended" in await _failure(late)
        with anyio.fail_after(WAIT):
            assert (await still)["exit_code"] == 0

        # the pilot ends under a running executable (cancelled, as a batch system's scancel
        # ends it; an agent killed outright is noticed by RADICAL-Pilot only through its
        # heartbeat, minutes later: docs/backends/radical_pilot.md)
        [sleeper] = await backend.submit_tasks(
            [{"uid": "die.sleep", "executable": "/bin/sleep", "arguments": ["300"]}]
        )
        await _running(backend, "die.sleep")
        await asyncio.to_thread(backend.pilot.cancel)
        reason = await _failure(sleeper)
        assert "pilot on local.localhost ended" in reason, reason
        with anyio.fail_after(WAIT):  # and its program is stopped, not left to the shutdown
            while any(_command(p) == ["/bin/sleep", "300"] for p in session_processes(sid)):  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        [after] = await backend.submit_tasks([{"uid": "die.after", "executable": "/bin/true"}])
        assert "pilot on local.localhost ended" in await _failure(after)
    finally:
        with anyio.fail_after(2 * WAIT):
            await backend.shutdown()
    assert_no_session_processes(sid)
