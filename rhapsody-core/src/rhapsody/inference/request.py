"""`AIRequest`: the validated meaning of an AI task's fields (what it asks which server).

An AI task dict has `prompt` (a string, or a list of strings: one response each) or chat
`messages`, and says who serves it: `service` (the uid of a service task, or a list of uids:
replicas) or a fixed `endpoint` URL. Optional: `model`, `system_prompt`, `api` ("chat", the
default; "completions"; "embeddings"), and the sampling fields below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from rhapsody.errors import TaskValidationError

APIS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}
#: sampling fields passed to the server as given (None: the server's default)
SAMPLING = ("max_tokens", "temperature", "top_p", "stop", "seed")
#: the task dict keys an AI task is read from
FIELDS = ("prompt", "messages", "model", "system_prompt", "api", "service", "endpoint", *SAMPLING)
_ROLES = ("system", "user", "assistant", "tool", "developer")


@attrs.frozen
class AIRequest:
    prompts: tuple[str, ...] | None  # None: `messages` is the one conversation
    messages: tuple[dict[str, Any], ...] | None
    batch: bool  # `prompt` was a list: the result is a list of responses
    api: str = "chat"
    model: str | None = None
    system_prompt: str | None = None
    services: tuple[str, ...] = ()
    endpoint: str | None = None
    sampling: dict[str, Any] = attrs.Factory(dict)

    def bodies(self, model: str | None) -> list[dict[str, Any]]:
        """The JSON request bodies, one per response, for the server's `api` route."""
        common: dict[str, Any] = {k: v for k, v in self.sampling.items() if v is not None}
        if model is not None:
            common["model"] = model
        if self.messages is not None:
            return [{**common, "messages": list(self.messages)}]
        assert self.prompts is not None
        if self.api == "embeddings":
            return [{**common, "input": prompt} for prompt in self.prompts]
        if self.api == "completions":
            return [{**common, "prompt": self._with_system(p)} for p in self.prompts]
        return [{**common, "messages": self._chat(prompt)} for prompt in self.prompts]

    def _chat(self, prompt: str) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*head, {"role": "user", "content": prompt}]

    def _with_system(self, prompt: str) -> str:
        return f"{self.system_prompt}\n\n{prompt}" if self.system_prompt else prompt


def is_ai_task(task: Mapping[str, Any]) -> bool:
    return "prompt" in task or "messages" in task


def parse_ai(task: Mapping[str, Any], uid: str) -> AIRequest:
    """Validate an AI task dict; raise `TaskValidationError` naming `uid` and the field."""
    get = task.get
    prompt, messages = get("prompt"), get("messages")
    if (prompt is None) == (messages is None):
        raise _bad(uid, "prompt", "an AI task needs either 'prompt' or 'messages', not both")
    prompts: tuple[str, ...] | None = None
    batch = False
    if prompt is not None:
        if isinstance(prompt, str):
            prompts = (prompt,)
        elif isinstance(prompt, (list, tuple)) and prompt and all(type(p) is str for p in prompt):
            prompts, batch = tuple(prompt), True
        else:
            shown = repr(prompt)[:80]
            raise _bad(uid, "prompt", f"must be a string or a non-empty list of strings: {shown}")
    chat: tuple[dict[str, Any], ...] | None = None
    if messages is not None:
        if not isinstance(messages, (list, tuple)) or not messages:
            raise _bad(uid, "messages", "must be a non-empty list of {'role', 'content'} dicts")
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or message.get("role") not in _ROLES:
                raise _bad(uid, "messages", f"item {i} needs a 'role' among {', '.join(_ROLES)}")
            if not isinstance(message.get("content"), str):
                raise _bad(uid, "messages", f"item {i} needs a string 'content'")
        chat = tuple(dict(m) for m in messages)
    api = get("api") or "chat"
    if api not in APIS:
        raise _bad(uid, "api", f"must be one of {', '.join(APIS)}, got {api!r}")
    if api == "embeddings" and chat is not None:
        raise _bad(uid, "messages", "an embeddings request takes 'prompt' (the text to embed)")
    if api != "chat" and chat is not None:
        raise _bad(uid, "messages", f"chat 'messages' need api 'chat', not {api!r}")
    for field in ("model", "system_prompt"):
        value = get(field)
        if value is not None and (not isinstance(value, str) or not value):
            raise _bad(uid, field, f"must be a non-empty string, got {value!r}")
    services = _services(get("service"), uid)
    endpoint = get("endpoint")
    if endpoint is not None:
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise _bad(uid, "endpoint", f"must be an http(s):// URL, got {endpoint!r}")
        if services:
            raise _bad(uid, "endpoint", "give either 'service' or 'endpoint', not both")
        endpoint = endpoint.rstrip("/")
    elif not services:
        raise _bad(
            uid, "service", "say who serves it: 'service' (a service task's uid) or 'endpoint'"
        )
    return AIRequest(
        prompts,
        chat,
        batch,
        api,
        get("model"),
        get("system_prompt"),
        services,
        endpoint,
        _sampling(task, uid),
    )


def _services(raw: Any, uid: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str) and raw:
        return (raw,)
    if isinstance(raw, (list, tuple)) and raw and all(isinstance(s, str) and s for s in raw):
        return tuple(dict.fromkeys(raw))
    shown = repr(raw)[:80]
    raise _bad(uid, "service", f"must be a service task's uid or a list of uids, got {shown}")


def _sampling(task: Mapping[str, Any], uid: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in SAMPLING:
        value = task.get(field)
        if value is None:
            continue
        if field in ("max_tokens", "seed"):
            ok = type(value) is int and (value >= 1 or field == "seed")
        elif field == "stop":
            ok = isinstance(value, str) or (
                isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value)
            )
            value = value if isinstance(value, str) else list(value)
        else:
            ok = (
                not isinstance(value, bool)
                and isinstance(value, (int, float))
                and math.isfinite(value)
                and value >= 0
            )
        if not ok:
            raise _bad(uid, field, f"invalid value {repr(value)[:80]}")
        out[field] = value
    return out


def _bad(uid: str, field: str, message: str) -> TaskValidationError:
    return TaskValidationError(message, uid=uid, field=field)
