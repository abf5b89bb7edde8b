"""Pilots that fail to start, registration through the plugin system, the hermetic helper."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "radical.pilot", reason="radical.pilot is not installed: pip install rhapsody-radical"
)

import subprocess
import sys
import time
from pathlib import Path

from rp_support import assert_no_session_processes, make_backend

import rhapsody
from rhapsody.errors import BackendError
from rhapsody.platforms import PlatformDescription
from rhapsody.states import StateMapper
from rhapsody_radical.backend import RadicalExecutionBackend
from rhapsody_radical.config import pilot_description
from rhapsody_radical.hermetic import hermetic_env

# -- starting fails clearly and leaves nothing behind ----------------------------------------


async def _fails_to_start(backend: RadicalExecutionBackend, limit: float) -> str:
    began = time.monotonic()
    with pytest.raises(BackendError) as info:
        await backend
    assert time.monotonic() - began < limit, "the failure took too long to surface"
    if backend.session is not None:
        assert_no_session_processes(backend.session.uid)
    return str(info.value)


@pytest.mark.anyio
@pytest.mark.radical
async def test_unknown_resource_label_fails_at_once(radical_home: Path) -> None:
    message = await _fails_to_start(make_backend(resource="local.nowhere"), 10)
    assert "unknown RADICAL-Pilot resource 'local.nowhere'; known: " in message
    assert "local.localhost" in message


@pytest.mark.anyio
@pytest.mark.radical
async def test_pilot_that_fails_reports_the_launcher_error(radical_home: Path) -> None:
    backend = make_backend(pilot_description={"sandbox": "/proc/rhapsody/cannot-create"})
    message = await _fails_to_start(backend, 120)
    assert "ended FAILED" in message
    assert "/proc/rhapsody" in message  # from the launcher's log: which directory failed


@pytest.mark.anyio
@pytest.mark.radical
async def test_start_timeout_dumps_the_agent_logs_and_stops_everything(radical_home: Path) -> None:
    # a normal pilot, but not allowed the 30-60 s it needs to come up
    message = await _fails_to_start(make_backend(start_timeout=12), 12 + 90)
    assert "was not active after 12 s" in message
    assert "pilot sandbox:" in message and "bootstrap_0" in message


_EXIT_WITHOUT_SHUTDOWN = """
import asyncio
from rp_support import make_backend

async def session_up(backend):
    while backend.session is None:
        await asyncio.sleep(0.1)

backend = make_backend()
loop = asyncio.new_event_loop()
loop.create_task(backend._ensure_started())  # left running: the process exits while starting
loop.run_until_complete(session_up(backend))
print(backend.session.uid, flush=True)
"""


@pytest.mark.radical
def test_exit_without_shutdown_neither_hangs_nor_leaves_processes(radical_home: Path) -> None:
    # RADICAL-Pilot's session forks a non-daemonic multiprocessing child: without the backend's
    # exit handler the interpreter would wait for it forever, and the agent would outlive us.
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_WITHOUT_SHUTDOWN],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=Path(__file__).parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert_no_session_processes(done.stdout.split()[-1])


# -- registration ------------------------------------------------------------------------------


def test_discovered_and_state_mapper_registered() -> None:
    assert rhapsody.discover_backends()["radical_pilot"] is True
    mapper = StateMapper(backend="radical_pilot")
    assert mapper.to_main_state("TMGR_SCHEDULING") == "EXECUTING_PENDING"
    assert mapper.to_main_state("AGENT_EXECUTING") == "EXECUTING"
    assert mapper.to_main_state("TMGR_STAGING_OUTPUT") == "EXECUTING"
    assert mapper.to_main_state("CANCELED") == "CANCELED"
    assert "AGENT_EXECUTING" in mapper.native_states("EXECUTING")


def test_get_backend_does_not_start_anything() -> None:
    backend = rhapsody.get_backend("radical_pilot", cores=2, runtime=5)
    assert isinstance(backend, RadicalExecutionBackend)
    assert backend.state() == "INITIALIZED" and backend.session is None
    assert backend.pilot_fields == {
        "resource": "local.localhost",
        "runtime": 5,
        "gpus": 0,
        "cores": 2,
        "exit_on_error": False,
    }


def test_plugin_is_import_light() -> None:
    code = (
        "import sys, rhapsody; rhapsody.discover_backends(); import rhapsody_radical.plugin;"
        "sys.exit('radical.pilot' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_platform_selects_resource_queue_and_project() -> None:
    hpc = PlatformDescription(
        name="hpc",
        resource_manager="slurm",
        partition="normal",
        account="ABC123",
        radical_resource="site.machine",
    )
    fields = pilot_description(platform=hpc, runtime=30)
    assert fields == {
        "resource": "site.machine",
        "runtime": 30,
        "gpus": 0,
        "nodes": 1,
        "queue": "normal",
        "project": "ABC123",
        "exit_on_error": False,
    }
    # explicit arguments win; a platform without a RADICAL label needs one
    assert (
        pilot_description("other.label", platform=hpc, queue="debug", cores=8)["queue"] == "debug"
    )
    with pytest.raises(ValueError, match="no RADICAL-Pilot resource label"):
        pilot_description(platform=PlatformDescription(name="bare", resource_manager="pbs"))
    with pytest.raises(ValueError, match="cores must be"):
        pilot_description(cores=0)


def test_catalog_platforms_name_known_resources() -> None:
    pytest.importorskip("rhapsody_platforms", reason="the platform catalog is not installed")
    from rhapsody.platforms import get_platform, list_platforms
    from rhapsody_radical.runtime import check_resource

    labels = [get_platform(n).radical_resource for n in list_platforms()]
    for label in filter(None, labels):
        check_resource(label)  # raises for a label RADICAL-Pilot does not know


def test_hermetic_env_confines_radical_pilot(tmp_path: Path) -> None:
    env = hermetic_env(tmp_path / "home")
    assert env["HOME"] == str((tmp_path / "home").resolve())
    assert env["VIRTUAL_ENV"] == sys.prefix and env["PATH"].startswith(f"{sys.prefix}/bin")
    assert "RADICAL_DEFAULT_IFACE" not in env  # the backend's own loopback confinement
    assert env["RADICAL_PROFILE"] == env["RADICAL_REPORT"] == "FALSE"
    for cache in (".radical/utils/ntp.cache", "radical.pilot.sandbox/.radical/utils/ntp.cache"):
        assert (tmp_path / "home" / cache).read_text().split() == ["9999999999.0"] * 2
