"""RHAPSODY task <-> RADICAL-Pilot task: descriptions out, outcomes back. No RADICAL-Pilot import.

The agent runs an executable task through a generated bash script that writes
`export NAME="value"` for each variable (unescaped) and `executable "arg" ...` with each argument
in double quotes, escaping only backslash and double quote. `$` and backquotes would therefore
be expanded by the script. To deliver every string verbatim, as the other backends do, values
are escaped here for double quotes, and an argument or executable that holds shell syntax is
passed through a variable whose expansion the script cannot re-interpret.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
from collections.abc import Mapping
from typing import Any

from rhapsody.backends.base import Outcome
from rhapsody.errors import TaskValidationError
from rhapsody.task import TaskDescription
from rhapsody_radical import _call

#: RADICAL-Pilot fields a task may set through `task_backend_specific_kwargs`
PASS_THROUGH = frozenset(
    {
        "ranks",
        "ranks_per_node",
        "cores_per_rank",
        "gpus_per_rank",
        "gpu_type",
        "threading_type",
        "use_mpi",
        "mem_per_rank",
        "lfs_per_rank",
        "pre_exec",
        "post_exec",
        "pre_launch",
        "post_launch",
        "pre_exec_sync",
        "named_env",
        "tags",
        "partition",
        "priority",
        "metadata",
        "name",
        "input_staging",
        "output_staging",
        "stage_on_error",
        "startup_timeout",
    }
)
# Keys core itself reads from `task_backend_specific_kwargs` (`cpus` is an alias of `cores`).
_CORE_KEYS = frozenset({"shell", "cpus", "cores", "gpus"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_./+,:@%=-]+\Z")
_ARG_VAR = "RHAPSODY_ARG_{}"
_EXE_VAR = "RHAPSODY_EXECUTABLE"
# How the task's launch script (bash) reports a program it could not start, with exit code 126
# or 127: "<script>: line <n>: <program>: <why>".
_LAUNCH_ERROR = re.compile(r": line \d+: (?P<program>.+): (?P<why>[^:]+)\Z")


def check(task: TaskDescription) -> None:
    """Reject at submit what the agent's script cannot carry."""
    for field in ("environment", "secret_environment"):
        for name in getattr(task, field) or {}:
            if not _ENV_NAME.match(name):
                raise TaskValidationError(
                    f"variable name {name!r} is not a shell variable name",
                    uid=task.uid,
                    field=field,
                )
    ranks = task.backend_kwargs.get("ranks", 1)
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise TaskValidationError(
            f"ranks must be a whole number >= 1, got {ranks!r}",
            uid=task.uid,
            field="task_backend_specific_kwargs",
        )
    unknown = sorted(set(task.backend_kwargs) - PASS_THROUGH - _CORE_KEYS)
    if unknown:
        raise TaskValidationError(
            f"unknown RADICAL-Pilot field(s) {', '.join(map(repr, unknown))}; "
            f"supported: {', '.join(sorted(PASS_THROUGH))}",
            uid=task.uid,
            field="task_backend_specific_kwargs",
        )


def _variables(task: TaskDescription) -> dict[str, str]:
    """The task's variables, secrets included: the agent writes them into the task's launch
    script in its sandbox (see docs/reliability.md)."""
    return {**(task.environment or {}), **(task.secret_environment or {})}


def _quoted(text: str) -> str:
    """`text` escaped for a double-quoted bash string."""
    for char in ("\\", '"', "$", "`"):
        text = text.replace(char, "\\" + char)
    return text


def executable_fields(task: TaskDescription) -> dict[str, Any]:
    """The RADICAL-Pilot description fields of an executable task (all but `uid`)."""
    assert task.executable is not None
    env = {name: _quoted(value) for name, value in _variables(task).items()}
    if task.shell:
        line = " ".join([task.executable, *(shlex.quote(a) for a in task.arguments)])
        executable, arguments = "/bin/sh", ["-c", line]
    else:
        executable, arguments = task.executable, list(task.arguments)
    if not _PLAIN_WORD.match(executable):
        env[_EXE_VAR] = _quoted(executable)
        executable = f'"${{{_EXE_VAR}}}"'  # the script does not quote the executable itself
    for i, arg in enumerate(arguments):
        if "$" in arg or "`" in arg:
            env[_ARG_VAR.format(i)] = _quoted(arg)
            arguments[i] = f"${{{_ARG_VAR.format(i)}}}"
    fields: dict[str, Any] = {
        "executable": executable,
        "arguments": arguments,
        "environment": env,
        "ranks": task.ranks,
        "cores_per_rank": task.cores_per_rank,
        "gpus_per_rank": task.gpus_per_rank,
    }
    fields.update((k, v) for k, v in task.backend_kwargs.items() if k in PASS_THROUGH)
    if task.timeout is not None:
        fields["timeout"] = task.timeout  # the agent stops it too, freeing its cores
    pre_exec = []
    if task.working_directory is not None:
        # RADICAL-Pilot writes its scripts and logs into the task sandbox: keep that, and run
        # the program itself in the requested directory.
        where = _quoted(os.path.abspath(task.working_directory))
        pre_exec.append(f'mkdir -p "{where}" && cd "{where}"')
    user_pre_exec = task.backend_kwargs.get("pre_exec")
    if user_pre_exec:
        pre_exec.extend([user_pre_exec] if isinstance(user_pre_exec, str) else user_pre_exec)
    if pre_exec:
        fields["pre_exec"] = pre_exec  # the user's own, after changing directory
    if task.ranks > 1 and _variables(task):
        # The agent's launch script starts the MPI launcher (mpirun, srun) before the task's
        # own script sets `environment`: the launcher must see it too (its OMPI_MCA_* settings,
        # OMPI_ALLOW_RUN_AS_ROOT), as a launcher started by the concurrent backend does.
        exports = [f'export {k}="{_quoted(v)}"' for k, v in _variables(task).items()]
        user = fields.get("pre_launch") or []
        fields["pre_launch"] = exports + ([user] if isinstance(user, str) else list(user))
    return fields


def function_fields(task: TaskDescription) -> dict[str, Any]:
    """The fields of a function task besides the call itself (`mode`, `function`, `raptor_id`).

    The raptor worker sets the variables in the process that runs the call, unescaped, and runs
    it in `sandbox`."""
    fields: dict[str, Any] = {"environment": _variables(task)}
    if task.working_directory is not None:
        fields["sandbox"] = os.path.abspath(task.working_directory)
    if task.timeout is not None:
        fields["timeout"] = task.timeout  # the worker then stops the call itself
    return fields


# -- results ---------------------------------------------------------------------------------


def signal_reason(code: int) -> tuple[str, int] | None:
    """A bash exit status above 128 reports a signal; (reason, -signal) like the other backends."""
    if not 128 < code < 128 + signal.NSIG:
        return None
    number = code - 128
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return f"killed by signal {name} ({number})", -number


def executable_outcome(task: TaskDescription, result: Mapping[str, Any]) -> Outcome:
    """The outcome of an executable task from its final RADICAL-Pilot state and fields."""
    state = result["state"]
    stdout, stderr = result.get("stdout") or "", result.get("stderr") or ""
    code = result.get("exit_code")
    if state == "DONE":
        return Outcome(True, stdout=stdout, stderr=stderr, exit_code=0 if code is None else code)
    if state == "CANCELED":
        reason = f"canceled by RADICAL-Pilot{failure_detail(result)}"
        return Outcome.failure(reason, stdout=stdout, stderr=stderr)
    if code is None:
        reason = f"RADICAL-Pilot reported FAILED{failure_detail(result)}"
        return Outcome.failure(reason, stdout=stdout, stderr=stderr)
    code = int(code)
    last_line = stderr.strip().rsplit("\n", 1)[-1] if stderr.strip() else ""
    launch = _LAUNCH_ERROR.search(last_line) if code in (126, 127) else None
    if launch is None or launch["program"] != task.executable:
        launch = None  # the program ran, and exited 126 or 127 itself
    if (
        launch
        and code == 127
        and launch["why"] in ("command not found", "No such file or directory")
    ):
        reason = f"cannot start {task.executable!r}: no such executable (exit code 127)"
    elif launch:  # e.g. Permission denied, Is a directory, Argument list too long
        reason = f"cannot start {task.executable!r}: {launch['why']} (exit code {code})"
    elif killed := signal_reason(code):
        reason, code = killed
    else:
        reason = f"exit code {code}"
    return Outcome.failure(reason, stdout=stdout, stderr=stderr, exit_code=code)


def function_outcome(task: TaskDescription, result: Mapping[str, Any]) -> Outcome:
    """The outcome of a function task: unpack what `_call.call` sent back."""
    stdout, stderr = result.get("stdout") or "", result.get("stderr") or ""
    packed = _call.unpack(result.get("return_value")) if result["state"] == "DONE" else None
    if packed is None:
        detail = failure_detail(result)
        if result["state"] == "CANCELED":
            reason = f"canceled by RADICAL-Pilot{detail}"
        elif task.timeout is not None and "TimeoutError" in detail:
            # the worker enforces the task's timeout (translate: `timeout`) and kills the call
            reason = f"timed out after {task.timeout:g} s (stopped by the raptor worker)"
        else:
            reason = f"the raptor worker could not run it{detail}"
        return Outcome.failure(reason, stdout=stdout, stderr=stderr)
    kind, value, trace = packed
    if kind == "ok":
        return Outcome(True, stdout=stdout, stderr=stderr, return_value=value)
    if trace:
        stderr = f"{stderr}{trace}" if not stderr or stderr.endswith("\n") else f"{stderr}\n{trace}"
    return Outcome.failure(
        f"{type(value).__name__}: {value}", exception=value, stdout=stdout, stderr=stderr
    )


def failure_detail(result: Mapping[str, Any]) -> str:
    exception = result.get("exception")
    detail = result.get("exception_detail")
    parts = [str(p).strip().rsplit("\n", 1)[-1] for p in (exception, detail) if p]
    return f": {'; '.join(parts)}" if parts else ""
