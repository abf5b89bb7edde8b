"""Start a service program where it runs, on a node the client cannot choose a port for.

    python -m rhapsody.services.on_node --address-file F [--iface NAME] [--port N]
                                        [--env NAME ...] -- PROGRAM [ARGUMENT ...]

A backend whose services run on other nodes (radical_pilot on a batch system) launches this
instead of the program: it takes the node's address (that of `--iface`, else the address the
node's hostname resolves to), a free port there (or `--port`), puts them for `{host}` and
`{port}` in the arguments and in the environment variables named by `--env`, writes
`{"host": ..., "port": ...}` to the address file (on a file system the client reads: it probes
and publishes that address), then becomes the program (exec: same process, so stopping the
task stops the program). Plain text replacement, no shell, as where the engine fills them in.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from rhapsody.services.spec import PORT_PLACEHOLDER
from rhapsody.services.supervisor import fill, free_port


def node_address(iface: str | None) -> str:
    """The IPv4 address of interface `iface`, or the one this node's hostname resolves to."""
    if iface:
        import psutil

        for addr in psutil.net_if_addrs().get(iface, ()):
            if addr.family == socket.AF_INET:
                return str(addr.address)
        raise SystemExit(f"rhapsody.services.on_node: interface {iface!r} has no IPv4 address")
    return socket.gethostbyname(socket.gethostname())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rhapsody.services.on_node")
    parser.add_argument("--address-file", required=True)
    parser.add_argument("--iface")
    parser.add_argument("--port", type=int)
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("program", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not program:
        parser.error("no program to start after --")
    host = node_address(args.iface)
    texts = [*program, *(os.environ.get(name, "") for name in args.env)]
    port = args.port
    if port is None and any(PORT_PLACEHOLDER in text for text in texts):
        port = free_port(host)

    env = dict(os.environ)
    for name in args.env:
        if name in env:
            env[name] = fill(env[name], host, port)
    program = [fill(text, host, port) for text in program]
    # Written whole, then renamed: the client never reads half an address.
    partial = f"{args.address_file}.partial"
    with open(partial, "w") as file:
        json.dump({"host": host, "port": port}, file)
    os.replace(partial, args.address_file)
    sys.stdout.flush()
    os.execvpe(program[0], program, env)


if __name__ == "__main__":
    main()
