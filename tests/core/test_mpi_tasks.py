"""MPI tasks: the placement fields `ranks`, `cores_per_rank`, `gpus_per_rank`, validated like
every field, and `concurrent` running a task of several ranks under a real Open MPI `mpirun`
with an mpi4py program that checks its COMM_WORLD."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.errors import ResourceError, TaskExecutionError, TaskValidationError
from rhapsody.task import TaskDescription

MPI_HELLO = Path(__file__).resolve().parents[1] / "slurm" / "scripts" / "mpi_hello.py"
# Open MPI as root, over loopback TCP only (its shared-memory transport crashed with several
# ranks per node where this was measured: /work/shared/notes/slurm.md).
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl": "self,tcp",
    "OMPI_MCA_btl_tcp_if_include": "lo",
    "OMPI_MCA_oob_tcp_if_include": "lo",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def describe(**fields: Any) -> TaskDescription:
    return TaskDescription.from_dict({"executable": "/bin/true", **fields}, "t")


# -- the placement spec ----------------------------------------------------------------------


def test_a_plain_task_is_one_rank_of_its_cores() -> None:
    task = describe(cores=2, gpus=1)
    assert (task.ranks, task.cores_per_rank, task.gpus_per_rank) == (1, 2, 1)
    assert (task.cores, task.gpus) == (2, 1)


def test_ranks_hold_their_per_rank_needs_in_all() -> None:
    task = describe(ranks=3, cores_per_rank=2, gpus_per_rank=1)
    assert (task.ranks, task.cores_per_rank, task.gpus_per_rank) == (3, 2, 1)
    assert (task.cores, task.gpus) == (6, 3)  # what the engine reserves
    assert describe(ranks=4).cores == 4  # one core per rank by default


def test_one_rank_may_say_cores_either_way() -> None:
    assert describe(cores_per_rank=2).cores == 2
    assert describe(cores=2, cores_per_rank=2).cores == 2


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"ranks": 0}, "ranks", "must be >= 1, got 0"),
        ({"ranks": "3"}, "ranks", "must be a whole number"),
        ({"ranks": True}, "ranks", "must be a whole number"),
        ({"cores_per_rank": 0}, "cores_per_rank", "must be >= 1"),
        ({"gpus_per_rank": -1}, "gpus_per_rank", "must be >= 0"),
        ({"gpus_per_rank": 1.5}, "gpus_per_rank", "must be a whole number"),
        ({"ranks": 2, "cores": 2}, "cores", "give 'cores_per_rank' for a task of 2 ranks"),
        ({"ranks": 2, "gpus": 1}, "gpus", "give 'gpus_per_rank' for a task of 2 ranks"),
        ({"cores": 2, "cores_per_rank": 3}, "cores_per_rank", "'cores' is 2; give one of them"),
    ],
)
def test_bad_placement_names_the_task_and_field(
    fields: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(TaskValidationError) as caught:
        describe(**fields)
    assert (caught.value.uid, caught.value.field) == ("t", field)
    assert message in str(caught.value)


def test_a_function_task_cannot_have_ranks() -> None:
    with pytest.raises(TaskValidationError, match="an MPI program of 2 ranks is an 'executable'"):
        TaskDescription.from_dict({"function": print, "ranks": 2}, "f")


# -- concurrent under mpirun -------------------------------------------------------------------

needs_mpi = pytest.mark.skipif(
    shutil.which("mpirun") is None, reason="needs Open MPI's mpirun (Debian: openmpi-bin)"
)


def mpi_task(uid: str, ranks: int, **fields: Any) -> dict[str, Any]:
    return {
        "uid": uid,
        "executable": sys.executable,
        "arguments": [str(MPI_HELLO), str(ranks)],
        "environment": MPI_ENV,
        "ranks": ranks,
        **fields,
    }


@needs_mpi
@pytest.mark.anyio
async def test_ranks_run_under_mpirun_as_one_comm_world() -> None:
    pytest.importorskip("mpi4py", reason="needs mpi4py (requirements-dev.txt)")
    async with ConcurrentExecutionBackend(cores=2) as backend:
        [future] = await backend.submit_tasks([mpi_task("hello", 2)])
        task = await asyncio.wait_for(future, 120)
    report = json.loads(task["stdout"])
    assert report["size"] == 2 and len(report["nodes"]) == 2


@needs_mpi
@pytest.mark.anyio
async def test_a_task_whose_program_sees_a_wrong_world_fails() -> None:
    pytest.importorskip("mpi4py", reason="needs mpi4py (requirements-dev.txt)")
    async with ConcurrentExecutionBackend(cores=2) as backend:
        # The program expects 3 ranks; the launcher is told to start 1.
        wrong = mpi_task("wrong", 2, arguments=[str(MPI_HELLO), "3"])
        [future] = await backend.submit_tasks([wrong])
        with pytest.raises(TaskExecutionError, match="exit code 1"):
            await asyncio.wait_for(future, 120)


@pytest.mark.anyio
async def test_ranks_hold_all_their_cores_while_they_run() -> None:
    # A launcher that only records its words: `{ranks}` and the per-rank values arrive filled
    # in, the task's argv follows verbatim (`$X` is not expanded).
    record = [sys.executable, "-c", "import sys, time; print(sys.argv[1:]); time.sleep(0.3)"]
    backend = ConcurrentExecutionBackend(
        cores=4, mpi_launcher=[*record, "{ranks}", "{cores_per_rank}", "{gpus_per_rank}"]
    )
    events: list[tuple[str, str, int]] = []

    def seen(task: dict[str, Any], state: str) -> None:
        assert backend.resources is not None
        events.append((task["uid"], state, backend.resources.free_cores))

    backend.register_callback(seen)
    async with backend:
        mpi = {"uid": "mpi", "executable": "/bin/echo", "arguments": ["$X"], "ranks": 2}
        futures = await backend.submit_tasks(
            [{**mpi, "cores_per_rank": 2}, {"uid": "after", "executable": "/bin/true"}]
        )
        done, _ = await asyncio.wait_for(asyncio.gather(*futures), 60)
    assert done["stdout"].strip() == str(["2", "2", "0", "/bin/echo", "$X"])
    assert ("mpi", "EXECUTING", 0) in events  # 2 ranks x 2 cores: the whole backend
    order = [(uid, state) for uid, state, _ in events]
    # The plain task could start only once the MPI task had released its cores.
    assert order.index(("after", "EXECUTING")) > order.index(("mpi", "DONE"))


@pytest.mark.anyio
async def test_a_task_too_large_for_the_backend_is_rejected_at_submit() -> None:
    async with ConcurrentExecutionBackend(cores=2) as backend:
        with pytest.raises(ResourceError) as caught:
            await backend.submit_tasks([mpi_task("big", 2, cores_per_rank=2)])
    assert "task 'big' has 2 ranks of 2 core(s) and 0 GPU(s): 4 core(s)" in str(caught.value)
    assert "this backend has 2 core(s)" in str(caught.value)


@pytest.mark.anyio
async def test_a_missing_launcher_is_rejected_at_submit() -> None:
    backend = ConcurrentExecutionBackend(cores=2, mpi_launcher=["no-such-mpirun", "-n", "{ranks}"])
    async with backend:
        with pytest.raises(TaskValidationError, match="'no-such-mpirun' is not on PATH"):
            await backend.submit_tasks([mpi_task("m", 2)])


@pytest.mark.parametrize(
    ("launcher", "message"),
    [
        ("mpirun -np {ranks}", "non-empty list of words"),
        ([], "non-empty list of words"),
        (["mpirun", "-np", "{nodes}"], "unknown placeholder {nodes}"),
    ],
)
def test_a_bad_launcher_is_rejected_when_the_backend_is_made(launcher: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConcurrentExecutionBackend(cores=1, mpi_launcher=launcher)
