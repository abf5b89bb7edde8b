"""A run journal: every state change of every task, in SQLite, so a killed run can resume.

    journal = Journal("run.db")
    backend.register_callback(journal.record)
    futures = await journal.submit(tasks, backend.submit_tasks, backend.adopt_done)

`Journal.record` stores each transition with its time; a task's final state is committed before
the callback returns, so once a task's DONE callback ran its result survives the process being
killed (SIGKILL included). `Journal.submit` resumes: a task whose uid is DONE in the journal with
the same description, and all of whose dependencies were resumed too, is not run again; its
future resolves at once to the task dict, filled with the recorded result.

Tables (see docs/cli.md): `runs(id, started)`, `tasks(uid, description_hash, description,
state, result, updated)`, `transitions(id, run, uid, state, at)`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from rhapsody.backends.base import TaskFutures
from rhapsody.errors import RhapsodyError
from rhapsody.inference.request import is_ai_task
from rhapsody.states import DONE, FINAL_STATES
from rhapsody.task import DESCRIPTION_FIELDS, dependency_uids

SCHEMA_VERSION = 1
# uids per lookup query: under the 999 host parameters older SQLite builds allow
_QUERY_CHUNK = 500

# What a DONE task produced, kept when it survives a JSON round trip unchanged.
RESULT_FIELDS = (
    *("stdout", "stderr", "exit_code", "return_value", "stdout_file", "stderr_file"),
    *("response", "usage", "model", "served_by", "latency"),  # AI tasks
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, started REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    uid TEXT PRIMARY KEY,
    description_hash TEXT NOT NULL,
    description TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL REFERENCES runs(id),
    uid TEXT NOT NULL,
    state TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_by_uid ON transitions(uid);
"""

Submit = Callable[[list[dict[str, Any]]], Awaitable[Sequence[asyncio.Future[Any]]]]
Adopt = Callable[[Iterable[str]], None]


class JournalError(RhapsodyError):
    """A journal file cannot be opened or was written by an incompatible version."""


def describe(task: Mapping[str, Any]) -> str:
    """The canonical JSON of the fields that define `task` (functions by qualified name)."""
    fields = {name: task[name] for name in DESCRIPTION_FIELDS if task.get(name) is not None}
    secrets = task.get("secret_environment")
    if isinstance(secrets, Mapping):
        # Names only: the journal never holds a secret. Renaming or adding one reruns the
        # task; changing a value alone does not (a rotated token does not redo finished work).
        fields["secret_environment"] = sorted(map(str, secrets))
    if "dependencies" in fields:
        fields["dependencies"] = sorted(set(dependency_uids(task)))
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=_canonical)


def description_hash(description: str) -> str:
    return hashlib.sha256(description.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}:{value.__qualname__}"
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    # Other objects by their repr: one that shows an address changes every run, so a task
    # taking it is rerun rather than wrongly skipped.
    return {"repr": repr(value)}


class Journal:
    """The SQLite journal of one run (WAL mode). Use it from the event loop's thread."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            # The loop thread is the only user, but the journal may be created before the loop.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives the process being killed (not a power loss)
            # without an fsync per task.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._check_version()
            self.run = self._start_run()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: cannot use as a journal: {exc}") from exc
        self._in_transaction = False
        self._flush_scheduled = False
        self._closed = False
        self.skipped: set[str] = set()  # uids resumed from the journal in this run

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            raise JournalError(
                f"{self.path}: journal schema {row[0]}, this version reads {SCHEMA_VERSION}"
            )

    def _start_run(self) -> int:
        cursor = self._db.execute("INSERT INTO runs (started) VALUES (?)", (time.time(),))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    # -- resuming --------------------------------------------------------------------------
    async def submit(
        self, tasks: Iterable[dict[str, Any]], submit: Submit, adopt: Adopt
    ) -> TaskFutures:
        """Submit `tasks` through `submit`, except those the journal holds as DONE, which are
        given to `adopt` (a backend's `adopt_done`) so that the tasks that run may depend on them.

        A task is resumed (not run) when its uid is DONE in the journal with the same
        description, its recorded result is complete, and each of its dependencies was resumed
        as well; otherwise its DONE record is dropped before it is submitted. Returns the futures
        of every task in order; a resumed task's future is already resolved.
        """
        tasks = list(tasks)
        resumed = self._resumable(tasks)
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[Any]] = {}
        for task in tasks:
            if task.get("uid") in resumed:
                futures[task["uid"]] = self._resume(task, resumed[task["uid"]], loop)
        to_run = [task for task in tasks if task.get("uid") not in resumed]
        self._forget(to_run)
        adopt(resumed)
        submitted = await submit(to_run) if to_run else []
        # The engine gave uids to tasks that had none: read them back from the dicts.
        futures.update(zip((task["uid"] for task in to_run), submitted, strict=True))
        return TaskFutures((task["uid"], futures[task["uid"]]) for task in tasks)

    def _resumable(self, tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """uid -> recorded result of each task of `tasks` that need not run again."""
        # a generated uid differs between runs: nothing to match
        named = {task["uid"]: task for task in tasks if isinstance(task.get("uid"), str)}
        done: dict[str, tuple[str, str]] = {}
        uids = list(named)
        for start in range(0, len(uids), _QUERY_CHUNK):  # one query per chunk, not per task
            chunk = uids[start : start + _QUERY_CHUNK]
            done.update(
                (uid, (digest, result))
                for uid, digest, result in self._db.execute(
                    "SELECT uid, description_hash, result FROM tasks WHERE state = ? AND "
                    f"result IS NOT NULL AND uid IN ({','.join('?' * len(chunk))})",
                    (DONE, *chunk),
                )
            )
        candidates: dict[str, dict[str, Any]] = {}
        for uid, (digest, result) in done.items():
            if digest == description_hash(describe(named[uid])):
                candidates[uid] = json.loads(result)
        # A task whose dependency runs again must run again, and a service (DONE once it was
        # stopped) runs again for any task of the batch that runs and uses it: drop candidates
        # until stable (dependencies may name later tasks of the batch).
        by_uid = {task.get("uid"): task for task in tasks}
        services = {uid for uid, task in named.items() if _is_service(task)}
        users: dict[str, list[str]] = {}
        for task in tasks:
            for used in dependency_uids(task):  # an AI task's services included
                if used in services:
                    users.setdefault(used, []).append(task.get("uid"))  # type: ignore[arg-type]
        changed = True
        while changed:
            changed = False
            for uid in list(candidates):
                needed = any(user not in candidates for user in users.get(uid, ()))
                if needed or any(
                    dep not in candidates and dep not in self.skipped
                    for dep in dependency_uids(by_uid[uid])
                ):
                    del candidates[uid]
                    changed = True
        return candidates

    def _resume(
        self, task: dict[str, Any], result: dict[str, Any], loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[Any]:
        task.update(result)
        # As the engine does: a DONE task has its result field even when it produced nothing.
        task.setdefault("stdout" if task.get("function") is None else "return_value", None)
        task["state"] = DONE
        future: asyncio.Future[Any] = loop.create_future()
        future.set_result(task)
        bind = getattr(task, "bind_future", None)
        if bind is not None:  # e.g. ComputeTask: awaitable itself
            bind(future)
        self.skipped.add(task["uid"])
        return future

    def _forget(self, tasks: list[dict[str, Any]]) -> None:
        """Record the descriptions of tasks about to run, dropping any DONE record they had:
        committed before they start, so a run killed meanwhile does not resume them."""
        now = time.time()
        rows = []
        for task in tasks:
            uid = task.get("uid")
            if isinstance(uid, str):
                description = describe(task)
                rows.append((uid, description_hash(description), description, "NEW", now))
        self._begin()
        self._db.executemany(_UPSERT_TASK, rows)
        self._commit()

    # -- recording -------------------------------------------------------------------------
    def record(self, task: dict[str, Any], state: str) -> None:
        """A backend callback: store the transition; commit at once when it is final."""
        if self._closed:
            return
        uid = task["uid"]
        now = time.time()
        result = _result(task) if state == DONE else None
        self._begin()
        updated = self._db.execute(
            "UPDATE tasks SET state = ?, result = ?, updated = ? WHERE uid = ?",
            (state, result, now, uid),
        )
        if updated.rowcount == 0:  # submitted to the backend directly, not through `submit`
            description = describe(task)
            self._db.execute(
                "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?)",
                (uid, description_hash(description), description, state, result, now),
            )
        self._db.execute(
            "INSERT INTO transitions (run, uid, state, at) VALUES (?, ?, ?, ?)",
            (self.run, uid, state, now),
        )
        if state in FINAL_STATES:
            self._commit()
        elif not self._flush_scheduled:
            # Non-final transitions come in bursts (a submission moves every task twice):
            # one commit per turn of the event loop.
            self._flush_scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self._flush)
            except RuntimeError:
                self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._closed:
            self._commit()

    def _begin(self) -> None:
        if not self._in_transaction:
            self._db.execute("BEGIN")
            self._in_transaction = True

    def _commit(self) -> None:
        if self._in_transaction:
            self._db.execute("COMMIT")
            self._in_transaction = False

    # -- settings of the run -----------------------------------------------------------------
    def recall(self, key: str) -> str | None:
        """The value `remember`ed under `key` by an earlier run, or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (f"run.{key}",)).fetchone()
        return None if row is None else str(row[0])

    def remember(self, key: str, value: str) -> None:
        """Keep `value` under `key` for later runs (`rhapsody run` keeps its run directory)."""
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"run.{key}", value))

    # -- reading ---------------------------------------------------------------------------
    def states(self) -> dict[str, str]:
        """uid -> the last recorded state of every task in the journal."""
        return dict(self._db.execute("SELECT uid, state FROM tasks").fetchall())

    def transitions(self, uid: str) -> list[tuple[int, str, float]]:
        """(run, state, unix time) of every recorded transition of task `uid`, oldest first."""
        return self._db.execute(
            "SELECT run, state, at FROM transitions WHERE uid = ? ORDER BY id", (uid,)
        ).fetchall()

    def close(self) -> None:
        """Commit what is pending and close the file. Idempotent."""
        if self._closed:
            return
        self._commit()
        self._closed = True
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Journal({self.path!r}, run={self.run})"


_UPSERT_TASK = """
INSERT INTO tasks (uid, description_hash, description, state, result, updated)
VALUES (?, ?, ?, ?, NULL, ?)
ON CONFLICT(uid) DO UPDATE SET
    description_hash = excluded.description_hash,
    description = excluded.description,
    state = excluded.state,
    result = NULL,
    updated = excluded.updated
"""


def _is_service(task: Mapping[str, Any]) -> bool:
    if is_ai_task(task):  # an AI task's `service` names its server
        return False
    return task.get("service") not in (None, False) or task.get("is_service") is True


def _result(task: Mapping[str, Any]) -> str | None:
    """The JSON of a DONE task's result fields, or None when one of them would not come back
    unchanged from JSON (then the task is not resumable: it runs again)."""
    fields = {name: task[name] for name in RESULT_FIELDS if task.get(name) is not None}
    try:
        text = json.dumps(fields, sort_keys=True)
    except (TypeError, ValueError):
        return None
    return text if json.loads(text) == fields else None
