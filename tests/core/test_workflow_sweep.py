"""Matrix sweeps, `{name}` placeholders and dependency patterns (`rhapsody.expand`), and the
workflow files that use them: what a sweep expands to, and the errors and hints for mistakes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rhapsody
from rhapsody import workflow as workflows
from rhapsody.cli import main
from rhapsody.sweeps import combinations


def uids(tasks: list[dict[str, Any]]) -> list[str]:
    return [t["uid"] for t in tasks]


def test_product_in_key_order_with_ranges() -> None:
    combos = combinations({"x": [1, 2], "y": {"start": 0, "stop": 6, "step": 2}})
    assert combos == [
        {"x": 1, "y": 0},
        {"x": 1, "y": 2},
        {"x": 1, "y": 4},
        {"x": 2, "y": 0},
        {"x": 2, "y": 2},
        {"x": 2, "y": 4},
    ]
    assert combinations({"n": range(3)}) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert combinations({"n": {"stop": 2}}) == [{"n": 0}, {"n": 1}]


def test_exclude_matches_partial_combinations_and_include_adds() -> None:
    combos = combinations(
        {
            "x": [1, 2],
            "y": ["a", "b"],
            "exclude": [{"y": "b"}, {"x": 2, "y": "a"}],
            "include": [{"x": 9, "y": "z"}, {"x": 1, "y": "a"}],  # the second is there already
        }
    )
    assert combos == [{"x": 1, "y": "a"}, {"x": 9, "y": "z"}]
    assert combinations({"include": [{"a": 1}, {"a": 5}]}) == [{"a": 1}, {"a": 5}]


def test_placeholders_are_filled_in_every_field_with_types_kept_in_args() -> None:
    def f(*args: Any, **kwargs: Any) -> None:
        pass

    (task,) = rhapsody.expand(
        [
            {
                "uid": "t.{n}.{mode}",
                "function": f,
                "args": ["{n}", "n={n}", ["{mode}"]],
                "kwargs": {"n": "{n}", "label": "{mode}-{n}"},
                "prompt": ["Explain {mode}", "twice {n}"],
                "system_prompt": "You study {mode}.",
                "messages": [{"role": "user", "content": "case {n}"}],
                "note": "{not filled: unknown keys are kept as they are}",
                "matrix": {"n": [7], "mode": ["fast"]},
            }
        ]
    )
    assert task["uid"] == "t.7.fast"
    assert task["args"] == [7, "n=7", ["fast"]]  # a lone placeholder in args gives the value
    assert task["kwargs"] == {"n": 7, "label": "fast-7"}
    assert task["prompt"] == ["Explain fast", "twice 7"]
    assert task["system_prompt"] == "You study fast."
    assert task["messages"] == [{"role": "user", "content": "case 7"}]
    assert task["note"] == "{not filled: unknown keys are kept as they are}"
    assert task["parameters"] == {"n": 7, "mode": "fast"}
    assert "matrix" not in task

    (run,) = rhapsody.expand(
        [
            {
                "uid": "e.{x}",
                "executable": "/bin/sh",
                "arguments": ["-c", "awk '{print $1}' ${HOME} {{x}} {x}", "{x}", 3],
                "environment": {"X": "{x}", "PLAIN": "p"},
                "working_directory": "{run_dir}/member.{x}",
                "matrix": {"x": [0.5]},
            }
        ],
        {"run_dir": "/runs/r1"},
    )
    # braces around anything but a name, `${name}` and `{{name}}` are literal text
    assert run["arguments"] == ["-c", "awk '{print $1}' ${HOME} {x} 0.5", "0.5", 3]
    assert run["environment"] == {"X": "0.5", "PLAIN": "p"}
    assert run["working_directory"] == "/runs/r1/member.0.5"


def test_a_service_port_placeholder_is_left_for_the_service() -> None:
    (task,) = rhapsody.expand(
        [{"uid": "s.{i}", "executable": "srv", "arguments": ["{port}"], "matrix": {"i": [1]}}]
    )
    assert task["arguments"] == ["{port}"]
    with pytest.raises(rhapsody.TaskValidationError, match="'port' is reserved"):
        rhapsody.expand([{"uid": "s.{port}", "executable": "x", "matrix": {"port": [1]}}])


def test_tasks_without_templates_pass_through_unchanged() -> None:
    plain = {"uid": "a", "executable": "awk", "arguments": ["{print $1}"], "dependencies": []}
    filled = {"uid": "b", "executable": "/bin/echo", "arguments": ["{run_dir}"]}
    out = rhapsody.expand([plain, filled], {"run_dir": "/r"})
    assert out[0] is plain and out[1] is not filled
    assert out[1]["arguments"] == ["/r"] and filled["arguments"] == ["{run_dir}"]


def test_unknown_placeholder_names_task_field_and_name() -> None:
    with pytest.raises(rhapsody.TaskValidationError) as info:
        rhapsody.expand(
            [
                {
                    "uid": "sim.{x}",
                    "executable": "/bin/echo",
                    "arguments": ["{xx}"],
                    "matrix": {"x": [1]},
                }
            ]
        )
    message = str(info.value)
    assert "task 'sim.{x}'" in message and "field 'arguments'" in message
    assert "{xx}" in message and "did you mean 'x'" in message
    assert info.value.uid == "sim.{x}" and info.value.field == "arguments"


def test_dependency_patterns_fan_in_and_one_to_one() -> None:
    tasks = rhapsody.expand(
        [
            {"uid": "sim.{x}", "executable": "/bin/true", "matrix": {"x": [1, 2, 3]}},
            {
                "uid": "ana.{x}",
                "executable": "/bin/true",
                "dependencies": ["sim.{x}", "setup"],
                "matrix": {"x": [1, 2, 3]},
            },
            {"uid": "setup", "executable": "/bin/true"},
            {"uid": "all", "executable": "/bin/true", "dependencies": ["ana.*", "sim.?"]},
        ]
    )
    by_uid = {t["uid"]: t for t in tasks}
    assert by_uid["ana.2"]["dependencies"] == ["sim.2", "setup"]
    assert by_uid["all"]["dependencies"] == ["ana.1", "ana.2", "ana.3", "sim.1", "sim.2", "sim.3"]


def test_a_pattern_does_not_match_its_own_task() -> None:
    tasks = rhapsody.expand(
        [
            {"uid": "sim.{x}", "executable": "/bin/true", "matrix": {"x": [1]}},
            {"uid": "sim.summary", "executable": "/bin/true", "dependencies": ["sim.*"]},
        ]
    )
    assert tasks[1]["dependencies"] == ["sim.1"]


@pytest.mark.parametrize(
    ("dependencies", "message"),
    [
        (["sim.*"], "pattern 'sim.*' matches no task"),
        (["run.{x}"], "'run.{x}' gives 'run.1', and no task has that uid"),
        (["ana.{y}"], "unknown placeholder {y}"),
    ],
)
def test_dependency_patterns_are_validated(dependencies: list[str], message: str) -> None:
    with pytest.raises(rhapsody.TaskValidationError) as info:
        rhapsody.expand(
            [
                {"uid": "a.{x}", "executable": "/bin/true", "matrix": {"x": [1]}},
                {
                    "uid": "ana.{x}",
                    "executable": "/bin/true",
                    "dependencies": dependencies,
                    "matrix": {"x": [1]},
                },
            ]
        )
    assert message in str(info.value)
    assert info.value.field == "dependencies" and info.value.uid in ("ana.1", "ana.{x}")


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"uid": "s", "matrix": {"x": [1, 2]}}, "two members of task #0"),
        ({"matrix": {"x": [1]}}, "needs a uid with placeholders"),
        ({"uid": "s.{x}", "matrix": {"x": []}}, "axis 'x' is empty"),
        ({"uid": "s.{x}", "matrix": {"x": "abc"}}, "axis 'x' must be a list or a range"),
        ({"uid": "s.{x}", "matrix": {"x": {"start": 0}}}, "stop required"),
        ({"uid": "s.{x}", "matrix": {"x": {"stopp": 3}}}, "did you mean 'stop'"),
        ({"uid": "s.{x}", "matrix": {"x": [1], "exlude": [{"x": 1}]}}, "did you mean 'exclude'"),
        ({"uid": "s.{x}", "matrix": {"x": [1], "exclude": [{"y": 1}]}}, "which is not an axis"),
        ({"uid": "s.{x}", "matrix": {"x": [1, 2], "exclude": [{"x": 3}]}}, "matches nothing"),
        ({"uid": "s.{x}", "matrix": {"x": [1], "exclude": [{"x": 1}]}}, "gives no combinations"),
        ({"uid": "s.{x}", "matrix": {"x": [1], "include": [{"y": 2}]}}, "must give exactly x"),
        ({"uid": "s.{x}", "matrix": {"x-y": [1]}}, "not a placeholder name"),
        ({"uid": "s.{x}", "matrix": {"x": [1]}, "parameters": {}}, "is set by the matrix"),
        ({"uid": "s.{run_dir}", "matrix": {"run_dir": [1]}}, "'run_dir' is reserved"),
    ],
)
def test_bad_matrices_say_what_is_wrong(task: dict[str, Any], message: str) -> None:
    with pytest.raises(rhapsody.TaskValidationError, match=re.escape(message)) as info:
        rhapsody.expand([{"executable": "/bin/true", **task}], {"run_dir": "/r"})
    assert info.value.field in ("matrix", "uid", "parameters")


def test_duplicate_uids_across_templates_name_both() -> None:
    with pytest.raises(rhapsody.TaskValidationError, match=r"task #0 and task #1"):
        rhapsody.expand(
            [
                {"uid": "s.{x}", "executable": "/bin/true", "matrix": {"x": [1, 2]}},
                {"uid": "s.2", "executable": "/bin/true"},
            ]
        )


# -- workflow files ----------------------------------------------------------------------------
SWEEP = """
[[tasks]]
uid = "sim.{x}.{y}"
executable = "/bin/echo"
arguments = ["{x}", "{y}", "{run_dir}"]
matrix = { x = [1, 2], y = { start = 0, stop = 3 }, exclude = [{ x = 2, y = 0 }] }

[[tasks]]
uid = "all"
executable = "/bin/true"
dependencies = ["sim.*"]
"""


def test_file_sweep_expands_with_run_dir(tmp_path: Path) -> None:
    flow_file = tmp_path / "flow.toml"
    flow_file.write_text(SWEEP)
    flow = workflows.load(flow_file, run_dir=tmp_path / "out")
    assert uids(flow.tasks) == ["sim.1.0", "sim.1.1", "sim.1.2", "sim.2.1", "sim.2.2", "all"]
    assert flow.tasks[0]["arguments"] == ["1", "0", str(tmp_path / "out")]
    assert flow.tasks[-1]["dependencies"] == uids(flow.tasks)[:-1]
    assert flow.line_of("sim.2.2") == 3  # an expanded task is found by its template's line


def test_file_errors_give_the_template_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = tmp_path / "flow.toml"
    flow.write_text(SWEEP.replace('"{y}"', '"{z}"'))
    assert main(["run", str(flow), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{flow}:3" in err and "task 'sim.{x}.{y}'" in err and "{z}" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

    flow.write_text(SWEEP.replace("cores", "").replace('"/bin/echo"', '"/bin/echo"\ncores = 0'))
    assert main(["run", str(flow), "--no-progress"]) == 2
    out = capsys.readouterr().out
    assert f"{flow}:3" in out and "task 'sim.1.0'" in out and "field 'cores'" in out


def test_misspelt_keys_get_did_you_mean_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = tmp_path / "flow.toml"
    flow.write_text(
        '[workflow]\nbackend = "concurrent"\nrun_dri = "x"\n\n'
        '[[tasks]]\nuid = "a"\nexecutabel = "/bin/true"\n\n'
        '[[tasks]]\nuid = "b"\nexecutable = "/bin/true"\ndependecies = ["a"]\nmy_note = 1\n'
    )
    assert main(["run", str(flow), "--no-progress", "--run-dir", str(tmp_path / "r")]) == 2
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert f"{flow}:3: [workflow]: unknown key 'run_dri': did you mean 'run_dir'?" in err
    assert f"{flow}:7: task 'a': unknown key 'executabel': did you mean 'executable'?" in err
    assert f"{flow}:12: task 'b': unknown key 'dependecies': did you mean 'dependencies'?" in err
    assert "my_note" not in err  # far from any field: an unknown key, kept quietly
    assert "needs either 'executable' or 'function'" in captured.out


def test_unknown_keys_are_kept_on_the_task(tmp_path: Path) -> None:
    flow_file = tmp_path / "flow.json"
    flow_file.write_text('{"tasks": [{"uid": "a.{i}", "executable": "/bin/true", '
                         '"project": "p", "matrix": {"i": [1]}}]}')
    flow = workflows.load(flow_file)
    assert flow.tasks[0]["project"] == "p" and not flow.hints


# -- the example of docs/cli.md ------------------------------------------------------------------
DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def doc_example() -> str:
    text = DOCS.read_text()
    section = text[text.index("\n## Sweeps\n") :]
    return section[section.index("```toml\n") + 8 : section.index("\n```\n")]


def test_the_sweep_example_of_the_docs_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = tmp_path / "flow.toml"
    flow.write_text(doc_example())
    results = tmp_path / "results.jsonl"
    args = ["run", str(flow), "--no-progress", "--run-dir", str(tmp_path / "run")]
    assert main([*args, "--results", str(results)]) == 0
    assert "report: 6" in capsys.readouterr().out
    done = {r["uid"]: r["parameters"] for r in map(json.loads, results.read_text().splitlines())}
    members = ["10.0", "10.1", "10.2", "100.0", "100.1", "1000.0"]
    assert set(done) == {f"{kind}.{m}" for kind in ("sim", "analyse") for m in members} | {
        "report"
    }
    assert done["analyse.1000.0"] == {"size": 1000, "seed": 0}
    assert (tmp_path / "run" / "analyse.100.1.out").read_text().strip() == "2"


def test_the_docs_error_for_an_unknown_placeholder_is_the_real_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = tmp_path / "flow.toml"
    flow.write_text(doc_example().replace('"{seed}"]', '"{sede}"]', 1))
    assert main(["run", str(flow), "--no-progress"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    documented = re.search(r"`(flow\.toml:2: task 'sim[^`]*)`", DOCS.read_text())
    assert documented is not None
    assert f"{tmp_path}/{' '.join(documented.group(1).split())}" in err


# -- placeholder parsing, fuzzed -------------------------------------------------------------------
TEXT = st.text(alphabet="{}$ ab_1'", max_size=30)


@given(TEXT)
def test_text_without_placeholders_is_kept_or_unescaped(text: str) -> None:
    """Whatever the braces, a string comes out as written, but for `{{name}}` -> `{name}`;
    a `{name}` not given is an error, never a silent change."""
    task = {"uid": "t", "executable": "/bin/echo", "arguments": [text]}
    name = "[A-Za-z_][A-Za-z0-9_]*"
    literal = re.compile(rf"\{{(\{{{name}\}})\}}|(\${{{name}\}})")  # {{x}} and ${x}, in order
    try:
        (out,) = rhapsody.expand([task])
    except rhapsody.TaskValidationError as exc:
        assert "unknown placeholder" in str(exc)
        assert re.search(rf"\{{{name}\}}", literal.sub("\0", text))
        return
    assert out["arguments"] == [literal.sub(lambda m: m.group(1) or m.group(2), text)]


@given(TEXT, st.sampled_from(["a", "b_1", "ab"]), st.integers())
def test_a_placeholder_is_replaced_by_its_value_and_nothing_else_changes(
    text: str, name: str, value: int
) -> None:
    safe = text.replace("{", "(").replace("}", ")").replace("$", "S")  # `${a}`: the shell's
    (out,) = rhapsody.expand(
        [{"uid": "t.{k}", "executable": "x", "arguments": [f"{safe}{{{name}}}{safe}"],
          "matrix": {"k": [0], name: [value]}}]
    )
    assert out["arguments"] == [f"{safe}{value}{safe}"]
