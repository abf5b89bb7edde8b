"""Real local pilots (`local.localhost`) for the RADICAL-Pilot tests, no mocks.

A pilot takes 30-60 s to start on a small machine and keeps the CPUs busy while it idles, so the
tests share one at a time (`rp_support.SHARED`), and the items are ordered so that the whole
directory needs two: the task tests and the executable conformance class share the first,
whose shutdown test ends it; the function conformance class gets the second and ends it the same
way; the start-failure tests come last. Any other order or selection works too, at the cost of
more pilot starts.

RADICAL-Pilot is confined by `rhapsody_radical.hermetic` (a temporary HOME, this venv for the
agent, endpoints on 127.0.0.1, no profiler looking for a time server); `run_isolated.sh` adds a
private network namespace and kills whatever a crashed run leaves.

Nothing here imports RADICAL-Pilot at module level: without it, each test module skips itself
(`pytest.importorskip`), whether pytest is given `tests` or `tests/radical`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from rp_support import SharedPilot

    from rhapsody_radical.backend import RadicalExecutionBackend

HERE = Path(__file__).resolve().parent
_ORDER = (
    "test_radical_tasks.py",
    "::TestRadicalConformance::",
    "::TestRadicalFunctionConformance::",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Reorder only this directory's items, in the slots they already hold.
    slots = [i for i, item in enumerate(items) if item.path.parent == HERE]

    def rank(item: pytest.Item) -> int:
        return next((n for n, key in enumerate(_ORDER) if key in item.nodeid), len(_ORDER))

    ordered = sorted((items[i] for i in slots), key=rank)
    for slot, item in zip(slots, ordered, strict=True):
        items[slot] = item


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # Session scope: a shared backend is bound to one event loop, which must outlive the tests.
    return "asyncio"


@pytest.fixture(scope="session")
def radical_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The hermetic environment, for the whole session (a pilot inherits it when it starts)."""
    from rhapsody_radical.hermetic import hermetic

    home = tmp_path_factory.mktemp("rp-home")
    with hermetic(home), pytest.MonkeyPatch.context() as patch:
        # Raptor workers import functions defined in modules by name: rp_tasks must be
        # importable there, as a user's modules must be on a real allocation.
        path = [str(HERE), os.environ.get("PYTHONPATH", "")]
        patch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))
        yield home


@pytest.fixture(scope="session")
async def shared_pilot(radical_home: Path, anyio_backend: str) -> AsyncIterator[SharedPilot]:
    """Holds the event loop for the session and shuts the last shared pilot down."""
    from rp_support import SHARED

    yield SHARED
    await SHARED.close()


@pytest.fixture
async def radical_backend(shared_pilot: SharedPilot) -> RadicalExecutionBackend:
    """The shared, started backend. A failed start raises BackendError with the agent's logs."""
    return await shared_pilot.get()
