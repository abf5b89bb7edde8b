"""Run one function task in a fresh process: killable, and its crash fails only that task.

Processes are spawned (a fresh interpreter, ~0.1 s): forking this multi-threaded process is
unsafe, and a fork server would outlive `shutdown()`. The function and its arguments must
therefore be picklable (module-level functions are), and scripts need a `__main__` guard.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
from multiprocessing.connection import Connection
from typing import Any

from rhapsody.backends.base import ExecutionContext, Outcome
from rhapsody.backends.launch import describe_exit
from rhapsody.task import TaskDescription

from ._orphans import RunningChildren
from ._subprocess import Child

_context = multiprocessing.get_context("spawn")


def _entry(
    conn: Connection,
    func: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    env: dict[str, str] | None,
    cwd: str | None,
) -> None:
    os.setsid()  # own process group, like executable tasks: the whole tree can be killed
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    if cwd is not None:  # created by the parent
        os.chdir(cwd)
    try:
        value = func(*args, **kwargs)
        if asyncio.iscoroutine(value):
            value = asyncio.run(value)
        message: tuple[str, Any] = ("ok", value)
    except BaseException as exc:
        message = ("error", exc)
    try:
        conn.send(message)
    except Exception as exc:  # unpicklable result or exception
        kind = "result" if message[0] == "ok" else "exception"
        conn.send(("error", RuntimeError(f"the task's {kind} cannot be pickled: {exc!r}")))
    conn.close()


def _receive(conn: Connection) -> tuple[str, Any] | None:
    try:
        message: tuple[str, Any] = conn.recv()
        return message
    except (EOFError, OSError):
        return None


async def run(
    task: TaskDescription,
    ctx: ExecutionContext,
    kill_grace: float,
    running: RunningChildren,
) -> Outcome:
    env = ctx.environment(task)
    cwd = ctx.working_directory(task)
    receiver, sender = _context.Pipe(duplex=False)
    process = _context.Process(
        target=_entry,
        args=(sender, task.function, task.args, task.kwargs, env, cwd),
        name=f"rhapsody-task-{ctx.uid}",
        daemon=True,
    )
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, process.start)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        receiver.close()
        sender.close()
        return Outcome.failure(
            f"isolation='process' needs a picklable function and arguments: {exc}", exception=exc
        )
    sender.close()
    assert process.pid is not None
    child = Child(process.pid)
    running.add(child)
    ctx.started()
    try:
        message = await loop.run_in_executor(None, _receive, receiver)
        await loop.run_in_executor(None, process.join)
    except asyncio.CancelledError:
        await child.kill_tree(kill_grace)
        raise
    finally:
        running.discard(child)
        receiver.close()
    if message is None:
        code = process.exitcode if process.exitcode is not None else -1
        return Outcome.failure(
            f"worker process {describe_exit(code)} before returning a result", exit_code=code
        )
    kind, value = message
    if kind == "ok":
        return Outcome(True, return_value=value)
    return Outcome.raised(value)
