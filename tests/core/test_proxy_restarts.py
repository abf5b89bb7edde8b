"""A loopback proxy follows its service across restarts (docs/session.md, "Loopback proxies";
docs/services.md, "Restarts"): the service task dies, the engine restarts it on a new port and
re-publishes it, and the next connection through the same proxy reaches the new process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import anyio
import pytest

import rhapsody
from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.proxy import split_endpoint
from rhapsody.states import EXECUTING

pytestmark = pytest.mark.anyio

WAIT = 60.0  # bound on every wait: a failure, never a hang
# Listens on 127.0.0.1:argv[1] and answers each connection with "<its pid> <its port>".
SERVER = (
    "import os,socket,sys;p=int(sys.argv[1]);s=socket.create_server(('127.0.0.1',p));"
    "exec('while True:\\n c,_=s.accept();c.sendall(b\"%d %d\\\\n\" % (os.getpid(),p));c.close()')"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def ask(address: str) -> tuple[int, int]:
    """(pid, port) of the server process a new connection to `address` reaches."""
    host, port = split_endpoint(address)
    with anyio.fail_after(WAIT):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            line = await reader.readline()
        finally:
            writer.close()
    assert line, f"the connection through {address} was dropped (see the proxy's log)"
    pid, served = line.split()
    return int(pid), int(served)


async def test_a_proxy_reaches_the_restarted_service_on_its_new_port() -> None:
    service = {
        "uid": "svc",
        "executable": sys.executable,
        "arguments": ["-c", SERVER, "{port}"],
        "service": {"tcp": True, "restarts": 1},
    }
    async with rhapsody.Session([ConcurrentExecutionBackend(cores=2)]) as session:
        local = await session.proxy_start("svc", resolve_timeout=WAIT)
        [ready] = await session.submit_tasks([service])
        with anyio.fail_after(WAIT):
            await ready
        first_pid, first_port = await ask(local)  # (the proxy waits for the publication)
        assert session.registry is not None
        first_endpoint = session.registry.entries["svc"]
        assert first_port == split_endpoint(first_endpoint)[1]
        os.kill(first_pid, signal.SIGKILL)  # a crash after it was ready: it is restarted
        with anyio.fail_after(WAIT):
            while session.registry.entries.get("svc", first_endpoint) == first_endpoint:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        second_endpoint = session.registry.entries["svc"]
        assert service["endpoint"] == second_endpoint and service["restarts"] == 1
        assert service["state"] == EXECUTING
        second_pid, second_port = await ask(local)  # the same proxy, a new connection
        assert second_pid != first_pid, "the proxy reached the killed process"
        assert second_port == split_endpoint(second_endpoint)[1] != first_port
