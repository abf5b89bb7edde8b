"""Telemetry's GPU rows on real NVIDIA GPUs (NVML through nvidia-ml-py), checked against what
nvidia-smi reports. Skipped where no GPU is detected (the CI machines have none; there the
no-GPU case is tests/telemetry/test_remote_resources.py). On a GPU node:
`python3 -m pytest tests/gpu`."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest
from gpu_support import smi

from rhapsody.session import Session
from rhapsody.telemetry import ResourceUpdate
from rhapsody.telemetry.resources import NodeSampler

pytestmark = [
    pytest.mark.skipif(not smi("index"), reason="no NVIDIA GPU"),
    pytest.mark.skipif(
        importlib.util.find_spec("pynvml") is None, reason="needs nvidia-ml-py (telemetry extra)"
    ),
]


def test_each_gpu_has_a_row_with_its_memory_use() -> None:
    sampler = NodeSampler("gpu-node")
    try:
        rows = sampler.sample()
    finally:
        sampler.close()
    gpus = [line.split(", ") for line in smi("index", "memory.used", "memory.total")]
    gpu_rows = [row for row in rows if row["gpu_id"] is not None]
    assert [row["gpu_id"] for row in gpu_rows] == [int(g[0]) for g in gpus]
    for row, (_, used, total) in zip(gpu_rows, gpus, strict=True):
        assert row["node_id"] == "gpu-node"
        assert 0 <= row["gpu_percent"] <= 100
        # nvidia-smi's MiB, read a moment apart: within a point of NVML's percentage
        assert abs(row["gpu_memory_percent"] - 100 * float(used) / float(total)) < 1.0


def test_a_session_publishes_gpu_rows() -> None:
    async def go() -> list[ResourceUpdate]:
        session = Session()
        manager = await session.start_telemetry(resource_poll_interval=0.2)
        updates: list[ResourceUpdate] = []
        manager.subscribe(lambda e: updates.append(e) if isinstance(e, ResourceUpdate) else None)
        for _ in range(100):
            if any(u.gpu_id is not None for u in updates):
                break
            await asyncio.sleep(0.1)
        await session.close()
        return updates

    updates = asyncio.run(go())
    gpu_ids = {u.gpu_id for u in updates if u.gpu_id is not None}
    assert gpu_ids == {int(index) for index in smi("index")}
    assert all(0 <= (u.gpu_memory_percent or 0) <= 100 for u in updates)
