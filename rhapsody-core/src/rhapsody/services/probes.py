"""Readiness probes: is a service answering yet? Each polls until it is, or raises."""

from __future__ import annotations

import asyncio
import contextlib
import re

from rhapsody._loopback import bounded, connect
from rhapsody.registry import RegistryError, alookup

#: seconds between two tries of a polling probe
POLL = 0.1
_CONNECT_TIMEOUT = 2.0


class LogWatch:
    """Matches the lines of a service's output, as the backend streams it, against a regex."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self._pattern = pattern
        self._partial = b""
        self.matched: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def feed(self, data: bytes) -> None:
        if self.matched.done():
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-65536:]  # an unterminated line is kept, bounded
        for line in lines:
            text = line.decode(errors="replace")
            if self._pattern.search(text):
                self.matched.set_result(text)
                return


async def http_ready(host: str, port: int, path: str, token: str | None = None) -> None:
    """Poll `GET path` until it answers 2xx."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}Connection: close\r\n\r\n"
    ).encode()
    while True:
        status = await _http_status(host, port, request)
        if status is not None and 200 <= status < 300:
            return
        await asyncio.sleep(POLL)


async def _http_status(host: str, port: int, request: bytes) -> int | None:
    try:
        reader, writer = await connect(host, port, _CONNECT_TIMEOUT)
    except (OSError, asyncio.TimeoutError):
        return None
    try:
        writer.write(request)
        await writer.drain()
        line = await bounded(reader.readline(), 30.0)
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
    except (OSError, asyncio.TimeoutError, ValueError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def tcp_ready(host: str, port: int) -> None:
    """Poll until `host:port` accepts a connection."""
    while True:
        try:
            _, writer = await connect(host, port, _CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(POLL)
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return


async def published(name: str, timeout: float) -> str:
    """The endpoint the service publishes as `name` in the session registry."""
    try:
        return await alookup(name, wait=timeout)
    except RegistryError as exc:
        raise ServiceStartError(f"it did not publish itself as {name!r}: {exc}") from exc


class ServiceStartError(Exception):
    """A service could not be judged ready (the message says why)."""
