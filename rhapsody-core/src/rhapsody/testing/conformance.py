"""`BackendConformance`: the contract of ARCHITECTURE.md §3-4 as a pytest base class.

Subclass it and implement `make_backend()`. Override `make_task(kind)` when your backend runs
something other than executables and functions; return None for kinds it cannot run
("fail": a task that ends FAILED, "slow": one that runs ~0.3 s, "ok": one that succeeds).
One backend is shared per test class (engines such as a pilot are slow to start); tests that
need their own backend (shutdown) create one.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import anyio
import anyio.from_thread
import anyio.to_thread
import psutil
import pytest

from rhapsody.backends.base import BaseExecutionBackend
from rhapsody.errors import BackendError, TaskExecutionError, TaskValidationError
from rhapsody.states import DONE, EXECUTING, FINAL_STATES
from rhapsody.testing.invariants import InvariantRecorder
from rhapsody.testing.machine import run_state_machine


def _succeed(x: int = 1) -> int:
    return x * 2


def _fail() -> None:
    raise RuntimeError("conformance: intended failure")


class BackendConformance:
    """The suite every backend must pass."""

    #: examples of the hypothesis state machine (lower it only for engines that are slow per task)
    state_machine_examples: ClassVar[int] = 200
    #: seconds any single wait may take before the test fails instead of hanging
    wait_timeout: ClassVar[float] = 60.0
    #: whether the backend runs executables / Python functions
    runs_executables: ClassVar[bool] = True
    runs_functions: ClassVar[bool] = True

    def make_backend(self) -> BaseExecutionBackend:
        raise NotImplementedError("subclasses return a new, unstarted backend")

    def make_task(self, kind: str) -> dict[str, Any] | None:
        table: dict[str, dict[str, Any]] = {}
        if self.runs_executables:
            table = {
                "ok": {"executable": "/bin/true"},
                "fail": {"executable": "/bin/false"},
                "slow": {"executable": "/bin/sleep", "arguments": ["0.3"]},
            }
        elif self.runs_functions:
            table = {"ok": {"function": _succeed, "args": [1]}, "fail": {"function": _fail}}
        task = table.get(kind)
        return dict(task) if task is not None else None

    # -- fixtures ------------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def anyio_backend(cls) -> str:
        return "asyncio"

    @pytest.fixture(scope="class")
    @classmethod
    async def backend(cls, anyio_backend: str) -> AsyncIterator[BaseExecutionBackend]:
        backend = await cls().make_backend()
        yield backend
        with anyio.fail_after(cls.wait_timeout * 2):
            await backend.shutdown()

    async def _run(self, backend: BaseExecutionBackend, tasks: list[dict[str, Any]]) -> list[Any]:
        futures = await backend.submit_tasks(tasks)
        with anyio.fail_after(self.wait_timeout):
            return await asyncio.gather(*futures, return_exceptions=True)

    def _task(self, kind: str, uid: str, **extra: Any) -> dict[str, Any]:
        task = self.make_task(kind)
        if task is None:
            pytest.skip(f"backend cannot run a {kind!r} task")
        task.update(uid=uid, **extra)
        return task

    # -- the contract --------------------------------------------------------------------------
    @pytest.mark.anyio
    async def test_futures_in_submission_order_and_by_uid(
        self, backend: BaseExecutionBackend
    ) -> None:
        tasks = [self._task("ok", f"order.{i}") for i in range(5)]
        futures = await backend.submit_tasks(tasks)
        assert len(futures) == 5
        assert [uid for uid, _ in futures.items()] == [t["uid"] for t in tasks]
        assert futures["order.3"] is futures[3]
        with anyio.fail_after(self.wait_timeout):
            results = await asyncio.gather(*futures)
        assert results == tasks
        assert all(r["state"] == DONE for r in results)

    @pytest.mark.anyio
    async def test_generated_uid_written_back(self, backend: BaseExecutionBackend) -> None:
        task = self.make_task("ok")
        assert task is not None
        task.pop("uid", None)
        [result] = await self._run(backend, [task])
        assert isinstance(task["uid"], str) and task["uid"]
        assert result is task

    @pytest.mark.anyio
    async def test_failure_raises_error_carrying_task(self, backend: BaseExecutionBackend) -> None:
        task = self._task("fail", "fail.1")
        [error] = await self._run(backend, [task])
        assert isinstance(error, TaskExecutionError)
        assert error.task is task and task["state"] == "FAILED"
        assert task.get("exception") is not None or task.get("stderr") is not None

    @pytest.mark.anyio
    async def test_dependencies_run_in_order(self, backend: BaseExecutionBackend) -> None:
        recorder = InvariantRecorder(backend, uid_prefix="dep.")
        tasks = [
            self._task("ok", "dep.a"),
            self._task("ok", "dep.b", dependencies=["dep.a"]),
            self._task("ok", "dep.c", dependencies=["dep.a", "dep.b"]),
        ]
        recorder.track(tasks)
        results = await self._run(backend, tasks)
        assert all(r["state"] == DONE for r in results)
        recorder.assert_ok()
        # a later submission may depend on a finished task
        late = [self._task("ok", "dep.d", dependencies=["dep.c"])]
        recorder.track(late)
        [result] = await self._run(backend, late)
        assert result["state"] == DONE
        recorder.assert_ok()

    @pytest.mark.anyio
    async def test_failed_dependency_fails_dependents_without_running(
        self, backend: BaseExecutionBackend
    ) -> None:
        recorder = InvariantRecorder(backend, uid_prefix="fdep.")
        tasks = [
            self._task("fail", "fdep.a"),
            self._task("ok", "fdep.b", dependencies=["fdep.a"]),
            self._task("ok", "fdep.c", dependencies=["fdep.b"]),
        ]
        recorder.track(tasks)
        results = await self._run(backend, tasks)
        assert all(isinstance(r, TaskExecutionError) for r in results)
        assert "fdep.a" in str(results[1])
        assert EXECUTING not in recorder.states["fdep.b"]
        assert EXECUTING not in recorder.states["fdep.c"]
        # and against an earlier submission
        late = [self._task("ok", "fdep.d", dependencies=["fdep.a"])]
        recorder.track(late)
        [error] = await self._run(backend, late)
        assert isinstance(error, TaskExecutionError) and "fdep.a" in str(error)
        recorder.assert_ok()

    @pytest.mark.anyio
    async def test_every_subscriber_called_and_raising_callback_ignored(
        self, backend: BaseExecutionBackend
    ) -> None:
        seen_a: list[str] = []
        seen_b: list[str] = []

        def broken(task: dict[str, Any], state: str) -> None:
            raise ValueError("callback bug")

        backend.register_callback(broken)
        backend.register_callback(lambda t, s: seen_a.append(s) if t["uid"] == "cb.1" else None)
        backend.register_callback(lambda t, s: seen_b.append(s) if t["uid"] == "cb.1" else None)
        [result] = await self._run(backend, [self._task("ok", "cb.1")])
        assert result["state"] == DONE
        assert seen_a == seen_b and seen_a[-1] == DONE
        assert all(type(s) is str for s in seen_a)
        assert [s for s in seen_a if s in FINAL_STATES] == [DONE]

    @pytest.mark.anyio
    async def test_invalid_batch_is_rejected_whole(self, backend: BaseExecutionBackend) -> None:
        good = self._task("ok", "val.good")
        bad = self._task("ok", "val.bad", cores=-1)
        with pytest.raises(TaskValidationError, match=r"val\.bad.*cores"):
            await backend.submit_tasks([good, bad])
        assert backend.task_state("val.good") is None  # nothing of the batch was admitted
        with pytest.raises(TaskValidationError, match="unknown task"):
            await backend.submit_tasks([self._task("ok", "val.x", dependencies=["nope"])])
        with pytest.raises(TaskValidationError, match="cycle"):
            await backend.submit_tasks(
                [
                    self._task("ok", "val.c1", dependencies=["val.c2"]),
                    self._task("ok", "val.c2", dependencies=["val.c1"]),
                ]
            )
        [result] = await self._run(backend, [good])  # the same uid is still free
        assert result["state"] == DONE
        with pytest.raises(TaskValidationError, match="already used"):
            await backend.submit_tasks([self._task("ok", "val.good")])

    @pytest.mark.anyio
    async def test_cancel_pending_task(self, backend: BaseExecutionBackend) -> None:
        blocker = self._task("slow", "cancel.blocker")
        waiting = self._task("ok", "cancel.waiting", dependencies=["cancel.blocker"])
        futures = await backend.submit_tasks([blocker, waiting])
        assert await backend.cancel_task("cancel.waiting") is True
        with anyio.fail_after(self.wait_timeout):
            await asyncio.wait(list(futures))
        assert futures["cancel.waiting"].cancelled()
        assert waiting["state"] == "CANCELED"
        assert futures["cancel.blocker"].result()["state"] == DONE
        assert await backend.cancel_task("cancel.waiting") is False
        assert await backend.cancel_task("no-such-task") is False

    @pytest.mark.anyio
    async def test_cancel_running_task(self, backend: BaseExecutionBackend) -> None:
        task = self._task("slow", "cancel.running")
        futures = await backend.submit_tasks([task])
        with anyio.fail_after(self.wait_timeout):
            while task.get("state") != EXECUTING:  # noqa: ASYNC110 - polls any backend's dict
                await asyncio.sleep(0.01)
        assert await backend.cancel_task("cancel.running") is True
        with anyio.fail_after(self.wait_timeout):
            await asyncio.wait(list(futures))
        assert futures[0].cancelled() and task["state"] == "CANCELED"

    @pytest.mark.anyio
    async def test_finished_task_dict_is_picklable(self, backend: BaseExecutionBackend) -> None:
        task = self._task("ok", "pickle.1")
        await self._run(backend, [task])
        plain = {k: v for k, v in task.items() if k != "function"}
        pickle.dumps(plain)

    @pytest.mark.anyio
    async def test_state_machine_invariants(self, backend: BaseExecutionBackend) -> None:
        def drive() -> None:
            run_state_machine(
                backend,
                self.make_task,
                anyio.from_thread.run,
                max_examples=self.state_machine_examples,
                settle_timeout=self.wait_timeout,
            )

        await anyio.to_thread.run_sync(drive)

    @pytest.mark.anyio
    async def test_shutdown_cancels_everything_and_leaves_no_child(self) -> None:
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        backend = await self.make_backend()
        seen: dict[str, list[str]] = {}
        backend.register_callback(lambda t, s: seen.setdefault(t["uid"], []).append(s))
        kind = "slow" if self.make_task("slow") is not None else "ok"
        tasks = [self._task(kind, f"shut.{i}") for i in range(4)]
        tasks += [self._task("ok", f"shut.dep.{i}", dependencies=["shut.0"]) for i in range(4)]
        futures = await backend.submit_tasks(tasks)
        await asyncio.sleep(0.05)
        with anyio.fail_after(self.wait_timeout):
            await backend.shutdown()
        assert backend.state() == "SHUTDOWN"
        assert all(f.done() for f in futures), "a future is still pending after shutdown"
        for task in tasks:
            finals = [s for s in seen[task["uid"]] if s in FINAL_STATES]
            assert len(finals) == 1, (task["uid"], seen[task["uid"]])
        leftover = [
            p
            for p in psutil.Process().children(recursive=True)
            if p.pid not in before and p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        ]
        assert not leftover, f"processes left after shutdown: {leftover}"
        with pytest.raises(BackendError, match="shut down"):
            await backend.submit_tasks([self._task("ok", "shut.late")])
        await backend.shutdown()  # idempotent
