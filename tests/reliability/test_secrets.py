"""`secret_environment`: the task's process sees the variables; the journal, the trace, the
console, logs and error messages never show the values."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_support import WAIT, installed_backends, started

from rhapsody.errors import TaskExecutionError, TaskValidationError
from rhapsody.journal import Journal
from rhapsody.task import TaskDescription
from rhapsody.trace import TraceRecorder

SECRET = "s3cr3t-Zq8Kp2vW"
# Writes the variable's value to a file: the task's output is the task's own business (it is
# not masked), so the proof that the process saw the secret does not go through stdout.
WRITE_TOKEN = 'printf %s "$TOKEN" > token.out'

WORKFLOW = f"""
[workflow]
backend = "concurrent"

[[tasks]]
uid = "uses-secret"
executable = "/bin/sh"
arguments = ["-c", '{WRITE_TOKEN}']
working_directory = "{{work}}"
secret_environment = {{ TOKEN = "{SECRET}" }}

[[tasks]]
uid = "fails-with-secret"
executable = "/bin/sh"
arguments = ["-c", "exit 3"]
secret_environment = {{ TOKEN = "{SECRET}" }}
"""


def test_cli_journal_trace_and_console_never_hold_the_value(tmp_path: Path) -> None:
    work = tmp_path / "work"
    flow = tmp_path / "flow.toml"
    flow.write_text(WORKFLOW.replace("{work}", str(work)))
    journal, trace = tmp_path / "run.db", tmp_path / "trace.json"
    command = [sys.executable, "-m", "rhapsody", "run", str(flow), "--no-progress"]
    command += ["--journal", str(journal), "--trace", str(trace)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=WAIT, cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr  # one task fails on purpose
    assert (work / "token.out").read_text() == SECRET
    assert journal.exists() and trace.exists()
    for path in tmp_path.glob("run.db*"):  # the WAL and its index too
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in trace.read_text()
    assert SECRET not in run.stdout + run.stderr
    with Journal(journal) as reopened:
        assert reopened.states() == {"uses-secret": "DONE", "fails-with-secret": "FAILED"}


@pytest.mark.anyio
@pytest.mark.parametrize("name", [p for p in installed_backends() if p.id != "noop"])
async def test_backends_give_secrets_to_the_task_and_to_nothing_else(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = TraceRecorder()
    tasks = [
        {
            "uid": "ok",
            "executable": "/bin/sh",
            "arguments": ["-c", WRITE_TOKEN],
            "working_directory": str(tmp_path),
            "secret_environment": {"TOKEN": SECRET},
        },
        {
            "uid": "fails",
            "executable": "/bin/sh",
            "arguments": ["-c", "exit 3"],
            "secret_environment": {"TOKEN": SECRET},
        },
        {"uid": "cannot-start", "executable": "/no/such", "secret_environment": {"T": SECRET}},
    ]
    with caplog.at_level(logging.DEBUG), Journal(tmp_path / "run.db") as journal:
        async with started(name, tmp_path / "work") as backend:
            recorder.attach(backend)
            backend.register_callback(journal.record)
            futures = await journal.submit(tasks, backend.submit_tasks, backend.adopt_done)
            results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), WAIT)
    assert (tmp_path / "token.out").read_text() == SECRET
    assert [type(r) for r in results] == [dict, TaskExecutionError, TaskExecutionError]
    # (the result dicts are the caller's own: they keep what the caller put in them)
    shown = [caplog.text, repr(recorder.to_dict()), *map(str, results[1:]), *map(repr, results[1:])]
    for text in shown:
        assert SECRET not in text
    for path in tmp_path.glob("run.db*"):
        assert SECRET.encode() not in path.read_bytes(), path


def test_validation_errors_and_reprs_mask_the_value() -> None:
    task = {"executable": "/bin/true", "secret_environment": {"TOKEN": SECRET}}
    assert SECRET not in repr(TaskDescription.from_dict(task, "t"))
    assert "'TOKEN': '***'" in repr(TaskDescription.from_dict(task, "t"))
    for bad in (f"TOKEN={SECRET}", {"TOKEN": SECRET.encode()}, {"TOKEN": SECRET + "\x00"}):
        with pytest.raises(TaskValidationError, match="field 'secret_environment'") as caught:
            TaskDescription.from_dict({"executable": "/bin/true", "secret_environment": bad}, "t")
        assert SECRET not in str(caught.value)
    with pytest.raises(TaskValidationError, match="'TOKEN' is also set in 'environment'"):
        TaskDescription.from_dict(
            {**task, "environment": {"TOKEN": "plain"}, "secret_environment": {"TOKEN": SECRET}},
            "t",
        )


def test_journal_describes_secrets_by_name() -> None:
    from rhapsody.journal import describe

    base = {"executable": "/bin/true"}
    one = describe({**base, "secret_environment": {"TOKEN": SECRET}})
    assert SECRET not in one and "TOKEN" in one
    assert one == describe({**base, "secret_environment": {"TOKEN": "rotated"}})
    assert one != describe({**base, "secret_environment": {"OTHER": SECRET}})
