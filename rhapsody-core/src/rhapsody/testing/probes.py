"""What the conformance kit's tasks run to report what they saw.

Functions are module-level (engines that ship them to workers pickle them by reference).
Executable probes are `python -c <one line>` programs, run with this interpreter: a line
because some engines write each argument into a launch script.
"""

from __future__ import annotations

import hashlib
import sys
import time
from typing import Any

#: environment variables whose names start with this are secrets: the probe reports a hash
SECRET_PREFIX = "RHAPSODY_KIT_SECRET"

# Prints {"argv", "cwd", "env"} as JSON (secrets hashed: the task's stdout is not masked).
_REPORT = (
    "import hashlib,json,os,sys;"
    f"h=lambda k,v: hashlib.sha256(v.encode()).hexdigest() if k.startswith({SECRET_PREFIX!r}) "
    "else v;"
    "print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(),"
    " 'env': {k: h(k, v) for k, v in os.environ.items()}}))"
)
# Writes `argv[1]` lines "out NNNNNNN" to stdout and `argv[2]` lines "err NNNNNNN" to stderr,
# then exits with `argv[3]`.
_STREAMS = (
    "import sys;n,m,c=map(int,sys.argv[1:4]);"
    "sys.stdout.write(''.join('out %07d\\n' % i for i in range(n)));sys.stdout.flush();"
    "sys.stderr.write(''.join('err %07d\\n' % i for i in range(m)));sys.stderr.flush();"
    "sys.exit(c)"
)
# Sleeps `argv[1]` seconds and prints its start and end times, and the GPUs it was given.
_SPAN = (
    "import os,sys,time;s=time.time();time.sleep(float(sys.argv[1]));"
    "print(s,time.time(),os.environ.get('CUDA_VISIBLE_DEVICES','-') or '-')"
)
# Prints {"how", "rank", "size"} as JSON, one line per rank: from mpi4py's COMM_WORLD where
# mpi4py is installed (the ranks then form one MPI program), else from what the launcher tells
# each process (Open MPI's OMPI_COMM_WORLD_*, MPICH's and SLURM's PMI_*).
_RANKS = (
    "import importlib.util,json,os;e=os.environ;"
    "w=__import__('mpi4py.MPI').MPI.COMM_WORLD if importlib.util.find_spec('mpi4py') else None;"
    "g=lambda *n: next((e[k] for k in n if k in e),None);"
    "print(json.dumps({'how':'mpi4py','rank':w.Get_rank(),'size':w.Get_size()} if w else "
    "{'how':'environment','rank':g('OMPI_COMM_WORLD_RANK','PMI_RANK','PMIX_RANK'),"
    "'size':g('OMPI_COMM_WORLD_SIZE','PMI_SIZE')}),flush=True)"
)

# A TCP server on port `argv[1]` that writes its pid to `argv[2]` and answers "pong".
_SERVICE = (
    "import os,socket,sys;s=socket.create_server(('127.0.0.1',int(sys.argv[1])));"
    "open(sys.argv[2],'w').write(str(os.getpid()));"
    "exec('while True:\\n c,_=s.accept();c.sendall(b\\'pong\\');c.close()')"
)
# Connects to the endpoint in the environment variable `argv[1]` and prints what it reads.
_CLIENT = (
    "import os,socket,sys;h,p=os.environ[sys.argv[1]].rsplit(':',1);"
    "c=socket.create_connection((h,int(p)),timeout=30);print(c.recv(16).decode())"
)


def service(pidfile: str) -> dict[str, Any]:
    """A TCP service task (`{port}` filled in by the engine) that writes its pid to `pidfile`."""
    return {
        "executable": sys.executable,
        "arguments": ["-c", _SERVICE, "{port}", pidfile],
        "service": {"tcp": True},
    }


def service_client(service_uid: str) -> dict[str, Any]:
    """A task using `service_uid` through the endpoint the engine gives it."""
    from rhapsody.services import endpoint_variable

    variable = endpoint_variable(service_uid)
    return {
        "executable": sys.executable,
        "arguments": ["-c", _CLIENT, variable],
        "dependencies": [service_uid],
    }


def report(*arguments: str) -> dict[str, Any]:
    """A task printing its arguments, working directory and environment as JSON."""
    return {"executable": sys.executable, "arguments": ["-c", _REPORT, *arguments]}


def streams(out_lines: int, err_lines: int, code: int = 0) -> dict[str, Any]:
    """A task writing numbered lines to stdout and stderr, then exiting with `code`."""
    args = ["-c", _STREAMS, str(out_lines), str(err_lines), str(code)]
    return {"executable": sys.executable, "arguments": args}


def stream_text(kind: str, lines: int) -> str:
    """What `streams` writes to `kind` ("out" or "err")."""
    return "".join(f"{kind} {i:07d}\n" for i in range(lines))


def span(seconds: float) -> dict[str, Any]:
    """A task that runs `seconds` and prints when it started and ended, and its
    `CUDA_VISIBLE_DEVICES` ("-" when unset or empty)."""
    return {"executable": sys.executable, "arguments": ["-c", _SPAN, str(seconds)]}



#: Open MPI settings for an MPI check on a single test machine (a kit's `mpi_environment`): as
#: root, over loopback TCP only (its shared-memory transport crashed with several ranks per
#: node where this was measured).
OPEN_MPI_LOOPBACK = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl": "self,tcp",
    "OMPI_MCA_btl_tcp_if_include": "lo",
    "OMPI_MCA_oob_tcp_if_include": "lo",
}

def ranks(count: int) -> dict[str, Any]:
    """A task of `count` ranks, each printing a JSON line: its rank and the size of its world."""
    return {"executable": sys.executable, "arguments": ["-c", _RANKS], "ranks": count}


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# -- function tasks ------------------------------------------------------------------------------
def succeed(x: int = 1) -> int:
    return x * 2


def fail() -> None:
    raise RuntimeError("conformance: intended failure")


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def timed_nap(seconds: float) -> tuple[float, float]:
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def echo(*args: Any, **kwargs: Any) -> list[Any]:
    return [list(args), kwargs]


def count_then_succeed(path: str, succeed_at: int) -> int:
    """Adds a line to `path` (one per attempt); fails until it holds `succeed_at` lines."""
    with open(path, "a", encoding="utf-8") as file:
        file.write("x\n")
    with open(path, encoding="utf-8") as file:
        count = len(file.readlines())
    if count < succeed_at:
        raise RuntimeError(f"conformance: attempt {count} fails")
    return count
