"""Fixtures of the inference tests (helpers: inference_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from inference_support import llama_processes


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def no_server_left() -> Iterator[None]:
    yield
    assert not [p.pid for p in llama_processes() if p.is_running()], "a server outlived its test"
