"""`rhapsody report --html`: the page, loaded in a real headless Chromium, draws its Gantt bars."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rhapsody.cli import main
from rhapsody.trace import TraceRecorder

CHROMIUM = shutil.which("chromium")
HOSTILE = "</script><b>x"  # a uid that would end the page's data block if not escaped


class Bars(HTMLParser):
    """Collects the `data-uid` and `class` of every SVG rect in a DOM dump."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        fields = dict(attrs)
        if tag == "rect" and "task-bar" in (fields.get("class") or ""):
            self.bars.append((fields.get("data-uid") or "", fields.get("class") or ""))


def write_trace(path: Path) -> None:
    now = [0.0]
    recorder = TraceRecorder(clock=lambda: now[0])
    tasks = {
        "a": {"uid": "a"},
        HOSTILE: {"uid": HOSTILE},
        "c": {"uid": "c", "dependencies": ["a"]},
    }
    for at, uid, state in [
        (0.0, "a", "EXECUTING"),
        (0.0, HOSTILE, "EXECUTING"),
        (1.0, HOSTILE, "FAILED"),
        (2.0, "a", "DONE"),
        (2.0, "c", "EXECUTING"),
        (5.0, "c", "DONE"),
    ]:
        now[0] = at
        recorder.record("local", tasks[uid], state)
    recorder.write(path)


def test_page_is_self_contained(tmp_path: Path) -> None:
    write_trace(tmp_path / "trace.json")
    assert main(["report", str(tmp_path / "trace.json"), "--html", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    # Nothing to fetch: no external scripts, styles or images; the only URL is SVG's namespace.
    assert re.findall(r"\w+://[^\s\"'<>]+", page) == ["http://www.w3.org/2000/svg"]
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    assert HOSTILE not in page  # escaped in the data block and the tables


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_draws_one_bar_per_attempt(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    write_trace(tmp_path / "trace.json")
    page = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "trace.json"), "--html", str(page)]) == 0
    dump = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dump.returncode == 0, dump.stderr
    parser = Bars()
    parser.feed(dump.stdout)
    # The bars exist only if the page's script ran to the end on its own data.
    assert sorted(parser.bars) == sorted(
        [
            ("a", "task-bar state-DONE critical"),
            (HOSTILE, "task-bar state-FAILED"),
            ("c", "task-bar state-DONE critical"),
        ]
    )
