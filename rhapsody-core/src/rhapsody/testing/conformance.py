"""`BackendConformance`: the contract of ARCHITECTURE.md §3-4 as a pytest base class.

Subclass it and implement `make_backend()`. Override `make_task(kind)` when your backend runs
something other than executables and functions; return None for kinds it cannot run
("fail": a task that ends FAILED, "slow": one that runs ~0.3 s, "long": one that runs ~10 s,
long enough to be seen running and cancelled on any engine; "ok": one that succeeds).
One backend is shared per test class (engines such as a pilot are slow to start); tests that
need their own backend (shutdown) create one.

Besides the lifecycle, the kit checks what tasks do on the backend: each documented task field
has a check that runs a probe (`rhapsody.testing.probes`) and looks at what the process saw.
A backend that cannot run executables or functions says so (`runs_executables` /
`runs_functions`, or `make_task` returning None) and the checks that need them are skipped,
each with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import anyio
import anyio.from_thread
import anyio.to_thread
import psutil
import pytest

from rhapsody.backends.base import BaseExecutionBackend
from rhapsody.errors import BackendError, TaskExecutionError, TaskValidationError
from rhapsody.states import DONE, EXECUTING, FINAL_STATES
from rhapsody.testing import probes
from rhapsody.testing.invariants import InvariantRecorder
from rhapsody.testing.machine import run_state_machine

#: arguments that a shell, a launch script or a naive join would change
ARGUMENTS = [
    "two words",
    'double"quote',
    "single'quote",
    "",
    "ünïcødé ✓ 日本",
    "$HOME",
    "`id`",
    "*",
    "back\\slash",
    "--opt=a b",
    "line\nbreak",
    "  padded  ",
]
# Seconds the "long" kind runs: seen EXECUTING on any engine, and short enough that a function
# thread that cannot be interrupted (a cancelled thread runs on) is soon done.
_LONG = 10
# How long the kit looks for a dependent of a failed task that started after the failure.
_LATE = 1.0
# Starts a grandchild, writes its pid and its own, then waits: stopping the task must stop both.
_TREE = 'sleep 300 & echo $! > "$1"; echo $$ >> "$1"; wait'


class BackendConformance:
    """The suite every backend must pass."""

    #: examples of the hypothesis state machine (lower it only for engines that are slow per task)
    state_machine_examples: ClassVar[int] = 200
    #: seconds any single wait may take before the test fails instead of hanging
    wait_timeout: ClassVar[float] = 60.0
    #: whether the backend runs executables / Python functions
    runs_executables: ClassVar[bool] = True
    runs_functions: ClassVar[bool] = True
    #: whether the backend runs service tasks (executables that dependents use while they run)
    runs_services: ClassVar[bool] = True
    #: whether the backend runs a task of `ranks > 1` as one MPI program of that many processes;
    #: False: it must reject such a task at submit
    runs_mpi: ClassVar[bool] = False
    #: variables the MPI check's task gets: what this host's MPI needs (e.g. Open MPI as root)
    mpi_environment: ClassVar[dict[str, str]] = {}
    #: bytes each stream of the large-output check writes (above the usual in-memory limits)
    large_output_bytes: ClassVar[int] = 3 << 20

    def make_backend(self) -> BaseExecutionBackend:
        raise NotImplementedError("subclasses return a new, unstarted backend")

    def make_task(self, kind: str) -> dict[str, Any] | None:
        table: dict[str, dict[str, Any]] = {}
        if self.runs_executables:
            table = {
                "ok": {"executable": "/bin/true"},
                "fail": {"executable": "/bin/false"},
                "slow": {"executable": "/bin/sleep", "arguments": ["0.3"]},
                "long": {"executable": "/bin/sleep", "arguments": [str(_LONG)]},
            }
        elif self.runs_functions:
            table = {
                "ok": {"function": probes.succeed, "args": [1]},
                "fail": {"function": probes.fail},
                "slow": {"function": probes.nap, "args": [0.3]},
                "long": {"function": probes.nap, "args": [_LONG]},
            }
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

    def _require_functions(self) -> None:
        if not self.runs_functions:
            _skip(f"{type(self).__name__} runs no functions (runs_functions = False)")

    def _task(self, kind: str, uid: str, **extra: Any) -> dict[str, Any]:
        task = self.make_task(kind)
        if task is None:
            _skip(f"{type(self).__name__}.make_task({kind!r}) is None: no such task here")
        task.update(uid=uid, **extra)
        return task

    def _executable(self, uid: str, task: dict[str, Any], **extra: Any) -> dict[str, Any]:
        if not self.runs_executables:
            _skip(f"{type(self).__name__} runs no executables (runs_executables = False)")
        task.update(uid=uid, **extra)
        return task

    async def _done(self, backend: BaseExecutionBackend, task: dict[str, Any]) -> dict[str, Any]:
        [result] = await self._run(backend, [task])
        if isinstance(result, BaseException):
            raise AssertionError(f"task {task['uid']!r} did not succeed: {result}") from result
        assert task["state"] == DONE, task["state"]
        return task

    async def _failed(self, backend: BaseExecutionBackend, task: dict[str, Any]) -> Exception:
        [result] = await self._run(backend, [task])
        assert isinstance(result, TaskExecutionError), (
            f"{task['uid']!r} did not fail: it ended {task.get('state')} ({result!r:.200})"
        )
        assert task["state"] == "FAILED", task["state"]
        return result

    @staticmethod
    def _reported(task: dict[str, Any]) -> dict[str, Any]:
        try:
            report: dict[str, Any] = json.loads(task.get("stdout") or "")
        except ValueError:
            stdout = task.get("stdout")
            raise AssertionError(f"the probe's stdout is not its report: {stdout!r}") from None
        return report

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
        assert result is task and task["state"] == DONE

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
        # A "slow" task can end before an engine that reports states in bulk (RADICAL-Pilot)
        # has shown it EXECUTING: cancel one that runs for seconds.
        kind = "long" if self.make_task("long") is not None else "slow"
        task = self._task(kind, "cancel.running")
        futures = await backend.submit_tasks([task])
        with anyio.fail_after(self.wait_timeout):
            while task.get("state") != EXECUTING:  # polls any backend's dict
                assert task.get("state") not in FINAL_STATES, (
                    f"the {kind!r} task ended {task.get('state')} before it was seen EXECUTING"
                )
                await asyncio.sleep(0.01)
        assert await backend.cancel_task("cancel.running") is True
        with anyio.fail_after(self.wait_timeout):
            await asyncio.wait(list(futures))
        _same(task.get("state"), "CANCELED", "the cancelled task's state")
        assert futures[0].cancelled(), f"the cancelled task's future: {futures[0]}"

    @pytest.mark.anyio
    async def test_finished_task_dict_is_picklable(self, backend: BaseExecutionBackend) -> None:
        task = self._task("ok", "pickle.1")
        await self._done(backend, task)
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

    # -- what tasks do: each documented field, seen from inside the task -----------------------
    @pytest.mark.anyio
    async def test_arguments_reach_the_program_verbatim(
        self, backend: BaseExecutionBackend
    ) -> None:
        task = await self._done(backend, self._executable("do.args", probes.report(*ARGUMENTS)))
        _same(self._reported(task)["argv"], ARGUMENTS, "the program's arguments")

    @pytest.mark.anyio
    async def test_environment_is_merged_over_the_parents(
        self, backend: BaseExecutionBackend
    ) -> None:
        env = {"RHAPSODY_KIT_VAR": "spaces, ü and $HOME", "RHAPSODY_KIT_EMPTY": ""}
        task = self._executable("do.env", probes.report(), environment=env)
        seen = self._reported(await self._done(backend, task))["env"]
        _same({k: seen.get(k) for k in env}, env, "the task's variables")
        for name in ("HOME", "PATH"):  # the parent's environment is still there
            if name in os.environ:
                assert seen.get(name), f"{name} is missing from the task's environment"

    @pytest.mark.anyio
    async def test_secret_environment_reaches_the_process_only(
        self, backend: BaseExecutionBackend
    ) -> None:
        secret = f"kit-secret-{uuid.uuid4().hex}"
        secrets = {probes.SECRET_PREFIX: secret}
        task = self._executable(
            "do.secret", probes.report(), secret_environment=secrets, environment={"A": "1"}
        )
        failing = self._executable(
            "do.secret.fail", probes.streams(1, 1, code=3), secret_environment=secrets
        )
        with _captured_logs() as logs:
            results = await self._run(backend, [task, failing])
        assert task["state"] == DONE, results[0]
        seen = self._reported(task)["env"]
        assert seen.get(probes.SECRET_PREFIX) == probes.digest(secret), "the secret is missing"
        _same(seen.get("A"), "1", "the task's environment beside its secret")
        assert isinstance(results[1], TaskExecutionError), results[1]
        for shown in (task, failing):  # the caller's own `secret_environment` aside
            rest = {k: v for k, v in shown.items() if k != "secret_environment"}
            assert secret not in repr(rest), f"the secret is in task {shown['uid']!r}"
        assert secret not in str(results[1]), "the secret is in the failure's message"
        leaked = [line for line in logs if secret in line]
        assert not leaked, f"the secret is in the logs: {leaked[:3]}"

    @pytest.mark.anyio
    async def test_working_directory_is_created_and_used(
        self, backend: BaseExecutionBackend, tmp_path: Path
    ) -> None:
        where = tmp_path / "not yet" / "ü"
        task = self._executable("do.cwd", probes.report(), working_directory=str(where))
        seen = self._reported(await self._done(backend, task))
        assert where.is_dir(), "the working directory was not created"
        assert _same_path(seen["cwd"], where), f"it ran in {seen['cwd']!r}"

    @pytest.mark.anyio
    async def test_shell_runs_a_command_line(self, backend: BaseExecutionBackend) -> None:
        task = self._executable(
            "do.shell", {"executable": "echo one && echo two", "arguments": ["it's $HOME"]},
            shell=True,
        )
        await self._done(backend, task)
        # the command line interpreted, the argument appended quoted
        _same(task.get("stdout"), "one\ntwo it's $HOME\n", "stdout")

    @pytest.mark.anyio
    async def test_stdout_and_stderr_are_captured_separately(
        self, backend: BaseExecutionBackend
    ) -> None:
        task = await self._done(backend, self._executable("do.streams", probes.streams(3, 2)))
        _same(task.get("stdout"), probes.stream_text("out", 3), "stdout")
        _same(task.get("stderr"), probes.stream_text("err", 2), "stderr")
        _same(task.get("exit_code"), 0, "exit_code")

    @pytest.mark.anyio
    async def test_large_output_is_kept_in_full(self, backend: BaseExecutionBackend) -> None:
        """Each stream either in the dict, or whole in `<stream>_file` with its tail in the dict."""
        lines = self.large_output_bytes // 12  # probe lines are 12 bytes
        task = self._executable("do.large", probes.streams(lines, lines // 2))
        await self._done(backend, task)
        try:
            for stream, kind, count in (("stdout", "out", lines), ("stderr", "err", lines // 2)):
                expected = probes.stream_text(kind, count)
                kept = task.get(stream) or ""
                path = task.get(f"{stream}_file")
                if path is None:
                    assert kept == expected, f"{stream}: {len(kept)} of {len(expected)} chars"
                    continue
                whole = _read(path)
                assert whole == expected, f"{stream}_file: {len(whole)} of {len(expected)} chars"
                assert kept and expected.endswith(kept), f"{stream} is not the stream's tail"
        finally:
            for stream in ("stdout_file", "stderr_file"):  # the kit's own, in the work dir
                spilled = task.get(stream)
                if spilled:
                    with contextlib.suppress(OSError):
                        os.unlink(spilled)

    @pytest.mark.anyio
    async def test_exit_code_fails_the_task(self, backend: BaseExecutionBackend) -> None:
        task = self._executable("do.exit", probes.streams(2, 1, code=3))
        error = await self._failed(backend, task)
        assert task.get("exit_code") == 3 and "exit code 3" in str(error), str(error)
        # a failed task keeps its output
        _same(task.get("stdout"), probes.stream_text("out", 2), "stdout")
        _same(task.get("stderr"), probes.stream_text("err", 1), "stderr")

    @pytest.mark.anyio
    async def test_dependents_of_a_failure_never_start(
        self, backend: BaseExecutionBackend, tmp_path: Path
    ) -> None:
        # Seen from the files the dependents would write, not from the states reported: a
        # backend whose engine holds dependents behind running dependencies
        # (`chains_dependencies`) must not start them when one fails.
        marks = [tmp_path / f"ran.{i}" for i in range(2)]
        failing = {"executable": "/bin/sh", "arguments": ["-c", "sleep 0.3; exit 3"]}
        tasks = [self._executable("never.a", failing)]
        for i, mark in enumerate(marks):
            touch = {"executable": "/bin/touch", "arguments": [str(mark)]}
            before = tasks[-1]["uid"]
            tasks.append(self._executable(f"never.{i}", touch, dependencies=[before]))
        results = await self._run(backend, tasks)
        assert all(isinstance(r, TaskExecutionError) for r in results), results
        assert "never.a" in str(results[1]), str(results[1])
        # A dependent that its engine started anyway may do so after the failure was reported.
        await asyncio.sleep(_LATE)
        ran = [mark.name for mark in marks if mark.exists()]
        assert not ran, f"dependents of a failed task ran: they wrote {ran}"

    @pytest.mark.anyio
    async def test_timeout_stops_the_process_tree(
        self, backend: BaseExecutionBackend, tmp_path: Path
    ) -> None:
        pids = tmp_path / "pids"
        tree = {"executable": "/bin/sh", "arguments": ["-c", _TREE, "sh", str(pids)]}
        task = self._executable("do.timeout", tree, timeout=3.0)
        error = await self._failed(backend, task)
        assert "timed out" in str(error), str(error)
        await self._assert_tree_gone(pids)

    @pytest.mark.anyio
    async def test_cancel_stops_the_process_tree(
        self, backend: BaseExecutionBackend, tmp_path: Path
    ) -> None:
        pids = tmp_path / "pids"
        tree = {"executable": "/bin/sh", "arguments": ["-c", _TREE, "sh", str(pids)]}
        task = self._executable("do.cancel", tree)
        futures = await backend.submit_tasks([task])
        with anyio.fail_after(self.wait_timeout):
            while len(_pids(pids)) < 2:  # noqa: ASYNC110 - the task's own file
                await asyncio.sleep(0.02)
        assert await backend.cancel_task("do.cancel") is True
        with anyio.fail_after(self.wait_timeout):
            await asyncio.wait(list(futures))
        assert futures[0].cancelled(), futures[0]
        _same(task.get("state"), "CANCELED", "the cancelled task's state")
        await self._assert_tree_gone(pids)

    @pytest.mark.anyio
    async def test_service_serves_its_dependents_until_stopped(
        self, backend: BaseExecutionBackend, tmp_path: Path
    ) -> None:
        if not self.runs_services:
            _skip(f"{type(self).__name__} runs no services (runs_services = False)")
        pidfile = tmp_path / "service.pid"
        server = self._executable("do.service", probes.service(str(pidfile)))
        client = self._executable("do.client", probes.service_client("do.service"))
        futures = await backend.submit_tasks([server, client])
        with anyio.fail_after(self.wait_timeout):
            await asyncio.wait([futures["do.client"]])
        assert client.get("state") == DONE, f"the service's user ended {client.get('state')}"
        assert client["stdout"].strip() == "pong", f"the user read {client['stdout']!r}"
        assert futures["do.service"].done(), "a ready service's future resolves"
        assert server["state"] == EXECUTING, f"the service ended too early: {server['state']}"
        assert isinstance(server.get("endpoint"), str), "a ready service has an endpoint"
        assert await backend.cancel_task("do.service") is True
        with anyio.fail_after(self.wait_timeout):
            while server["state"] not in FINAL_STATES:  # noqa: ASYNC110 - any backend's dict
                await asyncio.sleep(0.02)
        assert server["state"] == "CANCELED", server["state"]
        await self._assert_tree_gone(pidfile, 1)

    @pytest.mark.anyio
    async def test_ranks_run_as_one_mpi_program(self, backend: BaseExecutionBackend) -> None:
        if not self.runs_mpi:
            _skip(f"{type(self).__name__} runs no MPI tasks (runs_mpi = False)")
        task = self._executable("do.ranks", probes.ranks(2))
        if not any(map(shutil.which, ("mpirun", "mpiexec"))):
            _skip("no MPI here: neither mpirun nor mpiexec is on PATH")
        if self.mpi_environment:
            task["environment"] = dict(self.mpi_environment)
        await self._done(backend, task)
        stdout = task.get("stdout") or ""
        try:
            seen = _json_objects(stdout)
            worlds = sorted((int(r["rank"]), int(r["size"])) for r in seen)
        except (ValueError, TypeError, KeyError):
            raise AssertionError(f"the ranks did not report their world: {stdout!r}") from None
        how = seen[0]["how"] if seen else "no output"
        _same(worlds, [(0, 2), (1, 2)], f"(rank, size) of each process, from {how}")

    @pytest.mark.anyio
    async def test_ranks_beyond_one_are_rejected(self, backend: BaseExecutionBackend) -> None:
        if self.runs_mpi:
            _skip(f"{type(self).__name__} runs MPI tasks (runs_mpi = True)")
        task = self._task("ok", "do.ranks.rejected", ranks=2)
        try:
            futures = await backend.submit_tasks([task])
        except TaskValidationError as exc:
            assert (exc.uid, exc.field) == ("do.ranks.rejected", "ranks"), (
                f"rejected, but not naming the task and 'ranks': {exc}"
            )
            return
        with anyio.fail_after(self.wait_timeout):
            await asyncio.wait(list(futures))
        raise AssertionError(
            f"a task of ranks=2 was accepted and ended {task.get('state')}: a backend that runs "
            "no MPI program must reject it at submit (if it does run them: runs_mpi = True)"
        )

    async def _assert_tree_gone(self, pidfile: Path, count: int = 2) -> None:
        found = _pids(pidfile)
        assert len(found) == count, f"the task wrote {found} to {pidfile}: raise its timeout?"
        try:
            with anyio.move_on_after(self.wait_timeout):  # SIGTERM, grace, SIGKILL
                while any(map(_alive, found)):  # noqa: ASYNC110 - no exit event for strangers
                    await asyncio.sleep(0.05)
            left = [pid for pid in found if _alive(pid)]
            assert not left, f"processes of the stopped task still run: {left}"
        finally:
            for pid in found:  # the kit cleans up after a broken backend
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)

    @pytest.mark.anyio
    async def test_retries_run_the_attempts(
        self, backend: BaseExecutionBackend, tmp_path: Path
    ) -> None:
        count = 'echo x >> "$1"; test "$(wc -l < "$1")" -ge "$2"'
        second = tmp_path / "second"
        never = tmp_path / "never"
        tasks = [  # succeeds at its second attempt; fails all three
            self._executable(
                "do.retry.ok",
                {"executable": "/bin/sh", "arguments": ["-c", count, "sh", str(second), "2"]},
                retries=3,
            ),
            self._executable(
                "do.retry.fail",
                {"executable": "/bin/sh", "arguments": ["-c", count, "sh", str(never), "99"]},
                retries=2,
            ),
        ]
        await self._assert_retried(backend, tasks, second, never, "task")

    @pytest.mark.anyio
    async def test_function_timeout_fails_the_task(self, backend: BaseExecutionBackend) -> None:
        self._require_functions()
        task = {"uid": "do.func.timeout", "function": probes.nap, "args": [_LONG], "timeout": 1.0}
        error = await self._failed(backend, task)
        assert "timed out" in str(error), str(error)

    @pytest.mark.anyio
    async def test_function_retries_run_the_attempts(
        self, backend: BaseExecutionBackend, tmp_path: Path
    ) -> None:
        self._require_functions()
        second, never = tmp_path / "second", tmp_path / "never"
        tasks = [  # succeeds at its second attempt; fails all three
            {
                "uid": "do.func.retry.ok",
                "function": probes.count_then_succeed,
                "args": [str(second), 2],
                "retries": 3,
            },
            {
                "uid": "do.func.retry.fail",
                "function": probes.count_then_succeed,
                "args": [str(never), 99],
                "retries": 2,
            },
        ]
        await self._assert_retried(backend, tasks, second, never, "function")
        _same(tasks[0].get("return_value"), 2, "the return value of its second attempt")

    async def _assert_retried(
        self,
        backend: BaseExecutionBackend,
        tasks: list[dict[str, Any]],
        second: Path,
        never: Path,
        kind: str,
    ) -> None:
        """Run the retries checks' two tasks: one (retries=3) that adds a line to `second` per
        attempt and succeeds at its second, one (retries=2) that adds to `never` and always
        fails."""
        ok, failed = await self._run(backend, tasks)
        assert tasks[0]["state"] == DONE, f"retries=3 did not reach the second attempt: {ok}"
        assert isinstance(failed, TaskExecutionError), (
            f"a {kind} failing every attempt did not fail: it ended {tasks[1].get('state')}"
        )
        _same(_read(str(second)).count("x"), 2, f"attempts of a {kind} succeeding at its second")
        _same(_read(str(never)).count("x"), 3, f"attempts of a {kind} with retries=2 failing")

    @pytest.mark.anyio
    async def test_ai_task_fields_come_back(self, backend: BaseExecutionBackend) -> None:
        """With `make_task("ai")`: where and how this backend's AI tasks reach a model (its
        `endpoint` or `service`, `model`, the key in `secret_environment`)."""
        base = self.make_task("ai")
        if base is None:
            _skip(f"{type(self).__name__}.make_task('ai') is None: it runs no AI tasks")
        asked = {"temperature": 0, "max_tokens": 8, "seed": 1}
        tasks = [
            {**base, **asked, "uid": "do.ai.prompt", "prompt": "Say hello."},
            {**base, **asked, "uid": "do.ai.batch", "prompt": ["Say hello.", "Say goodbye."]},
            {
                **base,
                **asked,
                "uid": "do.ai.chat",
                "messages": [{"role": "user", "content": "Say hello."}],
            },
        ]
        with _captured_logs() as logs:
            results = await self._run(backend, tasks)
        for task, result in zip(tasks, results, strict=True):
            assert task.get("state") == DONE, f"AI task {task['uid']!r}: {result!r:.300}"
            usage = task.get("usage") or {}
            for count in ("prompt_tokens", "completion_tokens"):
                assert isinstance(usage.get(count), int) and usage[count] > 0, (
                    f"{task['uid']!r}: usage[{count!r}] is {usage.get(count)!r}"
                )
        prompt, batch, chat = (task.get("response") for task in tasks)
        assert isinstance(prompt, str) and prompt.strip(), f"a prompt's response: {prompt!r}"
        assert isinstance(chat, str) and chat.strip(), f"a chat's response: {chat!r}"
        assert isinstance(batch, list) and len(batch) == 2, f"two prompts' responses: {batch!r}"
        assert all(isinstance(text, str) and text.strip() for text in batch), batch
        # Each of the two prompts was answered within the task's max_tokens, the sum counted.
        assert tasks[1]["usage"]["completion_tokens"] <= 2 * asked["max_tokens"], tasks[1]
        for secret in (base.get("secret_environment") or {}).values():
            if not secret:
                continue
            for task in tasks:
                rest = {k: v for k, v in task.items() if k != "secret_environment"}
                assert secret not in repr(rest), f"the API key is in task {task['uid']!r}"
            assert not [line for line in logs if secret in line], "the API key is in the logs"

    @pytest.mark.anyio
    async def test_function_receives_its_arguments(self, backend: BaseExecutionBackend) -> None:
        self._require_functions()
        args = [1, "two words", "", None, {"k": [1.5]}]
        kwargs = {"x": "ü", "empty": ""}
        task = {"uid": "do.func", "function": probes.echo, "args": args, "kwargs": kwargs}
        await self._done(backend, task)
        _same(task.get("return_value"), [args, kwargs], "[args, kwargs] the function saw")

    @pytest.mark.anyio
    async def test_running_tasks_fit_the_capacity(self, backend: BaseExecutionBackend) -> None:
        """Invariant 4, measured: tasks report when they ran; at no instant do more run than
        `backend.capacity` has cores (for backends whose engine places the tasks too)."""
        capacity = backend.capacity
        if capacity is None:
            _skip(f"{type(backend).__name__}.capacity is None: nothing to measure against")
        cores = capacity[0]
        n = cores + 2
        if self.runs_executables:
            tasks = [self._executable(f"do.slots.{i}", probes.span(0.5)) for i in range(n)]
        elif self.runs_functions:
            nap = {"function": probes.timed_nap, "args": [0.5]}
            tasks = [dict(nap, uid=f"do.slots.{i}") for i in range(n)]
        else:
            _skip(f"{type(self).__name__} runs neither executables nor functions")
        results = await self._run(backend, tasks)
        spans = []
        for task, result in zip(tasks, results, strict=True):
            assert task["state"] == DONE, result
            value = task.get("return_value") or (task.get("stdout") or "").split()[:2]
            assert len(value) == 2, f"{task['uid']!r} did not report when it ran: {value!r}"
            spans.append((float(value[0]), float(value[1])))
        most = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
        assert most <= cores, f"{most} tasks of 1 core ran at once on {cores} cores: {spans}"

    @pytest.mark.anyio
    async def test_gpus_are_never_shared(self, backend: BaseExecutionBackend) -> None:
        """Tasks of 1 GPU never overlap more than `backend.capacity` has GPUs; where the engine
        places them (`backend.resources`), each sees one GPU in `CUDA_VISIBLE_DEVICES`, never
        one that a task running at the same time sees."""
        capacity = backend.capacity
        if capacity is None or capacity[1] == 0:
            _skip(f"{type(backend).__name__} declares no GPUs (capacity {capacity})")
        gpus = capacity[1]
        tasks = [
            self._executable(f"do.gpus.{i}", probes.span(0.5), gpus=1) for i in range(gpus + 2)
        ]
        results = await self._run(backend, tasks)
        runs = []
        for task, result in zip(tasks, results, strict=True):
            assert task["state"] == DONE, result
            words = (task.get("stdout") or "").split()
            assert len(words) == 3, f"{task['uid']!r} did not report: {task.get('stdout')!r}"
            runs.append((float(words[0]), float(words[1]), words[2]))
        most = max(sum(1 for s, e, _ in runs if s <= start < e) for start, _, _ in runs)
        assert most <= gpus, f"{most} tasks of 1 GPU ran at once on {gpus} GPUs: {runs}"
        if backend.resources is None:
            return
        for start, end, devices in runs:
            assert len(devices.split(",")) == 1 and devices != "-", f"one GPU, not {devices!r}"
            shared = [r for r in runs if r[0] < end and start < r[1] and r[2] == devices]
            assert len(shared) == 1, f"GPU {devices} given to tasks running together: {shared}"

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


def _same(actual: Any, expected: Any, what: str) -> None:
    # The kit is not rewritten by pytest's assertions (an installed package): say it here.
    assert actual == expected, f"{what}: got {actual!r:.300}, expected {expected!r:.300}"


def _skip(reason: str) -> NoReturn:
    """Skip the running check, naming it: pytest's summary then lists each skip on its own."""
    check = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].split(" ")[0]
    pytest.skip(f"{check}: {reason}" if check else reason)


def _pids(path: Path) -> list[int]:
    try:
        return [int(word) for word in path.read_text().split()]
    except (OSError, ValueError):  # not written yet, or half-written
        return []


def _same_path(a: str | Path, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _read(path: str) -> str:
    return Path(path).read_text()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@contextlib.contextmanager
def _captured_logs() -> Iterator[list[str]]:
    """Every log record of this process meanwhile, DEBUG included, formatted with tracebacks."""
    lines: list[str] = []
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    root = logging.getLogger()
    handler = Collect(logging.DEBUG)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.setLevel(level)
        root.removeHandler(handler)


def _json_objects(text: str) -> list[Any]:
    """The JSON values written one after another in `text`. The ranks of an MPI program share
    one stdout: the launcher may forward one rank's line before another's newline (seen with
    Open MPI 4.1: '{...}{...}' then an empty line)."""
    decoder = json.JSONDecoder()
    values, at = [], 0
    while rest := text[at:].lstrip():
        value, at = decoder.raw_decode(text, len(text) - len(rest))
        values.append(value)
    return values
