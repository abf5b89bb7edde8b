"""A real local pilot (`local.localhost`), started once for the whole run and shared.

The pilot takes 30-60 s to start on a small machine, so every test module here uses the one
session-scoped backend; tests that must own a pilot (start faults, shutdown) start their own.
RADICAL-Pilot is confined by `rhapsody_radical.hermetic`: a temporary HOME, this venv for the
agent, endpoints on 127.0.0.1 and no profiler looking for a time server. `run_isolated.sh` runs
this directory in a private network namespace as well.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

pytest.importorskip("radical.pilot", reason="radical.pilot is not installed: pip install rhapsody-radical")

from rp_support import HERE, assert_no_session_processes, make_backend  # noqa: E402

from rhapsody_radical.backend import RadicalExecutionBackend  # noqa: E402
from rhapsody_radical.hermetic import hermetic  # noqa: E402


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # Session scope: the shared backend is bound to one event loop, which must outlive every test.
    return "asyncio"


@pytest.fixture(scope="session")
def radical_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The hermetic environment, for the whole session (the agent inherits it at start)."""
    home = tmp_path_factory.mktemp("rp-home")
    with hermetic(home), pytest.MonkeyPatch.context() as patch:
        # Raptor workers import functions defined in modules by name: rp_tasks must be
        # importable there, as a user's modules must be on a real allocation.
        path = [str(HERE), os.environ.get("PYTHONPATH", "")]
        patch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))
        yield home


@pytest.fixture(scope="session")
async def radical_backend(
    radical_home: Path, anyio_backend: str
) -> AsyncIterator[RadicalExecutionBackend]:
    """The shared, started backend. A failed start raises BackendError with the agent's logs."""
    backend = make_backend()
    await backend
    yield backend
    sid = backend.session.uid
    await backend.shutdown()
    assert_no_session_processes(sid)
