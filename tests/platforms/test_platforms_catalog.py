"""The rhapsody-platforms catalog: every entry is valid, registered, and matches the docs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from rhapsody.platforms import PlatformDescription, ResourceManager
from rhapsody.plugins import OFFICIAL_PLATFORM_CATALOG, get_plugin_manager
from rhapsody_platforms.catalog import CATALOG

DOCS = Path(__file__).resolve().parents[2] / "docs" / "platforms.md"
BY_NAME = {platform.name: platform for platform in CATALOG}


def test_names_are_unique_identifiers() -> None:
    # They are attributes of rhapsody.platforms: `from rhapsody.platforms import <name>`.
    assert len(BY_NAME) == len(CATALOG)
    assert all(name.isidentifier() for name in BY_NAME)


@pytest.mark.parametrize("platform", CATALOG, ids=lambda p: p.name)
def test_entry_is_valid_and_complete(platform: PlatformDescription) -> None:
    attrs.validate(platform)
    assert attrs.evolve(platform) == platform  # constructing it again passes validation too
    assert platform.description and platform.fqdn
    assert platform.docs_url is not None and platform.docs_url.startswith("https://")
    assert platform.mem_per_node is not None
    assert (platform.gpu_type is None) == (platform.gpus_per_node == 0)
    kwargs = platform.dask_jobqueue_kwargs()
    assert kwargs["memory"] == f"{platform.mem_per_node}GB"


def test_required_systems_are_present() -> None:
    expected = {
        "frontera": (ResourceManager.SLURM, 56),
        "perlmutter_gpu": (ResourceManager.SLURM, 64),
        "perlmutter_cpu": (ResourceManager.SLURM, 128),
        "polaris": (ResourceManager.PBS, 32),
        "aurora": (ResourceManager.PBS, 104),
        "frontier": (ResourceManager.SLURM, 56),
        "summit": (ResourceManager.LSF, 42),
        "delta_gpu": (ResourceManager.SLURM, 64),
        "vista": (ResourceManager.SLURM, 72),
    }
    found = {
        name: (BY_NAME[name].resource_manager, BY_NAME[name].cores_per_node) for name in expected
    }
    assert found == expected


def test_catalog_is_registered_through_the_hook() -> None:
    registry = get_plugin_manager().platforms
    for platform in CATALOG:
        assert registry.get(platform.name) is platform
        assert registry.distribution_of(platform.name) == OFFICIAL_PLATFORM_CATALOG


def test_plugin_module_does_not_load_the_catalog() -> None:
    code = (
        "import sys, rhapsody_platforms.plugin; print('rhapsody_platforms.catalog' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the table in docs/platforms.md ----------------------------------------------------------


def _docs_table() -> dict[str, dict[str, str]]:
    """Rows of the catalog table in docs/platforms.md, keyed by name."""
    lines = DOCS.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| name | system |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows: dict[str, dict[str, str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == len(header), f"docs row has {len(cells)} cells: {line}"
        row = dict(zip(header, cells, strict=True))
        rows[row["name"]] = row
    return rows


def _documented(platform: PlatformDescription) -> dict[str, str]:
    """The platform's figures written the way the docs table writes them."""
    return {
        "resource manager": platform.resource_manager.value,
        "partition": platform.partition or "-",
        "cores/node": str(platform.cores_per_node),
        "hw threads/core": str(platform.hwthreads_per_core),
        "GPUs/node": str(platform.gpus_per_node),
        "GPU": platform.gpu_type or "-",
        "memory/node (GB)": str(platform.mem_per_node),
        "launch": platform.launch_method.value,
        "RADICAL resource": platform.radical_resource or "-",
        "source": platform.docs_url or "-",
    }


def test_docs_table_lists_every_entry() -> None:
    assert sorted(_docs_table()) == sorted(BY_NAME)


@pytest.mark.parametrize("platform", CATALOG, ids=lambda p: p.name)
def test_docs_table_figures_match_the_catalog(platform: PlatformDescription) -> None:
    row = _docs_table()[platform.name]
    documented = {column: row[column] for column in _documented(platform)}
    assert documented == _documented(platform)
