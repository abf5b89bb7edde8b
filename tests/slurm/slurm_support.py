"""Helpers of the SLURM tests: the running cluster's handle and `scontrol` parsing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
CLUSTER_SH = HERE / "cluster.sh"
SCRIPTS = HERE / "scripts"
NODES = ("n1", "n2", "n3")
CPUS_PER_NODE = 2
GPUS_PER_NODE = 2


class Cluster:
    """The running cluster: its config, and the commands the tests submit through."""

    def __init__(self, conf: str) -> None:
        self.conf = conf
        self.env = {**os.environ, "SLURM_CONF": conf}
        # Jobs must not see this session's GPUs nor inherit a batch environment of our own.
        for name in list(self.env):
            if name.startswith("SLURM_") and name != "SLURM_CONF":
                del self.env[name]
        self.env.pop("CUDA_VISIBLE_DEVICES", None)
        # `python3` in batch scripts is this session's Python (its venv has rhapsody).
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"

    def run(
        self, *argv: str, timeout: float = 120, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a SLURM command (salloc, sbatch -W, scontrol, ...); fail the test on a non-zero
        exit with its output shown."""
        kwargs.setdefault("env", self.env)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
        if result.returncode != 0:
            pytest.fail(
                f"{' '.join(argv)} exited with {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def jobs(self) -> list[str]:
        out = self.run("squeue", "-h", "-o", "%i", timeout=30).stdout
        return out.split()

    def ensure_slurmds(self) -> None:
        subprocess.run(
            [str(CLUSTER_SH), "restart-slurmd"], env=self.env, capture_output=True, timeout=60
        )


def parse_scontrol_job(cluster: Cluster, text: str) -> dict[str, Any]:
    """`scontrol show job -d` output as a dict, plus `cpus_by_node` / `gpus_by_node` from its
    per-node detail lines (`Nodes=n1 CPU_IDs=0-1 Mem=1000 GRES=gpu:2(IDX:0-1)`)."""
    fields: dict[str, Any] = {}
    cpus: dict[str, int] = {}
    gpus: dict[str, int] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Nodes=") and "CPU_IDs=" in line:
            detail = dict(part.split("=", 1) for part in line.split() if "=" in part)
            hosts = cluster.run("scontrol", "show", "hostnames", detail["Nodes"]).stdout.split()
            ids = _count_ids(detail["CPU_IDs"])
            gres = re.search(r"gpu(?::[^:(]+)?:(\d+)", detail.get("GRES", ""))
            for host in hosts:
                cpus[host] = ids
                gpus[host] = int(gres.group(1)) if gres else 0
            continue
        for part in line.split():
            if "=" in part:
                key, value = part.split("=", 1)
                fields.setdefault(key, value)
    fields["cpus_by_node"] = cpus
    fields["gpus_by_node"] = gpus
    return fields


def _count_ids(ids: str) -> int:
    count = 0
    for piece in ids.split(","):
        low, _, high = piece.partition("-")
        count += int(high or low) - int(low) + 1
    return count
