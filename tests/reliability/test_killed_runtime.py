"""A process killed with its backend running (SIGKILL, the OOM killer: nothing can be caught)
leaves nothing behind: the backend's watchdog kills its tasks, grandchildren included, and a
pilot's agent and daemons; an embedded dask cluster's workers die with it, and its scratch
directory is removed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from reliability_support import WAIT, alive, installed_backends, working_in

RUNTIME = """
import asyncio, sys, time
from pathlib import Path
from reliability_support import started
from rhapsody.states import EXECUTING

async def main(name, root):
    tasks = [
        {"uid": "exe", "executable": "/bin/sleep", "arguments": ["300"]},
        {"uid": "tree", "executable": "/bin/sh", "arguments": ["-c", "sleep 300 & sleep 300"]},
    ]
    if name == "concurrent":
        tasks.append({"uid": "fn", "function": time.sleep, "args": [300], "isolation": "process"})
    running = set()
    async with started(name, Path(root) / "work") as backend:
        backend.register_callback(lambda t, s: running.add(t["uid"]) if s == EXECUTING else None)
        await backend.submit_tasks(tasks)
        while len(running) < len(tasks):
            await asyncio.sleep(0.05)
        await asyncio.sleep(1)  # the shell forks its child
        embedded = getattr(backend, "_embedded", None)  # dask: its scratch directory
        print("ready", embedded._scratch if embedded else "", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.parametrize("name", [p for p in installed_backends() if p.id != "noop"])
def test_a_killed_runtime_leaves_nothing_running(name: str, tmp_path: Path) -> None:
    here = str(Path(__file__).parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
    }
    runtime = subprocess.Popen(
        [sys.executable, "-c", RUNTIME, name, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    procs: dict[int, psutil.Process] = {}

    def look() -> None:
        with contextlib.suppress(psutil.Error):
            procs.update((p.pid, p) for p in psutil.Process(runtime.pid).children(recursive=True))
        procs.update((p.pid, p) for p in working_in(tmp_path))

    try:
        assert runtime.stdout is not None
        ready, _, scratch = runtime.stdout.readline().rstrip("\n").partition(" ")
        assert ready == "ready", "the backend did not start its tasks"
        assert (name == "dask") == bool(scratch) and (not scratch or Path(scratch).is_dir())
        look()
        commands = [" ".join(p.cmdline()) for p in procs.values() if alive(p)]
        assert sum("sleep 300" in c for c in commands) >= 3, commands
        runtime.kill()
        runtime.wait(timeout=10)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            look()  # a dying pilot component may start another process
            if not any(alive(p) for p in procs.values()):
                break
            time.sleep(0.2)
        left = [f"{p.pid} {p.name()}" for p in procs.values() if alive(p)]
        assert left == [], left
        while scratch and Path(scratch).exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # the watchdog removes it after killing the tasks
        assert not scratch or not Path(scratch).exists(), f"{scratch} was not removed"
    finally:
        runtime.kill()
        runtime.wait()
        for proc in procs.values():  # a failed check must not leave them behind either
            with contextlib.suppress(psutil.Error):
                proc.kill()
