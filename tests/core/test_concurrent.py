"""The concurrent backend's own behaviour, beyond the shared conformance suite.

Several of these would fail on the original rhapsody-py concurrent backend (no environment
merge, no working directory, no GPUs, no concurrency limit, no timeout, orphaned processes,
unquoted shell arguments, no CANCELED callbacks at shutdown).
"""

from __future__ import annotations

import asyncio
import os
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_orphans import watchdogs

from rhapsody.backends.execution import ConcurrentExecutionBackend, _subprocess
from rhapsody.errors import ResourceError, TaskExecutionError, TaskValidationError
from rhapsody.testing import InvariantRecorder

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["pidfd", "asyncio-watcher"])
async def backend(request: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    # Executables are watched through a pidfd where the OS has them, else by asyncio's own
    # child watcher: run every test through both.
    if request.param == "asyncio-watcher":
        monkeypatch.setattr(_subprocess, "USE_PIDFD", False)
    elif not _subprocess.USE_PIDFD:
        pytest.skip("no pidfd on this OS")
    backend = await ConcurrentExecutionBackend(cores=2, gpus=0, work_dir=tmp_path / "work")
    yield backend
    await backend.shutdown()


async def run(backend: ConcurrentExecutionBackend, *tasks: dict[str, Any]) -> list[Any]:
    futures = await backend.submit_tasks(list(tasks))
    return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 60)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def dies(pid: int, within: float = 2.0) -> bool:
    """A SIGKILL is delivered asynchronously: allow the process a moment to go."""
    deadline = asyncio.get_running_loop().time() + within
    while alive(pid) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 - polling a pid
        await asyncio.sleep(0.01)
    return not alive(pid)


async def test_environment_is_merged_over_the_parents(backend: Any) -> None:
    [result] = await run(
        backend,
        {
            "executable": "/bin/sh",
            "arguments": ["-c", 'echo "$RHAPSODY_X|$HOME"'],
            "environment": {"RHAPSODY_X": "set"},
        },
    )
    assert result["stdout"].strip() == f"set|{os.environ['HOME']}"


async def test_working_directory_is_created(backend: Any, tmp_path: Path) -> None:
    where = tmp_path / "deep" / "er"
    [result] = await run(backend, {"executable": "/bin/pwd", "working_directory": str(where)})
    assert result["stdout"].strip() == str(where)


async def test_arguments_reach_the_program_verbatim(backend: Any) -> None:
    hostile = ["; rm -rf /", "$(whoami)", "`id`", "a b", "'\"", "ünïcode ✓", ""]
    [result] = await run(
        backend, {"executable": "/usr/bin/printf", "arguments": ["%s\\n", *hostile]}
    )
    assert result["stdout"].split("\n")[:-1] == hostile


async def test_shell_true_quotes_each_argument(backend: Any) -> None:
    [result] = await run(
        backend, {"executable": "echo", "arguments": ["a  b", "$(whoami)"], "shell": True}
    )
    assert result["stdout"] == "a  b $(whoami)\n"
    [piped] = await run(backend, {"executable": "echo one two | wc -w", "shell": True})
    assert piped["stdout"].strip() == "2"


async def test_exit_code_and_signal_are_reported(backend: Any) -> None:
    code, killed = await run(
        backend,
        {"uid": "code", "executable": "/bin/sh", "arguments": ["-c", "echo oops >&2; exit 3"]},
        {"uid": "sig", "executable": "/bin/sh", "arguments": ["-c", "kill -9 $$"]},
    )
    assert isinstance(code, TaskExecutionError) and "exit code 3" in str(code)
    assert code.task["exit_code"] == 3 and code.task["stderr"] == "oops\n"
    assert isinstance(killed, TaskExecutionError) and "SIGKILL" in str(killed)


async def test_missing_executable_fails_clearly(backend: Any) -> None:
    states: list[str] = []
    backend.register_callback(lambda task, state: states.append(state))
    [error] = await run(backend, {"uid": "nx", "executable": "/no/such/program"})
    assert isinstance(error, TaskExecutionError)
    assert "cannot start '/no/such/program'" in str(error)
    # It never ran: no EXECUTING on the way to FAILED.
    assert states == ["SCHEDULING_PENDING", "EXECUTING_PENDING", "FAILED"]


async def test_never_more_tasks_than_cores(backend: Any) -> None:
    recorder = InvariantRecorder(backend, uid_prefix="lim.")
    tasks = [
        {"uid": f"lim.{i}", "executable": "/bin/sleep", "arguments": ["0.1"]} for i in range(8)
    ]
    tasks.append({"uid": "lim.wide", "executable": "/bin/true", "cores": 2})
    recorder.track(tasks)
    results = await run(backend, *tasks)
    assert all(r["state"] == "DONE" for r in results)
    recorder.assert_ok()
    assert recorder.peak_cores == 2


async def test_request_larger_than_node_rejected_at_submit(backend: Any) -> None:
    with pytest.raises(ResourceError, match="'big' asks for 3 core"):
        await backend.submit_tasks([{"uid": "big", "executable": "/bin/true", "cores": 3}])
    with pytest.raises(ResourceError, match="1 GPU"):
        await backend.submit_tasks([{"uid": "gpu", "executable": "/bin/true", "gpus": 1}])


async def test_gpu_tasks_get_exactly_their_gpus(tmp_path: Path) -> None:
    backend = await ConcurrentExecutionBackend(cores=4, gpus=["3", "5"], work_dir=tmp_path)
    try:
        show = ["-c", 'echo "[$CUDA_VISIBLE_DEVICES]"; sleep 0.2']
        results = await run(
            backend,
            {"uid": "g1", "executable": "/bin/sh", "arguments": show, "gpus": 1},
            {"uid": "g2", "executable": "/bin/sh", "arguments": show, "gpus": 1},
            {"uid": "both", "executable": "/bin/sh", "arguments": show, "gpus": 2},
            {"uid": "cpu", "executable": "/bin/sh", "arguments": show},
        )
        seen = {r["uid"]: r["stdout"].strip() for r in results}
        assert {seen["g1"], seen["g2"]} == {"[3]", "[5]"}
        assert seen["both"] == "[3,5]"
        assert seen["cpu"] == "[]"
    finally:
        await backend.shutdown()


async def test_timeout_kills_the_whole_process_tree(backend: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    [error] = await run(
        backend,
        {
            "uid": "slow",
            "executable": "/bin/sh",
            "timeout": 2.0,  # the shell has written the pid well before, even on a loaded box
            "arguments": ["-c", f"sleep 30 & echo $! > {pidfile}; wait"],
        },
    )
    assert isinstance(error, TaskExecutionError) and "timed out after 2 s" in str(error)
    grandchild = int(pidfile.read_text())
    assert await dies(grandchild)


async def test_background_child_does_not_hold_the_task(backend: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    [result] = await run(
        backend, {"executable": "/bin/sh", "arguments": ["-c", f"sleep 30 & echo $! > {pidfile}"]}
    )
    assert result["state"] == "DONE"
    assert await dies(int(pidfile.read_text()))


async def test_cancel_running_kills_the_process(backend: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    futures = await backend.submit_tasks(
        [
            {
                "uid": "victim",
                "executable": "/bin/sh",
                "arguments": ["-c", f"echo $$ > {pidfile}; exec sleep 30"],
            }
        ]
    )
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    assert await backend.cancel_task("victim")
    await asyncio.wait(futures, timeout=10)
    assert futures[0].cancelled()
    assert not alive(int(pidfile.read_text()))


async def test_retries_rerun_and_callbacks_see_each_attempt(backend: Any, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    seen: list[tuple[str, Any]] = []
    backend.register_callback(
        lambda t, s: seen.append((s, t.get("attempt"))) if t["uid"] == "r" else None
    )
    script = f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; [ "$n" -ge 2 ]'
    [result] = await run(
        backend, {"uid": "r", "executable": "/bin/sh", "arguments": ["-c", script], "retries": 3}
    )
    assert result["state"] == "DONE" and result["attempt"] == 3
    assert [a for s, a in seen if s == "EXECUTING"] == [1, 2, 3]
    [error] = await run(backend, {"uid": "never", "executable": "/bin/false", "retries": 1})
    assert isinstance(error, TaskExecutionError) and error.task["attempt"] == 2


async def test_large_output_goes_to_a_file(tmp_path: Path) -> None:
    backend = await ConcurrentExecutionBackend(cores=1, max_output=1000, work_dir=tmp_path)
    try:
        [result] = await run(
            backend, {"uid": "big", "executable": "/bin/sh", "arguments": ["-c", "seq 1 100000"]}
        )
        path = Path(result["stdout_file"])
        assert path.parent == tmp_path
        assert path.read_text().splitlines()[-1] == "100000"
        assert len(result["stdout"]) <= 64 * 1024
        assert result["stdout"].endswith("100000\n")
    finally:
        await backend.shutdown()


async def test_shutdown_reports_canceled_and_kills_everything(tmp_path: Path) -> None:
    backend = await ConcurrentExecutionBackend(cores=2, work_dir=tmp_path)
    finals: dict[str, str] = {}
    backend.register_callback(
        lambda t, s: (
            finals.__setitem__(t["uid"], s) if s in ("DONE", "FAILED", "CANCELED") else None
        )
    )
    tasks = [{"uid": f"s{i}", "executable": "/bin/sleep", "arguments": ["30"]} for i in range(5)]
    futures = await backend.submit_tasks(tasks)
    await asyncio.sleep(0.2)
    await asyncio.wait_for(backend.shutdown(), 20)
    assert finals == {f"s{i}": "CANCELED" for i in range(5)}
    assert all(f.cancelled() for f in futures)
    assert not [
        p
        for p in psutil.Process().children(recursive=True)
        if p.status() != psutil.STATUS_ZOMBIE and "sleep" in p.name()
    ]


async def test_tasks_submitted_from_a_callback(backend: Any) -> None:
    spawned: list[asyncio.Future[Any]] = []

    def on_state(task: dict[str, Any], state: str) -> None:
        if task["uid"] == "parent" and state == "DONE":

            async def follow_up() -> None:
                futures = await backend.submit_tasks(
                    [
                        {
                            "uid": "child",
                            "executable": "/bin/echo",
                            "arguments": ["child"],
                            "dependencies": ["parent"],
                        }
                    ]
                )
                spawned.extend(futures)

            spawned.append(asyncio.ensure_future(follow_up()))

    backend.register_callback(on_state)
    await run(backend, {"uid": "parent", "executable": "/bin/true"})
    await asyncio.wait_for(spawned[0], 10)
    child = await asyncio.wait_for(spawned[1], 10)
    assert child["stdout"] == "child\n"


async def square_later(x: int) -> int:
    await asyncio.sleep(0.01)
    return x * x


def crash() -> None:
    os._exit(3)


def where_am_i() -> tuple[str, str | None]:
    return os.getcwd(), os.environ.get("RHAPSODY_ISO")


def hang() -> None:
    import time

    time.sleep(60)


async def test_function_tasks_sync_and_async(backend: Any) -> None:
    def boom() -> None:
        raise KeyError("nope")

    a, b, c = await run(
        backend,
        {"uid": "async", "function": square_later, "args": [4]},
        {"uid": "sync", "function": divmod, "args": [7], "kwargs": {}},
        {"uid": "raise", "function": boom},
    )
    assert a["return_value"] == 16
    assert isinstance(b, TaskExecutionError)  # divmod needs 2 arguments: the TypeError is the cause
    assert isinstance(b.__cause__, TypeError)
    assert isinstance(c, TaskExecutionError) and isinstance(c.task["exception"], KeyError)


async def test_thread_function_edge_cases_fail_only_their_task(backend: Any) -> None:
    def leave() -> None:
        raise SystemExit(3)

    def coroutine_maker(x: int) -> Any:
        return square_later(x)  # a plain function returning a coroutine: it is awaited

    def which_thread() -> str:
        import threading

        return threading.current_thread().name

    exiting, made, named = await run(
        backend,
        {"uid": "exit", "function": leave},
        {"uid": "maker", "function": coroutine_maker, "args": [3]},
        {"uid": "named", "function": which_thread},
    )
    assert isinstance(exiting, TaskExecutionError) and "SystemExit" in str(exiting)
    assert made["return_value"] == 9
    assert named["return_value"].startswith(f"rhapsody-{backend.name}")
    [after] = await run(backend, {"function": divmod, "args": [7, 2]})
    assert after["return_value"] == (3, 1)  # the backend keeps serving


async def test_stuck_thread_functions_do_not_take_the_slots_for_good(backend: Any) -> None:
    # Two functions that never return time out; their threads stay busy, yet the two cores
    # are free again and the next function runs on a new thread.
    stuck = await run(
        backend,
        {"uid": "stuck1", "function": hang, "timeout": 0.2},
        {"uid": "stuck2", "function": hang, "timeout": 0.2},
    )
    assert all("timed out" in str(error) for error in stuck)
    [after] = await run(backend, {"function": divmod, "args": [9, 4]})
    assert after["return_value"] == (2, 1)


async def test_cancel_a_running_thread_function(backend: Any) -> None:
    states: list[str] = []
    backend.register_callback(lambda task, state: states.append(state))
    futures = await backend.submit_tasks([{"uid": "long", "function": hang}])
    while backend.task_state("long") != "EXECUTING":  # noqa: ASYNC110 - polling engine state
        await asyncio.sleep(0.01)
    assert await backend.cancel_task("long")
    with pytest.raises(asyncio.CancelledError):
        await futures[0]
    assert states[-1] == "CANCELED"


@pytest.mark.parametrize(
    "field",
    [
        {"environment": {"A": "1"}},
        {"secret_environment": {"TOKEN": "x"}},
        {"working_directory": "/tmp"},
    ],
)
async def test_thread_functions_cannot_claim_their_own_environment(
    backend: Any, field: dict[str, Any]
) -> None:
    with pytest.raises(TaskValidationError, match="isolation='process'"):
        await backend.submit_tasks([{"function": print, **field}])


async def test_isolated_function_crash_fails_only_that_task(backend: Any, tmp_path: Path) -> None:
    crashed, placed, after = await run(
        backend,
        {"uid": "crash", "function": crash, "isolation": "process"},
        {
            "uid": "placed",
            "function": where_am_i,
            "isolation": "process",
            "working_directory": str(tmp_path / "iso"),
            "environment": {"RHAPSODY_ISO": "yes"},
        },
        {"uid": "after", "function": square_later, "args": [3], "dependencies": ["crash"]},
    )
    assert isinstance(crashed, TaskExecutionError)
    assert "worker process exit code 3 before returning a result" in str(crashed)
    assert placed["return_value"] == (str(tmp_path / "iso"), "yes")
    assert isinstance(after, TaskExecutionError) and "dependency 'crash' failed" in str(after)
    [ok] = await run(backend, {"function": square_later, "args": [5]})
    assert ok["return_value"] == 25


async def test_isolated_function_timeout_kills_it(backend: Any) -> None:
    resource_tracker.ensure_running()  # spawn starts it once per process: not the task's
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    [error] = await run(
        backend, {"uid": "hang", "function": hang, "isolation": "process", "timeout": 3}
    )
    assert isinstance(error, TaskExecutionError) and "timed out" in str(error)
    new = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not [p for p in new if alive(p.pid) and p.pid not in watchdogs()]


async def test_sizes_itself_from_the_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "nid001")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setenv("SLURM_JOB_GPUS", "3,5")
    backend = ConcurrentExecutionBackend()
    assert backend.resources is not None
    assert backend.resources.total_cores == 1
    assert backend.resources.gpu_ids == ("3", "5")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    arguments=st.lists(
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30),
        max_size=6,
    )
)
def test_any_text_argument_reaches_the_program_verbatim(arguments: list[str]) -> None:
    async def go() -> list[str]:
        backend = await ConcurrentExecutionBackend(cores=1)
        try:
            each = 'for a; do printf "%s\\0" "$a"; done'
            [result] = await run(
                backend, {"executable": "/bin/sh", "arguments": ["-c", each, "sh", *arguments]}
            )
            return list(result["stdout"].split("\0")[:-1])
        finally:
            await backend.shutdown()

    assert asyncio.run(go()) == arguments
