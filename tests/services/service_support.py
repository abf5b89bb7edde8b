"""Helpers of the service tests: small real servers, and the processes a test leaves."""

from __future__ import annotations

import shutil
import sys

import psutil

PY = sys.executable

# A TCP server on port argv[1] of address argv[2] (the service's `{port}` and `{host}`) that
# prints a line once it listens, answers every connection with "pong\n", and exits 3 after
# $CRASH_AFTER connections (a crash on demand; the probe's counts).
TCP_SERVER = """
import os, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2], int(sys.argv[1])))
s.listen()
print("listening on", sys.argv[1], flush=True)
served = 0
while True:
    c, _ = s.accept()
    c.sendall(b"pong\\n")
    c.close()
    served += 1
    if served == int(os.environ.get("CRASH_AFTER", "0")):
        sys.exit(3)
"""

# A client for TCP_SERVER: reads the endpoint from the variable named by argv[1].
TCP_CLIENT = """
import os, socket, sys
host, port = os.environ[sys.argv[1]].rsplit(":", 1)
with socket.create_connection((host, int(port)), timeout=10) as c:
    print(c.recv(100).decode().strip())
"""


def http_server(uid: str = "web", **service: object) -> dict[str, object]:
    return {
        "uid": uid,
        "executable": PY,
        "arguments": ["-m", "http.server", "{port}", "--bind", "{host}"],
        "service": {"http": "/", **service},
    }


def tcp_server(uid: str = "tcp", **service: object) -> dict[str, object]:
    return {
        "uid": uid,
        "executable": PY,
        "arguments": ["-c", TCP_SERVER, "{port}", "{host}"],
        "service": {"tcp": True, **service},
    }


def tcp_client(uid: str, service: str) -> dict[str, object]:
    from rhapsody.services import endpoint_variable

    return {
        "uid": uid,
        "executable": PY,
        "arguments": ["-c", TCP_CLIENT, endpoint_variable(service)],
        "dependencies": [service],
    }


# A client of redis: sends the command argv[1] to the endpoint in $RHAPSODY_SERVICE_REDIS and
# prints the first answer.
REDIS_CLIENT = """
import os, socket, sys
host, port = os.environ["RHAPSODY_SERVICE_REDIS"].rsplit(":", 1)
c = socket.create_connection((host, int(port)), timeout=10)
c.sendall(sys.argv[1].encode() + b"\\r\\n")
print(c.recv(100).decode().strip())
"""


def redis_server() -> dict[str, object]:
    """`redis-server` (the caller skips without it) on `{host}`:`{port}`, nothing on disk."""
    return {
        "uid": "redis",
        "executable": shutil.which("redis-server"),
        "arguments": ["--port", "{port}", "--bind", "{host}", "--save", "", "--appendonly", "no"],
        "service": {"tcp": True},
    }


def redis_client(uid: str, command: str, *after: str) -> dict[str, object]:
    return {
        "uid": uid,
        "executable": PY,
        "arguments": ["-c", REDIS_CLIENT, command],
        "dependencies": ["redis", *after],
    }


def descendants() -> set[int]:
    return {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    }
