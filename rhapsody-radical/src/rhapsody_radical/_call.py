"""Runs a function task inside a raptor worker and packs its outcome for the trip back.

RADICAL-Pilot returns a function's value through msgpack, which turns tuples into lists, bytes
into text and rejects other objects, and it reports an exception only as its repr. So the
worker runs `call` (serialized with the user's function by dill) and sends back one base64 text:
the pickled return value, or the exception itself plus its traceback. `unpack` reverses it on
the client. Import-light: the worker imports this module to run each task.
"""

from __future__ import annotations

import base64
import inspect
import traceback
from collections.abc import Callable
from typing import Any

#: marks a payload as ours, so that anything else in `return_value` is reported, not unpickled
MAGIC = "rhapsody-radical:1:"


async def call(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Call `func` (sync or async) and return its packed outcome. Never raises."""
    try:
        value = func(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
    except Exception as exc:
        return _pack(("error", exc, traceback.format_exc()))
    return _pack(("ok", value, None))


def _pack(outcome: tuple[str, Any, str | None]) -> str:
    import dill  # type: ignore[import-untyped]  # RADICAL-Pilot's own serializer, always present

    try:
        data = dill.dumps(outcome)
    except Exception as exc:
        what = "return value" if outcome[0] == "ok" else f"exception {outcome[1]!r}"
        error = TypeError(f"cannot send the {what} back from the worker: {exc}")
        data = dill.dumps(("error", error, outcome[2]))
    return MAGIC + base64.b64encode(data).decode("ascii")


def unpack(payload: object) -> tuple[str, Any, str | None] | None:
    """The outcome packed by `call`, or None when `payload` is not one of ours."""
    if not isinstance(payload, str) or not payload.startswith(MAGIC):
        return None
    import dill

    kind, value, trace = dill.loads(base64.b64decode(payload[len(MAGIC):]))
    return str(kind), value, trace
