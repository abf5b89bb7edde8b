"""A complete RHAPSODY backend in one file: what a third-party author writes.

The engine in `BaseExecutionBackend` does the bookkeeping (states, callbacks, futures,
dependencies, timeouts, retries, cancellation, shutdown). A backend only says how to run one
attempt of a task. This one runs executables with `asyncio` (the context says with which
argv, environment and directory) and functions on a thread.
To ship it, add to your package's pyproject.toml:

    [project.entry-points."rhapsody.backends"]
    tiny = "tiny_backend_plugin"

where `tiny_backend_plugin` holds a `@hookimpl def rhapsody_register_backends(registry)` that
calls `registry.add("tiny", "tiny_backend:TinyBackend")`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from rhapsody.backends.base import BaseExecutionBackend, ExecutionContext, Outcome
from rhapsody.backends.launch import describe_exit
from rhapsody.task import TaskDescription


class TinyBackend(BaseExecutionBackend):
    backend_name = "tiny"

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        if task.function is not None:
            ctx.started()
            try:  # on a thread, so that a slow function does not stop the event loop
                value = await asyncio.to_thread(task.function, *task.args, **task.kwargs)
                if asyncio.iscoroutine(value):
                    value = await value
            except Exception as exc:
                return Outcome.raised(exc)
            return Outcome(True, return_value=value)
        try:  # the context resolves argv (shell or not), environment and working directory
            proc = await asyncio.create_subprocess_exec(
                *ctx.command_line(task),
                env=ctx.environment(task),
                cwd=ctx.working_directory(task),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: a stop reaches the whole tree
            )
        except OSError as exc:
            return Outcome.failure(f"cannot start {task.executable!r}: {exc}", exception=exc)
        ctx.started()
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:  # cancelled or timed out: stop it, then tell the engine
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        code = proc.returncode
        assert code is not None
        return Outcome(
            code == 0,
            None if code == 0 else describe_exit(code),
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            exit_code=code,
        )
