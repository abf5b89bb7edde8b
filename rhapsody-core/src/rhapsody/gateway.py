"""One loopback HTTP gateway to every service published in the session's registry.

`Session.proxy_start()` (no service named) opens `127.0.0.1:PORT`; a request for
`http://127.0.0.1:PORT/<service>/<path>` is forwarded to `<path>` of the endpoint `<service>`
publishes (waiting, bounded, for it to be published). Every user of a shared node can reach
127.0.0.1, so, like the registry, the gateway admits only requests that carry the session's
token: `Authorization: Bearer <token>` or `X-Rhapsody-Token: <token>` (`session.token`). The
token header is not passed on to the service.

One request per connection: the gateway asks the service to close the connection after its
answer (`Connection: close`), so the next request, perhaps for another service, is routed
afresh. Raw TCP services (databases, gRPC) are reached through per-service proxies instead
(`Session.proxy_start(name)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging

from rhapsody._loopback import LoopbackServer
from rhapsody.proxy import _pipe, open_service
from rhapsody.registry import RegistryError, ServiceRegistry

logger = logging.getLogger("rhapsody")

_DROPPED = frozenset({b"authorization", b"x-rhapsody-token", b"connection", b"host", b"keep-alive"})


class ServiceGateway(LoopbackServer):
    """Forwards `127.0.0.1:port/<service>/...` to the service's published HTTP endpoint."""

    def __init__(
        self,
        registry: ServiceRegistry,
        token: str,
        *,
        port: int = 0,
        resolve_timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(port)
        self._registry = registry
        self._token = token.encode()
        self._resolve_timeout = resolve_timeout
        self._connect_timeout = connect_timeout

    async def start(self) -> str:
        """Listen and forward; returns `127.0.0.1:port`. (`stop()` closes the port and cuts
        every forwarded connection.)"""
        address = self.bind()
        await self._serve_on_loop(self._serve)
        return address

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        writers = [writer]
        try:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head[:-4].split(b"\r\n")
            parts = lines[0].split(b" ")
            headers = []
            for line in lines[1:]:
                field, _, value = line.partition(b":")
                headers.append((field.strip().lower(), field, value.strip()))
            if len(parts) != 3 or not parts[1].startswith(b"/"):
                return await _reply(writer, 400, "not an HTTP request for /<service>/<path>")
            if not self._admitted(headers):
                return await _reply(writer, 401, "this gateway needs the session's token")
            service, _, rest = parts[1][1:].partition(b"/")
            name = service.decode("utf-8", "replace")
            try:
                where, up_reader, up_writer = await open_service(
                    self._registry, name, self._resolve_timeout, self._connect_timeout
                )
            except (RegistryError, OSError, asyncio.TimeoutError) as exc:
                return await _reply(writer, 502, f"service {name!r}: {exc}")
            writers.append(up_writer)
            kept = [raw + b": " + value for low, raw, value in headers if low not in _DROPPED]
            request = [
                b" ".join([parts[0], b"/" + rest, parts[2]]),
                b"Host: " + where.encode(),
                *kept,
                b"Connection: close",
            ]
            up_writer.write(b"\r\n".join(request) + b"\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            for each in writers:
                each.close()

    def _admitted(self, headers: list[tuple[bytes, bytes, bytes]]) -> bool:
        for low, _, value in headers:
            if low == b"authorization" and value[:7].lower() == b"bearer ":
                value = value[7:].strip()
            elif low != b"x-rhapsody-token":
                continue
            if hmac.compare_digest(value, self._token):
                return True
        return False


async def _reply(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    reason = {400: "Bad Request", 401: "Unauthorized", 502: "Bad Gateway"}[status]
    body = (message + "\n").encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()
