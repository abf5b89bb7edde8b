"""Nothing a backend started outlives its process, even when that process dies without
`shutdown()` (SIGKILL, the OOM killer, a crash of the interpreter).

A `Watchdog` is a small separate interpreter that watches this process (through a pidfd where
Linux has them, else by polling its parent pid twice a second). It reads ``+<pid>`` when a
task's process group starts and ``-<pid>`` when it is over from a pipe. When this process dies,
the watchdog SIGKILLs every group still listed, runs the clean-up calls it was given (e.g.
killing what the workers of an embedded dask cluster recorded), and exits. `close()`, after a
clean stop, tells it to exit without either. (Not the pipe's end-of-file: processes forked
from this one, such as RADICAL-Pilot's daemons, hold its write end.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from ._subprocess import Child

logger = logging.getLogger(__name__)

# Run with -I: nothing from the environment or the working directory is imported. It imports
# only the standard library until the end, so it starts in ~20 ms. Each group is killed by pgid
# and by pid: a process-isolated function's worker calls setsid() itself, so until then its
# group is not its own. Lines: "+pid", "-pid", "call" + JSON ["module:function", argument],
# "close".
_PROGRAM = r"""
import importlib, json, os, select, signal, sys, traceback
signal.signal(signal.SIGINT, signal.SIG_IGN)
parent = int(sys.argv[1])
try:
    parent_fd = os.pidfd_open(parent)
except (AttributeError, OSError):
    parent_fd = None
stdin = sys.stdin.fileno()
groups, calls, pending = set(), [], b""

def read():
    global pending
    data = os.read(stdin, 65536)
    lines = (pending + data).split(b"\n")
    pending = lines.pop()
    for line in lines:
        if line == b"close":
            sys.exit(0)
        elif line.startswith(b"call"):
            calls.append(json.loads(line[4:]))
        else:
            (groups.add if line[:1] == b"+" else groups.discard)(int(line[1:]))
    return bool(data)

watched = [stdin] if parent_fd is None else [stdin, parent_fd]
while os.getppid() == parent:
    ready = select.select(watched, [], [], 0.5 if parent_fd is None else None)[0]
    if parent_fd in ready or (stdin in ready and not read()):
        break
while select.select([stdin], [], [], 0)[0] and read():  # what was sent before the end
    pass
for pid in groups:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
for target, argument in calls:
    module, _, name = target.partition(":")
    try:
        getattr(importlib.import_module(module), name)(argument)
    except Exception:
        print(f"rhapsody watchdog: {target}({argument!r}) failed:", file=sys.stderr)
        traceback.print_exc()
"""


class Watchdog:
    """Kills the listed process groups, then makes the `on_death` calls, if this process dies
    before `close()`."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._pipe: IO[bytes] | None = None
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-c", _PROGRAM, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C or a hang-up of the terminal spares it
            )
        except OSError as exc:  # e.g. an embedded interpreter without sys.executable
            logger.warning(
                "cannot start the orphan watchdog (%s): processes may outlive a crash", exc
            )
            return
        self._pipe = self._process.stdin

    def watch(self, pid: int) -> None:
        """Kill process group `pid` (and process `pid`) if this process dies."""
        self._send(b"+%d\n" % pid)

    def forget(self, pid: int) -> None:
        self._send(b"-%d\n" % pid)

    def on_death(self, target: str, argument: str) -> None:
        """Call ``module:function`` `target` with `argument` in the watchdog's interpreter if this
        process dies (after the kills; in the order given)."""
        self._send(b"call" + json.dumps([target, argument]).encode() + b"\n")

    def close(self) -> None:
        """End the watchdog after a clean stop: it kills nothing and makes no call."""
        self._send(b"close\n")
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.close()
            self._pipe = None
        if self._process is None:
            return
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _send(self, line: bytes) -> None:
        if self._pipe is None:
            return
        try:
            self._pipe.write(line)
            self._pipe.flush()
        except OSError as exc:  # it died: carry on unguarded
            logger.warning("the orphan watchdog is gone (%s): processes may outlive a crash", exc)
            self._pipe = None


def kill_process(spec: str) -> None:
    """SIGKILL process "<pid> <create_time>" (a `Watchdog.on_death` call) unless its pid now
    names another process."""
    pid, started = spec.split()
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(int(pid))
        if proc.create_time() == float(started):
            proc.kill()


def kill_process_later(watchdog: Watchdog, pid: int) -> None:
    """Have `watchdog` kill process `pid` (not a group leader) if this process dies."""
    with contextlib.suppress(psutil.Error):
        started = psutil.Process(pid).create_time()
        watchdog.on_death(f"{__name__}:kill_process", f"{pid} {started!r}")


class RunningChildren:
    """The process groups of a backend's running tasks (a set of `Child`), each also listed
    with a watchdog, started with the first of them."""

    def __init__(self) -> None:
        self._children: set[Child] = set()
        self._watchdog: Watchdog | None = None
        self._closed = False

    def add(self, child: Child) -> None:
        self._children.add(child)
        if self._watchdog is None and not self._closed:
            self._watchdog = Watchdog()
        if self._watchdog is not None:
            self._watchdog.watch(child.pid)

    def discard(self, child: Child) -> None:
        if child in self._children:
            self._children.remove(child)
            if self._watchdog is not None:
                self._watchdog.forget(child.pid)

    def __iter__(self) -> Iterator[Child]:
        return iter(list(self._children))

    def close(self) -> None:
        """End the watchdog, once every child is stopped."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None
