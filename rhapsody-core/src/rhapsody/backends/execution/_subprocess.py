"""Run one executable task as a child process, with bounded output capture and tree killing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psutil

from rhapsody.backends.base import ExecutionContext, Outcome
from rhapsody.backends.launch import describe_exit
from rhapsody.task import TaskDescription

from ._orphans import RunningChildren

# Output kept in the dict when a stream spilled to a file.
TAIL_BYTES = 64 * 1024
# How long to wait for the pipes to close after the main process exited and its group was
# killed (only a child that escaped into its own session can hold them longer).
PIPE_GRACE = 2.0


class Child:
    """A running task's process group."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def signal_tree(self, sig: int) -> None:
        try:
            escaped = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            escaped = []
        for kill in (os.killpg, os.kill):  # the group, and the leader even before its setsid()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(self.pid, sig)
        for proc in escaped:  # descendants that moved to another process group
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)

    async def kill_tree(self, grace: float) -> None:
        """SIGTERM the tree, then SIGKILL whatever is still alive after `grace` seconds."""
        self.signal_tree(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while loop.time() < deadline and _alive(self.pid):  # noqa: ASYNC110 - no exit event for a group
            await asyncio.sleep(0.02)
        self.signal_tree(signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class _Capture(asyncio.SubprocessProtocol):
    """Collects stdout/stderr in memory up to a limit, spilling the rest to files."""

    def __init__(
        self, limit: int, spill_dir: Any, stem: str, watch: Callable[[bytes], None] | None = None
    ) -> None:
        # Built on the loop thread; asyncio calls the methods below, or `_WatchedChild` does.
        self.watch = watch  # sees every chunk as it arrives (a service's log probe)
        self.limit = limit
        self.spill_dir = spill_dir  # callable returning the directory, evaluated lazily
        self.stem = stem
        self.buffers = {1: bytearray(), 2: bytearray()}
        self.files: dict[int, IO[bytes]] = {}
        self.paths: dict[int, Path] = {}
        self.open_pipes = 2
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if self.watch is not None:
            self.watch(data)
        buf = self.buffers[fd]
        buf += data
        spill = self.files.get(fd)
        if spill is None and len(buf) > self.limit:
            path = Path(self.spill_dir()) / f"{self.stem}.{'stdout' if fd == 1 else 'stderr'}"
            spill = self.files[fd] = open(path, "wb")  # noqa: SIM115 - closed in finish()
            self.paths[fd] = path
            spill.write(buf)
        elif spill is not None:
            spill.write(data)
        if spill is not None and len(buf) > TAIL_BYTES:
            del buf[:-TAIL_BYTES]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.open_pipes -= 1
        if self.open_pipes <= 0 and not self.closed.done():
            self.closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def finish(self, outcome: Outcome) -> Outcome:
        """Fill the captured streams (and the spill files' paths) into `outcome`."""
        for spill in self.files.values():
            spill.close()
        outcome.stdout = self.buffers[1].decode(errors="replace")
        outcome.stderr = self.buffers[2].decode(errors="replace")
        if self.paths:
            outcome.extra = {
                ("stdout_file" if fd == 1 else "stderr_file"): str(path)
                for fd, path in self.paths.items()
            }
        return outcome


class _WatchedChild:
    """A child whose exit is seen through a pidfd and whose pipes the loop reads directly.

    Python 3.11's asyncio starts a thread per subprocess to wait for it (measured here: about
    1 ms of each short task's cost); this needs none. Offers what `run` uses of an asyncio
    subprocess transport.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        argv: list[str],
        cwd: str | None,
        env: dict[str, str] | None,
        capture: _Capture,
    ) -> None:
        self._loop = loop
        self._capture = capture
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,  # own process group: the whole tree can be signalled
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._pipes = {1: self._proc.stdout, 2: self._proc.stderr}
        for stream, pipe in self._pipes.items():
            os.set_blocking(pipe.fileno(), False)
            loop.add_reader(pipe.fileno(), self._read, stream)
        try:
            self._pidfd = os.pidfd_open(self._proc.pid)
        except OSError:  # reaped already by someone else's waitpid(-1): cannot be watched
            self._pidfd = -1
            self.close()
            raise
        loop.add_reader(self._pidfd, self._exited)

    def _read(self, stream: int) -> None:
        pipe = self._pipes[stream]
        try:
            data = os.read(pipe.fileno(), 1 << 16)
        except BlockingIOError:
            return
        if data:
            self._capture.pipe_data_received(stream, data)
            return
        self._close_pipe(stream)
        self._capture.pipe_connection_lost(stream, None)

    def _close_pipe(self, stream: int) -> None:
        pipe = self._pipes.pop(stream)
        self._loop.remove_reader(pipe.fileno())
        pipe.close()

    def _exited(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self._proc.poll()  # reaps it
        self._capture.process_exited()

    def get_pid(self) -> int:
        return self._proc.pid

    def get_returncode(self) -> int | None:
        return self._proc.returncode

    def close(self) -> None:
        for stream in list(self._pipes):
            self._close_pipe(stream)
        if self._pidfd >= 0:
            # Still running (the attempt was cancelled): it was sent SIGKILL; the pidfd's
            # reader stays and reaps it when it exits.
            self._proc.kill()


def _pidfd_works() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):  # not Linux >= 5.3 (e.g. macOS): asyncio's watcher
        return False
    return True


USE_PIDFD = _pidfd_works()


async def _spawn(
    argv: list[str], cwd: str | None, env: dict[str, str] | None, capture: _Capture
) -> Any:
    loop = asyncio.get_running_loop()
    if USE_PIDFD:
        return _WatchedChild(loop, argv, cwd, env, capture)
    transport, _ = await loop.subprocess_exec(
        lambda: capture,
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,  # own process group: the whole tree can be signalled
    )
    return transport


async def run(
    task: TaskDescription,
    ctx: ExecutionContext,
    max_output: int,
    kill_grace: float,
    running: RunningChildren,
) -> Outcome:
    argv = ctx.command_line(task)
    env = ctx.environment(task)
    cwd = ctx.working_directory(task)
    stem = f"{ctx.uid}.{ctx.attempt}".replace(os.sep, "_")
    capture = _Capture(
        max_output, lambda: ctx.work_dir, stem, ctx.output if ctx.wants_output else None
    )
    try:
        process = await _spawn(argv, cwd, env, capture)
    except OSError as exc:
        return Outcome.failure(
            f"cannot start {argv[0]!r}: {exc.strerror or exc}", exception=exc, exit_code=None
        )
    child = Child(process.get_pid())
    running.add(child)
    ctx.started()
    try:
        try:
            await capture.exited
        except asyncio.CancelledError:
            await child.kill_tree(kill_grace)
            raise
        # The task is over: reap what it left behind in its group, so nothing outlives it and
        # the pipes reach EOF.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        if not capture.closed.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(capture.closed), PIPE_GRACE)
    finally:
        running.discard(child)
        process.close()
    code = process.get_returncode()
    assert code is not None
    if code == 0:
        return capture.finish(Outcome(True, exit_code=0))
    return capture.finish(Outcome.failure(describe_exit(code), exit_code=code))
