"""docs/hpc.md shows the batch scripts the SLURM tests run: every command and directive of each
script is on the page (comments aside), so the page cannot drift from what is tested."""

from __future__ import annotations

from pathlib import Path

import pytest
from slurm_support import SCRIPTS

HPC = Path(__file__).resolve().parents[2] / "docs" / "hpc.md"


@pytest.mark.parametrize("script", ["detect.sbatch", "mpi.sbatch"])
def test_the_page_shows_the_batch_script(script: str) -> None:
    page = HPC.read_text().splitlines()
    lines = (SCRIPTS / script).read_text().splitlines()
    wanted = [line for line in lines if line.strip() and not line.startswith("# ")]
    assert f"`tests/slurm/scripts/{script}`" in HPC.read_text()
    assert [line for line in wanted if line not in page] == []
