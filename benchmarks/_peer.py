"""Runs one workload on the original RHAPSODY (rhapsody-py) inside its own venv; prints JSON.

Uses only the peer's public API (get_backend, submit_tasks, shutdown).
"""

import asyncio
import json
import sys
import time


def trivial(x: int) -> int:
    return x + 1


async def main(kind: str, n: int) -> dict[str, float]:
    import rhapsody

    backend = await rhapsody.get_backend("noop" if kind == "noop" else "concurrent")
    if kind == "true":
        tasks = [{"uid": f"t{i}", "executable": "/bin/true"} for i in range(n)]
    elif kind == "function":
        tasks = [{"uid": f"t{i}", "function": trivial, "args": [i]} for i in range(n)]
    else:
        tasks = [{"uid": f"t{i}", "executable": "/bin/true"} for i in range(n)]
    start = time.perf_counter()
    futures = await backend.submit_tasks(tasks)
    if futures is not None:  # the peer's noop returns nothing and finishes at submit
        await asyncio.gather(*futures)
    elapsed = time.perf_counter() - start
    await backend.shutdown()
    return {"seconds": elapsed, "tasks": n}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], int(sys.argv[2])))))
