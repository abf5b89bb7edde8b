"""Shared set-up for the dask backend's tests."""

from __future__ import annotations

from multiprocessing import resource_tracker

import pytest


@pytest.fixture(scope="session", autouse=True)
def _resource_tracker_running() -> None:
    # dask spawns its worker processes, and the first spawn starts Python's multiprocessing
    # resource tracker: one process per interpreter, living until it exits. It is Python's, not
    # the backend's; start it before any test counts the processes a shutdown left behind.
    resource_tracker.ensure_running()
