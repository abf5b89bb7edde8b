"""The `rhapsody` command."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rhapsody
from rhapsody.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert rhapsody.__version__ in capsys.readouterr().out


def test_backends_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "concurrent" in out and "rhapsody-core" in out and "radical_pilot" in out


def test_plugins_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--all"]) == 0
    names = [p["name"] for p in json.loads(capsys.readouterr().out)]
    assert "concurrent" in names and "noop" in names


def test_run_example_pipeline_twice_at_once() -> None:
    """The README's main job, verbatim (from the repository root), twice at the same time: each
    run has its own run directory, so neither overwrites the other's files."""
    root = EXAMPLES.parent
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "rhapsody", "run", "examples/pipeline.toml", "--no-progress"],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "300"},
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    folders = []
    try:
        for out, _ in outputs:
            match = re.search(r"^run directory: (.+)$", out, re.MULTILINE)
            if match:
                folders.append(Path(match.group(1)))
        for run, (out, err) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, err
            assert "9 tasks in" in out and "9 done" in out
            assert "combine: sum of 1..1000000 = 500000500000" in out
        assert len(set(folders)) == 2
        for folder in folders:
            assert folder.parent == EXAMPLES / "runs"
            assert sorted(p.name for p in folder.glob("chunk.*.sum")) == [
                f"chunk.{i}.sum" for i in range(4)
            ]
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            (EXAMPLES / "runs").rmdir()


def test_run_reports_failures_and_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text(
        json.dumps(
            {
                "tasks": [
                    {
                        "uid": "bad",
                        "executable": "/bin/sh",
                        "arguments": ["-c", "echo broken >&2; exit 4"],
                    },
                    {"uid": "after", "executable": "/bin/true", "dependencies": ["bad"]},
                    {"uid": "fine", "executable": "/bin/true"},
                ]
            }
        )
    )
    assert main(["run", str(flow), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "exit code 4" in out and "broken" in out and "dependency 'bad' failed" in out


def test_workflow_errors_name_file_line_task_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = tmp_path / "flow.toml"
    flow.write_text(
        '[[tasks]]\nuid = "ok"\nexecutable = "/bin/true"\n\n'
        '[[tasks]]\nuid = "broken"\nexecutable = "/bin/true"\ncores = -2\n'
    )
    assert main(["run", str(flow), "--no-progress"]) == 2
    err = capsys.readouterr().out
    assert f"{flow}:6" in err and "task 'broken'" in err and "field 'cores'" in err

    flow.write_text("[[tasks]\n")
    assert main(["run", str(flow)]) == 2
    assert "invalid TOML" in capsys.readouterr().err

    flow.write_text('[[tasks]]\nuid = "f"\nfunction = "no_such_module_xyz:f"\n')
    assert main(["run", str(flow)]) == 2
    assert "cannot import 'no_such_module_xyz:f'" in capsys.readouterr().err
