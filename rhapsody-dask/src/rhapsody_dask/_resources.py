"""Free-form dask worker resources: what a task asks for in `task_backend_specific_kwargs
["resources"]` (rhapsody-py's spelling, e.g. ``{"MEMORY": 4e9, "foo": 1}``) and what workers
declare (``dask worker --resources``, a cluster's ``resources=``).

dask runs a task only on a worker that declares at least the amount of each resource it asks
for, and no more of them at once than that worker declares. The backend's own `cores` / `gpus`
restrictions use the same mechanism, so those two names are not free-form.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from rhapsody.errors import TaskValidationError
from rhapsody.task import TaskDescription
from rhapsody_dask._cluster import CORES, GPUS

FIELD = "task_backend_specific_kwargs"
KEY = "resources"


def requested(task: TaskDescription) -> dict[str, float]:
    """The free-form resources `task` asks for ({} when none); a `TaskValidationError` naming
    the task and the field when they are not a dict of names to positive amounts."""
    raw = task.backend_kwargs.get(KEY)
    if raw is None:
        return {}
    problem = _problem(raw, f"the task's {CORES!r} / {GPUS!r} fields")
    if problem is not None:
        raise TaskValidationError(f"{KEY!r}: {problem}", uid=task.uid, field=FIELD)
    return {name: float(amount) for name, amount in raw.items()}


def declared(given: Any, argument: str, ours: str) -> dict[str, float]:
    """The free-form resources workers are to declare, given as `argument` (e.g.
    ``cluster_kwargs['resources']``) next to `cores` / `gpus` set from `ours`; `ValueError`
    when malformed."""
    if given is None:
        return {}
    problem = _problem(given, ours)
    if problem is not None:
        raise ValueError(f"{argument}: {problem}")
    return {name: float(amount) for name, amount in given.items()}


def fits(wanted: Mapping[str, float], offered: Mapping[str, float]) -> bool:
    """Whether a worker declaring `offered` can ever run a task asking for `wanted`."""
    return all(offered.get(name, 0) >= amount for name, amount in wanted.items())


def shown(resources: Mapping[str, float]) -> str:
    """`resources` as a user writes them: ``{'MEMORY': 4000000000, 'foo': 1}``."""
    return repr({name: int(a) if float(a).is_integer() else a for name, a in resources.items()})


def offered_by(workers: Iterable[Mapping[str, float]]) -> str:
    """The free-form resources each distinct kind of worker declares, for an error message."""
    kinds = sorted({shown(free(w)) for w in workers} - {"{}"})
    return "; ".join(kinds) or "none besides cores and GPUs"


def free(resources: Mapping[str, float]) -> dict[str, float]:
    """`resources` without the backend's own `cores` / `gpus`."""
    return {name: amount for name, amount in resources.items() if name not in (CORES, GPUS)}


def _problem(raw: Any, ours: str) -> str | None:
    example = "e.g. {'MEMORY': 4e9, 'foo': 1}"
    if not isinstance(raw, Mapping):
        return f"must be a dict of dask worker resource names to amounts ({example}), got {raw!r}"
    for name, amount in raw.items():
        if not isinstance(name, str) or not name:
            return f"resource names must be non-empty strings ({example}), got {name!r}"
        if name in (CORES, GPUS):
            return f"{name!r} is the dask backend's own resource, set from {ours}"
        if (
            isinstance(amount, bool)
            or not isinstance(amount, (int, float))
            or not math.isfinite(amount)
            or amount <= 0
        ):
            return f"the amount of {name!r} must be a positive number, got {amount!r}"
    return None
