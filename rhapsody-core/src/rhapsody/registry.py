"""A loopback-only service registry: service tasks publish `name -> endpoint`, dependents find it.

A task that starts a service (a model server, a database) learns its own address only once it
runs; the tasks that use it are often submitted before that. `Session.registry_start()` runs a
`ServiceRegistry` on the session's event loop: the service publishes its endpoint, and a
dependent looks it up, waiting (bounded) until it appears.

The server listens on 127.0.0.1 only and answers only requests that carry its random token, so
other users of a shared node can reach the port but can neither read nor write entries. Tasks
find it through the environment variable `RHAPSODY_REGISTRY` (`127.0.0.1:PORT/TOKEN`), which
the session sets in its own process while the registry runs; processes started after that
(executable tasks, isolated function tasks, local workers) inherit it.

Wire protocol, one JSON object per line each way (requests carry `"token"`):
`{"op": "publish", "name": N, "endpoint": E}`, `{"op": "unpublish", "name": N}`,
`{"op": "lookup", "name": N, "wait": SECONDS}`, `{"op": "list"}`;
replies are `{"ok": true, ...}` or `{"ok": false, "error": MESSAGE}`.

From the command line (for executable services): `python -m rhapsody.registry publish NAME
ENDPOINT`, `python -m rhapsody.registry lookup NAME --wait 30`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import os
import secrets
import socket
import sys
from collections.abc import Sequence
from typing import Any

from rhapsody._loopback import HOST, LoopbackServer, bounded
from rhapsody.errors import RhapsodyError

ENV_VAR = "RHAPSODY_REGISTRY"
# One request line at most: names and endpoints are short strings.
MAX_LINE = 64 * 1024
# How long a single lookup may ask the server to wait.
MAX_WAIT = 3600.0


class RegistryError(RhapsodyError):
    """The registry cannot be reached, refused a request, or is not configured."""


class ServiceNotFoundError(RegistryError, LookupError):
    """No service of that name was published (within the time waited)."""


class ServiceRegistry(LoopbackServer):
    """The server. Create it, `await start()`, and `await stop()` when done (a Session does)."""

    _limit = MAX_LINE

    def __init__(self) -> None:
        super().__init__()
        self._entries: dict[str, str] = {}
        self._token = secrets.token_urlsafe(16)
        self._changed: asyncio.Condition | None = None

    @property
    def token(self) -> str:
        """The secret every request must carry."""
        return self._token

    def _address(self, port: int) -> str:
        return f"{HOST}:{port}/{self._token}"  # what tasks use: the token goes with it

    async def start(self) -> str:
        """Listen (on the port `bind` took, or a free one) and answer; returns the address.
        `stop()` closes the port and every open connection (pending lookups end with an
        error)."""
        address = self.bind()
        if self._changed is None:
            self._changed = asyncio.Condition()
        await self._serve_on_loop(self._serve)
        return address

    # -- in-process use (the session's own code, the proxy) ---------------------------------
    @property
    def entries(self) -> dict[str, str]:
        """A copy of what is published now."""
        return dict(self._entries)

    def get(self, name: str) -> str | None:
        return self._entries.get(name)

    async def publish(self, name: str, endpoint: str) -> None:
        """Publish (or replace) `name`; wakes the lookups waiting for it."""
        _check_name(name)
        if not isinstance(endpoint, str) or not endpoint:
            raise RegistryError(f"endpoint of {name!r} must be a non-empty string")
        self._entries[name] = endpoint
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    def unpublish(self, name: str) -> bool:
        """Remove `name`; False when it was not published."""
        return self._entries.pop(name, None) is not None

    async def wait_for(self, name: str, timeout: float) -> str:
        """The endpoint of `name`, waiting up to `timeout` seconds for it to be published."""
        endpoint = self._entries.get(name)
        if endpoint is not None:
            return endpoint
        if self._changed is None:
            raise ServiceNotFoundError(f"no service {name!r} is published")
        try:
            async with self._changed:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: name in self._entries), timeout
                )
        except asyncio.TimeoutError:
            raise ServiceNotFoundError(
                f"no service {name!r} was published within {timeout:g} s"
            ) from None
        return self._entries[name]

    # -- the wire protocol --------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, ConnectionError):  # line over MAX_LINE, peer reset
                    return
                if not line:
                    return
                reply = await self._answer(line)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise RegistryError("a request must be a JSON object")
            token = request.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(token, self._token):
                raise RegistryError("wrong or missing token")
            op = request.get("op")
            if op == "publish":
                await self.publish(_string(request, "name"), _string(request, "endpoint"))
                return {"ok": True}
            if op == "unpublish":
                return {"ok": True, "removed": self.unpublish(_string(request, "name"))}
            if op == "lookup":
                name = _string(request, "name")
                wait = request.get("wait", 0)
                if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
                    raise RegistryError(f"wait must be a number of seconds >= 0, got {wait!r}")
                endpoint = await self.wait_for(name, min(float(wait), MAX_WAIT))
                return {"ok": True, "endpoint": endpoint}
            if op == "list":
                return {"ok": True, "entries": self.entries}
            raise RegistryError(f"unknown op {op!r}")
        except ServiceNotFoundError as exc:
            return {"ok": False, "error": str(exc), "not_found": True}
        except (RegistryError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise RegistryError(f"a service name must be a non-empty string, got {name!r}")


def _string(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise RegistryError(f"{key!r} must be a non-empty string, got {value!r}")
    return value


# -- clients, for tasks ---------------------------------------------------------------------------
def _locate(address: str | None) -> tuple[str, int, str]:
    address = address or os.environ.get(ENV_VAR)
    if not address:
        raise RegistryError(
            f"no registry address: pass address= or set {ENV_VAR} "
            "(a Session sets it once `await session.registry_start()` ran)"
        )
    hostport, _, token = address.partition("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not token:
        raise RegistryError(f"malformed registry address {address!r} (want host:port/token)")
    return host, int(port), token


def _encode(token: str, op: str, fields: dict[str, Any]) -> bytes:
    return json.dumps({"op": op, "token": token, **fields}).encode() + b"\n"


def _decode(line: bytes) -> dict[str, Any]:
    if not line:
        raise RegistryError("the registry closed the connection (is the session closed?)")
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise RegistryError(f"not a registry reply: {line[:80]!r}")
    if not reply.get("ok"):
        error = ServiceNotFoundError if reply.get("not_found") else RegistryError
        raise error(reply.get("error", "request refused"))
    return reply


def _request(address: str | None, op: str, timeout: float, **fields: Any) -> dict[str, Any]:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # blocking here would stall this loop, which may be the one serving the registry
        raise RegistryError(f"called from async code: use 'await rhapsody.registry.a{op}(...)'")
    host, port, token = _locate(address)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(_encode(token, op, fields))
            with conn.makefile("rb") as stream:
                return _decode(stream.readline(MAX_LINE))
    except OSError as exc:
        raise RegistryError(f"registry at {host}:{port} unreachable: {exc}") from exc


async def _arequest(address: str | None, op: str, timeout: float, **fields: Any) -> dict[str, Any]:
    host, port, token = _locate(address)

    async def exchange() -> dict[str, Any]:
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE)
        try:
            writer.write(_encode(token, op, fields))
            await writer.drain()
            return _decode(await reader.readline())
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    try:
        return await bounded(exchange(), timeout)  # a cancellation stays one
    except (OSError, asyncio.TimeoutError) as exc:
        raise RegistryError(f"registry at {host}:{port} unreachable: {exc!r}") from exc


def publish(name: str, endpoint: str, *, address: str | None = None, timeout: float = 10.0) -> None:
    """Publish `endpoint` (e.g. `host:port` or a URL) under `name`. From plain (non-async) code."""
    _request(address, "publish", timeout, name=name, endpoint=endpoint)


def lookup(name: str, *, wait: float = 0.0, address: str | None = None) -> str:
    """The endpoint published as `name`, waiting up to `wait` seconds for it to appear.
    Raises `ServiceNotFoundError` when it does not."""
    reply = _request(address, "lookup", wait + 10.0, name=name, wait=wait)
    return str(reply["endpoint"])


def unpublish(name: str, *, address: str | None = None, timeout: float = 10.0) -> bool:
    """Remove `name`; False when it was not published."""
    return bool(_request(address, "unpublish", timeout, name=name)["removed"])


async def apublish(
    name: str, endpoint: str, *, address: str | None = None, timeout: float = 10.0
) -> None:
    """`publish` for `async def` tasks."""
    await _arequest(address, "publish", timeout, name=name, endpoint=endpoint)


async def alookup(name: str, *, wait: float = 0.0, address: str | None = None) -> str:
    """`lookup` for `async def` tasks."""
    reply = await _arequest(address, "lookup", wait + 10.0, name=name, wait=wait)
    return str(reply["endpoint"])


async def aunpublish(name: str, *, address: str | None = None, timeout: float = 10.0) -> bool:
    """`unpublish` for `async def` tasks."""
    return bool((await _arequest(address, "unpublish", timeout, name=name))["removed"])


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rhapsody.registry publish|lookup|unpublish ...` for executable tasks."""
    parser = argparse.ArgumentParser(prog="python -m rhapsody.registry")
    parser.add_argument("--address", help=f"registry address (default: ${ENV_VAR})")
    sub = parser.add_subparsers(dest="op", required=True)
    pub = sub.add_parser("publish", help="publish NAME -> ENDPOINT")
    pub.add_argument("name")
    pub.add_argument("endpoint")
    look = sub.add_parser("lookup", help="print the endpoint of NAME")
    look.add_argument("name")
    look.add_argument("--wait", type=float, default=0.0, help="seconds to wait for it")
    unpub = sub.add_parser("unpublish", help="remove NAME")
    unpub.add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.op == "publish":
            publish(args.name, args.endpoint, address=args.address)
        elif args.op == "lookup":
            print(lookup(args.name, wait=args.wait, address=args.address))
        else:
            return 0 if unpublish(args.name, address=args.address) else 1
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
