"""A llama.cpp server (SmolLM2-135M) run as a service task by a dask worker, serving AI tasks.

The Session runs the server and the compute tasks on an embedded dask cluster and the AI tasks
on its inference backend: a compute task feeds the question's dependency, the answer decides
the next compute task, and closing the session stops the server on its worker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="the dask backend needs dask.distributed")

import psutil
from inference_support import CAPITAL, MODEL, SYSTEM, llama_processes, requires_model

import rhapsody
from rhapsody.inference import launchers
from rhapsody.states import DONE
from rhapsody_dask.backend import DaskExecutionBackend

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_server_left")]


@requires_model
async def test_a_llama_cpp_server_on_dask_answers_and_the_answer_drives_the_next_task(
    tmp_path: Path,
) -> None:
    assert MODEL is not None
    server = launchers.llama_cpp(MODEL, uid="llm")
    backend = DaskExecutionBackend(n_workers=2, threads_per_worker=1, work_dir=tmp_path)
    async with rhapsody.Session([backend]) as session:
        make = {"uid": "make", "executable": "/bin/echo", "arguments": ["France"]}
        question = {"uid": "question", "prompt": CAPITAL, "system_prompt": SYSTEM,
                    "temperature": 0, "max_tokens": 16, "service": "llm",
                    "dependencies": ["make"]}
        futures = await session.submit_tasks([server, make, question])
        await asyncio.wait_for(futures["question"], 120)
        assert question["response"] == "The capital of France is Paris."
        assert server["backend"] == backend.name and question["backend"] == "inference"
        [proc] = llama_processes()  # a child of a dask worker
        assert proc.parent() is not None and proc.parent().pid != psutil.Process().pid
        # the answer decides what runs next
        city = "Paris" if "Paris" in str(question["response"]) else "elsewhere"
        more = await session.submit_tasks(
            [{"uid": "next", "executable": "/bin/echo", "arguments": [city],
              "dependencies": ["question"]}]
        )
        assert (await asyncio.wait_for(more["next"], 60))["stdout"] == "Paris\n"
    assert server["state"] == DONE
    assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
