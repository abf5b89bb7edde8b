"""Plugin discovery and loading, each test with a fresh plugin manager."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import rhapsody
from rhapsody import plugins
from rhapsody.errors import BackendError
from rhapsody.plugins import PluginConflictError, PluginManager


@pytest.fixture
def fresh_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(plugins.DISABLED_ENV, raising=False)
    previous = plugins.set_plugin_manager(None)
    yield
    plugins.set_plugin_manager(previous)


def make_distribution(root: Path, dist: str, plugin_module: str, body: str, ep_name: str) -> None:
    """A fake installed distribution: a module plus a dist-info with entry_points.txt."""
    (root / f"{plugin_module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[rhapsody.backends]\n{ep_name} = {plugin_module}\n")


THIRD_PARTY = """
from rhapsody.hookspecs import hookimpl
from rhapsody.backends.execution.noop import NoopExecutionBackend

class Shiny(NoopExecutionBackend):
    backend_name = "shiny"

@hookimpl
def rhapsody_register_backends(registry):
    registry.add("shiny", "{module}:Shiny")

@hookimpl
def rhapsody_register_state_mappers(registry):
    registry.add("shiny", {{"queued": "SCHEDULING_PENDING", "ran": "DONE"}})
"""


def test_builtin_backends_and_official_names(fresh_manager: None) -> None:
    found = rhapsody.discover_backends()
    assert found["concurrent"] is True and found["noop"] is True
    assert "dask" in found and "radical_pilot" in found


def test_third_party_distribution_is_discovered(
    fresh_manager: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(
        tmp_path,
        "shiny-backend",
        "shiny_plugin",
        THIRD_PARTY.format(module="shiny_plugin"),
        "shiny",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert rhapsody.discover_backends()["shiny"] is True
    backend = rhapsody.get_backend("shiny")
    assert type(backend).__name__ == "Shiny"
    mapper = rhapsody.StateMapper(backend="shiny")
    assert mapper.to_main_state("ran") == "DONE"
    info = {p["name"]: p for p in plugins.get_plugin_manager().plugins_info()}
    assert info["shiny"]["distribution"] == "shiny-backend"
    assert info["shiny"]["version"] == "1.2.3"
    assert info["shiny"]["backends"] == ["shiny"]


def test_broken_plugin_is_reported_and_hides_nothing(
    fresh_manager: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(
        tmp_path, "broken-dist", "broken_plugin", "raise ImportError('kaput')\n", "broken"
    )
    make_distribution(
        tmp_path,
        "shiny-backend",
        "shiny_plugin",
        THIRD_PARTY.format(module="shiny_plugin"),
        "shiny",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(RuntimeWarning, match="'broken' from broken-dist is broken: .*kaput"):
        found = rhapsody.discover_backends()
    assert found["shiny"] and found["concurrent"]
    failures = plugins.get_plugin_manager().failures
    assert [f.plugin for f in failures] == ["broken"]


def test_duplicate_names_name_both_distributions(
    fresh_manager: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(
        tmp_path,
        "shiny-backend",
        "shiny_plugin",
        THIRD_PARTY.format(module="shiny_plugin"),
        "shiny",
    )
    make_distribution(
        tmp_path,
        "copycat",
        "copycat_plugin",
        THIRD_PARTY.format(module="copycat_plugin"),
        "copycat",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(RuntimeWarning):
        found = rhapsody.discover_backends()
    assert found["shiny"] is False
    with pytest.raises(PluginConflictError, match=r"shiny-backend.*copycat|copycat.*shiny-backend"):
        rhapsody.get_backend("shiny")


def test_disabled_plugins_are_blocked(
    fresh_manager: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(
        tmp_path,
        "shiny-backend",
        "shiny_plugin",
        THIRD_PARTY.format(module="shiny_plugin"),
        "shiny",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.DISABLED_ENV, "shiny, noop")
    found = rhapsody.discover_backends()
    assert "shiny" not in found and "noop" not in found and found["concurrent"]


def test_unknown_and_uninstalled_backends_explain_themselves(fresh_manager: None) -> None:
    plugins.set_plugin_manager(PluginManager(load_entry_points=False))
    with pytest.raises(BackendError, match="pip install rhapsody-dask"):
        rhapsody.get_backend("dask")
    with pytest.raises(BackendError, match=r"unknown backend 'nope'; known backends: .*concurrent"):
        rhapsody.get_backend("nope")


def test_missing_engine_module_makes_a_backend_unavailable(fresh_manager: None) -> None:
    manager = PluginManager(load_entry_points=False)

    class Plugin:
        @rhapsody.hookspecs.hookimpl  # type: ignore[misc]
        def rhapsody_register_backends(self, registry: plugins.BackendRegistry) -> None:
            registry.add("ghost", "ghost_engine_xyz.backend:Ghost")

    manager.register(Plugin(), "ghost", "ghost-dist")
    plugins.set_plugin_manager(manager)
    assert rhapsody.discover_backends()["ghost"] is False
    with pytest.raises(BackendError, match=r"missing module.*ghost_engine_xyz.*ghost-dist"):
        rhapsody.get_backend("ghost")


def test_loading_is_idempotent(fresh_manager: None) -> None:
    manager = plugins.get_plugin_manager()
    manager.load()
    manager.load()
    assert manager.backends.names().count("concurrent") == 1


def test_importing_and_discovering_loads_no_engine() -> None:
    code = (
        "import sys, rhapsody; rhapsody.discover_backends(); "
        "heavy = [m for m in ('dask', 'distributed', 'radical.pilot', 'rhapsody_dask.backend', "
        "'rhapsody_radical.backend', 'httpx', 'opentelemetry', 'rhapsody.inference.backend') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_get_backend_is_usable_with_and_without_await() -> None:
    import asyncio

    backend = rhapsody.get_backend("noop")
    assert backend.state() == "INITIALIZED"

    async def go() -> None:
        started = await rhapsody.get_backend("noop")
        assert started.state() == "RUNNING"
        await started.shutdown()
        assert started.state() == "SHUTDOWN"

    asyncio.run(go())
