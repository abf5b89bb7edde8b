"""`AITask`: an AI task as an object, like `ComputeTask` (a dict with attributes, awaitable)."""

from __future__ import annotations

from typing import Any

from rhapsody.errors import TaskValidationError
from rhapsody.graph import next_uid
from rhapsody.tasks import ComputeTask

# What an AI task produces: read as None until it has.
_RESULTS = frozenset({"response", "usage", "model", "served_by", "latency"})


class AITask(ComputeTask):
    """A request to a language model: `prompt` (a string, or a list of strings for one
    response each) or chat `messages`, served by `service` (a service task's uid, or a list
    of uids: replicas) or a fixed `endpoint` URL. Validated when built; `await task` after
    submission gives it back DONE, with `response`, `usage` and `latency` filled in."""

    def __init__(
        self,
        prompt: str | list[str] | None = None,
        *,
        messages: list[dict[str, str]] | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
        service: str | list[str] | None = None,
        endpoint: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        api: str | None = None,
        uid: str | None = None,
        **extra: Any,
    ) -> None:
        given = {
            "prompt": prompt,
            "messages": messages,
            "model": model,
            "system_prompt": system_prompt,
            "service": service,
            "endpoint": endpoint,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop": stop,
            "seed": seed,
            "api": api,
        }
        uid = uid or next_uid()
        if prompt is None and messages is None:
            raise TaskValidationError(
                "an AI task needs a 'prompt' or chat 'messages'", uid=uid, field="prompt"
            )
        dict.__init__(self, uid=uid, **extra)
        self.update({k: v for k, v in given.items() if v is not None})
        object.__setattr__(self, "_future", None)
        self.validate()

    def __getattr__(self, name: str) -> Any:
        if name in _RESULTS and name not in self:
            return None
        return super().__getattr__(name)

    def __repr__(self) -> str:
        return f"AITask(uid={self['uid']!r}, state={self.get('state')!r})"
