"""The task description model, built from the user's task dict with validation.

The user's dict stays the source of truth for the caller (results are written back into it);
`TaskDescription` is the validated, typed view the engine and backends work from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from rhapsody.errors import TaskValidationError

ISOLATION_MODES = ("thread", "process")
# Keys of `task_backend_specific_kwargs` that AsyncFlow uses for fields we have at top level.
_ALIASES_OF = {"shell": ("shell",), "cores": ("cpus", "cores"), "gpus": ("gpus",)}


@attrs.define(slots=True, eq=False)
class TaskDescription:
    """A validated task. Build it with `TaskDescription.from_dict`."""

    uid: str
    executable: str | None = None
    arguments: tuple[str, ...] = ()
    function: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = attrs.Factory(dict)
    environment: dict[str, str] | None = None
    working_directory: str | None = None
    dependencies: tuple[str, ...] = ()
    cores: int = 1
    gpus: int = 0
    timeout: float | None = None
    retries: int = 0
    shell: bool = False
    isolation: str = "thread"
    backend_kwargs: dict[str, Any] = attrs.Factory(dict)

    @property
    def is_function(self) -> bool:
        return self.function is not None

    @classmethod
    def from_dict(cls, task: Mapping[str, Any], uid: str) -> TaskDescription:
        """Validate a user's task dict; raise `TaskValidationError` naming `uid` and the field."""

        def bad(field: str, message: str) -> TaskValidationError:
            return TaskValidationError(message, uid=uid, field=field)

        get = task.get
        backend_kwargs = get("task_backend_specific_kwargs") or {}
        if not isinstance(backend_kwargs, Mapping):
            raise bad(
                "task_backend_specific_kwargs", f"must be a dict, got {_kind(backend_kwargs)}"
            )

        def field(name: str, default: Any) -> Any:
            value = get(name)
            if value is not None or not backend_kwargs:
                return default if value is None else value
            for alias in _ALIASES_OF[name]:
                if backend_kwargs.get(alias) is not None:
                    return backend_kwargs[alias]
            return default

        executable = get("executable")
        function = get("function")
        if executable is None and function is None:
            raise bad("executable", "a task needs either 'executable' or 'function'")
        if executable is not None and function is not None:
            raise bad("function", "give either 'executable' or 'function', not both")

        arguments: tuple[str, ...] = ()
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}
        if executable is not None:
            if isinstance(executable, os.PathLike):
                executable = os.fspath(executable)
            if not isinstance(executable, str) or not executable:
                raise bad("executable", f"must be a non-empty string, got {_kind(executable)}")
            _no_nul(executable, "executable", bad)
            arguments = _arguments(get("arguments"), bad)
        else:
            if not callable(function):
                raise bad("function", f"must be callable, got {_kind(function)}")
            raw_args = get("args")
            if raw_args is not None and not isinstance(raw_args, (list, tuple)):
                raise bad("args", f"must be a list or tuple, got {_kind(raw_args)}")
            args = tuple(raw_args or ())
            raw_kwargs = get("kwargs")
            if raw_kwargs is not None and not isinstance(raw_kwargs, Mapping):
                raise bad("kwargs", f"must be a dict, got {_kind(raw_kwargs)}")
            kwargs = dict(raw_kwargs or {})
            if any(not isinstance(k, str) for k in kwargs):
                raise bad("kwargs", "keys must be strings")

        environment = _environment(get("environment"), bad)

        working_directory = get("working_directory")
        if working_directory is not None:
            if isinstance(working_directory, os.PathLike):
                working_directory = os.fspath(working_directory)
            if not isinstance(working_directory, str) or not working_directory:
                raise bad(
                    "working_directory", f"must be a path string, got {_kind(working_directory)}"
                )
            _no_nul(working_directory, "working_directory", bad)

        dependencies = _dependencies(get("dependencies"), uid, bad)

        cores = _count(field("cores", 1), "cores", 1, bad)
        gpus = _count(field("gpus", 0), "gpus", 0, bad)
        retries = _count(get("retries") or 0, "retries", 0, bad)

        timeout = get("timeout")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise bad("timeout", f"must be a number of seconds, got {_kind(timeout)}")
            if not timeout > 0 or math.isinf(timeout):
                raise bad(
                    "timeout", f"must be a positive, finite number of seconds, got {timeout!r}"
                )
            timeout = float(timeout)

        shell = field("shell", False)
        if not isinstance(shell, bool):
            raise bad("shell", f"must be True or False, got {_kind(shell)}")
        if shell and function is not None:
            raise bad("shell", "only executable tasks can run through a shell")
        if shell and get("shell") is None and arguments:
            # AsyncFlow's `shell` option: it split a command line into executable + arguments
            # and means the words joined back as they were (its own backend does the same).
            executable = " ".join([str(executable), *arguments])
            arguments = ()

        isolation = get("isolation") or "thread"
        if isolation not in ISOLATION_MODES:
            raise bad(
                "isolation", f"must be one of {', '.join(ISOLATION_MODES)}, got {isolation!r}"
            )

        return cls(
            uid,
            executable,
            arguments,
            function,
            args,
            kwargs,
            environment,
            working_directory,
            dependencies,
            cores,
            gpus,
            timeout,
            retries,
            shell,
            isolation,
            dict(backend_kwargs),
        )


BadField = Callable[[str, str], TaskValidationError]


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:120]


def _passable(text: str) -> bool:
    """Can `text` reach a program (argv, environment) unchanged?"""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        os.fsencode(text)
    except UnicodeEncodeError:  # e.g. a lone surrogate
        return False
    return True


def _no_nul(text: str, field: str, bad: BadField) -> None:
    if not _passable(text):
        raise bad(field, "contains a NUL byte or a character the OS cannot encode")


def _arguments(raw: Any, bad: BadField) -> tuple[str, ...]:
    if not raw:
        if raw is None or isinstance(raw, (list, tuple)):
            return ()
    elif type(raw) is list and all(type(item) is str for item in raw) and _passable("".join(raw)):
        return tuple(raw)  # the common case, checked in one pass
    if not isinstance(raw, (list, tuple)):
        raise bad("arguments", f"must be a list of strings, got {_kind(raw)}")
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str):
            raise bad("arguments", f"item {i} must be a string, got {_kind(item)}")
        if not _passable(item):
            raise bad(
                "arguments", f"item {i} contains a NUL byte or a character the OS cannot encode"
            )
        out.append(item)
    return tuple(out)


def _environment(raw: Any, bad: BadField) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise bad("environment", f"must be a dict of strings, got {_kind(raw)}")
    for key, value in raw.items():
        if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
            raise bad("environment", f"variable name {key!r} is not a valid name")
        if not isinstance(value, str):
            raise bad("environment", f"value of {key!r} must be a string, got {_kind(value)}")
        if not _passable(value):
            raise bad(
                "environment", f"value of {key!r} contains a NUL byte or an unencodable character"
            )
    return dict(raw)


def _dependencies(raw: Any, uid: str, bad: BadField) -> tuple[str, ...]:
    if not raw:
        if raw is None or isinstance(raw, (list, tuple)):
            return ()
    elif type(raw) is list and all(type(d) is str and d for d in raw) and uid not in raw:
        return tuple(dict.fromkeys(raw))  # the common case, checked in one pass
    if isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple, set, frozenset)):
        raise bad("dependencies", f"must be a list of task uids, got {_kind(raw)}")
    deps = []
    for dep in raw:
        if isinstance(dep, Mapping):  # a task dict stands for its uid
            dep = dep.get("uid")
        if not isinstance(dep, str) or not dep:
            raise bad(
                "dependencies", f"each dependency must be a task uid string, got {_kind(dep)}"
            )
        if dep == uid:
            raise bad("dependencies", "a task cannot depend on itself")
        deps.append(dep)
    return tuple(dict.fromkeys(deps))


def _count(value: Any, field: str, minimum: int, bad: BadField) -> int:
    if type(value) is int and value >= minimum:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise bad(field, f"must be a whole number, got {_kind(value)}")
    if value < minimum:
        raise bad(field, f"must be >= {minimum}, got {value}")
    return int(value)
