"""Periodic work on an event loop without a timer on the loop: a thread sleeps between ticks
and hands each one to the loop (`call_soon_threadsafe`).

Why a thread: while any timer is scheduled, every iteration of an asyncio loop reads the clock
and looks at its timer heap. The engine runs a few iterations per task, so a sampling loop
asleep in `asyncio.sleep` cost about 3,000 machine instructions per no-op task, a third of all
that telemetry costs (benchmarks/bench_telemetry.py).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable

logger = logging.getLogger("rhapsody.telemetry")


class Ticker:
    """Calls `tick()` on the running loop every `interval` seconds until `stop()`. A tick that
    returns an awaitable runs as a task; while it runs, later ticks are skipped (a slow round of
    sampling is not stacked up). A tick that raises is logged; the next one still comes."""

    def __init__(self, interval: float, tick: Callable[[], Awaitable[None] | None], name: str):
        if interval <= 0:
            raise ValueError(f"a tick interval must be > 0 s, got {interval}")
        self.interval = interval
        self._tick = tick
        self._name = name
        self._loop = asyncio.get_running_loop()
        self._stopped = threading.Event()
        self._current: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._sleep, name=name, daemon=True)
        self._thread.start()

    def _sleep(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self._loop.call_soon_threadsafe(self._run)
            except RuntimeError:  # the loop is closed: nothing to tick any more
                return

    def _run(self) -> None:
        if self._stopped.is_set() or (self._current is not None and not self._current.done()):
            return
        try:
            result = self._tick()
            if inspect.isawaitable(result):
                self._current = asyncio.ensure_future(result)
                self._current.add_done_callback(self._log_failure)
        except Exception:
            logger.exception("%s: a tick raised; ignored", self._name)

    def _log_failure(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            logger.error("%s: a tick raised; ignored", self._name, exc_info=future.exception())

    def stop(self) -> None:
        """No tick after this; a running one is cancelled; the thread ends at once."""
        self._stopped.set()
        if self._current is not None:
            self._current.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
