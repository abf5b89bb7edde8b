"""A real SLURM cluster (3 virtual nodes on this machine, started by `cluster.sh`) for the tests
in this directory. It starts once per session, or is reused where one is up already, and is
stopped by the last session using it if a test session started it. Where it cannot run (not
root, no slurm-wlm and no apt-get, a start that fails) the tests skip and say why."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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


@contextlib.contextmanager
def _users_locked(directory: Path) -> Iterator[Path]:
    """The directory of the test sessions using the cluster (a file per session's pid), held
    exclusively: sessions running at once (two people's test runs) share one cluster, and only
    the last one to leave stops it."""
    users = directory / "test-sessions"
    users.mkdir(parents=True, exist_ok=True)
    with open(directory / "test-sessions.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield users


def _live(users: Path) -> list[Path]:
    live = []
    for entry in users.iterdir():
        try:
            os.kill(int(entry.name), 0)
        except (ValueError, ProcessLookupError):
            entry.unlink(missing_ok=True)  # a session that died without cleaning up
            continue
        except PermissionError:
            pass
        live.append(entry)
    return live


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Cluster]:
    why = _cannot_run()
    if why:
        pytest.skip(why)
    directory = Path(os.environ.get("RHAPSODY_SLURM_DIR", "/tmp/rhapsody-slurm"))
    with _users_locked(directory) as users:
        cluster = _start(directory, users)
        (users / str(os.getpid())).touch()
    try:
        yield cluster
    finally:
        with _users_locked(directory) as users:
            (users / str(os.getpid())).unlink(missing_ok=True)
            # Stopped when no other session uses it and it was started for tests (one started
            # by hand is left as it was).
            owned = directory / "started-for-tests"
            if not _live(users) and owned.exists():
                subprocess.run([str(CLUSTER_SH), "stop"], capture_output=True, timeout=120)
                owned.unlink(missing_ok=True)


def _start(directory: Path, users: Path) -> Cluster:
    status = subprocess.run([str(CLUSTER_SH), "status"], capture_output=True, timeout=60)
    if status.returncode != 0:
        (directory / "started-for-tests").touch()
    try:
        started = subprocess.run(
            [str(CLUSTER_SH), "start"], capture_output=True, text=True, timeout=900
        )
    except subprocess.TimeoutExpired:
        _stop_unless_used(users)
        pytest.skip("the SLURM test cluster did not start within 15 minutes")
    if started.returncode != 0:
        _stop_unless_used(users)
        pytest.skip(f"the SLURM test cluster did not start: {started.stderr.strip()[-2000:]}")
    match = re.search(r"export SLURM_CONF=(\S+)", started.stdout)
    assert match, started.stdout
    return Cluster(match.group(1))


def _stop_unless_used(users: Path) -> None:
    if not _live(users):
        subprocess.run([str(CLUSTER_SH), "stop"], capture_output=True, timeout=120)


@pytest.fixture
def slurm(slurm_cluster: Cluster) -> Iterator[Cluster]:
    """The cluster for one test: slurmds that crashed earlier are started again first (the notes
    saw one crash under concurrent step launches); a job the test leaves behind fails it."""
    slurm_cluster.ensure_slurmds()
    before = set(slurm_cluster.jobs())  # another session's, if one shares the cluster
    yield slurm_cluster
    # A finished allocation may show as COMPLETING for a moment.
    deadline = time.monotonic() + 30
    while (left := sorted(set(slurm_cluster.jobs()) - before)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        subprocess.run(["scancel", *left], env=slurm_cluster.env, timeout=30)
        pytest.fail(f"the test left SLURM jobs behind: {left}")
