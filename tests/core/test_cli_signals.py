"""`rhapsody run` stopped by Ctrl-C (SIGINT) or by a batch system (SIGTERM): running tasks are
canceled, no task process outlives the run, the summary and the journal say so, and the exit
code tells which."""

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

from rhapsody.journal import Journal

WORKFLOW = """
[[tasks]]
uid = "quick"
executable = "/bin/true"

[[tasks]]
uid = "sleeper"
executable = "/bin/sh"
arguments = ["-c", "echo $$ > {pidfile}; exec sleep 60"]

[[tasks]]
uid = "after"
executable = "/bin/true"
dependencies = ["sleeper"]
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_cancels_cleanly(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    pidfile = tmp_path / "sleeper.pid"
    flow = tmp_path / "flow.toml"
    flow.write_text(WORKFLOW.format(pidfile=pidfile))
    journal = tmp_path / "run.db"
    command = [sys.executable, "-m", "rhapsody", "run", str(flow), "--no-progress"]
    run = subprocess.Popen(
        [*command, "--journal", str(journal)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},  # one line per message
    )
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert run.poll() is None, run.communicate()[0]
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.05)
        sleeper = int(pidfile.read_text())
        os.kill(run.pid, sig)
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == code, output
    assert "interrupted: unfinished tasks were canceled" in output
    assert "2 canceled" in output and "1 done" in output  # sleeper and its dependent
    with Journal(journal) as recorded:
        assert recorded.states() == {"quick": "DONE", "sleeper": "CANCELED", "after": "CANCELED"}
    deadline = time.monotonic() + 5
    while not gone(sleeper) and time.monotonic() < deadline:  # a SIGKILL lands asynchronously
        time.sleep(0.02)
    assert gone(sleeper)


KILLED_WORKFLOW = """
[[tasks]]
uid = "sleeper"
executable = "/bin/sh"
arguments = ["-c", "echo $$ > {pidfile}; exec sleep 60"]

[[tasks]]
uid = "parent"
executable = "/bin/sh"
arguments = ["-c", "sleep 60 & echo $! > {childfile}; wait"]
"""


def test_a_sigkilled_run_leaves_no_task_running(tmp_path: Path) -> None:
    # SIGKILL cannot be caught (nor can the OOM killer): a watchdog that outlives the run kills
    # the process groups of the tasks it left running, grandchildren included.
    pidfile, childfile = tmp_path / "sleeper.pid", tmp_path / "grandchild.pid"
    flow = tmp_path / "flow.toml"
    flow.write_text(KILLED_WORKFLOW.format(pidfile=pidfile, childfile=childfile))
    run = subprocess.Popen(
        [sys.executable, "-m", "rhapsody", "run", str(flow), "--no-progress"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        for file in (pidfile, childfile):
            while not (file.exists() and file.read_text().strip()):
                assert run.poll() is None, "the run ended early"
                assert time.monotonic() < deadline, "the tasks never started"
                time.sleep(0.05)
            pids.append(int(file.read_text()))
        run.kill()
        run.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid in pids if not gone(pid)] == []
    finally:
        for pid in pids:  # a failed check must not leave them behind either
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
