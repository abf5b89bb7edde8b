"""The `rhapsody.testing` conformance suite, run through real local pilots."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "radical.pilot", reason="radical.pilot is not installed: pip install rhapsody-radical"
)

from typing import ClassVar

from rp_support import SHARED, WAIT, SharedPilot, assert_no_session_processes

from rhapsody.testing import BackendConformance, probes
from rhapsody_radical.backend import RadicalExecutionBackend


@pytest.mark.radical
class _Radical(BackendConformance):
    # RADICAL-Pilot runs ~10 tasks/s and takes ~0.3 s from submission to result.
    state_machine_examples = 10
    wait_timeout = WAIT
    runs_mpi = True  # the agent launches the ranks (mpirun on local.localhost)
    mpi_environment = probes.OPEN_MPI_LOOPBACK
    made: ClassVar[list[RadicalExecutionBackend]] = []

    @pytest.fixture(scope="session")
    @classmethod
    def anyio_backend(cls) -> str:
        # the kit's is class-scoped; the shared backend's event loop must outlive the class
        return "asyncio"

    @pytest.fixture(scope="class")
    @classmethod
    async def backend(cls, shared_pilot: SharedPilot) -> RadicalExecutionBackend:
        return await shared_pilot.get(owner=cls)

    def make_backend(self) -> RadicalExecutionBackend:
        # The kit's shutdown test, its last, shuts down the shared pilot instead of starting
        # another one; the next user of the shared pilot gets a new one.
        backend = SHARED.current()
        self.made.append(backend)
        return backend

    @pytest.mark.anyio
    async def test_shutdown_cancels_everything_and_leaves_no_child(
        self, shared_pilot: SharedPilot
    ) -> None:
        await super().test_shutdown_cancels_everything_and_leaves_no_child()
        # The kit looks at our child processes; RADICAL-Pilot's daemonize. Look at every
        # process of that session (agent, bootstrap, components, tasks, raptor) too.
        assert_no_session_processes(self.made[-1].session.uid)


class TestRadicalConformance(_Radical):
    """Executable tasks."""


class TestRadicalFunctionConformance(_Radical):
    """Function tasks through raptor; the shutdown test stops a running raptor too."""

    runs_executables = False
    state_machine_examples = 8
