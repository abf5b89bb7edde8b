"""`rhapsody run --platform NAME`: the catalog's platform goes to backends that take one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rhapsody import plugins
from rhapsody.backends.execution.noop import NoopExecutionBackend
from rhapsody.cli import main
from rhapsody.hookspecs import hookimpl
from rhapsody.platforms import PlatformDescription

TESTBOX = PlatformDescription(resource_manager="slurm", name="testbox", cores_per_node=8)


class Placed(NoopExecutionBackend):
    """A backend that, like radical_pilot, is told which platform to run on."""

    backend_name = "placed"
    given: list[PlatformDescription | None] = []

    def __init__(self, platform: PlatformDescription | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        Placed.given.append(platform)


class Plugin:
    @hookimpl  # type: ignore[misc]
    def rhapsody_register_backends(self, registry: plugins.BackendRegistry) -> None:
        registry.add("placed", Placed)

    @hookimpl  # type: ignore[misc]
    def rhapsody_register_platforms(self, registry: plugins.PlatformRegistry) -> None:
        registry.add("testbox", TESTBOX)


@pytest.fixture
def flow(tmp_path: Path) -> Iterator[Path]:
    manager = plugins.PluginManager(load_entry_points=False)
    manager.register(Plugin(), "placed", "placed-dist")
    previous = plugins.set_plugin_manager(manager)
    Placed.given.clear()
    path = tmp_path / "flow.json"
    path.write_text(json.dumps({"tasks": [{"uid": "t", "executable": "/bin/true"}]}))
    yield path
    plugins.set_plugin_manager(previous)


def test_platform_is_given_to_a_backend_that_takes_one(flow: Path) -> None:
    assert (
        main(["run", str(flow), "--no-progress", "--backend", "placed", "--platform", "testbox"])
        == 0
    )
    assert Placed.given == [TESTBOX]


def test_backend_without_platform_parameter_is_an_error(
    flow: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", str(flow), "--no-progress", "--backend", "noop", "--platform", "testbox"])
    assert code == 2
    assert "backend 'noop' does not take a platform" in capsys.readouterr().out


def test_unknown_platform_is_named(flow: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(flow), "--no-progress", "--backend", "placed", "--platform", "nope"])
    assert code == 2
    assert "platform 'nope' is not available" in capsys.readouterr().out
    assert Placed.given == []


YAML_FLOW = """\
workflow:
  backend: placed
  backend_options:
    platform: from-the-file
tasks:
  - uid: t
    executable: /bin/true
"""


def test_yaml_backend_options_reach_the_backend(flow: Path) -> None:
    pytest.importorskip("yaml", reason="YAML workflows need PyYAML (dask depends on it)")
    path = flow.with_name("flow.yaml")
    path.write_text(YAML_FLOW)
    assert main(["run", str(path), "--no-progress"]) == 0
    assert Placed.given == ["from-the-file"]


def test_platform_overrides_the_files_backend_options(flow: Path) -> None:
    pytest.importorskip("yaml", reason="YAML workflows need PyYAML (dask depends on it)")
    path = flow.with_name("flow.yaml")
    path.write_text(YAML_FLOW)
    assert main(["run", str(path), "--no-progress", "--platform", "testbox"]) == 0
    assert Placed.given == [TESTBOX]
