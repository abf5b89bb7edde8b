"""Run one 3-rank mpi4py task through the `concurrent` backend inside the SLURM allocation this
runs in: Open MPI's mpirun (the backend's MPI launcher) places the ranks on the allocation's
nodes. Ranks: the first argument, else one per granted core. Prints the task's stdout
(mpi_hello.py's JSON line); exits non-zero if the task failed.

    salloc -N3 python3 mpi_across_nodes.py
"""

import asyncio
import sys
from pathlib import Path

from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.errors import TaskExecutionError
from rhapsody.platforms import detect

HELLO = Path(__file__).resolve().parent / "mpi_hello.py"


async def main() -> None:
    allocation = detect()
    ranks = int(sys.argv[1]) if len(sys.argv) > 1 else allocation.total_cores
    # MPI tasks span the allocation: schedule them into all of its cores, not only this node's.
    async with ConcurrentExecutionBackend(cores=allocation.total_cores) as backend:
        [future] = await backend.submit_tasks(
            [{"executable": sys.executable, "arguments": [str(HELLO), str(ranks)], "ranks": ranks}]
        )
        try:
            task = await future
        except TaskExecutionError as failed:
            sys.exit(f"{failed}\n{failed.task.get('stderr', '')}")
    print(task["stdout"], end="")


asyncio.run(main())
