"""What the node offers (cores, GPUs) and the slot accounting that keeps tasks within it."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Sequence

import attrs
import psutil

from rhapsody.errors import ResourceError

_NVIDIA_SMI_LINE = re.compile(r"^GPU (\d+):")


def detect_cores() -> int:
    """Cores this process may use: its CPU affinity where the OS has one, else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return psutil.cpu_count() or 1


def detect_gpus() -> tuple[str, ...]:
    """Identifiers of the GPUs this process may use.

    `CUDA_VISIBLE_DEVICES` when set (empty means none; its identifiers are handed on as they are,
    so a task given "our first GPU" under `3,5` sees `3`), else `nvidia-smi -L` indices, else none.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(part.strip() for part in visible.split(",") if part.strip())
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(
        m.group(1) for line in out.stdout.splitlines() if (m := _NVIDIA_SMI_LINE.match(line))
    )


@attrs.frozen
class Allocation:
    """What one running task holds."""

    cores: int
    gpu_ids: tuple[str, ...]


@functools.lru_cache(maxsize=64)
def _cpu_only(cores: int) -> Allocation:
    # Immutable, so tasks holding the same number of cores and no GPU share one.
    return Allocation(cores, ())


class ResourcePool:
    """Counts free cores and hands out specific GPU identifiers; never oversubscribes."""

    def __init__(self, cores: int, gpu_ids: Sequence[str] = ()) -> None:
        if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
            raise ResourceError(f"cores must be a whole number >= 1, got {cores!r}")
        if len(set(gpu_ids)) != len(gpu_ids):
            raise ResourceError(f"GPU identifiers must be unique, got {list(gpu_ids)!r}")
        self.total_cores = cores
        self.gpu_ids = tuple(str(g) for g in gpu_ids)
        self.free_cores = cores
        self._free_gpus = list(self.gpu_ids)

    @property
    def total_gpus(self) -> int:
        return len(self.gpu_ids)

    @property
    def free_gpus(self) -> int:
        return len(self._free_gpus)

    def check_request(self, uid: str, cores: int, gpus: int) -> None:
        """Reject at submit a request no amount of waiting could satisfy."""
        if cores > self.total_cores or gpus > self.total_gpus:
            raise ResourceError(
                f"task {uid!r} asks for {cores} core(s) and {gpus} GPU(s), but this backend has "
                f"{self.total_cores} core(s) and {self.total_gpus} GPU(s)"
            )

    def acquire(self, cores: int, gpus: int) -> Allocation | None:
        if cores > self.free_cores or gpus > len(self._free_gpus):
            return None
        self.free_cores -= cores
        if not gpus:
            return _cpu_only(cores)
        taken = tuple(self._free_gpus[:gpus])
        del self._free_gpus[:gpus]
        return Allocation(cores, taken)

    def release(self, allocation: Allocation) -> None:
        self.free_cores += allocation.cores
        if not allocation.gpu_ids:
            return
        # Keep the original order so allocations stay predictable.
        free = set(self._free_gpus) | set(allocation.gpu_ids)
        self._free_gpus = [g for g in self.gpu_ids if g in free]
