"""The RADICAL-Pilot resource configuration of a SLURM platform, written from a
`PlatformDescription` (no hand-written JSON). No RADICAL-Pilot import.

Two ways to run a pilot on SLURM:

- `submitted(platform, ...)`: the client runs on a login node and the pilot is a job it submits
  through sbatch (RADICAL-Pilot's psij backend, `slurm://localhost/`). The agent starts on the
  job's first node with only the `RADICAL_*` variables of the client (psij submits with
  `--export=NONE`), so the platform's `env_setup` runs before the agent (`pre_bootstrap_0`)
  and before each task's launcher (`pre_exec_cached`).
- `in_allocation(allocation, ...)`: the client already runs inside a SLURM job (a batch script
  running `rhapsody run --platform auto`); the agent is forked right here (`fork://localhost/`,
  RADICAL-Pilot's "interactive" schema), inherits the job's environment and uses its nodes. No
  second job is submitted.

Either way the agent reads the nodes from SLURM's variables, starts tasks with the platform's
launch method on those nodes, and uses the client's virtual environment (a shared file system).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rhapsody.platforms import (
    DetectedAllocation,
    LaunchMethod,
    PlatformDescription,
    PlatformError,
    ResourceManager,
)

#: the RADICAL-Pilot site of every configuration written here (`rhapsody.<name>`)
SITE = "rhapsody"
#: the resource name of a pilot in the allocation this process runs in
ALLOCATION = "allocation"

# RADICAL-Pilot's names of the launch methods that start tasks on a SLURM allocation's nodes.
# FORK starts them on this host only (it never applies to SLURM's node names); jsrun and flux
# belong to other batch systems.
_LAUNCH_METHODS = {
    LaunchMethod.SRUN: "SRUN",
    LaunchMethod.MPIRUN: "MPIRUN",
    LaunchMethod.MPIEXEC: "MPIEXEC",
    LaunchMethod.IBRUN: "IBRUN",
}
# The agent places tasks on cores itself; SLURM must not place them again. A job step asks for
# all of the job's memory on its nodes by default (RADICAL-Pilot's srun passes `--mem 0`), so
# without this a second step on a node waits until the first ends ("step creation temporarily
# disabled"): one task per node at a time, and a raptor master that never starts beside its
# worker. `--overlap` lets the steps share the node.
_OVERLAP = "export SLURM_OVERLAP=1"
_NAME = re.compile(r"[^A-Za-z0-9_]+")
# The agent's temporary files go to its sandbox: else a pilot leaves an empty
# /tmp/rp.session.<sid> on the node.
_TMPDIR = "export TMPDIR=$RP_PILOT_SANDBOX"


def label(platform: PlatformDescription) -> str:
    """The resource label of `submitted(platform)`: `rhapsody.<platform name>`."""
    name = _NAME.sub("_", platform.name).strip("_") or "slurm"
    return f"{SITE}.{name}"


def launch_method_name(method: LaunchMethod | str) -> str:
    """RADICAL-Pilot's name of a launch method that runs tasks on SLURM nodes."""
    parsed = LaunchMethod.parse(method, "launch_method")
    name = _LAUNCH_METHODS.get(parsed)
    if name is None:
        known = ", ".join(m.value for m in _LAUNCH_METHODS)
        raise PlatformError(
            f"launch_method {parsed.value!r} cannot start tasks on a SLURM allocation's nodes "
            f"with RADICAL-Pilot; use one of {known}"
        )
    return name


def submitted(
    platform: PlatformDescription,
    *,
    launch_method: LaunchMethod | str | None = None,
) -> dict[str, Any]:
    """The configuration of a pilot that the client submits as a SLURM job from this host.

    :param platform: a SLURM platform: its partition is the default queue, its node figures are
        what the pilot asks for and schedules into, its `env_setup` lines run before the agent
        starts (and so hold for its tasks), its `work_dir` holds the sandboxes.
    :param launch_method: overrides the platform's.
    """
    if platform.resource_manager is not ResourceManager.SLURM:
        raise platform._error(
            "a RADICAL-Pilot resource configuration is written for SLURM platforms only, not "
            f"{platform.resource_manager.value!r}; give the platform a radical_resource label"
        )
    if platform.batch_directives:
        # psij passes only the queue, account, wall time and node counts: a directive dropped
        # here would silently change the job.
        raise platform._error(
            "batch_directives cannot be passed to a pilot job "
            f"({', '.join(platform.batch_directives)}): use a RADICAL-Pilot resource label "
            "(radical_resource) whose configuration sets them"
        )
    config = _common(
        launch_method or platform.launch_method,
        env_setup=platform.env_setup,
        cores_per_node=platform.cores_per_node,
        gpus_per_node=platform.gpus_per_node,
    )
    config.update(
        description=f"SLURM platform {platform.name or '(unnamed)'!r}, written by rhapsody_radical",
        schemas={
            "local": {
                "job_manager_endpoint": "slurm://localhost/",
                "filesystem_endpoint": "file://localhost/",
            }
        },
        default_remote_workdir=platform.work_dir,
        mem_per_node=(platform.mem_per_node or 0) * 1024,  # GB -> MB
    )
    if platform.partition:
        config["default_queue"] = platform.partition
    return config


def in_allocation(
    allocation: DetectedAllocation,
    *,
    launch_method: LaunchMethod | str | None = None,
) -> dict[str, Any]:
    """The configuration of a pilot on the SLURM allocation this process runs in: the agent is
    started here and schedules into the nodes, cores and GPUs the job was granted."""
    if allocation.resource_manager is not ResourceManager.SLURM:
        raise PlatformError(
            "radical_pilot runs a pilot in the current allocation under SLURM only, not "
            f"{allocation.resource_manager.value!r}"
        )
    config = _common(
        launch_method or LaunchMethod.SRUN,
        env_setup=(),
        cores_per_node=allocation.cores_per_node,
        gpus_per_node=allocation.gpus_per_node,
    )
    config.update(
        description=f"SLURM job {allocation.job_id}, written by rhapsody_radical",
        schemas={
            "local": {
                "job_manager_endpoint": "fork://localhost/",
                "filesystem_endpoint": "file://localhost/",
            }
        },
        default_remote_workdir="$HOME",  # as local.localhost: sandboxes in ~/radical.pilot.sandbox
        mem_per_node=0,
    )
    return config


def _common(
    launch_method: LaunchMethod | str,
    *,
    env_setup: Sequence[str],
    cores_per_node: int,
    gpus_per_node: int,
) -> dict[str, Any]:
    method = launch_method_name(launch_method)
    return {
        "default_schema": "local",
        "resource_manager": "SLURM",
        "agent_config": "default",
        "agent_scheduler": "CONTINUOUS",
        "agent_spawner": "POPEN",
        # One method only: RADICAL-Pilot gives a task to the first one that accepts it, and
        # srun, mpirun and mpiexec all accept every task. The environment lines hold for the
        # agent (pre_bootstrap_0) and for the launcher that starts each task: that one starts
        # from the environment the job was given, not from the agent's.
        "launch_methods": {"order": [method], method: {"pre_exec_cached": [_OVERLAP, *env_setup]}},
        "pre_bootstrap_0": [_TMPDIR, *env_setup],
        # the client's own virtual environment and RADICAL-Pilot, on the shared file system
        "rp_version": "installed",
        "virtenv_mode": "local",
        "python_dist": "default",
        "cores_per_node": cores_per_node,
        "gpus_per_node": gpus_per_node,
        "lfs_path_per_node": "/tmp",
        "lfs_size_per_node": 0,
    }
