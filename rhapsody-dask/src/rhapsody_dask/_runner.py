"""What runs on a dask worker: one attempt of one task, returned as a pickled `Outcome`.

Workers import this module by name (cloudpickle pickles module-level functions by reference),
so rhapsody-dask must be installed where the workers run, as it is for a `LocalCluster` or a
dask-jobqueue cluster started from the same environment.

Executables run as a child process in its own session, so the whole process tree can be
signalled; its output goes to unnamed temporary files (no pipes to drain, nothing held open by
grandchildren). Cancellation reaches them through `stop_children`, broadcast by the backend.
A service's `log` probe is matched here, on the worker, against those files as they grow.
A service's `{host}` / `{port}` are filled in here too: a port free on the worker's own address,
reported to the backend (`ADDRESS`) before the service starts, so that the engine probes and
publishes where the service really listens.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Awaitable, Collection
from typing import IO, Any

import attrs
import cloudpickle  # type: ignore[import-untyped]
from distributed import Worker, get_worker
from distributed.comm.addressing import get_address_host, parse_address
from tblib import pickling_support  # type: ignore[import-untyped]

from rhapsody.backends import launch
from rhapsody.backends.base import Outcome
from rhapsody.backends.execution._subprocess import TAIL_BYTES
from rhapsody.services.supervisor import locate
from rhapsody.task import TaskDescription
from rhapsody_dask import _orphans, _quiet

# What the runner tells the backend, on the backend's event topic: (STARTED, key, node) when the
# task starts (node: this worker's host name), (FINISHED, key, pickled outcome) when it ends
# with an outcome small enough to travel that way; a larger one is fetched as the task's result.
STARTED = "started"
FINISHED = "finished"
INLINE_LIMIT = 16 * 1024  # the scheduler keeps a topic's last 1000 events: bound them
# (OUTPUT, key, line): the line of a service's output that its `log` probe matches. Only that
# line travels (one event per attempt, however much the service prints); the engine matches it
# again as it would any output it is given.
OUTPUT = "output"
# (ADDRESS, key, host, port): where a service's attempt listens, sent before it starts
ADDRESS = "address"
_LOG_POLL = 0.1  # seconds between two looks at a service's output files
_LINE_LIMIT = 64 * 1024  # an unterminated line is kept up to this many bytes, as the engine does
_NODE = socket.gethostname()  # where tasks run, named as rhapsody.telemetry's samples name it


@attrs.frozen
class Job:
    """One attempt as shipped to a worker. attrs, not a dataclass: dask leaves it opaque."""

    task: TaskDescription
    topic: str  # the event topic the backend listens on
    attempt: int
    spill_dir: str  # where output beyond `max_output` bytes is written in full
    max_output: int
    children_dir: str | None  # embedded cluster: where each child is noted (see _orphans)


def run(job: Job) -> bytes:
    """Run one attempt; returns its pickled `Outcome` (task failures are returned, not raised)."""
    worker = get_worker()
    key = str(worker.get_current_task())
    worker.log_event(job.topic, (STARTED, key, _NODE))
    task = job.task
    if task.service is not None:
        task = _located(task, key, job.topic, worker)
    outcome = _call(task, key) if task.function is not None else _spawn(job, task, key, worker)
    # Said at the start too; here again for an outcome that arrives before its STARTED event.
    outcome = attrs.evolve(outcome, extra={**(outcome.extra or {}), "node": _NODE})
    payload = _pickled(outcome)
    if len(payload) <= INLINE_LIMIT:
        # Saves the backend a round trip to fetch the result, which costs more than the task.
        worker.log_event(job.topic, (FINISHED, key, payload))
    return payload


def run_after(job: Job, *upstream: bytes) -> bytes:
    """`run`, for an attempt sent behind its dependencies' attempts (their pickled outcomes,
    which dask passes once they are in memory): it starts only if each one succeeded."""
    for payload in upstream:
        try:
            ok = pickle.loads(payload).ok
        except Exception as exc:  # unreadable here: not a success to start on
            ok, why = False, f"a dependency's outcome cannot be read on the worker: {exc}"
        else:
            why = "a dependency did not succeed"
        if not ok:
            # Not started: the engine fails the task with its dependency's reason.
            return _pickled(Outcome.failure(f"not started on the dask worker: {why}"))
    return run(job)


def _located(task: TaskDescription, key: str, topic: str, worker: Worker) -> TaskDescription:
    """Service `task` with `{host}` / `{port}` filled in for this worker, whose address (the
    one dask reaches it at: 127.0.0.1 for a loopback worker, the node's address on a cluster)
    it listens on; the address is reported to the backend before the service starts."""
    # An in-process worker (inproc://) serves a client of its own process: this host.
    inproc = parse_address(worker.address)[0] == "inproc"
    host = "127.0.0.1" if inproc else get_address_host(worker.address)
    task, port = locate(task, host)
    worker.log_event(topic, (ADDRESS, key, host, port))
    return task


def _pickled(outcome: Outcome) -> bytes:
    try:
        return bytes(cloudpickle.dumps(outcome))
    except Exception as exc:
        value = type(outcome.return_value).__name__
        failure = Outcome.failure(f"the task's return value ({value}) cannot be pickled: {exc}")
        return bytes(cloudpickle.dumps(failure))


def _call(task: TaskDescription, key: str) -> Outcome:
    assert task.function is not None
    try:
        value = task.function(*task.args, **task.kwargs)
        if inspect.isawaitable(value):  # an async function: run it on a loop of its own
            value = asyncio.run(_awaited(value, key))
    except asyncio.CancelledError:
        return Outcome.failure("cancelled")  # by `stop_children`: the engine has moved on
    except Exception as exc:
        return Outcome.raised(exc, _portable(exc))
    return Outcome(True, return_value=value)


async def _awaited(awaitable: Awaitable[Any], key: str) -> Any:
    """Await an async function task where `stop_children` can cancel it (a plain function on
    a worker thread cannot be stopped; a coroutine can, on its own loop)."""
    running = asyncio.ensure_future(awaitable)
    with _lock:
        _coroutines[key] = (asyncio.get_running_loop(), running)
        if _cancelled.pop(key, None) is not None:  # cancelled before it started
            running.cancel()
    try:
        return await running
    finally:
        with _lock:
            _coroutines.pop(key, None)


def _portable(exc: Exception) -> Exception:
    """`exc` with a traceback that survives pickling, or a stand-in if `exc` cannot be pickled
    (the result must travel back to the client)."""
    pickling_support.install(exc)
    try:
        cloudpickle.dumps(exc)
    except Exception:
        stand_in = RuntimeError(f"{type(exc).__name__}: {exc}")
        stand_in.__traceback__ = exc.__traceback__
        pickling_support.install(stand_in)
        return stand_in
    return exc


# -- executables ---------------------------------------------------------------------------------

# Children of tasks running on this worker, by dask key; `stop_children` reaches them from the
# worker's event loop while the task's thread waits on them.
_children: dict[str, subprocess.Popen[bytes]] = {}
# Async function tasks running on this worker, by dask key: their loops and asyncio tasks.
_coroutines: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
# Keys whose kill arrived before their child was registered, with the grace to give it
# (bounded: a key cancelled before it ever ran would otherwise stay forever).
_cancelled: collections.OrderedDict[str, float] = collections.OrderedDict()
_CANCELLED_KEPT = 4096
_lock = threading.Lock()


def _spawn(job: Job, task: TaskDescription, key: str, worker: Worker) -> Outcome:
    argv = launch.command_line(task)
    env = launch.environment(task)  # over this worker's environment
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            cwd = launch.working_directory(task)
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
                start_new_session=True,  # own process group: the whole tree can be signalled
            )
        except OSError as exc:
            return Outcome.failure(
                f"cannot start {argv[0]!r}: {exc.strerror or exc}", exception=exc
            )
        pattern = task.service.pattern if task.service is not None else None
        if pattern is None:
            code = _wait(child, key, job.children_dir)
        else:
            ended = threading.Event()
            watch = threading.Thread(
                target=_watch_log,
                args=(worker, job.topic, key, pattern, (out, err), ended),
                name=f"rhapsody-log-{key}",
                daemon=True,
            )
            watch.start()
            try:
                code = _wait(child, key, job.children_dir)
            finally:
                ended.set()
                watch.join()  # before the files close
        spill = os.path.join(job.spill_dir, f"{task.uid}.{job.attempt}".replace(os.sep, "_"))
        stdout, stdout_file = _read(out, job.max_output, f"{spill}.stdout")
        stderr, stderr_file = _read(err, job.max_output, f"{spill}.stderr")
    files = {"stdout_file": stdout_file, "stderr_file": stderr_file}
    return Outcome(
        code == 0,
        None if code == 0 else launch.describe_exit(code),
        stdout=stdout,
        stderr=stderr,
        exit_code=code,
        extra={name: path for name, path in files.items() if path is not None} or None,
    )


def _wait(child: subprocess.Popen[bytes], key: str, children_dir: str | None) -> int:
    """Wait for task `key`'s child, which `stop_children` can reach meanwhile; then make sure
    nothing it started outlives it."""
    note = None
    with _lock:
        _children[key] = child
        grace = _cancelled.pop(key, None)
    try:
        if children_dir is not None:
            note = _orphans.record(children_dir, child.pid)
        if grace is not None:  # cancelled before it started: stop it as stop_children would
            _signal_group(child.pid, signal.SIGTERM)
            try:
                child.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(child.pid, signal.SIGKILL)
        return child.wait()
    finally:
        with _lock:
            _children.pop(key, None)
        _signal_group(child.pid, signal.SIGKILL)
        if note is not None:
            os.unlink(note)


def _watch_log(
    worker: Worker,
    topic: str,
    key: str,
    pattern: re.Pattern[str],
    streams: tuple[IO[bytes], ...],
    ended: threading.Event,
) -> None:
    """Look at the service's stdout and stderr files every `_LOG_POLL` seconds (positional
    reads: the child's offset is untouched) until a line matches `pattern`, then send it;
    stop without sending once the child has ended and the files hold no match."""
    offsets = [0] * len(streams)
    partial = [b""] * len(streams)
    while True:
        last = ended.wait(_LOG_POLL)  # once the child ended: one more look, then stop
        for i, stream in enumerate(streams):
            while chunk := os.pread(stream.fileno(), 1 << 16, offsets[i]):
                offsets[i] += len(chunk)
                lines = (partial[i] + chunk).split(b"\n")
                partial[i] = lines.pop()[-_LINE_LIMIT:]
                for line in lines:
                    if pattern.search(line.decode(errors="replace")):
                        worker.log_event(topic, (OUTPUT, key, line[-_LINE_LIMIT:] + b"\n"))
                        return
        if last:
            return


def _read(stream: IO[bytes], limit: int, spill_path: str) -> tuple[str, str | None]:
    """The captured text, or its tail plus the file that holds all of it when it is too long."""
    size = stream.seek(0, os.SEEK_END)
    if size <= limit:
        stream.seek(0)
        return stream.read().decode(errors="replace"), None
    os.makedirs(os.path.dirname(spill_path), exist_ok=True)
    stream.seek(0)
    with open(spill_path, "wb") as spill:
        shutil.copyfileobj(stream, spill)
    stream.seek(size - TAIL_BYTES)
    return stream.read().decode(errors="replace"), spill_path


async def stop_children(
    keys: Collection[str], prefix: str | None = None, grace: float = 2.0
) -> int:
    """Stop the children of tasks `keys` (and of every key starting with `prefix`) on this
    worker: SIGTERM to each process group, SIGKILL to those still running after `grace`
    seconds; async function tasks among them are cancelled on their loops. The backend
    broadcasts it with `Client.run`, which runs it on the worker's event loop; it returns how
    many children it signalled."""
    with _lock:
        found = [c for k, c in _children.items() if k in keys or (prefix and k.startswith(prefix))]
        for k, (loop, running) in _coroutines.items():
            if k in keys or (prefix and k.startswith(prefix)):
                loop.call_soon_threadsafe(running.cancel)
        for key in keys:
            if key not in _children and key not in _coroutines:
                _cancelled[key] = grace
        while len(_cancelled) > _CANCELLED_KEPT:
            _cancelled.popitem(last=False)
    for child in found:
        _signal_group(child.pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    # Each child is reaped by its task's thread, which sets `returncode`; there is nothing to
    # await here but time. Until it is reaped its pid cannot be reused: safe to signal.
    while any(c.returncode is None for c in found) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    for child in found:
        if child.returncode is None:
            _signal_group(child.pid, signal.SIGKILL)
    return len(found)


def silence_dask_logs() -> None:
    """Broadcast just before the embedded cluster closes: this worker's failing heartbeats and
    transfers to a closing scheduler are expected, not news."""
    _quiet.silence()


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(pid, sig)
