"""One RADICAL-Pilot session: a PilotManager, one pilot, a TaskManager and, on demand, raptor.

Everything here blocks, so the backend runs it on one dedicated thread (`RPThread`). One thread
also keeps RADICAL-Pilot's client objects from being used concurrently: its ZMQ publishers are
not thread-safe (and RADICAL-Pilot's own threads publish too: `publisher_lock`). RADICAL-Pilot
calls `on_task` / `on_pilot` from its own threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import radical.pilot as rp  # type: ignore[import-untyped]
import radical.utils as ru  # type: ignore[import-untyped]

from rhapsody.backends.execution._orphans import Watchdog, kill_process_later
from rhapsody_radical import loopback, processes, publisher_lock, user_config
from rhapsody_radical.states import FINAL

T = TypeVar("T")
TaskCallback = Callable[[str, str, "dict[str, Any] | None"], None]
PilotCallback = Callable[[str, str], None]
# a call, and what to do with its result or error
_Job = tuple[Callable[[], Any], Callable[[Any, "BaseException | None"], None]]

# Fields of a final task that the backend turns into an outcome.
_RESULT_FIELDS = ("stdout", "stderr", "exit_code", "return_value", "exception", "exception_detail")
_TAIL_LINES = 25
_LOG_ENTRY = re.compile(r"\d{9,}\.\d+ : ")
# The component that submits pilot jobs starts with the PilotManager and keeps the environment
# it had then. SLURM requeues a job whose node fails: the pilot's would come back later as a new
# agent the client never hears of, while the tasks of the lost one waited for ever. Without
# requeueing the job fails, and so does the pilot, with its tasks (docs/reliability.md).
_SUBMITTER_ENV = {"SBATCH_NO_REQUEUE": "1"}
# The raptor classes, loaded by path inside the pilot (not imported here).
_RAPTOR_FILE = str(Path(__file__).resolve().with_name("_raptor.py"))


class StartError(RuntimeError):
    """The pilot did not become active; the message carries the diagnostics."""


class RPThread:
    """A daemon thread that runs blocking calls one at a time for an event loop.

    A daemon, unlike an executor's worker: a call stuck inside RADICAL-Pilot must not keep the
    interpreter from exiting.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def run(
        self, loop: asyncio.AbstractEventLoop, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        """Queue `func(*args)`; the returned future (of `loop`) resolves with its result."""
        future: asyncio.Future[T] = loop.create_future()

        def settle(value: Any, error: BaseException | None) -> None:
            if not future.done():
                if error is None:
                    future.set_result(value)
                else:
                    future.set_exception(error)

        def done(value: Any, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(settle, value, error)

        self._jobs.put((lambda: func(*args), done))
        return future

    def stop(self) -> None:
        """Let the thread end after the queued calls."""
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            func, done = job
            try:
                value = func()
            except BaseException as exc:  # handed to the caller, never lost in this thread
                done(None, exc)
            else:
                done(value, None)


class Runtime:
    """The RADICAL-Pilot objects of one backend. Every method blocks; call from one thread."""

    def __init__(
        self,
        pilot_description: Mapping[str, Any],
        on_task: TaskCallback,
        on_pilot: PilotCallback,
        resource_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.pilot_description = dict(pilot_description)
        #: the configuration of the pilot's resource label, where the backend wrote it
        self.resource_config = resource_config
        # Chosen here, not by RADICAL-Pilot, so that its processes can be found and stopped
        # even when creating the session itself hangs.
        self.sid = f"rp.session.{uuid.uuid4()}"
        self._on_task = on_task
        self._on_pilot = on_pilot
        self.session: Any = None
        self.pmgr: Any = None
        self.tmgr: Any = None
        self.pilot: Any = None
        self.raptor_uids: tuple[str, ...] = ()
        #: whether the active pilot runs on this machine (its processes can be seen from here)
        self.is_local = False
        # multiprocessing children the session forks (its registry service): not daemonic, so
        # an interpreter exiting without close() would wait for them forever. Until rp.Session()
        # returns, they are the children that were not there before it was called.
        self._forks: list[multiprocessing.process.BaseProcess] = []
        self._before_session: set[multiprocessing.process.BaseProcess] | None = None
        self._unconfine: Callable[[], None] | None = None
        self._watchdog: Watchdog | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float) -> None:
        """Create the session and submit the pilot; return once it is active.

        Raises `StartError` (with the agent's log tails) when the pilot fails, ends or is not
        active within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        publisher_lock.install()
        # If this process dies without close() (SIGKILL), the agent would run on until its
        # heartbeat times out (ten minutes), and its tasks with it.
        self._watchdog = Watchdog()
        self._watchdog.on_death("rhapsody_radical.processes:kill_session", self.sid)
        if self.resource.startswith("local.") or os.environ.get("RADICAL_DEFAULT_IFACE") == "lo":
            # before the session: its bridges and the agent inherit the environment it sets (the
            # agent of a written configuration is told so in it: `_config`)
            self._unconfine = loopback.confine()
        self._before_session = set(multiprocessing.active_children())
        with contextlib.ExitStack() as configs:
            if self.resource_config is not None:  # read by the session as it is created
                configs.enter_context(user_config.installed(self.resource, self._config()))
            check_resource(self.resource)
            self.session = rp.Session(uid=self.sid)
        self._forks = self._new_children()
        for fork in self._forks:  # not marked with the session id: named to the watchdog
            if fork.pid is not None:
                kill_process_later(self._watchdog, fork.pid)
        self._before_session = None
        with _environment(_SUBMITTER_ENV):
            self.pmgr = rp.PilotManager(session=self.session)
        self.tmgr = rp.TaskManager(session=self.session)
        self.tmgr.register_callback(self._task_cb)
        try:
            description = rp.PilotDescription(self.pilot_description)
            self.pilot = self.pmgr.submit_pilots(description)
        except Exception as exc:
            raise StartError(f"cannot submit the pilot: {type(exc).__name__}: {exc}") from exc
        self.pilot.register_callback(self._pilot_cb)
        self.tmgr.add_pilots(self.pilot)
        left = max(deadline - time.monotonic(), 1.0)
        state = self.pilot.wait(state=[rp.PMGR_ACTIVE, *FINAL], timeout=left)
        if state != rp.PMGR_ACTIVE:
            what = (
                f"ended {state}"
                if state in FINAL
                else f"was not active after {timeout:g} s (state {state})"
            )
            raise StartError(
                f"pilot {self.pilot.uid} on {self.resource} {what}\n{self.diagnostics()}"
            )
        sandbox = _local_path(self.pilot.pilot_sandbox)
        self.is_local = sandbox is not None and Path(sandbox).is_dir()

    def _config(self) -> dict[str, Any]:
        """The written resource configuration; a confined client's agent binds on loopback too
        (a submitted agent inherits no variable but the RADICAL_* ones)."""
        config = dict(self.resource_config or {})
        if self._unconfine is not None:
            config["pre_bootstrap_0"] = [*config["pre_bootstrap_0"], f"export {loopback.ENV}=1"]
        return config

    def close(self) -> None:
        """Close the session (terminating the pilot) without downloading profiles."""
        if self.raptor_uids and self.tmgr is not None:
            # raptor's own 'stop' RPC can block forever; cancelling its tasks takes 0.3 s
            self.tmgr.cancel_tasks(list(self.raptor_uids))
        if self.session is not None:
            self.session.close(download=False)

    def kill_leftovers(self) -> list[str]:
        """Stop whatever process of this session is still alive (see `processes`), the last
        step of every way out of a runtime."""
        if self._unconfine is not None:
            self._unconfine()
            self._unconfine = None
        stopped = processes.kill_session(self.sid)
        for child in self._new_children() if self._before_session is not None else self._forks:
            if child.is_alive():
                stopped.append(f"{child.pid} {child.name}")
                child.terminate()
                child.join(2)
                if child.is_alive():
                    child.kill()
                    child.join(2)
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None
        return stopped

    def _new_children(self) -> list[multiprocessing.process.BaseProcess]:
        before = self._before_session or set()
        return [c for c in multiprocessing.active_children() if c not in before]

    @property
    def resource(self) -> str:
        return str(self.pilot_description.get("resource"))

    # -- tasks -------------------------------------------------------------------------------
    def submit(self, batch: Sequence[Mapping[str, Any]]) -> None:
        self.tmgr.submit_tasks([rp.TaskDescription(dict(fields)) for fields in batch])

    def cancel(self, uids: Sequence[str]) -> None:
        self.tmgr.cancel_tasks(list(uids))

    def start_raptor(self, workers: int, cores: int, gpus: int) -> tuple[str, tuple[str, ...]]:
        """Submit a raptor master and its workers (the classes of `_raptor`)."""
        master = self.pilot.submit_raptors(
            [
                rp.TaskDescription(
                    {
                        "mode": rp.RAPTOR_MASTER,
                        "raptor_file": _RAPTOR_FILE,
                        "raptor_class": "Master",
                    }
                )
            ]
        )[0]
        described = [
            rp.TaskDescription(
                {
                    "mode": rp.RAPTOR_WORKER,
                    "raptor_file": _RAPTOR_FILE,
                    "raptor_class": "Worker",
                    "ranks": 1,
                    "cores_per_rank": cores,
                    "gpus_per_rank": gpus,
                }
            )
            for _ in range(workers)
        ]
        worker_uids = tuple(w.uid for w in master.submit_workers(described))
        self.raptor_uids = (master.uid, *worker_uids)
        return master.uid, worker_uids

    # -- RADICAL-Pilot's callbacks (its threads) -----------------------------------------------
    def _task_cb(self, task: Any, state: str) -> None:
        result = None
        if state in FINAL:
            result = {name: getattr(task, name, None) for name in _RESULT_FIELDS}
            result["state"] = state
            result["sandbox"] = _local_path(task.sandbox)
            result["node"] = _node_name(task)
        self._on_task(task.uid, state, result)

    def _pilot_cb(self, pilot: Any, state: str) -> None:
        if state in FINAL:
            self._on_pilot(state, self.diagnostics())

    # -- diagnostics -----------------------------------------------------------------------------
    def pilot_sandbox(self) -> str | None:
        """The pilot's sandbox, where it is a local path (None before the pilot, or remote)."""
        return _local_path(self.pilot.pilot_sandbox) if self.pilot is not None else None

    def diagnostics(self) -> str:
        """The tails of the bootstrap and agent logs, and the client's last launch error."""
        parts = []
        sandbox = self.pilot_sandbox()
        if sandbox:
            parts.append(f"pilot sandbox: {sandbox}")
            for name in ("bootstrap_0.out", "bootstrap_0.err", "agent_0.out", "agent_0.err"):
                parts.append(_tail(Path(sandbox) / name))
        if self.session is not None:
            parts.append(_launch_error(Path(self.session.path)))
        return "\n".join(p for p in parts if p) or "(no agent or launcher log found)"


@contextlib.contextmanager
def _environment(variables: Mapping[str, str]) -> Iterator[None]:
    """`variables` set in `os.environ` inside the block only."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_resource(label: str) -> None:
    """Fail at once, naming the known labels, for a resource RADICAL-Pilot has no config for."""
    # the configurations rp.Session loads: RADICAL-Pilot's own and the user's
    configs = ru.Config("radical.pilot.resource", name="*", expand=False)
    site, _, name = label.partition(".")
    if site in configs and name in configs[site]:
        return
    if site in configs:
        known = ", ".join(f"{site}.{n}" for n in sorted(configs[site]))
    else:
        known = "sites " + ", ".join(sorted(configs))
    raise StartError(f"unknown RADICAL-Pilot resource {label!r}; known: {known}")


def _node_name(task: Any) -> str | None:
    """The node the task (its first rank) ran on, from the slots RADICAL-Pilot gave it; None
    when it has none (it never ran)."""
    try:
        slots = task.slots
        return str(slots[0]["node_name"]) if slots else None
    except (AttributeError, KeyError, IndexError, TypeError):
        return None


def _local_path(url: Any) -> str | None:
    """The local path of a `file://localhost/...` sandbox URL (None for remote ones)."""
    if not url:
        return None
    parsed = urlparse(str(url))
    if parsed.scheme not in ("", "file") or parsed.netloc not in ("", "localhost"):
        return None
    return parsed.path


def _tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(handle.tell() - 16384, 0))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return f"--- {path.name} (last {len(kept)} lines) ---\n" + "\n".join(kept) if kept else ""


def _launch_error(session_dir: Path) -> str:
    """The last ERROR entry of the client's pilot launcher log, with its traceback."""
    log = session_dir / "pmgr_launching.0000.log"
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    start = text.rfind(": ERROR ")
    if start < 0:
        return ""
    first, *rest = text[text.rfind("\n", 0, start) + 1 :].splitlines()
    entry = [first]
    for line in rest[: _TAIL_LINES * 2]:
        if _LOG_ENTRY.match(line):  # the next log entry: the traceback is over
            break
        entry.append(line)
    return f"--- {log.name} (last error) ---\n" + "\n".join(entry)
