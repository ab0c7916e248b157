"""The planner's data: the synthetic generator and its committed splits, the trace converter, worker profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from punie.errors import ConfigError, DataError
from punie.planner.convert import convert_traces, dependency_edges, trace_workflow, traces_to_workflows
from punie.planner.generate import SPLITS, TEMPLATES, GenerateSettings, generate, write_synthetic
from punie.planner.profile import parse_names, parse_prices, profile_workers
from punie.planner.workers import WorkerProfile, WorkerSet, read_workers
from punie.planner.workflow import SUBTASK_TYPES, read_workflows
from punie.traces.store import ToolCallRecord, Trace, TraceStore

DATA = Path(__file__).resolve().parents[1] / "data" / "planner"


def _worker(name, success, tokens=10.0):
    rates = dict.fromkeys(SUBTASK_TYPES, success) if isinstance(success, float) else success
    return WorkerProfile(name=name, success=rates, tokens=dict.fromkeys(SUBTASK_TYPES, tokens),
                         latency_s=dict.fromkeys(SUBTASK_TYPES, 1.0))


WORKERS = WorkerSet(workers=[_worker("base", {**dict.fromkeys(SUBTASK_TYPES, 0.1), "answer": 0.9}),
                             _worker("tools", {**dict.fromkeys(SUBTASK_TYPES, 0.7), "answer": 0.6}, tokens=5.0)])


# --- the synthetic generator --------------------------------------------------------------------------

def test_the_committed_splits_are_the_generators_output_byte_for_byte(tmp_path):
    manifest = json.loads((DATA / "manifest.json").read_text())
    assert manifest["synthetic"] is True
    settings = manifest["settings"]
    write_synthetic(tmp_path, DATA / "workers.json", seed=settings["seed"], lam=settings["lam"], mu=settings["mu"],
                    counts=manifest["counts"])
    for split in ("train", "valid", "test"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (DATA / f"{split}.jsonl").read_bytes(), split


def test_generation_is_deterministic_and_the_seed_matters():
    counts = {"train": 12, "valid": 3, "test": 3}
    one, two = generate(WORKERS, GenerateSettings(seed=1), counts), generate(WORKERS, GenerateSettings(seed=1), counts)
    assert one == two
    assert generate(WORKERS, GenerateSettings(seed=2), counts)["train"] != one["train"]


def _template_and_family(workflow):
    template, family = workflow.template.split("/")
    return template, family


@pytest.mark.parametrize("source", ["generated", "committed"])
def test_splits_share_no_template_no_phrasing_family_and_no_instruction(source):
    if source == "committed":
        splits = {name: read_workflows(DATA / f"{name}.jsonl") for name in ("train", "valid", "test")}
    else:
        splits = generate(WORKERS, GenerateSettings(), {"train": 60, "valid": 9, "test": 9})
    seen = {name: {_template_and_family(w) for w in wfs} for name, wfs in splits.items()}
    for a in splits:
        for b in splits:
            if a < b:
                assert not {t for t, _ in seen[a]} & {t for t, _ in seen[b]}, (a, b)
                assert not {f for _, f in seen[a]} & {f for _, f in seen[b]}, (a, b)
                assert not {w.instruction for w in splits[a]} & {w.instruction for w in splits[b]}
    # The declared split table itself is disjoint, and covers every template once.
    declared = [t for templates, _ in SPLITS.values() for t in templates]
    assert sorted(declared) == sorted(TEMPLATES)


def test_generated_workflows_are_synthetic_dags_with_parallel_branches_and_best_workers():
    splits = generate(WORKERS, GenerateSettings(), {"train": 24, "valid": 6, "test": 6})
    everything = [w for wfs in splits.values() for w in wfs]
    assert all(w.source == "synthetic" for w in everything)
    # Not only chains: some subtask has two parents in every split (the parallel templates).
    for wfs in splits.values():
        assert any(len({b for _, b in w.edges}) < len(w.edges) for w in wfs)
    # lam = 0: the supervision is each type's most successful worker.
    for w in everything:
        assert [s.worker for s in w.subtasks] == ["base" if s.type == "answer" else "tools" for s in w.subtasks]
        assert w.outcome is not None and w.outcome.success == all(s.outcome.success for s in w.subtasks)
        assert [s.id for s in w.ordered().subtasks] == [s.id for s in w.subtasks]  # listed in topological order


def test_a_template_its_phrasing_cannot_state_is_refused(monkeypatch):
    import random

    from punie.planner import generate as gen

    # read -> edit -> run plus read -> run: "read X, then edit Y, then run Z" would not say the skip edge.
    monkeypatch.setitem(gen.TEMPLATES, "skip", ("skip", ("read", "edit", "run"), ((0, 1), (1, 2), (0, 2))))
    with pytest.raises(ValueError, match="not layered"):
        gen.make_workflow("w", "skip", "then", random.Random(0), WORKERS, GenerateSettings())


def test_a_high_price_of_cost_moves_the_supervision_to_the_cheaper_worker():
    wfs = generate(WORKERS, GenerateSettings(lam=1.0), {"train": 12})["train"]
    assert {s.worker for w in wfs for s in w.subtasks} == {"tools"}  # 5 tokens vs 10 at 1.0 a token


# --- traces -> workflows ------------------------------------------------------------------------------

def _trace(calls, answer="done", task="fix it", **extra):
    """``calls``: (turn, tool, arguments, result) per tool call."""
    messages = [{"role": "user", "content": task}]
    for turn in sorted({c[0] for c in calls}):
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": c[1], "arguments": c[2]}} for c in calls if c[0] == turn]})
    if answer:
        messages.append({"role": "assistant", "content": answer})
    records = [ToolCallRecord(message_index=c[0], position=k, name=c[1], arguments=c[2], result=c[3])
               for k, c in enumerate(calls)]
    return Trace(messages=messages, task=task, tool_calls=records, id=extra.pop("id", 7), **extra)


def test_a_trace_becomes_a_workflow_with_data_dependencies_and_parallel_reads():
    trace = _trace([
        (1, "list_dir", {"path": "src"}, "a.py\nb.py\nnotes.txt"),
        (2, "read_file", {"path": "src/a.py"}, "def f(): ..."),  # a.py was shown by the listing
        (2, "read_file", {"path": "src/b.py"}, "def g(): ..."),  # same turn: parallel with the read above
        (3, "write_file", {"path": "src/a.py", "content": "b.py src/b.py"}, "wrote src/a.py"),  # same file as s2
        (4, "run_command", {"command": "pytest -q"}, "1 passed"),  # runs after the edit
    ], answer="Fixed src/a.py; 1 passed")
    wf = trace_workflow(trace)
    assert wf.types() == ["list", "read", "read", "edit", "run", "answer"]
    assert wf.id == "trace-7" and wf.source == "trace:7" and wf.instruction == "fix it"
    # s4 (the write) follows s2 (same file; s1->s4 is implied); its content is not a reference to s3.
    # The answer quotes the write's output ("src/a.py"), so it follows the write, beside the run.
    assert sorted(wf.edges) == [("s1", "s2"), ("s1", "s3"), ("s2", "s4"), ("s4", "s5"), ("s4", "s6")]


def test_a_step_with_no_visible_dependency_falls_back_to_the_turn_before_and_edges_are_reduced():
    trace = _trace([
        (1, "search", {"pattern": "parse_date"}, "src/d.py:3: def parse_date"),
        (2, "run_command", {"command": "make lint"}, "ok"),  # nothing of it in s1's output: after turn 1
        (3, "read_file", {"path": "src/d.py"}, "..."),  # shown by the search (s1); s1->s2->s3 does not imply it
    ], answer="")
    wf = trace_workflow(trace)
    assert wf.types() == ["search", "run", "read"]
    assert sorted(wf.edges) == [("s1", "s2"), ("s1", "s3")]


def test_transitive_edges_are_dropped():
    from punie.planner.convert import _Step

    steps = [_Step(1, "read", "", set(), {"a.py"}, "a.py"), _Step(2, "edit", "", set(), {"a.py"}, ""),
             _Step(3, "run", "", {"a.py"}, set(), "")]
    # read->edit (same file), edit->run (state), read->run (data) is implied by the two: left out.
    assert dependency_edges(steps) == [(0, 1), (1, 2)]


def test_subtasks_are_labelled_with_the_worker_that_ran_the_trace_and_only_then():
    workers = WorkerSet(workers=[_worker("base", 0.5).model_copy(update={"model": "m"}),
                                 _worker("sft", 0.5).model_copy(update={"model": "m", "adapter": "ad"})])
    calls = [(1, "open_file", {"path": "a.py"}, "x")]  # another agent's name for read_file
    assert {s.worker for s in trace_workflow(_trace(calls, adapter="ad", model="m"), workers).subtasks} == {"sft"}
    assert {s.worker for s in trace_workflow(_trace(calls, model="m"), workers).subtasks} == {"base"}
    assert {s.worker for s in trace_workflow(_trace(calls, model="scripted-policy"), workers).subtasks} == {None}
    assert trace_workflow(_trace(calls), workers).types() == ["read", "answer"]


def test_traces_that_cannot_be_workflows_are_reported_not_dropped(tmp_path):
    good = _trace([(1, "read_file", {"path": "a.py"}, "x")], id=1)
    unknown = _trace([(1, "dance", {}, "")], id=2)
    empty = _trace([], answer="", id=3)
    converted = convert_traces([good, unknown, empty])
    assert [w.id for w in converted.workflows] == ["trace-1"]
    assert [i for i, _ in converted.rejected] == [2, 3]
    assert "tool 'dance' has no subtask type" in converted.rejected[0][1]
    with TraceStore(tmp_path / "t.sqlite") as store:
        store.add(good)
        store.add(unknown)
        written, rejected = traces_to_workflows(tmp_path / "w.jsonl", store=store)
    assert written == 1 and len(rejected) == 1
    assert read_workflows(tmp_path / "w.jsonl")[0].types() == ["read", "answer"]


# --- worker profiles from eval results ----------------------------------------------------------------

def _results(path, runs, timing="per_case"):
    path.write_text(json.dumps({"model": "default", "timing": timing, "runs": runs}))
    return path


def _case(category, passed, tokens, latency=None):
    return {"id": f"{category}-x", "category": category, "passed": passed, "generated_tokens": tokens,
            "latency_s": latency}


def test_profile_from_crafted_results_merges_suites_and_charges_batched_time_by_tokens(tmp_path):
    tools = [_case(t, t != "search", 10, 2.0) for t in SUBTASK_TYPES] + [_case("read", False, 30, 4.0)]
    a = _results(tmp_path / "a.json", [{"name": "baseline", "adapter": None, "cases": tools}])
    batched = [_case("answer", True, 30), _case("answer", False, 10), _case("irrelevance", True, 40)]
    b = _results(tmp_path / "b.json", [{"name": "baseline", "adapter": None, "summary": {"elapsed_s": 16.0},
                                        "cases": batched}], timing="batched")
    profiled = profile_workers([a, b], {"base": 2.5}, {"baseline": "base"})
    (w,) = profiled.workers.workers
    assert w.name == "base"
    assert w.success["read"] == 0.5 and w.cases["read"] == 2 and w.tokens["read"] == 20 and w.latency_s["read"] == 3
    assert w.success["search"] == 0.0
    # answer: 1 per-case (10 tokens, 2 s) + 2 batched; the batched run's 16 s split 30:10:40 by tokens -> 6 s, 2 s.
    assert w.success["answer"] == pytest.approx(2 / 3)
    assert w.latency_s["answer"] == pytest.approx((2.0 + 6.0 + 2.0) / 3)
    assert w.price_per_token == 2.5 and w.sources == [str(a), str(b)]
    assert profiled.ignored == {"irrelevance": 1}


def test_profile_errors_name_what_is_missing(tmp_path):
    read = [_case("read", True, 5, 1.0)]
    only_read = _results(tmp_path / "r.json", [{"name": "adapter", "adapter": "ad", "cases": read}])
    with pytest.raises(DataError, match=r"worker 'adapter' has no case of subtask type\(s\) list, search, edit, run, "
                                        r"answer in .*r\.json"):
        profile_workers([only_read])
    with pytest.raises(DataError, match="--price names nobody"):
        profile_workers([only_read], {"nobody": 1.0})
    other = _results(tmp_path / "o.json", [{"name": "adapter", "adapter": "other", "cases": read}])
    with pytest.raises(DataError, match="one name must be one worker"):
        profile_workers([only_read, other])
    with pytest.raises(DataError, match="no such results file"):
        profile_workers([tmp_path / "missing.json"])
    with pytest.raises(ConfigError, match="expected NAME=PRICE"):
        parse_prices(["remote"])
    with pytest.raises(DataError, match="--name renames nobody"):
        profile_workers([only_read], names={"nobody": "x"})
    with pytest.raises(ConfigError, match="two runs one worker name"):
        parse_names(["a=x", "b=x"])


def test_the_shipped_workers_are_profiled_from_the_committed_results(monkeypatch):
    monkeypatch.chdir(DATA.parents[1])  # workers.json names its sources relative to the repository
    shipped = read_workers(DATA / "workers.json")
    # The command in data/planner/README.md.
    again = profile_workers([Path("data/planner/results-projects-valid.json"),
                             Path("data/planner/results-notool-valid.json")],
                            names={"baseline": "base", "adapter": "demo-sft"}).workers
    assert [w.name for w in shipped.workers] == [w.name for w in again.workers]
    for a, b in zip(shipped.workers, again.workers, strict=True):
        assert a == b


def test_cli_profile_then_data(run_cli, tmp_path):
    cases = [_case(t, True, 10, 1.0) for t in SUBTASK_TYPES]
    results = _results(tmp_path / "r.json", [{"name": "baseline", "adapter": None, "cases": cases}])
    proc = run_cli("planner", "profile", "--results", str(results), "--name", "baseline=base", "--price", "base=2",
                   "--out", str(tmp_path / "workers.json"))
    assert proc.returncode == 0, proc.stderr
    assert read_workers(tmp_path / "workers.json").get("base").price_per_token == 2.0
    proc = run_cli("planner", "data", "--workers", str(tmp_path / "workers.json"), "--out", str(tmp_path / "d"),
                   "--train", "5", "--valid", "2", "--test", "2")
    assert proc.returncode == 0, proc.stderr
    assert [len(read_workflows(tmp_path / "d" / f"{s}.jsonl")) for s in ("train", "valid", "test")] == [5, 2, 2]
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["synthetic"] is True and manifest["counts"] == {"train": 5, "valid": 2, "test": 2}
