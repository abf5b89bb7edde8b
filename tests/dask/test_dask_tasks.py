"""What tasks see on the dask backend: results, failures, RUNNING semantics, cancellation.

One embedded cluster (2 worker processes x 1 thread) serves the whole module.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed", reason="the dask backend needs dask.distributed")

import anyio
import cloudpickle
import psutil

from rhapsody.errors import ResourceError, TaskExecutionError, TaskValidationError
from rhapsody.states import DONE, EXECUTING, EXECUTING_PENDING, SCHEDULING_PENDING
from rhapsody_dask.backend import DaskExecutionBackend

pytestmark = pytest.mark.anyio

# The workers cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT = 60.0  # bound on every wait: a failure, never a hang


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def backend(
    anyio_backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DaskExecutionBackend]:
    backend = DaskExecutionBackend(
        n_workers=2, threads_per_worker=1, work_dir=tmp_path_factory.mktemp("work")
    )
    await backend
    yield backend
    with anyio.fail_after(WAIT):
        await backend.shutdown()


async def run(backend: DaskExecutionBackend, *tasks: dict[str, Any]) -> list[Any]:
    futures = await backend.submit_tasks(list(tasks))
    with anyio.fail_after(WAIT):
        return await asyncio.gather(*futures, return_exceptions=True)


async def until(condition: Callable[[], bool]) -> None:
    # Polls: the conditions are set by callbacks and by processes outside this loop.
    with anyio.fail_after(WAIT):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def processes_with(marker: str) -> list[psutil.Process]:
    """Live processes with `marker` among their arguments."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if marker in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


# -- functions run on the workers ----------------------------------------------------------------
def wait_for_file(path: str) -> float:
    started = time.time()
    deadline = time.monotonic() + WAIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return started


def fail_with_value_error(text: str) -> None:
    raise ValueError(text)


async def async_double(x: int) -> int:
    await asyncio.sleep(0.01)
    return 2 * x


# -- executables ---------------------------------------------------------------------------------
async def test_executable_gets_arguments_environment_and_directory(
    backend: DaskExecutionBackend, tmp_path: Path
) -> None:
    workdir = tmp_path / "made-by-the-runner"
    script = 'echo "$GREETING from $(pwd) with $1"; echo oops >&2; exit 3'
    task = {
        "executable": "/bin/sh",
        "arguments": ["-c", script, "sh", "two words"],
        "environment": {"GREETING": "hello"},
        "working_directory": str(workdir),
    }
    [error] = await run(backend, task)
    assert isinstance(error, TaskExecutionError)
    assert "exit code 3" in str(error)
    assert task["exit_code"] == 3
    assert task["stdout"] == f"hello from {workdir} with two words\n"
    assert task["stderr"] == "oops\n"
    assert os.environ.get("GREETING") is None  # the task's environment is its own


async def test_executable_results_match_concurrent(backend: DaskExecutionBackend) -> None:
    ok = {"executable": "/bin/echo", "arguments": ["a b", "c"]}
    shell = {"executable": "echo $((1 + 2)) | tr 3 x", "shell": True}
    killed = {"executable": "/bin/sh", "arguments": ["-c", "kill -9 $$"]}
    missing = {"executable": "/nonexistent/program"}
    results = await run(backend, ok, shell, killed, missing)
    assert results[0] is ok and ok["stdout"] == "a b c\n" and ok["exit_code"] == 0
    assert results[1] is shell and shell["stdout"] == "x\n"
    assert "killed by signal SIGKILL (9)" in str(results[2]) and killed["exit_code"] == -9
    assert "cannot start '/nonexistent/program'" in str(results[3])
    assert missing["state"] == "FAILED"


async def test_long_output_spills_to_a_file(backend: DaskExecutionBackend) -> None:
    task = {"executable": "/bin/sh", "arguments": ["-c", "yes x | head -c 3000000"]}
    [result] = await run(backend, task)
    assert result["state"] == DONE
    spilled = Path(task["stdout_file"])
    assert spilled.parent == backend.work_dir and spilled.stat().st_size == 3_000_000
    assert 0 < len(task["stdout"]) < 3_000_000 and task["stdout"].endswith("x\n")


# -- functions -----------------------------------------------------------------------------------
async def test_function_results_and_failures(backend: DaskExecutionBackend) -> None:
    plain = {"function": divmod, "args": [7, 2]}
    coroutine = {"function": async_double, "kwargs": {"x": 21}}
    failing = {"function": fail_with_value_error, "args": ["bad input"]}
    results = await run(backend, plain, coroutine, failing)
    assert plain["return_value"] == (3, 1) and coroutine["return_value"] == 42
    error = results[2]
    assert isinstance(error, TaskExecutionError) and "ValueError: bad input" in str(error)
    # The worker's exception comes back with its traceback.
    assert isinstance(failing["exception"], ValueError)
    assert failing["exception"].__traceback__ is not None


async def test_large_results_are_fetched_from_the_worker(backend: DaskExecutionBackend) -> None:
    # Small outcomes come back with the runner's end-of-task event; larger ones are fetched.
    task = {"function": bytes, "args": [1_000_000]}
    [result] = await run(backend, task)
    assert result["return_value"] == bytes(1_000_000)


async def test_what_cannot_be_pickled_fails_clearly(backend: DaskExecutionBackend) -> None:
    lock = threading.Lock()
    unsendable = {"function": lambda: lock}
    unreturnable = {"function": threading.Lock}
    errors = await run(backend, unsendable, unreturnable)
    assert all(isinstance(error, TaskExecutionError) for error in errors)
    assert "could not be sent to dask" in str(errors[0])
    assert "return value (lock) cannot be pickled" in str(errors[1])


async def test_requests_no_worker_can_hold_are_rejected_at_submit(
    backend: DaskExecutionBackend,
) -> None:
    with pytest.raises(ResourceError, match="0 GPU"):
        await backend.submit_tasks([{"uid": "gpu.none", "function": divmod, "gpus": 1}])
    with pytest.raises(ResourceError, match="1 core"):
        await backend.submit_tasks([{"uid": "cores.two", "executable": "/bin/true", "cores": 2}])
    with pytest.raises(TaskValidationError, match="environment"):
        await backend.submit_tasks([{"function": divmod, "environment": {"A": "1"}}])


async def test_an_mpi_task_is_rejected_naming_the_backends_that_can(
    backend: DaskExecutionBackend,
) -> None:
    with pytest.raises(TaskValidationError) as caught:
        await backend.submit_tasks([{"uid": "mpi.4", "executable": "/bin/true", "ranks": 4}])
    assert (caught.value.uid, caught.value.field) == ("mpi.4", "ranks")
    assert "radical_pilot" in str(caught.value) and "4 ranks" in str(caught.value)


# -- RUNNING semantics ---------------------------------------------------------------------------
async def test_running_is_reported_when_a_worker_starts_the_task(
    backend: DaskExecutionBackend, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    history: dict[str, list[tuple[str, float]]] = {}

    def record(task: dict[str, Any], state: str) -> None:
        if task["uid"].startswith("run."):
            history.setdefault(task["uid"], []).append((state, time.time()))

    backend.register_callback(record)
    # Two blockers hold both worker threads until the gate opens; the probe has to wait.
    blockers = [
        {"uid": f"run.block{i}", "function": wait_for_file, "args": [str(gate)]} for i in range(2)
    ]
    probe = {"uid": "run.probe", "function": time.time}
    futures = await backend.submit_tasks([*blockers, probe])
    await until(lambda: all(b.get("state") == EXECUTING for b in blockers))
    await asyncio.sleep(0.5)  # time enough for a wrong start report to arrive
    assert probe["state"] == EXECUTING_PENDING  # submitted to dask, but no thread is free
    opened = time.time()
    gate.touch()
    with anyio.fail_after(WAIT):
        await asyncio.gather(*futures)
    states = [state for state, _ in history["run.probe"]]
    assert states == [SCHEDULING_PENDING, EXECUTING_PENDING, EXECUTING, DONE]
    reported = dict(history["run.probe"])[EXECUTING]
    assert reported >= opened  # it could only start once a blocker had finished
    assert probe["return_value"] >= opened


# -- cancellation and timeouts -------------------------------------------------------------------
async def test_cancelling_a_running_executable_stops_its_process(
    backend: DaskExecutionBackend,
) -> None:
    marker = "31.4159"  # an argument no other process on this machine has
    task = {"uid": "cancel.exe", "executable": "/bin/sleep", "arguments": [marker]}
    [future] = await backend.submit_tasks([task])
    await until(lambda: task.get("state") == EXECUTING and bool(processes_with(marker)))
    assert await backend.cancel_task("cancel.exe") is True
    with anyio.fail_after(WAIT):
        await asyncio.wait([future])
    assert future.cancelled() and task["state"] == "CANCELED"
    await until(lambda: not processes_with(marker))


async def test_timeout_stops_the_executable(backend: DaskExecutionBackend) -> None:
    marker = "27.1828"
    task = {"executable": "/bin/sleep", "arguments": [marker], "timeout": 1}
    [error] = await run(backend, task)
    assert isinstance(error, TaskExecutionError) and "timed out after 1 s" in str(error)
    await until(lambda: not processes_with(marker))


async def test_cancelling_a_running_function_releases_it(backend: DaskExecutionBackend) -> None:
    # dask cannot interrupt the thread: the future is released, the task is CANCELED, and
    # the backend goes on serving (the thread finishes its sleep on its own).
    task = {"uid": "cancel.fn", "function": time.sleep, "args": [2]}
    [future] = await backend.submit_tasks([task])
    await until(lambda: task.get("state") == EXECUTING)
    assert await backend.cancel_task("cancel.fn") is True
    with anyio.fail_after(WAIT):
        await asyncio.wait([future])
    assert future.cancelled() and task["state"] == "CANCELED"
    [after] = await run(backend, {"function": divmod, "args": [9, 4]})
    assert after["return_value"] == (2, 1)
