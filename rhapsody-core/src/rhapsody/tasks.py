"""The object API of the original's newer releases: `ComputeTask`, a dict with attributes.

A task is validated when it is built, reads `None` for every field it has not set, and is
hashable: two tasks are equal when they are the same task (same uid), so tasks go into
`asyncio.gather`, sets and dict keys.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator, Mapping
from typing import Any

from rhapsody.errors import RhapsodyError, TaskExecutionError, TaskValidationError
from rhapsody.graph import next_uid
from rhapsody.task import TaskDescription

# Fields that read as None until set: results, where the task was routed, the other kind's
# callable/executable. (Not stored: `"state" in task` stays a truthful "has it a state yet".)
_UNSET_FIELDS = frozenset(
    {
        "state",
        "stdout",
        "stderr",
        "exit_code",
        "return_value",
        "response",
        "exception",
        "backend",
        "executable",
        "function",
    }
)
# What the original's tasks carry in their dict that is not a field to rebuild from.
_NOT_FIELDS = frozenset({"future", "task_type"})


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
        else:
            self["function"] = function
        # Both kinds carry every description field (the engine reads only its kind's).
        # Copied when of the right type; anything else is kept for `validate` to name.
        self["arguments"] = list(arguments) if isinstance(arguments, (list, tuple)) else (
            [] if arguments is None else arguments
        )
        self["args"] = tuple(args) if isinstance(args, (list, tuple)) else (
            () if args is None else args
        )
        self["kwargs"] = dict(kwargs) if isinstance(kwargs, dict) else (
            {} if kwargs is None else kwargs
        )
        self["input_files"] = list(input_files or [])
        self["output_files"] = list(output_files or [])
        object.__setattr__(self, "_future", None)
        self.validate()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComputeTask:
        """A task from a dict of its fields (e.g. `dict(task)`), validated."""
        if not isinstance(data, Mapping):
            raise TaskValidationError(f"a task must be a dict, got {type(data).__name__}")
        fields = {k: v for k, v in data.items() if k not in _NOT_FIELDS}
        if not isinstance(fields.get("uid", ""), str):
            raise TaskValidationError("must be a string", field="uid")
        return cls(**fields)

    def validate(self) -> None:
        """Raise `TaskValidationError` naming this task and the field at fault, if any."""
        TaskDescription.from_dict(self, self["uid"])

    def __missing__(self, key: str) -> Any:
        if key in _UNSET_FIELDS:
            return None
        raise KeyError(key)

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        if name in _UNSET_FIELDS:
            return None
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    # Identity, not content: a task's results change while it runs, and two tasks with the
    # same fields are still two tasks. The uid is what names a task everywhere else.
    def __hash__(self) -> int:  # type: ignore[override]
        return hash(dict.get(self, "uid"))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ComputeTask):
            return self is other or dict.get(self, "uid") == dict.get(other, "uid")
        if isinstance(other, dict):
            return False
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def bind_future(self, future: asyncio.Future[Any]) -> None:
        """Called by the engine at submission: `await task` then waits for this future."""
        object.__setattr__(self, "_future", future)
        if self.get("function") is not None:
            future.add_done_callback(self._record_function_result)

    def _record_function_result(self, future: asyncio.Future[Any]) -> None:
        # The original's function tasks report like a process: exit code 0 / 1, the return
        # value's text as stdout, the exception's as stderr.
        if future.cancelled() or self.get("exit_code") is not None:
            return
        failed = future.exception() is not None
        self["exit_code"] = 1 if failed else 0
        if self.get("stdout") is None:
            self["stdout"] = "" if failed else str(self.get("return_value"))
        if failed and self.get("stderr") is None:
            self["stderr"] = str(self.get("exception"))

    def __await__(self) -> Generator[Any, None, Any]:
        """The task once DONE; a failed function task raises the function's own exception
        (as `concurrent.futures` and dask do), other failures `TaskExecutionError`."""
        future = object.__getattribute__(self, "_future")
        if future is None:
            raise RuntimeError(f"task {self['uid']!r} has not been submitted")
        try:
            return (yield from future.__await__())
        except TaskExecutionError as error:
            cause = error.__cause__
            if self.get("function") is None or cause is None or isinstance(cause, RhapsodyError):
                raise
            with contextlib.suppress(AttributeError, TypeError):  # e.g. __slots__ exceptions
                if not hasattr(cause, "task"):
                    cause.task = self  # type: ignore[attr-defined]
            raise cause from None

    def __reduce__(self) -> Any:
        # Pickle as a plain dict of fields: the future stays with the process that owns it.
        return (_rebuild, (dict(self),))

    def __repr__(self) -> str:
        kind = "executable" if self.get("executable") is not None else "function"
        return f"ComputeTask(uid={self['uid']!r}, {kind}, state={self.get('state')!r})"


def _rebuild(fields: dict[str, Any]) -> ComputeTask:
    task = ComputeTask.__new__(ComputeTask)
    dict.update(task, fields)
    object.__setattr__(task, "_future", None)
    return task
