"""`rhapsody.platforms.detect()` inside real SLURM allocations, compared with what
`scontrol show job -d` says the job was granted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from slurm_support import CPUS_PER_NODE, GPUS_PER_NODE, NODES, SCRIPTS, Cluster, parse_scontrol_job

from rhapsody import hostlist

pytestmark = pytest.mark.slurm

REPORT = "python3 allocation.py && scontrol show job -d $SLURM_JOB_ID"


def detected_and_granted(cluster: Cluster, output: str) -> tuple[dict[str, Any], dict[str, Any]]:
    first, _, rest = output.partition("\n")
    return json.loads(first), parse_scontrol_job(cluster, rest)


def check(found: dict[str, Any], job: dict[str, Any]) -> None:
    nodes = job["cpus_by_node"]
    assert found["resource_manager"] == "slurm"
    assert found["job_id"] == job["JobId"]
    assert tuple(found["nodes"]) == tuple(hostlist.expand(job["NodeList"]))
    assert set(found["nodes"]) == set(nodes)
    # The smallest grant of any node, so a per-node plan fits every node and never adds up to
    # more than the job holds.
    assert found["cores_per_node"] == min(nodes.values())
    assert found["total_cores"] <= int(job["NumCPUs"])
    assert found["gpus_per_node"] == min(job["gpus_by_node"].values())
    assert len(found["gpu_ids"]) == found["gpus_per_node"]


@pytest.mark.parametrize(
    ("options", "cores", "gpus"),
    [
        (["-N3"], 1, 0),  # one CPU per node where no task count is asked for
        (["-N2", "-n3"], 1, 0),  # 2 CPUs on one node, 1 on the other
        (["-N1", "-n2", "--gpus-per-node=1"], 2, 1),
        (["-N3", "--gpus-per-node=2"], 1, 2),
        (["-N1", "--gpus=1"], 1, 1),
    ],
)
def test_salloc(slurm: Cluster, options: list[str], cores: int, gpus: int) -> None:
    out = slurm.run("salloc", *options, "sh", "-c", REPORT, cwd=SCRIPTS).stdout
    found, job = detected_and_granted(slurm, out)
    check(found, job)
    assert (found["cores_per_node"], found["gpus_per_node"]) == (cores, gpus)


def test_salloc_exclusive_gets_whole_nodes(slurm: Cluster) -> None:
    out = slurm.run("salloc", "-N3", "--exclusive", "sh", "-c", REPORT, cwd=SCRIPTS).stdout
    found, job = detected_and_granted(slurm, out)
    assert found["cores_per_node"] == min(job["cpus_by_node"].values()) == CPUS_PER_NODE
    # GPUs that --exclusive grants without asking are not in salloc's environment (it runs
    # off the nodes): none is claimed. A batch script sees them (next test).
    assert job["gpus_by_node"] == dict.fromkeys(NODES, GPUS_PER_NODE)
    assert found["gpus_per_node"] == 0


def test_sbatch_exclusive_sees_every_gpu(slurm: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "detect.out"
    script = "--wrap=" + REPORT
    slurm.run("sbatch", "--wait", "-N2", "--exclusive", f"--output={out}", script, cwd=SCRIPTS)
    found, job = detected_and_granted(slurm, out.read_text())
    check(found, job)
    assert (found["cores_per_node"], found["gpus_per_node"]) == (CPUS_PER_NODE, GPUS_PER_NODE)


def test_sbatch_uneven_grant_is_not_overcounted(slurm: Cluster, tmp_path: Path) -> None:
    # The batch script runs on the node that got 2 of the 3 CPUs (SLURM_CPUS_ON_NODE=2); the
    # allocation is 2 + 1, so 1 per node, 2 in all (not 2 per node, 4 in all).
    out = tmp_path / "detect.out"
    slurm.run("sbatch", "--wait", f"--output={out}", "detect.sbatch", cwd=SCRIPTS)
    found, job = detected_and_granted(slurm, out.read_text())
    check(found, job)
    assert sorted(job["cpus_by_node"].values()) == [1, 2]
    assert (found["cores_per_node"], found["total_cores"]) == (1, 2)
    assert found["local_cores"] == job["cpus_by_node"][job["BatchHost"]] == 2
    assert (found["gpus_per_node"], tuple(found["gpu_ids"])) == (2, ("0", "1"))
