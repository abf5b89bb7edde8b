"""The `inference` backend passes the same conformance kit as every backend, against a real
llama.cpp server: its tasks are AI tasks ("ok" a one-token answer, "slow" a longer one, "fail"
a request to a port where nothing listens)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from inference_support import MODEL, requires_model

from rhapsody.backends.base import BaseExecutionBackend
from rhapsody.inference.backend import InferenceBackend
from rhapsody.testing import BackendConformance

_SERVER: dict[str, str] = {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module", autouse=True)
def llama_server() -> Iterator[None]:
    """One server for the module, started by hand: the kit tests the backend, not services."""
    if MODEL is None:
        yield
        return
    port, key = _free_port(), secrets.token_urlsafe(16)
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", MODEL, "--host", "127.0.0.1",
            "--port", str(port), "--n_threads", "1"]
    server = subprocess.Popen(
        argv, env={**os.environ, "API_KEY": key}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        auth = {"Authorization": f"Bearer {key}"}
        request = urllib.request.Request(f"{url}/v1/models", headers=auth)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(request, timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the llama.cpp server did not start") from None
                time.sleep(0.1)
        _SERVER.update(url=url, key=key)
        yield
    finally:
        server.kill()
        server.wait()


@requires_model
class TestInferenceConformance(BackendConformance):
    runs_executables = False
    runs_functions = False
    runs_services = False
    state_machine_examples: ClassVar[int] = 25  # a real model answers each "ok" task

    def make_backend(self) -> BaseExecutionBackend:
        return InferenceBackend(max_retries=0)

    def make_task(self, kind: str) -> dict[str, Any] | None:
        common = {"system_prompt": "You are a helpful assistant.", "temperature": 0}
        secret = {"OPENAI_API_KEY": _SERVER.get("key", "")}
        if kind == "ok":
            return {**common, "prompt": "Hi", "max_tokens": 1, "endpoint": _SERVER.get("url"),
                    "secret_environment": secret}
        if kind == "slow":
            return {**common, "prompt": "Count from one to fifty in words.", "max_tokens": 40,
                    "endpoint": _SERVER.get("url"), "secret_environment": secret}
        if kind == "fail":
            return {**common, "prompt": "Hi", "endpoint": "http://127.0.0.1:9"}
        if kind == "ai":  # where the kit's AI-task check sends its tasks
            return {"endpoint": _SERVER.get("url"), "secret_environment": secret}
        return None
