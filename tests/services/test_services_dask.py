"""Service tasks on the `dask` backend (an embedded LocalCluster), through a Session.

The same scenarios as on `concurrent` (test_services.py), with real servers run by dask
workers: the probe runs in this process against 127.0.0.1, where the embedded workers run. A
service holds its worker thread while it runs. The runtime stops a service by cancelling its
attempt: the worker then signals the service's whole process group; the tests check by pid
that the service and its children are gone before the cluster closes (the cluster's own clean-up
of leftover processes would otherwise hide a service that was never stopped).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed", reason="the dask backend needs dask.distributed")

import anyio
import cloudpickle
import psutil
from service_support import PY, http_server, redis_client, redis_server, tcp_client, tcp_server

import rhapsody
from rhapsody.errors import TaskExecutionError, TaskValidationError
from rhapsody.registry import alookup
from rhapsody.services import endpoint_variable
from rhapsody.states import CANCELED, DONE, EXECUTING, FAILED
from rhapsody_dask.backend import DaskExecutionBackend

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_process_left")]

# The workers cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT = 60.0  # bound on every wait: a failure, never a hang

# A server that starts a child (a process tree), notes both pids in $PIDS, then listens. On
# SIGTERM (a graceful stop, as opposed to the cluster's SIGKILL of leftovers) it notes that too.
TREE_SERVER = """
import os, signal, socket, subprocess, sys
def stop(*_):
    open(os.environ["PIDS"] + ".term", "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.environ["PIDS"], "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
s = socket.socket()
s.bind((sys.argv[2], int(sys.argv[1])))
s.listen()
while True:
    s.accept()[0].close()
"""


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
def _resource_tracker_running() -> None:
    # The first spawned dask worker starts Python's resource tracker, which lives until this
    # interpreter exits: start it before `no_process_left` takes its first count.
    resource_tracker.ensure_running()


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[rhapsody.Session]:
    backend = DaskExecutionBackend(n_workers=2, threads_per_worker=1, work_dir=tmp_path)
    async with rhapsody.Session([backend]) as session:
        yield session


async def wait_until(condition: Any, what: str) -> None:
    """Poll `condition`: process states and task dicts have no event to await."""
    for _ in range(int(WAIT / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"waited {WAIT:g} s for {what}")


def pids_in(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def tree_server(tmp_path: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    """A tcp service with a child; fails the test if any of its processes outlives it."""
    pids = tmp_path / f"pids-{uuid.uuid4().hex[:6]}"
    task = {
        "uid": "tree",
        "executable": PY,
        "arguments": ["-c", TREE_SERVER, "{port}", "{host}"],
        "environment": {"PIDS": str(pids)},
        "service": {"tcp": True},
    }
    yield task, pids
    if pids.exists():
        for pid in pids_in(pids):
            if alive(pid):
                os.kill(pid, 9)
                pytest.fail(f"process {pid} of the service outlived the test")


async def test_http_service_dependent_gets_the_endpoint(session: rhapsody.Session) -> None:
    web = http_server()
    env = endpoint_variable("web")
    use = {
        "uid": "use",
        "executable": PY,
        "arguments": [
            "-c",
            f"import os, urllib.request; print(urllib.request.urlopen(os.environ['{env}']).status)",
        ],
        "dependencies": ["web"],
    }
    futures = await session.submit_tasks([web, use])
    with anyio.fail_after(WAIT):
        result = await futures["use"]
    assert result["stdout"].strip() == "200"
    assert futures["web"].done() and web["state"] == EXECUTING
    assert web["endpoint"].startswith("http://127.0.0.1:")
    assert session.services == {"web": web["endpoint"]}


async def test_tcp_probe_and_clients_that_use_the_endpoint(session: rhapsody.Session) -> None:
    futures = await session.submit_tasks(
        [tcp_server(), tcp_client("c1", "tcp"), tcp_client("c2", "tcp")]
    )
    with anyio.fail_after(WAIT):
        results = await asyncio.gather(futures["c1"], futures["c2"])
    assert [r["stdout"].strip() for r in results] == ["pong", "pong"]


async def test_a_service_that_exits_before_ready_fails_with_its_reason(
    session: rhapsody.Session,
) -> None:
    broken = {
        "uid": "broken",
        "executable": PY,
        "arguments": [
            "-c",
            "import sys; print('bad config', file=sys.stderr); sys.exit(2)",
            "{port}",
        ],
        "service": {"http": "/"},
    }
    futures = await session.submit_tasks([broken, tcp_client("user", "broken")])
    with anyio.fail_after(WAIT):
        results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, TaskExecutionError) for r in results)
    assert broken["state"] == FAILED
    assert "exited before it was ready: exit code 2" in str(results[0])
    assert "bad config" in broken["stderr"]
    assert "'broken' failed" in str(results[1])


async def test_start_up_timeout_fails_the_service_and_kills_its_processes(
    session: rhapsody.Session, tree_server: tuple[dict[str, Any], Path]
) -> None:
    task, pids = tree_server
    # It never listens on the port it is given: the tcp probe times out.
    task["arguments"] = ["-c", TREE_SERVER.replace("int(sys.argv[1])", "0"), "{port}", "{host}"]
    task["service"] = {"tcp": True, "timeout": 3}
    futures = await session.submit_tasks([task])
    with anyio.fail_after(WAIT):
        [error] = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(error, TaskExecutionError)
    assert "not ready within 3 s (waited for its port)" in str(error)
    await wait_until(pids.exists, "the pids")
    # stopped by the worker when the engine cancelled the attempt, not at cluster close
    await wait_until(lambda: not any(alive(p) for p in pids_in(pids)), "the processes to go")


async def test_a_crashed_service_restarts_on_a_new_port_then_fails(tmp_path: Path) -> None:
    server = tcp_server("flaky", restarts=1)
    server["environment"] = {"CRASH_AFTER": "2"}  # the probe's connection, then one client's
    ready: list[str | None] = []
    backend = DaskExecutionBackend(n_workers=2, threads_per_worker=1, work_dir=tmp_path)
    backend.register_service_callback(lambda task, endpoint: ready.append(endpoint))
    async with rhapsody.Session([backend]) as session:
        futures = await session.submit_tasks([server, tcp_client("first", "flaky")])
        with anyio.fail_after(WAIT):
            assert (await futures["first"])["stdout"].strip() == "pong"
        await wait_until(lambda: len(ready) == 2, "the restart")
        assert ready[0] != ready[1] and server["endpoint"] == ready[1]
        second = tcp_client("second", "flaky")
        more = await session.submit_tasks([second])
        with anyio.fail_after(WAIT):
            assert (await more["second"])["stdout"].strip() == "pong"
        await wait_until(lambda: server["state"] == FAILED, "the second crash")
    assert server["restarts"] == 1
    assert "service died after it was ready: exit code 3" in str(server["exception"])
    assert second["state"] == DONE


async def test_lifetime_dependents_stops_the_service_process_after_its_last_dependent(
    session: rhapsody.Session, tree_server: tuple[dict[str, Any], Path]
) -> None:
    task, pids = tree_server
    task["service"] = {"tcp": True, "lifetime": "dependents"}
    futures = await session.submit_tasks([task, tcp_client("c1", "tree"), tcp_client("c2", "tree")])
    with anyio.fail_after(WAIT):
        await asyncio.gather(futures["c1"], futures["c2"])
    assert all(alive(p) for p in pids_in(pids))
    await wait_until(lambda: task["state"] == DONE, "the service to stop")
    # the session (and its cluster) still runs: the worker killed the whole tree
    await wait_until(lambda: not any(alive(p) for p in pids_in(pids)), "the processes to go")


async def test_cancelling_a_long_running_service_kills_its_process_tree(
    tmp_path: Path, tree_server: tuple[dict[str, Any], Path]
) -> None:
    task, pids = tree_server
    backend = DaskExecutionBackend(n_workers=2, threads_per_worker=1, work_dir=tmp_path)
    async with rhapsody.Session([backend]) as session:
        futures = await session.submit_tasks([task, tcp_client("c", "tree")])
        with anyio.fail_after(WAIT):
            await futures["c"]
        await asyncio.sleep(2)  # it has been serving a while
        assert task["state"] == EXECUTING and all(alive(p) for p in pids_in(pids))
        with anyio.fail_after(WAIT):
            await backend.cancel_task("tree")
            await wait_until(lambda: task["state"] == CANCELED, "the cancel")
            await wait_until(lambda: not any(alive(p) for p in pids_in(pids)), "the processes")


async def test_session_close_stops_the_service_and_it_ends_done(
    tmp_path: Path, tree_server: tuple[dict[str, Any], Path]
) -> None:
    task, pids = tree_server
    backend = DaskExecutionBackend(n_workers=2, threads_per_worker=1, work_dir=tmp_path)
    async with rhapsody.Session([backend]) as session:
        futures = await session.submit_tasks([task])
        with anyio.fail_after(WAIT):
            await futures["tree"]
        assert task["state"] == EXECUTING
    assert task["state"] == DONE
    assert not any(alive(p) for p in pids_in(pids))
    # stopped by the backend (SIGTERM), not by the cluster's SIGKILL of leftover processes
    assert Path(f"{pids}.term").exists()


async def test_log_probe_waits_for_a_matching_line_of_stderr(session: rhapsody.Session) -> None:
    # A few hundred KiB of other output first, in both streams: only the matching line travels.
    code = (
        "import sys, time\n"
        "for i in range(3000): print('warming up', i, 'x' * 100)\n"
        "sys.stdout.flush(); print('almost', file=sys.stderr, flush=True); time.sleep(1)\n"
        "print('server READY', file=sys.stderr, flush=True); time.sleep(600)\n"
    )
    server = {
        "uid": "logged",
        "executable": PY,
        "arguments": ["-c", code],
        "service": {"log": r"READY$"},
    }
    seen: list[str] = []
    session.register_callback(lambda t, s: seen.append(f"{t['uid']}:{s}"))
    after = {"uid": "after", "executable": "/bin/true", "dependencies": ["logged"]}
    futures = await session.submit_tasks([server, after])
    with anyio.fail_after(WAIT):
        await futures["after"]
    assert server["state"] == EXECUTING and "endpoint" not in server
    assert seen.index("logged:EXECUTING") < seen.index("after:EXECUTING")


async def test_a_log_probe_that_never_matches_fails_when_the_service_exits(
    session: rhapsody.Session,
) -> None:
    quiet = {
        "uid": "quiet",
        "executable": PY,
        "arguments": ["-c", "print('starting')"],
        "service": {"log": "READY"},
    }
    futures = await session.submit_tasks([quiet])
    with anyio.fail_after(WAIT):
        [error] = await asyncio.gather(*futures, return_exceptions=True)
    assert "exited before it was ready: exit code 0" in str(error)
    assert quiet["stdout"] == "starting\n"


async def test_a_log_probe_on_a_function_service_is_rejected(session: rhapsody.Session) -> None:
    task = {"uid": "f", "function": _serve_in_a_coroutine, "service": {"log": "ready"}}
    with pytest.raises(TaskValidationError, match="task 'f'") as caught:
        await session.submit_tasks([task])
    assert "a function task's output is not captured on dask" in str(caught.value)


async def test_start_up_timeout_counts_from_the_start_not_the_wait_for_a_worker(
    tmp_path: Path,
) -> None:
    # One worker thread, busy for a while: the service waits in dask's queue longer than its
    # start-up timeout, then starts and is ready well within it.
    backend = DaskExecutionBackend(n_workers=1, threads_per_worker=1, work_dir=tmp_path)
    async with rhapsody.Session([backend]) as session:
        busy = {"uid": "busy", "executable": "/bin/sleep", "arguments": ["6"]}
        busy_futures = await session.submit_tasks([busy])
        await wait_until(lambda: busy["state"] == EXECUTING, "the busy task to start")
        server = tcp_server("queued", timeout=3)
        futures = await session.submit_tasks([server, tcp_client("user", "queued")])
        with anyio.fail_after(WAIT):
            await busy_futures["busy"]
            await futures["queued"]
        assert server["state"] == EXECUTING
        # the client has no worker thread left while the service holds the only one; stop it
        await backend.cancel_task("user")


# "Another host": workers on 127.0.0.2, a loopback address other than the client's 127.0.0.1
# (scheduler and client stay on 127.0.0.1). A service bound there answers at 127.0.0.2 only, so
# a port chosen and probed at the client's 127.0.0.1, as before, would never reach it.
# Servers here listen on 127.0.0.1 only, so these tests run in a network namespace of their own
# (made by test_the_node_address_tests_in_a_network_namespace_of_their_own), where 127.0.0.2 is
# nobody else's.
NODE = "127.0.0.2"
_IN_NETNS = "RHAPSODY_TEST_IN_NETNS"
_NODE_TESTS = "another_address or fixed_port_is_used_on_the_worker"


def test_the_node_address_tests_in_a_network_namespace_of_their_own(tmp_path: Path) -> None:
    import subprocess

    if os.environ.get(_IN_NETNS) == "1":
        pytest.skip("this is the namespace's own run")
    made = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    if made.returncode != 0 or shutil.which("ip") is None:
        pytest.skip("needs a network namespace (root and iproute2's ip): unshare -n failed")
    inner = 'ip link set lo up || exit 2; exec "$@"'
    command = [sys.executable, "-m", "pytest", __file__, "-k", _NODE_TESTS, "-q"]
    command += ["-p", "no:cacheprovider", "--basetemp", str(tmp_path / "netns")]
    run = subprocess.run(
        ["unshare", "-n", "sh", "-c", inner, "sh", *command],
        env={**os.environ, _IN_NETNS: "1"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert " passed" in output, output[-2000:]  # not all skipped


@pytest.fixture
async def node_cluster(tmp_path: Path) -> AsyncIterator[Any]:
    """An address= cluster of two workers of two threads on NODE (services hold theirs)."""
    from distributed import LocalCluster

    if os.environ.get(_IN_NETNS) != "1":
        pytest.skip("runs in a network namespace of its own (see the test that makes it)")
    async with LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        host=NODE,
        scheduler_kwargs={"host": "127.0.0.1"},
        dashboard_address="127.0.0.1:0",
        local_directory=str(tmp_path / "dask"),
        asynchronous=True,
    ) as cluster:
        yield cluster


def refused_at_loopback(endpoint: str) -> bool:
    """Whether nothing answers at 127.0.0.1 on `endpoint`'s port (the service is bound to
    NODE alone)."""
    import socket

    port = int(endpoint.rsplit(":", 1)[1])
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_services_on_workers_of_another_address_are_probed_and_used_there(
    tmp_path: Path, node_cluster: Any
) -> None:
    backend = DaskExecutionBackend(node_cluster.scheduler_address, work_dir=tmp_path)
    web = http_server()
    env = endpoint_variable("web")
    get = f"import os, urllib.request as u; print(u.urlopen(os.environ['{env}']).status)"
    use = {"uid": "use", "executable": PY, "arguments": ["-c", get], "dependencies": ["web"]}
    async with rhapsody.Session([backend]) as session:
        futures = await session.submit_tasks([web, tcp_server(), use, tcp_client("c", "tcp")])
        with anyio.fail_after(WAIT):
            results = await asyncio.gather(futures["use"], futures["c"])
        assert [r["stdout"].strip() for r in results] == ["200", "pong"]
        tcp = futures["tcp"].result()
        assert web["endpoint"].startswith(f"http://{NODE}:")
        assert tcp["endpoint"].startswith(f"{NODE}:")
        assert session.services["web"] == web["endpoint"]
        with anyio.fail_after(WAIT):  # the registry holds the worker's address too
            assert await alookup("tcp", wait=WAIT) == tcp["endpoint"]
        assert refused_at_loopback(web["endpoint"]) and refused_at_loopback(tcp["endpoint"])
    assert web["state"] == DONE and tcp["state"] == DONE


async def test_a_restart_on_another_address_chooses_and_publishes_a_new_port(
    tmp_path: Path, node_cluster: Any
) -> None:
    server = tcp_server("flaky", restarts=1)
    server["environment"] = {"CRASH_AFTER": "2"}  # the probe's connection, then one client's
    ready: list[str | None] = []
    backend = DaskExecutionBackend(node_cluster.scheduler_address, work_dir=tmp_path)
    backend.register_service_callback(lambda task, endpoint: ready.append(endpoint))
    async with rhapsody.Session([backend]) as session:
        futures = await session.submit_tasks([server, tcp_client("first", "flaky")])
        with anyio.fail_after(WAIT):
            assert (await futures["first"])["stdout"].strip() == "pong"
        await wait_until(lambda: len(ready) == 2, "the restart")
        assert ready[0] != ready[1] and server["endpoint"] == ready[1]
        assert all(str(endpoint).startswith(f"{NODE}:") for endpoint in ready)
        with anyio.fail_after(WAIT):
            assert await alookup("flaky", wait=WAIT) == ready[1]
        more = await session.submit_tasks([tcp_client("second", "flaky")])
        with anyio.fail_after(WAIT):
            assert (await more["second"])["stdout"].strip() == "pong"
    assert server["restarts"] == 1


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
async def test_redis_on_a_worker_of_another_address(tmp_path: Path, node_cluster: Any) -> None:
    redis = redis_server()
    writer, reader = redis_client("set", "SET key 42"), redis_client("get", "GET key", "set")
    backend = DaskExecutionBackend(node_cluster.scheduler_address, work_dir=tmp_path)
    async with rhapsody.Session([backend]) as session:
        futures = await session.submit_tasks([redis, writer, reader])
        with anyio.fail_after(WAIT):
            await asyncio.gather(futures["set"], futures["get"])
        assert redis["endpoint"].startswith(f"{NODE}:")
    assert writer["stdout"].strip() == "+OK"
    assert reader["stdout"].split() == ["$2", "42"]
    assert redis["state"] == DONE


async def test_a_fixed_port_is_used_on_the_worker_address(
    tmp_path: Path, node_cluster: Any
) -> None:
    from rhapsody.services.supervisor import free_port

    port = free_port(NODE)
    backend = DaskExecutionBackend(node_cluster.scheduler_address, work_dir=tmp_path)
    async with rhapsody.Session([backend]) as session:
        futures = await session.submit_tasks([tcp_server(port=port), tcp_client("c", "tcp")])
        with anyio.fail_after(WAIT):
            assert (await futures["c"])["stdout"].strip() == "pong"
        assert futures["tcp"].result()["endpoint"] == f"{NODE}:{port}"


async def _serve_in_a_coroutine(marker: str) -> None:
    """A function service: listens on no port; notes that it was cancelled, then ends."""
    try:
        await asyncio.sleep(600)
    except asyncio.CancelledError:
        Path(marker).touch()
        raise


async def test_an_async_function_service_is_cancelled_on_its_worker(
    session: rhapsody.Session, tmp_path: Path
) -> None:
    marker = tmp_path / "cancelled"
    svc = {"uid": "coro", "function": _serve_in_a_coroutine, "args": [str(marker)], "service": True}
    futures = await session.submit_tasks(
        [svc, {"uid": "after", "executable": "/bin/true", "dependencies": ["coro"]}]
    )
    with anyio.fail_after(WAIT):
        await futures["after"]
    assert svc["state"] == EXECUTING
    await session.close()  # the engine cancels the attempt: the coroutine is cancelled
    assert svc["state"] == DONE
    assert marker.exists()


async def test_a_plain_function_service_is_rejected(session: rhapsody.Session) -> None:
    with pytest.raises(TaskValidationError, match="task 'f'") as caught:
        await session.submit_tasks([{"uid": "f", "function": print, "service": True}])
    assert "a plain function on a dask worker's thread cannot be stopped" in str(caught.value)


async def test_asyncflow_service_workflow_runs_unmodified_on_dask(tmp_path: Path) -> None:
    asyncflow = pytest.importorskip("radical.asyncflow")
    backend = await DaskExecutionBackend(n_workers=2, threads_per_worker=1, work_dir=tmp_path)
    flow = await asyncflow.WorkflowEngine.create(backend=backend)
    try:

        @flow.function_task(service=True)
        async def server() -> None:
            await asyncio.sleep(600)

        @flow.function_task
        async def client(dep: object) -> str:
            return "used the service"

        svc = server()
        with anyio.fail_after(WAIT):
            assert await client(svc) == "used the service"
    finally:
        with anyio.fail_after(WAIT):
            await flow.shutdown()
