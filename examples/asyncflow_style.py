"""Two executable tasks where the second depends on the first (the AsyncFlow integration
pattern: a workflow engine submits dicts and follows states through a callback)."""

import asyncio
import tempfile
from pathlib import Path

from rhapsody.backends.constants import StateMapper
from rhapsody.backends.execution import ConcurrentExecutionBackend


async def main() -> None:
    backend = await ConcurrentExecutionBackend()
    states = StateMapper(backend="concurrent")
    done = asyncio.Event()

    def on_state(task: dict, state: str) -> None:
        print(f"  {task['uid']} -> {state}")
        if task["uid"] == "consume" and state in states.terminal_states:
            done.set()

    backend.register_callback(on_state)
    with tempfile.TemporaryDirectory() as workdir:
        data = Path(workdir) / "numbers.txt"
        await backend.submit_tasks(
            [
                {
                    "uid": "produce",
                    "executable": "/bin/sh",
                    "arguments": ["-c", f"seq 1 10 > {data}"],
                },
                {
                    "uid": "consume",
                    "executable": "/usr/bin/wc",
                    "arguments": ["-l", str(data)],
                    "dependencies": ["produce"],
                },
            ]
        )
        await done.wait()
    await backend.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
