"""`inference`: a backend that runs AI tasks against OpenAI-compatible HTTP servers.

Each AI task is sent to a fixed `endpoint`, or to the replicas given by its `service` uids
(looked up in the session's `ServiceDirectory`, else the registry). Requests in flight are
bounded per replica and go to the least-loaded one; 429, 503 and connection errors are retried
with exponential backoff (on any replica); a cancelled or timed-out task aborts its requests.
httpx is imported when the backend starts (`pip install rhapsody-core[inference]`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from rhapsody.backends.base import BaseExecutionBackend, ExecutionContext, Outcome
from rhapsody.errors import BackendError, TaskValidationError
from rhapsody.inference.request import APIS, AIRequest
from rhapsody.services.directory import ServiceDirectory, ServiceEndpoint
from rhapsody.task import TaskDescription

if TYPE_CHECKING:
    import httpx

#: the `secret_environment` variable of an AI task that holds the bearer token of its fixed
#: `endpoint` (a service's own token comes from the service task)
API_KEY_VARIABLE = "OPENAI_API_KEY"
_RETRY_STATUS = frozenset({429, 502, 503, 504})


class _Replica:
    """One server, shared by every task it serves: its load and its default model."""

    def __init__(self, endpoint: ServiceEndpoint) -> None:
        self.endpoint = endpoint
        self.in_flight = 0
        self.served = 0
        self.model: str | None = None


class _RequestFailed(Exception):
    pass


class InferenceBackend(BaseExecutionBackend):
    """Run AI tasks (`prompt` or `messages`) as requests to OpenAI-compatible servers.

    :param max_in_flight: requests in flight per replica at most
    :param max_retries: tries after the first for a 429/503/connection error
    :param backoff: seconds before the first retry (doubled each time; a server's Retry-After
        wins when it says more, up to 30 s)
    :param request_timeout: seconds one request may take (a task's `timeout` bounds the task)
    :param directory: where the endpoints of service tasks are found (a Session passes its own)
    """

    backend_name = "inference"
    runs_ai_tasks = True

    def __init__(
        self,
        name: str | None = None,
        *,
        max_in_flight: int = 4,
        max_retries: int = 3,
        backoff: float = 0.5,
        connect_timeout: float = 10.0,
        request_timeout: float = 600.0,
        directory: ServiceDirectory | None = None,
        work_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if max_retries < 0 or backoff < 0:
            raise ValueError("max_retries and backoff must be >= 0")
        super().__init__(name, work_dir=work_dir)
        self.directory = directory if directory is not None else ServiceDirectory()
        self._max_in_flight = max_in_flight
        self._max_retries = max_retries
        self._backoff = backoff
        self._timeouts = (connect_timeout, request_timeout)
        self._client: httpx.AsyncClient | None = None
        self._replicas: dict[tuple[str, str | None], _Replica] = {}
        self._freed: asyncio.Condition | None = None

    async def _start(self) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise BackendError(
                "the inference backend needs httpx: pip install 'rhapsody-core[inference]'"
            ) from exc
        connect, request = self._timeouts
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(request, connect=connect),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self._freed = asyncio.Condition()

    async def _stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _check_task(self, task: TaskDescription) -> None:
        if task.ai is None:
            raise TaskValidationError(
                "the inference backend runs AI tasks only (give 'prompt' or 'messages')",
                uid=task.uid,
                field="executable" if task.executable is not None else "function",
            )

    async def _execute(self, task: TaskDescription, ctx: ExecutionContext) -> Outcome:
        ai = task.ai
        assert ai is not None and self._client is not None
        ctx.started()
        began = time.monotonic()
        requests = [
            asyncio.ensure_future(self._send(task, ai, body)) for body in self._bodies(ai)
        ]
        try:
            await asyncio.wait(requests, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for request in requests:  # cancelled, timed out, or one failed: abort the others
                request.cancel()
        failed = [r for r in requests if not r.cancelled() and r.exception() is not None]
        if failed:
            error = failed[0].exception()
            if not isinstance(error, _RequestFailed):
                raise error  # type: ignore[misc]  # a bug, reported as a backend error
            return Outcome.failure(str(error))
        replies = [r.result() for r in requests]
        usage: dict[str, int] = {}
        for reply in replies:
            for key, value in (reply[1].get("usage") or {}).items():
                if isinstance(value, int):
                    usage[key] = usage.get(key, 0) + value
        responses = [_response_of(ai.api, reply[1], task.uid) for reply in replies]
        return Outcome(
            True,
            extra={
                "response": responses if ai.batch else responses[0],
                "usage": usage,
                "model": replies[0][1].get("model"),
                "served_by": sorted({reply[0] for reply in replies}),
                "latency": time.monotonic() - began,
            },
        )

    def _bodies(self, ai: AIRequest) -> list[dict[str, Any]]:
        return ai.bodies(ai.model)

    # -- one request ------------------------------------------------------------------------
    async def _send(
        self, task: TaskDescription, ai: AIRequest, body: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """POST `body` to the least-loaded replica; retry what a retry may fix."""
        assert self._client is not None
        route = APIS[ai.api]
        last = ""
        retry_after = 0.0  # what the server asked for
        for attempt in range(self._max_retries + 1):
            if attempt:
                delay = max(self._backoff * 2 ** (attempt - 1), retry_after)
                await asyncio.sleep(min(30.0, delay))
            retry_after = 0.0
            replica = await self._take(self._replicas_of(task, ai))
            url = replica.endpoint.url
            try:
                if "model" not in body and ai.api != "embeddings":
                    body = {**body, "model": await self._default_model(replica)}
                headers = _auth(replica.endpoint.token)
                reply = await self._client.post(url + route, json=body, headers=headers)
            except _RequestFailed:
                raise
            except Exception as exc:  # connection refused, reset, read timeout
                if not _retryable(exc):
                    raise _RequestFailed(f"task {task.uid!r}: {url}: {exc!r}") from exc
                last = f"{url}: {type(exc).__name__}: {exc}"
                continue
            finally:
                await self._give_back(replica)
            if reply.status_code in _RETRY_STATUS:
                last = f"{url} answered HTTP {reply.status_code}: {reply.text[:300]}"
                retry_after = _retry_after(reply.headers.get("retry-after"))
                continue
            if reply.status_code >= 400:
                raise _RequestFailed(
                    f"task {task.uid!r}: {url}{route} answered HTTP {reply.status_code}: "
                    f"{reply.text[:500]}"
                )
            try:
                data = reply.json()
            except ValueError:
                raise _RequestFailed(
                    f"task {task.uid!r}: {url}{route} answered no JSON: {reply.text[:300]!r}"
                ) from None
            return url, data
        raise _RequestFailed(
            f"task {task.uid!r}: gave up after {self._max_retries + 1} tries: {last}"
        )

    def _replicas_of(self, task: TaskDescription, ai: AIRequest) -> list[_Replica]:
        """The servers of `task` now (a restarted service has a new endpoint)."""
        if ai.endpoint is not None:
            token = (task.secret_environment or {}).get(API_KEY_VARIABLE)
            endpoints = [ServiceEndpoint(ai.endpoint, token)]
        else:
            endpoints = []
            for uid in ai.services:
                endpoint = self.directory.get(uid)
                if endpoint is None:
                    raise _RequestFailed(
                        f"task {task.uid!r}: service {uid!r} has no endpoint (is it a service "
                        "task with a port, submitted through the same Session?)"
                    )
                endpoints.append(endpoint)
        replicas = []
        for endpoint in endpoints:
            key = (endpoint.url, endpoint.token)
            replica = self._replicas.get(key)
            if replica is None:
                replica = self._replicas[key] = _Replica(endpoint)
            replicas.append(replica)
        return replicas

    async def _take(self, replicas: list[_Replica]) -> _Replica:
        assert self._freed is not None
        async with self._freed:
            while True:
                best = min(replicas, key=lambda r: (r.in_flight, r.served))
                if best.in_flight < self._max_in_flight:
                    best.in_flight += 1
                    return best
                await self._freed.wait()

    async def _give_back(self, replica: _Replica) -> None:
        assert self._freed is not None
        replica.in_flight -= 1
        replica.served += 1
        async with self._freed:
            self._freed.notify()

    async def _default_model(self, replica: _Replica) -> str:
        """The first model the server lists (asked once per replica)."""
        if replica.model is None:
            assert self._client is not None
            url = replica.endpoint.url + "/v1/models"
            reply = await self._client.get(url, headers=_auth(replica.endpoint.token))
            if reply.status_code != 200:
                raise _RequestFailed(
                    f"{url} answered HTTP {reply.status_code} (give the AI task a 'model'): "
                    f"{reply.text[:300]}"
                )
            models = reply.json().get("data") or []
            if not models:
                raise _RequestFailed(f"{url} lists no model; give the AI task a 'model'")
            replica.model = str(models[0]["id"])
        return replica.model


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _retryable(exc: Exception) -> bool:
    import httpx

    return isinstance(exc, (httpx.TransportError, OSError))


def _retry_after(value: str | None) -> float:
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, float(value))  # type: ignore[arg-type]
    return 0.0


def _response_of(api: str, data: dict[str, Any], uid: str) -> Any:
    try:
        if api == "embeddings":
            return data["data"][0]["embedding"]
        choice = data["choices"][0]
        return choice["text"] if api == "completions" else choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _RequestFailed(f"task {uid!r}: unexpected reply: {str(data)[:300]}") from None
