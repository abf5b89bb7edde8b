"""A real SLURM cluster (3 virtual nodes on this machine, started by `cluster.sh`) for the tests
in this directory. It starts once per session, or is reused where one is up already, and is
stopped at the end if this session started it. Where it cannot run (not root, no slurm-wlm and no
apt-get, a start that fails) the tests skip and say why."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from slurm_support import CLUSTER_SH, Cluster


def _cannot_run() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the SLURM test cluster runs on Linux only"
    if os.geteuid() != 0:
        return "the SLURM test cluster needs root (slurmd runs jobs as their users)"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "slurm-wlm is not installed and there is no apt-get to install it"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Cluster]:
    why = _cannot_run()
    if why:
        pytest.skip(why)
    status = subprocess.run([str(CLUSTER_SH), "status"], capture_output=True, timeout=60)
    was_up = status.returncode == 0
    try:
        started = subprocess.run(
            [str(CLUSTER_SH), "start"], capture_output=True, text=True, timeout=900
        )
    except subprocess.TimeoutExpired:
        subprocess.run([str(CLUSTER_SH), "stop"], capture_output=True, timeout=120)
        pytest.skip("the SLURM test cluster did not start within 15 minutes")
    if started.returncode != 0:
        subprocess.run([str(CLUSTER_SH), "stop"], capture_output=True, timeout=120)
        pytest.skip(f"the SLURM test cluster did not start: {started.stderr.strip()[-2000:]}")
    match = re.search(r"export SLURM_CONF=(\S+)", started.stdout)
    assert match, started.stdout
    cluster = Cluster(match.group(1))
    try:
        yield cluster
    finally:
        if not was_up:
            subprocess.run([str(CLUSTER_SH), "stop"], capture_output=True, timeout=120)


@pytest.fixture
def slurm(slurm_cluster: Cluster) -> Iterator[Cluster]:
    """The cluster for one test: slurmds that crashed earlier are started again first (the notes
    saw one crash under concurrent step launches); a job the test leaves behind fails it."""
    slurm_cluster.ensure_slurmds()
    yield slurm_cluster
    # A finished allocation may show as COMPLETING for a moment.
    deadline = time.monotonic() + 30
    while (left := slurm_cluster.jobs()) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        subprocess.run(["scancel", *left], env=slurm_cluster.env, timeout=30)
        pytest.fail(f"the test left SLURM jobs behind: {left}")
