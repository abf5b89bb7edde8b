"""The translation to and from RADICAL-Pilot's task fields (no pilot needed)."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "radical.pilot", reason="radical.pilot is not installed: pip install rhapsody-radical"
)

from typing import Any

from rhapsody.task import TaskDescription
from rhapsody_radical import _call, translate


def _task(**fields: Any) -> TaskDescription:
    return TaskDescription.from_dict(fields, fields.pop("uid", "t.1"))


def test_plain_words_pass_as_they_are_and_shell_syntax_through_variables() -> None:
    fields = translate.executable_fields(
        _task(executable="/bin/echo", arguments=["a", "$X", "`y`"])
    )
    assert fields["executable"] == "/bin/echo"
    assert fields["arguments"] == ["a", "${RHAPSODY_ARG_1}", "${RHAPSODY_ARG_2}"]
    assert fields["environment"] == {"RHAPSODY_ARG_1": "\\$X", "RHAPSODY_ARG_2": "\\`y\\`"}
    odd = translate.executable_fields(_task(executable="/opt/my tools/run"))
    assert odd["executable"] == '"${RHAPSODY_EXECUTABLE}"'
    assert odd["environment"] == {"RHAPSODY_EXECUTABLE": "/opt/my tools/run"}


def test_working_directory_resources_and_pass_through() -> None:
    task = _task(
        executable="true",
        working_directory="/tmp/a b",
        cores=2,
        gpus=1,
        timeout=5,
        task_backend_specific_kwargs={"pre_exec": ["module load x"], "ranks": 2, "tags": {"a": 1}},
    )
    fields = translate.executable_fields(task)
    assert fields["pre_exec"] == ['mkdir -p "/tmp/a b" && cd "/tmp/a b"', "module load x"]
    assert {
        k: fields[k] for k in ("ranks", "cores_per_rank", "gpus_per_rank", "timeout", "tags")
    } == {"ranks": 2, "cores_per_rank": 2, "gpus_per_rank": 1, "timeout": 5.0, "tags": {"a": 1}}


def test_the_placement_spec_becomes_the_pilots_own_fields() -> None:
    task = _task(executable="mpi_app", ranks=4, cores_per_rank=2, gpus_per_rank=1)
    fields = translate.executable_fields(task)
    assert {k: fields[k] for k in ("ranks", "cores_per_rank", "gpus_per_rank")} == {
        "ranks": 4,
        "cores_per_rank": 2,
        "gpus_per_rank": 1,
    }
    assert fields["executable"] == "mpi_app"  # the agent's launch method starts the ranks
    assert "pre_launch" not in fields


def test_the_mpi_launcher_sees_the_environment() -> None:
    task = _task(
        executable="mpi_app",
        ranks=2,
        environment={"OMPI_MCA_btl": "self,tcp", "ODD": 'a "b" $c'},
        task_backend_specific_kwargs={"pre_launch": "module load mpi"},
    )
    assert translate.executable_fields(task)["pre_launch"] == [
        'export OMPI_MCA_btl="self,tcp"',
        'export ODD="a \\"b\\" \\$c"',
        "module load mpi",
    ]


def test_exit_status_reasons() -> None:
    task = _task(executable="/x")

    def outcome(**result: Any) -> Any:
        return translate.executable_outcome(task, {"state": "FAILED", **result})

    assert outcome(exit_code=137).reason == "killed by signal SIGKILL (9)"
    assert outcome(exit_code=137).exit_code == -9
    missing = outcome(exit_code=127, stderr="x.sh: line 5: /x: No such file or directory\n")
    assert missing.reason == "cannot start '/x': no such executable (exit code 127)"
    too_long = outcome(exit_code=126, stderr="x.sh: line 9: /x: Argument list too long\n")
    assert too_long.reason == "cannot start '/x': Argument list too long (exit code 126)"
    denied = outcome(exit_code=126, stderr="x.sh: line 9: /x: Permission denied\n")
    assert denied.reason == "cannot start '/x': Permission denied (exit code 126)"
    # a program that ran and exits 126 or 127 itself is not one that could not start
    assert outcome(exit_code=126, stderr="oops\n").reason == "exit code 126"
    other = outcome(exit_code=127, stderr="x.sh: line 9: /y: No such file or directory\n")
    assert other.reason == "exit code 127"
    assert outcome(exit_code=2).reason == "exit code 2"
    lost = outcome(exception='RuntimeError("pilot died")', exception_detail="pilot p.0 is final")
    assert (
        lost.reason
        == 'RADICAL-Pilot reported FAILED: RuntimeError("pilot died"); pilot p.0 is final'
    )
    done = translate.executable_outcome(task, {"state": "DONE", "stdout": "o", "exit_code": 0})
    assert done.ok and done.stdout == "o" and done.exit_code == 0


@pytest.mark.anyio
async def test_function_outcomes_round_trip() -> None:
    call = _task(function=divmod)
    ok = translate.function_outcome(
        call,
        {"state": "DONE", "return_value": await _call.call(_call.pack_call(divmod, (7, 2), {}))},
    )
    assert ok.ok and ok.return_value == (3, 1)
    failed = translate.function_outcome(
        call,
        {"state": "DONE", "return_value": await _call.call(_call.pack_call(divmod, (1, 0), {}))},
    )
    assert isinstance(failed.exception, ZeroDivisionError)
    assert failed.reason == "ZeroDivisionError: integer division or modulo by zero"
    assert "Traceback" in (failed.stderr or "")
    foreign = translate.function_outcome(call, {"state": "FAILED", "exception": "ValueError('x')"})
    assert (
        not foreign.ok and foreign.reason == "the raptor worker could not run it: ValueError('x')"
    )
    # the worker enforcing the task's timeout (as RADICAL-Pilot 1.103 reports it)
    late = {"state": "FAILED", "exception": 'TimeoutError("task timed out")'}
    timed = translate.function_outcome(_task(function=divmod, timeout=3), late)
    assert timed.reason == "timed out after 3 s (stopped by the raptor worker)"
    assert translate.function_outcome(call, late).reason.startswith("the raptor worker could not")
