"""The cluster script itself: a stop leaves no daemon, no job and no job process; a slurmd that
died is started again and its node serves job steps."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from slurm_support import CLUSTER_SH, NODES, Cluster

pytestmark = pytest.mark.slurm


def processes_under(conf: str) -> list[psutil.Process]:
    """Live processes that carry SLURM_CONF=conf: daemons, job steps, and the jobs' own."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("SLURM_CONF") == conf and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_stop_leaves_no_daemon_and_no_job(slurm_cluster: Cluster, tmp_path: Path) -> None:
    # A second cluster, in its own directory and on its own ports, so the session's one runs on.
    env = {**slurm_cluster.env, "RHAPSODY_SLURM_DIR": str(tmp_path / "c2"),
           "RHAPSODY_SLURM_PORT": "16917"}
    conf = str(tmp_path / "c2" / "slurm.conf")
    env["SLURM_CONF"] = conf
    subprocess.run(
        [str(CLUSTER_SH), "start"], env=env, check=True, capture_output=True, timeout=120
    )
    try:
        assert len([p for p in processes_under(conf) if p.name() == "slurmd"]) == len(NODES)
        submitted = subprocess.run(
            ["sbatch", "--parsable", "-N2", "--output=/dev/null", "--wrap", "sleep 300"],
            env=env, check=True, capture_output=True, text=True, timeout=60,
        )
        job = submitted.stdout.strip()
        deadline = time.monotonic() + 30
        while not any(p.name() == "sleep" for p in processes_under(conf)):
            assert time.monotonic() < deadline, f"job {job}'s sleep never started"
            time.sleep(0.1)
    finally:
        subprocess.run([str(CLUSTER_SH), "stop"], env=env, check=True, capture_output=True,
                       timeout=120)
    assert processes_under(conf) == []


def test_a_slurmd_that_died_is_started_again(slurm: Cluster) -> None:
    pid_file = Path(slurm.conf).parent / "slurmd-n3.pid"
    os.kill(int(pid_file.read_text()), 9)
    slurm.ensure_slurmds()
    out = slurm.run("salloc", "-N3", "srun", "--label", "printenv", "SLURMD_NODENAME").stdout
    assert sorted(line.split()[-1] for line in out.splitlines()) == list(NODES)
