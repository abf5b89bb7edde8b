"""Stopping a running executable: SIGTERM to its process group, then SIGKILL `kill_grace`
seconds later to what is still running (the `kill_grace` option of concurrent and dask)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from reliability_support import WAIT, alive, started

import rhapsody

GRACE = 1.5
# Writes its pid, then loops. `$2` is what it does with SIGTERM: "" ignores it (and so does
# every process it starts), else a command run on SIGTERM before exiting.
PROGRAM = 'trap "$2" TERM; echo $$ > "$1"; while :; do sleep 0.05; done'

BACKENDS = [
    pytest.param(name, id=name)
    for name in ("concurrent", "dask")
    if rhapsody.discover_backends().get(name)
]


async def _pid(path: Path) -> int:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text())
        await asyncio.sleep(0.02)
    raise AssertionError(f"the task never wrote {path}")


async def _gone(pid: int) -> float:
    """Seconds until `pid` is gone (a hang detector bounds the wait)."""
    began = time.monotonic()
    while _alive(pid):
        assert time.monotonic() - began < WAIT, f"process {pid} still runs after {WAIT} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - began


def _alive(pid: int) -> bool:
    try:
        return alive(psutil.Process(pid))
    except psutil.Error:
        return False


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.anyio
async def test_a_program_ignoring_sigterm_is_killed_after_the_grace(
    name: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    task = {
        "uid": "stubborn",
        "executable": "/bin/sh",
        "arguments": ["-c", PROGRAM, "sh", str(pidfile), ""],
    }
    async with started(name, tmp_path, kill_grace=GRACE) as backend:
        [future] = await backend.submit_tasks([task])
        pid = await _pid(pidfile)
        try:
            assert await backend.cancel_task("stubborn")
            took = await _gone(pid)
        finally:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(future, WAIT)
        assert task["state"] == "CANCELED"
    # It ignored SIGTERM, so only the SIGKILL sent once the grace was over stopped it.
    assert took >= GRACE * 0.9, f"stopped after {took:.2f} s, before the {GRACE} s grace"


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.anyio
async def test_a_program_gets_sigterm_first(name: str, tmp_path: Path) -> None:
    pidfile, termfile = tmp_path / "pid", tmp_path / "term"
    on_term = f'echo TERM > "{termfile}"; exit 0'
    task = {
        "uid": "polite",
        "executable": "/bin/sh",
        "arguments": ["-c", PROGRAM, "sh", str(pidfile), on_term],
    }
    async with started(name, tmp_path, kill_grace=WAIT) as backend:  # no SIGKILL in time
        [future] = await backend.submit_tasks([task])
        pid = await _pid(pidfile)
        assert await backend.cancel_task("polite")
        await _gone(pid)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(future, WAIT)
    assert termfile.read_text() == "TERM\n", "the program did not see SIGTERM"
