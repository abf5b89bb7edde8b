"""MPI tasks across the cluster's 3 nodes: `concurrent` inside a SLURM allocation runs a task of
several ranks under Open MPI's mpirun, which places them on the allocation's nodes; the mpi4py
program checks its COMM_WORLD and reports the node of each rank."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from slurm_support import NODES, SCRIPTS, Cluster

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI (openmpi-bin)"),
]
pytest.importorskip("mpi4py", reason="needs mpi4py (requirements-dev.txt)")

MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl": "self,tcp",
    "OMPI_MCA_btl_tcp_if_include": "lo",
    "OMPI_MCA_oob_tcp_if_include": "lo",
}


def test_a_task_of_three_ranks_spans_the_three_nodes(slurm: Cluster) -> None:
    out = slurm.run(
        "salloc", "-N3", "python3", "mpi_across_nodes.py", cwd=SCRIPTS, env={**slurm.env, **MPI_ENV}
    ).stdout
    report = json.loads(out)
    assert report == {"size": 3, "nodes": list(NODES)}


def test_the_batch_script_runs_two_ranks_per_node(slurm: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "mpi.out"
    slurm.run("sbatch", "--wait", f"--output={out}", "mpi.sbatch", cwd=SCRIPTS)
    report = json.loads(out.read_text())
    assert report["size"] == 6
    assert sorted(report["nodes"]) == sorted(NODES * 2)


def test_a_job_submitted_with_export_none_still_launches_its_ranks(
    slurm: Cluster, tmp_path: Path
) -> None:
    # What psij (RADICAL-Pilot's submitter) does: the job gets no environment, and neither would
    # the srun steps mpirun starts its daemons with, unless the backend says otherwise.
    script = tmp_path / "export_none.sbatch"
    exports = " ".join(f"{name}={value}" for name, value in MPI_ENV.items())
    script.write_text(
        f"#!/bin/bash\n#SBATCH --nodes=3\nexport {exports}\n"
        f"test \"$SLURM_EXPORT_ENV\" = NONE || exit 3\n"
        f"{sys.executable} mpi_across_nodes.py\n"
    )
    out = tmp_path / "export_none.out"
    slurm.run("sbatch", "--wait", "--export=NONE", f"--output={out}", str(script), cwd=SCRIPTS)
    assert json.loads(out.read_text()) == {"size": 3, "nodes": list(NODES)}
