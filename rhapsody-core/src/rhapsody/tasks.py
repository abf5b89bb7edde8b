"""The object API of the original's newer releases: `ComputeTask`, a dict with attributes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any

from rhapsody.errors import TaskValidationError
from rhapsody.graph import next_uid

# Result fields read as None until the task produced them.
_RESULT_FIELDS = frozenset(
    {"state", "stdout", "stderr", "exit_code", "return_value", "exception", "backend"}
)


class ComputeTask(dict):  # type: ignore[type-arg]
    """A task dict with attribute access, a generated uid, and `await task` after submission."""

    def __init__(
        self,
        executable: str | None = None,
        function: Callable[..., Any] | None = None,
        arguments: list[str] | None = None,
        args: list[Any] | tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        uid: str | None = None,
        input_files: list[str] | None = None,
        output_files: list[str] | None = None,
        capture_stdio: bool = False,
        **extra: Any,
    ) -> None:
        uid = uid or next_uid()
        if (executable is None) == (function is None):
            raise TaskValidationError(
                "give exactly one of 'executable' or 'function'", uid=uid, field="executable"
            )
        super().__init__(uid=uid, capture_stdio=capture_stdio, **extra)
        if executable is not None:
            self["executable"] = executable
            self["arguments"] = list(arguments or [])
        else:
            self["function"] = function
            self["args"] = list(args or [])
            self["kwargs"] = dict(kwargs or {})
        self["input_files"] = list(input_files or [])
        self["output_files"] = list(output_files or [])
        object.__setattr__(self, "_future", None)

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        if name in _RESULT_FIELDS:
            return None
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def bind_future(self, future: asyncio.Future[Any]) -> None:
        """Called by the engine at submission: `await task` then waits for this future."""
        object.__setattr__(self, "_future", future)

    def __await__(self) -> Generator[Any, None, Any]:
        future = object.__getattribute__(self, "_future")
        if future is None:
            raise RuntimeError(f"task {self['uid']!r} has not been submitted")
        return future.__await__()  # type: ignore[no-any-return]

    def __reduce__(self) -> Any:
        # Pickle as a plain dict of fields: the future stays with the process that owns it.
        return (_rebuild, (dict(self),))

    def __repr__(self) -> str:
        kind = "executable" if "executable" in self else "function"
        return f"ComputeTask(uid={self['uid']!r}, {kind}, state={self.get('state')!r})"


def _rebuild(fields: dict[str, Any]) -> ComputeTask:
    task = ComputeTask.__new__(ComputeTask)
    dict.update(task, fields)
    object.__setattr__(task, "_future", None)
    return task
