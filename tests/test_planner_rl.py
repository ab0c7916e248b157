"""RL on the worker head: the simulator's expected reward goes up, and the input planner is never touched."""

from __future__ import annotations

import hashlib
import json

import mlx.core as mx
import pytest

from planner_fixtures import worker, workflows
from punie.errors import ConfigError
from punie.planner.model import ModelConfig, PlannerModel, Vocabulary, load_planner, save_planner
from punie.planner.rl import expected_reward, resolve_rl_config, train_rl
from punie.planner.workers import WorkerSet, write_workers
from punie.planner.workflow import write_workflows


@pytest.fixture
def toy(tmp_path):
    """A fresh (random) planner, 60 workflows, and a cheap-but-weak and a strong-but-pricey worker.

    At lam = 0.001 the strong worker is worth its price on every subtask (0.95 vs 0.7 success for 0.1
    vs 0.02 of cost); at lam = 0.05 the cheap one is. A fresh head scores both alike.
    """
    flows = workflows(60, seed=3)
    vocab = Vocabulary.build(w.instruction for w in flows)
    mx.random.seed(0)
    model = PlannerModel(ModelConfig(vocab_size=len(vocab.tokens), dims=16, layers=1, heads=2))
    mx.eval(model.parameters())
    save_planner(tmp_path / "planner", model, vocab)
    workers = WorkerSet(workers=[worker("cheap", 0.7, tokens=20), worker("strong", 0.95, tokens=20, price=5.0)])
    write_workers(tmp_path / "workers.json", workers)
    write_workflows(tmp_path / "train.jsonl", flows)
    return tmp_path, flows, workers


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("algo", "reward"), [("grpo", "sample"), ("reinforce", "sample"), ("grpo", "expected")])
def test_rl_raises_the_expected_reward(toy, algo, reward):
    root, flows, workers = toy
    before_sha = _sha(root / "planner" / "planner.safetensors")
    config = resolve_rl_config({"planner": root / "planner", "output": root / "rl", "workers": root / "workers.json",
                                "data": root / "train.jsonl", "lam": 0.001, "algo": algo, "reward": reward, "iters": 40,
                                "learning_rate": 3e-3})
    result = train_rl(config)
    before = expected_reward(load_planner(root / "planner"), flows, workers, 0.001, 0.0)
    after = expected_reward(load_planner(root / "rl"), flows, workers, 0.001, 0.0)
    assert result.before["0.001"] == pytest.approx(before)
    assert after > before + 0.1
    assert set(load_planner(root / "rl").assign(flows[0], workers, 0.001).values()) == {"strong"}
    assert _sha(root / "planner" / "planner.safetensors") == before_sha  # the input is not modified
    metrics = [json.loads(line) for line in (root / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["iteration"] == 0 and metrics[-1]["iteration"] == 40
    assert json.loads((root / "rl" / "manifest.json").read_text())["config"]["algo"] == algo


def test_rl_over_a_range_of_lam_learns_both_ends_of_the_curve(toy):
    root, flows, workers = toy
    config = resolve_rl_config({"planner": root / "planner", "output": root / "rl", "workers": root / "workers.json",
                                "data": root / "train.jsonl", "lam": 0.0005, "lam_max": 0.1, "iters": 300})
    train_rl(config)
    planner = load_planner(root / "rl")
    assert set(planner.assign(flows[0], workers, 0.0005).values()) == {"strong"}
    assert set(planner.assign(flows[0], workers, 0.1).values()) == {"cheap"}
    # flows[0] has three subtasks: strong pays below lam = (0.95^3 - 0.7^3) / (300 - 60) = 0.0021


def test_rl_never_writes_over_the_input_or_an_existing_directory(toy):
    root, _, _ = toy
    base = {"workers": root / "workers.json", "data": root / "train.jsonl", "iters": 1}
    with pytest.raises(ConfigError, match="is the input planner"):
        train_rl(resolve_rl_config(base | {"planner": root / "planner", "output": root / "planner"}))
    (root / "taken").mkdir()
    (root / "taken" / "x").write_text("mine")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        train_rl(resolve_rl_config(base | {"planner": root / "planner", "output": root / "taken"}))
    with pytest.raises(ConfigError, match="lam-max"):
        resolve_rl_config(base | {"planner": root / "planner", "output": root / "o", "lam": 0.5, "lam_max": 0.1})
