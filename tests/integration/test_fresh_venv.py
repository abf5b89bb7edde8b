"""Discovery tells the truth in a fresh virtual environment: only what is installed is there.

Builds a venv with rhapsody-core alone, then adds the rhapsody-dask distribution, then removes
it again. Slow (real pip installs), so it runs once per CI run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys, rhapsody
found = rhapsody.discover_backends()
heavy = [m for m in ("dask", "distributed", "radical.pilot") if m in sys.modules]
print(json.dumps({"found": found, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("fresh") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    return env_dir / "bin" / "python"


def pip(python: Path, *args: str) -> None:
    out = subprocess.run(
        [str(python), "-m", "pip", "--quiet", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]


def probe(python: Path) -> dict[str, object]:
    out = subprocess.run(
        [str(python), "-c", PROBE], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.slow
def test_discovery_follows_what_is_installed(fresh_python: Path) -> None:
    pip(fresh_python, "install", str(ROOT / "rhapsody-core"))
    result = probe(fresh_python)
    found = result["found"]
    assert found == {
        "concurrent": True,
        "noop": True,
        "dask": False,
        "radical_pilot": False,
        "inference": False,  # its HTTP client is an extra: rhapsody-core[inference]
    }
    pip(fresh_python, "install", "httpx")
    assert probe(fresh_python)["found"]["inference"] is True  # type: ignore[index]

    pip(fresh_python, "install", str(ROOT / "rhapsody-dask"))
    result = probe(fresh_python)
    assert result["found"]["dask"] is True  # type: ignore[index]
    assert result["heavy"] == [], "discovery imported an engine"

    pip(fresh_python, "uninstall", "--yes", "rhapsody-dask")
    assert probe(fresh_python)["found"]["dask"] is False  # type: ignore[index]


def test_core_installs_alone_without_dev_tools() -> None:
    # The seed import paths resolve in this environment too.
    code = (
        "from rhapsody.backends.execution import ConcurrentExecutionBackend;"
        "from rhapsody.backends.constants import TasksMainStates, StateMapper;"
        "from rhapsody.backends import Session, BaseBackend;"
        "from rhapsody.api import Session as S2, ComputeTask"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
