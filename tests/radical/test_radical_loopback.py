"""`rhapsody_radical.loopback`: radical.utils endpoints on the loopback interface (no pilot
needed; the pilot-wide check is tests/reliability/test_exposure.py).

Each case runs in a fresh interpreter of this environment, as a pilot's processes do, so that
the installed ``rhapsody_radical_loopback.pth`` is what patches radical.utils there."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "radical.utils", reason="radical.utils is not installed: pip install rhapsody-radical"
)

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rhapsody_radical.loopback import ENV

# One endpoint of each kind radical.utils binds: a pipe (`zmq_bind` directly), a queue and a
# pubsub bridge (through their own imports of `zmq_bind`), and a request server (its URL loop).
ENDPOINTS = """
import radical.utils as ru
pipe = ru.zmq.Pipe(ru.zmq.MODE_PULL)
queue = ru.zmq.Queue("probe_queue", cfg={"uid": "probe_queue", "path": "."})
queue.start()
pubsub = ru.zmq.PubSub("probe_pubsub", cfg={"uid": "probe_pubsub", "path": "."})
pubsub.start()
server = ru.zmq.Server(path=".")
server.start()
listening = [c.laddr.ip for c in psutil.Process().net_connections("inet")
             if c.status == psutil.CONN_LISTEN]
advertised = [str(pipe.url), str(queue.addr_put), str(pubsub.addr_pub), server.addr]
server.stop(); queue.stop(); pubsub.stop()
"""
LOCKED = "extra['locked'] = getattr(ru.zmq.pubsub.Publisher.put, '_rhapsody_locked', False)"
REPORT = "print(json.dumps({'listening': listening, 'advertised': advertised, **extra}))"


def run(tmp_path: Path, prelude: str = "", epilogue: str = "", **env: str) -> dict[str, Any]:
    """What `ENDPOINTS` listen on and advertise in a fresh interpreter with `env`."""
    base = {k: v for k, v in os.environ.items() if k not in (ENV, "RADICAL_DEFAULT_IFACE")}
    script = "\n".join(["import json, os, psutil", "extra = {}", prelude, ENDPOINTS, epilogue])
    script += "\n" + REPORT
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert len(report["listening"]) == 6, report  # a pipe, 2 per bridge, a server
    return report


def test_radical_utils_alone_listens_on_every_interface(tmp_path: Path) -> None:
    # The reason for the module: when this fails, radical.utils binds where it advertises on
    # its own and the patch can go.
    report = run(tmp_path, epilogue=LOCKED, RADICAL_DEFAULT_IFACE="lo")
    assert set(report["listening"]) == {"0.0.0.0"}, report
    assert not report["locked"]  # nor does it make its publishers thread-safe


def test_processes_inheriting_the_variable_bind_on_loopback_and_lock_their_publishers(
    tmp_path: Path,
) -> None:
    # as a pilot's bridges and agent: the variables come from the client's environment
    report = run(tmp_path, epilogue=LOCKED, **{ENV: "1", "RADICAL_DEFAULT_IFACE": "lo"})
    assert set(report["listening"]) == {"127.0.0.1"}, report
    assert all(url.startswith("tcp://127.0.0.1:") for url in report["advertised"]), report
    assert report["locked"]  # rhapsody_radical.publisher_lock, through the same hook


def test_confine_patches_a_client_that_imported_radical_utils_before(tmp_path: Path) -> None:
    # as the client: radical.pilot is imported (and its default interface read) before the
    # backend starts a local pilot
    prelude = "\n".join(
        [
            "import radical.utils as ru",
            "ru.get_hostip()",
            "from rhapsody_radical import loopback",
            "restore = loopback.confine()",
            f"extra['during'] = os.environ.get('{ENV}')",
        ]
    )
    after = f"restore(); extra['after'] = [os.environ.get('{ENV}'), ru.DefaultConfig()['iface']]"
    report = run(tmp_path, prelude, after)
    assert set(report["listening"]) == {"127.0.0.1"}, report
    assert all(url.startswith("tcp://127.0.0.1:") for url in report["advertised"]), report
    assert report["during"] == "1"
    assert report["after"][0] is None  # the environment is given back ...
    assert report["after"][1] != ["lo"]  # ... and the interface radical.utils advertises


def test_the_hook_imports_nothing_in_processes_that_never_use_radical_utils(
    tmp_path: Path,
) -> None:
    # Python tasks of a local pilot inherit the variable too
    probe = (
        "import sys; print(sorted(m for m in sys.modules if m.startswith('radical')), "
        "'rhapsody_radical.loopback' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, ENV: "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["[]", "True"]  # the hook ran, and imported no radical module


def test_the_environment_is_given_back_when_the_last_local_pilot_ends(tmp_path: Path) -> None:
    script = "\n".join(
        [
            "import os, radical.utils as ru",
            "from rhapsody_radical import loopback",
            f"def now(): return [os.environ.get(n) for n in ('RADICAL_DEFAULT_IFACE', '{ENV}')]",
            "first, second = loopback.confine(), loopback.confine()",
            "print(now()); first(); first(); print(now()); second(); print(now())",
            "print(ru.DefaultConfig()['iface'])",
        ]
    )
    env = {k: v for k, v in os.environ.items() if k not in (ENV, "RADICAL_DEFAULT_IFACE")}
    env["RADICAL_DEFAULT_IFACE"] = "eth7"  # the user's own setting
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == [
        "['lo', '1']",  # both pilots confined
        "['lo', '1']",  # one ended (releasing twice counts once): the other still runs
        "['eth7', None]",  # the last one ended
        "eth7",  # radical.utils' default interface, as it was
    ]
