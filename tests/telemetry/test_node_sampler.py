"""The node sampler process and the reader of its files (rhapsody.telemetry.node_sampler): what
radical_pilot's SLURM pilots run on each node (tests/slurm/test_slurm_radical.py runs it there)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rhapsody.telemetry.node_sampler import SampleFiles

SAMPLER = [sys.executable, "-m", "rhapsody.telemetry.node_sampler"]
COUNTED = ("disk_read_bytes", "disk_write_bytes", "net_sent_bytes", "net_recv_bytes")


def start(directory: Path, node: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*SAMPLER, "--dir", str(directory), "--interval", "0.1"],
        env={**os.environ, "SLURMD_NODENAME": node},
        stderr=subprocess.PIPE,
    )


def wait_for(condition: object, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"not within 30 s: {what}"
        time.sleep(0.05)


def test_each_node_writes_its_rows_and_the_reader_gets_each_write_once(tmp_path: Path) -> None:
    samplers = [start(tmp_path, node) for node in ("n1", "n2")]
    try:
        both = {"n1.json", "n2.json"}
        wait_for(lambda: {p.name for p in tmp_path.glob("*.json")} == both, "a file of each")
        files = SampleFiles(tmp_path)
        first = files.read()
        assert {row["node_id"] for row in first if row["gpu_id"] is None} == {"n1", "n2"}
        for row in first:
            if row["gpu_id"] is None:
                assert 0 <= row["cpu_percent"] <= 100 and 0 < row["memory_percent"] <= 100
                assert all(row[field] >= 0 for field in COUNTED)
        later: list[dict[str, object]] = []
        wait_for(lambda: later.extend(files.read()) or later, "a second write")
        assert {row["node_id"] for row in later} <= {"n1", "n2"}
    finally:
        for sampler in samplers:
            sampler.terminate()
    # SIGTERM: each exits at once, cleanly, leaving only its latest file
    assert [s.wait(10) for s in samplers] == [0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n1.json", "n2.json"]


def test_a_read_without_new_writes_returns_nothing(tmp_path: Path) -> None:
    row = {"node_id": "n1", "gpu_id": None, "cpu_percent": 5.0, "memory_percent": 10.0}
    staged = tmp_path / ".n1.json"
    staged.write_text(json.dumps({"pid": 1, "rows": [{**row, "net_sent_bytes": 100.0}]}))
    staged.replace(tmp_path / "n1.json")
    files = SampleFiles(tmp_path)
    assert [r["net_sent_bytes"] for r in files.read()] == [100.0]  # since the sampler began
    assert files.read() == []
    staged.write_text(json.dumps({"pid": 1, "rows": [{**row, "net_sent_bytes": 350.0}]}))
    staged.replace(tmp_path / "n1.json")
    assert [r["net_sent_bytes"] for r in files.read()] == [250.0]  # since the last read
    staged.write_text(json.dumps({"pid": 2, "rows": [{**row, "net_sent_bytes": 40.0}]}))
    staged.replace(tmp_path / "n1.json")
    assert [r["net_sent_bytes"] for r in files.read()] == [40.0]  # a restarted sampler


def test_a_sampler_whose_directory_is_removed_exits_by_itself(tmp_path: Path) -> None:
    directory = tmp_path / "samples"
    directory.mkdir()
    sampler = start(directory, "n1")
    try:
        wait_for(lambda: (directory / "n1.json").exists(), "a first write")
        shutil.rmtree(directory)
        assert sampler.wait(10) == 0
    finally:
        sampler.kill()
    assert not directory.exists()


@pytest.mark.parametrize("interval", ["0", "-1"])
def test_a_bad_interval_is_refused(tmp_path: Path, interval: str) -> None:
    done = subprocess.run(
        [*SAMPLER, "--dir", str(tmp_path), "--interval", interval],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert f"--interval must be > 0 s, got {float(interval)}" in done.stderr
