"""Service tasks on a real local pilot: the engine's generic path (docs/backends/radical_pilot.md).

The service is an ordinary executable task of the pilot; the engine probes it from this
process (a local pilot runs on this host, on 127.0.0.1), releases its dependents when it is
ready and stops it by cancelling its attempt. Two tests only: a pilot test costs minutes of CI.
"""

from __future__ import annotations

import pytest

pytest.importorskip(
    "radical.pilot", reason="radical.pilot is not installed: pip install rhapsody-radical"
)

import asyncio
import sys
from pathlib import Path

import anyio
import psutil
from rp_support import WAIT, SharedPilot

from rhapsody.services import endpoint_variable
from rhapsody.states import DONE, EXECUTING
from rhapsody_radical.backend import RadicalExecutionBackend

pytestmark = [pytest.mark.anyio, pytest.mark.radical]

PY = sys.executable

# An http server that notes its pid in argv[2] first.
HTTP_SERVER = (
    "import http.server, os, sys\n"
    "open(sys.argv[2], 'w').write(str(os.getpid()))\n"
    "http.server.test(http.server.SimpleHTTPRequestHandler, port=int(sys.argv[1]),"
    " bind='127.0.0.1')\n"
)
# A TCP server answering "pong" to every connection.
TCP_SERVER = (
    "import socket, sys\n"
    "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'pong\\n'); c.close()\n"
)


def client(uid: str, service: str, code: str) -> dict[str, object]:
    """A task of the pilot that reads the service's endpoint from its environment."""
    return {
        "uid": uid,
        "executable": PY,
        "arguments": ["-c", f"import os; endpoint = os.environ['{endpoint_variable(service)}']\n"
                      + code],
        "dependencies": [service],
    }


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_http_service_serves_its_dependent_and_stops_after_it(
    radical_backend: RadicalExecutionBackend, tmp_path: Path
) -> None:
    pid_file = tmp_path / "web.pid"
    web = {
        "uid": "svc.web",
        "executable": PY,
        "arguments": ["-c", HTTP_SERVER, "{port}", str(pid_file)],
        "service": {"http": "/", "lifetime": "dependents"},
    }
    fetch = "import urllib.request; print(urllib.request.urlopen(endpoint).status)"
    use = client("svc.use", "svc.web", fetch)
    futures = await radical_backend.submit_tasks([web, use])
    with anyio.fail_after(WAIT):
        result = await futures["svc.use"]
    assert result["stdout"].strip() == "200", result.get("stderr")
    assert web["endpoint"].startswith("http://127.0.0.1:")
    # its last dependent is done: the engine stops it, and it ends DONE with its process gone
    with anyio.fail_after(WAIT):
        await futures["svc.web"]
        # polled: a process's end has no event to await here
        while web["state"] != DONE or alive(int(pid_file.read_text())):  # noqa: ASYNC110
            await asyncio.sleep(0.2)


async def test_tcp_service_is_stopped_by_shutdown(
    shared_pilot: SharedPilot, radical_backend: RadicalExecutionBackend
) -> None:
    tcp = {
        "uid": "svc.tcp",
        "executable": PY,
        "arguments": ["-c", TCP_SERVER, "{port}"],
        "service": {"tcp": True},
    }
    code = (
        "import socket; host, port = endpoint.rsplit(':', 1)\n"
        "print(socket.create_connection((host, int(port)), timeout=10).recv(100).decode())"
    )
    futures = await radical_backend.submit_tasks([tcp, client("svc.ping", "svc.tcp", code)])
    with anyio.fail_after(WAIT):
        result = await futures["svc.ping"]
    assert result["stdout"].strip() == "pong", result.get("stderr")
    assert tcp["state"] == EXECUTING
    # Ends this pilot: `close` shuts the backend down and asserts that no process of its
    # session (the service included) is left.
    await shared_pilot.close()
    assert tcp["state"] == DONE


def test_a_probed_service_needs_a_local_pilot() -> None:
    # No pilot is started: the check is made at submission, from the pilot's resource label.
    from rhapsody.errors import TaskValidationError
    from rhapsody.task import TaskDescription

    backend = RadicalExecutionBackend(resource="tacc.frontera")
    server = {"executable": PY, "arguments": ["-c", TCP_SERVER, "{port}"]}
    with pytest.raises(TaskValidationError, match="task 'svc'") as caught:
        backend._check_task(TaskDescription.from_dict({**server, "service": {"tcp": True}}, "svc"))
    assert "needs a local pilot (local.*), not 'tacc.frontera'" in str(caught.value)
    # not probed from here: accepted
    backend._check_task(TaskDescription.from_dict({**server, "service": True}, "svc"))
