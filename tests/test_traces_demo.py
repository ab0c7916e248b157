"""The shipped demo data: reproducible from the generator, and the eval suite held out from training."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from punie.chat.toolcalls import roundtrip_errors
from punie.traces import demo_tasks
from punie.traces.demo_data import DEMO_SOURCE, build_suite, default_workspace, generate, training_workspace
from punie.traces.export import export_traces
from punie.traces.store import Trace, TraceStore

DATA = Path(__file__).resolve().parents[1] / "data"
COMMITTED = DATA / "agent"
FILES = ("train.jsonl", "valid.jsonl", "test.jsonl", "suite.jsonl", "suite-projects.jsonl",
         "suite-projects-valid.jsonl", "suite-notool.jsonl", "suite-notool-valid.jsonl", "tasks.jsonl",
         "tasks-valid.jsonl", "improve.jsonl", "export.json")


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(tiny_model)


@pytest.fixture(scope="module")
def training_text():
    return "".join((COMMITTED / name).read_text() for name in ("train.jsonl", "valid.jsonl", "test.jsonl"))


@pytest.fixture(scope="module")
def training_prompts():
    prompts = set()
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl"):
        for line in (COMMITTED / name).read_text().splitlines():
            prompts.add(next(m["content"] for m in json.loads(line)["messages"] if m["role"] == "user"))
    return prompts


@pytest.fixture(scope="module")
def suite():
    return [json.loads(line) for line in (COMMITTED / "suite.jsonl").read_text().splitlines()]


def test_committed_files_are_exactly_what_the_generator_produces(tmp_path, tokenizer):
    with TraceStore() as store:  # earlier demo traces are replaced, other traces kept
        stale = store.add(Trace(messages=[{"role": "user", "content": "old"}], source=DEMO_SOURCE))
        kept = store.add(Trace(messages=[{"role": "user", "content": "mine"}], source="agent"))
    data = generate(tmp_path / "agent", seed=42, tokenizer=tokenizer, workspace=DATA / "workspace")
    for name in FILES:
        assert (tmp_path / "agent" / name).read_bytes() == (COMMITTED / name).read_bytes(), (
            f"data/agent/{name} is stale: run 'python data/generate_traces.py'")
    # The task suites' projects are written beside the data (data/tasks), file for file the committed ones.
    assert _tree(tmp_path / "tasks") == _tree(DATA / "tasks"), "data/tasks is stale: run the generator"
    assert data.export.rejected == []
    # Every scripted episode passed its checks, so the export (only passed traces) kept every one.
    manifest = json.loads((COMMITTED / "export.json").read_text())
    assert manifest["only_passed"] is True and manifest["skipped_not_passed"] == 0
    assert sum(manifest["traces"].values()) == data.traces
    # The traces are in the store (PUNIE_HOME): 'punie traces export --source demo' makes the same files.
    with TraceStore() as store:
        assert len(list(store.iter_traces(source=DEMO_SOURCE))) == data.traces == store.count() - 1
        assert {t.outcome for t in store.iter_traces(source=DEMO_SOURCE)} == {"passed"}
        assert store.get(kept).messages[0]["content"] == "mine" and stale not in [t.id for t in store.iter_traces()]
        export_traces(store, tmp_path / "again", seed=42, tokenizer=tokenizer, source=DEMO_SOURCE)
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl"):
        assert (tmp_path / "again" / name).read_bytes() == (COMMITTED / name).read_bytes()


def test_every_training_target_round_trips_through_the_template(tokenizer):
    lines = (COMMITTED / "train.jsonl").read_text().splitlines()
    assert 700 <= len(lines) <= 1000
    for line in lines:
        record = json.loads(line)
        assert roundtrip_errors(tokenizer, record["messages"], record["tools"], len(record["messages"]) - 1) == []


def test_training_covers_first_steps_later_steps_and_every_category():
    records = [json.loads(line) for line in (COMMITTED / "train.jsonl").read_text().splitlines()]
    first = [r for r in records if r["messages"][-2]["role"] == "user"]
    later = [r for r in records if r["messages"][-2]["role"] == "tool"]
    assert len(first) + len(later) == len(records) and len(first) > 100 and len(later) > 100
    assert {r["category"] for r in first} == set(demo_tasks.CATEGORIES)
    errors = [r for r in later if r["messages"][-2]["content"].startswith("Error: ")]
    assert errors, "the data should show the model recovering from real tool errors"


def test_suite_schema_and_size(suite):
    assert 60 <= len(suite) <= 100
    assert len({c["id"] for c in suite}) == len(suite)
    assert {c["category"] for c in suite} == set(demo_tasks.CATEGORIES)
    for case in suite:
        assert set(case) == {"id", "category", "messages", "tools", "scorer", "expect"}
        assert case["scorer"] == "tool_call"
        assert [m["role"] for m in case["messages"]] == ["system", "user"]
        names = {t["function"]["name"] for t in case["tools"]}
        if case["category"] == "answer":
            assert case["expect"] == {"no_tool_call": True}
        else:
            [call] = case["expect"]["tool_calls"]
            assert set(call) == {"name", "arguments"} and call["name"] in names


def test_no_held_out_file_or_directory_appears_in_training(training_text):
    for path in demo_tasks.HELD_OUT_FILES:
        assert path not in training_text, path
        assert Path(path).name not in training_text, path
    for directory in demo_tasks.HELD_OUT_DIRS:
        assert f"{directory}/" not in training_text and json.dumps(directory) not in training_text, directory


def test_no_eval_argument_value_appears_in_training(suite, training_text):
    for case in suite:
        for call in case["expect"].get("tool_calls", []):
            for value in call["arguments"].values():
                for alternative in value["one_of"] if isinstance(value, dict) else [value]:
                    assert json.dumps(alternative) not in training_text, (case["id"], alternative)


def test_no_eval_phrasing_appears_in_training(suite, training_prompts):
    templates = demo_tasks.eval_templates()
    train_templates = {t for p in demo_tasks.PHRASINGS.values() for t in p.train} | set(demo_tasks.CHAT)
    assert not set(templates) & train_templates
    # A template as a pattern: its literal text, with ".+" for each placeholder.
    patterns = [re.compile(".+".join(re.escape(part) for part in re.split(r"\{\w+\}", t))) for t in templates]
    for prompt in training_prompts:
        for pattern in patterns:
            assert not pattern.fullmatch(prompt), (prompt, pattern.pattern)
    assert not {c["messages"][1]["content"] for c in suite} & training_prompts


def test_the_suite_loads_with_the_eval_loader_and_accepts_path_spellings(suite):
    from punie.eval.suite import load_suite

    loaded = load_suite(COMMITTED / "suite.jsonl")
    assert len(loaded.cases) == len(suite)
    listing = next(c for c in suite if c["category"] == "list")
    path = listing["expect"]["tool_calls"][0]["arguments"]["path"]["one_of"]
    assert path[1:] == [f"./{path[0]}", f"{path[0]}/"]


def test_held_out_files_exist_in_the_workspace_but_not_in_the_training_copy(tmp_path):
    source = default_workspace()
    assert source.resolve() == (DATA / "workspace").resolve()  # the packaged workspace is data/workspace
    copy = training_workspace(source, tmp_path / "copy")
    for path in demo_tasks.HELD_OUT_FILES:
        assert (source / path).is_file() and not (copy / path).exists(), path
    for path in demo_tasks.TRAIN_FILES:
        assert (copy / path).is_file(), path
    # Every held-out eval task names something that exists, so an agent can really do it on data/workspace.
    for case in build_suite(source, seed=42):
        for call in case["expect"].get("tool_calls", []):
            if call["name"] in ("read_file", "list_dir") or (call["name"] == "search" and "path" in call["arguments"]):
                assert all((source / p).exists() for p in call["arguments"]["path"]["one_of"]), case["id"]


def test_the_readme_describes_the_data():
    text = (DATA / "README.md").read_text()
    for needle in ("scripted", "python data/generate_traces.py", "suite.jsonl", "held out"):
        assert needle in text, needle


def test_demo_commands_print_the_same_with_and_without_the_sandbox(tmp_path):
    """The generator uses the OS sandbox when there is one and runs unconfined otherwise: same data either way."""
    import shutil

    from punie.chat.toolcalls import ToolCall
    from punie.traces import sandbox
    from punie.traces.demo_data import _demo_workspace
    from punie.traces.tools import Workspace, call_tool, make_tools

    if sandbox.available_level() == "none":
        message = "no OS sandbox on this machine to compare with; install bubblewrap (apt-get install -y bubblewrap)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    commands = [*demo_tasks.RUN_TRAIN, *demo_tasks.RUN_EVAL,
                *(f"python {s}" for s in (*demo_tasks.RUN_SCRIPT_TRAIN, *demo_tasks.RUN_SCRIPT_EVAL))]
    root = shutil.copytree(default_workspace(), tmp_path / "ws")
    env = _demo_workspace(root).env
    outputs = {}
    for level in ("auto", "none"):
        tools = make_tools(Workspace(root, env=env, sandbox=level))
        outputs[level] = [call_tool(tools, ToolCall("run_command", {"command": c})).content for c in commands]
    assert outputs["auto"] == outputs["none"]
    assert sum(o.startswith("exit code: 0\n") for o in outputs["none"]) > 20
