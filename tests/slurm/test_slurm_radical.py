"""radical_pilot on the SLURM cluster (issue 17, capabilities 4 and 6): a pilot described by a
`PlatformDescription` alone (the backend writes RADICAL-Pilot's resource configuration), submitted
through sbatch, runs executables, MPI tasks and function tasks on the 3 nodes; a batch script
running `rhapsody run --platform auto` gets a pilot in its own job; nothing listens beyond
loopback; a node lost mid-run fails the pilot's tasks with the reason.

These tests run in the host's network: slurmd starts the agent, so a network namespace made for
the test would not hold it, and SLURM cannot even run in a loopback-only namespace (getaddrinfo
finds no address for 127.0.0.1 there). The backend's loopback confinement is what keeps the
pilot's ports on 127.0.0.1, and each pilot test checks every socket its processes listen on.
CI runs them in a call of their own (`pytest tests/slurm -m radical`, README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from slurm_support import CPUS_PER_NODE, NODES, SCRIPTS, Cluster

pytest.importorskip("radical.pilot", reason="needs RADICAL-Pilot: pip install rhapsody-radical")

import anyio
import psutil
import radical.utils as ru  # type: ignore[import-untyped]
from radical.pilot.resource_config import ResourceConfig  # type: ignore[import-untyped]

from rhapsody.errors import BackendError, TaskExecutionError
from rhapsody.platforms import PlatformDescription, PlatformError
from rhapsody.resources import detect_cores
from rhapsody.testing import probes
from rhapsody.testing.probes import OPEN_MPI_LOOPBACK
from rhapsody_radical import config, user_config
from rhapsody_radical.backend import RadicalExecutionBackend
from rhapsody_radical.hermetic import hermetic_env
from rhapsody_radical.processes import session_processes
from rhapsody_radical.runtime import StartError, check_resource

pytestmark = [pytest.mark.radical, pytest.mark.anyio]

#: a pilot job up (measured 30-45 s on 2 loaded cores), or a batch job's whole run
START = 240.0
WAIT = 120.0
HELLO = str(SCRIPTS / "mpi_hello.py")
# What the test cluster's nodes need to run Open MPI (as root, TCP over loopback); psij submits
# the pilot with --export=NONE, so mpirun's srun steps need SLURM_EXPORT_ENV=ALL to find orted.
MPI_SETUP = [
    "export " + " ".join(f"{name}={value}" for name, value in OPEN_MPI_LOOPBACK.items()),
    "export SLURM_EXPORT_ENV=ALL",
]
VSLURM = PlatformDescription(
    resource_manager="slurm",
    name="vslurm",
    partition="debug",
    cores_per_node=CPUS_PER_NODE,
    mem_per_node=3,  # GB; a job asking more than a node's RealMemory (4000 MB) is refused
    launch_method="mpirun",  # srun cannot start Open MPI's ranks across these nodes
    env_setup=MPI_SETUP,
)


needs_mpi = pytest.mark.skipif(
    shutil.which("mpirun") is None or importlib.util.find_spec("mpi4py") is None,
    reason="needs Open MPI (openmpi-bin) and mpi4py (requirements-dev.txt)",
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the configuration (no cluster) ------------------------------------------------------------


def test_a_slurm_platform_gets_a_resource_configuration_written() -> None:
    planned = config.pilot(platform=VSLURM, nodes=3)
    assert planned.fields == {
        "resource": "rhapsody.vslurm",
        "runtime": 60,
        "gpus": 0,
        "nodes": 3,
        "queue": "debug",
        "exit_on_error": False,
    }
    written = planned.resource_config
    assert written is not None
    ResourceConfig(from_dict=written).verify()  # RADICAL-Pilot's schema: names and types
    assert written["schemas"]["local"]["job_manager_endpoint"] == "slurm://localhost/"
    assert written["resource_manager"] == "SLURM"
    assert (written["default_queue"], written["cores_per_node"]) == ("debug", 2)
    assert written["mem_per_node"] == 3 * 1024
    assert written["launch_methods"] == {
        "order": ["MPIRUN"],
        "MPIRUN": {"pre_exec_cached": ["export SLURM_OVERLAP=1", *MPI_SETUP]},
    }
    assert written["pre_bootstrap_0"] == ["export TMPDIR=$RP_PILOT_SANDBOX", *MPI_SETUP]
    # the backend's own launch_method wins over the platform's
    srun = config.pilot(platform=VSLURM, launch_method="srun").resource_config
    assert srun is not None and srun["launch_methods"]["order"] == ["SRUN"]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"platform": PlatformDescription(name="pbsbox", resource_manager="pbs")},
            ValueError,
            "written for SLURM platforms only",
        ),
        ({"platform": VSLURM, "launch_method": "jsrun"}, PlatformError, "'jsrun' cannot start"),
        ({"platform": VSLURM, "launch_method": "qsub"}, PlatformError, "launch_method must be"),
        (
            {"platform": PlatformDescription(resource_manager="slurm", batch_directives=["-C x"])},
            PlatformError,
            "batch_directives cannot be passed to a pilot job",
        ),
        ({"launch_method": "mpirun"}, ValueError, "not to 'local.localhost'"),
    ],
)
def test_what_cannot_be_written_is_refused(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        config.pilot(**options)


def test_auto_outside_an_allocation_is_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SLURM_", "PBS_", "LSB_", "FLUX_")):
            monkeypatch.delenv(name)
    planned = config.pilot(platform="auto")
    assert planned.resource_config is None
    assert planned.fields["resource"] == "local.localhost"
    assert planned.fields["cores"] == detect_cores()


def test_the_written_configuration_is_read_beside_the_users_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = tmp_path / "home" / ".radical" / "pilot" / "configs"
    users.mkdir(parents=True)
    local = ru.Config("radical.pilot.resource", name="local", expand=False)["localhost"]
    (users / "resource_mysite.json").write_text(json.dumps({"box": dict(local)}))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(user_config.VARIABLE, raising=False)
    written = config.pilot(platform=VSLURM).resource_config
    assert written is not None
    with user_config.installed("rhapsody.vslurm", written) as path:
        check_resource("rhapsody.vslurm")
        check_resource("mysite.box")  # the user's own configuration is still read
    assert not path.exists() and user_config.VARIABLE not in os.environ
    assert (users / "resource_mysite.json").exists()
    with pytest.raises(StartError, match=r"unknown RADICAL-Pilot resource 'rhapsody\.vslurm'"):
        check_resource("rhapsody.vslurm")


@pytest.mark.parametrize("script", ["radical_auto.sbatch", "radical_auto.toml"])
def test_the_hpc_page_shows_the_batch_script_and_its_workflow(script: str) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "hpc.md").read_text()
    assert f"`tests/slurm/scripts/{script}`" in page
    assert (SCRIPTS / script).read_text().strip() in page  # all of it, comments too


# -- pilots on the cluster -----------------------------------------------------------------------


@pytest.fixture
def rp_env(slurm: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """RADICAL-Pilot confined to `tmp_path` (its HOME) and to loopback; SLURM's commands find
    the cluster. The agent inherits this (its RADICAL_* variables) when the pilot starts."""
    env = {**hermetic_env(tmp_path / "home"), "RADICAL_DEFAULT_IFACE": "lo"}
    env["SLURM_CONF"] = slurm.conf
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def dead_slurmds(cluster: Cluster) -> list[str]:
    """The virtual nodes whose slurmd is not running (pid file of `cluster.sh`)."""
    dead = []
    for node in NODES:
        pid_file = Path(cluster.conf).parent / f"slurmd-{node}.pid"
        try:
            alive = psutil.Process(int(pid_file.read_text())).status() != psutil.STATUS_ZOMBIE
        except (OSError, ValueError, psutil.Error):
            alive = False
        if not alive:
            dead.append(node)
    return dead


@contextlib.asynccontextmanager
async def started(cluster: Cluster, **options: Any) -> AsyncIterator[RadicalExecutionBackend]:
    """A started pilot on the cluster. A slurmd that crashed (seen under concurrent step
    launches, see the notes) makes a start fail: then, and only then, it is restarted and the
    pilot started once more, saying so; any other failure fails the test."""
    for attempt in (1, 2):
        backend = RadicalExecutionBackend(**{"runtime": 10, "start_timeout": START, **options})
        try:
            await backend
        except BackendError:
            dead = dead_slurmds(cluster)
            if attempt == 2 or not dead:
                raise
            print(f"slurmd of {', '.join(dead)} died during the pilot's start: restarted")
            cluster.ensure_slurmds()
            continue
        try:
            yield backend
        finally:
            await backend.shutdown()
        return


def queued_jobs(cluster: Cluster) -> dict[str, str]:
    """Each job in the queue: its id, and its node count and node list."""
    out = cluster.run("squeue", "-h", "-o", "%i %D %N").stdout
    return dict(line.strip().split(" ", 1) for line in out.splitlines() if line.strip())


def pilot_sandbox(backend: RadicalExecutionBackend) -> Path:
    return Path(str(backend.pilot.pilot_sandbox).removeprefix("file://localhost"))


# What mpirun prints when an ORTE daemon it started on a node through srun dies before it
# reports back: about 1 launch in 200 on these virtual nodes (benchmarks/bench_slurm_radical.py
# counts them), in plain RADICAL-Pilot and plain mpirun alike. A test that meets it is run once
# more, saying so; any other failure fails it.
ORTED_FAILED = "An ORTE daemon has unexpectedly failed after launch"


def orted_failed(sandbox: Path) -> list[str]:
    """The pilot's tasks (raptor's included) whose mpirun met `ORTED_FAILED`."""
    return sorted(
        err.stem for err in sandbox.glob("*/*.err") if ORTED_FAILED in err.read_text("replace")
    )


def pilot_job(backend: RadicalExecutionBackend) -> str:
    """The pilot's SLURM job id, as its agent's environment recorded it in the sandbox."""
    sandbox = pilot_sandbox(backend)
    for line in (sandbox / "env" / "bs0_orig.env").read_text().splitlines():
        if line.startswith("SLURM_JOB_ID="):
            return line.partition("=")[2].strip("'\"")
    raise AssertionError(f"no SLURM_JOB_ID in {sandbox}/env/bs0_orig.env")


# SLURM's srun (its step I/O and message ports), Open MPI's mpirun and orted (out-of-band and
# PMIx listeners) and an MPI program's ranks (Open MPI's TCP transport) listen on every
# interface while a task runs, and neither has an option to bind one address (the *_if_include
# settings only choose the interfaces used): the tasks and their launchers, not RADICAL-Pilot's
# endpoints (docs/hpc.md).
MPI_RANK = "(an MPI rank)"
RADICAL = ("rp.", "radical-pilot")  # RADICAL-Pilot's process titles
LAUNCHERS = {"srun", "mpirun", "orted", MPI_RANK}


class Listening:
    """Samples, in a thread, the listening inet sockets of the processes `select` names (every
    0.2 s until stopped): the pilot's processes come and go."""

    def __init__(self, select: Callable[[], list[psutil.Process]]) -> None:
        self.sockets: set[tuple[str, str, int]] = set()  # (process name, address, port)
        self._select = select
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Listening:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for proc in self._select():
                with contextlib.suppress(psutil.Error, OSError):
                    name = proc.name()
                    # raptor's master and worker run as MPI ranks too
                    if not name.startswith(RADICAL) and "OMPI_COMM_WORLD_RANK" in proc.environ():
                        name = MPI_RANK
                    for conn in proc.net_connections("inet"):
                        if conn.status == psutil.CONN_LISTEN:
                            self.sockets.add((name, conn.laddr.ip, conn.laddr.port))
            self._stop.wait(0.2)

    def check(self) -> None:
        """RADICAL-Pilot's client, bridges, agent and raptor listened, on loopback only; what
        listened beyond it was a task launcher."""
        names = {name for name, _, _ in self.sockets}
        assert any(n.startswith("rp.agent") for n in names), self.sockets  # the sampling works
        assert any(n.startswith("rp.client") for n in names), self.sockets
        assert "radical-pilot-r" in names, self.sockets  # raptor's master and worker
        beyond = {s for s in self.sockets if s[1] not in ("127.0.0.1", "::1")}
        assert {name for name, _, _ in beyond} <= LAUNCHERS, beyond


# Each task waits (up to 60 s) until all six have started: they run at once, so on 6 cores of
# 3 nodes, two per node. It prints its node and how many had started.
MEETING = (
    'touch "$0/$SLURMD_NODENAME.$$"; i=0; '
    'while [ "$(ls "$0" | wc -l)" -lt 6 ] && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i+1)); done; '
    'echo "$SLURMD_NODENAME $(ls "$0" | wc -l)"'
)


def meeting_tasks(
    meeting: Path, count: int, then: str | None = None, **fields: Any
) -> list[dict[str, Any]]:
    """`count` MEETING tasks that meet in the new directory `meeting`, with `fields`; `then`:
    a command each runs after the meeting, before it prints (it prints only if that passes)."""
    meeting.mkdir()
    script = MEETING.replace("-lt 6", f"-lt {count}")
    if then is not None:
        script = script.replace('echo "', f'{then} && echo "')
    return [
        {"executable": "/bin/sh", "arguments": ["-c", script, str(meeting)], **fields}
        for _ in range(count)
    ]


@pytest.mark.slurm
@needs_mpi
async def test_a_pilot_submitted_through_sbatch_runs_tasks_on_every_node(
    slurm: Cluster, rp_env: dict[str, str], tmp_path: Path
) -> None:
    for attempt in (1, 2):
        tasks = meeting_tasks(tmp_path / f"meeting.{attempt}", 2 * len(NODES))
        sandbox = tmp_path / "no pilot yet"
        try:
            async with started(slurm, platform=VSLURM, nodes=len(NODES)) as backend:
                sid, sandbox = backend.session.uid, pilot_sandbox(backend)
                assert backend.pilot_fields["resource"] == "rhapsody.vslurm"
                assert queued_jobs(slurm)[pilot_job(backend)] == "3 n[1-3]"  # one job, 3 nodes
                with Listening(functools.partial(session_processes, sid)) as listening:
                    with anyio.fail_after(WAIT):
                        met = await asyncio.gather(*await backend.submit_tasks(tasks))
                    # 3 ranks of 2 cores: a whole node each
                    mpi = {
                        "executable": sys.executable,
                        "arguments": [HELLO, "3"],
                        "ranks": 3,
                        "cores_per_rank": CPUS_PER_NODE,
                    }
                    # then raptor, which holds 2 cores until the end
                    calls = [{"function": os.getenv, "args": ["SLURMD_NODENAME"]}] * 4
                    with anyio.fail_after(WAIT):
                        [ranks] = await asyncio.gather(*await backend.submit_tasks([mpi]))
                        functions = await asyncio.gather(
                            *await backend.submit_tasks([dict(c) for c in calls])
                        )
        except TaskExecutionError:
            if attempt == 2 or not (failed := orted_failed(sandbox)):
                raise
            print(f"Open MPI's daemon failed to start for {', '.join(failed)}: run again")
            continue
        break
    assert sorted(task["stdout"].split()[0] for task in met) == sorted(NODES * 2)
    # The node each says it ran on (its SLURMD_NODENAME) is the one the backend reports.
    assert [task["node"] for task in met] == [task["stdout"].split()[0] for task in met]
    assert ranks["node"] in NODES
    assert {task["stdout"].split()[1] for task in met} == {"6"}  # all six met
    assert json.loads(ranks["stdout"]) == {"size": 3, "nodes": list(NODES)}
    assert {task["return_value"] for task in functions} <= set(NODES)
    listening.check()
    assert not [p.pid for p in session_processes(sid)]  # and the job is gone (`slurm` checks)


@pytest.mark.slurm
@needs_mpi
def test_a_batch_script_runs_rhapsody_run_platform_auto_in_its_own_job(
    slurm: Cluster, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = {**slurm.env, **hermetic_env(home)}
    run_dir, out = tmp_path / "run", tmp_path / "job.out"

    sandbox = Path(env["HOME"]) / "radical.pilot.sandbox"

    def the_jobs_processes() -> list[psutil.Process]:
        """The processes of the RADICAL-Pilot session the job runs (its sandbox names it) and
        every other process of the job: they inherit its HOME (RADICAL-Pilot's daemons rewrite
        their environment with their titles, hence the session)."""
        found = {p.pid: p for s in sandbox.glob("rp.session.*") for p in session_processes(s.name)}
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if proc.environ().get("HOME") == env["HOME"]:
                    found.setdefault(proc.pid, proc)
        return list(found.values())

    with Listening(the_jobs_processes) as listening:
        submitted = subprocess.run(
            ["sbatch", "--wait", "--parsable", f"--output={out}", "radical_auto.sbatch", run_dir],
            cwd=SCRIPTS,
            env=env,
            capture_output=True,
            text=True,
            timeout=START + WAIT,
            check=False,
        )
    log = out.read_text() if out.exists() else "(no job output)"
    assert submitted.returncode == 0, f"{submitted.stderr}\n--- job output ---\n{log}"
    job = submitted.stdout.strip().split(";")[0]
    results = {}
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        task = json.loads(line)
        results[task["uid"]] = task
    assert {uid: task["state"] for uid, task in results.items() if task["state"] != "DONE"} == {}
    assert len(results) == 9, sorted(results)
    assert {results[f"node.{n}"]["stdout"].strip() for n in range(1, 7)} <= set(NODES)
    assert json.loads(results["mpi"]["stdout"]) == {"size": 3, "nodes": list(NODES)}
    assert results["function"]["return_value"] in NODES
    # while the workflow ran, the batch job was the only job: no second one for the pilot
    assert results["jobs"]["stdout"].split() == [job]
    listening.check()
    assert not the_jobs_processes()


# -- a node lost mid-run (issue 17, capability 6) ------------------------------------------------

LOST = "n2"


async def until(done: Callable[[], bool], what: str) -> None:
    """Poll `done` (a file-system condition, nothing to wait on) every 0.2 s, up to WAIT s."""
    for _ in range(int(WAIT / 0.2)):
        if done():
            return
        await anyio.sleep(0.2)
    pytest.fail(f"not within {WAIT:g} s: {what}")


def resume(cluster: Cluster) -> None:
    """The lost node back in service (ReturnToService=2 may have done it already)."""
    subprocess.run(
        ["scontrol", "update", f"nodename={LOST}", "state=resume"],
        env=cluster.env,
        capture_output=True,
        timeout=30,
    )


@pytest.mark.slurm
async def test_a_node_lost_mid_run_fails_every_task_of_the_pilot_saying_why(
    slurm: Cluster, rp_env: dict[str, str], tmp_path: Path
) -> None:
    # SLURM kills a job whose node fails. The pilot's job is submitted without requeueing, so
    # it ends and the pilot with it: every task it held fails with that reason, as does any
    # task sent later, instead of waiting for an agent that is gone (a requeued job would have
    # come back as a new agent the client never hears of).
    meeting = tmp_path / "meeting"
    # a program whose sleep SLURM kills before its shell ends fails (it cannot pass)
    tasks = meeting_tasks(meeting, 2 * len(NODES), then="sleep 600")
    try:
        async with started(slurm, platform=VSLURM, nodes=len(NODES)) as backend:
            sid, job = backend.session.uid, pilot_job(backend)
            futures = await backend.submit_tasks(tasks)
            await until(lambda: len(list(meeting.iterdir())) == len(tasks), "all six to run")
            slurm.run(
                "scontrol", "update", f"nodename={LOST}", "state=down", "reason=rhapsody-test"
            )
            with anyio.fail_after(WAIT):
                results = await asyncio.gather(*futures, return_exceptions=True)
            [later] = await backend.submit_tasks([{"executable": "/bin/true"}])
            with anyio.fail_after(10):
                late = await asyncio.gather(later, return_exceptions=True)
            # the pilot's job ended and was not requeued (that would be pending again)
            await until(lambda: job not in queued_jobs(slurm), "the pilot's job to leave")
    finally:
        resume(slurm)
    for result in [*results, *late]:
        assert isinstance(result, TaskExecutionError), result
    # Why: the pilot's end; or, for a task whose end the agent reported before the pilot's,
    # the kill of its program (mpirun, which ran it on the lost node, exits 0 then: the backend
    # sees that its exec script never got past it). A task sent later: the pilot's end.
    for result in results:
        why = str(result)
        reasons = ("pilot on rhapsody.vslurm ended", "did not run to its end", "killed by signal")
        assert any(reason in why for reason in reasons), why
    assert "pilot on rhapsody.vslurm ended" in str(late[0]), late
    assert not [p.pid for p in session_processes(sid)]


# A TCP service on `{host}:{port}` (its node's address, chosen there), answering its node's name.
NODE_SERVER = (
    "import os,socket,sys;s=socket.create_server((sys.argv[1],int(sys.argv[2])));"
    "exec('while True:\\n c,_=s.accept();c.sendall(os.environ[\"SLURMD_NODENAME\"].encode());"
    "c.close()')"
)


@pytest.mark.slurm
async def test_a_service_on_the_pilot_gets_its_port_on_its_node_and_serves_pilot_tasks(
    slurm: Cluster, rp_env: dict[str, str], tmp_path: Path
) -> None:
    # The client cannot choose a port for a node: `rhapsody.services.on_node` chooses it where
    # the service runs and reports it; the engine probes that address, publishes it, and hands
    # it to the dependents (pilot tasks on any node).
    server = {
        "uid": "svc",
        "executable": sys.executable,
        "arguments": ["-c", NODE_SERVER, "{host}", "{port}"],
        "service": {"tcp": True, "timeout": 60},
    }
    client = {**probes.service_client("svc"), "uid": "user"}
    work = tmp_path / "work"  # where the node writes the service's address
    async with started(slurm, platform=VSLURM, nodes=len(NODES), work_dir=work) as backend:
        assert backend.chooses_service_ports
        sid = backend.session.uid
        futures = await backend.submit_tasks([server, client])
        with anyio.fail_after(WAIT):
            ready = await futures["svc"]
            used = await futures["user"]
        host, port = ready["endpoint"].rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0  # the nodes' address here (iface lo)
        assert used["stdout"].strip() in NODES, used.get("stderr")
        assert ready["state"] == "EXECUTING"
        assert await backend.cancel_task("svc") is True
        with anyio.fail_after(WAIT):
            while ready["state"] not in ("DONE", "CANCELED", "FAILED"):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert ready["state"] == "CANCELED", ready
        assert not list(work.glob("*.address"))  # removed with its attempt
    assert not [p.pid for p in session_processes(sid)]


@pytest.mark.slurm
async def test_telemetry_samples_each_node_of_the_pilot_without_taking_a_core(
    slurm: Cluster, rp_env: dict[str, str], tmp_path: Path
) -> None:
    # One `srun --overlap` step of the pilot's job samples every node (node_sampling): their
    # rows reach telemetry beside the client's, and three whole-node tasks still run at once.
    from rhapsody.session import Session
    from rhapsody.telemetry import ResourceUpdate

    tasks = meeting_tasks(tmp_path / "meeting", len(NODES), cores_per_rank=CPUS_PER_NODE)
    work = tmp_path / "work"
    updates: list[ResourceUpdate] = []
    # srun launches: each task is a SLURM step of the job, beside the sampling step
    srun = {"launch_method": "srun", "work_dir": work}
    async with started(slurm, platform=VSLURM, nodes=len(NODES), **srun) as backend:
        sid = backend.session.uid
        session = Session([backend])
        manager = await session.start_telemetry(resource_poll_interval=0.5, node_id="the-client")
        manager.subscribe(lambda e: updates.append(e) if isinstance(e, ResourceUpdate) else None)
        await until(
            lambda: {u.node_id for u in updates if u.backend == backend.name} >= set(NODES),
            "a sample of every node of the pilot",
        )
        samplers = [p.pid for p in psutil.process_iter() if _is_node_sampler(p)]
        futures = await session.submit_tasks(tasks)
        with anyio.fail_after(WAIT):
            met = await asyncio.gather(*futures)
        await session.close()
    assert len(samplers) == len(NODES)  # one per node (all on this host here)
    for node in NODES:
        rows = [u for u in updates if u.node_id == node and u.gpu_id is None]
        assert rows and all(u.backend == backend.name for u in rows)
        assert all(0 <= (u.cpu_percent or 0) <= 100 for u in rows)
        assert all(0 < (u.memory_percent or 0) <= 100 for u in rows)
        for field in ("disk_read_bytes", "disk_write_bytes", "net_sent_bytes", "net_recv_bytes"):
            assert all(getattr(u, field) is not None and getattr(u, field) >= 0 for u in rows)
    assert any(u.node_id == "the-client" for u in updates)  # and the client's own node
    assert sorted(task["stdout"].split()[0] for task in met) == sorted(NODES)
    assert {task["stdout"].split()[1] for task in met} == {str(len(NODES))}  # all at once
    assert not [p.pid for p in psutil.process_iter() if "node_sampler" in str(_cmdline(p))]
    assert not [p.pid for p in session_processes(sid)]
    assert not list(work.glob("node-samples.*"))


def _cmdline(proc: psutil.Process) -> list[str]:
    with contextlib.suppress(psutil.Error):
        return proc.cmdline()
    return []


def _is_node_sampler(proc: psutil.Process) -> bool:
    """A sampler process (not srun, whose command line names it too)."""
    return _cmdline(proc)[1:3] == ["-m", "rhapsody.telemetry.node_sampler"]


def test_the_sampling_step_is_one_overlapping_step_of_the_pilot_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from rhapsody_radical.node_sampling import PilotSampler

    sandbox, samples = tmp_path / "pilot", tmp_path / "work" / "samples"
    (sandbox / "env").mkdir(parents=True)
    assert PilotSampler(None, "rp.session.x", samples).start() == (
        "the pilot is not a SLURM job whose sandbox this host can read"
    )
    (sandbox / "env" / "bs0_orig.env").write_text("HOME='/h'\n")  # a local pilot's
    assert PilotSampler(str(sandbox), "rp.session.x", samples).start() == (
        "the pilot is not a SLURM job whose sandbox this host can read"
    )
    (sandbox / "env" / "bs0_orig.env").write_text("SLURM_JOB_ID='42'\nSLURM_JOB_NUM_NODES=3\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert PilotSampler(str(sandbox), "rp.session.x", samples).start() == (
        "no srun on this host's PATH"
    )
    # An srun that records how it was called and exits, as one whose nodes cannot see the
    # directory would (each sampler exits at once)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text(
        f'#!/bin/sh\necho "$@" > {tmp_path}/argv\n/usr/bin/env > {tmp_path}/env\necho gone >&2\n'
    )
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("SLURM_NTASKS", "8")  # of a job this client runs in
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/test.conf")
    sampler = PilotSampler(str(sandbox), "rp.session.x", samples)
    assert sampler.start() is None
    with caplog.at_level(logging.WARNING, logger="rhapsody_radical.node_sampling"):
        for _ in range(100):
            if sampler.read() == [] and caplog.records:
                break
            time.sleep(0.1)
    argv = (tmp_path / "argv").read_text().split()
    assert argv[:6] == [
        "--jobid=42", "--overlap", "--nodes=3", "--ntasks=3", "--ntasks-per-node=1",
        "--job-name=rhapsody-node-sampler",
    ]
    assert argv[-5:-1] == ["rhapsody.telemetry.node_sampler", "--dir", str(samples), "--interval"]
    lines = (tmp_path / "env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    assert env["RP_SESSION_ID"] == "rp.session.x" and env["SLURM_CONF"] == "/etc/slurm/test.conf"
    assert "SLURM_NTASKS" not in env
    [said] = [r.getMessage() for r in caplog.records]
    assert said == (
        f"the pilot's node sampling step ended (exit 0; is {samples} shared with the nodes?): gone"
    )
    sampler.stop()
    assert not samples.exists()
