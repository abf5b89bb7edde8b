"""The examples in examples/ run as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(name: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_quick_start() -> None:
    out = run("quick_start.py")
    assert "stdout: Hello from RHAPSODY" in out and "return value: 49" in out


def test_asyncflow_style_dependency() -> None:
    out = run("asyncflow_style.py")
    assert out.index("produce -> DONE") < out.index("consume -> EXECUTING")
    assert "consume -> DONE" in out


@pytest.mark.parametrize("chunks", ["1", "6"])
def test_data_pipeline(chunks: str) -> None:
    out = run("data_pipeline.py", "--chunks", chunks)
    n = int(chunks) * 100
    assert f"sum of 1..{n} = {float(n * (n + 1) // 2)}" in out
    assert "FAILED" not in out
