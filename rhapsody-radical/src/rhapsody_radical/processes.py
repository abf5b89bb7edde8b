"""Find and stop the processes of one RADICAL-Pilot session.

RADICAL-Pilot's client components daemonize (their parent becomes init) and stay in the
caller's process group; the agent hangs below a bootstrap script in that group too; each task
runs in a session of its own. So neither "our children" nor "our process group" names them
without also naming the caller or other sessions. What marks them is the session id: on the
command line (bootstrap, task scripts), as `RP_SESSION_ID` in the environment (tasks, raptor),
or in the working directory of a component (named `rp.<component>`). Their descendants belong
to the session too.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Collection

import psutil


def session_processes(sid: str) -> list[psutil.Process]:
    """Live processes of this user that belong to RADICAL-Pilot session `sid`."""
    me, uid = os.getpid(), os.getuid()
    marked: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["uids", "status"]):
        try:
            uids = proc.info["uids"]
            if proc.pid == me or uids is None or uids.real != uid:
                continue
            if proc.info["status"] != psutil.STATUS_ZOMBIE and _marked(proc, sid):
                marked[proc.pid] = proc
        except (psutil.Error, OSError):  # gone mid-scan (psutil may say ENOENT)
            continue
    for proc in list(marked.values()):
        try:
            for child in proc.children(recursive=True):
                if child.pid != me and child.status() != psutil.STATUS_ZOMBIE:
                    marked.setdefault(child.pid, child)
        except (psutil.Error, OSError):  # gone mid-scan (psutil may say ENOENT)
            continue
    return list(marked.values())


def _marked(proc: psutil.Process, sid: str) -> bool:
    try:
        if any(sid in part for part in proc.cmdline()):
            return True
    except psutil.Error:
        pass
    try:
        if proc.environ().get("RP_SESSION_ID") == sid:
            return True
    except psutil.Error:
        pass
    try:
        return proc.name().startswith("rp.") and sid in proc.cwd()
    except psutil.Error:
        return False


def kill_tasks(sid: str, uids: Collection[str], grace: float = 2.0) -> list[str]:
    """Stop the processes of tasks `uids` of session `sid` (their scripts export
    `RP_TASK_ID`), with their descendants. Returns "pid name" of each process stopped."""
    me, uid = os.getpid(), os.getuid()
    wanted = set(uids)
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["uids"]):
        try:
            if proc.pid == me or proc.info["uids"] is None or proc.info["uids"].real != uid:
                continue
            env = proc.environ()
            if env.get("RP_SESSION_ID") == sid and env.get("RP_TASK_ID") in wanted:
                found[proc.pid] = proc
                found.update((c.pid, c) for c in proc.children(recursive=True))
        except psutil.Error:
            continue
    return _stop(list(found.values()), grace)


def kill_session(sid: str, grace: float = 2.0, settle: float = 0.5) -> list[str]:
    """SIGTERM every process of session `sid`, then SIGKILL what outlives `grace` seconds.

    Looks again until a look `settle` seconds after the last kill finds nothing: a session
    still starting (a thread of ours inside RADICAL-Pilot) or a dying component may just have
    spawned another process. Returns "pid name" of each process it stopped.
    """
    stopped: list[str] = []
    for _ in range(10):
        procs = session_processes(sid)
        if not procs and stopped:  # after stopping some, look once more after a pause
            time.sleep(settle)
            procs = session_processes(sid)
        if not procs:
            break
        stopped += _stop(procs, grace)
    return stopped


def _stop(procs: list[psutil.Process], grace: float) -> list[str]:
    """SIGTERM `procs`, SIGKILL those alive after `grace` seconds; "pid name" of each."""
    stopped = []
    for proc in procs:
        try:
            stopped.append(f"{proc.pid} {proc.name()}")
            proc.terminate()
        except psutil.Error:
            pass
    alive = _wait_gone(procs, grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _wait_gone(alive, grace)
    return stopped


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until `procs` exited; returns those still alive after `timeout` seconds.

    Zombies count as gone: most of these processes are not our children (psutil.wait_procs
    would wait on them until their reaper, often a container's init that never reaps)."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    return alive
