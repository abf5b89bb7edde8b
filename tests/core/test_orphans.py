"""The watchdog (`rhapsody.backends.execution._orphans`): what it does when the process that
started it dies without closing it, and that a clean stop leaves nothing of it. Every backend
relies on it: tests/reliability/test_killed_runtime.py SIGKILLs a process running each one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.backends.execution._orphans import Watchdog

OWNER = """
import subprocess, sys, time
from rhapsody.backends.execution._orphans import Watchdog, kill_process_later
marker, close = sys.argv[1], sys.argv[2] == "close"
group = subprocess.Popen(["sleep", "300"], start_new_session=True)
member = subprocess.Popen(["sleep", "301"])  # in this process's group: named by pid
watchdog = Watchdog()
watchdog.watch(group.pid)
kill_process_later(watchdog, member.pid)
watchdog.on_death("os:mkdir", marker)
if close:
    watchdog.close()
print(group.pid, member.pid, flush=True)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def watchdogs() -> list[int]:
    """The live watchdogs this process started."""
    found = []
    for proc in psutil.Process().children():
        with contextlib.suppress(psutil.Error):  # a zombie has no command line
            if any("rhapsody watchdog" in part for part in proc.cmdline()):
                found.append(proc.pid)
    return found


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    _, left = psutil.wait_procs([psutil.Process(p) for p in pids if alive(p)], timeout=timeout)
    return [p.pid for p in left]


@pytest.mark.parametrize("closed", [False, True], ids=["killed", "closed-then-killed"])
def test_what_the_watchdog_does_when_its_owner_is_killed(tmp_path: Path, closed: bool) -> None:
    marker = tmp_path / "cleaned-up"
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(marker), "close" if closed else "keep"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    pids = [int(p) for p in owner.stdout.readline().split()]
    try:
        assert all(alive(p) for p in pids)
        owner.kill()
        owner.wait()
        if closed:  # a clean stop: nothing is killed, no clean-up call is made
            assert sorted(wait_gone(pids, timeout=1.0)) == sorted(pids)
            assert not marker.exists()
        else:
            assert wait_gone(pids) == []  # the group, and the process named by pid
            deadline = time.monotonic() + 10
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert marker.is_dir()  # the on_death call
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.anyio
async def test_after_shutdown_no_watchdog_is_left(tmp_path: Path) -> None:
    before = watchdogs()  # of backends other tests left running
    backend = await ConcurrentExecutionBackend(cores=2, work_dir=tmp_path)
    [future] = await backend.submit_tasks([{"executable": "/bin/true"}])
    await future
    [watchdog] = set(watchdogs()) - set(before)  # started with the first task process
    try:
        await backend.shutdown()
        assert not alive(watchdog)  # ended and reaped by shutdown()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(watchdog, signal.SIGKILL)


def test_a_watchdog_that_cannot_start_warns_and_does_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # e.g. an embedded interpreter whose sys.executable cannot be started: warn, carry on
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    watchdog = Watchdog()
    watchdog.watch(os.getpid())
    watchdog.on_death("os:mkdir", "/nonexistent/x")
    watchdog.close()
    assert "cannot start the orphan watchdog" in caplog.text
