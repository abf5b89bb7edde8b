"""`concurrent`: the default backend, running tasks on this node.

Executables run as child processes (no shell unless `shell: True`), each in its own process
group so that a timeout, a cancellation or shutdown kills the whole tree. Function tasks run on
a thread pool by default (cheapest per task: no pickling, no process start) or, with
`isolation: "process"`, each in a fresh process that can be killed and whose crash fails only
that task. Slots (cores, GPUs) are accounted by the engine so the node is never oversubscribed.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import types
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

from rhapsody.backends.base import BaseExecutionBackend, ExecutionContext, Outcome
from rhapsody.errors import TaskValidationError
from rhapsody.platforms import detect
from rhapsody.resources import ResourcePool, detect_cores
from rhapsody.task import TaskDescription

from . import _isolated, _mpi, _subprocess
from ._orphans import RunningChildren
from ._threads import FunctionThreads


class ConcurrentExecutionBackend(BaseExecutionBackend):
    """Run tasks on the local node.

    :param executor: runs plain (non-async) function tasks; default: the backend's own worker
        threads (cheapest per call, see `_threads`). Pass a `ThreadPoolExecutor` or
        `ProcessPoolExecutor` to choose instead.
    :param cores: cores to schedule into (default: what `rhapsody.platforms.detect()` finds
        granted on this node, at most the CPUs this process may use).
    :param gpus: number of GPUs or their identifiers (default: the allocation's, else
        `CUDA_VISIBLE_DEVICES`, else `nvidia-smi -L`, else none).
    :param max_output: bytes of stdout/stderr kept in memory per task; beyond it the full stream
        goes to a file in `work_dir` (`stdout_file`/`stderr_file`) and the dict keeps the tail.
    :param kill_grace: seconds between SIGTERM and SIGKILL when a task is stopped.
    :param mpi_launcher: the command that starts a task of `ranks > 1`, its placeholders
        `{ranks}`, `{cores_per_rank}`, `{gpus_per_rank}` filled in; the task's command line
        follows it. Default `["mpirun", "-np", "{ranks}"]`. Such a task holds
        `ranks * cores_per_rank` of the backend's cores while it runs.
    """

    backend_name = "concurrent"
    streams_output = True
    runs_mpi = True  # under `mpi_launcher`

    def __init__(
        self,
        executor: Executor | None = None,
        name: str | None = None,
        *,
        cores: int | None = None,
        gpus: int | Sequence[str] | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        max_output: int = 1 << 20,
        kill_grace: float = 2.0,
        mpi_launcher: Sequence[str] = _mpi.DEFAULT_LAUNCHER,
    ) -> None:
        self._mpi_launcher = _mpi.check_launcher(mpi_launcher)
        # Size from the allocation (SLURM/PBS/LSF/Flux, else this machine), bounded by the
        # CPUs this process may actually use.
        granted = detect() if cores is None or gpus is None else None
        if cores is None:
            assert granted is not None
            cores = max(1, min(granted.local_cores, detect_cores()))
        if gpus is None:
            assert granted is not None
            gpu_ids: tuple[str, ...] = granted.gpu_ids
        elif isinstance(gpus, bool):
            raise TypeError("gpus must be a count or a list of GPU identifiers, not a bool")
        elif isinstance(gpus, int):
            if gpus < 0:
                raise ValueError(f"gpus must be >= 0, got {gpus}")
            gpu_ids = tuple(str(i) for i in range(gpus))
        else:
            gpu_ids = tuple(str(g) for g in gpus)
        if max_output < 1:
            raise ValueError(f"max_output must be >= 1 byte, got {max_output}")
        super().__init__(name, work_dir=work_dir, resources=ResourcePool(cores, gpu_ids))
        self._executor = executor
        self._threads: FunctionThreads | None = None
        self._max_output = max_output
        self._kill_grace = kill_grace
        # live children, killed at shutdown (or by a watchdog if this process dies first)
        self._running = RunningChildren()

    async def _start(self) -> None:
        if self._executor is None:
            self._threads = FunctionThreads(asyncio.get_running_loop(), f"rhapsody-{self.name}")

    async def _stop(self) -> None:
        for child in self._running:
            await child.kill_tree(self._kill_grace)
        self._running.close()
        if self._threads is not None:
            self._threads.shutdown()

    def _check_task(self, task: TaskDescription) -> None:
        if task.ranks > 1:
            assert self._pool is not None
            _mpi.check_task(task, self._mpi_launcher, self._pool)
        super()._check_task(task)
        if "resources" in task.backend_kwargs:  # never silently dropped
            raise TaskValidationError(
                "'resources' (free-form dask worker resources) means something on the dask "
                "backend only; concurrent places a task by its 'cores' and 'gpus'",
                uid=task.uid,
                field="task_backend_specific_kwargs",
            )
        if task.function is not None and task.isolation == "thread":
            for field in ("environment", "secret_environment", "working_directory"):
                if getattr(task, field) is not None:
                    raise TaskValidationError(
                        "a function task running on a thread shares the process's "
                        f"{field.replace('_', ' ')}; set isolation='process' to give it its own",
                        uid=task.uid,
                        field=field,
                    )
            if task.service is not None and not _is_async(task.function):
                raise TaskValidationError(
                    "a service must be stoppable, and a plain function on a thread cannot be "
                    "stopped: make it an async function, or set isolation='process'",
                    uid=task.uid,
                    field="service",
                )

    def _execute(  # type: ignore[override]
        self, task: TaskDescription, ctx: ExecutionContext
    ) -> asyncio.Future[Outcome]:
        function = task.function
        if (
            function is not None
            and self._threads is not None
            and task.isolation == "thread"
            and not _is_async(function)
        ):
            # The hot path of many short function tasks: straight onto a worker thread.
            ctx.started()
            return self._threads.submit(function, task.args, task.kwargs)
        return asyncio.ensure_future(self._execute_async(task, ctx))

    async def _execute_async(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        if task.function is None:
            if task.ranks > 1:
                task = _mpi.under_launcher(task, self._mpi_launcher)
            return await _subprocess.run(
                task, ctx, self._max_output, self._kill_grace, self._running
            )
        if task.isolation == "process":
            return await _isolated.run(task, ctx, self._kill_grace, self._running)
        return await self._run_function(task, ctx)

    async def _run_function(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        """An `async def` function on the loop, or a plain one on the user's `executor`."""
        func = task.function
        assert func is not None
        ctx.started()
        try:
            if inspect.iscoroutinefunction(func):
                value = await func(*task.args, **task.kwargs)
            else:
                assert self._loop is not None
                call = functools.partial(func, *task.args, **task.kwargs)
                value = await self._loop.run_in_executor(self._executor, call)
                if inspect.isawaitable(value):
                    value = await value
        except Exception as exc:
            return Outcome.raised(exc)
        return Outcome(True, return_value=value)


def _is_async(function: Callable[..., Any]) -> bool:
    # `inspect.iscoroutinefunction` unwraps partials and methods: a few µs per task. A plain
    # function (the common case) only needs its code flags.
    if type(function) is types.FunctionType:
        return bool(function.__code__.co_flags & inspect.CO_COROUTINE)
    return inspect.iscoroutinefunction(function)
