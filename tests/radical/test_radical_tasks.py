"""Executable and function tasks through the shared local pilot: fields, faults, cancellation."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "radical.pilot", reason="radical.pilot is not installed: pip install rhapsody-radical"
)

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import anyio
import psutil
import rp_tasks
from rp_support import WAIT

from rhapsody.errors import ResourceError, TaskExecutionError, TaskValidationError
from rhapsody.states import CANCELED, DONE, EXECUTING, FAILED
from rhapsody_radical.backend import RadicalExecutionBackend
from rhapsody_radical.processes import session_processes

# all of them use the shared pilot
pytestmark = [pytest.mark.anyio, pytest.mark.radical]


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:  # gone meanwhile
        return []


async def run(backend: RadicalExecutionBackend, *tasks: dict[str, Any]) -> list[Any]:
    futures = await backend.submit_tasks(list(tasks))
    return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), WAIT)


# -- executables ---------------------------------------------------------------------------


async def test_arguments_and_environment_reach_the_program_verbatim(
    radical_backend: RadicalExecutionBackend, tmp_path: Path
) -> None:
    # the agent's script would expand $, backquotes and mangle quotes if they were not escaped
    tricky = ["$HOME `id` $(id)", 'say "hi"\\', "", "two words", "*"]
    value = 'a "b" $c `d` \\e'
    workdir = tmp_path / "work dir"
    task = {
        "executable": "/usr/bin/env",
        "arguments": [
            "python3",
            "-c",
            "import os, sys; print(sys.argv[1:]); print(os.environ['V']); print(os.getcwd())",
            *tricky,
        ],
        "environment": {"V": value},
        "working_directory": str(workdir),
    }
    [result] = await run(radical_backend, task)
    assert result is task and task["state"] == DONE, task.get("stderr")
    assert task["stdout"].splitlines() == [repr(tricky), value, str(workdir)]
    assert task["exit_code"] == 0
    assert isinstance(task["node"], str) and task["node"]  # where RADICAL-Pilot placed it


async def test_shell_task_and_full_output(radical_backend: RadicalExecutionBackend) -> None:
    # RADICAL-Pilot keeps the last 1 KiB of a stream; the backend reads the whole file
    task = {"executable": "yes line | head -n 3000; echo done >&2", "shell": True}
    [result] = await run(radical_backend, task)
    assert result["state"] == DONE
    assert task["stdout"] == "line\n" * 3000
    assert task["stderr"] == "done\n"


async def test_failures_carry_a_clear_reason(radical_backend: RadicalExecutionBackend) -> None:
    missing = {"uid": "x.missing", "executable": "/no/such/program"}
    killed = {"uid": "x.killed", "executable": "/bin/sh", "arguments": ["-c", "kill -KILL $$"]}
    code = {"uid": "x.code", "executable": "/bin/sh", "arguments": ["-c", "echo oops >&2; exit 3"]}
    errors = await run(radical_backend, missing, killed, code)
    assert all(isinstance(e, TaskExecutionError) for e in errors)
    assert all(t["state"] == FAILED for t in (missing, killed, code))
    assert "cannot start '/no/such/program': no such executable" in str(errors[0])
    assert missing["exit_code"] == 127
    assert "killed by signal SIGKILL (9)" in str(errors[1]) and killed["exit_code"] == -9
    assert "exit code 3" in str(errors[2]) and code["exit_code"] == 3
    assert code["stderr"] == "oops\n"
    assert errors[2].task is code  # the user's dict, not RADICAL-Pilot's description


async def test_timeout_and_cancel_stop_the_program(
    radical_backend: RadicalExecutionBackend,
) -> None:
    running = asyncio.Event()
    radical_backend.register_callback(
        lambda t, s: running.set() if (t["uid"], s) == ("x.cancel", EXECUTING) else None
    )
    slow = {"uid": "x.cancel", "executable": "/bin/sleep", "arguments": ["60"]}
    timed = {"uid": "x.timeout", "executable": "/bin/sleep", "arguments": ["60"], "timeout": 2}
    futures = await radical_backend.submit_tasks([slow, timed])
    with anyio.fail_after(WAIT):
        await running.wait()
        assert await radical_backend.cancel_task("x.cancel")
        await asyncio.wait(list(futures))
    assert futures[0].cancelled() and slow["state"] == CANCELED
    assert "timed out after 2 s" in str(futures[1].exception())
    # and the agent stopped both programs
    sid = radical_backend.session.uid
    for _ in range(100):
        if not any(_cmdline(p) == ["/bin/sleep", "60"] for p in session_processes(sid)):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("the cancelled programs still run")


async def test_cancels_before_the_start_cost_the_pilot_no_cores(
    radical_backend: RadicalExecutionBackend,
) -> None:
    # RADICAL-Pilot loses a task's cores when a cancel reaches its executor before the task
    # does. Cancel tasks just as the agent's scheduler hands them on (AGENT_EXECUTING_PENDING),
    # three times as often as the pilot has cores: RADICAL-Pilot must never see such a cancel,
    # and the pilot must still run tasks afterwards.
    loop = asyncio.get_running_loop()
    cores = radical_backend.pilot_fields["cores"]
    count = 3 * cores
    history: dict[str, list[str]] = {}
    cancels: list[asyncio.Future[bool]] = []
    all_ended_in_rp = asyncio.Event()

    def cancel(uid: str) -> None:
        cancels.append(asyncio.ensure_future(radical_backend.cancel_task(uid)))

    def on_rp_state(task: Any, state: str) -> None:  # RADICAL-Pilot's thread
        if not task.name.startswith("win."):
            return
        states = history.setdefault(task.name, [])
        states.append(state)
        if state == "AGENT_EXECUTING_PENDING":
            loop.call_soon_threadsafe(cancel, task.name)
        ended = [h for h in history.values() if h[-1] in ("DONE", "FAILED", "CANCELED")]
        if len(ended) == count:
            loop.call_soon_threadsafe(all_ended_in_rp.set)

    tmgr = radical_backend.task_manager
    tmgr.register_callback(on_rp_state)
    try:
        tasks = [
            {"uid": f"win.{i}", "executable": "/bin/sleep", "arguments": ["1"]}
            for i in range(count)
        ]
        futures = await radical_backend.submit_tasks(tasks)
        with anyio.fail_after(WAIT):
            await asyncio.wait(list(futures))
            await all_ended_in_rp.wait()  # every task RADICAL-Pilot was given ends there too
    finally:
        tmgr.unregister_callback(on_rp_state)
    assert len(cancels) == count
    lost = [
        name
        for name, states in history.items()
        if states[-1] == "CANCELED" and "AGENT_EXECUTING" not in states
    ]
    assert not lost, f"cancelled between the agent's scheduler and executor: {lost}"
    assert all(t["state"] in (CANCELED, DONE) for t in tasks)
    results = await run(
        radical_backend,
        *({"uid": f"after.win.{i}", "executable": "/bin/true"} for i in range(2 * cores)),
    )
    assert all(r["state"] == DONE for r in results)


async def test_on_a_remote_pilot_a_running_executable_is_cancelled_through_rp(
    radical_backend: RadicalExecutionBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A remote pilot's processes cannot be seen from here: RADICAL-Pilot's cancel is used, a
    # little after the start. Pretend this local pilot is remote.
    assert radical_backend._runtime is not None
    monkeypatch.setattr(radical_backend._runtime, "is_local", False)
    ended_in_rp = asyncio.Event()

    def on_rp_state(task: Any, state: str) -> None:  # RADICAL-Pilot's thread
        if task.name == "remote.cancel" and state == "CANCELED":
            loop.call_soon_threadsafe(ended_in_rp.set)

    loop = asyncio.get_running_loop()
    running = asyncio.Event()
    radical_backend.register_callback(
        lambda t, s: running.set() if (t["uid"], s) == ("remote.cancel", EXECUTING) else None
    )
    radical_backend.task_manager.register_callback(on_rp_state)
    try:
        task = {"uid": "remote.cancel", "executable": "/bin/sleep", "arguments": ["60"]}
        [future] = await radical_backend.submit_tasks([task])
        with anyio.fail_after(WAIT):
            await running.wait()
            assert await radical_backend.cancel_task("remote.cancel")
            await ended_in_rp.wait()
    finally:
        radical_backend.task_manager.unregister_callback(on_rp_state)
    assert future.cancelled() and task["state"] == CANCELED


async def test_callbacks_run_on_the_event_loop_thread(
    radical_backend: RadicalExecutionBackend,
) -> None:
    seen: list[tuple[str, bool]] = []
    loop_thread = threading.get_ident()
    radical_backend.register_callback(
        lambda t, s: (
            seen.append((s, threading.get_ident() == loop_thread)) if t["uid"] == "x.cb" else None
        )
    )
    await run(radical_backend, {"uid": "x.cb", "executable": "/bin/true"})
    assert [s for s, _ in seen] == ["SCHEDULING_PENDING", "EXECUTING_PENDING", EXECUTING, DONE]
    assert all(on_loop for _, on_loop in seen)


async def test_the_client_publishes_from_one_thread_at_a_time(
    radical_backend: RadicalExecutionBackend,
) -> None:
    # RADICAL-Pilot's heartbeat thread and the backend's calls share publishers: unlocked, two
    # sends at once abort the process inside libzmq (tests/radical/test_publisher_lock.py).
    # The backend locks them before its session; for this local pilot, confining it to
    # loopback does too (the same idempotent lock).
    from radical.utils.zmq import pubsub

    assert radical_backend.session is not None
    assert getattr(pubsub.Publisher.put, "_rhapsody_locked", False)


async def test_what_the_pilot_cannot_run_is_rejected_at_submit(
    radical_backend: RadicalExecutionBackend,
) -> None:
    with pytest.raises(TaskValidationError, match="shell variable name"):
        await radical_backend.submit_tasks(
            [{"executable": "/bin/true", "environment": {"A-B": "1"}}]
        )
    with pytest.raises(TaskValidationError, match="unknown RADICAL-Pilot field"):
        await radical_backend.submit_tasks(
            [{"executable": "/bin/true", "task_backend_specific_kwargs": {"bogus": 1}}]
        )
    with pytest.raises(ResourceError, match="asks for 99 core"):
        await radical_backend.submit_tasks([{"executable": "/bin/true", "cores": 99}])
    with pytest.raises(ResourceError, match="raptor worker"):
        await radical_backend.submit_tasks([{"function": rp_tasks.double, "cores": 3}])


# -- functions (raptor) --------------------------------------------------------------------


async def test_function_results_keep_their_python_types(
    radical_backend: RadicalExecutionBackend,
) -> None:
    value = (1, b"\x00\xff", {"k": frozenset({2})})
    tasks = [
        {"function": rp_tasks.double, "args": [21]},
        {"function": rp_tasks.echo, "args": [1, "a"], "kwargs": {"b": (2, 3)}},
        {"function": rp_tasks.async_value, "args": [value]},
        {"function": lambda x: x + 1, "args": [1]},  # not importable: sent by value
    ]
    results = await run(radical_backend, *tasks)
    assert all(r["state"] == DONE for r in results), [r.get("stderr") for r in results]
    assert [t["return_value"] for t in tasks] == [42, ((1, "a"), {"b": (2, 3)}), value, 2]


async def test_function_exception_output_and_placement(
    radical_backend: RadicalExecutionBackend, tmp_path: Path
) -> None:
    failing = {"function": rp_tasks.fail, "args": ["no luck"]}
    chatty = {"function": rp_tasks.chatty}
    placed = {
        "function": rp_tasks.where,
        "environment": {"RHAPSODY_TEST_VAR": "set"},
        "working_directory": str(tmp_path),
    }
    error, _, _ = await run(radical_backend, failing, chatty, placed)
    assert isinstance(error, TaskExecutionError) and "TaskError: no luck" in str(error)
    assert isinstance(failing["exception"], rp_tasks.TaskError)  # the exception itself
    assert "Traceback" in failing["stderr"] and "no luck" in failing["stderr"]
    assert chatty["return_value"] == "said"
    assert chatty["stdout"] == "to stdout\n" and chatty["stderr"] == "to stderr\n"
    assert placed["return_value"] == (str(tmp_path), "set")
    assert "node" not in placed  # RADICAL-Pilot gives raptor's calls no slots: nowhere to say


async def test_function_dependencies_mix_with_executables(
    radical_backend: RadicalExecutionBackend,
) -> None:
    tasks = [
        {"uid": "mix.a", "executable": "/bin/true"},
        {"uid": "mix.b", "function": rp_tasks.double, "args": [2], "dependencies": ["mix.a"]},
        {"uid": "mix.c", "executable": "/bin/echo", "arguments": ["c"], "dependencies": ["mix.b"]},
    ]
    results = await run(radical_backend, *tasks)
    assert [r["state"] for r in results] == [DONE, DONE, DONE]
    assert tasks[1]["return_value"] == 4 and tasks[2]["stdout"] == "c\n"


async def _pid_in(path: Path) -> int:
    with anyio.fail_after(WAIT):
        while not path.exists() or not path.read_text():  # noqa: ASYNC110 - the task's file
            await asyncio.sleep(0.05)
    return int(path.read_text())


async def _gone(pid: int) -> bool:
    for _ in range(150):
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        await asyncio.sleep(0.2)
    return False


async def test_function_timeout_stops_the_call_and_frees_its_core(
    radical_backend: RadicalExecutionBackend, tmp_path: Path
) -> None:
    # docs/backends/radical_pilot.md: "A `timeout` on a function task is enforced by the worker,
    # which kills the call." The call runs in a process of its own: it must be gone, and the
    # worker's cores free for the next calls.
    pidfile = tmp_path / "pid"
    timed = {
        "uid": "f.timeout",
        "function": rp_tasks.nap_noting_pid,
        "args": [str(pidfile), 300],
        "timeout": 3,
    }
    futures = await radical_backend.submit_tasks([timed])
    pid = await _pid_in(pidfile)
    with anyio.fail_after(WAIT):
        await asyncio.wait(list(futures))
    assert timed["state"] == FAILED
    assert "timed out after 3 s" in str(futures[0].exception()), futures[0].exception()
    assert await _gone(pid), f"the timed-out call (pid {pid}) still runs"
    # the worker's cores are free again: as many calls as it has cores (2, see make_backend)
    # run at the same time
    files = [tmp_path / f"pid.{i}" for i in range(2)]
    futures = await radical_backend.submit_tasks(
        [{"function": rp_tasks.nap_noting_pid, "args": [str(f), 8]} for f in files]
    )
    pids = [await _pid_in(f) for f in files]
    assert all(psutil.pid_exists(p) for p in pids), "the calls did not run side by side"
    with anyio.fail_after(WAIT):
        done = await asyncio.gather(*futures)
    assert [t["return_value"] for t in done] == pids


async def test_a_local_pilot_gets_no_sampling_step(
    radical_backend: RadicalExecutionBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # Its node is the client's, which telemetry samples itself; a SLURM pilot's nodes are
    # sampled by a step in its job (tests/slurm/test_slurm_radical.py). Said once.
    with caplog.at_level(logging.INFO, logger="rhapsody.radical_pilot"):
        assert await radical_backend.sample_resources() == []
        assert await radical_backend.sample_resources() == []
    said = [r.getMessage() for r in caplog.records if "resource samples" in r.getMessage()]
    assert said == [
        f"{radical_backend.name}: no resource samples of the pilot's nodes: "
        "the pilot is not a SLURM job whose sandbox this host can read"
    ]


async def test_a_program_reported_done_that_did_not_run_to_its_end_fails(
    radical_backend: RadicalExecutionBackend,
) -> None:
    # What a launcher that loses the program's node does (mpirun exits 0: see the lost-node
    # test in tests/slurm): RADICAL-Pilot says DONE, but the exec script never got past the
    # program, so it never listed the program's files (`<uid>.ofiles`). Here a helper the
    # program leaves behind removes that list as soon as it appears.
    hide = (
        'f="$RP_TASK_SANDBOX/$RP_TASK_ID.ofiles"; '
        '(i=0; while [ ! -e "$f" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; '
        'rm -f "$f") >/dev/null 2>&1 </dev/null & echo ran'
    )
    task = {"uid": "x.vanished", "executable": "/bin/sh", "arguments": ["-c", hide]}
    [error] = await run(radical_backend, task)
    assert isinstance(error, TaskExecutionError)
    assert task["state"] == FAILED
    assert f"its program did not run to its end on {task['node']}" in str(error)
    assert task["stdout"] == "ran\n"  # what it wrote is kept
