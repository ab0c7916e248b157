"""``punie plan`` (the tree, --execute through the agent) and the planner commands' errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from planner_fixtures import two_workers, write_data
from punie.chat.toolcalls import parse_text
from punie.planner.execute import WorkerEngines, execute_plan
from punie.planner.train import resolve_train_config, train_planner
from punie.planner.workers import WorkerSet, write_workers
from punie.planner.workflow import Workflow
from punie.traces.agent import Completion
from punie.traces.store import TraceStore
from punie.traces.tools import make_tools

COMPARE = "first read app.py and read notes.txt; finally tell me how they differ"


@pytest.fixture(scope="module")
def planner_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan_cli")
    config = resolve_train_config({"data": write_data(root / "data"), "output": root / "planner", "iters": 100,
                                   "learning_rate": 5e-3, "dims": 32, "layers": 1, "steps_per_eval": 100})
    return train_planner(config).output


class RecordingEngine:
    """A fake worker: answers every prompt at once, saying which worker it is and which step it was given."""

    def __init__(self, name: str, asked: list[tuple[str, str]]):
        self.name, self.asked = name, asked

    @property
    def model_id(self) -> str:
        return f"model-{self.name}"

    @property
    def adapter(self) -> None:
        return None

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Completion:
        prompt = messages[-1]["content"]
        self.asked.append((self.name, prompt))
        text = f"{self.name} did step {len(self.asked)}"
        return Completion(parse_text(text), text)


def test_execute_runs_subtasks_in_dependency_order_passing_answers_on(tmp_path, punie_home):
    # Listed out of order on purpose: s3 needs s1 and s2, s2 needs s1.
    flow = Workflow.model_validate({"id": "w", "instruction": "fix the date parser", "edges": [
        ["s1", "s2"], ["s1", "s3"], ["s2", "s3"]], "subtasks": [
        {"id": "s3", "type": "edit", "description": "fix it"}, {"id": "s1", "type": "search"},
        {"id": "s2", "type": "read", "description": "read the file"}]})
    workers = WorkerSet(workers=[w.model_copy(update={"model": f"m-{w.name}"}) for w in two_workers().workers])
    asked: list[tuple[str, str]] = []
    engines = WorkerEngines(make=lambda w: RecordingEngine(w.name, asked))
    with TraceStore() as store:
        steps = execute_plan(flow, {"s1": "base", "s2": "demo", "s3": "demo"}, workers,
                             tools=make_tools(tmp_path, sandbox="none"), engines=engines, store=store)
        traces = sorted(store.iter_traces(source="planner"), key=lambda t: t.id or 0)
    assert [(s.subtask, s.worker, s.outcome) for s in steps] == [
        ("s1", "base", "finished"), ("s2", "demo", "finished"), ("s3", "demo", "finished")]
    assert len(engines.engines) == 2  # one engine per distinct worker, reused
    assert "step 1 of 3" in asked[0][1] and "What the steps" not in asked[0][1]
    assert "- s1 (search): base did step 1" in asked[1][1]
    assert "- s1 (search): base did step 1" in asked[2][1] and "- s2 (read): demo did step 2" in asked[2][1]
    assert [t.meta["plan"]["worker"] for t in traces] == ["base", "demo", "demo"]
    assert [t.model for t in traces] == ["model-base", "model-demo", "model-demo"]
    assert traces[2].meta["plan"]["depends_on"] == ["s1", "s2"]
    assert len({t.meta["plan"]["run"] for t in traces}) == 1


def test_plan_prints_the_dag_as_a_tree_with_a_worker_per_node(planner_dir, tmp_path, run_cli):
    write_workers(tmp_path / "workers.json", two_workers())
    done = run_cli("plan", COMPARE, "--planner", str(planner_dir),
                   "--workers", str(tmp_path / "workers.json"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == COMPARE
    # read, read -> answer: s3 hangs under s1 in full and is named under s2
    assert any("s1 read: read app.py  -> demo" in line for line in lines)
    assert any("s2 read: read notes.txt  -> demo" in line for line in lines)
    assert any("s3 answer: tell me how they differ  -> base" in line for line in lines)
    assert any("s3 (see above)" in line for line in lines)
    first = next(i for i, line in enumerate(lines) if "s3 answer" in line)
    assert first < next(i for i, line in enumerate(lines) if "s2 read" in line)


def test_plan_execute_on_the_tiny_model_records_each_steps_worker(planner_dir, tiny_model, tmp_path, run_cli,
                                                                 punie_home):
    profiles = two_workers().model_dump()
    for profile in profiles["workers"]:
        profile["model"] = str(tiny_model)  # the same tiny base behind both names: there is no tiny adapter
    (tmp_path / "workers.json").write_text(json.dumps(profiles))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "app.py").write_text("print('hi')\n")
    done = run_cli("plan", COMPARE, "--planner", str(planner_dir), "--workers",
                   str(tmp_path / "workers.json"), "--execute", "--workspace", str(workspace), "--max-steps", "1",
                   "--max-tokens", "8", "--no-sandbox")
    assert done.returncode == 0, done.stderr
    with TraceStore(punie_home / "traces.sqlite") as store:
        traces = sorted(store.iter_traces(source="planner"), key=lambda t: t.id or 0)
    assert [(t.meta["plan"]["subtask"], t.meta["plan"]["worker"]) for t in traces] == [
        ("s1", "demo"), ("s2", "demo"), ("s3", "base")]
    assert all(t.model and t.outcome in ("finished", "max_steps") for t in traces)
    assert "s3 (base)" in done.stdout


@pytest.mark.parametrize(("args", "says"), [
    (["plan", "x", "--planner", "nowhere"], "nowhere is not a planner directory"),
    (["plan", "x", "--planner", "nowhere", "--execute"], "--execute needs --workers"),
    (["planner", "train", "nowhere", "--output", "out"], "nowhere/train.jsonl: no such workflow file"),
    (["planner", "train", "nowhere", "--output", "out", "--iters", "0"], "iters: Input should be greater"),
    (["planner", "rl", "nowhere", "--workers", "w.json", "--data", "d.jsonl"], "not a planner directory"),
])
def test_bad_input_is_one_line_and_exit_1(args, says, run_cli, tmp_path):
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: ") and says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
