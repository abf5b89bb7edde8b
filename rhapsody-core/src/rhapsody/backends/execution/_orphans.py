"""The running task processes of a backend, and a watchdog that kills them if this process dies
without stopping them (SIGKILL, the OOM killer, a crash of the interpreter).

The watchdog is a tiny separate interpreter, started with the first task process. It reads
``+<pid>`` when a task's process group starts and ``-<pid>`` when it is over from a pipe whose
only writer is this process. The pipe reaches EOF when this process ends, however it ends: the
watchdog then SIGKILLs every group still listed. After `shutdown()` none is listed, and it
kills nothing.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from ._subprocess import Child

logger = logging.getLogger(__name__)

# Standard library only, run with -I -S: no site-packages to import, so it starts in ~10 ms.
# Each group is killed by pgid and by pid: a process-isolated function's worker calls setsid()
# itself, so until then its group is not its own.
_WATCHDOG = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
groups = set()
for line in sys.stdin.buffer:
    pid = int(line[1:])
    if line[:1] == b"+":
        groups.add(pid)
    else:
        groups.discard(pid)
for pid in groups:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


class RunningChildren:
    """The process groups of a backend's running tasks (a set of `Child`), each also listed
    with the watchdog while it runs."""

    def __init__(self) -> None:
        self._children: set[Child] = set()
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._pipe: IO[bytes] | None = None
        self._unguarded = False  # the watchdog could not be started: warned once
        self._closed = False

    def add(self, child: Child) -> None:
        self._children.add(child)
        self._send(b"+%d\n" % child.pid)

    def discard(self, child: Child) -> None:
        if child in self._children:
            self._children.remove(child)
            self._send(b"-%d\n" % child.pid)

    def __iter__(self) -> Iterator[Child]:
        return iter(list(self._children))

    def close(self) -> None:
        """End the watchdog (call once every child is stopped: it kills those still listed)."""
        self._closed = True
        if self._watchdog is None:
            return
        assert self._pipe is not None
        with contextlib.suppress(OSError):
            self._pipe.close()
        try:
            self._watchdog.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._watchdog.kill()
            self._watchdog.wait()
        self._watchdog = self._pipe = None

    def _send(self, line: bytes) -> None:
        if self._closed or (self._pipe is None and not self._start()):
            return
        assert self._pipe is not None
        try:
            self._pipe.write(line)
            self._pipe.flush()
        except OSError as exc:  # the watchdog died: carry on unguarded
            logger.warning("the orphan watchdog is gone (%s): tasks may outlive a crash", exc)
            self._pipe = None
            self._unguarded = True

    def _start(self) -> bool:
        if self._unguarded:
            return False
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C or a hang-up of the terminal spares it
            )
        except OSError as exc:
            logger.warning("cannot start the orphan watchdog (%s): tasks may outlive a crash", exc)
            self._unguarded = True
            return False
        self._pipe = self._watchdog.stdin
        return True
