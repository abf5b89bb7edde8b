"""A process that dies without shutting its backend down (SIGKILL, the OOM killer) takes its
task processes along: the watchdog of `rhapsody.backends.execution._orphans` kills them."""

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

RUNTIME = """
import asyncio, sys, time
from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.states import EXECUTING

async def main():
    backend = await ConcurrentExecutionBackend(cores=4, work_dir=sys.argv[1])
    started = set()
    backend.register_callback(lambda t, s: started.add(t["uid"]) if s == EXECUTING else None)
    await backend.submit_tasks([
        {"uid": "exe", "executable": "/bin/sleep", "arguments": ["60"]},
        {"uid": "tree", "executable": "/bin/sh", "arguments": ["-c", "sleep 60 & sleep 60"]},
        {"uid": "fn", "function": time.sleep, "args": [60], "isolation": "process"},
    ])
    while len(started) < 3:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)  # the shell forks its child, the function's process gets going
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_tasks_die_with_a_sigkilled_runtime(tmp_path: Path) -> None:
    runtime = subprocess.Popen(
        [sys.executable, "-c", RUNTIME, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    descendants: list[psutil.Process] = []
    try:
        assert runtime.stdout is not None
        assert runtime.stdout.readline() == "ready\n"
        descendants = psutil.Process(runtime.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in descendants]
        # the executable, the shell and its child, the function's process, the watchdog
        assert sum("sleep 60" in c for c in commands) >= 3, commands
        runtime.kill()
        runtime.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(p.pid) for p in descendants) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [" ".join(p.cmdline()) for p in descendants if alive(p.pid)]
        assert left == [], left
    finally:
        runtime.kill()
        runtime.wait()
        for proc in descendants:  # a failed check must not leave them behind either
            with contextlib.suppress(psutil.Error):
                proc.kill()


@pytest.mark.anyio
async def test_after_shutdown_no_watchdog_is_left(tmp_path: Path) -> None:
    def watchdogs() -> list[int]:
        return [
            p.pid
            for p in psutil.Process().children()
            if "-I" in p.cmdline() and "-S" in p.cmdline() and alive(p.pid)
        ]

    assert watchdogs() == []
    backend = await ConcurrentExecutionBackend(cores=2, work_dir=tmp_path)
    [future] = await backend.submit_tasks([{"executable": "/bin/true"}])
    await future
    [watchdog] = watchdogs()  # started with the first task process
    try:
        await backend.shutdown()
        assert not alive(watchdog)  # ended and reaped by shutdown()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(watchdog, signal.SIGKILL)
