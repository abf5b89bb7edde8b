"""PlatformDescription: construction, defaults, validation, and what launchers get from it."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from rhapsody.errors import RhapsodyError
from rhapsody.platforms import (
    LaunchMethod,
    PlatformDescription,
    PlatformError,
    ResourceManager,
)


def test_constructible_like_the_original() -> None:
    # The original RHAPSODY built its descriptions from a dict of keyword arguments.
    original: dict[str, Any] = {
        "resource_manager": ResourceManager.SLURM,
        "partition": "normal",
        "env_setup": ["module unload intel impi", "module load intel impi"],
        "work_dir": "$SCRATCH",
        "cores_per_node": 56,
        "fqdn": "frontera.tacc.utexas.edu",
        "docs_url": "https://frontera-portal.tacc.utexas.edu/user-guide",
    }
    platform = PlatformDescription(**original)
    assert platform.cores_per_node == 56
    assert platform.env_setup == ("module unload intel impi", "module load intel impi")
    assert platform.gpus_per_node == 0
    assert (platform.hwthreads_per_core, platform.cpus_per_node) == (1, 56)
    assert platform.launch_method is LaunchMethod.SRUN
    assert platform.resource_manager == "slurm"  # a str enum, as the original's constants were


def test_defaults() -> None:
    platform = PlatformDescription(resource_manager="local")
    assert platform == PlatformDescription(
        resource_manager=ResourceManager.LOCAL,
        name="",
        description="",
        cores_per_node=1,
        hwthreads_per_core=1,
        gpus_per_node=0,
        launch_method=LaunchMethod.FORK,
        work_dir="$HOME",
    )
    assert (platform.mem_per_node, platform.partition, platform.radical_resource) == (None,) * 3


@pytest.mark.parametrize("spelling", ["pbs", "PBS", " Pbs ", ResourceManager.PBS])
def test_resource_manager_spellings(spelling: Any) -> None:
    assert PlatformDescription(resource_manager=spelling).resource_manager is ResourceManager.PBS


@pytest.mark.parametrize(
    ("manager", "launch"),
    [
        ("slurm", LaunchMethod.SRUN),
        ("pbs", LaunchMethod.MPIEXEC),
        ("lsf", LaunchMethod.JSRUN),
        ("flux", LaunchMethod.FLUX),
        ("local", LaunchMethod.FORK),
    ],
)
def test_default_launch_method_follows_the_manager(manager: str, launch: LaunchMethod) -> None:
    assert PlatformDescription(resource_manager=manager).launch_method is launch


def test_aliases_and_derived_figures() -> None:
    platform = PlatformDescription(
        resource_manager="pbs",
        partition="prod",
        account="ABC",
        cores_per_node=32,
        hwthreads_per_core=2,
        launch_method="MPIEXEC",
    )
    assert (platform.queue, platform.project, platform.cpus_per_node) == ("prod", "ABC", 64)
    assert platform.launch_method is LaunchMethod.MPIEXEC


def test_text_is_split_into_lines() -> None:
    platform = PlatformDescription(
        resource_manager="slurm", env_setup="module purge\nmodule load python"
    )
    assert platform.env_setup == ("module purge", "module load python")


def test_frozen_and_hashable() -> None:
    platform = PlatformDescription(resource_manager="slurm", name="x")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        platform.cores_per_node = 2  # type: ignore[misc]
    assert hash(platform) == hash(attrs.evolve(platform))
    assert attrs.evolve(platform, account="A").account == "A"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cores_per_node": 0}, "platform 'x': cores_per_node must be >= 1, got 0"),
        ({"cores_per_node": -4}, "platform 'x': cores_per_node must be >= 1, got -4"),
        ({"cores_per_node": "56"}, "platform 'x': cores_per_node must be a whole number, got '56'"),
        ({"cores_per_node": True}, "platform 'x': cores_per_node must be a whole number, got True"),
        ({"cores_per_node": 1.5}, "platform 'x': cores_per_node must be a whole number, got 1.5"),
        ({"gpus_per_node": -1}, "platform 'x': gpus_per_node must be >= 0, got -1"),
        ({"hwthreads_per_core": 0}, "platform 'x': hwthreads_per_core must be >= 1, got 0"),
        ({"mem_per_node": 0}, "platform 'x': mem_per_node must be >= 1, got 0"),
        ({"partition": 5}, "platform 'x': partition must be a string, got 5"),
        ({"env_setup": ["ok", 3]}, "platform 'x': env_setup must hold strings, got 3"),
        ({"batch_directives": 7}, "platform 'x': batch_directives must hold strings, got 7"),
        ({"gpu_type": "A100"}, "platform 'x': gpu_type is 'A100' but gpus_per_node is 0"),
        (
            {"resource_manager": "sge"},
            "resource_manager must be one of slurm, pbs, lsf, flux, local; got 'sge'",
        ),
        ({"resource_manager": 3}, "resource_manager must be one of slurm, pbs, lsf, flux, local"),
        (
            {"launch_method": "aprun"},
            "launch_method must be one of srun, ibrun, mpiexec, mpirun, jsrun, flux, fork; "
            "got 'aprun'",
        ),
    ],
)
def test_bad_values_name_the_field_and_the_value(fields: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"name": "x", "resource_manager": "slurm", **fields}
    with pytest.raises(PlatformError) as caught:
        PlatformDescription(**arguments)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, RhapsodyError)


def test_unnamed_platform_errors_still_read_well() -> None:
    with pytest.raises(PlatformError, match=r"^platform \(unnamed\): cores_per_node must be >= 1"):
        PlatformDescription(resource_manager="slurm", cores_per_node=0)


# -- dask_jobqueue ---------------------------------------------------------------------------


def test_dask_jobqueue_kwargs() -> None:
    platform = PlatformDescription(
        name="cluster",
        resource_manager="slurm",
        partition="normal",
        account="ABC123",
        cores_per_node=56,
        mem_per_node=192,
        batch_directives=["--constraint=gpu"],
        env_setup=["module load python3"],
    )
    assert platform.jobqueue_cluster_class_name() == "SLURMCluster"
    assert platform.dask_jobqueue_kwargs() == {
        "queue": "normal",
        "cores": 56,
        "processes": 56,
        "memory": "192GB",
        "job_script_prologue": ["module load python3"],
        "account": "ABC123",
        "job_extra_directives": ["--constraint=gpu"],
    }


def test_dask_jobqueue_kwargs_leave_out_what_is_unknown() -> None:
    kwargs = PlatformDescription(resource_manager="lsf", cores_per_node=4).dask_jobqueue_kwargs()
    assert kwargs == {
        "queue": None,
        "cores": 4,
        "processes": 4,
        "memory": None,
        "job_script_prologue": [],
    }


@pytest.mark.parametrize(
    ("manager", "cluster"),
    [("slurm", "SLURMCluster"), ("pbs", "PBSCluster"), ("lsf", "LSFCluster")],
)
def test_cluster_class_names(manager: str, cluster: str) -> None:
    assert PlatformDescription(resource_manager=manager).jobqueue_cluster_class_name() == cluster


@pytest.mark.parametrize("manager", ["flux", "local"])
def test_no_dask_jobqueue_class_for_flux_or_local(manager: str) -> None:
    platform = PlatformDescription(resource_manager=manager, name="p")
    message = f"platform 'p': dask_jobqueue has no cluster class for resource manager '{manager}'"
    with pytest.raises(PlatformError, match=message):
        platform.dask_jobqueue_kwargs()
