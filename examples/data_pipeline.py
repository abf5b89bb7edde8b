"""A data-processing pipeline: fan-out generation, per-chunk analysis, fan-in summary.

Generates N chunks of numbers with executables, analyses each chunk with a Python function
that depends on its generator, then sums everything in a final task that depends on all
analyses. Prints each task's state and the result.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import rhapsody


def analyse(path: str) -> dict[str, float]:
    values = [float(line) for line in Path(path).read_text().split()]
    return {"count": len(values), "sum": sum(values), "max": max(values)}


def summarise(*paths: str) -> float:
    return sum(analyse(p)["sum"] for p in paths)


async def main(chunks: int, workdir: Path) -> int:
    backend = await rhapsody.get_backend("concurrent")
    gen, ana = [], []
    for i in range(chunks):
        path = str(workdir / f"chunk{i}.txt")
        gen.append(
            {
                "uid": f"generate.{i}",
                "executable": "/bin/sh",
                "arguments": ["-c", f'seq {i * 100 + 1} {(i + 1) * 100} > "$1"', "sh", path],
            }
        )
        ana.append(
            {
                "uid": f"analyse.{i}",
                "function": analyse,
                "args": [path],
                "dependencies": [f"generate.{i}"],
            }
        )
    paths = [t["args"][0] for t in ana]
    final = {
        "uid": "summary",
        "function": summarise,
        "args": paths,
        "dependencies": [t["uid"] for t in ana],
    }

    futures = await backend.submit_tasks([*gen, *ana, final])
    await asyncio.gather(*futures, return_exceptions=True)
    failed = 0
    for uid, future in futures.items():
        result = future.result() if not future.cancelled() and not future.exception() else None
        state = result["state"] if result else "FAILED"
        failed += state != "DONE"
        print(f"{uid:<12} {state}")
    total = futures["summary"].result()["return_value"] if not failed else None
    print(f"sum of 1..{chunks * 100} = {total}")
    await backend.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rhapsody-pipeline-") as tmp:
        sys.exit(asyncio.run(main(args.chunks, Path(tmp))))
