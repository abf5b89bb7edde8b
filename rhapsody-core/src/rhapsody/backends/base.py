"""`BaseExecutionBackend`: the one engine every backend plugs into.

The engine owns callbacks, futures, lifecycle transitions, the dependency graph, resource
slots, timeouts, retries, cancellation and shutdown. A backend subclass only translates
"run this task" into its engine by implementing `_execute` (and, if it has an engine to start
or stop, `_start` / `_stop`).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from rhapsody.backends import launch
from rhapsody.errors import BackendError, TaskExecutionError, TaskValidationError
from rhapsody.graph import EarlyAttempt, Node, TaskGraph
from rhapsody.resources import Allocation, ResourcePool
from rhapsody.services.spec import DEFAULT as DEFAULT_SERVICE
from rhapsody.services.spec import endpoint_variable
from rhapsody.states import (
    CANCELED,
    DONE,
    EXECUTING,
    EXECUTING_PENDING,
    FAILED,
    FINAL_STATES,
    NEW,
    SCHEDULING_PENDING,
    TRANSITIONS,
    IllegalTransitionError,
    StateMapper,
)
from rhapsody.task import TaskDescription

logger = logging.getLogger("rhapsody")

Callback = Callable[[dict[str, Any], str], Any]
ServiceCallback = Callable[[dict[str, Any], "str | None"], Any]

# Task dict keys that make a batch's admission check more than the backend's own.
_SPECIAL = frozenset({"service", "is_service", "prompt", "messages", "ranks"})
#: what `resolve` is told when a service running on another backend is ready
READY = "READY"
INITIALIZED = "INITIALIZED"
RUNNING = "RUNNING"
SHUTDOWN = "SHUTDOWN"


@attrs.define(slots=True)
class Outcome:
    """What one attempt of a task produced. Fields left None are not written to the task dict."""

    ok: bool
    reason: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int | None = None
    return_value: Any = None
    exception: BaseException | None = None
    extra: dict[str, Any] | None = None

    @classmethod
    def failure(cls, reason: str, **fields: Any) -> Outcome:
        return cls(False, reason, **fields)

    @classmethod
    def raised(cls, exc: BaseException, exception: BaseException | None = None) -> Outcome:
        """The failure of a function task that raised `exc` (recorded as `exception`, default
        `exc` itself)."""
        return cls(
            False, f"{type(exc).__name__}: {exc}", exception=exc if exception is None else exception
        )


class ExecutionContext:
    """What a backend's `_execute` gets besides the task: its slot, attempt and a start signal."""

    __slots__ = ("_backend", "_node", "attempt", "upstream")

    def __init__(self, backend: BaseExecutionBackend, node: Node) -> None:
        self._backend = backend
        self._node = node
        self.attempt: int = node.attempt
        early = node.early
        #: the references (see `submitted`) of the attempts of this task's dependencies that
        #: were still in flight when the engine handed the task over; empty when they are all
        #: DONE. Only a backend whose class sets `chains_dependencies` gets any: it must start
        #: the task only after each of those attempts has ended successfully, and never when
        #: one has not (the engine then fails the task with the dependency's reason, whatever
        #: the attempt returns).
        self.upstream: tuple[Any, ...] = early.upstream if early is not None else ()

    @property
    def uid(self) -> str:
        return self._node.uid

    @property
    def cores(self) -> int:
        """Cores given to this attempt (what the task asked for when the engine does not place)."""
        alloc: Allocation | None = self._node.alloc
        return alloc.cores if alloc is not None else self._node.desc.cores

    @property
    def gpu_ids(self) -> tuple[str, ...]:
        """Identifiers of the GPUs given to this attempt."""
        alloc: Allocation | None = self._node.alloc
        return alloc.gpu_ids if alloc is not None else ()

    def started(self, node: str | None = None) -> None:
        """Report that the task really started (moves it to EXECUTING, once its dependencies
        are DONE), and where, when the backend knows: `node` (a host or node name) is
        written to the task's `node`. Loop thread only."""
        if node is not None:
            self._node.task["node"] = node
        self._backend._mark_running(self._node)

    def submitted(self, ref: object) -> None:
        """Report that the backend's engine now holds this attempt, as `ref` (dask: its
        Future). For a backend whose class sets `chains_dependencies`: the engine may then hand
        over tasks that depend on this one, with `ref` in their `upstream` (a synchronous
        `_execute` may see them launched before it returns). Loop thread only."""
        self._backend._attempt_submitted(self._node, self.attempt, ref)

    @property
    def wants_output(self) -> bool:
        """True when the engine reads this attempt's output as it arrives (a service's log
        probe): a backend whose class sets `streams_output` then passes it to `output`."""
        service = self._node.service
        return service is not None and service.log is not None

    def output(self, data: bytes) -> None:
        """Hand the engine a chunk of the attempt's stdout or stderr as it arrives."""
        service = self._node.service
        if service is not None and service.log is not None:
            service.log.feed(data)

    def service_address(self, host: str, port: int | None) -> None:
        """Report where this attempt of a service task listens: the address its `{host}` was
        replaced by and the port of its `{port}` (None: it has none), as `rhapsody.services.
        supervisor.locate` gave them where it runs. For a backend whose class sets
        `chooses_service_ports`; the engine probes and publishes that address. Loop thread only."""
        service = self._node.service
        if service is not None:
            service.at(host, port)

    @property
    def work_dir(self) -> Path:
        """The backend's work directory (created on first use)."""
        return self._backend._ensure_work_dir()

    # What an executable task's fields mean, resolved for this attempt (`rhapsody.backends.
    # launch`). They take the `task` given to `_execute`: that is the one to run.
    def command_line(self, task: TaskDescription) -> list[str]:
        """argv of executable `task`: its arguments verbatim, or through `/bin/sh -c`."""
        return launch.command_line(task)

    def environment(self, task: TaskDescription) -> dict[str, str] | None:
        """The environment to start `task`'s process with: this process's, then the task's
        `environment` and `secret_environment`, then `CUDA_VISIBLE_DEVICES` when the engine
        places GPUs. None: inherit this process's unchanged."""
        pool = self._backend._pool
        gpus = self.gpu_ids if pool is not None and pool.total_gpus else None
        return launch.environment(task, gpus)

    def working_directory(self, task: TaskDescription) -> str | None:
        """`task`'s working directory, created if missing (None: the backend's own cwd)."""
        return launch.working_directory(task)


class TaskFutures(list):  # type: ignore[type-arg]
    """The futures of one submission, in submission order; also indexable by uid."""

    def __init__(self, pairs: Iterable[tuple[str, asyncio.Future[Any]]] = ()) -> None:
        pairs = list(pairs)
        super().__init__(f for _, f in pairs)
        self._by_uid = dict(pairs)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._by_uid[key]
        return super().__getitem__(key)

    def keys(self) -> Iterator[str]:
        return iter(self._by_uid)

    def items(self) -> Iterator[tuple[str, asyncio.Future[Any]]]:
        return iter(self._by_uid.items())

    def get(self, uid: str, default: Any = None) -> Any:
        return self._by_uid.get(uid, default)


class BaseExecutionBackend:
    """Base class of every backend.

    Subclasses implement `_execute(task, ctx) -> Outcome` (async, or plain for backends whose
    launches complete at once) and may override `_start`, `_stop`, `_check_task`.
    """

    backend_name: ClassVar[str] = "base"
    supports_implicit_data_linking: ClassVar[bool] = False
    supports_explicit_data_linking: ClassVar[bool] = False
    #: seconds `shutdown()` waits for running tasks to wind down after cancelling them
    shutdown_grace: float = 10.0
    #: True when the backend's own engine may hold a launched task in a queue before running it
    #: (dask, a pilot): a task's `timeout` then starts only when `ctx.started()` reports the
    #: start. Otherwise it starts at launch (and again at the reported start).
    queues_tasks: ClassVar[bool] = False
    #: True when the backend passes a running task's output to `ctx.output` (needed by the
    #: `log` readiness probe of services)
    streams_output: ClassVar[bool] = False
    #: the address a service task's port is chosen on and its endpoint names. The default
    #: suits backends whose tasks run on this host.
    service_host: ClassVar[str] = "127.0.0.1"
    #: True when the backend chooses a service's port where the service runs: it fills in
    #: `{host}` / `{port}` there (`rhapsody.services.supervisor.locate`) and reports them with
    #: `ctx.service_address` before the service starts. Otherwise the engine chooses the port
    #: on `service_host` of this host. A class attribute, or set per instance (radical_pilot:
    #: only where its pilot runs elsewhere).
    chooses_service_ports: bool = False
    #: True for a backend that runs AI tasks (requests to inference servers)
    runs_ai_tasks: ClassVar[bool] = False
    #: True when the backend's own engine can hold a task until given attempts of its
    #: dependencies end, and run it only if each succeeded (dask: their futures as arguments).
    #: The engine then hands a task over while its dependencies' attempts are in flight
    #: (`ExecutionContext.upstream`, from what each reported with `ctx.submitted`) instead of
    #: once they are DONE, which saves a round trip per link of a chain; what the attempt
    #: reports is held until they are DONE. Only where the engine places no slots
    #: (`resources` None), and only in the cases `_upstream_of` describes.
    chains_dependencies: ClassVar[bool] = False
    #: True for a backend that launches a task of `ranks > 1` as that many processes of one MPI
    #: program; elsewhere such a task is rejected at submit (never run as a single process)
    runs_mpi: ClassVar[bool] = False

    def __init__(
        self,
        name: str | None = None,
        *,
        work_dir: str | os.PathLike[str] | None = None,
        resources: ResourcePool | None = None,
    ) -> None:
        self.name = name or _claim_default_name(self.backend_name, self)
        # Set by the clients that attach a backend (AsyncFlow's WorkflowEngine, Session).
        self.attached_to: list[Any] = []
        self.is_attached = False
        # AsyncFlow assigns a str here (its per-engine directory): `work_dir` reads either.
        self._work_dir: str | os.PathLike[str] | None = work_dir
        self._pool = resources
        self._callbacks: list[Callback] = []
        # Callbacks that take AsyncFlow's `service_callback` keyword (see `_service_ready`).
        self._service_aware: list[Callback] = []
        self._service_callbacks: list[ServiceCallback] = []
        self._lifetime_services = 0  # live services with lifetime "dependents"
        self._graph = TaskGraph()
        self._queues: dict[tuple[int, int], deque[Node]] = {}
        # Early dispatch (`chains_dependencies`): hand-overs and releases along a chain, run as
        # a loop (`_defer`); and attempts stopped after their task was settled without them.
        self._chains = self.chains_dependencies and resources is None
        self._deferred: deque[tuple[Callable[[Node], None], Node]] = deque()
        self._draining = False
        self._abandoned: set[asyncio.Future[Any]] = set()
        self._scheduling = False
        self._reschedule = False
        self._status = INITIALIZED
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_lock: asyncio.Lock | None = None
        self._sync_execute = not inspect.iscoroutinefunction(self._execute)
        self._make_future: Callable[[], asyncio.Future[Any]] = _no_loop_yet
        # No per-task call when the backend checks nothing (noop: no slots, no override).
        checks = (
            resources is not None or type(self)._check_task is not BaseExecutionBackend._check_task
        )
        self._admission_check = self._check_task if checks else None

    # -- what subclasses implement ---------------------------------------------------------------
    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        """Run one attempt of `task`. Call `ctx.started()` once it really runs. Task failures are
        returned as `Outcome.failure`; exceptions mean the backend itself broke. On cancellation
        (CancelledError) release whatever the attempt holds (processes, remote futures).

        A plain (non-async) method may instead return the Outcome at once, or an
        `asyncio.Future` that resolves to it (the engine cancels that future to cancel or time
        out the attempt)."""
        raise NotImplementedError

    async def _start(self) -> None:
        """Start the engine (cluster, pilot, pools). Called once, on the caller's loop."""

    async def _stop(self) -> None:
        """Stop the engine after every task has been cancelled; leave no process behind."""

    def _check_task(self, task: TaskDescription) -> None:
        """Reject at submit what this backend can never run (default: resources too large)."""
        if self._pool is not None:
            self._pool.check_request(task.uid, task.cores, task.gpus)

    def _check_special(self, task: TaskDescription) -> None:
        """The admission check of a batch holding service, AI or MPI tasks."""
        if task.ai is not None and not self.runs_ai_tasks:
            raise TaskValidationError(
                f"an AI task cannot run on the {self.backend_name} backend: submit it through "
                "a Session (which routes it to an inference backend) or to an 'inference' backend",
                uid=task.uid,
                field="prompt" if task.ai.prompts is not None else "messages",
            )
        if task.service is not None and task.service.probe == "log" and not self.streams_output:
            raise TaskValidationError(
                f"the {self.backend_name} backend cannot watch a running task's output; "
                "use an 'http', 'tcp' or 'publish' probe",
                uid=task.uid,
                field="service",
            )
        if self._admission_check is not None:
            self._admission_check(task)
        if task.ranks > 1 and not self.runs_mpi:  # after the backend's own, more specific check
            raise TaskValidationError(
                f"the {self.backend_name} backend runs each task as one process; a task of "
                f"{task.ranks} ranks (an MPI program) needs a backend that launches MPI: "
                "concurrent (under mpirun) or radical_pilot",
                uid=task.uid,
                field="ranks",
            )

    # -- public API ----------------------------------------------------------------------------
    def __await__(self) -> Generator[Any, None, BaseExecutionBackend]:
        return self._ensure_started().__await__()

    async def __aenter__(self) -> BaseExecutionBackend:
        return await self._ensure_started()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def work_dir(self) -> Path:
        return Path(self._work_dir) if self._work_dir is not None else Path.cwd()

    @property
    def resources(self) -> ResourcePool | None:
        """The slots this backend schedules into (None when its engine does the placement)."""
        return self._pool

    @property
    def capacity(self) -> tuple[int, int] | None:
        """(cores, GPUs) that this backend's running tasks hold at most, together; None when
        unknown (workers that may join later). The conformance kit measures that it holds."""
        pool = self._pool
        return None if pool is None else (pool.total_cores, pool.total_gpus)

    def state(self) -> str:
        """INITIALIZED, RUNNING or SHUTDOWN."""
        return self._status

    def register_callback(self, func: Callback) -> None:
        """Add `func(task, state)` to the subscribers; it runs on the event-loop thread."""
        if not callable(func):
            raise TypeError(f"callback must be callable, got {func!r}")
        self._callbacks.append(func)
        if _takes_service_callback(func):
            self._service_aware.append(func)

    def register_service_callback(self, func: ServiceCallback) -> None:
        """Add `func(task, endpoint)`, called each time a service task becomes ready (again
        after each restart); `endpoint` is None for a service without a port."""
        if not callable(func):
            raise TypeError(f"callback must be callable, got {func!r}")
        self._service_callbacks.append(func)

    def get_task_states_map(self) -> StateMapper:
        from rhapsody.plugins import state_mapper_table

        # Given the table: a backend need not be registered by name to describe its states.
        return StateMapper(self.backend_name, native=state_mapper_table(self.backend_name))

    def task_state(self, uid: str) -> str | None:
        """The lifecycle state of task `uid` (None if unknown)."""
        return self._graph.state_of(uid)

    def adopt_done(self, uids: Iterable[str]) -> None:
        """Count tasks that finished elsewhere (resumed from a journal) as DONE here: later
        tasks may depend on them, and their uids cannot be submitted again."""
        live, finished = self._graph.live, self._graph.finished
        for uid in uids:
            if uid in live:
                raise TaskValidationError("uid is still running here", uid=uid, field="uid")
            finished[uid] = DONE

    async def submit_tasks(self, tasks: Sequence[dict[str, Any]]) -> TaskFutures:
        """Validate and submit a batch (all or nothing). Returns one future per task, in order."""
        if self._closing:
            raise BackendError(f"backend {self.name!r} is shut down; create a new one")
        await self._ensure_started()
        # Admitting a batch allocates a few objects per task that all live until the batch is
        # in; each gen-0 pass over them promotes them, and the promotions trigger full
        # collections of the caller's whole heap (measured: over half the cost of a 100,000-
        # task submission). Nothing here awaits, so the pause covers only this batch.
        pause = gc.isenabled()
        if pause:
            gc.disable()
        try:
            return self._submit(tasks)
        finally:
            if pause:
                gc.enable()

    def _submit(self, tasks: Sequence[dict[str, Any]]) -> TaskFutures:
        check = self._admission_check
        if any(isinstance(task, dict) and not _SPECIAL.isdisjoint(task) for task in tasks):
            check = self._check_special
        nodes = self._graph.admit(tasks, check, self._make_future)
        futures = TaskFutures()
        append = futures.append
        by_uid = futures._by_uid
        for node in nodes:
            append(node.future)
            by_uid[node.uid] = node.future
            if type(node.task) is not dict:  # e.g. ComputeTask: awaitable itself
                bind = getattr(node.task, "bind_future", None)
                if bind is not None:
                    bind(node.future)
        # One pass per task, in submission order (kind to the cache on large batches).
        # Callbacks may cancel any task of the batch meanwhile: skip those.
        live = self._graph.live
        finished = self._graph.finished
        move = self._move
        enqueue = self._enqueue
        for node in nodes:
            if node.state != NEW:
                continue
            move(node, SCHEDULING_PENDING)
            if node.state != SCHEDULING_PENDING:
                continue
            failed_dep = None
            for dep in node.desc.dependencies:
                dep_node = live.get(dep)
                if dep_node is not None:
                    if dep_node.service is not None and dep_node.service.ready:
                        self._use_service(dep_node, node)
                        continue
                    if dep_node.dependents is None:
                        dep_node.dependents = [node]
                    else:
                        dep_node.dependents.append(node)
                    node.waiting += 1
                elif finished[dep] != DONE:
                    failed_dep = dep
            if failed_dep is not None:
                self._finish(
                    node, FAILED, reason=_dependency_reason(failed_dep, finished[failed_dep])
                )
            elif node.waiting == 0:
                move(node, EXECUTING_PENDING)
                enqueue(node)
            elif self._chains:  # its dependencies may be in flight already (earlier submissions)
                self._defer(self._hand_over, node)
        self._schedule()
        return futures

    async def cancel_task(self, uid: str) -> bool:
        """Cancel a pending or running task. False if it is unknown or already final."""
        node = self._graph.live.get(uid)
        if node is None or node.state in FINAL_STATES or node.external:
            return False
        self._cancel(node)
        return True

    def expect(self, uid: str) -> None:
        """Task `uid` runs on another backend (of the same session): let tasks here depend on
        it until `resolve(uid, ...)` says how it ended. No callback, no future: it is not ours."""
        graph = self._graph
        if uid not in graph.live and uid not in graph.finished:
            node = Node(uid, {"uid": uid}, TaskDescription(uid), -1)
            node.external = True
            node.state = SCHEDULING_PENDING
            graph.live[uid] = node

    def resolve(self, uid: str, state: str, endpoint: str | None = None) -> None:
        """The task `uid` given to `expect` reached final `state`, or is a service that is now
        ready (`state` "READY", with its `endpoint`): release or fail its dependents here."""
        node = self._graph.live.get(uid)
        if node is None or not node.external:
            return
        if state == READY:
            from rhapsody.services.supervisor import ServiceRun

            if endpoint is not None:
                node.task["endpoint"] = endpoint
            node.service = ServiceRun(DEFAULT_SERVICE, self.service_host)
            self._service_ready(node, endpoint)
            return
        node.state = state
        dependents = node.dependents
        self._graph.retire(node)
        if dependents:
            self._settle_dependents(node.uid, state, None, dependents)
        self._schedule()

    async def cancel_all_tasks(self) -> int:
        """Cancel every unfinished task; returns how many were cancelled."""
        nodes = [
            n for n in self._graph.live.values() if n.state not in FINAL_STATES and not n.external
        ]
        for node in nodes:
            if node.state not in FINAL_STATES:
                self._cancel(node)
        return len(nodes)

    async def shutdown(self) -> None:
        """Cancel what is pending, stop what runs, stop the engine. Idempotent."""
        if self._status == SHUTDOWN or self._closing:
            return
        self._closing = True
        try:
            for node in self._graph.live.values():
                if node.service is not None and node.service.ready:
                    node.service.stopping = True  # stopped by the runtime: it ends DONE
            await self.cancel_all_tasks()
            handles = [n.handle for n in self._graph.live.values() if n.handle is not None]
            handles += self._abandoned
            if handles:
                _, stuck = await asyncio.wait(handles, timeout=self.shutdown_grace)
                for _handle in stuck:
                    logger.warning(
                        "%s: a task attempt did not stop within %.0f s",
                        self.name,
                        self.shutdown_grace,
                    )
            if self._status == RUNNING:
                await self._stop()
        finally:
            self._status = SHUTDOWN
            _release_default_name(self.name, self)

    def link_implicit_data_deps(
        self, src_task: dict[str, Any], dst_task: dict[str, Any]
    ) -> dict[str, Any]:
        """Data produced by `src_task` is found by `dst_task` in `src_task`'s working directory."""
        source = src_task.get("working_directory") or str(self.work_dir)
        return {"source": source, "target": dst_task.get("working_directory") or str(self.work_dir)}

    def link_explicit_data_deps(
        self,
        src_task: dict[str, Any] | None = None,
        dst_task: dict[str, Any] | None = None,
        file_name: str | None = None,
        file_path: str | None = None,
    ) -> dict[str, Any]:
        """Where `dst_task` finds the named file: tasks here share one filesystem."""
        if file_name is None and file_path is None:
            raise ValueError("link_explicit_data_deps needs file_name or file_path")
        name = file_name or os.path.basename(str(file_path))
        src_dir = (src_task or {}).get("working_directory") or str(self.work_dir)
        source = file_path or os.path.join(src_dir, name)
        dst_dir = (dst_task or {}).get("working_directory") or str(self.work_dir)
        return {"source": source, "target": os.path.join(dst_dir, name)}

    # -- engine internals ----------------------------------------------------------------------
    async def _ensure_started(self) -> BaseExecutionBackend:
        if self._status == RUNNING:
            return self
        if self._closing or self._status == SHUTDOWN:
            raise BackendError(f"backend {self.name!r} is shut down; create a new one")
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._status == INITIALIZED:
                self._loop = loop = asyncio.get_running_loop()
                if type(loop).create_future is asyncio.BaseEventLoop.create_future:
                    # What the stock loop's create_future builds, without its Python frame.
                    self._make_future = functools.partial(asyncio.Future, loop=loop)
                else:  # a loop with its own future type (uvloop)
                    self._make_future = loop.create_future
                try:
                    await self._start()
                except BackendError:
                    raise
                except Exception as exc:
                    raise BackendError(f"backend {self.name!r} failed to start: {exc}") from exc
                self._status = RUNNING
        return self

    def _ensure_work_dir(self) -> Path:
        path = self.work_dir
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _move(self, node: Node, new: str) -> None:
        if new not in TRANSITIONS[node.state]:
            raise IllegalTransitionError(f"task {node.uid!r}: {node.state} -> {new} is not allowed")
        node.state = new
        task = node.task
        task["state"] = new
        for callback in self._callbacks:
            try:
                callback(task, new)
            except Exception:
                logger.exception(
                    "%s: callback %r raised on task %r -> %s; ignored",
                    self.name,
                    callback,
                    node.uid,
                    new,
                )

    def _mark_running(self, node: Node) -> None:
        if node.early is not None and node.state == SCHEDULING_PENDING:
            node.early.started = True  # reported once its dependencies are DONE (`_go_ahead`)
            return
        if node.service is not None:  # each attempt of a service (a restart stays EXECUTING)
            node.service.on_started()
        if node.state == EXECUTING_PENDING:
            self._move(node, EXECUTING)
            # The timeout counts from the real start, not from the launch: a backend whose
            # engine queues tasks (dask, a pilot) must not time them out while they wait.
            self._arm_timeout(node)

    def _arm_timeout(self, node: Node) -> None:
        if node.desc.timeout is None:
            return
        if node.timer is not None:
            node.timer.cancel()
        assert self._loop is not None
        node.timer = self._loop.call_later(node.desc.timeout, self._on_timeout, node)

    def _enqueue(self, node: Node) -> None:
        key = (node.desc.cores, node.desc.gpus) if self._pool is not None else (0, 0)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(node)

    def _schedule(self) -> None:
        # Re-entrant calls (a task finishing inside a launch) only flag another pass: no
        # recursion however long a chain of instantly-finishing tasks is.
        if self._scheduling:
            self._reschedule = True
            return
        self._scheduling = True
        try:
            self._reschedule = True
            while self._reschedule:
                self._reschedule = False
                self._fill()
        finally:
            self._scheduling = False

    def _fill(self) -> None:
        pool = self._pool
        queues = self._queues
        if len(queues) > 1:
            order = sorted(queues.items(), key=lambda kv: kv[1][0].seq if kv[1] else -1)
        else:
            order = list(queues.items())
        for key, queue in order:
            while queue:
                node = queue[0]
                if node.state != EXECUTING_PENDING:  # cancelled while waiting
                    queue.popleft()
                    continue
                alloc = None
                if pool is not None:
                    alloc = pool.acquire(node.desc.cores, node.desc.gpus)
                    if alloc is None:
                        break
                queue.popleft()
                self._launch(node, alloc)
            if not queue and queues.get(key) is queue:
                del queues[key]

    def _launch(self, node: Node, alloc: Allocation | None) -> None:
        node.alloc = alloc
        node.attempt += 1
        if node.desc.retries:
            node.task["attempt"] = node.attempt
        ctx = ExecutionContext(self, node)
        assert self._loop is not None
        desc = node.desc
        if node.service_env is not None and (
            desc.executable is not None or desc.isolation != "thread"
        ):  # a thread function shares this process's environment: it uses the registry
            desc = attrs.evolve(desc, environment={**(desc.environment or {}), **node.service_env})
        if desc.service is not None:
            self._loop.create_task(self._run_service(node, ctx, desc))
            return
        if not self._sync_execute:
            self._loop.create_task(self._run(node, ctx, desc))
            return
        result: Any
        try:
            result = self._execute(desc, ctx)  # a plain method: an Outcome or a future
        except Exception as exc:
            result = self._backend_failure(exc)
        if type(result) is Outcome:
            node.ref = None
            if node.early is not None:  # handed over early: held until its dependencies are DONE
                node.early.started = True
                node.early.outcome = result
            else:
                if node.state == EXECUTING_PENDING:  # returned at once: it ran
                    self._move(node, EXECUTING)
                self._complete(node, result)
        elif isinstance(result, asyncio.Future):
            # Completed by a callback: no asyncio task, no extra loop iteration per attempt.
            node.handle = result
            if node.timer is None and not self.queues_tasks and node.early is None:
                self._arm_timeout(node)  # no start reported yet
            result.add_done_callback(functools.partial(self._attempt_done, node))
        else:
            error = TypeError(f"_execute returned {type(result).__name__}, not an Outcome")
            self._complete(node, self._backend_failure(error))

    async def _run(self, node: Node, ctx: ExecutionContext, desc: TaskDescription) -> None:
        # `handle` is set only once the coroutine runs: a task cancelled before that is
        # finished by `_cancel` itself (a not-yet-started coroutine never sees the cancellation).
        if node.state in FINAL_STATES:
            return
        node.handle = asyncio.current_task()
        if not self.queues_tasks and node.early is None:
            self._arm_timeout(node)
        outcome: Outcome | None
        try:
            outcome = await self._execute(desc, ctx)
        except asyncio.CancelledError:
            outcome = None
        except Exception as exc:
            outcome = self._backend_failure(exc)
        self._attempt_over(node, outcome)

    def _attempt_done(self, node: Node, future: asyncio.Future[Outcome]) -> None:
        outcome: Outcome | None
        try:
            outcome = future.result()
        except asyncio.CancelledError:
            outcome = None
        except Exception as exc:
            outcome = self._backend_failure(exc)
        else:
            if type(outcome) is not Outcome:
                error = TypeError(f"_execute's future gave {type(outcome).__name__}")
                outcome = self._backend_failure(error)
        self._attempt_over(node, outcome)

    def _attempt_over(self, node: Node, outcome: Outcome | None) -> None:
        """An attempt ended with `outcome`, or None when it was cancelled (or timed out)."""
        node.handle = None
        node.ref = None
        if node.timer is not None:
            node.timer.cancel()
            node.timer = None
        if node.state in FINAL_STATES:
            return
        if outcome is not None and node.early is not None:
            node.early.outcome = outcome  # held until its dependencies are DONE (`_go_ahead`)
            return
        if outcome is None and node.timed_out and not node.cancel_requested:
            outcome = Outcome.failure(f"timed out after {node.desc.timeout:g} s")
        if outcome is None and node.service is not None and node.service.stopping:
            outcome = Outcome(True)
        if outcome is None:
            self._release(node)
            self._finish(node, CANCELED)
            self._schedule()
        else:
            self._complete(node, outcome)

    # -- early dispatch (`chains_dependencies`) -------------------------------------------------
    def _upstream_of(self, node: Node) -> tuple[Any, ...] | None:
        """The references of the attempts a chaining backend may run waiting task `node`
        behind, or None: it waits until its dependencies are DONE, as on any backend.

        The rule: `node` is no service and uses none, and each dependency not yet DONE is a task
        of this backend whose attempt its engine holds already (reported with `ctx.submitted`),
        its last (no retries left), with no `timeout` and no cancellation requested. A retry
        would be a new attempt; a timeout is decided here, not in the backend's engine, and
        could fire after the attempt succeeded there but before this engine heard of it. So
        the one race left is a `cancel_task` of a dependency in that moment: the dependency
        ends CANCELED and the dependent FAILED with its reason, as always, but the dependent
        may have started in the backend's engine (it is stopped as a cancelled task is)."""
        desc = node.desc
        if desc.service is not None or node.service_env is not None:
            return None
        live = self._graph.live
        refs = []
        for dep in desc.dependencies:
            dep_node = live.get(dep)
            if dep_node is None:
                continue  # DONE (one that failed has failed `node` already)
            ref = dep_node.ref
            if ref is None:
                return None
            dep_desc = dep_node.desc
            if (
                dep_node.attempt <= dep_desc.retries
                or dep_desc.timeout is not None
                or dep_node.cancel_requested
            ):
                return None
            refs.append(ref)
        return tuple(refs)

    def _defer(self, action: Callable[[Node], None], node: Node) -> None:
        """Run `action(node)` now, or once the action running now returns when called from
        one: hand-overs and releases along a chain are a loop, never a recursion."""
        work = self._deferred
        work.append((action, node))
        if self._draining:
            return
        self._draining = True
        try:
            while work:
                action, node = work.popleft()
                action(node)
        finally:
            self._draining = False

    def _attempt_submitted(self, node: Node, attempt: int, ref: object) -> None:
        """The backend's engine holds attempt `attempt` of `node` as `ref`: hand over the
        dependents that were waiting only for attempts in flight."""
        if not self._chains or node.state in FINAL_STATES or attempt != node.attempt:
            return
        if node.desc.service is not None:
            return  # dependents wait for its readiness, not for its end
        node.ref = ref
        for child in tuple(node.dependents or ()):
            self._defer(self._hand_over, child)

    def _hand_over(self, node: Node) -> None:
        """Launch waiting `node` behind its dependencies' attempts, if `_upstream_of` allows."""
        if node.state != SCHEDULING_PENDING or node.early is not None:
            return
        upstream = self._upstream_of(node)
        if upstream is None:
            return
        node.early = EarlyAttempt(upstream)
        self._launch(node, None)

    def _go_ahead(self, node: Node) -> None:
        """The dependencies of `node`, handed over early, are DONE: report what its attempt
        reported meanwhile (its start, its outcome); from here on it is an ordinary attempt."""
        early, node.early = node.early, None
        if early is None or node.state != EXECUTING_PENDING:
            return
        if early.started:
            self._move(node, EXECUTING)
        if early.outcome is not None:
            self._complete(node, early.outcome)
        elif early.started:
            self._arm_timeout(node)  # from the real start, as `_mark_running` does
        elif not self.queues_tasks:
            self._arm_timeout(node)  # from the launch, as for any attempt of such a backend

    def _abandon(self, node: Node) -> None:
        """Stop the early attempt of `node`, which is being settled without it: shutdown
        still waits for it to wind down."""
        handle = node.handle
        if handle is not None:
            handle.cancel()
            self._abandoned.add(handle)
            handle.add_done_callback(self._abandoned.discard)

    # -- services (see rhapsody/services) --------------------------------------------------------
    async def _run_service(self, node: Node, ctx: ExecutionContext, desc: TaskDescription) -> None:
        """Run a service task: each attempt raced against its readiness probe; dependents
        released once it is ready; restarted after a crash while `restarts` allow."""
        if node.state in FINAL_STATES:
            return
        from rhapsody.services.supervisor import ServiceRun, until_ready

        node.handle = asyncio.current_task()
        if not self.queues_tasks:
            self._arm_timeout(node)
        spec = desc.service
        assert spec is not None
        run = node.service = ServiceRun(
            spec, self.service_host, reported=self.chooses_service_ports
        )
        if spec.lifetime == "dependents":
            self._lifetime_services += 1
        token = (desc.secret_environment or {}).get(spec.auth) if spec.auth else None
        restarts = 0
        outcome: Outcome | None
        try:
            while True:
                attempt_desc = run.prepare(desc)
                attempt = asyncio.ensure_future(self._attempt(attempt_desc, ctx))
                try:
                    ready, result = await until_ready(run, node.uid, token, attempt)
                except asyncio.CancelledError:
                    await _stop(attempt)
                    raise
                if not ready:
                    ended = await _stop(attempt)
                    if result is None and ended is not None and ended.ok and spec.probe is None:
                        # It ran and ended before its start was seen (an engine that runs
                        # tasks at once, like noop): it was ready, and is done.
                        self._service_ready(node, None)
                        outcome = ended
                    else:
                        why = result or "service exited before it was ready: " + (
                            "exit code 0" if ended is None or ended.ok else ended.reason or "failed"
                        )
                        outcome = _failed(ended, why)
                    break
                self._service_ready(node, result)
                try:
                    ended = await attempt
                except asyncio.CancelledError:
                    await _stop(attempt)
                    raise
                if ended.ok:  # it ended by itself, cleanly
                    outcome = ended
                    break
                if restarts >= spec.restarts:
                    outcome = _failed(ended, f"service died after it was ready: {ended.reason}")
                    break
                restarts += 1
                node.task["restarts"] = restarts
                logger.warning(
                    "%s: service %r died (%s); restart %d of %d",
                    *(self.name, node.uid, ended.reason, restarts, spec.restarts),
                )
                run.ready = False  # tasks submitted meanwhile wait for the new endpoint
                node.attempt += 1
                ctx = ExecutionContext(self, node)
        except asyncio.CancelledError:
            outcome = None
        except Exception as exc:
            outcome = self._backend_failure(exc)
        self._attempt_over(node, outcome)

    async def _attempt(self, desc: TaskDescription, ctx: ExecutionContext) -> Outcome:
        result: Any = self._execute(desc, ctx)
        if inspect.isawaitable(result):
            result = await result
        if type(result) is not Outcome:
            raise TypeError(f"_execute gave {type(result).__name__}, not an Outcome")
        return result

    def _service_ready(self, node: Node, endpoint: str | None) -> None:
        """The service `node` passed its probe: resolve its future, release its dependents."""
        run = node.service
        run.ready = True
        task = node.task
        if endpoint is not None:
            task["endpoint"] = endpoint
        if node.future is not None and not node.future.done():
            node.future.set_result(task)
        dependents, node.dependents = node.dependents, None
        for child in dependents or ():
            if child.state not in FINAL_STATES:
                self._use_service(node, child)
                if child.state == SCHEDULING_PENDING:
                    child.waiting -= 1
                    if child.waiting == 0:
                        self._move(child, EXECUTING_PENDING)
                        self._enqueue(child)
        if not node.external:
            for callback in self._service_aware:  # AsyncFlow resolves a service's future here
                self._call_safely(callback, task, EXECUTING, service_callback=_resolve_service)
            for service_callback in self._service_callbacks:
                self._call_safely(service_callback, task, endpoint)
        self._schedule()

    def _use_service(self, service: Node, user: Node) -> None:
        """`user` depends on the ready `service`: give it the endpoint, count it as a user."""
        run = service.service
        run.users.add(user.uid)
        endpoint = service.task.get("endpoint")
        if endpoint is not None:
            env = user.service_env = dict(user.service_env or {})
            env[endpoint_variable(service.uid)] = endpoint

    def _release_services(self, node: Node) -> None:
        """`node` is final: stop each "dependents"-lifetime service it was the last user of."""
        if node.service is not None and node.service.spec.lifetime == "dependents":
            self._lifetime_services -= 1
        live = self._graph.live
        for dep in node.desc.dependencies:
            service_node = live.get(dep)
            if service_node is None:
                continue
            run = service_node.service
            if run is None or run.spec.lifetime != "dependents" or node.uid not in run.users:
                continue
            run.users.discard(node.uid)
            if not run.users and run.ready and not service_node.dependents:
                run.stopping = True
                if service_node.handle is not None:
                    service_node.handle.cancel()

    def _call_safely(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            callback(*args, **kwargs)
        except Exception:
            logger.exception("%s: callback %r raised; ignored", self.name, callback)

    def _backend_failure(self, exc: Exception) -> Outcome:
        logger.debug("%s: backend error", self.name, exc_info=exc)
        return Outcome.failure(
            f"{self.name} backend error: {type(exc).__name__}: {exc}", exception=exc
        )

    def _on_timeout(self, node: Node) -> None:
        if node.handle is not None:
            node.timed_out = True
            node.handle.cancel()

    def _release(self, node: Node) -> None:
        if node.alloc is not None and self._pool is not None:
            self._pool.release(node.alloc)
        node.alloc = None

    def _complete(self, node: Node, outcome: Outcome) -> None:
        self._release(node)
        if node.state == EXECUTING_PENDING and outcome.ok:
            # It ran, but the backend did not report the start. (A failed attempt that never
            # reported its start never ran: it fails from EXECUTING_PENDING.)
            self._move(node, EXECUTING)
        if node.desc.executable is not None and node.task.get("capture_stdio"):
            outcome = self._capture_stdio(node, outcome)
        if outcome.ok:
            _write_outcome(node.task, outcome)
            # Clients index the result field of a DONE task (AsyncFlow: `task["return_value"]`
            # or `task["stdout"]`), so it is present even when the task produced nothing.
            node.task.setdefault("stdout" if node.desc.function is None else "return_value", None)
            self._finish(node, DONE)
        elif node.attempt <= node.desc.retries and not node.cancel_requested and not self._closing:
            _write_outcome(node.task, outcome)
            node.timed_out = False
            if node.state == EXECUTING:
                self._move(node, EXECUTING_PENDING)
            self._enqueue(node)
        else:
            _write_outcome(node.task, outcome)
            self._finish(
                node, FAILED, reason=outcome.reason or "failed", exception=outcome.exception
            )
        self._schedule()

    def _capture_stdio(self, node: Node, outcome: Outcome) -> Outcome:
        """AsyncFlow's `capture_stdio`: the streams go to files in the work directory and
        `stdout` / `stderr` hold their paths instead of the text. Returns a new Outcome:
        backends may share one (noop does)."""
        extra = dict(outcome.extra or {})
        paths: dict[str, str] = {}
        for stream in ("stdout", "stderr"):
            path = extra.pop(f"{stream}_file", None)  # the backend spilled the whole stream
            if path is None:
                file = self._ensure_work_dir() / f"{node.uid.replace(os.sep, '_')}.{stream}"
                # Small writes (larger streams were spilled by the backend): not worth a thread.
                file.write_text(getattr(outcome, stream) or "")
                path = str(file)
            paths[stream] = path
        return attrs.evolve(
            outcome, stdout=paths["stdout"], stderr=paths["stderr"], extra=extra or None
        )

    def _cancel(self, node: Node) -> None:
        node.cancel_requested = True
        if node.handle is not None:
            node.handle.cancel()  # `_run` finishes it as CANCELED once the attempt is stopped
        else:
            self._release(node)
            self._finish(node, CANCELED)
            self._schedule()

    def _finish(
        self,
        node: Node,
        state: str,
        *,
        reason: str | None = None,
        exception: BaseException | None = None,
    ) -> None:
        """Move `node` to a final state, resolve its future, then settle its dependents."""
        dependents = self._settle(node, state, reason, exception)
        if dependents is not None:
            self._settle_dependents(node.uid, state, reason, dependents)

    def _settle_dependents(
        self, uid: str, state: str, reason: str | None, dependents: list[Node]
    ) -> None:
        """Task `uid` ended in `state`: release its waiting dependents, or fail them."""
        if state == DONE:
            for child in dependents:
                if child.state == SCHEDULING_PENDING:
                    child.waiting -= 1
                    if child.waiting == 0:
                        self._move(child, EXECUTING_PENDING)
                        if child.early is None:
                            self._enqueue(child)
                        else:  # its attempt is in flight: replay what it reported meanwhile
                            self._defer(self._go_ahead, child)
            return
        # A failed/cancelled task fails its dependents (cancels them at shutdown) without
        # running them; iterative, so long chains cannot exhaust the stack.
        root = (uid, reason)
        child_state = CANCELED if self._closing else FAILED
        stack = [(child, uid, state) for child in dependents]
        while stack:
            child, cause, cause_state = stack.pop()
            if child.state in FINAL_STATES:
                continue
            why = _dependency_reason(cause, cause_state)
            if cause != root[0] and root[1]:
                why += f" (root cause: task {root[0]!r}: {root[1]})"
            if child.early is not None:
                # Handed over early: the backend does not start it (its dependency did not
                # succeed there either), or the race noted in `_upstream_of` started it. Either
                # way its attempt is stopped, and it fails here like a waiting task.
                self._abandon(child)
            elif child.handle is not None:  # cannot happen for waiting tasks; defensive
                child.cancel_requested = True
                child.handle.cancel()
                continue
            grandchildren = self._settle(child, child_state, why, None)
            if grandchildren:
                stack.extend((g, child.uid, child_state) for g in grandchildren)

    def _settle(
        self, node: Node, state: str, reason: str | None, exception: BaseException | None
    ) -> list[Node] | None:
        task = node.task
        future = node.future
        if state == FAILED:
            message = reason or "failed"
            if exception is None:
                exception = TaskExecutionError(message, uid=node.uid)
            task["exception"] = exception
            self._move(node, FAILED)
            if not future.done():
                error = TaskExecutionError(
                    f"task {node.uid!r} failed: {message}", uid=node.uid, task=task
                )
                error.__cause__ = exception
                future.set_exception(error)
                future.exception()  # retrieved: no "never retrieved" noise when unused
        else:
            self._move(node, state)
            if not future.done():
                if state == DONE:
                    future.set_result(task)
                else:
                    future.cancel()
        dependents = node.dependents
        if self._lifetime_services:
            self._release_services(node)
        self._graph.retire(node)
        return dependents




def __getattr__(name: str) -> Any:
    # The import path of rhapsody-py's abstract backend contract (it lives in rhapsody.compat).
    if name == "BaseBackend":
        from rhapsody.compat.backend import BaseBackend

        return BaseBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# Default names held by backends not yet shut down. Clients route by name (AsyncFlow keeps a
# dict by `backend.name`, silently replacing an entry), so a second live instance with the same
# default name is given `<name>.2`, a third `<name>.3`. Explicit names are used as given.
_default_names: weakref.WeakValueDictionary[str, BaseExecutionBackend] = (
    weakref.WeakValueDictionary()
)
_default_names_lock = threading.Lock()


def _claim_default_name(base: str, backend: BaseExecutionBackend) -> str:
    with _default_names_lock:
        name, n = base, 1
        while name in _default_names:
            n += 1
            name = f"{base}.{n}"
        _default_names[name] = backend
        return name


def _release_default_name(name: str, backend: BaseExecutionBackend) -> None:
    with _default_names_lock:
        if _default_names.get(name) is backend:
            del _default_names[name]


def _write_outcome(task: dict[str, Any], outcome: Outcome) -> None:
    if outcome.stdout is not None:
        task["stdout"] = outcome.stdout
    if outcome.stderr is not None:
        task["stderr"] = outcome.stderr
    if outcome.exit_code is not None:
        task["exit_code"] = outcome.exit_code
    if outcome.return_value is not None:
        task["return_value"] = outcome.return_value
    if outcome.ok:
        task.pop("exception", None)  # from a failed earlier attempt
    elif outcome.exception is not None:
        task["exception"] = outcome.exception
    if outcome.extra:
        task.update(outcome.extra)


async def _stop(attempt: asyncio.Future[Outcome]) -> Outcome | None:
    """Cancel `attempt` (if still running) and wait for it; its outcome, None if cancelled."""
    attempt.cancel()
    try:
        return await attempt
    except asyncio.CancelledError:
        return None
    except Exception as exc:
        return Outcome.failure(f"backend error: {type(exc).__name__}: {exc}", exception=exc)


def _failed(ended: Outcome | None, reason: str) -> Outcome:
    """A failure saying `reason`, keeping what the attempt captured (output, exit code)."""
    if ended is None:
        return Outcome.failure(reason)
    return attrs.evolve(ended, ok=False, reason=reason)


def _resolve_service(future: Any, task: Any, state: str) -> None:
    """AsyncFlow's `service_callback(future, task, state)`: a ready service resolves its
    future with its endpoint."""
    if not future.done():
        future.set_result(task.get("endpoint") if isinstance(task, dict) else None)


def _takes_service_callback(func: Callable[..., Any]) -> bool:
    try:
        return "service_callback" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def _no_loop_yet() -> asyncio.Future[Any]:
    raise BackendError("the backend is not started")


def _dependency_reason(uid: str, state: str) -> str:
    return f"dependency {uid!r} {state.lower()}"
