"""The live dashboard: one page on 127.0.0.1 whose URL holds a random token, fed by a stream of
server-sent events (no reloads). A small asyncio HTTP server on the session's loop; any request
whose path does not start with the token gets 403.

Each update carries what changed since the previous one: task counts by state (and their
history), attempts that started or ended (the timeline per node and slot), resource samples,
failures with their reasons, and services with their endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from rhapsody.telemetry.attempts import as_dict

if TYPE_CHECKING:
    from rhapsody.telemetry.manager import TelemetryManager

HOST = "127.0.0.1"
MAX_REQUEST = 16384


class Dashboard:
    """Serves `manager`'s live state; `await start()` returns the URL."""

    def __init__(self, manager: TelemetryManager, *, port: int = 0, interval: float = 0.5) -> None:
        if interval <= 0:
            raise ValueError(f"dashboard update interval must be > 0 s, got {interval}")
        self._manager = manager
        self._port = port
        self.interval = interval
        self.token = secrets.token_urlsafe(24)
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        self.url: str | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, HOST, self._port)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://{HOST}:{port}/{self.token}/"
        return self.url

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for stream in list(self._streams):
            stream.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if len(head) > MAX_REQUEST:
                raise ValueError("request too large")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            asyncio.TimeoutError,
            ValueError,
            UnicodeDecodeError,
        ):
            writer.close()
            return
        path = target.split("?", 1)[0]
        prefix = f"/{self.token}/"
        if not secrets.compare_digest(path[: len(prefix)].encode(), prefix.encode()):
            await _respond(writer, 403, "text/plain", b"forbidden: this URL needs the token\n")
            return
        rest = path[len(prefix) :]
        if method != "GET":
            await _respond(writer, 405, "text/plain", b"GET only\n")
        elif rest == "":
            page = resources.files("rhapsody.telemetry").joinpath("dashboard.html").read_bytes()
            await _respond(writer, 200, "text/html; charset=utf-8", page)
        elif rest == "events":
            task = asyncio.current_task()
            assert task is not None
            self._streams.add(task)
            try:
                await self._stream(writer)
            finally:
                self._streams.discard(task)
        elif rest == "summary":
            body = json.dumps(self._manager.summary(), default=str).encode()
            await _respond(writer, 200, "application/json", body)
        else:
            await _respond(writer, 404, "text/plain", b"not found\n")

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
            b"Connection: keep-alive\r\n\r\n"
        )
        cursor = _Cursor()
        try:
            while True:
                update = self._update(cursor)
                writer.write(b"data: " + json.dumps(update, default=str).encode() + b"\n\n")
                await writer.drain()
                if not self._manager.running:
                    break
                await asyncio.sleep(self.interval)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _update(self, cursor: _Cursor) -> dict[str, Any]:
        manager = self._manager
        records = manager.records
        update: dict[str, Any] = {
            "time": time.time(),
            "session_id": manager.session_id,
            "origin": manager.started_at,
            "running_now": manager.running,
            "counts": manager.state_counts(),
            "totals": manager.task_count(),
            "attempts": [as_dict(r) for r in records[cursor.attempts : len(records)]],
            # Enough to draw; a view of more than 2,000 open bars is unreadable anyway.
            "running": manager.running_attempts()[:2000],
            "failures": manager.failures[cursor.failures :],
            "samples": manager.samples[cursor.samples :],
            "services": manager.services[cursor.services :],
        }
        cursor.attempts += len(update["attempts"])
        cursor.failures += len(update["failures"])
        cursor.samples += len(update["samples"])
        cursor.services += len(update["services"])
        return update


class _Cursor:
    """How much of each list one stream has already sent."""

    def __init__(self) -> None:
        self.attempts = self.failures = self.samples = self.services = 0


async def _respond(writer: asyncio.StreamWriter, status: int, kind: str, body: bytes) -> None:
    reason = {200: "OK", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()
