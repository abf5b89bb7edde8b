"""`radical_pilot`: run tasks on a RADICAL-Pilot pilot, on this machine or on an HPC allocation.

The engine (`BaseExecutionBackend`) owns states, futures, dependencies, timeouts, retries and
cancellation; this module only translates one attempt of a task into a RADICAL-Pilot task and
its final state back into an `Outcome`:

- RADICAL-Pilot calls back from its own threads. Only the events that matter (the agent starts
  the task, the task ends) are handed to the event loop, in batches, by `_Inbox`.
- Attempts that start in the same loop iteration (or while the previous batch is being
  submitted) go to RADICAL-Pilot in one `submit_tasks` call.
- Every blocking RADICAL-Pilot call runs on one dedicated thread (`RPThread`).
- Function tasks run through raptor, whose master and workers start with the first of them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import itertools
import json
import logging
import os
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import radical.pilot as rp  # type: ignore[import-untyped]

from rhapsody.backends import launch
from rhapsody.backends.base import BaseExecutionBackend, ExecutionContext, Outcome
from rhapsody.errors import BackendError, ResourceError
from rhapsody.platforms import PlatformDescription
from rhapsody.services.spec import HOST_PLACEHOLDER, PORT_PLACEHOLDER
from rhapsody.states import FINAL_STATES, StateMapper
from rhapsody.task import TaskDescription
from rhapsody_radical import _call, config, processes, translate
from rhapsody_radical.node_sampling import PilotSampler
from rhapsody_radical.runtime import RPThread, Runtime, StartError
from rhapsody_radical.states import AGENT_EXECUTING, TASK_STATES

logger = logging.getLogger("rhapsody.radical_pilot")

T = TypeVar("T")
# Output kept in the dict when a stream is larger than `max_output` (as the concurrent backend).
_TAIL_BYTES = 64 * 1024
# RADICAL-Pilot 1.103 cannot be trusted to cancel an executable (`tmgr.cancel_tasks`):
# - a cancel that reaches the agent's executor before the task does makes it drop the task as
#   CANCELED without releasing its cores; after as many such cancels as the pilot has cores no
#   task starts again (8 of ~300 random cancels in the conformance state machine did this);
# - one that arrives while the executor is starting the program makes it publish the task with
#   its `Popen` object, which fails to serialize: every task of that bulk stays AGENT_EXECUTING;
# - one that arrives before the program started is ignored ("FIXME: this is a race").
# So a withdrawn executable is stopped only once the agent reports it executing (not at all if
# it ends first): on a local pilot by killing its processes until RADICAL-Pilot reports it ended,
# which frees its cores as for any failed program; on a remote one, whose processes cannot be
# seen from here, by a cancel sent a little later, when its start is most likely over.
_KILL_POLL = 0.2
_REMOTE_CANCEL_DELAY = 2.0
# seconds between two looks at the pilot's state (see _watch_pilot)
_PILOT_POLL = 2.0
# How often a service's address file is looked for (`_located`).
_ADDRESS_POLL = 0.1


class _Attempt:
    """One attempt of a task as RADICAL-Pilot runs it."""

    __slots__ = ("ctx", "executing", "future", "task")

    def __init__(
        self,
        task: TaskDescription,
        ctx: ExecutionContext,
        future: asyncio.Future[tuple[Outcome, dict[str, Any]]],
    ) -> None:
        self.task = task
        self.ctx = ctx
        self.future = future
        self.executing = False  # the agent reported it executing


class _Inbox:
    """Carries RADICAL-Pilot's callbacks to the event loop: one wake-up per burst of events."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, handle: Callable[[tuple[Any, ...]], None]
    ) -> None:
        self._loop = loop
        self._handle = handle
        self._events: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()
        self._woken = False

    def task_event(self, uid: str, state: str, result: dict[str, Any] | None) -> None:
        # RADICAL-Pilot reports ~15 states per task; only the start and the end matter here.
        if state == AGENT_EXECUTING or TASK_STATES.get(state) in FINAL_STATES:
            self._put(("task", uid, state, result))

    def pilot_event(self, state: str, diagnostics: str) -> None:
        self._put(("pilot", state, diagnostics))

    def _put(self, event: tuple[Any, ...]) -> None:
        with self._lock:
            self._events.append(event)
            if self._woken:
                return
            self._woken = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            events = list(self._events)
            self._events.clear()
            self._woken = False
        for event in events:
            self._handle(event)


class RadicalExecutionBackend(BaseExecutionBackend):
    """Run tasks on one RADICAL-Pilot pilot.

    :param resource: RADICAL-Pilot resource label; default the platform's, else
        ``local.localhost`` (this machine).
    :param platform: a `PlatformDescription` (or its catalog name) that supplies the resource
        label, the queue/partition and the project/account.
    :param cores: cores of the pilot (default: the CPUs of this machine for ``local.*``
        resources, else one node); ``gpus``, ``nodes``: likewise.
    :param runtime: the pilot's wall time in minutes.
    :param queue: batch queue or partition; ``project``: allocation to charge.
    :param pilot_description: further `rp.PilotDescription` fields (``access_schema``,
        ``sandbox``, ...).
    :param launch_method: how the agent starts tasks (``srun``, ``mpirun``, ...), where the
        backend writes the resource configuration: a SLURM platform without
        ``radical_resource``, or ``platform="auto"`` in a SLURM job; default the platform's.
    :param raptor_workers: raptor workers started with the first function task; each takes
        ``raptor_worker_cores`` cores and ``raptor_worker_gpus`` GPUs of the pilot (the raptor
        master takes one more core).
    :param start_timeout: seconds the pilot may take to become active.
    :param close_timeout: seconds `shutdown()` waits for RADICAL-Pilot to close before it stops
        the session's processes itself.
    :param max_output: bytes of stdout/stderr kept in the task dict; a larger stream is cut to
        its last 64 KiB and its file is named in ``stdout_file`` / ``stderr_file``.
    """

    backend_name = "radical_pilot"
    runs_mpi = True  # the agent launches the ranks
    queues_tasks = True  # the pilot queues submitted tasks: timeouts count from the start

    def __init__(
        self,
        resource: str | None = None,
        *,
        platform: PlatformDescription | str | None = None,
        cores: int | None = None,
        gpus: int = 0,
        nodes: int | None = None,
        runtime: int = 60,
        queue: str | None = None,
        project: str | None = None,
        pilot_description: Mapping[str, Any] | None = None,
        launch_method: str | None = None,
        raptor_workers: int = 1,
        raptor_worker_cores: int = 1,
        raptor_worker_gpus: int = 0,
        start_timeout: float = 300.0,
        close_timeout: float = 60.0,
        max_output: int = 1 << 20,
        name: str | None = None,
        work_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(name, work_dir=work_dir)
        planned = config.pilot(
            resource,
            platform=platform,
            cores=cores,
            gpus=gpus,
            nodes=nodes,
            runtime=runtime,
            queue=queue,
            project=project,
            launch_method=launch_method,
            extra=pilot_description,
        )
        self._pilot_fields, self._resource_config = planned.fields, planned.resource_config
        # A pilot that does not run on this host runs services where this process cannot choose
        # their port: `rhapsody.services.on_node` chooses it on the node and reports it.
        self.chooses_service_ports = not self._pilot_fields["resource"].startswith("local.")
        for label, value, minimum in (
            ("raptor_workers", raptor_workers, 1),
            ("raptor_worker_cores", raptor_worker_cores, 1),
            ("raptor_worker_gpus", raptor_worker_gpus, 0),
        ):
            if value < minimum:
                raise ValueError(f"{label} must be >= {minimum}, got {value}")
        if start_timeout <= 0 or close_timeout <= 0 or max_output < 1:
            raise ValueError("start_timeout, close_timeout and max_output must be positive")
        self._raptor_shape = (raptor_workers, raptor_worker_cores, raptor_worker_gpus)
        self.start_timeout = start_timeout
        self.close_timeout = close_timeout
        self.max_output = max_output
        self._runtime: Runtime | None = None
        self._thread: RPThread | None = None
        self._uids = itertools.count()
        self._attempts: dict[str, _Attempt] = {}
        self._outbox: dict[str, dict[str, Any]] = {}  # described, not yet submitted
        self._cancels: list[str] = []
        # withdrawn executables (see the note at _KILL_POLL): not yet executing / being stopped
        self._stop_when_executing: set[str] = set()
        self._stopping: set[str] = set()
        self._killer: asyncio.Task[None] | None = None
        self._pilot_watch: asyncio.Future[None] | None = None
        self._flush_scheduled = False
        self._submitting = False
        self._pilot_error: str | None = None
        self._raptor: asyncio.Future[str] | None = None
        self._raptor_error: str | None = None
        self._raptor_uids: frozenset[str] = frozenset()
        self._token = uuid.uuid4().hex[:12]  # names this backend's files in a shared work_dir
        self._node_sampler: PilotSampler | None = None  # on telemetry's first round

    # -- RADICAL-Pilot objects, for callers that need the native API (None until started) --
    @property
    def session(self) -> Any:
        return self._runtime.session if self._runtime else None

    @property
    def pilot(self) -> Any:
        return self._runtime.pilot if self._runtime else None

    @property
    def task_manager(self) -> Any:
        return self._runtime.tmgr if self._runtime else None

    @property
    def raptor_uid(self) -> str | None:
        """The raptor master's uid, once the first function task has started it."""
        raptor = self._raptor
        if raptor is None or not raptor.done() or raptor.cancelled() or raptor.exception():
            return None
        return raptor.result()

    @property
    def pilot_fields(self) -> dict[str, Any]:
        """The `rp.PilotDescription` fields this backend submits."""
        return dict(self._pilot_fields)

    @property
    def capacity(self) -> tuple[int, int] | None:
        """The pilot's cores and GPUs (None for a pilot sized in nodes)."""
        fields = self._pilot_fields
        if "cores" not in fields:
            return None
        return int(fields["cores"]), int(fields.get("gpus", 0))

    async def sample_resources(self) -> list[dict[str, Any]]:
        """One resource sample of each node of a SLURM pilot (for `rhapsody.telemetry`),
        from a sampling step started on the first call (see `node_sampling`); none for other
        pilots (a local pilot's node is the client's, which telemetry samples itself)."""
        runtime = self._runtime
        if runtime is None or self._closing:
            return []
        sampler = self._node_sampler
        if sampler is None:
            sandbox = runtime.pilot_sandbox()
            directory = self._ensure_work_dir() / f"node-samples.{self._token}"
            sampler = self._node_sampler = PilotSampler(sandbox, runtime.sid, directory)
            why_not = await asyncio.to_thread(sampler.start)
            if why_not is not None:
                logger.info("%s: no resource samples of the pilot's nodes: %s", self.name, why_not)
        return await asyncio.to_thread(sampler.read)

    def get_task_states_map(self) -> StateMapper:
        return StateMapper(self.backend_name, native=TASK_STATES)

    # -- engine hooks ----------------------------------------------------------------------
    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        inbox = _Inbox(loop, self._on_event)
        runtime = self._runtime = Runtime(
            self._pilot_fields, inbox.task_event, inbox.pilot_event, self._resource_config
        )
        self._thread = RPThread(f"rhapsody-{self.name}")
        # A process that exits without shutdown() must not leave the agent running (its
        # heartbeat timeout is ten minutes).
        atexit.register(runtime.kill_leftovers)
        try:
            await asyncio.wait_for(
                self._rp(runtime.start, self.start_timeout), self.start_timeout + self.close_timeout
            )
        except Exception as exc:
            if not isinstance(exc, TimeoutError):  # else the RP thread is stuck: skip close()
                await self._close_quietly(runtime)
            await asyncio.to_thread(runtime.kill_leftovers)
            self._drop_runtime(runtime)
            why = str(exc) if isinstance(exc, StartError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, TimeoutError):
                why = f"RADICAL-Pilot did not start within {self.start_timeout:g} s"
            raise BackendError(f"backend {self.name!r} failed to start: {why}") from exc
        except BaseException:  # cancelled or interrupted while starting: stop what started
            runtime.kill_leftovers()
            self._drop_runtime(runtime)
            raise
        self._pilot_watch = asyncio.ensure_future(self._watch_pilot(runtime))
        self._pilot_watch.add_done_callback(_log_failure)

    async def _watch_pilot(self, runtime: Runtime) -> None:
        """Look at the pilot's state too: RADICAL-Pilot 1.103 calls no pilot callback for every
        end (a pilot cancelled through its manager went DONE with none, its tasks left
        looking EXECUTING)."""
        while not self._closing and self._pilot_error is None:
            await asyncio.sleep(_PILOT_POLL)
            state = runtime.pilot.state
            if state in FINAL_STATES and not self._closing and self._pilot_error is None:
                self._on_pilot_final(state, await asyncio.to_thread(runtime.diagnostics))

    async def _stop(self) -> None:
        runtime = self._runtime
        if runtime is None:
            return
        if self._killer is not None:
            self._killer.cancel()  # closing the session stops every task
        if self._pilot_watch is not None:
            self._pilot_watch.cancel()
        if self._node_sampler is not None:
            await asyncio.to_thread(self._node_sampler.stop)
            self._node_sampler = None
        await self._close_quietly(runtime)
        leftovers = await asyncio.to_thread(runtime.kill_leftovers)
        if leftovers:
            logger.warning(
                "%s: stopped %d process(es) RADICAL-Pilot left behind: %s",
                self.name,
                len(leftovers),
                ", ".join(leftovers[:10]),
            )
        self._drop_runtime(runtime)

    def _check_task(self, task: TaskDescription) -> None:
        translate.check(task)
        if task.is_function:
            _, cores, gpus = self._raptor_shape
            where = "a raptor worker"
        else:
            ranks = task.backend_kwargs.get("ranks", task.ranks)
            cores = self._pilot_fields.get("cores", 0) // ranks
            gpus = self._pilot_fields.get("gpus", 0)
            where = "the pilot"
            if "cores" not in self._pilot_fields:  # sized in nodes: RADICAL-Pilot checks
                return
        if task.cores_per_rank > cores or task.gpus_per_rank > gpus:
            raise ResourceError(
                f"task {task.uid!r} asks for {task.cores_per_rank} core(s) and "
                f"{task.gpus_per_rank} GPU(s) per rank, "
                f"but {where} has {cores} core(s) and {gpus} GPU(s)"
            )

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        if self._pilot_error is not None:
            return Outcome.failure(self._pilot_error)
        address = None  # where a service's node writes its address (`_on_node`)
        if task.is_function:
            fields = await self._describe_function(task)
            if isinstance(fields, Outcome):
                return fields
        else:
            if task.service is not None and self.chooses_service_ports:
                task, address = self._on_node(task, ctx)
            fields = translate.executable_fields(task)
        uid = fields["uid"] = f"rh.{next(self._uids):06d}"
        fields.setdefault("name", task.uid)
        assert self._loop is not None
        attempt = _Attempt(task, ctx, self._loop.create_future())
        self._attempts[uid] = attempt
        self._outbox[uid] = fields
        self._schedule_flush()
        located = None if address is None else self._loop.create_task(_located(address, ctx))
        try:
            outcome, result = await attempt.future
        except asyncio.CancelledError:
            self._withdraw(uid, attempt)
            raise
        finally:
            self._attempts.pop(uid, None)
            if located is not None:
                located.cancel()
            if address is not None:
                address.unlink(missing_ok=True)
        sandbox = result.get("sandbox")  # local pilots only
        if sandbox and not task.is_function:
            outcome = await asyncio.to_thread(self._from_sandbox, outcome, result, uid)
        return outcome

    def _on_node(
        self, task: TaskDescription, ctx: ExecutionContext
    ) -> tuple[TaskDescription, Path]:
        """Service `task` started through `rhapsody.services.on_node`, which fills in `{host}`
        and `{port}` on its node and writes them to the returned file (in the work directory,
        which the nodes must share with this host, as the pilot's sandbox)."""
        assert task.service is not None
        # Unique to this backend and attempt (work directories are shared), removed at its end.
        name = f"{ctx.uid.replace(os.sep, '_')}.{ctx.attempt}.{self._token}.address"
        address = self._ensure_work_dir() / name
        wrapper = ["-m", "rhapsody.services.on_node", "--address-file", str(address)]
        iface = os.environ.get("RADICAL_DEFAULT_IFACE")  # where RADICAL-Pilot itself binds
        if iface:
            wrapper += ["--iface", iface]
        if task.service.port is not None:
            wrapper += ["--port", str(task.service.port)]
        for name, value in (task.environment or {}).items():
            if PORT_PLACEHOLDER in value or HOST_PLACEHOLDER in value:
                wrapper += ["--env", name]
        argv = launch.command_line(task)
        wrapped = attrs.evolve(
            task, executable=sys.executable, arguments=(*wrapper, "--", *argv), shell=False
        )
        return wrapped, address

    # -- submission --------------------------------------------------------------------------
    def _rp(self, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        assert self._thread is not None and self._loop is not None
        return self._thread.run(self._loop, func, *args)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Submit what was described since the last flush; cancel what was withdrawn."""
        self._flush_scheduled = False
        assert self._runtime is not None
        if self._cancels:
            uids, self._cancels = self._cancels, []
            self._rp(self._runtime.cancel, uids).add_done_callback(_log_failure)
        if self._outbox and not self._submitting:
            batch, self._outbox = list(self._outbox.values()), {}
            self._submitting = True
            done = functools.partial(self._submitted, batch)
            self._rp(self._runtime.submit, batch).add_done_callback(done)

    def _submitted(self, batch: list[dict[str, Any]], future: asyncio.Future[None]) -> None:
        self._submitting = False
        error = None if future.cancelled() else future.exception()
        if error is not None:
            why = f"{type(error).__name__}: {error}"
            outcome = Outcome.failure(f"RADICAL-Pilot refused the task: {why}")
            for fields in batch:
                self._stop_when_executing.discard(fields["uid"])
                self._resolve(fields["uid"], outcome, {})
        if self._outbox:  # described while this batch was being submitted
            self._schedule_flush()

    def _withdraw(self, uid: str, attempt: _Attempt) -> None:
        """The engine cancelled an attempt (cancel, timeout, shutdown): stop it in RADICAL-Pilot."""
        if self._outbox.pop(uid, None) is not None:
            return  # never submitted
        if self._closing:
            return  # closing the session stops every task
        if attempt.task.is_function:  # raptor's cancel is sound
            self._send_cancel(uid)
        elif attempt.executing:
            self._stop_executable(uid)
        else:
            self._stop_when_executing.add(uid)

    def _send_cancel(self, uid: str) -> None:
        self._cancels.append(uid)  # queued behind its submission on the RP thread
        self._schedule_flush()

    def _stop_executable(self, uid: str) -> None:
        assert self._runtime is not None and self._loop is not None
        self._stopping.add(uid)
        if not self._runtime.is_local:
            self._loop.call_later(_REMOTE_CANCEL_DELAY, self._cancel_if_running, uid)
        elif self._killer is None or self._killer.done():
            self._killer = asyncio.ensure_future(self._kill_stopping(self._runtime.sid))
            self._killer.add_done_callback(_log_failure)

    def _cancel_if_running(self, uid: str) -> None:
        if uid in self._stopping and not self._closing:
            self._stopping.discard(uid)
            self._send_cancel(uid)

    async def _kill_stopping(self, sid: str) -> None:
        """Kill the processes of withdrawn executables until RADICAL-Pilot reports them ended."""
        while self._stopping and not self._closing:
            stopped = await asyncio.to_thread(processes.kill_tasks, sid, set(self._stopping))
            if stopped:
                logger.debug("%s: stopped withdrawn tasks: %s", self.name, ", ".join(stopped))
            await asyncio.sleep(_KILL_POLL)

    def _resolve(self, uid: str, outcome: Outcome, result: dict[str, Any]) -> None:
        attempt = self._attempts.get(uid)
        if attempt is not None and not attempt.future.done():
            attempt.future.set_result((outcome, result))

    # -- events from RADICAL-Pilot (on the loop) ----------------------------------------------
    def _on_event(self, event: tuple[Any, ...]) -> None:
        if event[0] == "pilot":
            self._on_pilot_final(event[1], event[2])
            return
        _, uid, _, result = event
        attempt = self._attempts.get(uid)
        if attempt is None:
            if uid in self._stop_when_executing:
                self._stop_when_executing.discard(uid)
                if result is None:  # executing now
                    self._stop_executable(uid)
                return
            if result is not None and uid in self._stopping:
                self._stopping.discard(uid)
                return
            if uid in self._raptor_uids and result is not None and not self._closing:
                self._on_raptor_final(uid, result)
            return
        if result is None:
            attempt.executing = True
            # no node yet: RADICAL-Pilot's agent publishes a task's slots with its end only
            attempt.ctx.started()
            return
        task = attempt.task
        if task.is_function:
            outcome = translate.function_outcome(task, result)
        else:
            outcome = translate.executable_outcome(task, result)
        # Where it ran: the pilot sandbox's task directory, and its node (telemetry's spans).
        extra = {"radical_sandbox": result.get("sandbox"), "node": result.get("node")}
        outcome.extra = {key: value for key, value in extra.items() if value} or None
        self._resolve(uid, outcome, result)

    def _on_pilot_final(self, state: str, diagnostics: str) -> None:
        if self._closing or self._pilot_error is not None:  # seen by the callback and the watch
            return
        assert self._runtime is not None
        self._pilot_error = f"pilot on {self._runtime.resource} ended {state}\n{diagnostics}"
        logger.error("%s: %s", self.name, self._pilot_error)
        if self._runtime.is_local and self._attempts:
            # an ended pilot's agent does not always stop its tasks (a cancelled one left them)
            kill = asyncio.to_thread(processes.kill_tasks, self._runtime.sid, set(self._attempts))
            asyncio.ensure_future(kill).add_done_callback(_log_failure)
        for uid in list(self._attempts):
            self._resolve(uid, Outcome.failure(self._pilot_error), {})

    def _on_raptor_final(self, uid: str, result: dict[str, Any]) -> None:
        self._raptor_error = (
            f"raptor task {uid} ended {result['state']}{translate.failure_detail(result)}"
        )
        logger.error("%s: %s", self.name, self._raptor_error)
        for attempt_uid, attempt in list(self._attempts.items()):
            if attempt.task.is_function:
                self._resolve(attempt_uid, Outcome.failure(self._raptor_error), {})

    # -- function tasks ----------------------------------------------------------------------
    async def _describe_function(self, task: TaskDescription) -> dict[str, Any] | Outcome:
        try:
            raptor_uid = await asyncio.shield(self._ensure_raptor())
        except Exception as exc:
            return Outcome.failure(f"cannot start raptor: {type(exc).__name__}: {exc}")
        if self._raptor_error is not None:
            return Outcome.failure(self._raptor_error)
        try:
            packed = _call.pack_call(task.function, task.args, task.kwargs)  # type: ignore[arg-type]
            payload = rp.PythonTask(functools.partial(_call.call, packed), (), {})
        except Exception as exc:
            return Outcome.failure(
                f"cannot send {task.function!r} to the worker: {exc}", exception=exc
            )
        fields = translate.function_fields(task)
        fields.update(mode=rp.TASK_FUNCTION, function=payload, raptor_id=raptor_uid)
        return fields

    def _ensure_raptor(self) -> asyncio.Future[str]:
        if self._raptor is None:
            self._raptor = asyncio.ensure_future(self._start_raptor())
            # its error reaches every waiting task; this keeps it from being "never retrieved"
            # when none is left to wait
            self._raptor.add_done_callback(_log_failure)
        return self._raptor

    async def _start_raptor(self) -> str:
        assert self._runtime is not None
        master, workers = await self._rp(self._runtime.start_raptor, *self._raptor_shape)
        self._raptor_uids = frozenset((master, *workers))
        return master

    # -- helpers -----------------------------------------------------------------------------
    async def _close_quietly(self, runtime: Runtime) -> None:
        try:
            await asyncio.wait_for(self._rp(runtime.close), self.close_timeout)
        except Exception as exc:
            logger.warning(
                "%s: RADICAL-Pilot did not close cleanly (%s: %s); stopping its processes",
                self.name,
                type(exc).__name__,
                exc,
            )

    def _drop_runtime(self, runtime: Runtime) -> None:
        atexit.unregister(runtime.kill_leftovers)
        if self._thread is not None:
            self._thread.stop()

    def _from_sandbox(self, outcome: Outcome, result: dict[str, Any], uid: str) -> Outcome:
        """An executable's outcome completed from its sandbox (local pilots only): its whole
        streams, and a failure for a DONE whose program did not run to its end."""
        sandbox = Path(result["sandbox"])
        self._read_streams(outcome, sandbox, uid)
        if not outcome.ok or _ran_to_its_end(sandbox, uid):
            return outcome
        return Outcome.failure(
            f"its program did not run to its end on {result.get('node') or 'its node'}: "
            "RADICAL-Pilot reported exit code 0, but the task's exec script never got past "
            "the program (killed with its node or job; mpirun exits 0 when it loses a node)",
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            extra=outcome.extra,
        )

    def _read_streams(self, outcome: Outcome, sandbox: Path, uid: str) -> None:
        """Replace RADICAL-Pilot's copies of the streams with their files (local pilots only):
        it keeps the last 1 KiB, read in text mode (a '\\r' comes back as '\\n')."""
        for field, suffix in (("stdout", "out"), ("stderr", "err")):
            path = sandbox / f"{uid}.{suffix}"
            try:
                with path.open("rb") as handle:
                    size = handle.seek(0, os.SEEK_END)
                    keep = size if size <= self.max_output else _TAIL_BYTES
                    handle.seek(size - keep)
                    text = handle.read().decode(errors="replace")
            except OSError:
                continue
            setattr(outcome, field, text)
            if keep < size:
                outcome.extra = {**(outcome.extra or {}), f"{field}_file": str(path)}


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("RADICAL-Pilot call failed: %r", future.exception())


async def _located(address: Path, ctx: ExecutionContext) -> None:
    """Report the address `rhapsody.services.on_node` wrote once it is there (read in a
    thread: a shared file system can be slow)."""
    # A file another node writes: nothing here to wait on but the file system.
    while (where := await asyncio.to_thread(_read_address, address)) is None:  # noqa: ASYNC110
        await asyncio.sleep(_ADDRESS_POLL)
    ctx.service_address(where["host"], where["port"])


def _ran_to_its_end(sandbox: Path, uid: str) -> bool:
    """Whether the exec script of executable `uid` got past its program: it lists the files
    the program made (`<uid>.ofiles`) right after the program ends, and only then. A launcher
    can report success for a program that was killed (Open MPI's mpirun, when the node of its
    daemon is lost, exits 0): such a task must not pass as DONE."""
    return (sandbox / f"{uid}.ofiles").exists()


def _read_address(address: Path) -> dict[str, Any] | None:
    try:
        where: dict[str, Any] = json.loads(address.read_text())
    except FileNotFoundError:
        return None
    return where
