"""The `rhapsody.testing` conformance suite, run through real local pilots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
from rhapsody.testing import BackendConformance
from rp_support import WAIT, assert_no_session_processes, make_backend

from rhapsody_radical.backend import RadicalExecutionBackend


class _Radical(BackendConformance):
    # RADICAL-Pilot runs ~10 tasks/s and takes ~0.5 s from submission to result.
    state_machine_examples = 10
    wait_timeout = WAIT
    made: ClassVar[list[RadicalExecutionBackend]] = []

    @pytest.fixture(scope="session")
    @classmethod
    def anyio_backend(cls) -> str:
        # the kit's is class-scoped; the shared backend's event loop must outlive the class
        return "asyncio"

    def make_backend(self) -> RadicalExecutionBackend:
        backend = make_backend()
        self.made.append(backend)
        return backend

    @pytest.mark.anyio
    async def test_shutdown_cancels_everything_and_leaves_no_child(self) -> None:
        await super().test_shutdown_cancels_everything_and_leaves_no_child()
        # The kit looks at our child processes; RADICAL-Pilot's daemonize. Look at every
        # process of that session (agent, bootstrap, components, tasks, raptor) too.
        assert_no_session_processes(self.made[-1].session.uid)


class TestRadicalConformance(_Radical):
    """Executable tasks, on the session's shared pilot (its shutdown test starts its own)."""

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, radical_backend: RadicalExecutionBackend) -> RadicalExecutionBackend:
        # the session fixture shuts it down
        return radical_backend


class TestRadicalFunctionConformance(_Radical):
    """Function tasks through raptor, on a pilot of this class's own.

    Not the shared pilot: the kit's tests reuse task uids in every class. The kit's last test,
    the shutdown test, shuts this pilot down (with raptor running) instead of starting a third.
    """

    runs_executables = False
    state_machine_examples = 6

    @pytest.fixture(scope="class")
    @classmethod
    async def backend(
        cls, radical_home: object, anyio_backend: str
    ) -> AsyncIterator[RadicalExecutionBackend]:
        backend = make_backend()
        cls.made.append(backend)
        await backend
        yield backend
        await backend.shutdown()  # a no-op after the shutdown test
        assert_no_session_processes(backend.session.uid)

    def make_backend(self) -> RadicalExecutionBackend:
        if self.made and self.made[-1].state() == "RUNNING":
            return self.made[-1]
        return super().make_backend()  # the shutdown test run on its own
