"""Helpers shared by the reliability tests: which backends to run, how to start them, and the
check that nothing they started outlives them."""

from __future__ import annotations

import contextlib
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
    """Every backend `discover_backends()` finds usable here, as pytest params: a backend is
    soaked as soon as it is installed. RADICAL-Pilot only under the `radical` marker."""
    params = []
    for name, usable in sorted(rhapsody.discover_backends().items()):
        if usable:
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
    out = set()
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.add(proc.pid)
    return out


def assert_no_new_children(baseline: set[int], within: float = 10.0) -> None:
    """No descendant started since `baseline` is alive (SIGKILL lands asynchronously: allow a
    moment for the last ones to go)."""
    deadline = time.monotonic() + within
    while (left := children() - baseline) and time.monotonic() < deadline:
        time.sleep(0.05)
    described = []
    for pid in left:
        with contextlib.suppress(psutil.Error):
            described.append(f"{pid} {' '.join(psutil.Process(pid).cmdline())[:120]}")
    assert not left, f"processes left behind: {described}"


@contextlib.contextmanager
def no_new_children() -> Iterator[None]:
    baseline = children()
    yield
    assert_no_new_children(baseline)
