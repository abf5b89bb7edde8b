"""How a task's fields become a process: argv, environment, working directory, exit reason.

One definition for every backend, so none of them reads the raw fields and gets their meaning
wrong (an environment that replaces the parent's, secrets dropped, a shell ignored). Backends
that start the process here use `ExecutionContext.command_line` / `.environment` /
`.working_directory`; a backend whose processes start elsewhere (a dask worker, a pilot agent)
calls these functions there, with that process's own environment as `base`.
"""

from __future__ import annotations

import os
import shlex
import signal
from collections.abc import Mapping, Sequence

from rhapsody.task import TaskDescription

#: the variable that tells a task which GPUs it was given
GPU_VARIABLE = "CUDA_VISIBLE_DEVICES"


def command_line(task: TaskDescription) -> list[str]:
    """argv for an executable task. Without a shell, arguments go to the program verbatim. With
    `shell: True`, `executable` is a shell command line and each argument is appended quoted."""
    if task.executable is None:
        raise ValueError(f"task {task.uid!r} is a function task: it has no command line")
    if task.shell:
        line = " ".join([task.executable, *(shlex.quote(a) for a in task.arguments)])
        return ["/bin/sh", "-c", line]
    return [task.executable, *task.arguments]


def environment(
    task: TaskDescription,
    gpu_ids: Sequence[str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str] | None:
    """The task process's environment: `base` (default: this process's), then the task's
    `environment`, then its `secret_environment`, then `CUDA_VISIBLE_DEVICES` set to `gpu_ids`
    when given. None when that is `base` unchanged (start the process with the inherited
    environment: the cheapest)."""
    secrets = task.secret_environment
    if task.environment is None and secrets is None and gpu_ids is None:
        return None if base is None else dict(base)
    env = dict(os.environ if base is None else base)
    if task.environment:
        env.update(task.environment)
    if secrets:
        env.update(secrets)
    if gpu_ids is not None:
        env[GPU_VARIABLE] = ",".join(gpu_ids)
    return env


def working_directory(task: TaskDescription) -> str | None:
    """The task's `working_directory`, created if missing (None: run where the backend runs)."""
    path = task.working_directory
    if path is not None:
        os.makedirs(path, exist_ok=True)
    return path


def describe_exit(code: int) -> str:
    """The failure reason of a process that ended with `code` (negative: killed by a signal)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by signal {name} ({-code})"
    return f"exit code {code}"
