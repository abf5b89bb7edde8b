"""`rhapsody run --results FILE` (JSON Lines as tasks finish) and the run directory that tasks
run in (`--run-dir`, `[workflow] run_dir`, a new one per run by default)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from rhapsody.cli import main

SWEEP = """
[[tasks]]
uid = "square.{n}"
executable = "/bin/sh"
arguments = ["-c", "echo $(($1 * $1))", "sh", "{n}"]
matrix = { n = [1, 2, 3] }

[[tasks]]
uid = "fails"
executable = "/bin/sh"
arguments = ["-c", "echo nope >&2; exit 3"]
"""


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_results_has_one_record_per_task(tmp_path: Path) -> None:
    flow = tmp_path / "flow.toml"
    flow.write_text(SWEEP)
    results = tmp_path / "results.jsonl"
    assert main(["run", str(flow), "--no-progress", "--results", str(results)]) == 1
    by_uid = {r["uid"]: r for r in records(results)}
    assert set(by_uid) == {"square.1", "square.2", "square.3", "fails"}
    square = by_uid["square.3"]
    assert square["state"] == "DONE" and square["exit_code"] == 0
    assert square["stdout"].strip() == "9" and square["parameters"] == {"n": 3}
    assert square["reason"] is None and square["resumed"] is False
    assert square["submitted"] <= square["started"] <= square["finished"]
    assert square["run_time"] == pytest.approx(square["finished"] - square["started"])
    fails = by_uid["fails"]
    assert fails["state"] == "FAILED" and fails["exit_code"] == 3
    assert "exit code 3" in fails["reason"]
    assert fails["stderr"].strip() == "nope" and fails["parameters"] == {}


def test_results_include_resumed_tasks(tmp_path: Path) -> None:
    flow = tmp_path / "flow.toml"
    marker = tmp_path / "allowed"
    flow.write_text(SWEEP.replace("echo nope >&2; exit 3", f"test -e {marker}"))
    journal, results = tmp_path / "run.db", tmp_path / "results.jsonl"
    args = ["run", str(flow), "--no-progress", "--journal", str(journal), "--results", str(results)]
    assert main(args) == 1
    marker.touch()
    assert main(args) == 0
    by_uid = {r["uid"]: r for r in records(results)}
    assert len(records(results)) == 4  # the second run's file: every task once
    assert by_uid["square.2"]["resumed"] is True and by_uid["square.2"]["state"] == "DONE"
    assert by_uid["square.2"]["stdout"].strip() == "4" and by_uid["square.2"]["started"] is None
    assert by_uid["fails"]["resumed"] is False and by_uid["fails"]["state"] == "DONE"


def test_a_killed_run_leaves_valid_json_lines(tmp_path: Path) -> None:
    pidfile = tmp_path / "sleeper.pid"
    flow = tmp_path / "flow.toml"
    flow.write_text(
        "[[tasks]]\n"
        'uid = "quick.{i}"\n'
        'executable = "/bin/echo"\n'
        'arguments = ["member {i}"]\n'
        "matrix = { i = { start = 0, stop = 50 } }\n\n"
        "[[tasks]]\n"
        'uid = "sleeper"\n'
        'executable = "/bin/sh"\n'
        f'arguments = ["-c", "echo $$ > {pidfile}; exec sleep 60"]\n'
    )
    results = tmp_path / "results.jsonl"
    run = subprocess.Popen(
        [sys.executable, "-m", "rhapsody", "run", str(flow), "--no-progress", "--results", results],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sleeper = None
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text().strip()) or (
            results.read_text().count("\n") < 50
        ):
            assert run.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "the tasks never ran"
            time.sleep(0.05)
        sleeper = int(pidfile.read_text())
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        lines = results.read_text().splitlines()
        assert results.read_text().endswith("\n")
        parsed = [json.loads(line) for line in lines]  # every line whole
        assert sorted(r["uid"] for r in parsed) == sorted(f"quick.{i}" for i in range(50))
        assert all(r["state"] == "DONE" for r in parsed)
    finally:
        if run.poll() is None:
            run.kill()
        if sleeper is not None:  # the watchdog's job; make sure in any case
            try:
                psutil.Process(sleeper).wait(timeout=30)
            except psutil.TimeoutExpired:
                psutil.Process(sleeper).kill()
                pytest.fail("the sleeper outlived the killed run by 30 s")
            except psutil.NoSuchProcess:
                pass


def test_an_interrupted_run_records_the_canceled_tasks(tmp_path: Path) -> None:
    pidfile = tmp_path / "sleeper.pid"
    flow = tmp_path / "flow.toml"
    flow.write_text(
        '[[tasks]]\nuid = "sleeper"\nexecutable = "/bin/sh"\n'
        f'arguments = ["-c", "echo $$ > {pidfile}; exec sleep 60"]\n\n'
        '[[tasks]]\nuid = "after"\nexecutable = "/bin/true"\ndependencies = ["sleeper"]\n'
    )
    results = tmp_path / "results.jsonl"
    run = subprocess.Popen(
        [sys.executable, "-m", "rhapsody", "run", str(flow), "--no-progress", "--results", results],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=60) == 130
    finally:
        if run.poll() is None:
            run.kill()
    by_uid = {r["uid"]: r for r in records(results)}
    assert by_uid["sleeper"]["state"] == "CANCELED" and by_uid["sleeper"]["started"] is not None
    assert by_uid["after"]["state"] == "CANCELED"  # it never ran
    assert by_uid["after"]["started"] is None


# -- the run directory ---------------------------------------------------------------------
PWD = """
[[tasks]]
uid = "where"
executable = "/bin/sh"
arguments = ["-c", "pwd > mark; echo {run_dir} >> mark"]
"""


def run_dir_of(out: str) -> Path:
    for line in out.splitlines():
        if line.startswith("run directory: "):
            return Path(line.removeprefix("run directory: "))
    raise AssertionError(out)


def test_each_run_gets_a_new_directory_beside_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = tmp_path / "flow.toml"
    flow.write_text(PWD)
    folders = []
    for _ in range(2):
        assert main(["run", str(flow), "--no-progress"]) == 0
        out = capsys.readouterr().out
        folder = run_dir_of(out)
        assert folder.parent == tmp_path / "runs" and folder.name.startswith("flow-")
        assert (folder / "mark").read_text() == f"{folder}\n{folder}\n"  # pwd and {run_dir}
        folders.append(folder)
    assert folders[0] != folders[1]
    assert os.getcwd() != str(folders[1])  # the command gives the caller its directory back


def test_run_dir_from_the_file_and_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = tmp_path / "flow.toml"
    flow.write_text('[workflow]\nrun_dir = "out"\n' + PWD)
    assert main(["run", str(flow), "--no-progress"]) == 0
    assert run_dir_of(capsys.readouterr().out) == tmp_path / "out"
    assert (tmp_path / "out" / "mark").exists()
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(flow), "--no-progress", "--run-dir", "elsewhere/deep"]) == 0
    assert run_dir_of(capsys.readouterr().out) == tmp_path / "elsewhere" / "deep"
    assert (tmp_path / "elsewhere" / "deep" / "mark").exists()
    assert not (tmp_path / "runs").exists()


def test_a_resumed_run_continues_in_its_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = tmp_path / "flow.toml"
    flow.write_text(
        '[[tasks]]\nuid = "make"\nexecutable = "/bin/sh"\narguments = ["-c", "echo 42 > data"]\n\n'
        '[[tasks]]\nuid = "use"\nexecutable = "/bin/sh"\ndependencies = ["make"]\n'
        'arguments = ["-c", "test -e go && cat data"]\n'
    )
    monkeypatch.chdir(tmp_path)  # a relative --journal means the caller's directory
    args = ["run", str(flow), "--no-progress", "--journal", "run.db"]
    assert main(args) == 1
    first = run_dir_of(capsys.readouterr().out)
    assert (tmp_path / "run.db").exists() and not (first / "run.db").exists()
    (first / "go").touch()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert run_dir_of(out) == first and "1 resumed from the journal" in out and "use: 42" in out
