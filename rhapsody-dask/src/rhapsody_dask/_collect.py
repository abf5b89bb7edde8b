"""Turning settled dask futures into `Outcome`s, fetching finished results in batches.

Awaiting each future on its own costs one gather round trip per task. Here a task only waits
for its future to settle; finished ones are fetched together, one gather in flight at a time,
so under load each round trip brings back every result that finished meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Any

from distributed import Client, Future
from distributed.scheduler import KilledWorker

from rhapsody.backends.base import Outcome
from rhapsody.states import CANCELED, DONE, StateMapper


class ResultCollector:
    def __init__(self, client: Client, states: StateMapper, *, direct: bool | None) -> None:
        self._client = client
        self._states = states
        self._direct = direct  # fetch from the workers themselves, not through the scheduler
        self._waiting: dict[Future, asyncio.Future[Outcome]] = {}
        self._fetcher: asyncio.Task[None] | None = None

    async def outcome(self, future: Future) -> Outcome:
        """What the attempt behind `future` produced, once it has settled."""
        error = await future.exception()  # waits for the future to settle; fetches no result
        state = self._states.to_main_state(future.status)
        if state == DONE:
            return await self._fetch(future)
        if state == CANCELED:
            return Outcome.failure("dask cancelled the task (its scheduler or workers went away)")
        if isinstance(error, KilledWorker):
            return Outcome.failure(f"the dask worker running the task died: {error}", exception=error)
        return Outcome.failure(
            f"dask could not run the task: {type(error).__name__}: {error}", exception=error
        )

    async def _fetch(self, future: Future) -> Outcome:
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[future] = waiter
        if self._fetcher is None:
            self._fetcher = asyncio.create_task(self._fetch_batches())
        return await waiter

    async def _fetch_batches(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                futures = list(batch)
                for future, outcome in zip(futures, await self._gather(futures), strict=True):
                    waiter = batch[future]
                    if not waiter.done():  # its task may have been cancelled meanwhile
                        waiter.set_result(outcome)
        finally:
            self._fetcher = None

    async def _gather(self, futures: list[Future]) -> list[Outcome]:
        try:
            values = await self._client.gather(futures, errors="skip", direct=self._direct)
        except Exception:
            # One result that cannot be fetched (unpicklable value, class missing here) must not
            # fail the others: fetch one by one to find it.
            return [await self._gather_one(future) for future in futures]
        return [self._checked(future, value) for future, value in zip(futures, values, strict=True)]

    async def _gather_one(self, future: Future) -> Outcome:
        try:
            value = await self._client.gather(future, direct=self._direct)
        except Exception as exc:
            return Outcome.failure(
                f"the task's result could not be fetched from its worker: {type(exc).__name__}: {exc}",
                exception=exc,
            )
        return self._checked(future, value)

    @staticmethod
    def _checked(future: Future, value: Any) -> Outcome:
        if isinstance(value, Outcome):
            return value
        # `errors="skip"` yields None for a future that went bad between settling and the fetch.
        return Outcome.failure(f"dask lost the task's result (future {future.status})")
