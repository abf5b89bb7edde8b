"""Runs a function task inside a raptor worker and packs its outcome for the trip back.

Out: `pack_call` serializes the function with its arguments using dill with `recurse=True`,
which carries the globals a function defined in `__main__` uses (RADICAL-Pilot's own dill call
does not, so such a function fails in the worker with NameError).

Back: RADICAL-Pilot returns a function's value through msgpack, which turns tuples into lists,
bytes into text and rejects other objects, and it reports an exception only as its repr. So
the worker runs `call`, which returns one base64 text holding the pickled return value, or the
exception itself with its traceback; `unpack` reverses it on the client.

Import-light: the worker imports this module for every task.
"""

from __future__ import annotations

import base64
import inspect
import traceback
from collections.abc import Callable
from typing import Any

#: marks a payload as ours, so that anything else in `return_value` is reported, not unpickled
MAGIC = "rhapsody-radical:1:"


def pack_call(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """The function call, serialized for `call`."""
    import dill  # type: ignore[import-untyped]  # RADICAL-Pilot's serializer, always installed

    return dill.dumps((func, args, kwargs), recurse=True)  # type: ignore[no-any-return]


def unpack_call(
    packed: bytes,
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """The function and arguments packed by `pack_call` (importing the modules they need)."""
    import dill

    func, args, kwargs = dill.loads(packed)
    return func, args, kwargs


async def call(packed: bytes) -> str:
    """Run the call packed by `pack_call` (sync or async function); never raises."""
    try:
        func, args, kwargs = unpack_call(packed)
        value = func(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
    except Exception as exc:
        return _pack(("error", exc, traceback.format_exc()))
    return _pack(("ok", value, None))


def _pack(outcome: tuple[str, Any, str | None]) -> str:
    import dill

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

    kind, value, trace = dill.loads(base64.b64decode(payload[len(MAGIC) :]))
    return str(kind), value, trace
