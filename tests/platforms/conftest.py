"""Fixtures shared by the platform tests: a batch-system-free environment and a swappable
plugin manager."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from rhapsody.plugins import PluginManager, set_plugin_manager

_BATCH_PREFIXES = ("SLURM_", "PBS_", "LSB_", "FLUX_")


@pytest.fixture
def batch_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No batch system in the environment, and no GPUs (so no nvidia-smi call): tests set
    exactly the variables they are about."""
    for name in list(os.environ):
        if name.startswith(_BATCH_PREFIXES) or name in ("NCPUS", "COLUMNS"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    return monkeypatch


@pytest.fixture
def use_plugin_manager() -> Iterator[Callable[[PluginManager], None]]:
    """Install a plugin manager for one test; the process-wide one comes back afterwards."""
    previous: list[PluginManager | None] = []

    def install(manager: PluginManager) -> None:
        old = set_plugin_manager(manager)
        if not previous:
            previous.append(old)

    yield install
    if previous:
        set_plugin_manager(previous[0])
