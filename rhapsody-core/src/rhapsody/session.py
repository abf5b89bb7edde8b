"""`Session`: one entry point over one or more backends, routing each task by its `backend`.

It also owns the services the workflow's tasks share: a loopback service registry
(`registry_start`) and loopback proxies to registered services (`proxy_start`). A session writes
nothing to disk, unless given a journal (`Session(journal="run.db")`) to record and resume runs.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rhapsody._loopback import LoopbackServer, Started
from rhapsody.backends.base import BaseExecutionBackend, Callback, ServiceCallback, TaskFutures
from rhapsody.errors import SessionError, TaskValidationError
from rhapsody.gateway import ServiceGateway
from rhapsody.inference.request import is_ai_task
from rhapsody.journal import Journal
from rhapsody.links import BackendLinks
from rhapsody.proxy import ServiceProxy
from rhapsody.registry import ENV_VAR, ServiceRegistry
from rhapsody.services.directory import ServiceDirectory
from rhapsody.task import dependency_uids

if TYPE_CHECKING:
    from rhapsody.telemetry import TelemetryManager

_session_ids = itertools.count(1)
# The backends a session creates itself: a task naming one (a task dict submitted to an
# earlier session carries its `backend`) is routed to this session's own.
_DEFAULT_NAMES = frozenset({"concurrent", "inference"})


class Session:
    """Routes tasks to backends and gives one state stream and one shutdown for all of them.

    With no backends, the first submission creates the default (`concurrent`) backend.
    A task's `backend` field names the backend to use (default: the first one).
    With `journal` (a path or a `Journal`), every state change is recorded there and tasks the
    journal holds as DONE with an unchanged description are resumed instead of run again.
    """

    def __init__(
        self,
        backends: Sequence[BaseExecutionBackend] | None = None,
        *,
        uid: str | None = None,
        journal: Journal | str | os.PathLike[str] | None = None,
        work_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.uid = uid or f"session.{next(_session_ids):04d}"
        # Given a work_dir, the task files of this session go to one directory of their own
        # in it (unique: two runs with the same uid do not mix their files).
        self._work_dir = Path(work_dir) if work_dir is not None else None
        self._task_dir = (
            None
            if self._work_dir is None
            else self._work_dir / f"rhapsody.{self.uid}.{secrets.token_hex(4)}"
        )
        self._tasks: dict[str, dict[str, Any]] = {}
        self._backends: dict[str, BaseExecutionBackend] = {}
        self._callbacks: list[Callback] = []
        self._service_callbacks: list[ServiceCallback] = []
        self._links = BackendLinks()  # dependencies across backends
        self._directory = ServiceDirectory()  # ready services, for AI tasks
        self._publishing: set[asyncio.Task[None]] = set()
        self._futures: dict[str, asyncio.Future[Any]] = {}
        self._closed = False
        self._registry: ServiceRegistry | None = None
        self._proxies: dict[str, ServiceProxy] = {}
        self._gateway: ServiceGateway | None = None
        self._unstarted: list[LoopbackServer] = []  # bound, waiting for an event loop
        self._env_before: str | None = None
        self._telemetry: TelemetryManager | None = None
        if journal is not None and not isinstance(journal, Journal):
            journal = Journal(journal)
        self._journal = journal
        if journal is not None:
            self.register_callback(journal.record)
        for backend in backends or ():
            self.add_backend(backend)

    # -- backends --------------------------------------------------------------------------
    @property
    def backends(self) -> dict[str, BaseExecutionBackend]:
        return dict(self._backends)

    @property
    def work_dir(self) -> Path:
        """The directory given as `work_dir` (default: the current directory)."""
        return self._work_dir if self._work_dir is not None else Path.cwd()

    def add_backend(self, backend: BaseExecutionBackend) -> None:
        self._check_open()
        if not isinstance(backend, BaseExecutionBackend):
            from rhapsody.compat.backend import adapt

            backend = adapt(backend)  # rhapsody-py's BaseBackend contract, else SessionError
        if backend.name in self._backends:
            raise SessionError(
                f"two backends are named {backend.name!r}; give each a unique name= "
                "so tasks can be routed to it"
            )
        self._backends[backend.name] = backend
        if self._task_dir is not None and backend._work_dir is None:
            backend._work_dir = self._task_dir  # created on first use
        backend.is_attached = True
        backend.attached_to.append(self.uid)
        for callback in self._callbacks:
            backend.register_callback(callback)
        backend.register_service_callback(self._on_service_ready)
        for service_callback in self._service_callbacks:
            backend.register_service_callback(service_callback)
        if isinstance(getattr(backend, "directory", None), ServiceDirectory):
            backend.directory = self._directory  # type: ignore[attr-defined]  # AI tasks' servers
        if len(self._backends) > 1:  # tasks may now depend on tasks of another backend
            for each in self._backends.values():
                if each.name not in self._links.watching:
                    self._links.watching.add(each.name)
                    each.register_callback(self._links.on_state)

    def register_callback(self, func: Callback) -> None:
        """`func(task, state)` for every state change of every backend of this session."""
        self._callbacks.append(func)
        for backend in self._backends.values():
            backend.register_callback(func)

    def register_service_callback(self, func: ServiceCallback) -> None:
        """`func(task, endpoint)` each time a service task of this session becomes ready."""
        self._service_callbacks.append(func)
        for backend in self._backends.values():
            backend.register_service_callback(func)

    @property
    def journal(self) -> Journal | None:
        """The journal this session records to (None without one)."""
        return self._journal

    # -- tasks -----------------------------------------------------------------------------
    async def submit_tasks(self, tasks: Iterable[dict[str, Any]]) -> TaskFutures:
        """Submit tasks, each to the backend its `backend` field names (default: the first).
        With a journal, tasks it holds as DONE resolve at once instead of running."""
        self._check_open()
        starting = self._start_services()  # registry/proxies started before a loop ran
        if starting is not None:
            await starting
        tasks = list(tasks)
        if any(isinstance(t, dict) and ("service" in t or "is_service" in t) for t in tasks):
            await self.registry_start()  # services publish there; their processes inherit it
        groups = self._route(tasks)  # the whole batch is checked, resumed tasks included
        if self._journal is None:
            futures = await self._submit_routed(tasks, groups)
        else:
            futures = await self._journal.submit(tasks, self._submit_routed, self._adopt_done)
        self._futures.update(futures.items())
        return futures

    async def _submit_routed(
        self,
        tasks: list[dict[str, Any]],
        groups: dict[str, list[dict[str, Any]]] | None = None,
    ) -> TaskFutures:
        """Submit `tasks` in their `groups` (routed here when not given: the journal submits
        only the tasks it does not resume)."""
        by_uid: dict[str, asyncio.Future[Any]] = {}
        if groups is None:
            groups = self._route(tasks)
        for name, group in groups.items():
            for task in group:  # where each task went, as the original reports it
                task["backend"] = name
                if "uid" in task:  # a task without one gets it from its backend, below
                    self._tasks[task["uid"]] = task
        if len(self._backends) > 1:
            self._link_across(groups)
        for name, group in groups.items():
            futures = await self._backends[name].submit_tasks(group)
            by_uid.update(futures.items())
            self._tasks.update((task["uid"], task) for task in group)
        return TaskFutures((task["uid"], by_uid[task["uid"]]) for task in tasks)

    def _adopt_done(self, uids: Iterable[str]) -> None:
        # Any backend's tasks may depend on a resumed task.
        uids = list(uids)
        for backend in self._backends.values():
            backend.adopt_done(uids)

    def _link_across(self, groups: dict[str, list[dict[str, Any]]]) -> None:
        """Tell each backend about the tasks of other backends its tasks depend on."""
        for name, group in groups.items():
            target = self._backends[name]
            for task in group:
                for dep in dependency_uids(task):  # an AI task's services included
                    source = self._tasks.get(dep, {}).get("backend")
                    if source is not None and source != name and source in self._backends:
                        self._links.link(dep, self._backends[source], target)

    def _on_service_ready(self, task: dict[str, Any], endpoint: str | None) -> None:
        self._directory.on_ready(task, endpoint)
        self._links.on_ready(task, endpoint)
        if self._registry is not None and endpoint is not None:
            publishing = asyncio.ensure_future(self._registry.publish(task["uid"], endpoint))
            self._publishing.add(publishing)
            publishing.add_done_callback(self._publishing.discard)

    @property
    def services(self) -> dict[str, str]:
        """The endpoints of this session's ready services, by uid."""
        return self._directory.urls()

    def _creates(self, name: str) -> bool:
        """Whether routing to default backend `name` creates it: this session has no backend
        of its kind (for any other missing name, routing fails, naming the backends)."""
        ai = name == "inference"
        return name not in self._backends and all(
            b.runs_ai_tasks != ai for b in self._backends.values()
        )

    def _default_backend(self, ai: bool) -> str:
        """The first backend that runs this kind of task, created when there is none
        (`concurrent` for compute tasks, `inference` for AI tasks)."""
        for name, backend in self._backends.items():
            if backend.runs_ai_tasks == ai:
                return name
        # Named explicitly: tasks saying `backend: "concurrent"` must find it even when
        # other live backends elsewhere in the process hold the default name.
        if ai:
            from rhapsody.inference.backend import InferenceBackend

            self.add_backend(InferenceBackend(name="inference"))
            return "inference"
        from rhapsody.plugins import backend_class

        self.add_backend(backend_class("concurrent")(name="concurrent"))
        return "concurrent"

    def _route(self, tasks: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """Tasks grouped by the name of the backend each goes to."""
        defaults: dict[bool, str] = {}
        groups: dict[str, list[dict[str, Any]]] = {}
        for task in tasks:
            if not isinstance(task, dict):
                raise TaskValidationError(f"a task must be a dict, got {type(task).__name__}")
            name = task.get("backend")
            if not name or (name in _DEFAULT_NAMES and self._creates(name)):
                ai = is_ai_task(task)
                name = defaults.get(ai)
                if name is None:
                    name = defaults[ai] = self._default_backend(ai)
            if name not in self._backends:
                raise TaskValidationError(
                    f"no backend named {name!r} in this session "
                    f"(have: {', '.join(self._backends)})",
                    uid=task.get("uid"),
                    field="backend",
                )
            groups.setdefault(name, []).append(task)
        return groups

    async def wait_tasks(
        self, tasks: Iterable[dict[str, Any] | str] | None = None, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Wait until the given tasks (default: all submitted) are final and return every one of
        them, in order, whatever its final state (read `task["state"]`); never raises on task
        failure. Raises `asyncio.TimeoutError` when `timeout` seconds pass first."""
        given: list[dict[str, Any] | None] = []
        if tasks is None:
            uids = list(self._futures)
            given = [None] * len(uids)
        else:
            uids = []
            for task in tasks:
                uid = task if isinstance(task, str) else task.get("uid")
                if uid not in self._futures:
                    raise SessionError(f"task {uid!r} was not submitted through this session")
                uids.append(uid)
                given.append(None if isinstance(task, str) else task)
        futures = [self._futures[uid] for uid in uids]
        if futures:
            _, pending = await asyncio.wait(futures, timeout=timeout)
            if pending:
                raise asyncio.TimeoutError(
                    f"{len(pending)} task(s) still unfinished after {timeout} s"
                )
        return [
            task if task is not None else self._task_of(uid, future)
            for uid, future, task in zip(uids, futures, given, strict=True)
        ]

    def _task_of(self, uid: str, future: asyncio.Future[Any]) -> dict[str, Any]:
        task = self._tasks.get(uid)
        if task is None:  # resumed from the journal: its future holds the task
            task = future.result()
        return task

    wait = wait_tasks

    # -- shared services ---------------------------------------------------------------------
    @property
    def registry(self) -> ServiceRegistry | None:
        """The service registry, once `registry_start()` ran (None before)."""
        return self._registry

    def registry_start(self) -> Started:
        """Start the session's service registry (idempotent); returns its address. Call it
        plainly (from synchronous code too) or `await` it to wait until it answers.

        It listens on 127.0.0.1 only and lives until `close()`. Its port is taken at once;
        it answers on the running event loop, or (called outside one) from the session's
        first `submit_tasks` / `async with`. From then on this process's `RHAPSODY_REGISTRY`
        names it, so every task started afterwards on this host can
        `rhapsody.registry.publish(name, endpoint)` and `lookup(name, wait=...)`.
        """
        self._check_open()
        if self._registry is None:
            registry = ServiceRegistry()
            address = registry.bind()
            self._registry = registry
            self._unstarted.append(registry)
            self._env_before = os.environ.get(ENV_VAR)
            os.environ[ENV_VAR] = address
        return Started(self._registry.bind(), self._start_services())

    def proxy_start(
        self, service: str | None = None, *, port: int = 0, resolve_timeout: float = 30.0
    ) -> Started:
        """Open `127.0.0.1:port` (0: any free port) and return `host:port`; plainly or awaited,
        like `registry_start` (which it calls). Idempotent per service.

        With `service`, every connection is forwarded (raw TCP) to the endpoint that service
        publishes in the registry. Without, one HTTP gateway reaches every published service
        by name (`http://host:port/<service>/<path>`) and admits only requests carrying
        `session.token`. Each connection waits up to `resolve_timeout` seconds for the service
        to be published.
        """
        self._check_open()
        self.registry_start()
        assert self._registry is not None
        server: ServiceProxy | ServiceGateway | None
        if service is None:
            server = self._gateway
            if server is None:
                server = self._gateway = ServiceGateway(
                    self._registry, self._registry.token, port=port,
                    resolve_timeout=resolve_timeout,
                )
                self._unstarted.append(server)
        else:
            server = self._proxies.get(service)
            if server is None:
                server = ServiceProxy(
                    self._registry, service, port=port, resolve_timeout=resolve_timeout
                )
                self._proxies[service] = server
                self._unstarted.append(server)
        return Started(server.bind(), self._start_services())

    def _start_services(self) -> asyncio.Future[Any] | None:
        """Serve, on the running loop, what `registry_start` / `proxy_start` bound before."""
        if not self._unstarted:
            return None
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return None  # no loop yet: started by the session's first use on one
        servers, self._unstarted = self._unstarted, []
        return asyncio.ensure_future(asyncio.gather(*(s.start() for s in servers)))

    @property
    def token(self) -> str | None:
        """The secret the registry and the gateway admit (None before `registry_start()`)."""
        return self._registry.token if self._registry is not None else None

    @property
    def gateway(self) -> str | None:
        """The address of the gateway `proxy_start()` opened (None before)."""
        return self._gateway.address if self._gateway is not None else None

    @property
    def proxies(self) -> dict[str, str]:
        """Running proxies: service name -> local address."""
        return {name: p.address for name, p in self._proxies.items() if p.address is not None}

    # -- telemetry ---------------------------------------------------------------------------
    async def start_telemetry(self, **options: Any) -> TelemetryManager:
        """Start this session's telemetry (idempotent: options apply to the first call) and
        return its `rhapsody.telemetry.TelemetryManager`; see docs/telemetry.md for the
        options. `close()` stops it and flushes its exporters."""
        self._check_open()
        if self._telemetry is None:
            from rhapsody.telemetry import TelemetryManager

            manager = TelemetryManager(
                self.uid,
                default_backend=lambda: next(iter(self._backends), None),
                **options,
            )
            await manager.start()
            manager.attach(self)
            self._telemetry = manager
        return self._telemetry

    def get_telemetry(self) -> TelemetryManager:
        """The running telemetry manager; raises `TelemetryError` before `start_telemetry()`."""
        if self._telemetry is None:
            from rhapsody.telemetry import TelemetryError

            raise TelemetryError(
                f"telemetry of session {self.uid} is not started: "
                "call 'await session.start_telemetry()' first"
            )
        return self._telemetry

    async def start_dashboard(self, *, port: int = 0, **telemetry_options: Any) -> str:
        """Serve the live dashboard on 127.0.0.1 (telemetry is started if needed); returns
        its URL, which holds the access token."""
        manager = await self.start_telemetry(**telemetry_options)
        return await manager.start_dashboard(port=port)

    def _check_open(self) -> None:
        if self._closed:
            raise SessionError(f"session {self.uid} is closed")

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> _Closing:
        """Shut every backend down, then the proxies and the registry. Call it plainly, or
        `await session.close()` to wait."""
        self._closed = True
        services: list[LoopbackServer] = [*self._proxies.values()]
        if self._gateway is not None:
            services.append(self._gateway)
        if self._registry is not None:
            services.append(self._registry)
            # Tasks started from now on must not find a registry that is going away.
            if os.environ.get(ENV_VAR) == self._registry.address:
                if self._env_before is None:
                    del os.environ[ENV_VAR]
                else:
                    os.environ[ENV_VAR] = self._env_before
        for server in self._unstarted:  # never served: closed here, no loop needed
            server.release()
        services = [s for s in services if s not in self._unstarted]
        self._proxies, self._gateway, self._unstarted = {}, None, []
        self._registry = None
        journal, self._journal = self._journal, None
        telemetry, self._telemetry = self._telemetry, None
        return _Closing(list(self._backends.values()), services, journal, telemetry)

    async def __aenter__(self) -> Session:
        starting = self._start_services()
        if starting is not None:
            await starting
        for backend in self._backends.values():
            await backend
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Session({self.uid!r}, backends={list(self._backends)})"


class _Closing:
    """Result of `Session.close()`: shutdown is scheduled at once; awaiting waits for it."""

    def __init__(
        self,
        backends: list[BaseExecutionBackend],
        services: Sequence[LoopbackServer] = (),
        journal: Journal | None = None,
        telemetry: TelemetryManager | None = None,
    ) -> None:
        self._task: asyncio.Future[Any] | None = None
        active = [b for b in backends if b.state() == "RUNNING"]
        if not active and not services:
            if journal is not None:
                journal.close()
            if telemetry is not None:
                telemetry.close()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._task = loop.create_task(_shutdown_all(active, services, journal, telemetry))
        else:
            raise SessionError(
                "this session's backends run on an event loop: use 'await session.close()' there"
            )

    def __await__(self) -> Generator[Any, None, None]:
        if self._task is not None:
            yield from self._task.__await__()


async def _shutdown_all(
    backends: list[BaseExecutionBackend],
    services: Sequence[LoopbackServer],
    journal: Journal | None = None,
    telemetry: TelemetryManager | None = None,
) -> None:
    # Backends first: a service task still running may use the registry until it is stopped.
    results: list[Any] = list(
        await asyncio.gather(*(b.shutdown() for b in backends), return_exceptions=True)
    )
    if journal is not None:  # after the backends: their shutdown cancels tasks
        journal.close()
    if telemetry is not None:  # likewise: the cancellations are in its figures and exports
        telemetry.close()
    for service in services:  # proxies before the registry they resolve through
        try:
            await service.stop()
        except Exception as exc:
            results.append(exc)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise SessionError(
            f"{len(errors)} backend(s) failed to shut down: {errors[0]!r}"
        ) from errors[0]
