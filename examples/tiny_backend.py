"""A complete RHAPSODY backend in one file: what a third-party author writes.

The engine in `BaseExecutionBackend` does the bookkeeping (states, callbacks, futures,
dependencies, timeouts, retries, cancellation, shutdown). A backend only says how to run one
attempt of a task. This one runs executables with `asyncio` (no shell) and functions inline.
To ship it, add to your package's pyproject.toml:

    [project.entry-points."rhapsody.backends"]
    tiny = "tiny_backend_plugin"

where `tiny_backend_plugin` holds a `@hookimpl def rhapsody_register_backends(registry)` that
calls `registry.add("tiny", "tiny_backend:TinyBackend")`.
"""

from __future__ import annotations

import asyncio
import inspect

from rhapsody.backends.base import BaseExecutionBackend, ExecutionContext, Outcome
from rhapsody.task import TaskDescription


class TinyBackend(BaseExecutionBackend):
    backend_name = "tiny"

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        if task.function is not None:
            ctx.started()
            try:
                value = task.function(*task.args, **task.kwargs)
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:
                return Outcome.raised(exc)
            return Outcome(True, return_value=value)
        assert task.executable is not None
        try:
            proc = await asyncio.create_subprocess_exec(
                task.executable,
                *task.arguments,
                env=task.environment,
                cwd=task.working_directory,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            return Outcome.failure(f"cannot start {task.executable!r}: {exc}", exception=exc)
        ctx.started()
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:
            proc.kill()  # cancelled or timed out: stop the process, then let the engine know
            await proc.wait()
            raise
        code = proc.returncode
        assert code is not None
        return Outcome(
            code == 0,
            None if code == 0 else f"exit code {code}",
            stdout=out.decode(),
            stderr=err.decode(),
            exit_code=code,
        )
