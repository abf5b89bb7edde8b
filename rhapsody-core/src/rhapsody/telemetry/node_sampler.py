"""Resource sampling of nodes a backend cannot call into (RADICAL-Pilot's): one process per node
writes its samples to a file in a directory the client shares, and the client reads them.

`python -m rhapsody.telemetry.node_sampler --dir D --interval S` samples this node every S
seconds (`NodeSampler`) and replaces `D/<node>.json` (write, then rename: a reader never sees
half a file) with the latest rows, whose disk and network figures are bytes counted since the
sampler started. The node is `SLURMD_NODENAME` inside a SLURM job, else the host name. It exits
on SIGTERM/SIGINT, or by itself once `D` is gone.

`SampleFiles(D).read()` returns one row per node (and GPU) that wrote since the previous read,
with the bytes moved since then: the rows `sample_resources()` returns (see `resources`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from rhapsody.telemetry.resources import BYTE_FIELDS, NodeSampler


def node_name() -> str:
    """This node's name as the batch system calls it (a SLURM node), else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def run(directory: Path, interval: float, stop: threading.Event) -> None:
    """Sample every `interval` seconds into `directory` until `stop` is set or it is gone."""
    sampler = NodeSampler(node_name())
    target = directory / f"{sampler.node_id}.json"
    staging = directory / f".{sampler.node_id}.{os.getpid()}.json"
    totals: dict[tuple[str, Any], dict[str, float]] = {}
    try:
        while not stop.wait(interval) and directory.is_dir():
            rows = sampler.sample()
            for row in rows:
                counted = totals.setdefault((row["node_id"], row["gpu_id"]), {})
                for field in BYTE_FIELDS:
                    if field in row:
                        row[field] = counted[field] = counted.get(field, 0.0) + row[field]
            with contextlib.suppress(FileNotFoundError):  # the directory went meanwhile
                staging.write_text(json.dumps({"pid": os.getpid(), "rows": rows}))
                staging.replace(target)
    finally:
        sampler.close()
        staging.unlink(missing_ok=True)


class SampleFiles:
    """Reads the files the node samplers write into one directory (see the module's doc)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen: dict[str, tuple[int, int]] = {}  # file -> (inode, mtime) at the last read
        self._counted: dict[tuple[str, Any], dict[str, float]] = {}

    def read(self) -> list[dict[str, Any]]:
        """The rows written since the previous read: byte figures are those moved since then
        (since the sampler started, on its first file)."""
        rows: list[dict[str, Any]] = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                stat = path.stat()
                version = (stat.st_ino, stat.st_mtime_ns)  # each write renames a new file
                if self._seen.get(path.name) == version:
                    continue  # nothing new from that node
                written = json.loads(path.read_text())
            except (OSError, ValueError):  # replaced or removed under us: next round
                continue
            self._seen[path.name] = version
            for row in written["rows"]:
                before = self._counted.setdefault((row["node_id"], row["gpu_id"]), {})
                for field in BYTE_FIELDS:
                    if field in row:
                        total, previous = row[field], before.get(field, 0.0)
                        # a restarted sampler counts from zero again
                        row[field] = total - previous if total >= previous else total
                        before[field] = total
                rows.append(row)
        return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rhapsody.telemetry.node_sampler")
    parser.add_argument("--dir", type=Path, required=True, help="where to write <node>.json")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error(f"--interval must be > 0 s, got {args.interval}")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run(args.dir, args.interval, stop)


if __name__ == "__main__":
    main()
