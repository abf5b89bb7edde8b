"""Records of the embedded cluster's task processes, so that none outlives the cluster.

A worker killed with SIGKILL cannot stop the processes its tasks started (each runs in a session
of its own, and Python offers no portable parent-death signal that does not cost a full fork
per task). For the embedded cluster the runner notes each child in a directory the backend
owns; closing the cluster kills any recorded process that is still alive, and so does the
cluster's watchdog if the backend's process dies without closing it (the workers die with it).
"""

from __future__ import annotations

import os
import signal

import psutil


def record(directory: str, pid: int) -> str:
    """Note child `pid` (with its start time, so a reused pid is never mistaken for it)."""
    path = os.path.join(directory, str(pid))
    with open(path, "w", encoding="ascii") as note:
        note.write(repr(psutil.Process(pid).create_time()))
    return path


def kill_recorded(directory: str) -> int:
    """SIGKILL the process group of every recorded child still alive; returns how many."""
    killed = 0
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    for name in names:
        try:
            with open(os.path.join(directory, name), encoding="ascii") as note:
                started = float(note.read())
            if psutil.Process(int(name)).create_time() != started:
                continue
            os.killpg(int(name), signal.SIGKILL)
            killed += 1
        except (OSError, ValueError, psutil.Error):
            continue  # finished meanwhile, or a note cut short by the worker's death
    return killed
