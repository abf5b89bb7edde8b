"""Helpers shared by the reliability tests: which backends to run, how to start them, and the
check that nothing they started outlives them."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import psutil
import pytest

import rhapsody
from rhapsody.backends.base import BaseExecutionBackend

#: CI sizes of the fault soak (benchmarks/soak.py runs the full ones)
SOAK_SIZES = {"concurrent": 300, "noop": 2_000, "dask": 100, "radical_pilot": 200}
#: bound on any wait in these tests: a hang detector, not a speed limit
WAIT = 120.0


def installed_backends() -> list[Any]:
    """Every compute backend `discover_backends()` finds usable here, as pytest params: one is
    soaked as soon as it is installed. RADICAL-Pilot only under the `radical` marker."""
    params = []
    for name, usable in sorted(rhapsody.discover_backends().items()):
        # `inference` runs AI tasks only, not the executables and functions these tests run
        # (its faults are tested against a real server in tests/inference).
        if usable and name != "inference":
            marks = [pytest.mark.radical] if name == "radical_pilot" else []
            params.append(pytest.param(name, marks=marks, id=name))
    return params


@contextlib.asynccontextmanager
async def started(name: str, work_dir: Path, **kwargs: Any) -> AsyncIterator[BaseExecutionBackend]:
    """A started backend `name` for a test, shut down at the end."""
    with contextlib.ExitStack() as stack:
        options: dict[str, Any] = {"work_dir": work_dir}
        if name == "concurrent":
            options["cores"] = 64  # the fault tasks mostly sleep: fake slots keep it fast
        elif name == "dask":
            options.update(n_workers=2, threads_per_worker=2)
        elif name == "radical_pilot":
            from rhapsody_radical.hermetic import hermetic

            stack.enter_context(hermetic(work_dir / "rp-home"))  # the pilot inherits it
            options.update(cores=6, raptor_worker_cores=2, runtime=30, start_timeout=240.0)
        options.update(kwargs)
        backend = await rhapsody.get_backend(name, **options)
        try:
            yield backend
        finally:
            await backend.shutdown()


def children() -> set[int]:
    """pids of the live descendants of this process (Python's resource tracker, which lives as
    long as the interpreter, started first so that it is in every baseline)."""
    resource_tracker.ensure_running()
    return {proc.pid for proc in psutil.Process().children(recursive=True) if alive(proc)}


def working_in(root: Path) -> list[psutil.Process]:
    """Processes, descendants or not, whose working directory lies inside `root`: a pilot's
    daemons and the tasks its agent started are not descendants of this process."""
    found = []
    for proc in psutil.process_iter():
        # Exited meanwhile, or not ours to read (psutil raises a bare FileNotFoundError for
        # a process that exits while it reads /proc/PID/cwd).
        with contextlib.suppress(psutil.Error, FileNotFoundError):
            if proc.pid != os.getpid() and Path(proc.cwd()).is_relative_to(root):
                found.append(proc)
    return found


def alive(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return proc.status() != psutil.STATUS_ZOMBIE
    return False


def assert_no_new_children(
    baseline: set[int], root: Path | None = None, within: float = 10.0
) -> None:
    """No descendant started since `baseline`, and no process working inside `root`, is alive
    (SIGKILL lands asynchronously: allow a moment for the last ones to go)."""

    def left() -> set[int]:
        inside = {p.pid for p in working_in(root) if alive(p)} if root is not None else set()
        return (children() - baseline) | inside

    deadline = time.monotonic() + within
    while (pids := left()) and time.monotonic() < deadline:
        time.sleep(0.05)
    described = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            described.append(f"{pid} {' '.join(psutil.Process(pid).cmdline())[:120]}")
    assert not pids, f"processes left behind: {described}"


@contextlib.contextmanager
def no_new_children(root: Path | None = None) -> Iterator[None]:
    """Nothing the block started is alive after it: no new descendant, and no process working
    inside `root` (give it the directory the backend works in)."""
    baseline = children()
    yield
    assert_no_new_children(baseline, root)
