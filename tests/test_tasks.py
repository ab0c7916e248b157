"""Task suites: the format and its file:line errors, and each check type on crafted episodes."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from punie.errors import DataError
from punie.eval.tasks import (
    CHECKS,
    FINAL_ANSWER,
    AnyCheck,
    Episode,
    check_from_dict,
    load_tasks,
    reference_outputs,
    score_episode,
)
from punie.traces import sandbox
from punie.traces.store import ToolCallRecord, Trace

# The sandbox run_command uses; without one, the commands of these tests run unconfined.
SANDBOX = "auto" if sandbox.available_level() != "none" else "none"
SCRIPT = 'print("3 units of   2 products")\nprint()\nprint("all in stock")\n'


@pytest.fixture
def workspace(tmp_path) -> Path:
    root = tmp_path / "ws"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "count.py").write_text(SCRIPT)
    (root / "notes.txt").write_text("buy milk\n")
    return root


def task_line(**fields) -> dict:
    return {"id": "t1", "instruction": "What does scripts/count.py print?", "workspace": "ws",
            "checks": [{"type": "answer_contains", "value": "units"}]} | fields


def write_tasks(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_loads_tasks_relative_to_the_file_and_defaults(tmp_path, workspace):
    path = write_tasks(tmp_path, task_line(), "", task_line(id="t2", category="edit", max_steps=3,
                                                             tools=["read_file", "write_file"], system="Be brief."))
    suite = load_tasks(path)
    first, second = suite.tasks
    assert first.workspace == workspace.resolve() and first.line == 1 and second.line == 3
    assert (first.category, first.spec.max_steps, first.spec.tools, first.spec.system) == ("general", 8, None, None)
    assert (second.category, second.spec.max_steps, second.spec.tools) == ("edit", 3, ["read_file", "write_file"])
    assert suite.categories == ["edit", "general"] and len(suite.sha256) == 64


@pytest.mark.parametrize(("bad", "message"), [
    ("{not json", "not valid JSON"),
    (task_line(checks=[]), "checks: List should have at least 1 item"),
    (task_line(checks=[{"type": "answer_smells", "value": "x"}]), "does not match any of the expected tags"),
    (task_line(checks=[{"type": "answer_contains"}]), "checks.0.answer_contains.value: Field required"),
    (task_line(checks=[{"type": "answer_matches", "pattern": "(unclosed"}]), "is not a valid regular expression"),
    (task_line(checks=[{"type": "file_contains", "path": "notes.txt"}]), "give exactly one of 'value'"),
    (task_line(checks=[{"type": "max_tool_calls", "max": -1}]), "greater than or equal to 0"),
    (task_line(checks=[{"type": "file_contains", "path": "../outside.txt", "value": "x"}]),
     "checks.0 (file_contains): '../outside.txt' is outside the workspace"),
    (task_line(checks=[{"type": "file_unchanged", "path": "/etc/passwd"}]), "'/etc/passwd' is absolute"),
    (task_line(checks=[{"type": "file_unchanged", "path": "nope.txt"}]), "'nope.txt' is not a file of the workspace"),
    (task_line(workspace="missing"), "workspace 'missing' (read as"),
    (task_line(tools=["read_file", "rm"]), "unknown tool(s) ['rm']"),
    (task_line(max_steps=0), "max_steps: Input should be greater than or equal to 1"),
    (task_line(instruction=""), "instruction: String should have at least 1 character"),
    (task_line(colour="blue"), "colour: Extra inputs are not permitted"),
])
def test_bad_line_names_file_and_line(tmp_path, workspace, bad, message):
    path = write_tasks(tmp_path, task_line(id="ok"), bad)
    with pytest.raises(DataError) as info:
        load_tasks(path)
    assert str(info.value).startswith(f"{path}:2: ")
    assert message in str(info.value)


def test_an_unknown_check_type_lists_the_types_once(tmp_path, workspace):
    with pytest.raises(DataError) as info:
        load_tasks(write_tasks(tmp_path, task_line(checks=[{"type": "answer_smells"}])))
    assert str(info.value).count("answer_includes_output_of") == 1

def test_duplicate_ids_empty_and_missing_files(tmp_path, workspace):
    with pytest.raises(DataError, match=r"tasks.jsonl:2: duplicate task id 't1' \(first used on line 1\)"):
        load_tasks(write_tasks(tmp_path, task_line(), task_line()))
    with pytest.raises(DataError, match="task suite .* has no tasks"):
        load_tasks(write_tasks(tmp_path, ""))
    with pytest.raises(DataError, match="task suite .* does not exist"):
        load_tasks(tmp_path / "nope.jsonl")


def test_every_check_type_is_registered_once_with_its_model():
    union = typing.get_args(typing.get_args(AnyCheck)[0])
    assert {m.model_fields["type"].annotation.__args__[0] for m in union} == set(CHECKS)
    assert all(CHECKS[name].run.__doc__ for name in CHECKS)  # each says what it checks


def _output_check(**fields) -> dict:
    return {"type": "answer_includes_output_of", "command": "python scripts/count.py"} | fields


def test_reference_outputs_run_in_a_pristine_copy(tmp_path, workspace):
    (workspace / "scripts" / "write.py").write_text("open('made.txt', 'w').write('x')\nprint('wrote')\n")
    suite = load_tasks(write_tasks(tmp_path, task_line(checks=[_output_check(), _output_check(
        command="python scripts/write.py")])))
    outputs = reference_outputs(suite, sandbox=SANDBOX)
    assert outputs == {"t1": {"python scripts/count.py": ["3 units of 2 products", "all in stock"],
                              "python scripts/write.py": ["wrote"]}}
    assert not (workspace / "made.txt").exists()  # the command wrote into a copy


@pytest.mark.parametrize(("check", "message"), [
    (_output_check(command="rm -rf ."), "cannot run in the task's workspace: program 'rm' is not allowed"),
    (_output_check(command="python scripts/missing.py"), "exited 2 in a fresh copy of the workspace, not 0"),
    (_output_check(command="python -c pass"), "prints nothing, so no answer could quote it"),
    (_output_check(min_lines=3), "min_lines is 3 but 'python scripts/count.py' prints 2 non-empty line(s)"),
])
def test_a_reference_command_that_cannot_be_quoted_is_a_suite_error(tmp_path, workspace, check, message):
    path = write_tasks(tmp_path, task_line(id="ok"), task_line(checks=[{"type": "no_tool_error"}, check]))
    with pytest.raises(DataError) as info:
        reference_outputs(load_tasks(path), sandbox=SANDBOX)
    assert str(info.value).startswith(f"{path}:2: checks.1 (answer_includes_output_of): ")
    assert message in str(info.value)


def _episode(workspace: Path, answer: str | None, *, pristine: Path | None = None, calls=(), parse_errors=(),
             outputs=None) -> Episode:
    trace = Trace(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": answer or ""}],
                  tool_calls=[ToolCallRecord(1, i, name, {}, result, is_error) for i, (name, result, is_error)
                              in enumerate(calls)], outcome="finished" if answer is not None else "max_steps")
    return Episode(answer=answer, trace=trace, parse_errors=list(parse_errors), workspace=workspace,
                   pristine=pristine or workspace, outputs=outputs or {})


def verdict(check: dict, episode: Episode) -> list[tuple[str, bool, str]]:
    return [(o.type, o.passed, o.reason) for o in score_episode([check_from_dict(check)], episode)]


@pytest.mark.parametrize(("check", "answer", "passed"), [
    ({"type": "answer_contains", "value": "Buy  MILK"}, "You should buy\nmilk today.", True),
    ({"type": "answer_contains", "value": "Buy milk", "case_sensitive": True}, "buy milk", False),
    ({"type": "answer_contains", "value": "eggs"}, "buy milk", False),
    ({"type": "answer_matches", "pattern": r"\b\d+ units\b"}, "It prints 3 units.", True),
    ({"type": "answer_matches", "pattern": r"^units", "ignore_case": True}, "Units: 3", True),
    ({"type": "answer_matches", "pattern": r"\d+ units"}, "some units", False),
])
def test_answer_checks(tmp_path, check, answer, passed):
    [(_, ok, reason)] = verdict(check, _episode(tmp_path, answer))
    assert ok is passed and (reason == "") is passed


OUTPUTS = {"python scripts/count.py": ["3 units of 2 products", "all in stock"]}


@pytest.mark.parametrize(("answer", "min_lines", "passed"), [
    ("It prints:\n3 units of 2\nproducts\nall in stock", None, True),  # line breaks and spaces do not matter
    ("3 units of 2 products", None, False),  # one of the two lines
    ("3 units of 2 products", 1, True),
    ("3 Units of 2 products, all in stock", None, False),  # a quote keeps its case
    ("The script prints how many units and products are in stock.", None, False),  # describes, does not quote
])
def test_answer_includes_output_of(tmp_path, answer, min_lines, passed):
    check = {"type": "answer_includes_output_of", "command": "python scripts/count.py", "min_lines": min_lines}
    [(_, ok, reason)] = verdict(check, _episode(tmp_path, answer, outputs=OUTPUTS))
    assert ok is passed
    if not passed:
        assert "of the 2 output lines of 'python scripts/count.py'" in reason


def test_file_checks_read_the_episode_workspace_and_compare_with_the_pristine_one(tmp_path, workspace):
    after = tmp_path / "after"
    after.mkdir()
    (after / "notes.txt").write_text("buy milk\nbuy eggs\n")
    (after / "todo.txt").write_text("Call Bob\n")
    episode = _episode(after, "Done.", pristine=workspace)
    assert verdict({"type": "file_contains", "path": "todo.txt", "value": "call bob", "case_sensitive": False},
                   episode)[0][1]
    assert verdict({"type": "file_contains", "path": "todo.txt", "value": "call bob"}, episode)[0][1:] == (
        False, "todo.txt does not contain 'call bob'")
    assert verdict({"type": "file_contains", "path": "notes.txt", "pattern": r"^buy eggs$"}, episode)[0][1] is False
    assert verdict({"type": "file_contains", "path": "notes.txt", "pattern": r"(?m)^buy eggs$"}, episode)[0][1]
    assert verdict({"type": "file_contains", "path": "gone.txt", "value": "x"}, episode)[0][2] == (
        "gone.txt does not exist after the episode")
    assert verdict({"type": "file_unchanged", "path": "notes.txt"}, episode)[0][1:] == (False, "notes.txt was changed")
    assert verdict({"type": "file_unchanged", "path": "scripts/count.py"}, episode)[0][1:] == (
        False, "scripts/count.py was deleted")
    (after / "scripts").mkdir()
    (after / "scripts" / "count.py").write_text(SCRIPT)
    assert verdict({"type": "file_unchanged", "path": "scripts/count.py"}, episode)[0][1] is True


def test_a_file_check_does_not_follow_a_symlink_the_agent_made_out_of_the_workspace(tmp_path, workspace):
    after = tmp_path / "after"
    after.mkdir()
    (tmp_path / "elsewhere.txt").write_text("buy milk\n")
    (after / "notes.txt").symlink_to(tmp_path / "elsewhere.txt")
    [(_, ok, reason)] = verdict({"type": "file_unchanged", "path": "notes.txt"},
                                _episode(after, "ok", pristine=workspace))
    assert not ok and "outside the workspace" in reason


def test_trace_checks(tmp_path):
    clean = _episode(tmp_path, "ok", calls=[("read_file", "buy milk", False), ("list_dir", "a", False)])
    failing = _episode(tmp_path, "ok", calls=[("read_file", "Error: no such file: x", True)])
    unparsed = _episode(tmp_path, "ok", parse_errors=["not JSON"])
    assert verdict({"type": "no_tool_error"}, clean)[0][1] is True
    assert verdict({"type": "no_tool_error"}, failing)[0][1:] == (
        False, "1 tool error(s), first 'read_file: Error: no such file: x'")
    assert verdict({"type": "no_tool_error"}, unparsed)[0][2] == "1 tool error(s), first 'unparsed tool call: not JSON'"
    assert verdict({"type": "max_tool_calls", "max": 2}, clean)[0][1] is True
    assert verdict({"type": "max_tool_calls", "max": 1}, clean)[0][1:] == (False, "2 tool calls, more than 1")


def test_an_episode_without_a_final_answer_fails_whatever_its_checks_say(tmp_path):
    outcomes = verdict({"type": "max_tool_calls", "max": 5}, _episode(tmp_path, None))
    assert outcomes == [(FINAL_ANSWER, False, "no final answer: stopped after 1 steps (max_steps)"),
                        ("max_tool_calls", True, "")]


def test_check_from_dict_names_the_problem():
    with pytest.raises(DataError, match="bad check .*value: String should have at least 1 character"):
        check_from_dict({"type": "answer_contains", "value": ""})
