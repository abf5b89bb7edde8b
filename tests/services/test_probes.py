"""Readiness probes stop when cancelled, even when a connection attempt fails at that moment.

Python 3.10/3.11's `asyncio.wait_for` returns the inner result (here: raises its
ConnectionRefusedError) when the cancellation and the inner failure meet, so a probe loop that
retries on OSError would lose the cancellation and poll forever (seen: `rhapsody run` hung on a
service that exited before it was ready while its tcp probe was being cancelled).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rhapsody.services import probes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def refuse_and_cancel(monkeypatch: pytest.MonkeyPatch, target: list[asyncio.Task[Any]]) -> None:
    """Each connection attempt cancels the probe's task, then fails: the two meet."""

    async def open_connection(*args: Any, **kwargs: Any) -> Any:
        target[0].cancel()
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(asyncio, "open_connection", open_connection)


@pytest.mark.parametrize(
    "probe",
    [
        lambda: probes.tcp_ready("127.0.0.1", 9),
        lambda: probes.http_ready("127.0.0.1", 9, "/health"),
    ],
    ids=["tcp", "http"],
)
async def test_a_probe_cancelled_while_a_connection_fails_is_cancelled(
    monkeypatch: pytest.MonkeyPatch, probe: Any
) -> None:
    target: list[asyncio.Task[Any]] = []
    refuse_and_cancel(monkeypatch, target)
    task = asyncio.ensure_future(probe())
    target.append(task)
    done, _ = await asyncio.wait([task], timeout=10)
    assert done, "the probe went on polling after it was cancelled"
    assert task.cancelled()
