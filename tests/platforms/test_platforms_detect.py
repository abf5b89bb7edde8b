"""detect() under the environment each batch system sets up."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from rhapsody.platforms import PlatformError, ResourceManager, detect
from rhapsody.resources import detect_cores


def test_local_without_a_batch_system(batch_env: pytest.MonkeyPatch) -> None:
    batch_env.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    found = detect()
    assert found.resource_manager is ResourceManager.LOCAL
    assert found.job_id is None
    assert found.nodes == (socket.gethostname(),)
    assert found.cores_per_node == detect_cores()
    assert (found.gpus_per_node, found.gpu_ids) == (2, ("0", "1"))
    assert found.total_cores == detect_cores()


# -- Slurm -----------------------------------------------------------------------------------


def test_slurm(batch_env: pytest.MonkeyPatch) -> None:
    batch_env.setenv("SLURM_JOB_ID", "4242")
    batch_env.setenv("SLURM_JOB_NODELIST", "nid[001-003,010]")
    batch_env.setenv("SLURM_CPUS_ON_NODE", "128")
    batch_env.setenv("SLURM_GPUS_ON_NODE", "4")
    batch_env.setenv("SLURM_JOB_GPUS", "0,1,2,3")
    found = detect()
    assert found.resource_manager is ResourceManager.SLURM
    assert found.job_id == "4242"
    assert found.nodes == ("nid001", "nid002", "nid003", "nid010")
    assert found.nodelist == "nid[001-003,010]"
    assert (found.cores_per_node, found.total_cores) == (128, 512)
    assert (found.gpus_per_node, found.gpu_ids, found.total_gpus) == (4, ("0", "1", "2", "3"), 16)


def test_slurm_old_variable_names(batch_env: pytest.MonkeyPatch) -> None:
    batch_env.setenv("SLURM_JOBID", "7")
    batch_env.setenv("SLURM_NODELIST", "c[1-2]")
    batch_env.setenv("SLURM_CPUS_ON_NODE", "8")
    found = detect()
    assert (found.job_id, found.nodes, found.gpus_per_node) == ("7", ("c1", "c2"), 0)


def test_slurm_cpus_per_node_list_takes_the_smallest(batch_env: pytest.MonkeyPatch) -> None:
    batch_env.setenv("SLURM_JOB_ID", "1")
    batch_env.setenv("SLURM_JOB_NODELIST", "n[1-3]")
    batch_env.setenv("SLURM_JOB_CPUS_PER_NODE", "72(x2),36")
    assert detect().cores_per_node == 36


def test_slurm_job_wide_cpus_beat_this_nodes_count(batch_env: pytest.MonkeyPatch) -> None:
    # What `sbatch -N2 -n3` sets in its batch script (measured on tests/slurm's cluster): the
    # script's node got 2 CPUs, the other 1. Two per node would claim 4 where 3 were granted.
    batch_env.setenv("SLURM_JOB_ID", "1")
    batch_env.setenv("SLURM_JOB_NODELIST", "n[1-2]")
    batch_env.setenv("SLURM_JOB_CPUS_PER_NODE", "2,1")
    batch_env.setenv("SLURM_CPUS_ON_NODE", "2")
    found = detect()
    assert (found.cores_per_node, found.total_cores) == (1, 2)
    assert found.local_cores == 2  # what `concurrent` schedules into on this node


@pytest.mark.parametrize(
    ("variables", "gpu_ids"),
    [
        # Devices confined by cgroups: Slurm renumbers them and says so in CUDA_VISIBLE_DEVICES.
        ({"SLURM_JOB_GPUS": "4,5", "CUDA_VISIBLE_DEVICES": "0,1"}, ("0", "1")),
        ({"SLURM_JOB_GPUS": "4,5"}, ("4", "5")),
        ({"SLURM_STEP_GPUS": "6", "SLURM_JOB_GPUS": "4,5"}, ("6",)),
        ({"SLURM_GPUS_ON_NODE": "2"}, ("0", "1")),
        ({"SLURM_GPUS_ON_NODE": "2", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, ("0", "1")),
    ],
)
def test_slurm_gpu_ids(
    batch_env: pytest.MonkeyPatch, variables: dict[str, str], gpu_ids: tuple[str, ...]
) -> None:
    batch_env.setenv("SLURM_JOB_ID", "1")
    batch_env.setenv("SLURM_JOB_NODELIST", "g1")
    batch_env.setenv("SLURM_CPUS_ON_NODE", "16")
    for name, value in variables.items():
        batch_env.setenv(name, value)
    found = detect()
    assert (found.gpus_per_node, found.gpu_ids) == (len(gpu_ids), gpu_ids)


@pytest.mark.parametrize(
    ("variables", "gpus"),
    [
        ({"SLURM_GPUS_PER_NODE": "2"}, 2),
        ({"SLURM_GPUS_PER_NODE": "a100:2"}, 2),
        ({"SLURM_GPUS_PER_NODE": "a100:1,v100:1"}, 2),
        ({"SLURM_GPUS": "3"}, 3),  # one node: the job's count is the node's
    ],
)
def test_slurm_gpus_asked_for_seen_from_salloc(
    batch_env: pytest.MonkeyPatch, variables: dict[str, str], gpus: int
) -> None:
    # salloc's shell runs off the nodes: only the request's variables say what was granted.
    batch_env.setenv("SLURM_JOB_ID", "1")
    batch_env.setenv("SLURM_JOB_NODELIST", "g1")
    batch_env.setenv("SLURM_JOB_CPUS_PER_NODE", "4")
    for name, value in variables.items():
        batch_env.setenv(name, value)
    assert detect().gpus_per_node == gpus


def test_slurm_job_gpus_over_several_nodes_say_nothing_per_node(
    batch_env: pytest.MonkeyPatch,
) -> None:
    batch_env.setenv("SLURM_JOB_ID", "1")
    batch_env.setenv("SLURM_JOB_NODELIST", "g[1-2]")
    batch_env.setenv("SLURM_GPUS", "3")
    assert detect().gpus_per_node == 0


def test_slurm_malformed_gpus_per_node_names_the_variable(batch_env: pytest.MonkeyPatch) -> None:
    batch_env.setenv("SLURM_JOB_ID", "1")
    batch_env.setenv("SLURM_GPUS_PER_NODE", "a100:two")
    with pytest.raises(PlatformError, match="SLURM_GPUS_PER_NODE must look like"):
        detect()


def test_slurm_malformed_nodelist_names_the_variable(batch_env: pytest.MonkeyPatch) -> None:
    batch_env.setenv("SLURM_JOB_ID", "1")
    batch_env.setenv("SLURM_JOB_NODELIST", "nid[001-")
    with pytest.raises(PlatformError) as caught:
        detect()
    assert str(caught.value) == (
        "SLURM_JOB_NODELIST: malformed hostlist 'nid[001-': unclosed bracket"
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SLURM_CPUS_ON_NODE", "lots", "SLURM_CPUS_ON_NODE must be a whole number, got 'lots'"),
        ("SLURM_GPUS_ON_NODE", "-1", "SLURM_GPUS_ON_NODE must be >= 0, got '-1'"),
        ("SLURM_JOB_CPUS_PER_NODE", "72(x", "SLURM_JOB_CPUS_PER_NODE must look like"),
    ],
)
def test_slurm_bad_numbers(
    batch_env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    batch_env.setenv("SLURM_JOB_ID", "1")
    batch_env.setenv("SLURM_JOB_NODELIST", "n1")
    batch_env.setenv(name, value)
    with pytest.raises(PlatformError, match=message.replace("(", r"\(")):
        detect()


# -- PBS -------------------------------------------------------------------------------------


def test_pbs_reads_the_node_file(batch_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nodefile = tmp_path / "nodefile"
    # PBS lists a host once per MPI rank slot; order of first appearance is kept.
    nodefile.write_text("x3001c0s1b0n0\nx3001c0s1b0n0\nx3001c0s7b1n0\n\nx3001c0s1b0n0\n")
    batch_env.setenv("PBS_JOBID", "123.polaris-pbs-01")
    batch_env.setenv("PBS_NODEFILE", str(nodefile))
    batch_env.setenv("NCPUS", "64")
    batch_env.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    found = detect()
    assert found.resource_manager is ResourceManager.PBS
    assert found.job_id == "123.polaris-pbs-01"
    assert found.nodes == ("x3001c0s1b0n0", "x3001c0s7b1n0")
    assert (found.cores_per_node, found.total_cores) == (64, 128)
    assert found.gpu_ids == ("0", "1", "2", "3")


def test_pbs_torque_cores(batch_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("n1\n")
    batch_env.setenv("PBS_JOBID", "9")
    batch_env.setenv("PBS_NODEFILE", str(nodefile))
    batch_env.setenv("PBS_NUM_PPN", "24")
    assert detect().cores_per_node == 24


def test_pbs_missing_node_file(batch_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    batch_env.setenv("PBS_JOBID", "9")
    batch_env.setenv("PBS_NODEFILE", str(missing))
    with pytest.raises(PlatformError, match=f"PBS_NODEFILE: cannot read '{missing}'"):
        detect()


def test_pbs_empty_node_file(batch_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    batch_env.setenv("PBS_JOBID", "9")
    batch_env.setenv("PBS_NODEFILE", str(empty))
    with pytest.raises(PlatformError, match="lists no hosts"):
        detect()


def test_pbs_bad_ncpus(batch_env: pytest.MonkeyPatch) -> None:
    batch_env.setenv("PBS_JOBID", "9")
    batch_env.setenv("NCPUS", "4.5")
    with pytest.raises(PlatformError, match=r"NCPUS must be a whole number, got '4\.5'"):
        detect()


# -- LSF -------------------------------------------------------------------------------------


def test_lsf_drops_the_coral_launch_node(batch_env: pytest.MonkeyPatch) -> None:
    batch_env.setenv("LSB_JOBID", "555")
    batch_env.setenv("LSB_MCPU_HOSTS", "batch3 1 a01n01 42 a01n02 42")
    batch_env.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5")
    found = detect()
    assert found.resource_manager is ResourceManager.LSF
    assert found.job_id == "555"
    assert found.nodes == ("a01n01", "a01n02")
    assert (found.cores_per_node, found.gpus_per_node) == (42, 6)


def test_lsf_plain_hosts(batch_env: pytest.MonkeyPatch) -> None:
    batch_env.setenv("LSB_JOBID", "1")
    batch_env.setenv("LSB_MCPU_HOSTS", "h1 40 h2 20")
    found = detect()
    assert (found.nodes, found.cores_per_node) == (("h1", "h2"), 20)


def test_lsf_host_file(batch_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("launch\n" + "c1\n" * 4 + "c2\n" * 4)
    batch_env.setenv("LSB_JOBID", "1")
    batch_env.setenv("LSB_DJOB_HOSTFILE", str(hostfile))
    found = detect()
    assert (found.nodes, found.cores_per_node) == (("c1", "c2"), 4)


def test_lsf_malformed_hosts(batch_env: pytest.MonkeyPatch) -> None:
    batch_env.setenv("LSB_JOBID", "1")
    batch_env.setenv("LSB_MCPU_HOSTS", "h1 40 h2")
    with pytest.raises(PlatformError, match="LSB_MCPU_HOSTS must list 'host slots' pairs"):
        detect()


# -- Flux ------------------------------------------------------------------------------------


def _fake_flux(directory: Path, script: str) -> None:
    flux = directory / "flux"
    flux.write_text(f"#!/bin/sh\n{script}\n")
    flux.chmod(0o755)


def test_flux_asks_the_instance_for_its_hosts(
    batch_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_flux(tmp_path, '[ "$1 $2" = "getattr hostlist" ] && echo "tioga[10-12]"')
    batch_env.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    batch_env.setenv("FLUX_URI", "local:///tmp/flux-abc/local-0")
    batch_env.setenv("FLUX_JOB_ID", "fABC123")
    batch_env.setenv("CUDA_VISIBLE_DEVICES", "0")
    found = detect()
    assert found.resource_manager is ResourceManager.FLUX
    assert found.job_id == "fABC123"
    assert found.nodes == ("tioga10", "tioga11", "tioga12")
    assert found.cores_per_node == detect_cores()
    assert found.gpu_ids == ("0",)


def test_flux_wins_over_the_enclosing_slurm_job(
    batch_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_flux(tmp_path, "echo node1")
    batch_env.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    batch_env.setenv("SLURM_JOB_ID", "77")
    batch_env.setenv("SLURM_JOB_NODELIST", "node[1-4]")
    batch_env.setenv("FLUX_URI", "local:///tmp/flux")
    found = detect()
    assert (found.resource_manager, found.nodes) == (ResourceManager.FLUX, ("node1",))


def test_flux_command_missing(batch_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    batch_env.setenv("PATH", str(tmp_path))
    batch_env.setenv("FLUX_URI", "local:///tmp/flux")
    with pytest.raises(PlatformError, match=r"FLUX_URI is set .* flux command is not on PATH"):
        detect()


def test_flux_command_fails(batch_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_flux(tmp_path, "echo 'cannot connect' >&2; exit 1")
    batch_env.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    batch_env.setenv("FLUX_URI", "local:///tmp/flux")
    with pytest.raises(PlatformError, match="exited with 1: cannot connect"):
        detect()
