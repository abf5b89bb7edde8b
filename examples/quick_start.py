"""Quick Start: run an executable and a Python function on the default backend."""

import asyncio

import rhapsody


def square(x: int) -> int:
    return x * x


async def main() -> None:
    backend = await rhapsody.get_backend("concurrent")
    backend.register_callback(lambda task, state: print(f"  {task['uid']}: {state}"))
    tasks = [
        {"uid": "hello", "executable": "/bin/echo", "arguments": ["Hello from RHAPSODY"]},
        {"uid": "square", "function": square, "args": [7]},
    ]
    futures = await backend.submit_tasks(tasks)
    results = await asyncio.gather(*futures)
    print("stdout:", results[0]["stdout"].strip())
    print("return value:", results[1]["return_value"])
    await backend.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
