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
from rhapsody.inference.request import AIRequest, is_ai_task, parse_ai
from rhapsody.services.spec import PORT_PLACEHOLDER, ServiceSpec, parse_service

ISOLATION_MODES = ("thread", "process")
#: The task dict keys that say what a task computes and needs: what `from_dict` reads, less
#: `uid` and `secret_environment` (a secret's value is never stored, not even hashed).
DESCRIPTION_FIELDS = (
    "executable",
    "arguments",
    "function",
    "args",
    "kwargs",
    "environment",
    "working_directory",
    "dependencies",
    "cores",
    "gpus",
    "timeout",
    "retries",
    "shell",
    "isolation",
    "task_backend_specific_kwargs",
    "service",
    "ranks",
    "cores_per_rank",
    "gpus_per_rank",
    # AI tasks (rhapsody.inference.request.FIELDS; `service` is listed above)
    "prompt",
    "messages",
    "model",
    "system_prompt",
    "api",
    "endpoint",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
)
#: what stands for a secret's value wherever a secret could be shown (reprs, errors)
MASK = "***"
# Keys of `task_backend_specific_kwargs` that AsyncFlow uses for fields we have at top level.
_ALIASES_OF = {"shell": ("shell",), "cores": ("cpus", "cores"), "gpus": ("gpus",)}


def _mask(secrets: dict[str, str] | None) -> str:
    return "None" if secrets is None else repr(dict.fromkeys(secrets, MASK))


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
    # What the task holds in all: `ranks` x `cores_per_rank` (x `gpus_per_rank`).
    cores: int = 1
    gpus: int = 0
    timeout: float | None = None
    retries: int = 0
    shell: bool = False
    isolation: str = "thread"
    backend_kwargs: dict[str, Any] = attrs.Factory(dict)
    # Given to the task's process like `environment`, never shown: masked in the repr (which
    # dask and loggers may print); validation errors name the variable, not its value.
    secret_environment: dict[str, str] | None = attrs.field(default=None, repr=_mask)
    #: set for a service task (a long-running task its dependents use while it runs)
    service: ServiceSpec | None = None
    #: processes of an MPI program, started by the backend's MPI launcher when > 1
    ranks: int = 1
    cores_per_rank: int = 1
    gpus_per_rank: int = 0
    #: set for an AI task (run by an inference backend)
    ai: AIRequest | None = None

    @property
    def is_function(self) -> bool:
        return self.function is not None

    @classmethod
    def from_dict(cls, task: Mapping[str, Any], uid: str) -> TaskDescription:
        """Validate a user's task dict; raise `TaskValidationError` naming `uid` and the field."""
        # Hot path (every task of every submission): plain `get`s and type tests, no closures.
        get = task.get
        backend_kwargs = get("task_backend_specific_kwargs")
        if backend_kwargs:
            if not isinstance(backend_kwargs, Mapping):
                raise _bad(
                    uid,
                    "task_backend_specific_kwargs",
                    f"must be a dict, got {_kind(backend_kwargs)}",
                )
            backend_kwargs = dict(backend_kwargs)
        else:
            backend_kwargs = {}

        executable = get("executable")
        function = get("function")
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}
        if executable is not None:
            if function is not None:
                raise _bad(uid, "function", "give either 'executable' or 'function', not both")
            if type(executable) is not str or not executable or not _passable(executable):
                executable = _path(executable, uid, "executable")
            arguments = _arguments(get("arguments"), uid)
        elif function is not None:
            if not callable(function):
                raise _bad(uid, "function", f"must be callable, got {_kind(function)}")
            arguments = ()
            raw_args = get("args")
            if raw_args is not None:
                if not isinstance(raw_args, (list, tuple)):
                    raise _bad(uid, "args", f"must be a list or tuple, got {_kind(raw_args)}")
                args = tuple(raw_args)
            raw_kwargs = get("kwargs")
            if raw_kwargs is not None:
                if not isinstance(raw_kwargs, Mapping):
                    raise _bad(uid, "kwargs", f"must be a dict, got {_kind(raw_kwargs)}")
                kwargs = dict(raw_kwargs)
                if any(not isinstance(k, str) for k in kwargs):
                    raise _bad(uid, "kwargs", "keys must be strings")
        elif is_ai_task(task):
            return _ai_task(task, uid, backend_kwargs)
        else:
            raise _bad(uid, "executable", "a task needs either 'executable' or 'function'")

        environment = get("environment")
        if environment is not None:
            environment = _environment(environment, uid)
        working_directory = get("working_directory")
        if working_directory is not None:
            working_directory = _path(working_directory, uid)
        if backend_kwargs and ("env" in backend_kwargs or "cwd" in backend_kwargs):
            environment, working_directory = _env_cwd_of(
                backend_kwargs, environment, working_directory, uid
            )
        secret_environment = get("secret_environment")
        if secret_environment is not None:
            secret_environment = _secret_environment(secret_environment, environment, uid)
        dependencies = get("dependencies")
        dependencies = () if dependencies is None else _dependencies(dependencies, uid)

        cores = get("cores")
        gpus = get("gpus")
        shell = get("shell")
        if backend_kwargs:  # AsyncFlow passes these under its own names
            if cores is None:
                cores = _alias(backend_kwargs, "cores")
            if gpus is None:
                gpus = _alias(backend_kwargs, "gpus")
            if shell is None:
                shell = _alias(backend_kwargs, "shell")
                if shell and arguments:
                    # AsyncFlow's `shell` option: it split a command line into executable +
                    # arguments and means the words joined back as they were (its own
                    # backend does the same).
                    executable = " ".join([str(executable), *arguments])
                    arguments = ()
        cores = 1 if cores is None else _count(cores, "cores", 1, uid)
        gpus = 0 if gpus is None else _count(gpus, "gpus", 0, uid)
        ranks = get("ranks")
        cores_per_rank = get("cores_per_rank")
        gpus_per_rank = get("gpus_per_rank")
        if ranks is not None or cores_per_rank is not None or gpus_per_rank is not None:
            ranks, cores, gpus = _placement(
                task, uid, ranks, cores_per_rank, gpus_per_rank, cores, gpus, function
            )
            cores_per_rank, gpus_per_rank = cores // ranks, gpus // ranks
        else:
            ranks, cores_per_rank, gpus_per_rank = 1, cores, gpus
        retries = get("retries")
        retries = _count(retries, "retries", 0, uid) if retries else 0

        timeout = get("timeout")
        if timeout is not None:
            timeout = _timeout(timeout, uid)

        if shell is None:
            shell = False
        elif type(shell) is not bool:
            raise _bad(uid, "shell", f"must be True or False, got {_kind(shell)}")
        elif shell and function is not None:
            raise _bad(uid, "shell", "only executable tasks can run through a shell")

        isolation = get("isolation") or "thread"
        if isolation not in ISOLATION_MODES:
            raise _bad(
                uid,
                "isolation",
                f"must be one of {', '.join(ISOLATION_MODES)}, got {isolation!r}",
            )

        service = get("service")
        if service is None and get("is_service") is True:  # AsyncFlow's spelling of the default
            service = True
        if service is not None:
            service = _service(service, uid, executable, arguments, environment, retries)
            auth = service.auth if service is not None else None
            if auth is not None and auth not in (secret_environment or {}):
                raise _bad(
                    uid, "service", f"'auth' names {auth!r}, which is not in 'secret_environment'"
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
            backend_kwargs,
            secret_environment,
            service,
            ranks=ranks,
            cores_per_rank=cores_per_rank,
            gpus_per_rank=gpus_per_rank,
        )


def dependency_uids(task: Mapping[str, Any]) -> list[str]:
    """The uids `task` depends on (a task dict in the list stands for its uid), read leniently
    from a raw task dict: what is not a uid is skipped (validation reports it). An AI task
    also depends on the services it names, as `from_dict` makes it."""
    uids = []
    for dep in task.get("dependencies") or ():
        uid = dep.get("uid") if isinstance(dep, Mapping) else dep
        if isinstance(uid, str):
            uids.append(uid)
    if is_ai_task(task):
        service = task.get("service")
        named = [service] if isinstance(service, str) else service
        if isinstance(named, (list, tuple)):
            uids += [s for s in named if isinstance(s, str) and s not in uids]
    return uids


def _ai_task(
    task: Mapping[str, Any], uid: str, backend_kwargs: dict[str, Any]
) -> TaskDescription:
    """An AI task: what it asks, and the common fields that mean something for a request."""
    ai = parse_ai(task, uid)
    for field in ("arguments", "args", "kwargs", "shell", "cores", "gpus", "ranks"):
        if task.get(field) is not None:
            raise _bad(uid, field, "an AI task sends a request to a server; it runs no program")
    raw = task.get("dependencies")
    dependencies = () if raw is None else _dependencies(raw, uid)
    dependencies += tuple(s for s in ai.services if s not in dependencies)  # wait until ready
    timeout = task.get("timeout")
    retries = task.get("retries")
    secrets = task.get("secret_environment")
    return TaskDescription(
        uid,
        dependencies=dependencies,
        cores=0,
        timeout=None if timeout is None else _timeout(timeout, uid),
        retries=_count(retries, "retries", 0, uid) if retries else 0,
        backend_kwargs=backend_kwargs,
        secret_environment=None if secrets is None else _secret_environment(secrets, None, uid),
        cores_per_rank=0,
        ai=ai,
    )


def _service(
    raw: Any,
    uid: str,
    executable: str | None,
    arguments: tuple[str, ...],
    environment: dict[str, str] | None,
    retries: int,
) -> ServiceSpec | None:
    spec = parse_service(raw, uid)
    if spec is None:
        return None
    if retries:
        raise _bad(uid, "retries", "a service restarts after a crash with service 'restarts'")
    if spec.needs_port and spec.port is None and executable is not None:
        texts = [*arguments, *(environment or {}).values()]
        if not any(PORT_PLACEHOLDER in text for text in texts):
            raise _bad(
                uid,
                "service",
                f"a {spec.probe} probe needs '{PORT_PLACEHOLDER}' in the arguments or "
                "environment (replaced by a free port), or a fixed 'port'",
            )
    return spec


def _placement(
    task: Mapping[str, Any],
    uid: str,
    ranks: Any,
    cores_per_rank: Any,
    gpus_per_rank: Any,
    cores: int,
    gpus: int,
    function: Any,
) -> tuple[int, int, int]:
    """(ranks, cores and GPUs held in all) of a task that gives `ranks` or a per-rank need.
    `cores` / `gpus` are what a single-rank task needs; a task of several ranks says it per rank.
    """
    ranks = 1 if ranks is None else _count(ranks, "ranks", 1, uid)
    if ranks > 1 and function is not None:
        raise _bad(
            uid,
            "ranks",
            f"a function task runs as one process; an MPI program of {ranks} ranks is an "
            "'executable'",
        )
    per_rank = {"cores": cores, "gpus": gpus}
    for field, value, minimum in (
        ("cores", cores_per_rank, 1),
        ("gpus", gpus_per_rank, 0),
    ):
        given = task.get(field) is not None
        if value is None:
            if given and ranks > 1:
                raise _bad(
                    uid,
                    field,
                    f"'{field}' is what a single-rank task needs; give '{field}_per_rank' for a "
                    f"task of {ranks} ranks",
                )
            continue
        value = _count(value, f"{field}_per_rank", minimum, uid)
        if given and per_rank[field] != value:
            raise _bad(
                uid,
                f"{field}_per_rank",
                f"is {value} but '{field}' is {per_rank[field]}; give one of them",
            )
        per_rank[field] = value
    return ranks, ranks * per_rank["cores"], ranks * per_rank["gpus"]


def _env_cwd_of(
    backend_kwargs: Mapping[str, Any],
    environment: dict[str, str] | None,
    working_directory: str | None,
    uid: str,
) -> tuple[dict[str, str] | None, str | None]:
    """The original's `task_backend_specific_kwargs` `env` / `cwd`, honoured on every backend
    as `environment` / `working_directory`; the top-level fields win where both are given."""
    field = "task_backend_specific_kwargs"
    env = backend_kwargs.get("env")
    if env is not None:
        try:
            env = _environment(env, uid)
        except TaskValidationError as exc:
            raise _bad(uid, field, f"'env': {exc}") from None
        environment = {**env, **(environment or {})}
    cwd = backend_kwargs.get("cwd")
    if cwd is not None and working_directory is None:
        try:
            working_directory = _path(cwd, uid, field)
        except TaskValidationError as exc:
            raise _bad(uid, field, f"'cwd': {exc}") from None
    return environment, working_directory


def _bad(uid: str, field: str, message: str) -> TaskValidationError:
    return TaskValidationError(message, uid=uid, field=field)


def _alias(backend_kwargs: Mapping[str, Any], name: str) -> Any:
    for alias in _ALIASES_OF[name]:
        value = backend_kwargs.get(alias)
        if value is not None:
            return value
    return None


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


def _path(raw: Any, uid: str, field: str = "working_directory") -> str:
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    if not isinstance(raw, str) or not raw:
        raise _bad(uid, field, f"must be a non-empty path string, got {_kind(raw)}")
    if not _passable(raw):
        raise _bad(uid, field, "contains a NUL byte or a character the OS cannot encode")
    return raw


def _arguments(raw: Any, uid: str) -> tuple[str, ...]:
    if not raw:
        if raw is None or isinstance(raw, (list, tuple)):
            return ()
    elif type(raw) is list:  # the common case, checked in one pass
        for item in raw:
            if type(item) is not str:
                break
        else:
            if _passable("".join(raw)):
                return tuple(raw)
    if not isinstance(raw, (list, tuple)):
        raise _bad(uid, "arguments", f"must be a list of strings, got {_kind(raw)}")
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str):
            raise _bad(uid, "arguments", f"item {i} must be a string, got {_kind(item)}")
        if not _passable(item):
            raise _bad(
                uid,
                "arguments",
                f"item {i} contains a NUL byte or a character the OS cannot encode",
            )
        out.append(item)
    return tuple(out)


def _environment(raw: Any, uid: str) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise _bad(uid, "environment", f"must be a dict of strings, got {_kind(raw)}")
    for key, value in raw.items():
        if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
            raise _bad(uid, "environment", f"variable name {key!r} is not a valid name")
        if not isinstance(value, str):
            raise _bad(uid, "environment", f"value of {key!r} must be a string, got {_kind(value)}")
        if not _passable(value):
            raise _bad(
                uid,
                "environment",
                f"value of {key!r} contains a NUL byte or an unencodable character",
            )
    return dict(raw)


def _secret_environment(raw: Any, environment: dict[str, str] | None, uid: str) -> dict[str, str]:
    """As `_environment`, but no message shows a value (nor the dict: it holds them)."""
    field = "secret_environment"
    if not isinstance(raw, Mapping):
        raise _bad(uid, field, f"must be a dict of strings, got {type(raw).__name__}")
    for key, value in raw.items():
        if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
            raise _bad(uid, field, f"variable name {key!r} is not a valid name")
        if not isinstance(value, str):
            raise _bad(uid, field, f"value of {key!r} must be a string, got {type(value).__name__}")
        if not _passable(value):
            raise _bad(
                uid, field, f"value of {key!r} contains a NUL byte or an unencodable character"
            )
        if environment is not None and key in environment:
            # Which one would win is a guess the user should not have to make.
            raise _bad(uid, field, f"{key!r} is also set in 'environment'")
    return dict(raw)


def _dependencies(raw: Any, uid: str) -> tuple[str, ...]:
    if type(raw) is list and uid not in raw:  # the common case, checked in one pass
        for dep in raw:
            if type(dep) is not str or not dep:
                break
        else:
            return tuple(dict.fromkeys(raw)) if len(raw) > 1 else tuple(raw)
    if isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple, set, frozenset)):
        raise _bad(uid, "dependencies", f"must be a list of task uids, got {_kind(raw)}")
    deps = []
    for dep in raw:
        if isinstance(dep, Mapping):  # a task dict stands for its uid
            dep = dep.get("uid")
        if not isinstance(dep, str) or not dep:
            raise _bad(
                uid,
                "dependencies",
                f"each dependency must be a task uid string, got {_kind(dep)}",
            )
        if dep == uid:
            raise _bad(uid, "dependencies", "a task cannot depend on itself")
        deps.append(dep)
    return tuple(dict.fromkeys(deps))


def _count(value: Any, field: str, minimum: int, uid: str) -> int:
    if type(value) is int and value >= minimum:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise _bad(uid, field, f"must be a whole number, got {_kind(value)}")
    if value < minimum:
        raise _bad(uid, field, f"must be >= {minimum}, got {value}")
    return int(value)


def _timeout(value: Any, uid: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(uid, "timeout", f"must be a number of seconds, got {_kind(value)}")
    if not value > 0 or math.isinf(value):
        raise _bad(uid, "timeout", f"must be a positive, finite number of seconds, got {value!r}")
    return float(value)
