"""Worker threads for plain function tasks, built for many short calls.

`loop.run_in_executor` costs a `concurrent.futures.Future`, a chained asyncio future and one
loop wake-up per call. Here a call is one queue item, and finished calls are handed back in
batches: a worker wakes the loop only when the batch was empty, so while the loop is busy
completing tasks the workers keep adding to the batch without signalling it again.

The threads are daemons: a function that never returns (it timed out or was cancelled, which
cannot stop a thread) must not keep the interpreter from exiting. Such a thread no longer
counts as idle, so the pool starts another one for the next call: slots stay usable.
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from rhapsody.backends.base import Outcome

_STOP = None
# Return types that skip the (slow, ABC-based) awaitable check.
_NOT_AWAITABLE = frozenset({type(None), bool, int, float, complex, str, bytes, list, tuple, dict})


class FunctionThreads:
    """Runs `func(*args, **kwargs)` on worker threads.

    Each call's future resolves to the task's `Outcome`: any exception, SystemExit included,
    is the task's failure, never raised into the loop. A plain function that returns an
    awaitable (a coroutine) has it run on the loop while its worker waits.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._loop = loop
        self._name = name
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._finished: list[tuple[asyncio.Future[Outcome], Outcome]] = []
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[Outcome]:
        """Queue one call; its future resolves on the loop thread."""
        if self._closed:
            raise RuntimeError("the function threads are shut down")
        future = self._loop.create_future()
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                self._start_thread()
        self._inbox.put((future, func, args, kwargs))
        return future

    def shutdown(self) -> None:
        """Let idle threads exit; a call still running finishes on its (daemon) thread."""
        self._closed = True
        for _ in self._threads:
            self._inbox.put(_STOP)

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        inbox, lock, finished = self._inbox, self._lock, self._finished
        while True:
            item = inbox.get()
            if item is _STOP:
                return
            future, func, args, kwargs = item
            result = (future, self._call(func, args, kwargs))
            del item, future, func, args, kwargs  # hold no task's data while idle
            with lock:
                finished.append(result)
                wake = len(finished) == 1
                self._idle += 1
            del result
            if wake:
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # the loop is closed: nobody waits for the result
                    return

    def _call(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Outcome:
        try:
            value = func(*args, **kwargs)
            if type(value) not in _NOT_AWAITABLE and inspect.isawaitable(value):
                value = asyncio.run_coroutine_threadsafe(_awaited(value), self._loop).result()
        except BaseException as exc:  # even SystemExit only fails its task
            return Outcome.raised(exc)
        return Outcome(True, return_value=value)

    def _deliver(self) -> None:
        with self._lock:
            batch = self._finished.copy()
            self._finished.clear()  # the same list: workers hold a reference to it
        for future, outcome in batch:
            if not future.done():  # else cancelled or timed out meanwhile
                future.set_result(outcome)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
