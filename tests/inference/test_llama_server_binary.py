"""llama.cpp's own server binary, `llama-server`, through `launchers.llama_cpp(binary=...)`:
built from the llama.cpp that the installed llama-cpp-python vendors (build_llama_server.sh,
cached per version), started as a service task, ready on /health, protected by the API key it
gets through `secret_environment`, and answering AI tasks at temperature 0."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from inference_support import CAPITAL, MODEL, SYSTEM, llama_processes, requires_model

import rhapsody
from rhapsody.inference import launchers
from rhapsody.states import DONE, EXECUTING

BUILD = Path(__file__).with_name("build_llama_server.sh")
# The first run builds the binary (about 6 minutes on 2 cores); later ones find it cached.
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.timeout(1800),
    pytest.mark.usefixtures("no_server_left"),
    requires_model,
]


@pytest.fixture(scope="module")
def llama_server() -> str:
    """The binary: $RHAPSODY_LLAMA_SERVER, else `llama-server` on PATH, else built here."""
    given = os.environ.get("RHAPSODY_LLAMA_SERVER") or shutil.which("llama-server")
    if given:
        return given
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} to build llama-server (apt: cmake g++)")
    built = subprocess.run(
        ["sh", str(BUILD), sys.executable], capture_output=True, text=True, timeout=1700
    )
    assert built.returncode == 0, f"{BUILD.name} failed:\n{built.stderr[-4000:]}"
    return built.stdout.strip().splitlines()[-1]


def ask(uid: str, prompt: object = CAPITAL) -> dict[str, object]:
    return {"uid": uid, "prompt": prompt, "system_prompt": SYSTEM, "temperature": 0,
            "max_tokens": 16, "service": "llm"}


async def test_the_binary_serves_ai_tasks_behind_its_api_key(
    llama_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert MODEL is not None
    server = launchers.llama_cpp(MODEL, binary=llama_server)
    assert server["executable"] == llama_server
    key = server["secret_environment"]["LLAMA_API_KEY"]
    async with rhapsody.Session() as session:
        one, two = ask("q1"), ask("q2", [CAPITAL, "What is the capital of Italy?"])
        futures = await session.submit_tasks([server, one, two])
        await asyncio.wait_for(asyncio.gather(futures["q1"], futures["q2"]), 300)
        assert one["response"] == "The capital of France is Paris."
        # one response per prompt, in order (SmolLM2-135M's Italian capital is a guess)
        first, second = two["response"]
        assert first == one["response"] and second and second != first
        assert one["usage"]["completion_tokens"] > 0 and one["usage"]["prompt_tokens"] > 0
        assert one["served_by"] == [server["endpoint"]]
        assert [p.cmdline()[0] for p in llama_processes()] == [llama_server]
        # the server is not open to anyone who reaches loopback
        request = urllib.request.Request(
            f"{server['endpoint']}/v1/chat/completions",
            data=b'{"messages": [{"role": "user", "content": "hi"}]}',
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=30)
        assert refused.value.code == 401
        assert server["state"] == EXECUTING
    assert server["state"] == DONE
    assert key not in caplog.text
