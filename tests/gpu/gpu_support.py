"""What the GPU tests compare against: nvidia-smi's own answers."""

from __future__ import annotations

import shutil
import subprocess


def smi(*query: str) -> list[str]:
    """nvidia-smi's answer, one line per GPU (fields comma-separated, without units); none
    where nvidia-smi is missing."""
    smi_path = shutil.which("nvidia-smi")
    if smi_path is None:
        return []
    out = subprocess.run(
        [smi_path, f"--query-gpu={','.join(query)}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]
