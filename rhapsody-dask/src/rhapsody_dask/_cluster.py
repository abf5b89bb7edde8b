"""The embedded cluster: a `distributed.LocalCluster` on 127.0.0.1 that the backend owns."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import attrs
from distributed import LocalCluster
from distributed.deploy.utils import nprocesses_nthreads

from rhapsody.backends.execution._orphans import Watchdog
from rhapsody.resources import detect_cores, detect_gpus
from rhapsody_dask import _orphans

# The resource names workers declare and tasks' `cores` / `gpus` are restricted by.
CORES = "cores"
GPUS = "gpus"


@attrs.frozen
class ClusterShape:
    """How many worker processes, and what each one declares."""

    n_workers: int
    threads_per_worker: int
    gpus_per_worker: int

    @classmethod
    def for_node(
        cls,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        gpus_per_worker: int | None = None,
    ) -> ClusterShape:
        """Fill what is not given from this node: its usable cores (dask's own split into
        processes x threads) and its GPUs shared evenly between the workers."""
        for name, value, minimum in (
            ("n_workers", n_workers, 1),
            ("threads_per_worker", threads_per_worker, 1),
            ("gpus_per_worker", gpus_per_worker, 0),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < minimum
            ):
                raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
        cores = detect_cores()
        if n_workers is None and threads_per_worker is None:
            n_workers, threads_per_worker = nprocesses_nthreads(cores)  # type: ignore[no-untyped-call]
        elif n_workers is None:
            assert threads_per_worker is not None
            n_workers = max(1, cores // threads_per_worker)
        elif threads_per_worker is None:
            threads_per_worker = max(1, cores // n_workers)
        assert n_workers is not None and threads_per_worker is not None
        if gpus_per_worker is None:
            gpus_per_worker = len(detect_gpus()) // n_workers
        return cls(n_workers, threads_per_worker, gpus_per_worker)

    @property
    def resources(self) -> dict[str, float]:
        declared = {CORES: float(self.threads_per_worker)}
        if self.gpus_per_worker:
            declared[GPUS] = float(self.gpus_per_worker)
        return declared


class EmbeddedCluster:
    """A LocalCluster with its own scratch directory; closing it leaves no task process, and
    neither does this process dying without closing it (the workers die with it, and a
    watchdog then kills the task processes they recorded and removes the scratch directory)."""

    def __init__(self, cluster: LocalCluster, scratch: str, watchdog: Watchdog) -> None:
        self.cluster = cluster
        self._scratch = scratch
        self._watchdog = watchdog
        self.children_dir = _children_dir(scratch)

    @classmethod
    async def start(cls, shape: ClusterShape, extra: Mapping[str, Any]) -> EmbeddedCluster:
        # Clusters sharing dask's default scratch space remove each other's files: own one.
        scratch = tempfile.mkdtemp(prefix="rhapsody-dask-")
        os.mkdir(_children_dir(scratch))
        watchdog = Watchdog()
        watchdog.on_death("rhapsody_dask._orphans:kill_recorded", _children_dir(scratch))
        watchdog.on_death("shutil:rmtree", scratch)
        options: dict[str, Any] = {
            "n_workers": shape.n_workers,
            "threads_per_worker": shape.threads_per_worker,
            "resources": shape.resources,
            "processes": True,  # a task that crashes its worker does not take the caller down
            "host": "127.0.0.1",  # loopback only: the embedded cluster is not a network service
            "dashboard_address": "127.0.0.1:0",
            "local_directory": scratch,
            "silence_logs": logging.ERROR,
            **extra,
        }
        try:
            cluster = await LocalCluster(asynchronous=True, **options)  # type: ignore[no-untyped-call]
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            watchdog.close()
            raise
        return cls(cluster, scratch, watchdog)

    async def close(self) -> None:
        """Close the cluster and remove its scratch space. Idempotent."""
        try:
            closing = self.cluster.close()
            if closing is not None:  # always, for an asynchronous cluster
                await closing
        finally:
            # Children of workers that were killed outright are still running: stop them too.
            _orphans.kill_recorded(self.children_dir)
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._watchdog.close()


def _children_dir(scratch: str) -> str:
    return os.path.join(scratch, "children")  # see _orphans
