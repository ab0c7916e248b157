"""The planner's shared core: the workflow format and its DAG checks, worker profiles, the simulator."""

from __future__ import annotations

import json
import random

import pytest
from pydantic import ValidationError

from punie.errors import DataError
from punie.planner.simulate import expected, sample
from punie.planner.workers import WorkerProfile, WorkerSet, read_workers, write_workers
from punie.planner.workflow import SUBTASK_TYPES, Workflow, critical_path, is_dag, read_workflows, write_workflows


def _wf(subtasks, edges, **extra):
    return Workflow.model_validate({"id": "w", "instruction": "do it", "edges": edges, **extra,
                                    "subtasks": [{"id": i, "type": t} for i, t in subtasks]})


def _worker(name, success, tokens=10.0, latency=1.0, price=1.0):
    rates = success if isinstance(success, dict) else dict.fromkeys(SUBTASK_TYPES, success)
    return WorkerProfile(name=name, success=rates, tokens=dict.fromkeys(SUBTASK_TYPES, tokens),
                         latency_s=dict.fromkeys(SUBTASK_TYPES, latency), price_per_token=price)


@pytest.mark.parametrize(("edges", "says"), [
    ([["a", "b"], ["b", "c"], ["c", "a"]], "cycle: a -> b -> c -> a"),
    ([["a", "zz"]], "'zz', which is not in subtasks"),
    ([["a", "a"]], "joins a subtask to itself"),
    ([["a", "b"], ["a", "b"]], "listed twice"),
])
def test_a_workflow_that_is_not_a_dag_is_refused_naming_why(edges, says):
    with pytest.raises(ValidationError, match=says.replace("(", r"\(")):
        _wf([("a", "read"), ("b", "edit"), ("c", "run")], edges)


def test_ordered_puts_every_edge_from_an_earlier_subtask_to_a_later_one():
    # Listed against the dependencies: c needs b, b needs a; d is free and keeps its place among ties.
    wf = _wf([("c", "run"), ("d", "answer"), ("b", "edit"), ("a", "read")], [["a", "b"], ["b", "c"]])
    ordered = wf.ordered()
    assert [s.id for s in ordered.subtasks] == ["d", "a", "b", "c"]
    assert ordered.edge_positions() == {(1, 2), (2, 3)}
    assert all(a < b for a, b in ordered.edge_positions())


def test_is_dag_on_positions():
    assert is_dag(3, [(0, 1), (1, 2), (0, 2)])
    assert not is_dag(3, [(0, 1), (1, 0)])
    assert not is_dag(2, [(0, 2)])  # position out of range
    assert not is_dag(2, [(1, 1)])


def test_critical_path_is_the_longest_dependency_chain():
    # a(2) -> b(3) -> d(1) and a(2) -> c(10) -> d(1): the chain through c is the wall time.
    wf = _wf([("a", "list"), ("b", "read"), ("c", "search"), ("d", "edit")],
             [["a", "b"], ["a", "c"], ["b", "d"], ["c", "d"]])
    assert critical_path(wf, {"a": 2, "b": 3, "c": 10, "d": 1}) == 13
    assert critical_path(_wf([("a", "list"), ("b", "read")], []), {"a": 2, "b": 3}) == 3  # parallel


def test_workflow_files_round_trip_and_bad_lines_name_file_and_line(tmp_path):
    wf = _wf([("a", "read"), ("b", "edit")], [["a", "b"]], template="t1", source="synthetic")
    path = tmp_path / "w.jsonl"
    write_workflows(path, [wf, wf.model_copy(update={"id": "w2"})])
    assert read_workflows(path) == [wf, wf.model_copy(update={"id": "w2"})]
    bad = dict(json.loads(path.read_text().splitlines()[0]), id="w3", edges=[["b", "a"], ["a", "b"]])
    path.write_text(path.read_text() + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"w\.jsonl:3: not a workflow: .*cycle"):
        read_workflows(path)
    path.write_text(path.read_text().splitlines()[0] + "\n" + path.read_text().splitlines()[0] + "\n")
    with pytest.raises(DataError, match=r"w\.jsonl:2: workflow id 'w' repeats line 1"):
        read_workflows(path)
    (tmp_path / "t.jsonl").write_text('{"id": "x", "instruction": "i", "subtasks": [{"id": "a", "type": "dance"}]}\n')
    with pytest.raises(DataError, match=r"t\.jsonl:1: .*subtasks\.0\.type"):
        read_workflows(tmp_path / "t.jsonl")


def test_worker_profiles_must_cover_every_type_and_round_trip(tmp_path):
    with pytest.raises(ValidationError, match="success has no value for subtask type"):
        WorkerProfile(name="w", success={"read": 0.5}, tokens=dict.fromkeys(SUBTASK_TYPES, 1.0),
                      latency_s=dict.fromkeys(SUBTASK_TYPES, 1.0))
    with pytest.raises(ValidationError, match="out of range"):
        _worker("w", 1.5)
    with pytest.raises(ValidationError, match="repeated: a"):
        WorkerSet(workers=[_worker("a", 0.5), _worker("a", 0.6)])
    workers = WorkerSet(workers=[_worker("a", 0.5), _worker("b", 0.9, price=20.0)])
    write_workers(tmp_path / "workers.json", workers)
    assert read_workers(tmp_path / "workers.json") == workers
    (tmp_path / "bad.json").write_text('{"workers": [')
    with pytest.raises(DataError, match=r"bad\.json: not JSON"):
        read_workers(tmp_path / "bad.json")


def test_the_simulator_matches_its_closed_form():
    # a -> b, a -> c: success is the product of the rates; cost the sum of tokens x price; latency the
    # longest chain.
    wf = _wf([("a", "read"), ("b", "edit"), ("c", "answer")], [["a", "b"], ["a", "c"]])
    workers = WorkerSet(workers=[
        _worker("cheap", {**dict.fromkeys(SUBTASK_TYPES, 0.9), "edit": 0.5}, tokens=10, latency=1.0),
        _worker("strong", 0.8, tokens=40, latency=5.0, price=3.0)])
    assignment = {"a": "cheap", "b": "strong", "c": "cheap"}
    exp = expected(wf, assignment, workers)
    assert exp.success == pytest.approx(0.9 * 0.8 * 0.9)
    assert exp.cost == pytest.approx(10 + 40 * 3 + 10)
    assert exp.latency_s == pytest.approx(1 + 5)
    assert exp.reward(lam=0.01, mu=0.1) == pytest.approx(0.648 - 1.4 - 0.6)
    rng = random.Random(0)
    runs = [sample(wf, assignment, workers, rng) for _ in range(20000)]
    assert {r.success for r in runs} == {0.0, 1.0}
    assert sum(r.success for r in runs) / len(runs) == pytest.approx(exp.success, abs=0.015)  # ~4 sd
    assert all(r.cost == exp.cost and r.latency_s == exp.latency_s for r in runs)
    with pytest.raises(KeyError, match="subtask 'c' has no worker"):
        expected(wf, {"a": "cheap", "b": "cheap"}, workers)
    with pytest.raises(DataError, match="no worker named 'nobody'"):
        expected(wf, {"a": "cheap", "b": "cheap", "c": "nobody"}, workers)
