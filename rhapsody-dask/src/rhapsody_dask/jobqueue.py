"""A dask-jobqueue cluster for an HPC platform of the catalog.

Install with ``pip install 'rhapsody-dask[jobqueue]'``, then::

    from rhapsody.platforms import frontera
    from rhapsody_dask.jobqueue import cluster_for

    cluster = cluster_for(frontera, account="ABC123", walltime="02:00:00")
    cluster.scale(jobs=4)
    backend = await rhapsody.get_backend("dask", cluster=cluster)

The platform supplies the batch system (SLURM, PBS or LSF), partition, account, cores, memory,
extra directives and environment set-up lines; the workers declare ``cores`` and ``gpus``
resources so that tasks' ``cores``/``gpus`` requests are honoured, and any free-form resources
given as ``worker_resources`` (what tasks ask for in ``task_backend_specific_kwargs
["resources"]``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from rhapsody.platforms import PlatformDescription
from rhapsody_dask import _resources
from rhapsody_dask._cluster import CORES, GPUS


def cluster_kwargs(
    platform: PlatformDescription,
    *,
    worker_resources: Mapping[str, float] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The platform's dask-jobqueue keyword arguments, `overrides` applied, plus the worker
    resources that match one worker's share of a node and the free-form `worker_resources`
    each worker declares besides (e.g. ``{"MEMORY": 64e9}``)."""
    free = _resources.declared(worker_resources, "worker_resources", "the platform's cores/GPUs")
    kwargs = {**platform.dask_jobqueue_kwargs(), **overrides}
    processes = kwargs.get("processes") or 1
    cores, gpus = max(1, kwargs["cores"] // processes), platform.gpus_per_node // processes
    declared = f"{CORES}={cores}" + (f",{GPUS}={gpus}" if gpus else "")
    for name, amount in free.items():  # the worker CLI reads name=amount pairs
        declared += f",{name}={int(amount) if amount.is_integer() else amount!r}"
    kwargs["worker_extra_args"] = [*kwargs.get("worker_extra_args", ()), "--resources", declared]
    return kwargs


def cluster_for(
    platform: PlatformDescription,
    *,
    worker_resources: Mapping[str, float] | None = None,
    **overrides: Any,
) -> Any:
    """A dask-jobqueue cluster (SLURMCluster, PBSCluster or LSFCluster, from the platform's
    resource manager) that submits worker jobs to `platform`. It starts no job until scaled;
    its scheduler runs here. Keyword arguments override the platform's (``walltime``,
    ``processes``, ``scheduler_options``, ...). For GPU nodes, pass
    ``processes=platform.gpus_per_node`` so that each worker declares one GPU. Each worker
    also declares `worker_resources`, free-form dask resources (``{"MEMORY": 64e9}``)."""
    class_name = platform.jobqueue_cluster_class_name()
    try:
        module = importlib.import_module("dask_jobqueue")
    except ImportError as exc:
        raise ImportError(
            f"{class_name} needs dask-jobqueue: pip install 'rhapsody-dask[jobqueue]'"
        ) from exc
    kwargs = cluster_kwargs(platform, worker_resources=worker_resources, **overrides)
    return getattr(module, class_name)(**kwargs)
