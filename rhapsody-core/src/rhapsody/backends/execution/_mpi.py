"""MPI tasks (`ranks > 1`) on `concurrent`: the task's command run under the node's MPI launcher.

The launcher is a list of words with placeholders `{ranks}`, `{cores_per_rank}` and
`{gpus_per_rank}` replaced by the task's values; the task's own command line follows it,
verbatim (never interpolated). Inside a SLURM allocation Open MPI's `mpirun` spreads the ranks
over the allocation's nodes itself (also in a job submitted with `--export=NONE`: see
`under_launcher`).
"""

from __future__ import annotations

import os
import shutil
import string
from collections.abc import Sequence

import attrs

from rhapsody.backends import launch
from rhapsody.errors import ResourceError, TaskValidationError
from rhapsody.resources import ResourcePool
from rhapsody.task import TaskDescription

DEFAULT_LAUNCHER = ("mpirun", "-np", "{ranks}")
PLACEHOLDERS = ("ranks", "cores_per_rank", "gpus_per_rank")


def check_launcher(launcher: Sequence[str]) -> tuple[str, ...]:
    """The launcher as a tuple; a clear error for one that could never start a task."""
    if isinstance(launcher, str) or not launcher:
        raise ValueError(
            f"mpi_launcher must be a non-empty list of words, e.g. {list(DEFAULT_LAUNCHER)}; "
            f"got {launcher!r}"
        )
    for word in launcher:
        if not isinstance(word, str):
            raise ValueError(f"mpi_launcher words must be strings, got {word!r}")
        for _, name, _, _ in string.Formatter().parse(word):
            if name is not None and name not in PLACEHOLDERS:
                raise ValueError(
                    f"mpi_launcher word {word!r}: unknown placeholder {{{name}}}; known: "
                    + ", ".join(f"{{{known}}}" for known in PLACEHOLDERS)
                )
    return tuple(launcher)


def check_task(task: TaskDescription, launcher: tuple[str, ...], pool: ResourcePool) -> None:
    """Reject at submit an MPI task larger than the backend, or whose launcher is not
    installed here."""
    if task.cores > pool.total_cores or task.gpus > pool.total_gpus:
        raise ResourceError(
            f"task {task.uid!r} has {task.ranks} ranks of {task.cores_per_rank} core(s) and "
            f"{task.gpus_per_rank} GPU(s): {task.cores} core(s) and {task.gpus} GPU(s) in all, "
            f"but this backend has {pool.total_cores} core(s) and {pool.total_gpus} GPU(s) "
            "(inside a multi-node allocation, give it the allocation's: "
            "cores=rhapsody.platforms.detect().total_cores)"
        )
    if shutil.which(launcher[0]) is None:
        raise TaskValidationError(
            f"the task has {task.ranks} ranks, but the MPI launcher {launcher[0]!r} is not on "
            "PATH: install an MPI (e.g. Debian's openmpi-bin) or pass mpi_launcher=[...]",
            uid=task.uid,
            field="ranks",
        )


def under_launcher(task: TaskDescription, launcher: tuple[str, ...]) -> TaskDescription:
    """`task` as the launcher's command: its words, then the task's own argv."""
    values = {name: getattr(task, name) for name in PLACEHOLDERS}
    words = [word.format(**values) for word in launcher]
    environment = task.environment
    exported = os.environ.get("SLURM_EXPORT_ENV")
    if exported and not exported.upper().startswith("ALL") and not (
        environment and "SLURM_EXPORT_ENV" in environment
    ):
        # A job submitted with --export=NONE (as psij does) passes that on to the srun steps
        # a launcher starts its daemons with: they would get no PATH (Open MPI's orted is then
        # "not found"). The task's own processes need the task's environment.
        environment = {**(environment or {}), "SLURM_EXPORT_ENV": "ALL"}
    return attrs.evolve(
        task,
        executable=words[0],
        arguments=(*words[1:], *launch.command_line(task)),
        shell=False,
        environment=environment,
    )
