"""GPU placement on real NVIDIA GPUs, read back through the CUDA driver inside each task.

Skipped where no GPU is detected (the CI machines have none). On a GPU node:
`python3 -m pytest tests/gpu`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from gpu_support import smi

from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.resources import detect_gpus
from rhapsody.testing import InvariantRecorder

# What a CUDA program in the task can open: the driver honours CUDA_VISIBLE_DEVICES, unlike
# nvidia-smi, which lists every GPU regardless.
PROBE = """
import ctypes, json, os, time
cuda = ctypes.CDLL("libcuda.so.1")
count = ctypes.c_int(0)
if cuda.cuInit(0) == 0:
    cuda.cuDeviceGetCount(ctypes.byref(count))
start = time.monotonic()
time.sleep(float(os.environ.get("HOLD", "0")))
print(json.dumps({"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "count": count.value,
                  "start": start, "end": time.monotonic()}))
"""


def probe() -> dict[str, Any]:
    """The same probe for a function task in its own process."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


pytestmark = [pytest.mark.anyio, pytest.mark.skipif(not smi("index"), reason="no NVIDIA GPU")]


def probe_task(uid: str, gpus: int, hold: float = 0.0) -> dict[str, Any]:
    return {
        "uid": uid,
        "executable": sys.executable,
        "arguments": ["-c", PROBE],
        "gpus": gpus,
        "environment": {"HOLD": str(hold)},
    }


async def run(backend: Any, *tasks: dict[str, Any]) -> list[Any]:
    futures = await backend.submit_tasks(list(tasks))
    return await asyncio.wait_for(asyncio.gather(*futures), 120)


def seen(result: dict[str, Any]) -> dict[str, Any]:
    """The probe's report: a function's return value, or an executable's stdout."""
    value = result.get("return_value")
    report: dict[str, Any] = value if isinstance(value, dict) else json.loads(result["stdout"])
    return report


def test_detected_gpus_are_nvidia_smi_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert detect_gpus() == tuple(smi("index"))


@pytest.fixture
async def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    backend = await ConcurrentExecutionBackend(cores=4, work_dir=tmp_path)
    try:
        yield backend
    finally:
        await backend.shutdown()


async def test_a_gpu_task_sees_one_gpu_and_a_cpu_task_none(backend: Any) -> None:
    assert backend.resources.gpu_ids == tuple(smi("index"))
    gpu, cpu = await run(backend, probe_task("gpu", 1), probe_task("cpu", 0))
    assert seen(gpu)["count"] == 1
    assert seen(gpu)["visible"] in backend.resources.gpu_ids
    assert (seen(cpu)["count"], seen(cpu)["visible"]) == (0, "")


async def test_a_process_function_sees_exactly_its_gpus(backend: Any) -> None:
    gpu, cpu = await run(
        backend,
        {"uid": "fgpu", "function": probe, "gpus": 1, "isolation": "process"},
        {"uid": "fcpu", "function": probe, "isolation": "process"},
    )
    assert seen(gpu)["count"] == 1
    assert seen(cpu)["count"] == 0


async def test_more_gpu_tasks_than_gpus_take_turns(backend: Any) -> None:
    total = backend.resources.total_gpus
    recorder = InvariantRecorder(backend, uid_prefix="turn.")
    tasks = [probe_task(f"turn.{i}", 1, hold=0.5) for i in range(total + 2)]
    recorder.track(tasks)
    results = [seen(r) for r in await run(backend, *tasks)]
    recorder.assert_ok()
    assert recorder.peak_gpus == total
    assert all(r["count"] == 1 for r in results)
    # Tasks on the same GPU never overlap in time.
    by_gpu: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        by_gpu.setdefault(r["visible"], []).append((r["start"], r["end"]))
    for spans in by_gpu.values():
        spans.sort()
        assert all(prev_end <= start for (_, prev_end), (start, _) in itertools.pairwise(spans))


async def test_a_parent_uuid_is_handed_on_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch system may confine the job by UUID: the task gets that UUID, not a position.
    uuid = smi("uuid")[0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", uuid)
    backend = await ConcurrentExecutionBackend(cores=2, work_dir=tmp_path)
    try:
        assert backend.resources is not None and backend.resources.gpu_ids == (uuid,)
        [result] = await run(backend, probe_task("uuid", 1))
        assert (seen(result)["count"], seen(result)["visible"]) == (1, uuid)
    finally:
        await backend.shutdown()
