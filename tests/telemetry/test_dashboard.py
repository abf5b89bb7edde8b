"""The live dashboard: refused without its token, streams updates (server-sent events), and in a
real headless Chromium shows a running workflow's counts changing without reloads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs rhapsody-core[telemetry]")

from rhapsody.backends.execution import ConcurrentExecutionBackend
from rhapsody.session import Session
from rhapsody.telemetry import ServiceReady

CHROMIUM = shutil.which("chromium")
HOSTILE = "</script><b>bad</b>"  # a uid that would become markup if the page used innerHTML


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            code: int = response.status
            return code
    except urllib.error.HTTPError as exc:
        return exc.code


def test_requests_without_the_token_are_refused() -> None:
    async def go() -> tuple[str, dict[str, int]]:
        session = Session()
        url = await session.start_dashboard()
        parts = urllib.parse.urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        token = parts.path.strip("/")
        codes = {}
        for name, target in {
            "page": url,
            "summary": url + "summary",
            "root": base + "/",
            "events without token": base + "/events",
            "wrong token": f"{base}/{'x' * len(token)}/",
            "token prefix": f"{base}/{token[:-1]}/",
            "token in query": f"{base}/events?token={token}",
        }.items():
            codes[name] = await asyncio.to_thread(status_of, target)
        await session.close()
        return url, codes

    url, codes = asyncio.run(go())
    assert url.startswith("http://127.0.0.1:")
    assert len(urllib.parse.urlsplit(url).path.strip("/")) >= 32  # 24 random bytes
    assert codes == {
        "page": 200,
        "summary": 200,
        "root": 403,
        "events without token": 403,
        "wrong token": 403,
        "token prefix": 403,
        "token in query": 403,
    }


async def read_events(url: str, count: int) -> list[dict[str, Any]]:
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"GET {parts.path}events HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"text/event-stream" in head
    updates = []
    while len(updates) < count:
        line = await reader.readline()
        if line.startswith(b"data: "):
            updates.append(json.loads(line[6:]))
    writer.close()
    return updates


def test_the_stream_sends_what_changed() -> None:
    async def go() -> list[dict[str, Any]]:
        session = Session()
        manager = await session.start_telemetry(resource_poll_interval=0.1)
        url = await manager.start_dashboard(interval=0.1)
        futures = await session.submit_tasks(
            [
                {"uid": "quick", "executable": "/bin/true"},
                {"uid": "broken", "executable": "/bin/sh", "arguments": ["-c", "exit 4"]},
                {"uid": "slow", "executable": "/bin/sleep", "arguments": ["1"]},
            ]
        )
        reading = asyncio.ensure_future(read_events(url, 6))
        await asyncio.gather(*futures, return_exceptions=True)
        updates = await asyncio.wait_for(reading, 30)
        await session.close()
        return updates

    updates = asyncio.run(go())
    attempts = [a["task_id"] for u in updates for a in u["attempts"]]
    assert sorted(attempts) == sorted(set(attempts))  # each finished attempt is sent once
    assert {"quick", "broken"} <= set(attempts)
    failures = [f for u in updates for f in u["failures"]]
    assert [(f["task_id"], f["exit_code"]) for f in failures] == [("broken", 4)]
    assert any(s["node_id"] for u in updates for s in u["samples"])
    assert updates[0]["totals"]["submitted"] == 3


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4)."""

    def __init__(self, profile: Path) -> None:
        assert CHROMIUM is not None
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire() -> None:
            # The browser reads commands on fd 3 and writes answers on fd 4.
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            preexec_fn=wire,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next = 0
        self._answers: dict[int, dict[str, Any]] = {}
        self._ready = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_browser, 65536)
            if not chunk:
                return
            buffer += chunk
            while b"\0" in buffer:
                message, buffer = buffer.split(b"\0", 1)
                answer = json.loads(message)
                if "id" in answer:
                    with self._ready:
                        self._answers[answer["id"]] = answer
                        self._ready.notify_all()

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next += 1
        number = self._next
        command: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session is not None:
            command["sessionId"] = session
        os.write(self._to_browser, json.dumps(command).encode() + b"\0")
        with self._ready:
            if not self._ready.wait_for(lambda: number in self._answers, timeout=60):
                raise TimeoutError(f"no answer to {method}")
            answer = self._answers.pop(number)
        assert "error" not in answer, answer
        result: dict[str, Any] = answer["result"]
        return result

    def open(self, url: str) -> str:
        target = self.send("Target.createTarget", url=url)["targetId"]
        session: str = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.send("Runtime.evaluate", session, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def close(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, AssertionError):  # already gone
            self.send("Browser.close")
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)


READ_PAGE = """JSON.stringify({
  done: document.querySelector('#count-DONE b')?.textContent ?? null,
  updates: document.getElementById('status')?.dataset.updates ?? '0',
  bars: document.querySelectorAll('#timeline rect').length,
  failed: [...document.querySelectorAll('#failures tbody tr')].map(r => r.cells[0].textContent),
  services: [...document.querySelectorAll('#services tbody tr')].map(r => r.cells[1].textContent),
  navigations: performance.getEntriesByType('navigation').length,
  loadedAt: window.__loadedAt ?? (window.__loadedAt = performance.timeOrigin),
})"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_shows_the_counts_of_a_running_workflow_change(tmp_path: Path) -> None:
    async def go() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        # Two slots, 10 tasks of 0.5 s and one that fails: about 2.5 s of visible progress,
        # updates every 0.2 s (a loaded machine still shows several intermediate counts).
        backend = ConcurrentExecutionBackend(cores=2)
        session = Session([backend])
        manager = await session.start_telemetry(resource_poll_interval=0.2)
        url = await manager.start_dashboard(interval=0.2)
        ready = ServiceReady(
            session_id=session.uid,
            backend="local",
            task_id="svc",
            endpoint="http://127.0.0.1:8080/v1",
        )
        manager.emit(ready)
        browser = await asyncio.to_thread(Chromium, tmp_path / "profile")
        try:
            page = await asyncio.to_thread(browser.open, url)
            # The page is up (one update drawn) before the workflow starts.
            for _ in range(300):
                first = json.loads(await asyncio.to_thread(browser.evaluate, page, READ_PAGE))
                if first["done"] is not None:
                    break
                await asyncio.sleep(0.1)
            tasks: list[dict[str, Any]] = [
                {"uid": f"s{i}", "executable": "/bin/sleep", "arguments": ["0.5"]}
                for i in range(10)
            ]
            tasks.append({"uid": HOSTILE, "executable": "/bin/sh", "arguments": ["-c", "exit 2"]})
            futures = await session.submit_tasks(tasks)
            pending = asyncio.ensure_future(asyncio.gather(*futures, return_exceptions=True))
            seen = [first]
            while not pending.done():
                seen.append(json.loads(await asyncio.to_thread(browser.evaluate, page, READ_PAGE)))
                await asyncio.sleep(0.1)
            await pending
            final: dict[str, Any] = {}
            for _ in range(100):  # the next update or two carry the last completions
                final = json.loads(await asyncio.to_thread(browser.evaluate, page, READ_PAGE))
                if final["done"] == "10" and final["failed"]:
                    break
                await asyncio.sleep(0.1)
        finally:
            await asyncio.to_thread(browser.close)
            await session.close()
        return seen, final

    seen, final = asyncio.run(go())
    assert seen[0]["done"] == "0"
    done_values = [int(s["done"]) for s in seen if s["done"] is not None]
    assert done_values == sorted(done_values)
    # The browser saw intermediate counts, not only the start and the end.
    assert len({v for v in done_values if 0 < v < 10}) >= 2, done_values
    assert final["done"] == "10"
    assert final["failed"] == [HOSTILE]  # shown as text: markup in a uid is not interpreted
    assert final["services"] == ["http://127.0.0.1:8080/v1"]
    assert final["bars"] >= 11  # one bar per attempt in the timeline
    # All of it on one page load: updates streamed, never a reload.
    loaded = [s for s in [*seen, final] if s["done"] is not None]
    assert {s["navigations"] for s in loaded} == {1}
    assert len({s["loadedAt"] for s in loaded}) == 1
    assert int(final["updates"]) > int(seen[0]["updates"])


def test_rhapsody_run_dashboard_prints_a_tokened_url(tmp_path: Path) -> None:
    workflow = tmp_path / "flow.json"
    workflow.write_text(json.dumps({"tasks": [{"uid": "a", "executable": "/bin/true"}]}))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rhapsody",
            "run",
            str(workflow),
            "--dashboard",
            "--no-progress",
            "--telemetry",
            str(tmp_path / "t.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    printed = out.stdout + out.stderr
    line = next(line for line in printed.splitlines() if line.startswith("dashboard: "))
    url = line.split(" ", 1)[1]
    assert url.startswith("http://127.0.0.1:") and len(url.rstrip("/").rsplit("/", 1)[1]) >= 32
    assert '"task_id": "a"' in (tmp_path / "t.jsonl").read_text()


def test_rhapsody_run_reports_telemetry_that_cannot_start(tmp_path: Path) -> None:
    workflow = tmp_path / "flow.json"
    workflow.write_text(json.dumps({"tasks": [{"uid": "a", "executable": "/bin/true"}]}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "rhapsody",
                "run",
                str(workflow),
                "--no-progress",
                "--prometheus-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "telemetry" in out.stdout + out.stderr
    assert "Address already in use" in out.stdout + out.stderr
