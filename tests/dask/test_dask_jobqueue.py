"""dask-jobqueue clusters built from catalog platforms: their batch scripts, without a batch
system (a job script is generated locally; no job is submitted)."""

from __future__ import annotations

import pytest

pytest.importorskip("distributed", reason="the dask backend needs dask.distributed")
pytest.importorskip("dask_jobqueue", reason="needs rhapsody-dask[jobqueue]")
pytest.importorskip("rhapsody_platforms", reason="needs the rhapsody-platforms catalog")

from rhapsody.platforms import PlatformDescription, ResourceManager, get_platform
from rhapsody_dask.jobqueue import cluster_for, cluster_kwargs

# The scheduler a jobqueue cluster starts here stays on loopback during the tests.
LOOPBACK = {"scheduler_options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}}


def job_script(platform: PlatformDescription, **overrides: object) -> str:
    with cluster_for(platform, **LOOPBACK, **overrides) as cluster:
        return str(cluster.job_script())


def test_slurm_job_script_carries_the_platforms_settings() -> None:
    frontera = get_platform("frontera")
    script = job_script(frontera, account="ABC123", walltime="01:00:00")
    lines = script.splitlines()
    assert f"#SBATCH -p {frontera.partition}" in lines
    assert f"#SBATCH --cpus-per-task={frontera.cores_per_node}" in lines
    assert "#SBATCH -A ABC123" in lines and "#SBATCH -t 01:00:00" in lines
    for setup in frontera.env_setup:
        assert setup in lines
    # One single-threaded worker per core, each declaring the core it stands for.
    assert f"--nworkers {frontera.cores_per_node}" in script
    assert "--resources cores=1" in script


def test_gpu_platform_workers_declare_their_gpus() -> None:
    perlmutter = get_platform("perlmutter_gpu")
    script = job_script(perlmutter, processes=perlmutter.gpus_per_node)
    threads = perlmutter.cores_per_node // perlmutter.gpus_per_node
    assert f"--resources cores={threads},gpus=1" in script
    for directive in perlmutter.batch_directives:
        assert f"#SBATCH {directive}" in script.splitlines()


def test_pbs_platform_gets_a_pbs_cluster() -> None:
    polaris = get_platform("polaris")
    assert polaris.resource_manager is ResourceManager.PBS
    script = job_script(polaris)
    assert f"#PBS -q {polaris.partition}" in script.splitlines()
    for setup in polaris.env_setup:
        assert setup in script.splitlines()


def test_kwargs_keep_the_users_worker_arguments() -> None:
    frontera = get_platform("frontera")
    kwargs = cluster_kwargs(frontera, worker_extra_args=["--lifetime", "1h"])
    assert kwargs["worker_extra_args"] == ["--lifetime", "1h", "--resources", "cores=1"]
    assert kwargs["queue"] == frontera.partition


def test_workers_declare_free_form_resources_besides_their_cores() -> None:
    frontera = get_platform("frontera")
    script = job_script(frontera, worker_resources={"MEMORY": 64e9, "licence": 1.5})
    assert "--resources cores=1,MEMORY=64000000000,licence=1.5" in script
    with pytest.raises(ValueError, match="worker_resources: 'cores' is the dask backend's own"):
        cluster_kwargs(frontera, worker_resources={"cores": 4})
