"""`python -m rhapsody.services.on_node`: a service started where its port is chosen (on its
node) gets `{host}` / `{port}` filled in, writes its address for the client, and becomes the
program (same process)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

# Reports its pid, its arguments and two variables, then serves one connection at `argv[1]`.
SERVE = (
    "import json,os,socket,sys;s=socket.create_server(('127.0.0.1',int(sys.argv[1])));"
    "print(json.dumps([os.getpid(),sys.argv[1:],os.environ['AT'],os.environ['KEEP']]),flush=True);"
    "c,_=s.accept();c.sendall(b'pong');c.close()"
)


def test_the_port_is_chosen_on_the_node_and_the_program_takes_its_place(tmp_path: Path) -> None:
    address = tmp_path / "svc.address"
    env = {**os.environ, "AT": "{host}:{port}", "KEEP": "{port}"}  # KEEP is not named: kept
    command = [sys.executable, "-m", "rhapsody.services.on_node", "--address-file", str(address)]
    command += ["--iface", "lo", "--env", "AT", "--"]
    command += [sys.executable, "-c", SERVE, "{port}", "at {host}"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pid, argv, at, keep = json.loads(proc.stdout.readline())
        where = json.loads(address.read_text())
        assert where["host"] == "127.0.0.1" and isinstance(where["port"], int)
        assert argv == [str(where["port"]), "at 127.0.0.1"]
        assert at == f"127.0.0.1:{where['port']}" and keep == "{port}"
        assert pid == proc.pid  # exec'd: stopping the task stops the program
        with socket.create_connection(("127.0.0.1", where["port"]), timeout=10) as conn:
            assert conn.recv(4) == b"pong"
        assert proc.wait(timeout=10) == 0
        assert not Path(f"{address}.partial").exists()
    finally:
        proc.kill()
        proc.wait()


def test_a_fixed_port_is_kept_and_a_bad_interface_is_refused(tmp_path: Path) -> None:
    address = tmp_path / "a"
    base = [sys.executable, "-m", "rhapsody.services.on_node", "--address-file", str(address)]
    done = subprocess.run(
        [*base, "--iface", "lo", "--port", "4321", "--", "/bin/echo", "{port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout == "4321\n" and json.loads(address.read_text())["port"] == 4321
    bad = subprocess.run(
        [*base, "--iface", "no-such-if0", "--", "/bin/true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode != 0 and "'no-such-if0' has no IPv4 address" in bad.stderr
