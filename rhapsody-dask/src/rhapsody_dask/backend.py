"""`dask`: run tasks on a dask.distributed cluster.

Three ways to reach one: an embedded `LocalCluster` on 127.0.0.1 that the backend starts and
stops (the default), `address=` of a running scheduler (never shut down by us), or `cluster=`
with any dask cluster object, e.g. a dask-jobqueue `SLURMCluster` (closed by its owner).

The engine in `BaseExecutionBackend` keeps states, dependencies, timeouts, retries and
cancellation; this module only turns one attempt into one dask future. An attempt is
EXECUTING when its worker starts it: the runner logs an event on a topic this backend's
asynchronous client subscribes to, and the client hands it over on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import pickle
import uuid
from collections.abc import Coroutine, Mapping
from typing import Any

from distributed import Client, Future
from distributed.scheduler import KilledWorker

from rhapsody.backends.base import BaseExecutionBackend, ExecutionContext, Outcome
from rhapsody.errors import ResourceError, TaskValidationError
from rhapsody.states import CANCELED, DONE, StateMapper
from rhapsody.task import TaskDescription
from rhapsody_dask import _quiet, _resources, _runner
from rhapsody_dask._cluster import CORES, GPUS, ClusterShape, EmbeddedCluster
from rhapsody_dask.states import BACKEND_NAME, TASK_STATES

logger = logging.getLogger("rhapsody.dask")

# Bound on each step of shutdown that talks to the cluster, so a dead scheduler cannot hang it.
_STOP_STEP_TIMEOUT = 10.0
# address=/cluster=: how old the workers' info may be when a task is placed, and how often to
# look again while none is connected.
_WORKER_INFO_AGE = 1.0
_WORKER_POLL = 0.5


class DaskExecutionBackend(BaseExecutionBackend):
    """Run function and executable tasks on dask workers.

    :param address: a running scheduler (``tcp://host:port``) to connect to; it is left running.
    :param cluster: a dask cluster object (LocalCluster, dask-jobqueue's SLURMCluster, ...) to
        connect to; its owner closes it.
    :param n_workers: embedded cluster only: worker processes (default: from the node's cores).
    :param threads_per_worker: embedded cluster only: threads, and declared ``cores``, per worker.
    :param gpus_per_worker: embedded cluster only: ``gpus`` each worker declares (default: the
        node's GPUs shared evenly).
    :param client_kwargs: further `distributed.Client` keyword arguments (``security``,
        ``timeout``, ...).
    :param cluster_kwargs: embedded cluster only: further `LocalCluster` keyword arguments;
        its ``resources`` are free-form resources every worker declares besides its ``cores``
        and ``gpus`` (what tasks ask for in ``task_backend_specific_kwargs["resources"]``).
    :param restrict_cores: turn a task's ``cores`` into a ``cores`` resource restriction, so
        multi-core tasks never oversubscribe a worker. Default: for the embedded cluster, when
        its workers have more than one thread (with one thread per worker a thread is a core,
        and unrestricted tasks keep dask's scheduler-side queuing, which balances better);
        elsewhere, when every worker connected when the task is sent declares ``cores``. A
        task's ``gpus`` always become a ``gpus`` restriction.
    :param max_output: bytes of stdout/stderr returned per task; beyond it the whole stream is
        written to ``work_dir`` (``stdout_file``/``stderr_file``) and the dict keeps the tail.
    :param kill_grace: seconds between SIGTERM and SIGKILL when a running executable is stopped.
    :param no_worker_timeout: address=/cluster= only: seconds that tasks sent to dask wait once
        no worker is connected any more (every worker lost: its batch job ended, its node
        failed); then they fail, and tasks sent later fail at once, until a worker connects
        again. ``None`` waits for ever. Before the first worker connects (batch jobs still
        queued) tasks wait without this bound.
    """

    backend_name = BACKEND_NAME
    queues_tasks = True  # dask queues submitted tasks: timeouts count from the worker start
    # A service's `log` probe: the runner matches the executable's output on the worker and
    # sends the matching line (`_runner.OUTPUT`).
    streams_output = True
    # A service's port is chosen on its worker, which listens on its own address and reports
    # it (`_runner.ADDRESS`): the engine probes and publishes that address.
    chooses_service_ports = True
    # A dependent is sent with its dependencies' futures as arguments while they run, so the
    # scheduler chains them (no client round trip per link); `_runner.run_after` starts it only
    # if each succeeded. The engine decides when (`BaseExecutionBackend._upstream_of`).
    chains_dependencies = True

    def __init__(
        self,
        address: str | None = None,
        *,
        cluster: Any = None,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        gpus_per_worker: int | None = None,
        cluster_kwargs: Mapping[str, Any] | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        restrict_cores: bool | None = None,
        name: str | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        max_output: int = 1 << 20,
        kill_grace: float = 2.0,
        no_worker_timeout: float | None = 60.0,
    ) -> None:
        if address is not None and cluster is not None:
            raise ValueError("give either address= or cluster=, not both")
        embedded = address is None and cluster is None
        sizing = (n_workers, threads_per_worker, gpus_per_worker, cluster_kwargs)
        if not embedded and any(option is not None for option in sizing):
            raise ValueError(
                "n_workers, threads_per_worker, gpus_per_worker and cluster_kwargs size the "
                "embedded cluster; they cannot apply to address= or cluster="
            )
        if max_output < 1:
            raise ValueError(f"max_output must be >= 1 byte, got {max_output}")
        if kill_grace < 0:
            raise ValueError(f"kill_grace must be >= 0 seconds, got {kill_grace}")
        if no_worker_timeout is not None and not no_worker_timeout >= 0:
            raise ValueError(f"no_worker_timeout must be >= 0 seconds, got {no_worker_timeout}")
        super().__init__(name, work_dir=work_dir)
        self._address = address
        self._cluster = cluster
        self._shape = (
            ClusterShape.for_node(n_workers, threads_per_worker, gpus_per_worker)
            if embedded
            else None
        )
        self._cluster_kwargs = dict(cluster_kwargs or {})
        # What each embedded worker declares: its cores and GPUs, plus the free-form resources
        # given in cluster_kwargs (known for good: tasks are checked against them at submit).
        self._declared: dict[str, float] = {}
        if self._shape is not None:
            given = self._cluster_kwargs.get("resources")
            self._declared = {
                **_resources.declared(
                    given, "cluster_kwargs['resources']", "threads_per_worker / gpus_per_worker"
                ),
                **self._shape.resources,
            }
            self._cluster_kwargs["resources"] = self._declared
        self._client_kwargs = dict(client_kwargs or {})
        self._restrict_cores = restrict_cores
        self._max_output = max_output
        self._kill_grace = kill_grace
        self._no_worker_timeout = no_worker_timeout
        self._states = StateMapper(BACKEND_NAME, native=TASK_STATES)
        # Keys and topic carry a token: backends sharing a scheduler never see each other's tasks.
        token = uuid.uuid4().hex[:12]
        self._key_prefix = f"rhapsody-{token}-"
        self._topic = f"rhapsody-events-{token}"
        self._embedded: EmbeddedCluster | None = None
        self._client: Client | None = None
        self._attempts: dict[str, ExecutionContext] = {}  # submitted, unsettled attempts by key
        self._finished: dict[str, bytes] = {}  # their outcomes, as the runner's events bring them
        self._to_cancel: list[Future[bytes]] = []
        self._to_kill: list[str] = []
        self._abort_scheduled = False
        self._aborts: set[asyncio.Future[Any]] = set()
        # address=/cluster=: the connected workers, as last asked (see `_workers_now`)
        self._workers: list[dict[str, Any]] = []
        self._workers_asked = -math.inf
        self._workers_asking: asyncio.Future[list[dict[str, Any]]] | None = None
        self._worker_count = 0
        # Every worker lost (see `_watch_workers`): since when, and the attempts failed for it.
        self._futures: dict[str, Future[bytes]] = {}  # the dask future of each key in _attempts
        self._placing = 0  # tasks waiting in `_place` for a worker
        self._had_workers = False
        self._no_worker_since: float | None = None
        self._lost: dict[str, str] = {}  # key -> why it was failed
        self._watcher: asyncio.Task[None] | None = None

    @property
    def client(self) -> Client | None:
        """The asynchronous `distributed.Client` (None until the backend is started)."""
        return self._client

    async def sample_resources(self) -> list[dict[str, Any]]:
        """One resource sample of every worker's node (for `rhapsody.telemetry`): CPU, memory,
        disk, network and GPUs, measured in the worker since its previous sample."""
        client = self._client
        if client is None:
            return []
        from rhapsody.telemetry.resources import sample_this_node

        answers: dict[str, list[dict[str, Any]]] = await client.run(sample_this_node)
        return [{**row, "worker": worker} for worker, rows in answers.items() for row in rows]

    @property
    def capacity(self) -> tuple[int, int] | None:
        """The embedded cluster's cores (threads) and GPUs; None for other clusters, whose
        workers may come and go."""
        shape = self._shape
        if shape is None:
            return None
        n = shape.n_workers
        return n * shape.threads_per_worker, n * shape.gpus_per_worker

    def get_task_states_map(self) -> StateMapper:
        return self._states

    # -- engine ----------------------------------------------------------------------------------
    async def _start(self) -> None:
        if self._shape is not None:
            self._embedded = await EmbeddedCluster.start(self._shape, self._cluster_kwargs)
            target: Any = self._embedded.cluster
        else:
            target = self._address or self._cluster
        try:
            client = await Client(  # type: ignore[no-untyped-call]
                target, **{"asynchronous": True, "set_as_default": False, **self._client_kwargs}
            )
            if self._restrict_cores is None and self._shape is not None:
                self._restrict_cores = self._shape.threads_per_worker > 1
        except BaseException:
            if self._embedded is not None:
                await self._embedded.close()
            raise
        self._client = client
        client.subscribe_topic(self._topic, self._on_event)
        if self._shape is None and self._no_worker_timeout is not None:
            self._watcher = asyncio.ensure_future(self._watch_workers(self._no_worker_timeout))

    async def _stop(self) -> None:
        client = self._client
        assert client is not None
        embedded = self._embedded
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        # The embedded scheduler runs in this process and complains (even at CRITICAL) about
        # every message it can no longer deliver while things close: expected, so not shown.
        quiet = _quiet.silenced() if embedded else contextlib.nullcontext()
        with quiet:
            try:
                self._send_aborts()
                if self._aborts:
                    await asyncio.wait(self._aborts, timeout=self._kill_grace + _STOP_STEP_TIMEOUT)
                # Whatever still runs for us (a kill that raced the task's start) is stopped too.
                await self._quietly(
                    client.run(
                        _runner.stop_children, (), prefix=self._key_prefix, grace=self._kill_grace
                    )
                )
                client.unsubscribe_topic(self._topic)  # type: ignore[no-untyped-call]
                if embedded is not None:
                    await self._quietly(client.run(_runner.silence_dask_logs))
            finally:
                try:
                    if embedded is not None:  # workers, then scheduler; the client sees it go
                        await embedded.close()
                finally:
                    await self._quietly(client.close())  # type: ignore[no-untyped-call]

    def _check_task(self, task: TaskDescription) -> None:
        wanted = _resources.requested(task) if task.backend_kwargs else None
        if task.ranks > 1:
            raise TaskValidationError(
                f"dask runs each task as one process on one worker; a task of {task.ranks} "
                "ranks (an MPI program) needs a backend that launches MPI: radical_pilot "
                "(across nodes) or concurrent (under mpirun)",
                uid=task.uid,
                field="ranks",
            )
        if task.function is not None:
            if task.service is not None and task.service.probe == "log":
                raise TaskValidationError(
                    "a function task's output is not captured on dask, so a 'log' probe "
                    "cannot watch it; use 'publish', or run the service as an executable",
                    uid=task.uid,
                    field="service",
                )
            if task.isolation != "thread":
                raise TaskValidationError(
                    "dask runs function tasks on its workers' threads; "
                    "isolation='process' is not available",
                    uid=task.uid,
                    field="isolation",
                )
            for field in ("environment", "secret_environment", "working_directory"):
                if getattr(task, field) is not None:
                    raise TaskValidationError(
                        f"a function task shares its dask worker's {field.replace('_', ' ')}; "
                        "run an executable to give it its own",
                        uid=task.uid,
                        field=field,
                    )
            if task.service is not None and not inspect.iscoroutinefunction(task.function):
                raise TaskValidationError(
                    "a service must be stoppable, and a plain function on a dask worker's "
                    "thread cannot be stopped: make it an async function, or run the service "
                    "as an executable",
                    uid=task.uid,
                    field="service",
                )
        shape = self._shape
        # Only the embedded cluster's workers are known for good; elsewhere workers may join
        # later (adaptive or batch-queued clusters), and a task waits for one that fits.
        if shape is not None and (
            task.cores > shape.threads_per_worker or task.gpus > shape.gpus_per_worker
        ):
            raise ResourceError(
                f"task {task.uid!r} asks for {task.cores} core(s) and {task.gpus} GPU(s), but each "
                f"worker of the embedded dask cluster has {shape.threads_per_worker} core(s) and "
                f"{shape.gpus_per_worker} GPU(s)"
            )
        if shape is not None and wanted and not _resources.fits(wanted, self._declared):
            raise ResourceError(
                f"task {task.uid!r} asks for the dask worker resources {_resources.shown(wanted)}, "
                "but each worker of the embedded dask cluster declares "
                f"{_resources.shown(_resources.free(self._declared))} (declare more with "
                "cluster_kwargs={'resources': {...}})"
            )

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        client = self._client
        assert client is not None
        # One fresh key per attempt (what pure=False would give, but readable and ours).
        key = f"{self._key_prefix}{task.uid}-{ctx.attempt}"
        job = _runner.Job(
            task,
            self._topic,
            ctx.attempt,
            str(self.work_dir),
            self._max_output,
            self._embedded.children_dir if self._embedded is not None else None,
        )
        if self._shape is None:
            placed = await self._place(task)
            if isinstance(placed, str):
                return Outcome.failure(placed)
            resources = placed
        else:
            resources = self._restrictions(task, bool(self._restrict_cores))
        upstream = ctx.upstream  # the futures of its dependencies' attempts still in flight
        try:
            if upstream:
                future = client.submit(
                    _runner.run_after, job, *upstream, key=key, resources=resources
                )
            else:
                future = client.submit(_runner.run, job, key=key, resources=resources)
        except Exception as exc:  # e.g. a function cloudpickle cannot serialize
            return Outcome.failure(
                f"the task could not be sent to dask: {type(exc).__name__}: {exc}", exception=exc
            )
        self._attempts[key] = ctx
        self._futures[key] = future
        ctx.submitted(future)
        try:
            return await self._outcome(key, future)
        except asyncio.CancelledError:  # cancelled or timed out by the engine
            self._abort(future, key)
            raise
        finally:
            del self._attempts[key]
            del self._futures[key]
            self._finished.pop(key, None)
            self._lost.pop(key, None)

    async def _outcome(self, key: str, future: Future[bytes]) -> Outcome:
        try:
            error = await future.exception()  # type: ignore[no-untyped-call]  # settles; no fetch
            # The runner's FINISHED event comes before dask reports the task done (one worker
            # stream, relayed in order), so a small outcome is here already.
            payload = self._finished.pop(key, None)
            if payload is None:
                if self._states.to_main_state(str(future.status)) != DONE:
                    return self._dask_failure(key, future, error)
                payload = await future
        except Exception as exc:
            return self._dask_failure(key, future, exc)
        try:
            outcome: Outcome = pickle.loads(payload)
        except Exception as exc:  # e.g. the return value's class cannot be imported here
            return Outcome.failure(
                f"the task's result cannot be read here: {type(exc).__name__}: {exc}",
                exception=exc,
            )
        return outcome

    def _dask_failure(self, key: str, future: Future[bytes], exc: BaseException | None) -> Outcome:
        """The runner returns task failures, so an error here is dask's: say which."""
        if (lost := self._lost.get(key)) is not None:
            return Outcome.failure(lost)
        if self._states.to_main_state(str(future.status)) == CANCELED:
            return Outcome.failure("dask cancelled the task (was its scheduler restarted?)")
        if isinstance(exc, KilledWorker):
            return Outcome.failure(f"the dask worker running the task died: {exc}", exception=exc)
        return Outcome.failure(
            f"dask failed to run the task: {type(exc).__name__}: {exc}", exception=exc
        )

    def _restrictions(self, task: TaskDescription, restrict_cores: bool) -> dict[str, float] | None:
        wanted: dict[str, float] = {}
        if restrict_cores:
            wanted[CORES] = task.cores
        if task.gpus:
            wanted[GPUS] = task.gpus
        if task.backend_kwargs:  # rhapsody-py's free-form worker resources
            wanted.update(_resources.requested(task))
        return wanted or None

    async def _place(self, task: TaskDescription) -> dict[str, float] | str | None:
        """The restrictions of `task` on the workers of an address=/cluster= cluster, decided
        when it is sent (workers come and go: a batch-queued job starts, an adaptive cluster
        scales); or why no connected worker can ever run it. Waits while no worker is there."""
        workers = await self._workers_now(fresh=False)
        if not workers:
            self._placing += 1
            try:
                while not workers:
                    if (lost := self._all_lost()) is not None:
                        return lost
                    await asyncio.sleep(_WORKER_POLL)
                    workers = await self._workers_now(fresh=True)
            finally:
                self._placing -= 1
        restrict = self._restrict_cores
        if restrict is None:
            restrict = all(CORES in (w.get("resources") or {}) for w in workers)
        if _fits(task, restrict, workers):
            return self._restrictions(task, restrict)
        workers = await self._workers_now(fresh=True)  # a bigger worker may have joined
        if workers and _fits(task, restrict, workers):
            return self._restrictions(task, restrict)
        wanted = _resources.requested(task)
        offered = [w.get("resources") or {} for w in workers]
        if wanted and not any(_resources.fits(wanted, o) for o in offered):
            return (
                "no worker of the dask cluster can run it: it asks for the worker resources "
                f"{_resources.shown(wanted)}, and none of the {self._worker_count} worker(s) "
                f"connected declares them (declared: {_resources.offered_by(offered)})"
            )
        largest = max(workers or [{}], key=lambda w: _cores_of(w, restrict))
        return (
            f"no worker of the dask cluster can run it: it asks for {task.cores} core(s) and "
            f"{task.gpus} GPU(s), the largest of the {self._worker_count} worker(s) connected has "
            f"{_cores_of(largest, restrict)} core(s) and "
            f"{int((largest.get('resources') or {}).get(GPUS, 0))} GPU(s)"
            + ("" if restrict else " (threads, as the workers declare no 'cores' resource)")
        )

    async def _workers_now(self, fresh: bool) -> list[dict[str, Any]]:
        """The connected workers' sizes (resources, nthreads), one entry per distinct size so
        that placing a task costs the same for any number of workers: asked at most every
        `_WORKER_INFO_AGE` seconds unless `fresh`, one request shared by concurrent callers.
        (The client's own cached scheduler info lists no workers.)"""
        loop = asyncio.get_running_loop()
        if not fresh and self._workers and loop.time() - self._workers_asked < _WORKER_INFO_AGE:
            return self._workers
        if self._workers_asking is None:
            self._workers_asking = asyncio.ensure_future(self._ask_workers())
        asking = self._workers_asking
        try:
            return await asyncio.shield(asking)
        finally:
            if self._workers_asking is asking and asking.done():
                self._workers_asking = None

    async def _ask_workers(self) -> list[dict[str, Any]]:
        client = self._client
        assert client is not None and client.scheduler is not None
        identity = await client.scheduler.identity(n_workers=-1)
        workers = identity.get("workers", {}).values()
        sizes: dict[tuple[Any, ...], dict[str, Any]] = {}
        for worker in workers:
            resources = worker.get("resources") or {}
            size = (tuple(sorted(resources.items())), worker.get("nthreads"))
            sizes.setdefault(size, {"resources": resources, "nthreads": worker.get("nthreads")})
        self._workers = list(sizes.values())
        self._worker_count = len(workers)
        self._counted(len(workers))
        self._workers_asked = asyncio.get_running_loop().time()
        return self._workers

    async def _watch_workers(self, timeout: float) -> None:
        """While tasks are sent or waiting for a worker, count the connected workers; once none
        has been connected for `timeout` seconds (after some were), fail the attempts dask
        holds: with no worker to run them they would wait in dask for ever."""
        client = self._client
        assert client is not None and client.scheduler is not None
        while True:
            await asyncio.sleep(_WORKER_POLL)
            if not (self._attempts or self._placing):
                continue
            try:
                connected = len(await client.scheduler.ncores())
            except Exception as exc:  # the scheduler is gone: the attempts' futures say so
                logger.debug("%s: cannot count the dask workers: %s", self.name, exc)
                continue
            self._counted(connected)
            if (reason := self._all_lost()) is not None:
                stranded = [key for key in self._futures if key not in self._lost]
                for key in stranded:
                    self._lost[key] = reason
                if stranded:
                    futures = [self._futures[key] for key in stranded]
                    self._track(client.cancel(futures))  # type: ignore[no-untyped-call]

    def _counted(self, connected: int) -> None:
        """Start or stop the no-worker clock. It runs only after some worker was connected:
        before that, batch jobs may still be queued, and `_place` waits for them."""
        if connected:
            self._had_workers, self._no_worker_since = True, None
        elif self._had_workers and self._no_worker_since is None:
            self._no_worker_since = asyncio.get_running_loop().time()

    def _all_lost(self) -> str | None:
        """Why tasks cannot run: every worker lost for longer than `no_worker_timeout`."""
        since, timeout = self._no_worker_since, self._no_worker_timeout
        if since is None or timeout is None or asyncio.get_running_loop().time() - since < timeout:
            return None
        return (
            f"every dask worker was lost (their jobs ended or their nodes failed) and none "
            f"connected again within no_worker_timeout={timeout:g} s, so no worker could run it"
        )

    def _on_event(self, event: tuple[float, list[Any]]) -> None:
        # Runs on the caller's loop (the client's). Late events of settled attempts are ignored.
        message = event[1]
        kind, key = message[0], message[1]
        ctx = self._attempts.get(key)
        if ctx is None:
            return
        if kind == _runner.STARTED:
            ctx.started(node=message[2])
        elif kind == _runner.FINISHED:
            self._finished[key] = message[2]
        elif kind == _runner.OUTPUT:
            ctx.output(message[2])
        elif kind == _runner.ADDRESS:
            ctx.service_address(message[2], message[3])

    # -- cancellation ----------------------------------------------------------------------------
    def _abort(self, future: Future[bytes], key: str) -> None:
        """Release a cancelled or timed-out attempt, and stop attempt `key` on its worker: the
        process group of an executable, the coroutine of an async function. A running plain
        function cannot be interrupted: dask cannot stop a thread."""
        self._to_cancel.append(future)
        self._to_kill.append(key)
        if not self._abort_scheduled:  # one message for every abort of this loop iteration
            self._abort_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_aborts)

    def _send_aborts(self) -> None:
        self._abort_scheduled = False
        client = self._client
        if client is None or not self._to_cancel:
            return
        futures, self._to_cancel = self._to_cancel, []
        keys, self._to_kill = self._to_kill, []
        self._track(client.cancel(futures))  # type: ignore[no-untyped-call]
        if keys:
            self._track(client.run(_runner.stop_children, keys, grace=self._kill_grace))

    def _track(self, request: Coroutine[Any, Any, Any]) -> None:
        done = asyncio.ensure_future(request)
        self._aborts.add(done)
        done.add_done_callback(self._aborted)

    def _aborted(self, done: asyncio.Future[Any]) -> None:
        self._aborts.discard(done)
        if not done.cancelled() and done.exception() is not None:
            logger.warning("%s: could not stop a task on dask: %s", self.name, done.exception())

    async def _quietly(self, request: Any) -> None:
        try:
            await asyncio.wait_for(request, self._kill_grace + _STOP_STEP_TIMEOUT)
        except Exception as exc:  # shutting down: report, but go on closing
            logger.warning("%s: shutdown step failed: %s: %s", self.name, type(exc).__name__, exc)


def _cores_of(worker: dict[str, Any], restricted: bool) -> int:
    """The cores a worker offers a task: its declared `cores` where tasks are restricted by
    them, else its threads."""
    if restricted:
        return int((worker.get("resources") or {}).get(CORES, 0))
    return int(worker.get("nthreads") or 0)


def _fits(task: TaskDescription, restricted: bool, workers: list[dict[str, Any]]) -> bool:
    wanted = _resources.requested(task)
    return any(
        _cores_of(w, restricted) >= task.cores
        and (w.get("resources") or {}).get(GPUS, 0) >= task.gpus
        and _resources.fits(wanted, w.get("resources") or {})
        for w in workers
    )
