"""A data-processing pipeline: fan-out generation, per-chunk analysis, fan-in summary.

Generates N chunks of numbers with executables, analyses each chunk with a Python function
that depends on its generator, then sums everything in a final task that depends on all
analyses; the tasks are a sweep expanded by `rhapsody.expand`. Prints each task's state and
the result.
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


def summarise(workdir: str, chunks: int) -> float:
    return sum(analyse(f"{workdir}/chunk{i}.txt")["sum"] for i in range(chunks))


async def main(chunks: int, workdir: Path) -> int:
    backend = await rhapsody.get_backend("concurrent")
    # The same sweep as a workflow file's `matrix` (see examples/pipeline.toml): one generator
    # and one analysis per chunk, the analysis after its own generator, the summary after all.
    tasks = rhapsody.expand(
        [
            {
                "uid": "generate.{i}",
                "executable": "/bin/sh",
                "arguments": [
                    "-c",
                    'seq $(($1 * 100 + 1)) $((($1 + 1) * 100)) > "$2"',
                    "sh",
                    "{i}",
                    "{workdir}/chunk{i}.txt",
                ],
                "matrix": {"i": range(chunks)},
            },
            {
                "uid": "analyse.{i}",
                "function": analyse,
                "args": ["{workdir}/chunk{i}.txt"],
                "dependencies": ["generate.{i}"],
                "matrix": {"i": range(chunks)},
            },
            {
                "uid": "summary",
                "function": summarise,
                "args": ["{workdir}", chunks],
                "dependencies": ["analyse.*"],
            },
        ],
        values={"workdir": str(workdir)},
    )

    futures = await backend.submit_tasks(tasks)
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
