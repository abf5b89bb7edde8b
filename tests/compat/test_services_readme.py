"""The reference README's Core Concepts calls, verbatim, from synchronous code; the gateway
that `proxy_start()` opens reaches every published service by name, with the session's token
(issue 16, item 12)."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request

import pytest

import rhapsody
from rhapsody import registry as service_registry


async def _http_service() -> tuple[asyncio.AbstractServer, str]:
    """Answers every request with the request line and whether a token header reached it."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        leaked = "token" in head.lower() or "authorization" in head.lower()
        body = f"{head.splitlines()[0]} leaked={leaked}".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


def _get(url: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_core_concepts_verbatim_then_the_gateway_reaches_services_by_name() -> None:
    session = rhapsody.Session()
    session.proxy_start()
    session.registry_start()
    gateway, token = session.gateway, session.token
    assert gateway is not None and gateway.startswith("127.0.0.1:") and token

    async def main() -> list[tuple[int, str]]:
        server, endpoint = await _http_service()
        try:
            async with session:  # the registry and the gateway answer from here on
                await service_registry.apublish("web", endpoint)  # as a service task does
                base = f"http://{gateway}"
                return [
                    await asyncio.to_thread(_get, f"{base}/web/v1/models?x=1", token),
                    await asyncio.to_thread(_get, f"{base}/web/v1/models", None),
                    await asyncio.to_thread(_get, f"{base}/web/", "wrong-token"),
                ]
        finally:
            server.close()

    ok, anonymous, wrong = asyncio.run(main())
    assert ok == (200, "GET /v1/models?x=1 HTTP/1.1 leaked=False")
    assert anonymous[0] == 401 and wrong[0] == 401


def test_unknown_service_is_a_bad_gateway_after_the_bounded_wait() -> None:
    async def main() -> tuple[int, str]:
        async with rhapsody.Session() as session:
            gateway = await session.proxy_start(resolve_timeout=0.2)
            return await asyncio.to_thread(_get, f"http://{gateway}/nothing/", session.token)

    status, text = asyncio.run(main())
    assert status == 502 and "'nothing'" in text


def test_sync_start_and_close_without_an_event_loop_gives_the_ports_back() -> None:
    session = rhapsody.Session()
    address = session.registry_start()
    proxy = session.proxy_start("db")
    assert isinstance(address, str) and session.registry_start() == address
    session.close()
    for hostport in (address.split("/")[0], proxy):
        host, port = hostport.split(":")
        with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port))):
            pass


def test_the_awaitable_forms_still_work() -> None:
    async def main() -> tuple[str, str, str]:
        async with rhapsody.Session() as session:
            address = await session.registry_start()
            proxy = await session.proxy_start("svc")
            assert await session.proxy_start("svc") == proxy
            await service_registry.apublish("svc", "127.0.0.1:9", address=address)
            found = await asyncio.to_thread(service_registry.lookup, "svc", address=address)
            return address, proxy, found

    address, proxy, found = asyncio.run(main())
    assert address.startswith("127.0.0.1:") and proxy.startswith("127.0.0.1:")
    assert found == "127.0.0.1:9"
