"""vLLM as a service task on a real GPU, placed by the engine, answering AI tasks.

Skipped unless `vllm` is importable, a GPU is detected, and RHAPSODY_VLLM_MODEL names a model
vLLM can load without a network (a local directory, or a name in its cache): the CI machines
have none of these. On a GPU node: `RHAPSODY_VLLM_MODEL=/path/to/model python3 -m pytest
tests/gpu/test_vllm_service.py`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil

import psutil
import pytest

import rhapsody
from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.inference import launchers
from rhapsody.resources import detect_gpus

MODEL = os.environ.get("RHAPSODY_VLLM_MODEL")

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None or shutil.which("vllm") is None,
        reason="vllm is not installed",
    ),
    pytest.mark.skipif(not detect_gpus(), reason="no NVIDIA GPU detected"),
    pytest.mark.skipif(MODEL is None, reason="RHAPSODY_VLLM_MODEL names no local model"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_vllm_server_gets_exactly_its_gpu_and_serves_ai_tasks() -> None:
    assert MODEL is not None
    gpus = detect_gpus()
    backend = ConcurrentExecutionBackend(name="concurrent", gpus=gpus)
    server = launchers.vllm(MODEL, uid="vllm", gpus=1, timeout=900)
    server["arguments"] += ["--gpu-memory-utilization", "0.3", "--max-model-len", "2048"]
    async with rhapsody.Session([backend]) as session:
        ask = {"uid": "ask", "prompt": "What is the capital of France?", "temperature": 0,
               "max_tokens": 16, "service": "vllm"}
        futures = await session.submit_tasks([server, ask])
        result = await asyncio.wait_for(futures["ask"], 900)
        assert "Paris" in result["response"]
        # the server process sees exactly the GPU the engine gave it
        servers = [
            p for p in psutil.Process().children(recursive=True) if "vllm" in " ".join(p.cmdline())
        ]
        assert servers, "no vllm process found"
        visible = servers[0].environ().get("CUDA_VISIBLE_DEVICES")
        assert visible is not None and len(visible.split(",")) == 1 and visible in gpus
