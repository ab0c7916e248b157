"""Policy-gradient training of the planner's worker head in the execution simulator.

An episode is a training workflow, a price ``lam`` of cost (fixed, or drawn log-uniformly per episode
from ``[lam, lam_max]`` so one model learns a whole cost-quality curve: ``lam`` is one of the head's
inputs) and a sampled worker per subtask; its reward is the simulator's ``success - lam*cost -
mu*latency`` from :func:`punie.planner.simulate.sample`. Two baselines:

- ``reinforce``: the advantage is the reward minus a moving average of past rewards;
- ``grpo``: ``group`` assignments are sampled for the same episode and each one's advantage is its
  reward minus the group's mean, divided by the group's standard deviation (``normalize``). With
  lam drawn per episode the division matters: rewards at a high lam are many times larger than at a
  low one, and without it the high-lam episodes decide every step.

``reward="expected"`` scores each sampled assignment by its closed-form expected reward instead of one
simulated run: the same mean, without the 0/1 success draw's noise, which at success rates of 0.1-0.3
drowns differences of a few points between workers.

Only the worker head learns. The plan (types and edges) stays as supervised: the simulator scores a
plan by success, cost and latency alone, so a policy gradient on the plan would learn to emit one
cheap subtask whatever the instruction asks. So the subtask states are computed once, up front.
``jitter`` perturbs the worker profiles per episode (noise on the success logits and the log costs),
so the head learns to read profiles rather than one set's numbers. The input directory is never
written: the result is a new planner directory.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from punie.errors import ConfigError, validation_problems
from punie.planner.model import (
    LearnedPlanner,
    encode_batch,
    filled_starts,
    load_planner,
    save_planner,
    start_words,
    type_ids,
    worker_features,
)
from punie.planner.simulate import expected, sample
from punie.planner.train import ReportCallback, file_record
from punie.planner.workers import WorkerSet, read_workers
from punie.planner.workflow import Workflow, read_workflows
from punie.training.rundir import RunDir, software_versions, training_process


class RLConfig(BaseModel):
    """Settings of ``punie planner rl``; the CLI's help text is each field's description."""

    model_config = ConfigDict(extra="forbid")
    planner: Path = Field(description="The supervised planner directory to start from (never modified).")
    output: Path = Field(description="Directory for the new planner.")
    workers: Path = Field(description="workers.json: the profiles the simulator draws outcomes from.")
    data: Path = Field(description="Workflows to train on (a JSONL file, or a directory holding train.jsonl).")
    lam: float = Field(default=0.0, ge=0, description="Price of cost (reward = success - lam*cost - mu*latency).")
    lam_max: float | None = Field(default=None, gt=0, description="Draw lam per episode log-uniformly from "
                                  "[lam, lam-max] (lam 0: from lam-max/1000), so one model covers a cost-quality "
                                  "curve.")
    mu: float = Field(default=0.0, ge=0, description="Price of latency (critical-path seconds).")
    algo: Literal["reinforce", "grpo"] = Field(default="grpo", description="Baseline: moving average (reinforce) "
                                               "or the mean of a group of samples of the same episode (grpo).")
    reward: Literal["sample", "expected"] = Field(default="sample", description="Score a sampled assignment by "
                                                  "one simulated run (sample) or by its closed-form expected reward "
                                                  "(expected: the same mean, no noise from the 0/1 success draw).")
    group: int = Field(default=8, ge=2, description="Assignments sampled per episode (grpo).")
    normalize: bool = Field(default=True, description="Divide each group's advantages by its reward spread "
                            "(grpo), so an episode priced high (large rewards) does not drown the others out.")
    batch_size: int = Field(default=16, ge=1, description="Episodes per step.")
    iters: int = Field(default=300, ge=1, description="Policy-gradient steps.")
    learning_rate: float = Field(default=1e-3, gt=0, description="Adam learning rate.")
    # 0.1, not 0.01: with lam drawn per episode the cheap worker is right for most episodes, and a smaller
    # bonus lets the head settle on it everywhere before it has learned where the strong one pays.
    entropy: float = Field(default=0.1, ge=0, description="Entropy bonus (keeps every worker sampled while the "
                           "head learns).")
    baseline_decay: float = Field(default=0.9, ge=0, lt=1, description="Moving-average decay (reinforce).")
    jitter: float = Field(default=0.0, ge=0, description="Noise on the worker profiles per episode (0: none).")
    eval_workflows: int = Field(default=200, ge=1, description="Workflows the expected reward is reported on.")
    seed: int = Field(default=0, description="Seed of the sampling and the simulator.")
    steps_per_report: int = Field(default=10, ge=1, description="Steps between reports.")

    @model_validator(mode="after")
    def _range(self) -> RLConfig:
        if self.lam_max is not None and self.lam_max < self.lam:
            raise ValueError(f"lam-max {self.lam_max} is below lam {self.lam}")
        return self

    def lam_range(self) -> tuple[float, float] | None:
        if self.lam_max is None:
            return None
        return (self.lam if self.lam > 0 else self.lam_max / 1000, self.lam_max)

    def eval_lams(self) -> list[float]:
        span = self.lam_range()
        if span is None:
            return [self.lam]
        return [span[0], math.sqrt(span[0] * span[1]), span[1]]


def resolve_rl_config(given: dict[str, Any]) -> RLConfig:
    try:
        return RLConfig.model_validate(given)
    except ValidationError as exc:
        raise ConfigError(f"planner rl: {'; '.join(validation_problems(exc, dashes=True))}") from None


@dataclass
class RLResult:
    output: Path
    before: dict[str, float]  # expected reward of greedy assignments per lam, before RL
    after: dict[str, float]


@dataclass
class Episodes:
    """The training workflows in topological order, with their subtask states (fixed: the plan does not learn)."""

    workflows: list[Workflow]
    states: mx.array  # (N, M, d)
    mask: np.ndarray  # (N, M) 1 where a subtask exists

    @classmethod
    def of(cls, planner: LearnedPlanner, workflows: list[Workflow], chunk: int = 256) -> Episodes:
        model, m = planner.model, planner.model.config.max_subtasks
        ordered = [w.ordered() for w in workflows]
        too_long = next((w for w in ordered if len(w.subtasks) > m), None)
        if too_long is not None:
            raise ConfigError(f"workflow {too_long.id!r} has {len(too_long.subtasks)} subtasks; the planner handles "
                              f"at most {m}.")
        parts = []
        for start in range(0, len(ordered), chunk):
            part = ordered[start:start + chunk]
            tokens, mask = encode_batch(planner.vocab, [w.instruction for w in part], model.config.max_words)
            types, starts = np.zeros((len(part), m), np.int32), np.zeros((len(part), m), np.int32)
            for i, w in enumerate(part):
                types[i, :len(w.subtasks)] = type_ids(w)
                starts[i, :len(w.subtasks)] = filled_starts(start_words(w, model.config.max_words))
            _, _, states = model.forward(mx.array(tokens), mx.array(mask), mx.array(types), mx.array(starts))
            parts.append(mx.stop_gradient(states))
        sub_mask = np.zeros((len(ordered), m), np.float32)
        for i, w in enumerate(ordered):
            sub_mask[i, :len(w.subtasks)] = 1.0
        return cls(ordered, mx.concatenate(parts), sub_mask)


def jittered(workers: WorkerSet, scale: float, rng: np.random.Generator) -> WorkerSet:
    """The profiles with noise on the success logits and the log tokens/latencies (the same noise shape per type)."""
    if scale == 0:
        return workers
    changed = []
    for w in workers.workers:
        def noisy(values: dict[Any, float], logit: bool) -> dict[Any, float]:
            out = {}
            for t, v in values.items():
                if logit:
                    x = math.log(max(v, 1e-4) / max(1 - v, 1e-4)) + rng.normal(0, scale)
                    out[t] = 1 / (1 + math.exp(-x))
                else:
                    out[t] = v * math.exp(rng.normal(0, scale))
            return out
        changed.append(w.model_copy(update={"success": noisy(w.success, True), "tokens": noisy(w.tokens, False),
                                            "latency_s": noisy(w.latency_s, False)}))
    return WorkerSet.model_construct(workers=changed)


def expected_reward(planner: LearnedPlanner, workflows: list[Workflow], workers: WorkerSet, lam: float,
                    mu: float) -> float:
    """Mean expected reward (closed form) of the planner's greedy assignments on ``workflows``."""
    total = 0.0
    for workflow in workflows:
        total += expected(workflow, planner.assign(workflow, workers, lam, mu), workers).reward(lam, mu)
    return total / len(workflows)


def _pg_loss(model: nn.Module, states: mx.array, features: mx.array, actions: mx.array, advantages: mx.array,
             mask: mx.array, entropy: float) -> mx.array:
    """-E[advantage * log pi(assignment)] - entropy bonus; actions (B, G, M), advantages (B, G), mask (B, M)."""
    logp = nn.log_softmax(model.worker_logits(states, features), axis=-1)  # (B, M, W)
    chosen = mx.take_along_axis(mx.broadcast_to(logp[:, None], (*actions.shape, logp.shape[-1])),
                                actions[..., None], axis=-1).squeeze(-1)  # (B, G, M)
    seq_logp = (chosen * mask[:, None]).sum(-1)
    spread = -(mx.exp(logp) * logp).sum(-1)
    return -(advantages * seq_logp).mean() - entropy * (spread * mask).sum() / mx.maximum(mask.sum(), 1.0)


def _check_output(config: RLConfig) -> None:
    if config.output.resolve() == config.planner.resolve():
        raise ConfigError(f"--output {config.output} is the input planner; RL writes a new directory.")
    if config.output.exists() and (not config.output.is_dir() or any(config.output.iterdir())):
        raise ConfigError(f"--output {config.output} already exists and is not empty; choose another directory.")


def train_rl(config: RLConfig, callback: ReportCallback | None = None) -> RLResult:
    _check_output(config)
    planner = load_planner(config.planner)
    workers = read_workers(config.workers)
    data_file = config.data / "train.jsonl" if config.data.is_dir() else config.data
    workflows = read_workflows(data_file)
    episodes = Episodes.of(planner, workflows)
    held = episodes.workflows[:config.eval_workflows]
    model = planner.model
    model.freeze()
    for part in (model.worker_state, model.worker_profile, model.worker_mid, model.worker_out):
        part.unfreeze()
    lams = config.eval_lams()
    before = {f"{lam:g}": expected_reward(planner, held, workers, lam, config.mu) for lam in lams}
    run = RunDir(config.output)
    config.output.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "kind": "punie planner rl", "status": "running", "config": config.model_dump(mode="json"),
        "from": file_record(config.planner / "planner.safetensors"), "workers": file_record(config.workers),
        "data": file_record(data_file) | {"workflows": len(workflows)}, "process": training_process(),
        "versions": software_versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    run.write_manifest(manifest)
    metrics: list[dict[str, Any]] = [{"iteration": 0, "expected_reward": before}]
    if callback:
        callback.on_report(metrics[0])
    _loop(config, planner, episodes, workers, held, run, metrics, callback)
    after = metrics[-1]["expected_reward"]
    save_planner(config.output, model, planner.vocab, {"kind": "punie planner", "rl": config.model_dump(mode="json")})
    manifest |= {"status": "done", "before": before, "after": after,
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    run.write_manifest(manifest)
    return RLResult(config.output, before, after)


def _loop(config: RLConfig, planner: LearnedPlanner, episodes: Episodes, workers: WorkerSet, held: list[Workflow],
          run: RunDir, metrics: list[dict[str, Any]], callback: ReportCallback | None) -> None:
    model = planner.model
    rng, sim_rng = np.random.default_rng(config.seed), random.Random(config.seed)
    optimizer = optim.Adam(learning_rate=config.learning_rate)
    value_and_grad = nn.value_and_grad(model, _pg_loss)
    group = config.group if config.algo == "grpo" else 1
    baseline: float | None = None
    window: list[float] = []
    started = time.perf_counter()
    for it in range(1, config.iters + 1):
        rows = rng.choice(len(episodes.workflows), size=config.batch_size)
        lams = _draw_lams(config, rng)
        sets = [jittered(workers, config.jitter, rng) for _ in rows]
        features = mx.array(_features(episodes, rows, sets, lams, config.mu, model.config.max_subtasks))
        mask = episodes.mask[rows]
        probs = np.array(mx.softmax(model.worker_logits(episodes.states[mx.array(rows)], features), axis=-1))
        actions, rewards = _rollouts(episodes, rows, sets, lams, config.mu, probs, mask, group, rng, sim_rng,
                                     config.reward)
        if config.algo == "grpo":
            advantages = rewards - rewards.mean(axis=1, keepdims=True)
            if config.normalize:
                advantages = advantages / (rewards.std(axis=1, keepdims=True) + 1e-6)
        else:
            baseline = float(rewards.mean()) if baseline is None else baseline
            advantages = rewards - baseline
            baseline = config.baseline_decay * baseline + (1 - config.baseline_decay) * float(rewards.mean())
        loss, grads = value_and_grad(model, episodes.states[mx.array(rows)], features, mx.array(actions),
                                     mx.array(advantages.astype(np.float32)), mx.array(mask), config.entropy)
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state, loss)
        window.append(float(rewards.mean()))
        if it % config.steps_per_report == 0 or it == config.iters:
            report: dict[str, Any] = {"iteration": it, "reward": float(np.mean(window)), "loss": float(loss),
                                      "seconds": time.perf_counter() - started}
            if it == config.iters or it % (config.steps_per_report * 5) == 0:
                report["expected_reward"] = {f"{lam:g}": expected_reward(planner, held, workers, lam, config.mu)
                                             for lam in config.eval_lams()}
            window.clear()
            metrics.append(report)
            run.write_metrics(metrics)
            if callback:
                callback.on_report(report)


def _draw_lams(config: RLConfig, rng: np.random.Generator) -> np.ndarray:
    span = config.lam_range()
    if span is None:
        return np.full(config.batch_size, config.lam)
    return np.exp(rng.uniform(math.log(span[0]), math.log(span[1]), size=config.batch_size))


def _features(episodes: Episodes, rows: np.ndarray, sets: list[WorkerSet], lams: np.ndarray, mu: float,
              m: int) -> np.ndarray:
    first = worker_features(episodes.workflows[rows[0]].types(), sets[0], float(lams[0]), mu)
    out = np.zeros((len(rows), m, first.shape[1], first.shape[2]), np.float32)
    for b, row in enumerate(rows):
        workflow = episodes.workflows[row]
        out[b, :len(workflow.subtasks)] = worker_features(workflow.types(), sets[b], float(lams[b]), mu)
    return out


def _rollouts(episodes: Episodes, rows: np.ndarray, sets: list[WorkerSet], lams: np.ndarray, mu: float,
              probs: np.ndarray, mask: np.ndarray, group: int, rng: np.random.Generator,
              sim_rng: random.Random, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``group`` sampled assignments per episode (B, G, M) and their simulated rewards (B, G)."""
    batch, m, n_workers = probs.shape
    actions = np.zeros((batch, group, m), np.int32)
    rewards = np.zeros((batch, group), np.float64)
    for b, row in enumerate(rows):
        workflow, names = episodes.workflows[row], [w.name for w in sets[b].workers]
        for g in range(group):
            for j in range(int(mask[b].sum())):
                actions[b, g, j] = rng.choice(n_workers, p=probs[b, j] / probs[b, j].sum())
            assignment = {s.id: names[actions[b, g, j]] for j, s in enumerate(workflow.subtasks)}
            run = (sample(workflow, assignment, sets[b], sim_rng) if kind == "sample"
                   else expected(workflow, assignment, sets[b]))
            rewards[b, g] = run.reward(float(lams[b]), mu)
    return actions, rewards
