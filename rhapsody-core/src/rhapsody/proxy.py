"""A loopback TCP port that forwards each connection to a service found in the registry.

A service task publishes wherever it happens to run (`node17:41233`); the code that talks to it
(the driver script, a notebook, an `ssh -L` tunnel from a laptop) wants one fixed local address.
`Session.proxy_start("llm")` opens `127.0.0.1:PORT` and, for every connection, looks `llm` up in
the session's registry (waiting, bounded, for it to be published), connects there and copies
bytes both ways. Looking up per connection means a restarted service that publishes a new
endpoint is picked up by the next connection.

It forwards raw TCP (HTTP, gRPC, ZMQ, anything) and adds no authentication: a token would
need a handshake the service's own clients (redis-cli, a gRPC stub) cannot make. Like the
service itself (which listens where it runs), it is reachable by every user of this host who
can reach the loopback interface; protect the service with its own credentials, or reach HTTP
services through the token-checking gateway (`rhapsody.gateway`, `Session.proxy_start()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from rhapsody._loopback import LoopbackServer, connect
from rhapsody.registry import RegistryError, ServiceRegistry

logger = logging.getLogger("rhapsody")

_CHUNK = 64 * 1024


class ServiceProxy(LoopbackServer):
    """Forwards `127.0.0.1:port` to the endpoint published as `service`."""

    def __init__(
        self,
        registry: ServiceRegistry,
        service: str,
        *,
        port: int = 0,
        resolve_timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(port)
        self.service = service
        self._registry = registry
        self._resolve_timeout = resolve_timeout
        self._connect_timeout = connect_timeout

    async def start(self) -> str:
        """Listen and forward; returns `127.0.0.1:port`. (`stop()` closes the port and cuts
        every forwarded connection.)"""
        address = self.bind()
        await self._serve_on_loop(self._forward)
        return address

    async def _forward(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        writers = [client_writer]
        try:
            _, upstream_reader, upstream_writer = await open_service(
                self._registry, self.service, self._resolve_timeout, self._connect_timeout
            )
            writers.append(upstream_writer)
            await asyncio.gather(
                _pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer)
            )
        except (RegistryError, OSError, asyncio.TimeoutError) as exc:
            logger.warning("proxy for %r: connection dropped: %s", self.service, exc)
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            self._connections.discard(task)
            for writer in writers:
                writer.close()


async def open_service(
    registry: ServiceRegistry, name: str, resolve_timeout: float, connect_timeout: float
) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the endpoint `name` publishes (waiting, bounded, for it to be published);
    returns its `host:port` and the connection."""
    endpoint = await registry.wait_for(name, resolve_timeout)
    host, port = split_endpoint(endpoint)
    reader, writer = await connect(host, port, connect_timeout)
    return f"{host}:{port}", reader, writer


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close so the other side sees the end of the stream."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except ConnectionError:
        with contextlib.suppress(Exception):
            writer.close()


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or a URL with a port -> (host, port)."""
    parts = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise RegistryError(f"endpoint {endpoint!r} names no host:port to forward to")
    return parts.hostname, port
