"""Resource samples of the node this process runs on: CPU, memory, disk and network (psutil) and
per-GPU utilisation and memory (NVML through `nvidia-ml-py`; no GPU or no NVML = no GPU rows).

A backend whose tasks run on other nodes reports them by defining
`async def sample_resources(self) -> list[dict]`: it runs `sample_this_node` where its tasks run
(a dask worker: `client.run(sample_this_node)`) and returns the rows.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

import psutil

logger = logging.getLogger("rhapsody.telemetry")

#: the fields of a node row that count bytes moved since the previous sample (summed over rows)
BYTE_FIELDS = ("disk_read_bytes", "disk_write_bytes", "net_sent_bytes", "net_recv_bytes")


class NodeSampler:
    """Samples one node; each `sample()` returns one dict for the node, then one per GPU.

    Disk and network figures are bytes moved since the previous sample (the first sample
    counts from the sampler's creation). CPU percent is over the same interval."""

    def __init__(self, node_id: str | None = None) -> None:
        self.node_id = node_id or socket.gethostname()
        psutil.cpu_percent(None)  # primes the interval the first sample measures over
        self._disk = _disk_counters()
        self._net = _net_counters()
        self._nvml: Any = _open_nvml()

    def sample(self) -> list[dict[str, Any]]:
        disk, net = _disk_counters(), _net_counters()
        row: dict[str, Any] = {
            "node_id": self.node_id,
            "gpu_id": None,
            "cpu_percent": psutil.cpu_percent(None),
            "memory_percent": psutil.virtual_memory().percent,
            "disk_read_bytes": float(max(disk[0] - self._disk[0], 0)),
            "disk_write_bytes": float(max(disk[1] - self._disk[1], 0)),
            "net_sent_bytes": float(max(net[0] - self._net[0], 0)),
            "net_recv_bytes": float(max(net[1] - self._net[1], 0)),
        }
        self._disk, self._net = disk, net
        return [row, *self._gpu_rows()]

    def _gpu_rows(self) -> list[dict[str, Any]]:
        nvml = self._nvml
        if nvml is None:
            return []
        rows = []
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                use = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                rows.append(
                    {
                        "node_id": self.node_id,
                        "gpu_id": index,
                        "gpu_percent": float(use.gpu),
                        "gpu_memory_percent": 100.0 * memory.used / memory.total
                        if memory.total
                        else 0.0,
                    }
                )
        except Exception as exc:  # a GPU fell off the bus, a driver reset: stop asking
            logger.warning("NVML stopped answering (%s); no more GPU samples", exc)
            self.close()
            return []
        return rows

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):  # already gone: nothing to release
                self._nvml.nvmlShutdown()
            self._nvml = None


_here: NodeSampler | None = None


def sample_this_node() -> list[dict[str, Any]]:
    """One sample of the node this process runs on (node row, then GPU rows), measured since
    the previous call in this process: for backends to run where their tasks run."""
    global _here
    if _here is None:
        _here = NodeSampler()
    return _here.sample()


def _disk_counters() -> tuple[int, int]:
    counters = psutil.disk_io_counters()
    return (counters.read_bytes, counters.write_bytes) if counters else (0, 0)


def _net_counters() -> tuple[int, int]:
    counters = psutil.net_io_counters()
    return (counters.bytes_sent, counters.bytes_recv) if counters else (0, 0)


def _open_nvml() -> Any:
    """The initialised `pynvml` module, or None where it or a GPU driver is absent."""
    try:
        import pynvml  # type: ignore[import-untyped]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: a machine without GPUs
        return None
    return pynvml
