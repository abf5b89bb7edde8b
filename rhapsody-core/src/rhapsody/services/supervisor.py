"""`ServiceRun`: what the engine keeps for one service task while it runs.

The engine (backends/base.py) launches a service's attempts like any task's; this module holds
what differs: the address (host, port) of each attempt, put into the task's arguments and
environment, the readiness probe raced against the attempt, and the bookkeeping of who uses the
service (for the "dependents" lifetime).

The engine chooses the port on this host, unless the backend `chooses_service_ports`: that
backend calls `locate` where the service runs and reports the address it got through
`ExecutionContext.service_address`, which the probe waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import attrs

from rhapsody.services import probes
from rhapsody.services.spec import HOST_PLACEHOLDER, PORT_PLACEHOLDER, ServiceSpec
from rhapsody.task import TaskDescription


def free_port(host: str) -> int:
    """A port nobody listens on at `host` now (the service binds it right after)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def locate(task: TaskDescription, host: str) -> tuple[TaskDescription, int | None]:
    """Service `task` as it runs at `host`, and its port: `{host}` replaced by `host`, `{port}`
    by the spec's fixed port or, where the task uses `{port}`, a port free at `host` now
    (None: no port). Called where the port is chosen: by the engine, or, for a backend that
    `chooses_service_ports`, by the backend where the service runs."""
    port = task.service.port if task.service is not None else None
    if port is None and uses_port(task):
        port = free_port(host)
    return with_address(task, host, port), port


def uses_port(task: TaskDescription) -> bool:
    """Whether `{port}` appears where it is replaced: arguments, environment, function args."""
    texts = [*task.arguments, *(task.environment or {}).values()]
    texts += [a for a in (*task.args, *task.kwargs.values()) if isinstance(a, str)]
    return any(PORT_PLACEHOLDER in text for text in texts)


def fill(text: str, host: str, port: int | None) -> str:
    """`text` with `{host}` and, where there is a port, `{port}` replaced."""
    text = text.replace(HOST_PLACEHOLDER, host)
    return text if port is None else text.replace(PORT_PLACEHOLDER, str(port))


def with_address(task: TaskDescription, host: str, port: int | None) -> TaskDescription:
    """`task` with `{host}` and `{port}` replaced (plain text replacement: nothing else
    expands; `{port}` stays as it is when there is no port)."""

    def put(value: Any) -> Any:
        return fill(value, host, port) if isinstance(value, str) else value

    environment = task.environment
    if environment is not None:
        environment = {k: put(v) for k, v in environment.items()}
    return attrs.evolve(
        task,
        arguments=tuple(put(a) for a in task.arguments),
        environment=environment,
        args=tuple(put(a) for a in task.args),
        kwargs={k: put(v) for k, v in task.kwargs.items()},
    )


class ServiceRun:
    """The live state of one service task (attached to its engine node)."""

    __slots__ = (
        "host",
        "located",
        "log",
        "port",
        "ready",
        "reported",
        "spec",
        "started",
        "stopping",
        "users",
    )

    def __init__(self, spec: ServiceSpec, host: str, *, reported: bool = False) -> None:
        self.spec = spec
        self.host = host  # where the engine chooses ports; then where the attempt listens
        self.reported = reported  # the backend chooses the address and reports it
        self.port: int | None = None
        self.ready = False
        self.stopping = False  # the runtime stops it (shutdown, lifetime): it ends DONE
        self.users: set[str] = set()  # uids of unfinished dependents
        self.started: asyncio.Future[None] | None = None
        self.located: asyncio.Future[None] | None = None  # the attempt's address is known
        self.log: probes.LogWatch | None = None

    def prepare(self, task: TaskDescription) -> TaskDescription:
        """The attempt's task, before it is launched: its address filled in, unless the
        backend fills it in where the service runs (and reports it: `at`)."""
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.located = loop.create_future()
        self.log = probes.LogWatch(self.spec.pattern) if self.spec.pattern is not None else None
        if self.reported:
            self.port = None
            return task
        task, self.port = locate(task, self.host)
        self.located.set_result(None)
        return task

    def at(self, host: str, port: int | None) -> None:
        """The backend's report of where this attempt listens (`ExecutionContext.
        service_address`); the first report of an attempt counts."""
        if self.reported and self.located is not None and not self.located.done():
            self.host, self.port = host, port
            self.located.set_result(None)

    def endpoint(self) -> str | None:
        if self.port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        where = f"{host}:{self.port}"
        return f"http://{where}" if self.spec.probe == "http" else where

    def on_started(self) -> None:
        if self.started is not None and not self.started.done():
            self.started.set_result(None)

    async def wait_ready(self, uid: str, token: str | None) -> str | None:
        """Return the endpoint once the probe passes (the caller bounds the wait)."""
        spec = self.spec
        assert self.started is not None and self.located is not None
        await self.started
        await self.located
        if spec.probe == "http":
            assert self.port is not None
            await probes.http_ready(self.host, self.port, spec.path, token)
        elif spec.probe == "tcp":
            assert self.port is not None
            await probes.tcp_ready(self.host, self.port)
        elif spec.probe == "log":
            assert self.log is not None
            await self.log.matched
        elif spec.probe == "publish":
            return await probes.published(uid, spec.timeout)
        return self.endpoint()


async def until_ready(
    run: ServiceRun, uid: str, token: str | None, attempt: asyncio.Future[Any]
) -> tuple[bool, str | None]:
    """Race the probe against the attempt for at most the spec's start-up timeout, counted
    from the attempt's start (`ctx.started()`).

    Returns (True, endpoint) once ready; (False, None) when the attempt ended first (the caller
    reads its outcome); (False, reason) when the probe failed or timed out.
    """
    # The timeout counts from the attempt's start: a backend that queues tasks (dask, a pilot)
    # may hold it longer than that before a worker or core is free.
    assert run.started is not None
    await asyncio.wait([run.started, attempt], return_when=asyncio.FIRST_COMPLETED)
    if not run.started.done():
        return False, None
    probe = asyncio.ensure_future(run.wait_ready(uid, token))
    try:
        done, _ = await asyncio.wait(
            [probe, attempt], timeout=run.spec.timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        if not probe.done():
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
    if probe in done and not probe.cancelled():
        error = probe.exception()
        if error is None:
            return True, probe.result()
        if attempt not in done:
            return False, f"service not ready: {error}"
    if attempt in done:
        return False, None
    what = {"http": f"GET {run.spec.path}", "tcp": "its port", "log": "its log"}
    probe_name = what.get(run.spec.probe or "", "the start")
    return False, f"service not ready within {run.spec.timeout:g} s (waited for {probe_name})"
