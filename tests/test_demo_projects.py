"""The synthetic projects behind the demo data: deterministic, runnable, and split by project and phrasing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from punie.chat.toolcalls import ToolCall
from punie.traces import project_tasks, projects
from punie.traces.demo_data import _demo_workspace, build_foreign_suite, build_project_suite
from punie.traces.tools import call_tool, make_tools

COMMITTED = Path(__file__).resolve().parents[1] / "data" / "agent"
HELD_OUT_SUITES = ("suite-projects.jsonl", "suite-projects-valid.jsonl")


def _records(name: str) -> list[dict]:
    return [json.loads(line) for line in (COMMITTED / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def training_records():
    return [r for name in ("train.jsonl", "valid.jsonl", "test.jsonl") for r in _records(name)]


@pytest.fixture(scope="module")
def training_text():
    return "".join((COMMITTED / name).read_text() for name in ("train.jsonl", "valid.jsonl", "test.jsonl"))


def _user(record: dict) -> str:
    return next(m["content"] for m in record["messages"] if m["role"] == "user")


def test_the_generator_is_deterministic_and_the_seed_matters():
    first = projects.make_projects("train", 6, seed=42)
    again = projects.make_projects("train", 6, seed=42)
    assert [(p.name, p.files) for p in first] == [(p.name, p.files) for p in again]
    assert [p.files for p in projects.make_projects("train", 6, seed=7)] != [p.files for p in first]
    assert {p.kind for p in first} == set(projects.KINDS)
    assert project_tasks.training_tasks(42) == project_tasks.training_tasks(42)
    assert build_project_suite("test", 42) == build_project_suite("test", 42)


def test_the_pools_and_templates_are_disjoint():
    pools = {pool: set(words) for pool, words in projects.NOUNS.items()}
    assert not pools["train"] & pools["valid"] and not pools["train"] & pools["test"]
    assert not pools["valid"] & pools["test"]
    assert not set(project_tasks.template_names("train")) & set(project_tasks.template_names("eval"))
    assert not set(project_tasks.FOREIGN_TOOLS["train"]) & set(project_tasks.FOREIGN_TOOLS["eval"])
    assert not set(project_tasks.FOREIGN_SYSTEMS["train"]) & set(project_tasks.FOREIGN_SYSTEMS["eval"])


def test_no_held_out_project_name_or_word_occurs_in_training(training_text):
    """A held-out noun (project, file stem, identifier part) in the training data is a leak."""
    words = set(re.findall(r"[a-z]+", training_text.lower()))
    for pool in ("valid", "test"):
        leaked = words & set(projects.NOUNS[pool])
        assert not leaked, f"{pool} words in the training data: {sorted(leaked)}"
    # Every argument value of a held-out case names the held-out project (then it never occurs in training), or
    # is made only of names any project has (README.md, go.mod) and the common words of a command.
    held_out = set(projects.NOUNS["valid"]) | set(projects.NOUNS["test"])
    held_out |= {d for pool in ("valid", "test") for names in projects.DIRS[pool].values() for d in names}
    common = set(projects.COMMON_NAMES) | {"cat", "wc", "-l", "head", "-n", "2", "ls", "python", "grep", "."}
    for name in HELD_OUT_SUITES:
        for case in _records(name):
            for call in case["expect"].get("tool_calls", []):
                for value in call["arguments"].values():
                    for alternative in value["one_of"] if isinstance(value, dict) else [value]:
                        if any(word in alternative.lower() for word in held_out):  # camelCase too
                            assert json.dumps(alternative) not in training_text, (name, case["id"], alternative)
                        else:
                            parts = set(re.split(r"[ /]", alternative.strip("./"))) - {""}
                            assert parts <= common, (name, case["id"], alternative)


def test_no_held_out_template_produces_a_training_prompt(training_records):
    eval_templates = project_tasks.template_names("eval")
    patterns = [re.compile(".+".join(re.escape(part) for part in re.split(r"\{\w+\}", t))) for t in eval_templates]
    prompts = {_user(r) for r in training_records}
    for prompt in prompts:
        for pattern in patterns:
            assert not pattern.fullmatch(prompt), (prompt, pattern.pattern)
    for name in (*HELD_OUT_SUITES, "suite-notool.jsonl"):
        suite_prompts = {c["messages"][1]["content"] for c in _records(name)}
        assert not suite_prompts & prompts, name
        assert all(any(p.fullmatch(s) for p in patterns) for s in suite_prompts), name


def test_held_out_suites_cover_every_category_and_the_arguments_are_in_the_request():
    for name in HELD_OUT_SUITES:
        cases = _records(name)
        assert {c["category"] for c in cases} == {"read", "list", "search", "edit", "run", "answer"}
        for case in cases:
            for call in case["expect"].get("tool_calls", []):
                for key, value in call["arguments"].items():
                    want = value["one_of"][0] if isinstance(value, dict) else value
                    if key != "content":  # an append's content is the file plus the line
                        assert want in case["messages"][1]["content"] or want == ".", (case["id"], key, want)


def test_the_no_tool_suite_offers_only_foreign_tools_and_expects_no_call(training_records):
    punie_names = {n for n in project_tasks.RENAMES} | {n for names in project_tasks.RENAMES.values() for n in names}
    trained_names = {t["function"]["name"] for r in training_records for t in r["tools"]}
    cases = _records("suite-notool.jsonl")
    assert cases == build_foreign_suite(42) and len(cases) >= 30
    for case in cases:
        names = {t["function"]["name"] for t in case["tools"]}
        assert case["expect"] == {"no_tool_call": True}
        assert names and not names & punie_names and not names & trained_names, case["id"]


def test_training_varies_the_tool_set_and_carries_foreign_tools(training_records):
    tool_sets = {tuple(t["function"]["name"] for t in r["tools"]) for r in training_records}
    assert len(tool_sets) > 20
    foreign = [r for r in training_records if set(project_tasks.FOREIGN_TOOLS["train"])
               & {t["function"]["name"] for t in r["tools"]}]
    assert len(foreign) >= 20 and all("tool_calls" not in r["messages"][-1] for r in foreign)
    for record in training_records:  # a call always names a tool of its own record's schema
        names = {t["function"]["name"] for t in record["tools"]}
        for call in record["messages"][-1].get("tool_calls", []):
            assert call["function"]["name"] in names, _user(record)


def test_every_project_script_runs_and_every_file_is_readable(tmp_path):
    for project in projects.make_projects("test", 4, seed=42):
        root = projects.materialize(project, tmp_path / project.name)
        tools = make_tools(_demo_workspace(root))
        for script in project.scripts:
            result = call_tool(tools, ToolCall("run_command", {"command": f"python {script}"})).content
            assert result.startswith("exit code: 0\n") and result.strip().count("\n") >= 1, (script, result)
        for rel, text in project.files.items():
            assert call_tool(tools, ToolCall("read_file", {"path": rel})).content == text
        for ident in project.identifiers:
            assert "No matches" not in call_tool(tools, ToolCall("search", {"pattern": ident})).content


def test_validation_suites_share_no_prompt_with_a_reported_suite():
    """A recipe chosen on a validation suite must not have seen the cases it is reported on (it did: the
    capitals questions of suite-projects-valid and suite-notool-valid were drawn again for the test suites)."""
    from punie.eval.overlap import prompt_key

    agent = Path(__file__).resolve().parents[1] / "data" / "agent"

    def prompts(name: str) -> list[str]:
        lines = (agent / f"{name}.jsonl").read_text().splitlines()
        return [prompt_key(json.loads(line)["messages"]) for line in lines]

    reported = {p for name in ("suite", "suite-projects", "suite-notool") for p in prompts(name)}
    for name in ("suite-projects-valid", "suite-notool-valid"):
        chosen_on = prompts(name)
        assert len(chosen_on) == len(set(chosen_on)), f"{name} repeats a prompt"
        assert not reported & set(chosen_on), f"{name} shares prompts with a reported suite"
    assert len(prompts("suite-notool-valid")) == len(prompts("suite-notool"))


def test_the_improve_suite_asks_only_new_training_side_requests():
    """punie improve's training suite: requests no exported record or eval suite holds (not even up to case
    and punctuation for the held-out suites), each once, every category, no held-out file of the workspace."""
    import re

    from punie.eval.overlap import data_prompts, prompt_key
    from punie.eval.suite import load_suite
    from punie.traces import demo_tasks

    agent = Path(__file__).resolve().parents[1] / "data" / "agent"
    cases = load_suite(agent / "improve.jsonl").cases
    keys = [prompt_key(c.messages) for c in cases]
    assert len(keys) == len(set(keys)) > 300
    trained = set().union(*(data_prompts(agent / f"{split}.jsonl") for split in ("train", "valid", "test")))
    assert not trained & set(keys)

    def request(messages: list[dict]) -> str:
        return re.sub(r"[^\w/.]+", " ", messages[-1]["content"].lower()).strip()

    held_out = {request(json.loads(line)["messages"]) for path in agent.glob("suite*.jsonl")
                for line in path.read_text().splitlines()}
    assert not held_out & {request(c.messages) for c in cases}
    assert {c.category for c in cases} == {"answer", "edit", "list", "read", "run", "search"}
    text = (agent / "improve.jsonl").read_text()
    assert not [rel for rel in demo_tasks.HELD_OUT_FILES if f'"{rel}"' in text]
