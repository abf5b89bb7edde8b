"""Core's own backends and the example backend pass the conformance kit."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rhapsody.backends.execution import ConcurrentExecutionBackend, NoopExecutionBackend
from rhapsody.testing import BackendConformance
from rhapsody.testing.probes import OPEN_MPI_LOOPBACK as OPEN_MPI

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from tiny_backend import TinyBackend


class TestConcurrentConformance(BackendConformance):
    # Real processes (some sleeping 0.3 s): fewer examples; the engine's invariants get 200+
    # examples through noop and the fault-injecting backend in test_engine_properties.py.
    state_machine_examples = 30
    runs_mpi = True  # under mpirun (skipped, saying so, where no MPI is installed)
    mpi_environment = OPEN_MPI

    def make_backend(self) -> ConcurrentExecutionBackend:
        # Two GPU identifiers (no device needed): the kit checks that no two tasks share one.
        return ConcurrentExecutionBackend(cores=2, gpus=2)


class TestConcurrentFunctionConformance(BackendConformance):
    runs_executables = False
    # Slow (0.3 s) functions make examples wait: fewer of them (see above for the engine's).
    state_machine_examples = 40

    def make_backend(self) -> ConcurrentExecutionBackend:
        return ConcurrentExecutionBackend(cores=2)


class TestNoopConformance(BackendConformance):
    # noop completes every task without running it: the checks of what tasks do are skipped.
    runs_executables = False
    runs_functions = False
    runs_mpi = True  # accepted (it completes every task): nothing to run

    def make_backend(self) -> NoopExecutionBackend:
        return NoopExecutionBackend()

    def make_task(self, kind: str) -> dict[str, Any] | None:
        # noop completes every task: it can neither fail nor run slowly.
        return {"executable": "/bin/true"} if kind == "ok" else None


class TestTinyBackendConformance(BackendConformance):
    state_machine_examples = 30

    def make_backend(self) -> TinyBackend:
        return TinyBackend()
