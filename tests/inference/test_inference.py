"""AI tasks against a real model server (llama.cpp serving SmolLM2-135M), started as a service.

Deterministic checks at temperature 0; compute and AI tasks depending on each other both ways;
a server killed mid-run (restarted, or FAILED with its reason); a start-up timeout; an
in-flight request cancelled; replicas sharing the load; the server's API key; clear errors.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request

import pytest
from inference_support import CAPITAL, MODEL, SYSTEM, llama_processes, requires_model

import rhapsody
from rhapsody.errors import TaskExecutionError, TaskValidationError
from rhapsody.inference import launchers
from rhapsody.inference.backend import InferenceBackend
from rhapsody.states import CANCELED, DONE, EXECUTING, FAILED

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_server_left")]


def llm(uid: str = "llm", **options: object) -> dict[str, object]:
    assert MODEL is not None
    return launchers.llama_cpp(MODEL, uid=uid, **options)  # type: ignore[arg-type]


def ask(uid: str, prompt: object = CAPITAL, **fields: object) -> dict[str, object]:
    task = {"uid": uid, "prompt": prompt, "system_prompt": SYSTEM, "temperature": 0,
            "max_tokens": 16, "service": "llm"}
    task.update(fields)
    return task


async def wait_state(task: dict[str, object], state: str) -> None:
    for _ in range(1200):
        if task.get("state") == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{task['uid']} never reached {state}: {task.get('state')}")


@requires_model
async def test_the_model_answers_deterministically_at_temperature_zero(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = llm()
    key = server["secret_environment"]["API_KEY"]  # type: ignore[index]
    async with rhapsody.Session() as session:
        first, second = ask("q1"), ask("q2")
        futures = await session.submit_tasks([server, first, second])
        await asyncio.wait_for(asyncio.gather(futures["q1"], futures["q2"]), 120)
        assert first["response"] == second["response"] == "The capital of France is Paris."
        assert first["usage"]["completion_tokens"] > 0  # type: ignore[index]
        assert first["usage"]["prompt_tokens"] > 0  # type: ignore[index]
        assert first["served_by"] == [server["endpoint"]]
        assert first["latency"] > 0  # type: ignore[operator]
        # the server is not open to anyone who reaches loopback
        with pytest.raises(urllib.error.HTTPError) as refused:
            url = f"{server['endpoint']}/v1/models"
            await asyncio.to_thread(urllib.request.urlopen, url, timeout=10)
        assert refused.value.code == 401
        assert server["state"] == EXECUTING
    assert server["state"] == DONE
    assert key not in caplog.text


@requires_model
async def test_a_list_of_prompts_gives_one_response_each_and_the_usage_of_all() -> None:
    async with rhapsody.Session() as session:
        many = ask("many", [CAPITAL, "What is 2+2?"])
        one = ask("one", "What is 2+2?")
        futures = await session.submit_tasks([llm(), many, one])
        await asyncio.wait_for(asyncio.gather(futures["many"], futures["one"]), 120)
    assert isinstance(many["response"], list) and len(many["response"]) == 2
    assert many["response"][0] == "The capital of France is Paris."
    assert many["response"][1] == one["response"]
    assert many["usage"]["total_tokens"] > one["usage"]["total_tokens"]  # type: ignore[index]


@requires_model
async def test_the_completions_api_continues_a_prompt() -> None:
    async with rhapsody.Session() as session:
        done = ask("complete", "The capital of France is", api="completions", max_tokens=4,
                   system_prompt=None)
        futures = await session.submit_tasks([llm(), done])
        await asyncio.wait_for(futures["complete"], 120)
    assert "Paris" in done["response"] and done["usage"]["completion_tokens"] > 0  # type: ignore[index]


@requires_model
async def test_compute_and_ai_tasks_depend_on_each_other_both_ways() -> None:
    async with rhapsody.Session() as session:
        make = {"uid": "make", "executable": "/bin/echo", "arguments": ["France"]}
        question = ask("question", dependencies=["make"])
        reads = {
            "uid": "reads",
            "function": lambda: "paris" in question["response"].lower(),  # type: ignore[union-attr]
            "dependencies": ["question"],
        }
        futures = await session.submit_tasks([llm(), make, question, reads])
        result = await asyncio.wait_for(futures["reads"], 120)
    assert result["return_value"] is True
    assert session.backends["inference"].task_state("question") == DONE
    assert question["state"] == DONE and question["backend"] == "inference"


@requires_model
async def test_a_killed_server_is_restarted_and_later_requests_are_served() -> None:
    server = llm(restarts=1)
    async with rhapsody.Session() as session:
        futures = await session.submit_tasks([server, ask("before")])
        await asyncio.wait_for(futures["before"], 120)
        first = server["endpoint"]
        [proc] = llama_processes()
        proc.kill()
        for _ in range(1200):
            if server.get("restarts") == 1 and server["endpoint"] != first:
                break
            await asyncio.sleep(0.05)
        after = ask("after")
        more = await session.submit_tasks([after])
        await asyncio.wait_for(more["after"], 120)
    assert after["response"] == "The capital of France is Paris."
    assert after["served_by"] == [server["endpoint"]] != [first]
    assert server["state"] == DONE


@requires_model
async def test_a_killed_server_without_restarts_fails_with_its_reason_and_so_do_its_users() -> (
    None
):
    server = llm()
    async with rhapsody.Session() as session:
        futures = await session.submit_tasks([server, ask("before")])
        await asyncio.wait_for(futures["before"], 120)
        [proc] = llama_processes()
        proc.kill()
        await wait_state(server, FAILED)
        assert "service died after it was ready: killed by signal SIGKILL" in str(
            server["exception"]
        )
        late = await session.submit_tasks([ask("late")])
        [error] = await asyncio.gather(*late, return_exceptions=True)
    assert isinstance(error, TaskExecutionError)
    assert "dependency 'llm' failed" in str(error)


@requires_model
async def test_a_server_that_is_not_ready_in_time_fails_and_is_stopped() -> None:
    async with rhapsody.Session() as session:
        futures = await session.submit_tasks([llm(timeout=0.2), ask("never")])
        errors = await asyncio.gather(*futures, return_exceptions=True)
    assert "not ready within 0.2 s (waited for GET /v1/models)" in str(errors[0])
    assert "dependency 'llm' failed" in str(errors[1])


@requires_model
async def test_cancelling_an_ai_task_aborts_its_request_and_the_server_serves_on() -> None:
    async with rhapsody.Session() as session:
        long = ask("long", "Write a very long story about a dragon.", max_tokens=2000,
                   temperature=0.8)
        futures = await session.submit_tasks([llm(), long])
        await wait_state(long, EXECUTING)
        await asyncio.sleep(0.3)  # the request is on the server now
        assert await session.backends["inference"].cancel_task("long") is True
        await asyncio.wait([futures["long"]], timeout=30)
        assert futures["long"].cancelled() and long["state"] == CANCELED
        # a task's `timeout` bounds its requests the same way
        slow = ask("slow", "Write a very long story about a dragon.", max_tokens=2000,
                   temperature=0.8, timeout=0.5)
        more = await session.submit_tasks([slow, ask("next", dependencies=["slow"])])
        errors = await asyncio.wait_for(asyncio.gather(*more, return_exceptions=True), 120)
        assert "timed out after 0.5 s" in str(errors[0]) and slow["state"] == FAILED
        served = await session.submit_tasks([ask("served")])
        await asyncio.wait_for(served["served"], 120)
    assert "Paris" in served["served"].result()["response"]


@requires_model
async def test_embeddings_of_each_prompt() -> None:
    async with rhapsody.Session() as session:
        server = llm(arguments=["--embedding", "true"])
        embed = {"uid": "embed", "api": "embeddings", "prompt": ["cat", "dog"], "service": "llm"}
        futures = await session.submit_tasks([server, embed])
        await asyncio.wait_for(futures["embed"], 120)
    vectors = embed["response"]  # one per prompt, as the server gives it (this model has no
    assert len(vectors) == 2  # pooling: llama.cpp returns one vector per token)
    rows = [v if isinstance(v[0], list) else [v] for v in vectors]
    assert all(len(row) > 100 and isinstance(row[0], float) for r in rows for row in r)
    assert rows[0] != rows[1]


@requires_model
async def test_two_replicas_share_the_requests() -> None:
    servers = launchers.replicas(llm(), 2)
    uids = [s["uid"] for s in servers]
    async with rhapsody.Session() as session:
        asks = [ask(f"a{i}", service=uids, max_tokens=4) for i in range(8)]
        futures = await session.submit_tasks([*servers, *asks])
        await asyncio.wait_for(asyncio.gather(*(futures[a["uid"]] for a in asks)), 120)
    used = {a["served_by"][0] for a in asks}  # type: ignore[index]
    assert used == {s["endpoint"] for s in servers}
    assert servers[0]["secret_environment"] != servers[1]["secret_environment"]


@requires_model
async def test_a_fixed_endpoint_with_its_key_and_with_a_wrong_key() -> None:
    server = llm()
    async with rhapsody.Session() as session:
        await asyncio.wait_for((await session.submit_tasks([server]))["llm"], 120)
        key = server["secret_environment"]["API_KEY"]  # type: ignore[index]
        good = ask("good", service=None, endpoint=server["endpoint"],
                   secret_environment={"OPENAI_API_KEY": key})
        bad = ask("bad", service=None, endpoint=server["endpoint"],
                  secret_environment={"OPENAI_API_KEY": "wrong"})
        futures = await session.submit_tasks([good, bad])
        results = await asyncio.gather(*futures, return_exceptions=True)
    assert good["response"] == "The capital of France is Paris."
    assert isinstance(results[1], TaskExecutionError)
    message = str(results[1])
    assert "task 'bad'" in message and str(server["endpoint"]) in message
    assert "HTTP 401" in message and "Invalid API key" in message


@requires_model
async def test_ai_task_objects_are_awaitable() -> None:
    async with rhapsody.Session() as session:
        task = rhapsody.AITask(CAPITAL, system_prompt=SYSTEM, service="llm", temperature=0,
                               max_tokens=16)
        await session.submit_tasks([llm(), task])
        done = await asyncio.wait_for(task, 120)
    assert done is task and task.response == "The capital of France is Paris."
    assert task.state == DONE


async def test_busy_answers_are_retried_with_backoff() -> None:
    """A server answering 503 (then 429) is retried; the third answer is used. (A stand-in
    server: llama.cpp cannot be made to answer 503 on demand; the real-server tests above
    cover the rest.)"""
    answers = [(503, b"busy"), (429, b"slow down"), (200, _REPLY)]
    seen: list[float] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(
            line.split(b":")[1] for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ))
        await reader.readexactly(length)
        seen.append(asyncio.get_running_loop().time())
        status, body = answers.pop(0)
        writer.write(
            b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Retry-After: 0\r\nConnection: close\r\n\r\n%s" % (status, len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = InferenceBackend(name="inference", backoff=0.2, max_retries=3)
    try:
        async with rhapsody.Session([backend]) as session:
            task = {"uid": "busy", "prompt": "hi", "model": "m",
                    "endpoint": f"http://127.0.0.1:{port}"}
            done = await asyncio.wait_for((await session.submit_tasks([task]))["busy"], 60)
    finally:
        server.close()
    assert done["response"] == "ok" and len(seen) == 3
    assert seen[1] - seen[0] >= 0.2 and seen[2] - seen[1] >= 0.4  # doubled each time


_REPLY = (
    b'{"model": "m", "choices": [{"message": {"role": "assistant", "content": "ok"}}],'
    b' "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}'
)


async def test_an_unreachable_server_is_retried_then_fails_naming_it() -> None:
    backend = InferenceBackend(name="inference", backoff=0.01, max_retries=2)
    async with rhapsody.Session([backend]) as session:
        futures = await session.submit_tasks(
            [{"uid": "lost", "prompt": "hi", "endpoint": "http://127.0.0.1:9"}]
        )
        [error] = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(error, TaskExecutionError)
    assert "task 'lost': gave up after 3 tries: http://127.0.0.1:9" in str(error)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"service": "llm"}, "needs either 'executable' or 'function'"),
        ({"prompt": "x"}, "say who serves it"),
        ({"prompt": "x", "messages": [], "service": "s"}, "either 'prompt' or 'messages'"),
        ({"prompt": [], "service": "s"}, "non-empty list of strings"),
        ({"prompt": "x", "service": "s", "temperature": -1}, "field 'temperature'"),
        ({"prompt": "x", "service": "s", "max_tokens": 0}, "field 'max_tokens'"),
        ({"prompt": "x", "endpoint": "localhost:8000"}, "http(s):// URL"),
        ({"prompt": "x", "endpoint": "http://h", "service": "s"}, "not both"),
        ({"prompt": "x", "service": "s", "api": "images"}, "must be one of chat"),
        ({"messages": [{"role": "robot", "content": "x"}], "service": "s"}, "needs a 'role'"),
        ({"prompt": "x", "service": "s", "arguments": ["a"]}, "runs no program"),
    ],
)
async def test_bad_ai_tasks_are_rejected_naming_the_task_and_field(
    fields: dict[str, object], message: str
) -> None:
    backend = InferenceBackend(name="inference")
    async with rhapsody.Session([backend]) as session:
        with pytest.raises(TaskValidationError, match="task 'bad'") as caught:
            await session.submit_tasks([{"uid": "bad", "backend": "inference", **fields}])
    assert message in str(caught.value)


async def test_an_ai_task_given_to_a_compute_backend_says_where_it_belongs() -> None:
    backend = await rhapsody.get_backend("concurrent")
    try:
        with pytest.raises(TaskValidationError, match="an AI task cannot run on the concurrent"):
            await backend.submit_tasks([{"uid": "x", "prompt": "hi", "endpoint": "http://h"}])
    finally:
        await backend.shutdown()


def test_the_vllm_launcher_builds_a_gpu_placed_protected_server_task() -> None:
    task = launchers.vllm("Qwen/Qwen2.5-0.5B-Instruct", uid="big", gpus=2, cores=4)
    assert task["executable"] == "vllm"
    assert task["arguments"] == [
        "serve", "Qwen/Qwen2.5-0.5B-Instruct", "--host", "{host}", "--port", "{port}",
        "--tensor-parallel-size", "2",
    ]
    assert task["gpus"] == 2 and task["cores"] == 4
    assert task["service"] == {"http": "/v1/models", "timeout": 900.0, "restarts": 0,
                               "lifetime": "session", "auth": "VLLM_API_KEY"}
    assert len(task["secret_environment"]["VLLM_API_KEY"]) >= 24  # type: ignore[index]
    open_task = launchers.vllm("m", api_key=False)
    assert "secret_environment" not in open_task and "auth" not in open_task["service"]
    # validated as a service task: the http probe finds its {port}
    from rhapsody.task import TaskDescription

    desc = TaskDescription.from_dict(task, "big")
    assert desc.service is not None and desc.gpus == 2
    assert "VLLM_API_KEY" in repr(desc) and task["secret_environment"]["VLLM_API_KEY"] not in repr(  # type: ignore[index]
        desc
    )
