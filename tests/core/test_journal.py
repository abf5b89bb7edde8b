"""The run journal: durable state records, and resuming a run without redoing DONE tasks."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rhapsody import ComputeTask, Session
from rhapsody.backends.execution import NoopExecutionBackend
from rhapsody.cli import main
from rhapsody.journal import Journal, JournalError, describe


def append_task(uid: str, log: Path, **fields: Any) -> dict[str, Any]:
    """A task that appends its uid to `log`: the log's lines count how often tasks ran."""
    return {
        "uid": uid,
        "executable": "/bin/sh",
        "arguments": ["-c", f"echo {uid} >> {log}; echo out-{uid}"],
        **fields,
    }


def run_session(db: Path, tasks: list[dict[str, Any]]) -> tuple[list[Any], set[str]]:
    """Run `tasks` in a session journaled to `db`: their results and the uids it resumed."""

    async def go() -> tuple[list[Any], set[str]]:
        async with Session(journal=db) as session:
            futures = await session.submit_tasks(tasks)
            results = [await f for f in futures]
            assert session.journal is not None
            return results, set(session.journal.skipped)

    return asyncio.run(go())


def helper() -> None:
    """A function task body whose qualified name the journal records."""


def ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_rerun_skips_done_tasks_and_restores_their_results(tmp_path: Path) -> None:
    db, log = tmp_path / "run.db", tmp_path / "ran.log"
    flow = [
        append_task("a", log),
        append_task("b", log, dependencies=["a"]),
        append_task("c", log, dependencies=["b"]),
    ]
    run_session(db, flow)
    assert ran(log) == ["a", "b", "c"]

    again = [dict(t) for t in flow]  # fresh dicts, as a new process would build
    results, skipped = run_session(db, again)
    assert ran(log) == ["a", "b", "c"]  # nothing ran twice
    assert skipped == {"a", "b", "c"}
    assert [r["stdout"].strip() for r in results] == ["out-a", "out-b", "out-c"]
    assert all(r["state"] == "DONE" and r["exit_code"] == 0 for r in results)


def test_changed_task_reruns_with_its_dependents_but_not_the_rest(tmp_path: Path) -> None:
    db, log = tmp_path / "run.db", tmp_path / "ran.log"
    flow = [
        append_task("root", log),
        append_task("mid", log, dependencies=["root"]),
        append_task("leaf", log, dependencies=["mid"]),
        append_task("side", log, dependencies=["root"]),
    ]
    run_session(db, flow)
    log.unlink()

    changed = [dict(t) for t in flow]
    changed[1]["environment"] = {"CHANGED": "1"}  # part of the description: 'mid' must rerun
    results, skipped = run_session(db, changed)
    assert sorted(ran(log)) == ["leaf", "mid"]
    assert skipped == {"root", "side"}
    # The dependency on the skipped 'root' was satisfied, and the caller's dict is intact.
    assert changed[1]["dependencies"] == ["root"] and results[1]["state"] == "DONE"


def test_failed_tasks_and_unserializable_results_run_again(tmp_path: Path) -> None:
    db, marker = tmp_path / "run.db", tmp_path / "fixed"
    calls: list[str] = []

    def opaque() -> object:
        calls.append("opaque")
        return object()  # not JSON: its result cannot be restored, so it is not resumable

    def flaky() -> int:
        calls.append("flaky")
        if not marker.exists():
            raise RuntimeError("not yet")
        return 7

    def flow() -> list[dict[str, Any]]:
        return [{"uid": "opaque", "function": opaque}, {"uid": "flaky", "function": flaky}]

    async def first_run() -> None:
        async with Session(journal=db) as session:
            futures = await session.submit_tasks(flow())
            await session.wait_tasks()
            assert futures[1].exception() is not None  # flaky failed

    asyncio.run(first_run())
    marker.touch()
    results, skipped = run_session(db, flow())
    assert calls == ["opaque", "flaky", "opaque", "flaky"] and skipped == set()
    assert results[1]["return_value"] == 7

    calls.clear()
    results, skipped = run_session(db, flow())
    assert calls == ["opaque"] and skipped == {"flaky"}
    assert results[1]["return_value"] == 7


def test_resumed_compute_task_is_awaitable(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    run_session(db, [ComputeTask(function=sum, args=[[1, 2, 3]], uid="total")])

    async def go() -> None:
        async with Session(journal=db) as session:
            task = ComputeTask(function=sum, args=[[1, 2, 3]], uid="total")
            await session.submit_tasks([task])
            assert (await task)["return_value"] == 6
            assert await session.wait_tasks() == [task]
            assert session.journal is not None and session.journal.skipped == {"total"}

    asyncio.run(go())


def test_every_transition_is_recorded_with_its_time(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    before = time.time()

    async def go() -> list[tuple[int, str, float]]:
        async with Session([NoopExecutionBackend()], journal=db) as session:
            await session.submit_tasks([{"uid": "t", "executable": "/bin/true"}])
            await session.wait_tasks()
            assert session.journal is not None
            return session.journal.transitions("t")

    history = asyncio.run(go())
    assert [state for _, state, _ in history] == [
        "SCHEDULING_PENDING",
        "EXECUTING_PENDING",
        "EXECUTING",
        "DONE",
    ]
    assert all(before <= at <= time.time() for _, _, at in history)
    with sqlite3.connect(db) as db_conn:
        assert db_conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        row = db_conn.execute("SELECT state, description FROM tasks WHERE uid = 't'").fetchone()
    assert row[0] == "DONE" and json.loads(row[1])["executable"] == "/bin/true"


def test_a_final_state_is_committed_before_later_callbacks_run(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    seen: list[tuple[str, str | None]] = []

    def read_back(task: dict[str, Any], state: str) -> None:
        # Another connection sees only committed data: what a SIGKILL right now would keep.
        if state in ("DONE", "FAILED"):
            with sqlite3.connect(db) as reader:
                row = reader.execute(
                    "SELECT state, result FROM tasks WHERE uid = ?", (task["uid"],)
                ).fetchone()
            seen.append((row[0], row[1] and json.loads(row[1]).get("return_value")))

    async def go() -> None:
        async with Session(journal=db) as session:
            session.register_callback(read_back)  # after the journal's own callback
            await session.submit_tasks([{"uid": "t", "function": sum, "args": [[2, 3]]}])
            await session.wait_tasks()

    asyncio.run(go())
    assert seen == [("DONE", 5)]


def test_description_names_functions_and_ignores_dependency_order() -> None:
    one = {"function": helper, "dependencies": ["x", "y"], "backend": "a"}
    two = {"function": helper, "dependencies": ["y", "x"], "backend": "b"}
    assert describe(one) == describe(two)
    assert json.loads(describe(one))["function"] == f"{__name__}:helper"
    assert describe({**one, "args": [1]}) != describe(one)


def test_a_file_that_is_not_a_journal_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_text("not a database, " * 100)
    with pytest.raises(JournalError, match=r"notes\.db"):
        Journal(bogus)


def test_cli_resume_after_sigkill_loses_no_done_task(tmp_path: Path) -> None:
    """A real `rhapsody run` killed with SIGKILL mid-way; the rerun skips what was DONE."""
    log, release, db = tmp_path / "ran.log", tmp_path / "release", tmp_path / "run.db"
    quick = [append_task(f"quick.{i}", log) for i in range(5)]
    # Waits until the test creates `release`: blocks the first run, passes at once afterwards.
    # (SIGKILL leaves the first run's copy orphaned; it exits by itself once released.)
    slow = {
        "uid": "slow",
        "executable": "/bin/sh",
        "arguments": ["-c", f"while [ ! -e {release} ]; do sleep 0.05; done"],
    }
    final = append_task("final", log, dependencies=[t["uid"] for t in quick])
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps({"tasks": [*quick, slow, final]}))
    command = [sys.executable, "-m", "rhapsody", "run", str(flow), "--no-progress"]

    first = subprocess.Popen([*command, "--journal", str(db)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _done_in(db) < 6:  # the five quick tasks and 'final'
            assert first.poll() is None, "the first run ended before it was killed"
            assert time.monotonic() < deadline, "the quick tasks never finished"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    assert sorted(ran(log)) == sorted(["final", *(t["uid"] for t in quick)])

    release.touch()
    second = subprocess.run(
        [*command, "--journal", str(db)], capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 0, second.stdout + second.stderr
    # 'slow' ran to the end; the others were resumed, not run twice.
    assert "7 done (6 resumed from the journal)" in second.stdout
    assert "final: out-final" in second.stdout  # the skipped task's recorded output
    assert sorted(ran(log)) == sorted(["final", *(t["uid"] for t in quick)])


def _done_in(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as reader:
            (count,) = reader.execute("SELECT count(*) FROM tasks WHERE state = 'DONE'").fetchone()
    except sqlite3.OperationalError:  # the tables are not created yet
        return 0
    return int(count)


def test_cli_journal_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, db, flow = tmp_path / "ran.log", tmp_path / "run.db", tmp_path / "flow.json"
    flow.write_text(json.dumps({"tasks": [append_task("one", log), append_task("two", log)]}))
    assert main(["run", str(flow), "--no-progress", "--journal", str(db)]) == 0
    assert main(["run", str(flow), "--no-progress", "--journal", str(db)]) == 0
    assert "2 done (2 resumed from the journal)" in capsys.readouterr().out
    assert sorted(ran(log)) == ["one", "two"]
