"""Fault-injection soak: run many executable tasks, a seeded fraction of them broken on purpose,
and account for every one of them.

    plan = FaultPlan.random(2_000, seed=7)
    report = await FaultSoak(backend, plan, scratch_dir).run()
    report.assert_ok()

Fault kinds (`FAULT_KINDS`): `exit` (exits with a code in 1..125), `kill` (SIGKILLed from
outside while it runs: the task writes its pid to a file the soak watches), `timeout` (outlives
its `timeout`), `cancel` (`cancel_task` after a random delay, pending or running) and
`dependent` (depends on a task of one of those kinds, so it must never run). The other tasks
run `/bin/true`, some depending on earlier ones. Each task's final state and reason are checked
against what was injected, and the lifecycle invariants (`InvariantRecorder`) throughout.
`time to recover` per kind: from the fault (kill sent, cancel asked, timeout due, dependency
final; for `exit`, the task's start) to the task's final callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from rhapsody.backends.base import BaseExecutionBackend
from rhapsody.states import CANCELED, DONE, EXECUTING, FAILED, FINAL_STATES
from rhapsody.testing.invariants import InvariantRecorder

FAULT_KINDS = ("exit", "kill", "timeout", "cancel", "dependent")
OK = "ok"
#: seconds a task that is meant to be stopped (killed, timed out, cancelled) would otherwise run
HOLD = 60
#: the `timeout` of timeout tasks, in seconds
TIMEOUT = 0.3


@attrs.define
class Injected:
    """One task of the plan and what it must end as."""

    uid: str
    kind: str
    code: int = 0  # exit tasks: the exit code
    target: str | None = None  # dependent tasks (and some ok tasks): the dependency
    cancel_after: float = 0.0  # cancel tasks: seconds after submission


@attrs.define
class FaultPlan:
    """The tasks of a soak, in submission order; dependencies only name earlier tasks."""

    tasks: list[Injected]
    prefix: str

    @classmethod
    def random(
        cls,
        n: int,
        *,
        seed: int,
        fault_rate: float = 0.25,
        kinds: Sequence[str] = FAULT_KINDS,
        prefix: str = "soak",
    ) -> FaultPlan:
        """`n` tasks, each faulty with probability `fault_rate`, kinds evenly drawn."""
        rng = random.Random(seed)
        tasks: list[Injected] = []
        ok_uids: list[str] = []
        faulty: list[str] = []  # uids of tasks a dependent can depend on
        for i in range(n):
            uid = f"{prefix}.{i:06d}"
            kind = rng.choice(kinds) if kinds and rng.random() < fault_rate else OK
            if kind == "dependent" and not faulty:
                kind = OK  # nothing to depend on yet
            task = Injected(uid, kind)
            if kind == "exit":
                task.code = rng.randint(1, 125)
            elif kind == "cancel":
                task.cancel_after = rng.uniform(0.0, 0.5)
            elif kind == "dependent":
                task.target = rng.choice(faulty)
            elif ok_uids and rng.random() < 0.2:
                task.target = rng.choice(ok_uids)
            if kind in ("exit", "kill", "timeout", "cancel"):
                faulty.append(uid)
            elif kind == OK:
                ok_uids.append(uid)
            tasks.append(task)
        return cls(tasks, prefix)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for task in self.tasks:
            out[task.kind] = out.get(task.kind, 0) + 1
        return out


@attrs.define
class KindReport:
    injected: int = 0
    accounted: int = 0  # exactly one final callback, with the expected state and reason
    lost: int = 0  # no final callback, or a future still pending
    recover: list[float] = attrs.Factory(list)

    def recover_median(self) -> float | None:
        return statistics.median(self.recover) if self.recover else None

    def recover_max(self) -> float | None:
        return max(self.recover) if self.recover else None


@attrs.define
class SoakReport:
    kinds: dict[str, KindReport]
    problems: list[str]
    seconds: float

    @property
    def lost(self) -> int:
        return sum(k.lost for k in self.kinds.values())

    def assert_ok(self) -> None:
        """Every task accounted for, none lost, no invariant broken."""
        assert not self.problems, f"{len(self.problems)} problems:\n" + "\n".join(
            self.problems[:20]
        )
        for kind, report in self.kinds.items():
            assert report.accounted == report.injected, (kind, report)
            assert report.lost == 0, (kind, report)


class FaultSoak:
    """Runs a `FaultPlan` through a started backend that runs executables."""

    def __init__(
        self,
        backend: BaseExecutionBackend,
        plan: FaultPlan,
        scratch: Path,
        *,
        batch: int = 500,
        wait_timeout: float = 600.0,
    ) -> None:
        self.backend = backend
        self.plan = plan
        self.scratch = scratch
        self.batch = batch
        self.wait_timeout = wait_timeout
        self.by_uid = {task.uid: task for task in plan.tasks}
        self.recorder = InvariantRecorder(backend, plan.prefix)
        self.finals: dict[str, list[tuple[str, float]]] = {}
        self.started_at: dict[str, float] = {}
        self.fault_at: dict[str, float] = {}  # kill sent / cancel asked
        self.problems: list[str] = []
        self._helpers: set[asyncio.Task[None]] = set()
        backend.register_callback(self._on_state)

    # -- tasks -----------------------------------------------------------------------------
    def task_dict(self, task: Injected) -> dict[str, Any]:
        out: dict[str, Any] = {"uid": task.uid}
        if task.kind == "exit":
            out.update(executable="/bin/sh", arguments=["-c", f"exit {task.code}"])
        elif task.kind == "kill":
            # exec: the pid written is the process the backend started (or its sh, if killed
            # before the exec: killed by SIGKILL just the same).
            script = f'echo $$ > "$1"; exec sleep {HOLD}'
            pidfile = str(self._pidfile(task.uid))
            out.update(executable="/bin/sh", arguments=["-c", script, "sh", pidfile])
        elif task.kind == "timeout":
            out.update(executable="/bin/sleep", arguments=[str(HOLD)], timeout=TIMEOUT)
        elif task.kind == "cancel":
            out.update(executable="/bin/sleep", arguments=[str(HOLD)])
        else:
            out["executable"] = "/bin/true"
        if task.target is not None:
            out["dependencies"] = [task.target]
        return out

    def _pidfile(self, uid: str) -> Path:
        return self.scratch / f"{uid}.pid"

    # -- run -------------------------------------------------------------------------------
    async def run(self) -> SoakReport:
        self.scratch.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        began = time.monotonic()
        futures: dict[str, asyncio.Future[Any]] = {}
        timers: list[asyncio.TimerHandle] = []
        tasks = self.plan.tasks
        for start in range(0, len(tasks), self.batch):
            chunk = tasks[start : start + self.batch]
            dicts = [self.task_dict(t) for t in chunk]
            self.recorder.track(dicts)
            submitted = await self.backend.submit_tasks(dicts)
            futures.update(submitted.items())
            for task in chunk:
                if task.kind == "cancel":
                    timers.append(loop.call_later(task.cancel_after, self._start_cancel, task.uid))
            await asyncio.sleep(0)  # let the loop breathe between batches
        await asyncio.wait(futures.values(), timeout=self.wait_timeout)
        seconds = time.monotonic() - began
        for timer in timers:
            timer.cancel()
        for helper in list(self._helpers):
            helper.cancel()
        await asyncio.gather(*self._helpers, return_exceptions=True)
        await self._check_late_cancel(futures)
        self.recorder.check_final(futures)
        self.problems.extend(self.recorder.violations)
        return self._report(futures, seconds)

    def _spawn(self, coro: Any) -> None:
        helper = asyncio.ensure_future(coro)
        self._helpers.add(helper)
        helper.add_done_callback(self._helpers.discard)

    def _on_state(self, task: dict[str, Any], state: str) -> None:
        uid = task.get("uid")
        injected = self.by_uid.get(uid) if isinstance(uid, str) else None
        if injected is None:
            return
        now = time.monotonic()
        if state == EXECUTING:
            self.started_at.setdefault(injected.uid, now)
            if injected.kind == "kill":
                self._spawn(self._kill(injected.uid))
        elif state in FINAL_STATES:
            self.finals.setdefault(injected.uid, []).append((state, now))

    async def _kill(self, uid: str) -> None:
        path = self._pidfile(uid)
        while True:  # the task writes its pid as it starts; a partial write reads as ""
            with contextlib.suppress(OSError, ValueError):
                pid = int(path.read_text())
                break
            await asyncio.sleep(0.005)
        self.fault_at[uid] = time.monotonic()
        os.kill(pid, signal.SIGKILL)

    def _start_cancel(self, uid: str) -> None:
        self._spawn(self._cancel(uid))

    async def _cancel(self, uid: str) -> None:
        self.fault_at[uid] = time.monotonic()
        if not await self.backend.cancel_task(uid):
            self.problems.append(f"{uid}: cancel_task returned False for a task that never ends")

    async def _check_late_cancel(self, futures: dict[str, asyncio.Future[Any]]) -> None:
        """Cancelling a finished task is refused and leaves its one final callback alone."""
        for uid in list(futures)[::50]:
            if futures[uid].done() and await self.backend.cancel_task(uid):
                self.problems.append(f"{uid}: cancel_task accepted a finished task")

    # -- checking --------------------------------------------------------------------------
    def _expected(self, task: Injected) -> tuple[str, str | None]:
        """(final state, regex the failure reason must match)."""
        if task.kind == "exit":
            return FAILED, rf"exit code {task.code}\b"
        if task.kind == "kill":
            return FAILED, r"killed by signal SIGKILL\b"
        if task.kind == "timeout":
            return FAILED, rf"timed out after {TIMEOUT:g} s"
        if task.kind == "cancel":
            return CANCELED, None
        if task.kind == "dependent":
            assert task.target is not None
            cause = "canceled" if self.by_uid[task.target].kind == "cancel" else "failed"
            return FAILED, rf"dependency {re.escape(repr(task.target))} {cause}"
        return DONE, None

    def _report(self, futures: dict[str, asyncio.Future[Any]], seconds: float) -> SoakReport:
        kinds: dict[str, KindReport] = {}
        for task in self.plan.tasks:
            report = kinds.setdefault(task.kind, KindReport())
            report.injected += 1
            finals = self.finals.get(task.uid, [])
            future = futures[task.uid]
            if not finals or not future.done():
                report.lost += 1
                self.problems.append(f"{task.uid} ({task.kind}): lost ({finals}, {future})")
                continue
            state, reason = finals[0][0], _reason(future)
            expected_state, pattern = self._expected(task)
            if len(finals) != 1 or state != expected_state:
                self.problems.append(
                    f"{task.uid} ({task.kind}): {finals}, expected {expected_state}: {reason}"
                )
            elif pattern is not None and not re.search(pattern, reason or ""):
                self.problems.append(f"{task.uid} ({task.kind}): reason {reason!r} !~ {pattern}")
            else:
                report.accounted += 1
                since = self._fault_time(task)
                if since is not None:
                    report.recover.append(finals[0][1] - since)
        return SoakReport(kinds, self.problems, seconds)

    def _fault_time(self, task: Injected) -> float | None:
        if task.kind in ("kill", "cancel"):
            return self.fault_at.get(task.uid)
        if task.kind == "exit":
            return self.started_at.get(task.uid)
        if task.kind == "timeout":
            started = self.started_at.get(task.uid)
            return None if started is None else started + TIMEOUT
        if task.kind == "dependent":
            assert task.target is not None
            return self.finals[task.target][0][1] if self.finals.get(task.target) else None
        return None


def _reason(future: asyncio.Future[Any]) -> str | None:
    if future.cancelled():
        return "canceled"
    error = future.exception()
    return None if error is None else str(error)
