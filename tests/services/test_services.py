"""Service tasks on the `concurrent` backend, through a Session: real servers, real probes.

A service's dependents start when it is ready (not when it ends) and find its endpoint in
their environment and in the session registry; a service that fails before it is ready fails
its dependents; one that dies after is restarted (new endpoint) or FAILED; the runtime stops
services at close (they end DONE) or after their last dependent with lifetime "dependents".
"""

from __future__ import annotations

import asyncio
import shutil
import sys

import pytest
from service_support import (
    PY,
    TCP_SERVER,
    http_server,
    redis_client,
    redis_server,
    tcp_client,
    tcp_server,
)

import rhapsody
from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.errors import TaskExecutionError, TaskValidationError
from rhapsody.registry import lookup
from rhapsody.services import endpoint_variable
from rhapsody.states import DONE, EXECUTING, FAILED

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_process_left")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_dependents_start_when_the_service_is_ready_and_get_its_endpoint() -> None:
    async with rhapsody.Session() as session:
        web = http_server()
        env = endpoint_variable("web")
        use = {
            "uid": "use",
            "executable": PY,
            "arguments": [
                "-c",
                "import os, urllib.request; "
                f"print(urllib.request.urlopen(os.environ['{env}']).status)",
            ],
            "dependencies": ["web"],
        }
        futures = await session.submit_tasks([web, use])
        result = await asyncio.wait_for(futures["use"], 60)
        assert result["stdout"].strip() == "200"
        # the service still runs: its future resolved when it became ready
        assert futures["web"].done() and web["state"] == EXECUTING
        assert web["endpoint"].startswith("http://127.0.0.1:")
        assert session.services == {"web": web["endpoint"]}
        assert await asyncio.to_thread(lookup, "web") == web["endpoint"]
    assert web["state"] == DONE  # stopped by the runtime


async def test_tcp_probe_and_a_client_that_uses_the_endpoint() -> None:
    async with rhapsody.Session() as session:
        futures = await session.submit_tasks([tcp_server(), tcp_client("client", "tcp")])
        result = await asyncio.wait_for(futures["client"], 60)
        assert result["stdout"].strip() == "pong"


async def test_log_probe_waits_for_a_matching_line() -> None:
    server = {
        "uid": "logged",
        "executable": PY,
        "arguments": [
            "-c",
            "import time; print('warming up', flush=True); time.sleep(0.5); "
            "print('server READY', flush=True); time.sleep(600)",
        ],
        "service": {"log": r"READY$"},
    }
    seen: list[str] = []
    async with rhapsody.Session() as session:
        session.register_callback(lambda t, s: seen.append(f"{t['uid']}:{s}"))
        futures = await session.submit_tasks(
            [server, {"uid": "after", "executable": "/bin/true", "dependencies": ["logged"]}]
        )
        await asyncio.wait_for(futures["after"], 60)
        assert "endpoint" not in server  # no port: no endpoint
    assert seen.index("logged:EXECUTING") < seen.index("after:EXECUTING")
    assert server["state"] == DONE


async def test_publish_probe_takes_the_endpoint_the_service_publishes() -> None:
    script = (
        "import sys, time; from rhapsody.registry import publish; "
        "publish('pub', 'tcp://somewhere:1234'); time.sleep(600)"
    )
    server = {
        "uid": "pub",
        "executable": PY,
        "arguments": ["-c", script],
        "service": {"publish": True},
    }
    async with rhapsody.Session() as session:
        futures = await session.submit_tasks([server])
        await asyncio.wait_for(futures["pub"], 60)
        assert server["endpoint"] == "tcp://somewhere:1234"


async def test_a_service_that_exits_before_ready_fails_with_its_reason_and_its_dependents() -> None:
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
    async with rhapsody.Session() as session:
        futures = await session.submit_tasks([broken, tcp_client("user", "broken")])
        results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, TaskExecutionError) for r in results)
    assert broken["state"] == FAILED
    assert "exited before it was ready: exit code 2" in str(results[0])
    assert "bad config" in broken["stderr"]
    assert "'broken' failed" in str(results[1])


async def test_start_up_timeout_fails_the_service_and_stops_its_process() -> None:
    silent = {
        "uid": "silent",
        "executable": PY,
        "arguments": ["-c", "import time; time.sleep(600)", "{port}"],
        "service": {"tcp": True, "timeout": 1},
    }
    async with rhapsody.Session() as session:
        futures = await session.submit_tasks([silent])
        [error] = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(error, TaskExecutionError)
    assert "not ready within 1 s (waited for its port)" in str(error)


async def test_a_crashed_service_restarts_on_a_new_port_then_fails_out_of_restarts() -> None:
    server = tcp_server("flaky", restarts=1)
    server["environment"] = {"CRASH_AFTER": "2"}  # the probe's connection, then one client's
    ready: list[str | None] = []
    backend = ConcurrentExecutionBackend(name="concurrent")
    backend.register_service_callback(lambda task, endpoint: ready.append(endpoint))
    async with rhapsody.Session([backend]) as session:
        futures = await session.submit_tasks([server, tcp_client("first", "flaky")])
        assert (await asyncio.wait_for(futures["first"], 60))["stdout"].strip() == "pong"
        for _ in range(600):  # the first client made it exit 3: it is restarted
            if len(ready) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(ready) == 2 and ready[0] != ready[1] and server["endpoint"] == ready[1]
        second = tcp_client("second", "flaky")
        more = await session.submit_tasks([second])
        assert (await asyncio.wait_for(more["second"], 60))["stdout"].strip() == "pong"
        for _ in range(600):  # the second crash is one too many
            if server["state"] == FAILED:
                break
            await asyncio.sleep(0.05)
    assert server["state"] == FAILED
    assert server["restarts"] == 1
    assert "service died after it was ready: exit code 3" in str(server["exception"])
    assert second["state"] == DONE


async def test_lifetime_dependents_stops_the_service_after_its_last_dependent() -> None:
    server = tcp_server("short", lifetime="dependents")
    async with rhapsody.Session() as session:
        futures = await session.submit_tasks(
            [server, tcp_client("c1", "short"), tcp_client("c2", "short")]
        )
        await asyncio.gather(futures["c1"], futures["c2"])
        for _ in range(600):
            if server["state"] == DONE:
                break
            await asyncio.sleep(0.05)
        assert server["state"] == DONE  # before the session closed


async def test_a_task_submitted_after_the_service_is_ready_starts_at_once() -> None:
    async with rhapsody.Session() as session:
        first = await session.submit_tasks([tcp_server("later")])
        await asyncio.wait_for(first["later"], 60)
        more = await session.submit_tasks([tcp_client("late", "later")])
        assert (await asyncio.wait_for(more["late"], 60))["stdout"].strip() == "pong"


async def test_service_true_means_ready_once_started() -> None:
    async with rhapsody.Session() as session:
        sleeper = {"uid": "s", "executable": "/bin/sleep", "arguments": ["600"], "service": True}
        futures = await session.submit_tasks(
            [sleeper, {"uid": "t", "executable": "/bin/true", "dependencies": ["s"]}]
        )
        await asyncio.wait_for(futures["t"], 60)
        assert sleeper["state"] == EXECUTING
    assert sleeper["state"] == DONE


@pytest.mark.parametrize(
    ("service", "extra", "message"),
    [
        ({"htp": "/"}, {}, "unknown key 'htp' (did you mean 'http'?)"),
        ({"http": "/"}, {}, "needs '{port}' in the arguments"),
        ({"http": "health"}, {"arguments": ["{port}"]}, "path starting with '/'"),
        ({"tcp": True, "log": "x"}, {"arguments": ["{port}"]}, "one readiness probe"),
        ({"lifetime": "forever"}, {}, "'lifetime' must be one of session, dependents"),
        ({"log": "("}, {}, "not a valid regular expression"),
        ({"tcp": True, "port": 70000}, {}, "'port' must be a port number"),
        ({"http": "/", "auth": "KEY"}, {"arguments": ["{port}"]}, "not in 'secret_environment'"),
        (True, {"retries": 2}, "service 'restarts'"),
        ("yes", {}, "must be True or a dict"),
    ],
)
async def test_bad_service_fields_are_rejected_naming_task_and_field(
    service: object, extra: dict[str, object], message: str
) -> None:
    task = {"uid": "svc", "executable": PY, "service": service, **extra}
    async with rhapsody.Session() as session:
        with pytest.raises(TaskValidationError, match="task 'svc'") as caught:
            await session.submit_tasks([task])
    assert message in str(caught.value)


async def test_a_backend_that_cannot_watch_output_rejects_a_log_probe() -> None:
    backend = await rhapsody.get_backend("noop")
    try:
        with pytest.raises(TaskValidationError, match="cannot watch a running task's output"):
            await backend.submit_tasks(
                [{"uid": "n", "executable": "/bin/true", "service": {"log": "x"}}]
            )
    finally:
        await backend.shutdown()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
async def test_redis_server_as_a_service_used_through_its_endpoint() -> None:
    redis = redis_server()
    writer, reader = redis_client("set", "SET key 42"), redis_client("get", "GET key", "set")
    async with rhapsody.Session() as session:
        futures = await session.submit_tasks([redis, writer, reader])
        await asyncio.wait_for(asyncio.gather(futures["set"], futures["get"]), 60)
    assert writer["stdout"].strip() == "+OK"
    assert reader["stdout"].split() == ["$2", "42"]
    assert redis["state"] == DONE


async def test_asyncflow_service_workflow_runs_unmodified() -> None:
    asyncflow = pytest.importorskip("radical.asyncflow")
    backend = await ConcurrentExecutionBackend()
    flow = await asyncflow.WorkflowEngine.create(backend=backend)
    try:

        @flow.function_task(service=True)
        async def server() -> None:
            await asyncio.sleep(600)

        @flow.function_task
        async def client(dep: object) -> str:
            return "used the service"

        svc = server()
        result = await asyncio.wait_for(client(svc), 60)
        assert result == "used the service"
    finally:
        await flow.shutdown()
    assert sys.modules.get("radical.asyncflow") is asyncflow


async def test_telemetry_reports_each_service_ready_with_its_endpoint() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from rhapsody.telemetry import ServiceReady

    server = tcp_server()
    seen: list[ServiceReady] = []
    async with rhapsody.Session() as session:
        telemetry = await session.start_telemetry()
        telemetry.subscribe(
            lambda event: seen.append(event) if isinstance(event, ServiceReady) else None
        )
        futures = await session.submit_tasks([server])
        await asyncio.wait_for(futures["tcp"], 60)
        assert telemetry.services[0]["endpoint"] == server["endpoint"]
    assert [(e.task_id, e.endpoint, e.backend) for e in seen] == [
        ("tcp", server["endpoint"], "concurrent")
    ]


async def test_a_compute_task_object_can_be_a_service() -> None:
    server = rhapsody.ComputeTask(
        executable=PY,
        arguments=["-c", TCP_SERVER, "{port}", "{host}"],
        service={"tcp": True},
        uid="obj",
    )
    with pytest.raises(TaskValidationError, match="unknown key 'tpc'"):
        rhapsody.ComputeTask(executable=PY, service={"tpc": True})
    async with rhapsody.Session() as session:
        await session.submit_tasks([server])
        ready = await asyncio.wait_for(server, 60)  # awaiting a service: until it is ready
        assert ready is server and server.state == EXECUTING and server.endpoint
    assert server.state == DONE


async def test_a_plain_function_on_a_thread_cannot_be_a_service() -> None:
    async with rhapsody.Session() as session:
        with pytest.raises(TaskValidationError, match="cannot be stopped"):
            await session.submit_tasks([{"uid": "f", "function": print, "service": True}])
        # in its own process it can: stopping kills the process
        isolated = {"uid": "p", "function": _serve_forever, "isolation": "process", "service": True}
        futures = await session.submit_tasks(
            [isolated, {"uid": "after", "executable": "/bin/true", "dependencies": ["p"]}]
        )
        await asyncio.wait_for(futures["after"], 60)
        assert isolated["state"] == EXECUTING
    assert isolated["state"] == DONE


def _serve_forever() -> None:
    import time

    time.sleep(600)
