"""The learned planner: DAGs by construction, supervised training, profile-conditioned worker choice."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlx.utils import tree_flatten, tree_map

from planner_fixtures import TEMPLATES, two_workers, worker, workflows, write_data
from punie.errors import ConfigError, ModelError
from punie.planner.model import (
    LearnedPlanner,
    ModelConfig,
    PlannerModel,
    Vocabulary,
    clause,
    edges_from_scores,
    filled_starts,
    load_planner,
    save_planner,
    start_words,
)
from punie.planner.train import resolve_train_config, train_planner
from punie.planner.workers import WorkerSet
from punie.planner.workflow import Workflow, is_dag

VOCAB = Vocabulary.build(w.instruction for w in workflows(40))
_RANDOM: dict[tuple[int, float], LearnedPlanner] = {}


def random_planner(seed: int, scale: float) -> LearnedPlanner:
    """A planner with random weights, multiplied by ``scale`` (large scales give extreme logits)."""
    if (seed, scale) not in _RANDOM:
        mx.random.seed(seed)
        model = PlannerModel(ModelConfig(vocab_size=len(VOCAB.tokens), dims=16, layers=1, heads=2, max_subtasks=6))
        model.update(tree_map(lambda p: mx.random.normal(p.shape) * scale, model.parameters()))
        _RANDOM[(seed, scale)] = LearnedPlanner(model, VOCAB)
    return _RANDOM[(seed, scale)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 4), scale=st.sampled_from([0.1, 1.0, 30.0]), instruction=st.text(min_size=1, max_size=80))
def test_decoding_from_random_weights_always_gives_a_dag(seed, scale, instruction):
    plan = random_planner(seed, scale).plan(instruction)  # a Workflow: validated (acyclic) on construction
    n = len(plan.subtasks)
    assert 1 <= n <= 6
    assert [s.id for s in plan.subtasks] == [f"s{i + 1}" for i in range(n)]
    positions = plan.edge_positions()
    assert all(a < b for a, b in positions)  # decoded order is a topological order
    assert is_dag(n, positions)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 8), data=st.data())
def test_edges_from_any_scores_are_a_dag(n, data):
    values = data.draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=n * n, max_size=n * n))
    scores = np.array(values, dtype=np.float64).reshape(n, n)
    edges = edges_from_scores(n, scores)
    assert is_dag(n, edges)
    assert set(edges) == {(a, b) for a in range(n) for b in range(a + 1, n) if scores[a, b] > 0}


def test_each_subtask_starts_where_its_description_occurs_and_decodes_back_to_its_clause():
    flow = Workflow.model_validate({"id": "w", "instruction": "Read app.py, then read app.py and fix parse_date.",
                                    "subtasks": [{"id": "a", "type": "read", "description": "read app.py"},
                                                 {"id": "b", "type": "read", "description": "read app.py"},
                                                 {"id": "c", "type": "edit", "description": "fix parse_date"},
                                                 {"id": "d", "type": "answer", "description": "not in the text"}]})
    # words: <cls> read app . py , then read app . py and fix parse _ date .  (the second "read" is the next one)
    assert start_words(flow, max_words=64) == [1, 7, 12, None]
    assert start_words(flow, max_words=10) == [1, 7, None, None]  # cut off
    assert filled_starts([1, None, 7, None]) == [1, 1, 7, 7]
    text = flow.instruction
    assert [clause(text, 1, 7), clause(text, 7, 12), clause(text, 12, None)] == [
        "Read app.py", "read app.py", "fix parse_date"]


def test_unknown_words_and_empty_text_encode_to_known_ids():
    ids = VOCAB.encode("zzzqqq ###", max_words=8)
    assert ids[0] == VOCAB.index()["<cls>"] and ids[1] == VOCAB.index()["<unk>"]
    assert VOCAB.encode("   ", max_words=8) == [VOCAB.index()["<cls>"]]
    assert len(VOCAB.encode("word " * 100, max_words=8)) == 8


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A planner trained on the tiny synthetic set, with its data directory and reports."""
    root = tmp_path_factory.mktemp("planner")
    data = write_data(root / "data")
    reports: list[dict] = []

    class Recorder:
        def on_report(self, report):
            reports.append(report)

    config = resolve_train_config({"data": data, "output": root / "planner", "iters": 100, "learning_rate": 5e-3,
                                   "dims": 32, "layers": 1, "steps_per_eval": 50, "steps_per_report": 10})
    result = train_planner(config, Recorder())
    return result, data, reports


def test_supervised_training_learns_types_edges_and_workers(trained):
    result, data, reports = trained
    train_losses = [r["loss"] for r in reports if "plan_loss" in r]
    assert train_losses[-1] < train_losses[0] / 10
    assert result.best["val_type_accuracy"] >= 0.98
    assert result.best["val_edge_f1"] >= 0.98
    assert result.best["val_plan_match"] >= 0.95
    assert result.best["val_worker_accuracy"] >= 0.95
    out = result.output
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics if "val_loss" in m] == [50, 100]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["best_step"] == result.best_step
    assert manifest["config"]["iters"] == 100 and manifest["worker_names"] == ["base", "demo"]
    # the saved planner plans a new instance of a template: compare = read, read -> answer
    planner = load_planner(out)
    plan = planner.plan("first read setup.cfg and read notes.txt; finally tell me how they differ")
    assert plan.types() == TEMPLATES["compare"][2]
    assert plan.edge_positions() == set(TEMPLATES["compare"][3])
    assert [s.description for s in plan.subtasks] == ["read setup.cfg", "read notes.txt", "tell me how they differ"]


def test_a_new_worker_whose_profile_dominates_is_chosen_without_retraining(trained):
    result, _, _ = trained
    planner = load_planner(result.output)
    flows = workflows(12, seed=9)
    known = two_workers()
    for flow in flows:  # with the workers it was trained on, it picks the labelled (best) one
        assert planner.assign(flow, known) == {s.id: s.worker for s in flow.subtasks}
    ace = worker("ace", 0.99, tokens=10, latency=0.5)
    for workers in (WorkerSet(workers=[*known.workers, ace]), WorkerSet(workers=[ace, *known.workers])):
        for flow in flows:
            assert set(planner.assign(flow, workers).values()) == {"ace"}


def test_the_same_seed_gives_the_same_weights(tmp_path):
    data = write_data(tmp_path / "data", n_train=20, n_valid=5)
    weights = []
    for name in ("a", "b"):
        config = resolve_train_config({"data": data, "output": tmp_path / name, "iters": 4, "dims": 16, "layers": 1,
                                       "heads": 2, "steps_per_eval": 2})
        train_planner(config)
        weights.append(dict(tree_flatten(load_planner(tmp_path / name).model.parameters())))
    assert weights[0].keys() == weights[1].keys()
    assert all(mx.array_equal(weights[0][k], weights[1][k]).item() for k in weights[0])


def test_training_refuses_an_existing_output_and_bad_settings(tmp_path):
    data = write_data(tmp_path / "data", n_train=10, n_valid=4)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        train_planner(resolve_train_config({"data": data, "output": tmp_path / "taken", "iters": 1}))
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="must divide"):
        train_planner(resolve_train_config({"data": data, "output": tmp_path / "o", "dims": 30, "heads": 4}))
    with pytest.raises(ConfigError, match="iters"):
        resolve_train_config({"data": data, "output": tmp_path / "o", "iters": 0})


def test_a_directory_that_is_not_a_planner_is_refused(tmp_path):
    with pytest.raises(ModelError, match="not a planner directory"):
        load_planner(tmp_path)
    model = PlannerModel(ModelConfig(vocab_size=len(VOCAB.tokens), dims=16, heads=2))
    save_planner(tmp_path / "p", model, VOCAB)
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    config["model"]["dims"] = 32
    (tmp_path / "p" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="does not fit"):
        load_planner(tmp_path / "p")
