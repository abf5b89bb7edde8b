"""The dask backend passes the conformance kit against a real LocalCluster."""

from __future__ import annotations

import pytest

pytest.importorskip("distributed", reason="the dask backend needs dask.distributed")

from rhapsody.testing import BackendConformance
from rhapsody_dask.backend import DaskExecutionBackend


class TestDaskConformance(BackendConformance):
    # Each task is a round trip through a scheduler and a worker process: fewer examples.
    state_machine_examples = 30

    def make_backend(self) -> DaskExecutionBackend:
        return DaskExecutionBackend(n_workers=2, threads_per_worker=1)


class TestDaskFunctionConformance(BackendConformance):
    runs_executables = False
    state_machine_examples = 30

    def make_backend(self) -> DaskExecutionBackend:
        return DaskExecutionBackend(n_workers=2, threads_per_worker=1)
