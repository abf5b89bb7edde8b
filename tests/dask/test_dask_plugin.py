"""Discovery, registration and configuration of the dask backend (no cluster is started)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

pytest.importorskip("distributed", reason="the dask backend needs dask.distributed")

import rhapsody
from rhapsody.plugins import PluginManager, set_plugin_manager
from rhapsody.states import (
    CANCELED,
    DONE,
    EXECUTING,
    EXECUTING_PENDING,
    FAILED,
    SCHEDULING_PENDING,
    StateMapper,
)
from rhapsody_dask._cluster import ClusterShape
from rhapsody_dask.backend import DaskExecutionBackend


@pytest.fixture
def fresh_plugins() -> Iterator[None]:
    previous = set_plugin_manager(None)
    yield
    set_plugin_manager(previous)


def test_installed_backend_is_discovered(fresh_plugins: None) -> None:
    assert rhapsody.discover_backends()["dask"] is True
    backend = rhapsody.get_backend("dask", n_workers=1, threads_per_worker=1)
    assert isinstance(backend, DaskExecutionBackend)
    assert backend.state() == "INITIALIZED"  # nothing started until awaited


def test_without_the_plugin_dask_is_listed_unavailable(fresh_plugins: None) -> None:
    # What uninstalling the distribution amounts to: its entry point is no longer loaded.
    set_plugin_manager(PluginManager(disabled={"dask"}))
    assert rhapsody.discover_backends()["dask"] is False
    with pytest.raises(rhapsody.BackendError, match="pip install rhapsody-dask"):
        rhapsody.get_backend("dask")


def test_discovery_does_not_import_dask() -> None:
    code = (
        "import sys, rhapsody\n"
        "assert rhapsody.discover_backends()['dask'] is True\n"
        "from rhapsody.states import StateMapper\n"
        "StateMapper(backend='dask')\n"
        "loaded = [m for m in ('dask', 'distributed') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_native_states_are_registered(fresh_plugins: None) -> None:
    mapper = StateMapper(backend="dask")
    expected = {
        "released": EXECUTING_PENDING,
        "waiting": SCHEDULING_PENDING,
        "no-worker": EXECUTING_PENDING,
        "queued": EXECUTING_PENDING,
        "processing": EXECUTING_PENDING,  # assigned to a worker, not yet running there
        "executing": EXECUTING,
        "memory": DONE,
        "erred": FAILED,
        "cancelled": CANCELED,
        "lost": FAILED,
        "forgotten": CANCELED,
    }
    assert {state: mapper.to_main_state(state) for state in expected} == expected
    assert DaskExecutionBackend(n_workers=1).get_task_states_map().to_main_state("memory") == DONE


def test_cluster_shape_defaults_and_declared_resources() -> None:
    shape = ClusterShape.for_node(n_workers=2, threads_per_worker=3, gpus_per_worker=1)
    assert shape.resources == {"cores": 3.0, "gpus": 1.0}
    assert "gpus" not in ClusterShape.for_node(n_workers=1, gpus_per_worker=0).resources
    node = ClusterShape.for_node()
    assert node.n_workers >= 1 and node.threads_per_worker >= 1
    with pytest.raises(ValueError, match="n_workers"):
        ClusterShape.for_node(n_workers=0)


def test_options_that_cannot_apply_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        DaskExecutionBackend("tcp://127.0.0.1:8786", cluster=object())
    with pytest.raises(ValueError, match="embedded cluster"):
        DaskExecutionBackend("tcp://127.0.0.1:8786", n_workers=2)
    with pytest.raises(ValueError, match="max_output"):
        DaskExecutionBackend(n_workers=1, max_output=0)
