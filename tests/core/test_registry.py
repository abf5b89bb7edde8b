"""The session's loopback service registry and proxy (rhapsody.registry, rhapsody.proxy)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import rhapsody
from rhapsody import registry
from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.errors import SessionError
from rhapsody.proxy import split_endpoint
from rhapsody.registry import ENV_VAR, RegistryError, ServiceNotFoundError

BOUND = 60.0


def run(workflow: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(workflow(), BOUND))


def test_publish_and_lookup_from_async_and_plain_code() -> None:
    async def go() -> None:
        before = os.environ.get(ENV_VAR)
        async with rhapsody.Session() as session:
            address = await session.registry_start()
            assert await session.registry_start() == address  # idempotent
            assert os.environ[ENV_VAR] == address and address.startswith("127.0.0.1:")
            await registry.apublish("db", "127.0.0.1:5432")
            loop = asyncio.get_running_loop()
            # Plain code (a sync function task) runs on a worker thread.
            found = await loop.run_in_executor(None, registry.lookup, "db")
            assert found == "127.0.0.1:5432" and session.registry is not None
            await loop.run_in_executor(None, registry.publish, "web", "http://127.0.0.1:8080/x")
            assert session.registry.entries == {
                "db": "127.0.0.1:5432",
                "web": "http://127.0.0.1:8080/x",
            }
            assert await registry.aunpublish("db") is True
            assert await registry.aunpublish("db") is False
            with pytest.raises(ServiceNotFoundError, match="'db'"):
                await registry.alookup("db", wait=0.05)
        assert os.environ.get(ENV_VAR) == before  # restored by close()
        with pytest.raises(RegistryError, match="unreachable"):
            await registry.alookup("web", address=address)
        with pytest.raises(SessionError, match="closed"):
            await session.registry_start()

    run(go)


def test_lookup_waits_for_a_later_publish() -> None:
    async def go() -> None:
        async with rhapsody.Session() as session:
            await session.registry_start()
            waiting = asyncio.ensure_future(registry.alookup("late", wait=30))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            await registry.apublish("late", "127.0.0.1:1")
            assert await waiting == "127.0.0.1:1"

    run(go)


def test_requests_without_the_token_are_refused() -> None:
    async def go() -> None:
        async with rhapsody.Session() as session:
            address = await session.registry_start()
            hostport = address.split("/")[0]
            with pytest.raises(RegistryError, match="token"):
                await registry.apublish("x", "y", address=f"{hostport}/wrong")
            with pytest.raises(RegistryError, match="malformed"):
                await registry.alookup("x", address=hostport)
            host, port = hostport.split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            for line in (b"not json\n", b"[1]\n", b'{"op": "list", "token": "guess"}\n'):
                writer.write(line)
                reply = json.loads(await reader.readline())
                assert reply["ok"] is False and reply["error"]
            writer.close()
            assert session.registry is not None and session.registry.entries == {}

    run(go)


def test_plain_client_refuses_to_block_an_event_loop() -> None:
    async def go() -> None:
        async with rhapsody.Session() as session:
            await session.registry_start()
            with pytest.raises(RegistryError, match="alookup"):
                registry.lookup("anything")

    run(go)


def test_the_registry_listens_on_loopback_only() -> None:
    async def go() -> None:
        async with rhapsody.Session() as session:
            address = await session.registry_start()
            port = int(address.split("/")[0].rsplit(":", 1)[1])
            outward = _outward_address()
            if outward is None:
                pytest.skip("this host has no non-loopback address")
            with pytest.raises(OSError):
                socket.create_connection((outward, port), timeout=2).close()

    run(go)


def _outward_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_executable_tasks_use_it_through_the_environment(tmp_path: Path) -> None:
    async def go() -> None:
        backend = ConcurrentExecutionBackend(cores=2, work_dir=tmp_path)
        async with rhapsody.Session(backends=[backend]) as session:
            await session.registry_start()
            cli = [sys.executable, "-m", "rhapsody.registry"]
            service = {
                "uid": "svc",
                "executable": cli[0],
                "arguments": [*cli[1:], "publish", "svc", "127.0.0.1:7"],
            }
            client = {
                "uid": "client",
                "executable": cli[0],
                "arguments": [*cli[1:], "lookup", "svc", "--wait", "30"],
            }
            missing = {
                "uid": "missing",
                "executable": cli[0],
                "arguments": [*cli[1:], "lookup", "nope"],
            }
            await session.submit_tasks([client, service, missing])
            await session.wait_tasks()
            assert client["stdout"] == "127.0.0.1:7\n"
            assert missing["state"] == "FAILED" and "no service 'nope'" in missing["stderr"]

    run(go)


def test_proxy_forwards_to_the_published_endpoint() -> None:
    async def go() -> None:
        async def shout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write((await reader.read()).upper())
            await writer.drain()
            writer.close()

        async def ask(address: str, message: bytes) -> bytes:
            host, port = split_endpoint(address)
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(message)
            writer.write_eof()
            answer = await reader.read()
            writer.close()
            return answer

        service = await asyncio.start_server(shout, "127.0.0.1", 0)
        async with service, rhapsody.Session() as session:
            local = await session.proxy_start("shout", resolve_timeout=30)
            assert session.proxies == {"shout": local} and local.startswith("127.0.0.1:")
            assert await session.proxy_start("shout") == local
            # Connect before the service is published: the proxy waits for it.
            early = asyncio.ensure_future(ask(local, b"early"))
            await asyncio.sleep(0.1)
            port = service.sockets[0].getsockname()[1]
            await registry.apublish("shout", f"tcp://127.0.0.1:{port}")
            assert await early == b"EARLY"
            assert await ask(local, b"again") == b"AGAIN"
        with pytest.raises(OSError):
            await ask(local, b"closed")

    run(go)


def test_split_endpoint() -> None:
    assert split_endpoint("node1:80") == ("node1", 80)
    assert split_endpoint("http://10.0.0.2:8000/v1") == ("10.0.0.2", 8000)
    assert split_endpoint("[::1]:9") == ("::1", 9)
    for bad in ("node1", "http://host/x", "host:port"):
        with pytest.raises(RegistryError, match="host:port"):
            split_endpoint(bad)
