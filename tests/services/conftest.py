"""Fixtures of the service tests (helpers: service_support.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psutil
import pytest
from service_support import descendants


@pytest.fixture
def no_process_left() -> Iterator[None]:
    """Fails the test if it leaves a child process (a service not stopped) behind."""
    before = descendants()
    yield
    left = []
    for pid in descendants() - before:
        with contextlib.suppress(psutil.Error):  # it may have exited meanwhile
            command = psutil.Process(pid).cmdline()
            # multiprocessing's resource tracker serves the whole test process, not one test
            if not any("multiprocessing.resource_tracker" in part for part in command):
                left.append(command)
    assert not left, f"processes left running: {left}"
