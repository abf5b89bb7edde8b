"""No backend exposes a listening socket beyond loopback while it runs tasks: the embedded dask
cluster's scheduler, workers, nannies and dashboard; a local pilot's client, bridges, agent and
raptor processes (most of them daemons outside this process tree: they are found by their
working directory, inside the test's; their environment cannot be read, setproctitle reuses
its memory)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from pathlib import Path

import psutil
import pytest
from reliability_support import WAIT, installed_backends, started, working_in

from rhapsody.states import EXECUTING

pytestmark = pytest.mark.anyio

RUNNING = 4


def listening(root: Path) -> list[tuple[int, str, str, int]]:
    """(pid, name, address, port) of every listening inet socket of this process tree and of
    every process working in `root`."""
    me = psutil.Process()
    procs = {p.pid: p for p in [me, *me.children(recursive=True), *working_in(root)]}
    found = []
    for proc in procs.values():
        with contextlib.suppress(psutil.Error):  # exited meanwhile
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.append((proc.pid, proc.name(), conn.laddr.ip, conn.laddr.port))
    return found


@pytest.mark.parametrize("name", installed_backends())
async def test_listens_on_loopback_only(name: str, tmp_path: Path) -> None:
    running: set[str] = set()
    before = set(listening(tmp_path))
    # A control: the sampling must see a socket this test listens on (else the check below
    # would pass on backends that have none, whatever it samples).
    control = socket.create_server(("127.0.0.1", 0))
    port = control.getsockname()[1]
    try:
        async with started(name, tmp_path / "work") as backend:
            backend.register_callback(
                lambda task, state: running.add(task["uid"]) if state == EXECUTING else None
            )
            task = {"executable": "/bin/sleep", "arguments": ["5"], "timeout": 4}
            # a function task too: a pilot runs those on raptor, which has endpoints of its own
            function = {"uid": "expo.function", "function": time.sleep, "args": [3]}
            futures = await backend.submit_tasks([dict(task) for _ in range(RUNNING)] + [function])
            # sample while tasks run (noop finishes them at once: it is sampled all the same)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT
            while "expo.function" not in running or len(running) < 2:
                await asyncio.sleep(0.05)
                assert loop.time() < deadline, f"tasks did not start: {sorted(running)}"
            sockets = listening(tmp_path)
            await backend.cancel_all_tasks()
            await asyncio.gather(*futures, return_exceptions=True)
    finally:
        control.close()
    assert any(s[3] == port for s in sockets), f"the sampling missed the control: {sockets}"
    exposed = [s for s in sockets if not ipaddress.ip_address(s[2]).is_loopback]
    assert not exposed, f"listening beyond loopback: {exposed}"
    names = {s[1] for s in sockets}
    new = [s for s in sockets if s not in before and s[3] != port]
    if name in ("concurrent", "noop"):  # they listen on nothing at all
        assert not new, new
    if name == "dask":  # the check saw the cluster: scheduler, workers, dashboard
        assert len(sockets) >= 3, sockets
    if name == "radical_pilot":  # ... and the pilot's daemons, outside this process tree
        assert {"rp.agent.0", "rp.client_queue"} <= names, names
        assert any(n.startswith("radical-pilot-r") for n in names), names  # raptor
        assert len(sockets) >= 40, sockets
