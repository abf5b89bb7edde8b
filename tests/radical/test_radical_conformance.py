"""The `rhapsody.testing` conformance suite, run through a real local pilot."""

from __future__ import annotations

from typing import ClassVar

import pytest
from rhapsody.testing import BackendConformance
from rp_support import WAIT, assert_no_session_processes, make_backend

from rhapsody_radical.backend import RadicalExecutionBackend


class _OnSharedPilot(BackendConformance):
    # RADICAL-Pilot runs ~10 tasks/s and takes ~0.5 s from submission to result.
    state_machine_examples = 10
    wait_timeout = WAIT
    started: ClassVar[list[RadicalExecutionBackend]] = []

    @pytest.fixture(scope="session")
    def anyio_backend(self) -> str:
        # the kit's is class-scoped; the shared backend's loop must outlive the class
        return "asyncio"

    @pytest.fixture(scope="class")
    def backend(self, radical_backend: RadicalExecutionBackend) -> RadicalExecutionBackend:
        # the session's pilot, not a new one per class; the session fixture shuts it down
        return radical_backend

    def make_backend(self) -> RadicalExecutionBackend:
        # only the shutdown test makes its own backend (and pilot)
        backend = make_backend()
        self.started.append(backend)
        return backend

    @pytest.mark.anyio
    async def test_shutdown_cancels_everything_and_leaves_no_child(self) -> None:
        await super().test_shutdown_cancels_everything_and_leaves_no_child()
        # The kit looks at our child processes; RADICAL-Pilot's daemonize. Look at every
        # process of that session (agent, bootstrap, components, tasks, raptor) too.
        assert_no_session_processes(self.started[-1].session.uid)


class TestRadicalConformance(_OnSharedPilot):
    """Executable tasks."""


class TestRadicalFunctionConformance(_OnSharedPilot):
    """Function tasks through raptor; its shutdown test stops a raptor that is starting."""

    runs_executables = False
    state_machine_examples = 6
