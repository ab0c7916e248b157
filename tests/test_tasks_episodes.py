"""Episodes: scripted models that claim or do the work, workspace isolation, batched = one at a time, stats."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from punie.chat.toolcalls import parse_text
from punie.eval import stats
from punie.eval.engines import EngineOptions, TurnSource
from punie.eval.episodes import EpisodeSettings, run_task_episodes
from punie.eval.inprocess import InProcessEngine
from punie.eval.task_eval import run_task_eval
from punie.eval.tasks import load_tasks, reference_outputs
from punie.traces.agent import Completion
from punie.traces.export import export_traces
from punie.traces.store import TraceStore
from test_eval_engine import make_adapter
from test_tasks import SANDBOX

COUNT = "What does scripts/count.py print?"
TODO = "Add the line 'call Bob' to todo.txt."


def call(name, **arguments):
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


class ScriptedTurns:
    """A fake model for episodes: the assistant turns of each task (by instruction), served step by step.
    Records how many requests each call carried."""

    def __init__(self, scripts: dict[str, list[str]], *, batched: bool = True) -> None:
        self.scripts, self.batches = scripts, []
        self.source = TurnSource(self.complete_many, batched=batched)

    def complete_many(self, requests):
        self.batches.append(len(requests))
        turns = []
        for messages, _ in requests:
            text = self.scripts[instruction_of(messages)][sum(m["role"] == "assistant" for m in messages)]
            turns.append(Completion(parse_text(text), text, tokens=len(text.split())))
        return turns


def instruction_of(messages):
    return next(m["content"] for m in messages if m["role"] == "user")


# Claims the job is done without doing it; then the same answers after doing the work.
LAZY = {COUNT: ["It prints how many units of how many products are in stock."],
        TODO: ["Done: I added 'call Bob' to todo.txt."]}
WORKER = {COUNT: [call("run_command", command="python scripts/count.py"),
                  "It prints:\n95 units of 7 products in stock."],
          TODO: [call("read_file", path="todo.txt"),
                 call("write_file", path="todo.txt", content="buy milk\ncall Bob\n"), "Added 'call Bob' to todo.txt."]}


@pytest.fixture
def suite_file(tmp_path) -> Path:
    ws = tmp_path / "ws"
    (ws / "scripts").mkdir(parents=True)
    (ws / "scripts" / "count.py").write_text('print("95 units of 7 products in stock.")\n')
    (ws / "todo.txt").write_text("buy milk\n")
    lines = [{"id": "count", "category": "run", "instruction": COUNT, "workspace": "ws", "max_steps": 3,
              "checks": [{"type": "answer_includes_output_of", "command": "python scripts/count.py"},
                         {"type": "no_tool_error"}]},
             {"id": "todo", "category": "edit", "instruction": TODO, "workspace": "ws", "max_steps": 4,
              "tools": ["read_file", "write_file"],
              "checks": [{"type": "file_contains", "path": "todo.txt", "pattern": "(?m)^call Bob$"},
                         {"type": "file_contains", "path": "todo.txt", "value": "buy milk"},
                         {"type": "file_unchanged", "path": "scripts/count.py"}]}]
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def episodes(suite_file, model: ScriptedTurns, **settings):
    suite = load_tasks(suite_file)
    found = {}
    run_task_episodes(suite.tasks, model.source, outputs=reference_outputs(suite, sandbox=SANDBOX),
                      settings=EpisodeSettings(sandbox=SANDBOX, **settings),
                      on_episode=lambda i, e: found.__setitem__(suite.tasks[i].id, e))
    return found


def test_a_model_that_claims_the_work_fails_and_one_that_does_it_passes(suite_file):
    lazy = episodes(suite_file, ScriptedTurns(LAZY))
    assert [(e.outcome, [c["type"] for c in e.failed_checks]) for e in lazy.values()] == [
        ("failed", ["answer_includes_output_of"]), ("failed", ["file_contains"])]
    assert "missing '95 units of 7 products in stock.'" in lazy["count"].failed_checks[0]["reason"]
    done = episodes(suite_file, ScriptedTurns(WORKER))
    assert {k: (e.outcome, e.passed, e.steps, e.tool_calls) for k, e in done.items()} == {
        "count": ("passed", True, 2, 1), "todo": ("passed", True, 3, 2)}
    assert all(c["passed"] for e in done.values() for c in e.checks) and len(done["todo"].checks) == 3
    assert done["count"].messages[3]["content"] == "exit code: 0\n95 units of 7 products in stock."
    assert (suite_file.parent / "ws" / "todo.txt").read_text() == "buy milk\n"  # the task's workspace is untouched


def test_batched_episodes_step_together_and_finished_ones_drop_out(suite_file):
    model = ScriptedTurns(WORKER)
    episodes(suite_file, model)
    assert model.batches == [2, 2, 1]  # count answers at step 2, todo at step 3
    alone = ScriptedTurns(WORKER, batched=False)
    episodes(suite_file, alone)
    assert alone.batches == [1, 1, 1, 1, 1]


WRITER, READER = "Write secret.txt.", "Read secret.txt."
SPY = {WRITER: [call("write_file", path="secret.txt", content="s3cret"), "Wrote it."],
       READER: [call("list_dir", path="."), call("read_file", path="secret.txt"), "Nothing there."]}


def test_an_episode_never_sees_another_episodes_writes(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("a\n")
    lines = [{"id": "w", "instruction": WRITER, "workspace": "ws", "tools": ["write_file"],
              "checks": [{"type": "file_contains", "path": "secret.txt", "value": "s3cret"}]},
             {"id": "r", "instruction": READER, "workspace": "ws", "tools": ["list_dir", "read_file"],
              "checks": [{"type": "no_tool_error"}]}]
    suite_file = tmp_path / "tasks.jsonl"
    suite_file.write_text("".join(json.dumps(x) + "\n" for x in lines))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for _ in range(2):  # a second run starts from the pristine workspace again
        found = episodes(suite_file, ScriptedTurns(SPY))
        writer, reader = found["w"], found["r"]
        assert writer.passed and writer.messages[3]["content"] == "Created secret.txt (6 characters)."
        tool_results = [m["content"] for m in reader.messages if m["role"] == "tool"]
        assert tool_results == ["a.txt", "Error: no such file: secret.txt"] and not reader.passed
    assert sorted(p.name for p in ws.iterdir()) == ["a.txt"]
    assert list(scratch.iterdir()) == []  # every episode's copy was removed after scoring


def test_kept_workspaces_hold_what_each_episode_did(suite_file, tmp_path):
    done = episodes(suite_file, ScriptedTurns(WORKER), keep_dir=tmp_path / "kept")
    kept = Path(done["todo"].workspace)
    assert kept.parent == tmp_path / "kept" and (kept / "todo.txt").read_text() == "buy milk\ncall Bob\n"
    assert (Path(done["count"].workspace) / "todo.txt").read_text() == "buy milk\n"


def test_recorded_episodes_are_passed_or_failed_and_export_keeps_the_passed(suite_file, tmp_path):
    with TraceStore() as store:
        episodes(suite_file, ScriptedTurns(LAZY), store=store, meta={"run": "lazy"})
        episodes(suite_file, ScriptedTurns(WORKER), store=store, meta={"run": "worker"})
        traces = list(store.iter_traces())
        assert [(t.source, t.meta["run"], t.meta["task_id"], t.outcome) for t in traces] == [
            ("eval", "lazy", "count", "failed"), ("eval", "lazy", "todo", "failed"),
            ("eval", "worker", "count", "passed"), ("eval", "worker", "todo", "passed")]
        assert traces[0].meta["failed_checks"][0]["type"] == "answer_includes_output_of"
        report = export_traces(store, tmp_path / "data", split=(1.0, 0.0, 0.0), only_passed=True)
    assert report.skipped_not_passed == 2 and report.traces["train"] == 2


class FakeEngine:
    """An eval engine whose runs are scripted models (by adapter directory name; the baseline is None)."""

    name, per_case_latency = "inprocess", False

    def __init__(self, models):
        self.models = models

    def prepare(self, adapters):
        pass

    def agent_turns(self, adapter, *, batched=True):
        from contextlib import nullcontext

        return nullcontext(self.models[adapter.name if adapter else None].source)

    def close(self):
        pass


def test_task_eval_pairs_episodes_per_task(tiny_model, tmp_path, monkeypatch):
    """Six tasks: the baseline claims all, the adapter does all but one; the comparison pairs them by task."""
    ws = tmp_path / "ws"
    ws.mkdir()
    lines, lazy, worker = [], {}, {}
    for i in range(6):
        ask = f"Write done-{i}.txt."
        lines.append({"id": f"t{i}", "category": "even" if i % 2 == 0 else "odd", "instruction": ask,
                      "workspace": "ws", "tools": ["write_file"],
                      "checks": [{"type": "file_contains", "path": f"done-{i}.txt", "value": "ok"}]})
        lazy[ask] = ["Done."]
        worker[ask] = [call("write_file", path=f"done-{i}.txt", content="ok" if i else "no"), "Done."]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    adapter = make_adapter(tiny_model, tmp_path / "tuned", 0.0)
    engine = FakeEngine({None: ScriptedTurns(lazy), "tuned": ScriptedTurns(worker)})
    monkeypatch.setattr("punie.eval.task_eval.make_engine", lambda name, options: engine)
    written = []
    results = run_task_eval(tmp_path / "tasks.jsonl", model=str(tiny_model), adapters=[adapter],
                            out_dir=tmp_path / "out", on_written=written.append)
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["kind"] == "tasks" and written == [tmp_path / "out"] and not results.interrupted
    base, tuned = (run["summary"] for run in data["runs"])
    assert (base["passed"], tuned["passed"]) == (0, 5)
    assert tuned["ci95"] == list(stats.wilson_interval(5, 6)) and tuned["failed_checks"] == {"file_contains": 1}
    assert (tuned["mean_steps"], tuned["mean_tool_calls"], base["mean_steps"]) == (2.0, 1.0, 1.0)
    [comp] = data["comparisons"]
    table = stats.PairedTable(both=0, only_new=5, only_old=0, neither=1)
    assert (comp["improved"], comp["regressed"], comp["n_paired"]) == (5, 0, 6)
    assert comp["p_value"] == stats.mcnemar_exact(5, 0) == 0.0625
    assert comp["ci95"] == list(stats.newcombe_paired_interval(table)) and comp["delta"] == pytest.approx(5 / 6)
    assert comp["verdict"] == "no significant difference"  # 5 of 6 changed: p = 0.0625
    assert comp["by_category"]["odd"]["delta"] == 1.0 and comp["changed"] == ["t1", "t2", "t3", "t4", "t5"]
    assert [e["id"] for e in data["runs"][1]["episodes"]] == [f"t{i}" for i in range(6)]


# -- the in-process engine: batched turns give the same episodes as one at a time --------------------------

OPENINGS = {f"Task {i}: look around.": [call("list_dir", path=".")] * n for i, n in enumerate([0, 0, 0, 1, 1, 2])}


def with_scripted_openings(turns: TurnSource, asked: list[int]) -> TurnSource:
    """The first turns of some tasks are scripted tool calls (so episodes differ in length and context);
    every later turn comes from the model."""

    def complete_many(requests):
        out, to_model = [None] * len(requests), []
        for i, (messages, _) in enumerate(requests):
            script, step = OPENINGS[instruction_of(messages)], sum(m["role"] == "assistant" for m in messages)
            if step < len(script):
                out[i] = Completion(parse_text(script[step]), script[step], tokens=0)
            else:
                to_model.append(i)
        if to_model:
            asked.append(len(to_model))
            for i, turn in zip(to_model, turns.complete_many([requests[i] for i in to_model]), strict=True):
                out[i] = turn
        return out

    return TurnSource(complete_many, turns.batched)


def test_batched_in_process_episodes_equal_one_at_a_time(tiny_model, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("buy milk\n")
    lines = [{"id": f"t{i}", "instruction": ask, "workspace": "ws", "max_steps": 4, "tools": ["list_dir", "read_file"],
              "checks": [{"type": "answer_contains", "value": "milk"}]} for i, ask in enumerate(OPENINGS)]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    suite = load_tasks(tmp_path / "tasks.jsonl")
    adapter = make_adapter(tiny_model, tmp_path / "strong", 1.0)
    engine = InProcessEngine(EngineOptions(model=str(tiny_model), max_tokens=12, batch_size=4))
    engine.prepare([adapter])
    got: dict[tuple, list] = {}
    try:
        for run_adapter in (None, adapter):
            for batched in (True, False):
                asked: list[int] = []
                found = {}
                with engine.agent_turns(run_adapter, batched=batched) as turns:
                    run_task_episodes(suite.tasks, with_scripted_openings(turns, asked), outputs={},
                                      settings=EpisodeSettings(sandbox="none"),
                                      on_episode=lambda i, e, found=found: found.__setitem__(i, e))
                got[(run_adapter, batched)] = [(found[i].messages, found[i].tokens, found[i].outcome)
                                               for i in range(len(lines))]
                if batched:
                    assert asked[0] == 3 and max(asked) > 1  # the model got several episodes' turns at once
                else:
                    assert set(asked) == {1}
    finally:
        engine.close()
    for run_adapter in (None, adapter):
        assert got[(run_adapter, True)] == got[(run_adapter, False)]
    assert got[(None, True)] != got[(adapter, True)]  # the adapter really ran
    assert {len(messages) for messages, _, _ in got[(None, True)]} != {3}  # episodes of different lengths
