"""The conformance kit catches broken backends: each variant of the example backend below makes
one mistake a backend author could make, and the kit check named next to it fails on it.

The variants are the example backend (which passes the whole kit, see test_conformance.py)
with one thing wrong: the context it reads a task's fields from, the outcome it returns, or
how it stops a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from rhapsody.backends.base import ExecutionContext, Outcome
from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.backends.launch import describe_exit
from rhapsody.task import TaskDescription
from rhapsody.testing import BackendConformance
from rhapsody.testing.probes import OPEN_MPI_LOOPBACK as OPEN_MPI

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from tiny_backend import TinyBackend


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Context:
    """An `ExecutionContext` that resolves one field wrongly (as a backend reading raw fields
    would)."""

    def __init__(self, real: ExecutionContext, **wrong: Any) -> None:
        self._real = real
        self._wrong = wrong

    def __getattr__(self, name: str) -> Any:
        return self._wrong.get(name) or getattr(self._real, name)


class _WrongContext(TinyBackend):
    """Runs tasks like the example, through a context with the given methods replaced."""

    wrong: dict[str, Any] = {}

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        return await super()._execute(task, _Context(ctx, **self.wrong))  # type: ignore[arg-type]


class EnvironmentReplaced(_WrongContext):
    wrong = {"environment": lambda task: task.environment}


class SecretsDropped(_WrongContext):
    wrong = {"environment": lambda task: {**os.environ, **(task.environment or {})}}


class DirectoryNotCreated(_WrongContext):
    wrong = {"working_directory": lambda task: task.working_directory}


class ShellIgnored(_WrongContext):
    wrong = {"command_line": lambda task: [task.executable, *task.arguments]}


class ArgumentsResplit(_WrongContext):
    # a command line built by joining the words and splitting them again
    wrong = {
        "command_line": lambda task: shlex.split(" ".join([task.executable, *task.arguments]))
    }


class DirectoryNotUsed(_WrongContext):
    # creates the directory, then starts the program where this process is
    wrong = {
        "working_directory": lambda task: os.makedirs(task.working_directory, exist_ok=True)
    }


class SecretInTheTask(TinyBackend):
    """Returns the environment it ran with among the results (for debugging, say)."""

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        outcome = await super()._execute(task, ctx)
        if task.function is None:
            outcome.extra = {"ran_with": ctx.environment(task)}
        return outcome


class FunctionsUnstoppable(TinyBackend):
    """Lets a function call run to its end whatever the engine says (a cancel, a timeout)."""

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        if task.function is None:
            return await super()._execute(task, ctx)
        call = asyncio.ensure_future(super()._execute(task, ctx))
        while True:
            try:
                return await asyncio.shield(call)
            except asyncio.CancelledError:
                continue  # the mistake


class FunctionRetriedInside(TinyBackend):
    """Calls a function that raised once more itself, before the engine's own retries."""

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        outcome = await super()._execute(task, ctx)
        if task.function is not None and not outcome.ok:
            outcome = await super()._execute(task, ctx)
        return outcome


class SecretLogged(TinyBackend):
    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        logging.getLogger("tiny").debug("running %s with %s", task.uid, task.secret_environment)
        return await super()._execute(task, ctx)


class _WrongOutcome(TinyBackend):
    """Runs tasks like the example, then spoils what it returns."""

    def spoil(self, outcome: Outcome) -> Outcome:
        raise NotImplementedError

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        outcome = await super()._execute(task, ctx)
        return outcome if task.function is not None else self.spoil(outcome)


class StdoutDropped(_WrongOutcome):
    def spoil(self, outcome: Outcome) -> Outcome:
        return attrs.evolve(outcome, stdout=None)


class StderrDropped(_WrongOutcome):
    def spoil(self, outcome: Outcome) -> Outcome:
        return attrs.evolve(outcome, stderr=None)


class StreamsMerged(_WrongOutcome):
    def spoil(self, outcome: Outcome) -> Outcome:
        return attrs.evolve(outcome, stdout=(outcome.stdout or "") + (outcome.stderr or ""))


class OutputTruncated(_WrongOutcome):
    def spoil(self, outcome: Outcome) -> Outcome:  # keeps the head, says nothing of the rest
        return attrs.evolve(outcome, stdout=(outcome.stdout or "")[: 1 << 20])


class ExitCodeIgnored(_WrongOutcome):
    def spoil(self, outcome: Outcome) -> Outcome:
        return attrs.evolve(outcome, ok=True, reason=None)


class LeaderKilledOnly(TinyBackend):
    """Stops a task by killing the process it started, not its process group. (Its output is
    not captured: a grandchild left running would hold the pipes.)"""

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        if task.function is not None:
            return await super()._execute(task, ctx)
        proc = await asyncio.create_subprocess_exec(
            *ctx.command_line(task),
            env=ctx.environment(task),
            cwd=ctx.working_directory(task),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        ctx.started()
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
            raise
        return Outcome(code == 0, None if code == 0 else describe_exit(code), exit_code=code)


class KwargsDropped(TinyBackend):
    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        if task.function is not None:
            task = attrs.evolve(task, kwargs={})
        return await super()._execute(task, ctx)


class GpuGivenTwice(ConcurrentExecutionBackend):
    """Places GPUs, then tells every task it has the first one."""

    def __init__(self) -> None:
        super().__init__(cores=2, gpus=2)

    def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Any:
        def environment(task: TaskDescription) -> dict[str, str] | None:
            return {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}

        return super()._execute(task, _Context(ctx, environment=environment))  # type: ignore[arg-type]


class RanksRunOnce(TinyBackend):
    """Says it runs MPI tasks, and runs a task of 2 ranks as one process."""

    runs_mpi = True


class LauncherNotMpi(ConcurrentExecutionBackend):
    """Runs a task of several ranks under a launcher that starts it once (`env`), not under
    MPI."""

    def __init__(self) -> None:
        super().__init__(cores=2, mpi_launcher=["env"])


class Oversubscribed(TinyBackend):
    """Declares room for one task at a time, yet runs every task at once."""

    @property
    def capacity(self) -> tuple[int, int] | None:
        return (1, 0)


# (mistake, the broken backend, the kit check that must catch it, what that check says)
CASES = [
    ("environment replaced", EnvironmentReplaced, "test_environment_is_merged_over_the_parents",
     "HOME is missing"),
    ("environment replaced", EnvironmentReplaced,
     "test_secret_environment_reaches_the_process_only", "the secret is missing"),
    ("secrets dropped", SecretsDropped, "test_secret_environment_reaches_the_process_only",
     "the secret is missing"),
    ("secret logged", SecretLogged, "test_secret_environment_reaches_the_process_only",
     "the secret is in the logs"),
    ("directory not created", DirectoryNotCreated, "test_working_directory_is_created_and_used",
     "No such file or directory"),
    ("directory not used", DirectoryNotUsed, "test_working_directory_is_created_and_used",
     "it ran in"),
    ("secret in the task", SecretInTheTask, "test_secret_environment_reaches_the_process_only",
     "the secret is in task 'do.secret'"),
    ("shell ignored", ShellIgnored, "test_shell_runs_a_command_line",
     "cannot start 'echo one && echo two'"),
    ("arguments re-split", ArgumentsResplit, "test_arguments_reach_the_program_verbatim",
     "No closing quotation"),
    ("stdout dropped", StdoutDropped, "test_stdout_and_stderr_are_captured_separately",
     "stdout: got None"),
    ("stdout dropped", StdoutDropped, "test_exit_code_fails_the_task", "stdout: got None"),
    ("stderr dropped", StderrDropped, "test_stdout_and_stderr_are_captured_separately",
     "stderr: got None"),
    ("streams merged", StreamsMerged, "test_stdout_and_stderr_are_captured_separately",
     "stdout: got 'out 0000000\\nout 0000001\\nout 0000002\\nerr 0000000"),
    ("output truncated", OutputTruncated, "test_large_output_is_kept_in_full",
     "stdout: 1048576 of 3145728 chars"),
    ("exit code ignored", ExitCodeIgnored, "test_exit_code_fails_the_task",
     "'do.exit' did not fail: it ended DONE"),
    ("exit code ignored", ExitCodeIgnored, "test_retries_run_the_attempts",
     "a task failing every attempt did not fail"),
    ("process left after timeout", LeaderKilledOnly, "test_timeout_stops_the_process_tree",
     "processes of the stopped task still run"),
    ("process left after cancel", LeaderKilledOnly, "test_cancel_stops_the_process_tree",
     "processes of the stopped task still run"),
    ("function timeout ignored", FunctionsUnstoppable, "test_function_timeout_fails_the_task",
     "'do.func.timeout' did not fail: it ended DONE"),
    ("function cancel ignored", FunctionsUnstoppable, "test_cancel_running_task",
     "the cancelled task's state"),
    ("function retried inside", FunctionRetriedInside, "test_function_retries_run_the_attempts",
     "attempts of a function with retries=2 failing: got 6"),
    ("kwargs dropped", KwargsDropped, "test_function_receives_its_arguments",
     "[args, kwargs] the function saw: got [[1, 'two words', '', None, {'k': [1.5]}], {}]"),
    ("capacity exceeded", Oversubscribed, "test_running_tasks_fit_the_capacity",
     "ran at once on 1 cores"),
    ("GPU given twice", GpuGivenTwice, "test_gpus_are_never_shared",
     "given to tasks running together"),
    ("ranks run as one process", RanksRunOnce, "test_ranks_beyond_one_are_rejected",
     "a task of ranks=2 was accepted and ended DONE"),
    ("ranks not launched by MPI", LauncherNotMpi, "test_ranks_run_as_one_mpi_program",
     "(rank, size) of each process"),
]
# The control of a check the example cannot take part in (it declares no capacity).
CONTROLS = {
    "test_running_tasks_fit_the_capacity": lambda: ConcurrentExecutionBackend(cores=1),
    "test_gpus_are_never_shared": lambda: ConcurrentExecutionBackend(cores=2, gpus=2),
    "test_ranks_run_as_one_mpi_program": lambda: ConcurrentExecutionBackend(cores=2),
}


class _Kit(BackendConformance):
    # Bounds each wait, e.g. for a process that is never stopped: enough for the example to
    # stop one (SIGKILL at once), short for a broken backend that leaves it.
    wait_timeout = 10.0


class _MpiKit(_Kit):
    runs_mpi = True
    # mpirun starting two Python ranks that import mpi4py took over 10 s on a loaded 2-core box
    wait_timeout = 60.0
    mpi_environment = OPEN_MPI


class _FunctionKit(_Kit):
    runs_executables = False  # the kinds ("long", ...) are functions
    wait_timeout = 30.0  # longer than the "long" kind (10 s) that a broken backend runs out


# The kit a check runs in (the MPI check, only for backends that say they run MPI tasks).
KITS = {
    "test_ranks_run_as_one_mpi_program": _MpiKit,
    "test_cancel_running_task": _FunctionKit,
    "test_function_timeout_fails_the_task": _FunctionKit,
}


@pytest.mark.parametrize(
    ("mistake", "broken", "check", "says"),
    CASES,
    ids=[f"{mistake}-caught-by-{check}" for mistake, _, check, _ in CASES],
)
@pytest.mark.anyio
async def test_the_kit_catches(
    mistake: str, broken: type, check: str, says: str, tmp_path: Path
) -> None:
    kit = KITS.get(check, _Kit)()
    method = getattr(kit, check)
    kwargs = {"tmp_path": tmp_path} if "tmp_path" in inspect.signature(method).parameters else {}
    backend = await broken()
    try:
        with pytest.raises(AssertionError) as caught:
            await method(backend, **kwargs)
    finally:
        await backend.shutdown()
    assert says in str(caught.value), f"{mistake}: {check} failed for another reason"


@pytest.mark.parametrize("check", sorted({check for _, _, check, _ in CASES}))
@pytest.mark.anyio
async def test_the_example_backend_passes_the_same_check(check: str, tmp_path: Path) -> None:
    """The control: each check passes on the example these variants break."""
    kit = KITS.get(check, _Kit)()
    method = getattr(kit, check)
    kwargs = {"tmp_path": tmp_path} if "tmp_path" in inspect.signature(method).parameters else {}
    backend: Any = await CONTROLS.get(check, TinyBackend)()
    try:
        await method(backend, **kwargs)
    finally:
        await backend.shutdown()


SKIPPING_KIT = '''
from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.testing import BackendConformance


class TestServicesAndFunctionsOff(BackendConformance):
    runs_services = False
    runs_functions = False

    def make_backend(self):
        return ConcurrentExecutionBackend()
'''


def test_each_skip_names_the_check_and_why(tmp_path: Path) -> None:
    """A backend that cannot run a kind says so; pytest's summary lists each check it skips."""
    (tmp_path / "test_skipping_kit.py").write_text(SKIPPING_KIT)
    checks = [
        "test_service_serves_its_dependents_until_stopped",
        "test_function_timeout_fails_the_task",
    ]
    pytest_ = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
    run = subprocess.run(
        [*pytest_, "-k", " or ".join(checks), "test_skipping_kit.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    summary = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(summary) == 2, run.stdout[-3000:]
    assert any(
        f"{checks[0]}: TestServicesAndFunctionsOff runs no services (runs_services = False)"
        in line for line in summary
    ), summary
    assert any(
        f"{checks[1]}: TestServicesAndFunctionsOff runs no functions (runs_functions = False)"
        in line for line in summary
    ), summary
