"""Planner evaluation: plan metrics, APGR, the baselines and the oracle, the simulator's common draws, the CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from punie.errors import ConfigError
from punie.planner.baselines import (
    BestSingleAssigner,
    Oracle,
    PerTypeAssigner,
    ProfileOptimalAssigner,
    RandomAssigner,
    RulePlanner,
    StrongestAssigner,
)
from punie.planner.evaluate import EvalSettings, evaluate, load_planners
from punie.planner.generate import GenerateSettings, generate
from punie.planner.metrics import PlanCounts, apgr, gap_closed
from punie.planner.simulate import best_assignment, draw, expected, outcomes, replay
from punie.planner.workers import WorkerProfile, WorkerSet, write_workers
from punie.planner.workflow import SUBTASK_TYPES, Workflow, write_workflows


def _wf(types, edges, wid="w", instruction="do it", workers=None):
    return Workflow.model_validate({
        "id": wid, "instruction": instruction, "edges": edges,
        "subtasks": [{"id": f"s{i + 1}", "type": t, **({"worker": workers[i]} if workers else {})}
                     for i, t in enumerate(types)]})


def _worker(name, success, tokens=10.0, latency=1.0, price=1.0):
    rates = dict.fromkeys(SUBTASK_TYPES, success) if isinstance(success, float) else success
    return WorkerProfile(name=name, success=rates, tokens=dict.fromkeys(SUBTASK_TYPES, tokens),
                         latency_s=dict.fromkeys(SUBTASK_TYPES, latency), price_per_token=price)


# cheap is cheap and good at answers; strong is dear and good at tools.
WORKERS = WorkerSet(workers=[_worker("cheap", {**dict.fromkeys(SUBTASK_TYPES, 0.3), "answer": 0.9}, tokens=10),
                             _worker("strong", {**dict.fromkeys(SUBTASK_TYPES, 0.8), "answer": 0.7}, tokens=40,
                                     latency=2.0)])


# --- plan metrics -------------------------------------------------------------------------------------

def test_plan_metrics_on_hand_computed_plans():
    ref_a = _wf(["search", "read", "edit"], [["s1", "s2"], ["s2", "s3"]])
    ref_b = _wf(["read", "read", "answer"], [["s1", "s3"], ["s2", "s3"]])
    counts = PlanCounts()
    counts.add(_wf(["search", "read", "edit"], [["s1", "s2"], ["s2", "s3"]]), ref_a)  # exact
    # b: types right; edges {(0,2),(1,2)} vs predicted {(0,1),(1,2)}: 1 hit of 2 predicted, of 2 reference
    counts.add(_wf(["read", "read", "answer"], [["s1", "s2"], ["s2", "s3"]]), ref_b)
    # a again with a step too many: types 3 of 4 slots, edges {(0,1),(1,2),(2,3)}: 2 hits of 3
    counts.add(_wf(["search", "read", "edit", "run"], [["s1", "s2"], ["s2", "s3"], ["s3", "s4"]]), ref_a)
    counts.add(None, ref_b)  # no valid plan: 3 slots and 2 reference edges missed
    summary = counts.summary()
    assert summary["plans"] == 4 and summary["dag_validity"] == 0.75
    assert summary["type_accuracy"] == pytest.approx((3 + 3 + 3 + 0) / (3 + 3 + 4 + 3))
    assert summary["edge_precision"] == pytest.approx((2 + 1 + 2) / (2 + 2 + 3))
    assert summary["edge_recall"] == pytest.approx((2 + 1 + 2) / (2 + 2 + 2 + 2))
    p, r = 5 / 7, 5 / 8
    assert summary["edge_f1"] == pytest.approx(2 * p * r / (p + r))
    assert summary["exact_match"] == 0.25
    assert summary["executes"] == 0.25  # b lost a reference edge; a has another step


def test_extra_edges_still_execute_but_are_not_an_exact_match():
    ref = _wf(["read", "read", "answer"], [["s1", "s3"], ["s2", "s3"]])
    counts = PlanCounts()
    counts.add(_wf(["read", "read", "answer"], [["s1", "s2"], ["s1", "s3"], ["s2", "s3"]]), ref)
    assert counts.summary()["executes"] == 1.0 and counts.summary()["exact_match"] == 0.0


def test_apgr_on_a_hand_computed_curve():
    cheap, strong = (100.0, 0.2), (200.0, 0.6)
    # Normalised costs 0.5 and 1.0 at qualities 0.5 and 0.6; the curve starts at (0, 0.2).
    # Area: 0.5 * (0.2 + 0.5) / 2 + 0.5 * (0.5 + 0.6) / 2 = 0.175 + 0.275 = 0.45; APGR = (0.45 - 0.2) / 0.4.
    assert apgr([(150.0, 0.5), (200.0, 0.6)], cheap, strong) == pytest.approx(0.625)
    # The strong worker's own point recovers half: a straight line from weak to strong.
    assert apgr([(200.0, 0.6)], cheap, strong) == pytest.approx(0.5)
    # At the strong quality from the cheapest cost on: everything.
    assert apgr([(100.0, 0.6)], cheap, strong) == pytest.approx(1.0)
    # A point dearer than the strong worker counts only through the interpolation up to cost 1.
    # (0, .2) -> (2, .6): at x = 1 quality .4; area (.2 + .4) / 2 = .3; (.3 - .2) / .4.
    assert apgr([(300.0, 0.6)], cheap, strong) == pytest.approx(0.25)
    assert apgr([(150.0, 0.5)], (100.0, 0.6), (100.0, 0.6)) is None  # cheapest is strongest: undefined


def test_gap_closed():
    assert gap_closed(0.5, 0.4, 0.6) == pytest.approx(0.5)
    assert gap_closed(0.3, 0.4, 0.6) == pytest.approx(-0.5)
    assert gap_closed(0.5, 0.6, 0.6) is None


# --- simulation with common draws, the oracle and the baselines -------------------------------------

def test_replay_on_common_draws_approaches_the_closed_form():
    wf = _wf(["read", "edit", "answer"], [["s1", "s2"], ["s1", "s3"]])
    assignment = {"s1": "strong", "s2": "cheap", "s3": "cheap"}
    draws = draw(wf, WORKERS, 20000, seed=3)
    run = replay(wf, assignment, WORKERS, draws)
    exp = expected(wf, assignment, WORKERS)
    assert run.success == pytest.approx(0.8 * 0.3 * 0.9, abs=0.012)  # ~4 sd
    assert (run.cost, run.latency_s) == (exp.cost, exp.latency_s) == (60.0, 3.0)
    assert draw(wf, WORKERS, 5, seed=3) == draws[:5]  # the same draws for a seed and workflow id


def _realised(wf, assignment, seen, lam, mu=0.0):
    run = expected(wf, assignment, WORKERS)
    return float(all(seen[i][w] for i, w in assignment.items())) - lam * run.cost - mu * run.latency_s


@pytest.mark.parametrize("lam", [0.0, 0.004, 0.05])
@pytest.mark.parametrize("mu", [0.0, 0.1])
def test_the_oracle_beats_every_assignment_on_the_same_draws(lam, mu):
    wf = _wf(["search", "read", "edit", "answer"], [["s1", "s2"], ["s1", "s3"], ["s2", "s4"], ["s3", "s4"]])
    oracle = Oracle()
    every = [dict(zip(["s1", "s2", "s3", "s4"], combo, strict=True))
             for combo in itertools.product(["cheap", "strong"], repeat=4)]
    for episode in draw(wf, WORKERS, 60, seed=1):
        seen = outcomes(wf, WORKERS, episode)
        best = _realised(wf, oracle.assign(wf, WORKERS, seen, lam, mu), seen, lam, mu)
        assert best == pytest.approx(max(_realised(wf, a, seen, lam, mu) for a in every))


def test_best_assignment_is_the_exhaustive_optimum_of_expected_reward():
    wf = _wf(["read", "edit", "answer"], [["s1", "s2"], ["s2", "s3"]])
    for lam in (0.0, 0.001, 0.01, 0.1):
        found = best_assignment(wf, WORKERS, lam)
        rewards = [expected(wf, dict(zip(["s1", "s2", "s3"], c, strict=True)), WORKERS).reward(lam)
                   for c in itertools.product(["cheap", "strong"], repeat=3)]
        assert expected(wf, found, WORKERS).reward(lam) == pytest.approx(max(rewards))
    assert best_assignment(wf, WORKERS, 0.0) == {"s1": "strong", "s2": "strong", "s3": "cheap"}
    assert set(best_assignment(wf, WORKERS, 0.1).values()) == {"cheap"}


def test_the_baseline_assigners():
    wf = _wf(["read", "edit", "answer"], [["s1", "s2"], ["s2", "s3"]], wid="x")
    assert StrongestAssigner().assign(wf, WORKERS) == dict.fromkeys(["s1", "s2", "s3"], "strong")
    assert PerTypeAssigner().assign(wf, WORKERS) == {"s1": "strong", "s2": "strong", "s3": "cheap"}
    assert ProfileOptimalAssigner().assign(wf, WORKERS, 0.0) == best_assignment(wf, WORKERS, 0.0)
    random_assigner = RandomAssigner(seed=4)
    assert random_assigner.assign(wf, WORKERS) == random_assigner.assign(wf, WORKERS)  # repeatable
    picks = {w for k in range(30) for w in RandomAssigner(seed=k).assign(wf, WORKERS).values()}
    assert picks == {"cheap", "strong"}
    # Best single on training answers alone: "cheap" (0.9 vs 0.7); on tool chains "strong".
    answers = [_wf(["answer"], [], wid=f"a{k}") for k in range(3)]
    assert set(BestSingleAssigner(answers).assign(wf, WORKERS).values()) == {"cheap"}
    assert set(BestSingleAssigner([wf]).assign(wf, WORKERS).values()) == {"strong"}
    # ... unless cost is priced high enough: 30 tokens more per step at lam 0.05 outweighs the success.
    assert set(BestSingleAssigner([wf]).assign(wf, WORKERS, lam=0.05).values()) == {"cheap"}


@pytest.mark.parametrize(("instruction", "types", "edges"), [
    ("Find where parse_date is defined, then fix its docstring in a.py.", ["search", "edit"], [("s1", "s2")]),
    ("Read a.py and read b.py, then tell me what f returns.", ["read", "read", "answer"],
     [("s1", "s3"), ("s2", "s3")]),
    ("First list the files in src. Next open src/a.py. Finally run pytest -q.", ["list", "read", "run"],
     [("s1", "s2"), ("s2", "s3")]),
    ("Hello there", ["answer"], []),
])
def test_the_rule_planner(instruction, types, edges):
    plan = RulePlanner().plan(instruction)
    assert plan.types() == types and sorted(plan.edges) == edges


# --- evaluate ----------------------------------------------------------------------------------------

class FakePlanner:
    """Plans every instruction as the reference it was built from and always assigns 'cheap'."""

    name = "fake"

    def __init__(self, references):
        self.references = {w.instruction: w for w in references}
        self.asked: list[str] = []

    def plan(self, instruction):
        self.asked.append(instruction)
        ref = self.references[instruction]
        return Workflow(id="p", instruction=instruction, subtasks=[s.model_copy(update={"worker": None})
                                                                   for s in ref.subtasks], edges=ref.edges)

    def assign(self, workflow, workers, lam=0.0, mu=0.0):
        return {s.id: "cheap" for s in workflow.subtasks}


class CyclicPlanner:
    name = "cyclic"

    def plan(self, instruction):
        return _wf(["read", "edit"], [["s1", "s2"], ["s2", "s1"]])  # raises: not a DAG

    def assign(self, workflow, workers, lam=0.0, mu=0.0):
        return {s.id: "strong" for s in workflow.subtasks}


@pytest.fixture(scope="module")
def splits():
    return generate(WORKERS, GenerateSettings(), {"train": 24, "valid": 3, "test": 9})


def test_evaluate_scores_planners_and_baselines_on_the_same_draws(splits):
    test, train = splits["test"], splits["train"]
    fake = FakePlanner(test)
    results = evaluate(test, WORKERS, train, [RulePlanner(), fake, CyclicPlanner()],
                       EvalSettings(episodes=40, lams=(0.0, 0.01)))
    assert fake.asked == [w.instruction for w in test]
    assert results["plans"]["fake"]["exact_match"] == 1.0 and results["plans"]["fake"]["edge_f1"] == 1.0
    assert results["plans"]["cyclic"]["dag_validity"] == 0.0 and results["plans"]["cyclic"]["invalid"]
    routing = results["routing"]
    assert set(routing) >= {"random", "strongest", "best-single", "per-type", "only:cheap", "only:strong",
                            "rules", "fake", "cyclic", "oracle"}
    for name, row in routing.items():
        assert row["reward"] <= routing["oracle"]["reward"] + 1e-12, name
        assert [p["lam"] for p in row["curve"]] == [0.0, 0.01]
    # The fake planner's plans are the references and it assigns 'cheap': end to end it is 'only:cheap'.
    assert results["end_to_end"]["fake"]["success"] == routing["only:cheap"]["success"]
    assert results["end_to_end"]["cyclic"]["success"] == 0.0
    assert routing["per-type"]["worker_accuracy"] == 1.0  # the generator's supervision at lam 0
    single = results["single"]
    assert (single["cheapest"], single["strongest"]) == ("cheap", "strong")
    assert routing["only:cheap"]["apgr"] == pytest.approx(0.0) and routing["only:strong"]["apgr"] == pytest.approx(0.5)
    assert routing["oracle"]["gap_closed"] == pytest.approx(1.0)
    json.dumps(results)  # JSON-ready


def test_load_planners_errors_are_config_errors(tmp_path):
    assert [p.name for p in load_planners(["rules"])] == ["rules"]
    with pytest.raises(ConfigError, match="neither 'rules' nor a planner directory"):
        load_planners([str(tmp_path / "nope")])
    with pytest.raises(ConfigError, match="share a name"):
        load_planners(["rules", "rules"])


def test_cli_eval_writes_results_and_a_self_contained_report(run_cli, tmp_path, splits):
    write_workers(tmp_path / "workers.json", WORKERS)
    write_workflows(tmp_path / "train.jsonl", splits["train"])
    write_workflows(tmp_path / "test.jsonl", splits["test"])
    args = ["planner", "eval", "--planner", "rules", "--data", str(tmp_path / "test.jsonl"), "--workers",
            str(tmp_path / "workers.json"), "--episodes", "20", "--lams", "0,0.01", "--out", str(tmp_path / "ev")]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["kind"] == "planner-eval" and "rules" in results["plans"]
    page = (tmp_path / "ev" / "report.html").read_text()
    assert "<svg" in page and "http://" not in page and "https://" not in page and "only:strong" in page
    again = run_cli(*args)  # results already there: refused, one line, exit 1
    assert again.returncode == 1 and again.stderr.strip().count("\n") == 0 and "--force" in again.stderr


SHIPPED = Path(__file__).resolve().parents[1] / "data" / "planner"


@pytest.mark.parametrize(("args", "says"), [
    (["eval", "--planner", "rules", "--data", "{tmp}/missing.jsonl"], "no such workflow file"),
    (["eval", "--planner", "rules", "--lams", "a,b", "--data", "{tmp}/missing.jsonl"], "--lams 'a,b'"),
    (["eval", "{tmp}", "--data", str(SHIPPED / "test.jsonl"), "--workers", str(SHIPPED / "workers.json")],
     "is not a planner directory"),
    (["profile", "--results", "{tmp}/none.json", "--out", "{tmp}/w.json"], "no such results file"),
    (["profile", "--results", "{tmp}/none.json", "--price", "x"], "expected NAME=PRICE"),
    (["data", "--workers", "{tmp}/none.json", "--out", "{tmp}/d"], "none.json: no such file"),
])
def test_cli_errors_are_one_line_and_exit_1(run_cli, tmp_path, args, says):
    proc = run_cli("planner", *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
