"""An MPI program for the tests: checks that COMM_WORLD has the expected size and prints, from
rank 0, one JSON line: the size and the node each rank ran on (SLURM's node name inside a job
step, else the host name). Exits non-zero where the size is wrong.

    mpirun -np 3 python3 mpi_hello.py 3
"""

import json
import os
import socket
import sys

from mpi4py import MPI

world = MPI.COMM_WORLD
expected = int(sys.argv[1])
node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
nodes = world.gather(node, root=0)
if world.Get_rank() == 0:
    print(json.dumps({"size": world.Get_size(), "nodes": nodes}), flush=True)
if world.Get_size() != expected:
    print(f"COMM_WORLD has {world.Get_size()} ranks, expected {expected}", file=sys.stderr)
    sys.exit(1)
