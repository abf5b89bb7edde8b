"""Shared by the session's loopback services (registry, proxy, gateway) and the probes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

HOST = "127.0.0.1"
T = TypeVar("T")


async def bounded(awaitable: Awaitable[T], timeout: float) -> T:
    """`awaitable`'s result within `timeout` seconds, else `asyncio.TimeoutError`.

    Unlike `asyncio.wait_for` of Python 3.10/3.11, a cancellation that meets the awaitable's
    failure is never turned into that failure (a retry loop catching OSError would then go on
    after its cancellation)."""
    inner = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait([inner], timeout=timeout)
    except asyncio.CancelledError:
        inner.cancel()
        raise
    if not done:
        inner.cancel()
        raise asyncio.TimeoutError
    return inner.result()


async def connect(
    host: str, port: int, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """`asyncio.open_connection` bounded by `timeout` (as `bounded`); a connection that was
    made just as the caller was cancelled is closed, not leaked."""
    opening = asyncio.ensure_future(asyncio.open_connection(host, port))
    try:
        return await bounded(opening, timeout)
    except asyncio.CancelledError:
        if opening.done() and not opening.cancelled() and opening.exception() is None:
            opening.result()[1].close()
        raise


async def close_server(server: asyncio.AbstractServer, connections: set[asyncio.Task[Any]]) -> None:
    """Stop listening, cut every open connection (bounded wait), then wait for the close."""
    server.close()
    for connection in list(connections):
        connection.cancel()
    if connections:
        await asyncio.wait(connections, timeout=5.0)
    await server.wait_closed()


class LoopbackServer:
    """A server on 127.0.0.1 whose port is taken at once (`bind`, no event loop needed) and
    which serves once `start`ed on a loop; connections made meanwhile wait in the backlog."""

    _limit = 64 * 1024

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._server: asyncio.AbstractServer | None = None
        self._socket: socket.socket | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.address: str | None = None

    def bind(self) -> str:
        """Take the port now, without an event loop; returns the address. Connections are
        answered once `start()` ran."""
        if self.address is None:
            self.address = self._address(self._bind_port())
        return self.address

    def _address(self, port: int) -> str:
        return f"{HOST}:{port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> str:
        """Serve on the running loop; returns the address."""
        raise NotImplementedError

    def _bind_port(self) -> int:
        if self._socket is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((HOST, self._port))
                sock.listen(128)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            self._socket = sock
        port: int = self._socket.getsockname()[1]
        return port

    async def _serve_on_loop(self, handler: Callable[..., Awaitable[None]]) -> None:
        if self._closed:  # released before its start ran
            return
        self._bind_port()
        if self._server is None:
            self._server = await asyncio.start_server(handler, sock=self._socket, limit=self._limit)

    def release(self) -> None:
        """Give back the port of a server that never started (no loop needed)."""
        self._closed = True
        if self._server is None and self._socket is not None:
            self._socket.close()
            self._socket = None

    async def stop(self) -> None:
        """Close the port and cut every open connection."""
        server, self._server = self._server, None
        self._closed = True
        if server is None:
            self.release()
            return
        self._socket = None
        await close_server(server, self._connections)


class Started(str):
    """The address a `start` call returns: a plain string for synchronous callers, and
    awaitable (`await session.registry_start()`) to wait until the server accepts."""

    _pending: asyncio.Future[Any] | None = None

    def __new__(cls, address: str, pending: asyncio.Future[Any] | None = None) -> Started:
        started = super().__new__(cls, address)
        started._pending = pending
        return started

    def __await__(self) -> Generator[Any, None, str]:
        if self._pending is not None:
            yield from self._pending.__await__()
        return str(self)
