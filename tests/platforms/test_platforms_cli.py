"""`rhapsody platforms`."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from rhapsody.cli import main
from rhapsody.plugins import PluginManager
from rhapsody_platforms.catalog import CATALOG


@pytest.fixture
def wide(batch_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    # Rich sizes tables to COLUMNS; make it wide enough that no cell is folded.
    batch_env.setenv("COLUMNS", "200")
    return batch_env


def test_lists_the_catalog_and_what_detect_sees(
    wide: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["platforms"]) == 0
    out = capsys.readouterr().out
    for platform in CATALOG:
        assert platform.name in out
    assert "tacc.frontera" in out
    assert "detect() here" in out
    assert "local" in out
    assert socket.gethostname() in out


def test_shows_the_allocation_of_a_batch_job(
    wide: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wide.setenv("SLURM_JOB_ID", "4242")
    wide.setenv("SLURM_JOB_NODELIST", "nid[001-004]")
    wide.setenv("SLURM_CPUS_ON_NODE", "128")
    assert main(["platforms"]) == 0
    out = capsys.readouterr().out
    assert "4242" in out
    assert "4: nid[001-004]" in out
    assert "512" in out  # total cores


def test_one_platform_in_detail(
    wide: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["platforms", "frontier"]) == 0
    out = capsys.readouterr().out
    assert "https://docs.olcf.ornl.gov/systems/frontier_user_guide.html" in out
    assert "module load cray-python" in out
    assert "cpus_per_node" in out


def test_unknown_platform(wide: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["platforms", "nope"]) == 1
    assert "unknown platform 'nope'; known platforms:" in capsys.readouterr().err


def test_detect_failure_is_reported(
    wide: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wide.setenv("SLURM_JOB_ID", "1")
    wide.setenv("SLURM_JOB_NODELIST", "n[a-b]")
    assert main(["platforms"]) == 1
    captured = capsys.readouterr()
    assert "frontera" in captured.out
    assert "malformed hostlist 'n[a-b]': 'a-b' is not a number" in captured.err


def test_without_the_catalog(
    wide: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    use_plugin_manager: Callable[[PluginManager], None],
) -> None:
    use_plugin_manager(PluginManager(load_entry_points=False))
    assert main(["platforms"]) == 0
    out = capsys.readouterr().out
    assert "pip install rhapsody-platforms" in out
    assert "detect() here" in out
