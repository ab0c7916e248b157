"""Supervised training of the planner: teacher-forced type cross-entropy, edge BCE and worker cross-entropy.

The loss is a pure function ``(model, batch) -> (loss, parts)``; the step is ``nn.value_and_grad``
compiled with the model and optimizer state (as mlx-lm's trainer does), one ``mx.eval`` per step.
Every batch has the same shape (instructions padded to ``max_words``, plans to ``max_subtasks``),
so the compiled step is traced once. Progress goes through a callback; the best checkpoint (lowest
validation loss) is what the planner directory holds. Same seed, same data: same weights.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from punie.errors import ConfigError, DataError, validation_problems
from punie.planner.model import (
    UNK,
    WORKER_FEATURES,
    ModelConfig,
    PlannerModel,
    Vocabulary,
    edges_from_scores,
    encode_batch,
    filled_starts,
    save_planner,
    start_words,
    type_ids,
    worker_features,
)
from punie.planner.workers import WorkerSet, read_workers
from punie.planner.workflow import Workflow, read_workflows
from punie.training.rundir import RunDir, software_versions, training_process


class PlannerTrainConfig(BaseModel):
    """Settings of ``punie planner train``; the CLI's help text is each field's description."""

    model_config = ConfigDict(extra="forbid")
    data: Path = Field(description="Directory holding train.jsonl and valid.jsonl (workflows).")
    output: Path = Field(description="Directory to write the planner to.")
    workers: Path | None = Field(default=None, description="workers.json the worker labels refer to "
                                 "(default: DATA/workers.json when present; without one the worker head is untrained).")
    dims: int = Field(default=64, ge=8, description="Width of the encoder and decoder.")
    layers: int = Field(default=2, ge=1, description="Transformer layers in the encoder and in the decoder.")
    heads: int = Field(default=4, ge=1, description="Attention heads (must divide --dims).")
    max_words: int = Field(default=64, ge=2, description="Instruction words the encoder reads (more are cut).")
    max_subtasks: int | None = Field(default=None, ge=1, description="Most subtasks a plan may have "
                                     "(default: the longest workflow in the data).")
    iters: int = Field(default=1500, ge=1, description="Training steps.")
    batch_size: int = Field(default=32, ge=1, description="Workflows per step.")
    learning_rate: float = Field(default=2e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")
    word_dropout: float = Field(default=0.1, ge=0, lt=1, description="Chance a training word is read as <unk>, so "
                                "the planner copes with words it never saw (held-out phrasings).")
    # As other words by default: on the shipped data 0.3 lowered exact plans from 1.00 to 0.84 on valid and
    # from 0.67 to 0.33 on test (seed 0, 500 steps), so a higher rate stays an option to try on other data.
    connective_dropout: float = Field(default=0.1, ge=0, lt=1, description="Chance the word before a subtask's "
                                      "start (its connective) is read as <unk> in training.")
    edge_weight: float = Field(default=1.0, ge=0, description="Weight of the edge loss.")
    worker_weight: float = Field(default=1.0, ge=0, description="Weight of the worker loss.")
    lam: float = Field(default=0.0, ge=0, description="Price of cost the worker labels were chosen at (a feature).")
    mu: float = Field(default=0.0, ge=0, description="Price of latency the worker labels were chosen at (a feature).")
    decoder_types: bool = Field(default=False, description="Predict each type from the plan so far as well as "
                                "from the word the subtask starts at (off: types come from the instruction's words "
                                "alone, which carries over to unseen compositions of steps).")
    seed: int = Field(default=0, description="Seed of the initial weights, batch order and word dropout.")
    steps_per_report: int = Field(default=25, ge=1, description="Steps between training-loss reports.")
    steps_per_eval: int = Field(default=100, ge=1, description="Steps between validations.")

    def model_shape(self, vocab_size: int, max_subtasks: int) -> ModelConfig:
        if self.dims % self.heads:
            raise ConfigError(f"--heads {self.heads} must divide --dims {self.dims}.")
        return ModelConfig(vocab_size=vocab_size, dims=self.dims, layers=self.layers, heads=self.heads,
                           max_words=self.max_words, max_subtasks=max_subtasks, decoder_types=self.decoder_types)


def resolve_train_config(given: dict[str, Any]) -> PlannerTrainConfig:
    """The config from explicit settings (CLI > defaults); ConfigError naming each bad option."""
    try:
        return PlannerTrainConfig.model_validate(given)
    except ValidationError as exc:
        raise ConfigError(f"planner train: {'; '.join(validation_problems(exc, dashes=True))}") from None


class ReportCallback(Protocol):
    def on_report(self, report: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    output: Path
    best_step: int
    best: dict[str, float]  # the validation metrics of the best step


# ---- batches -----------------------------------------------------------------------------------
@dataclass
class Examples:
    """Every workflow of a split as fixed-shape arrays (see the module docstring for why fixed)."""

    tokens: np.ndarray  # (N, L) word ids
    word_mask: np.ndarray  # (N, L)
    types: np.ndarray  # (N, M) subtask types, 0-padded
    type_mask: np.ndarray  # (N, M) 1 where a subtask exists
    starts: np.ndarray  # (N, M) the word each subtask starts at (unknown ones: the previous known)
    start_target: np.ndarray  # (N, L) 1 at the words subtasks start at
    start_mask: np.ndarray  # (N, L) the words of workflows whose every start is known (<cls> and padding: 0)
    edges: np.ndarray  # (N, M, M) 1 where a -> b
    edge_mask: np.ndarray  # (N, M, M) 1 where a < b < n
    features: np.ndarray  # (N, M, W, F)
    worker: np.ndarray  # (N, M) index of the labelled worker
    worker_mask: np.ndarray  # (N, M) 1 where a subtask has a label

    def batch(self, rows: np.ndarray) -> dict[str, mx.array]:
        return {k: mx.array(v[rows]) for k, v in self.__dict__.items()}

    def __len__(self) -> int:
        return len(self.tokens)


def make_examples(workflows: Sequence[Workflow], vocab: Vocabulary, shape: ModelConfig, workers: WorkerSet | None,
                  lam: float, mu: float, source: Path) -> Examples:
    n, m, width = len(workflows), shape.max_subtasks, shape.max_words
    n_workers = len(workers.workers) if workers else 1
    ex = Examples(np.zeros((n, width), np.int32), np.zeros((n, width), np.float32), np.zeros((n, m), np.int32),
                  np.zeros((n, m), np.float32), np.zeros((n, m), np.int32), np.zeros((n, width), np.float32),
                  np.zeros((n, width), np.float32), np.zeros((n, m, m), np.float32), np.zeros((n, m, m), np.float32),
                  np.zeros((n, m, n_workers, len(WORKER_FEATURES)), np.float32), np.zeros((n, m), np.int32),
                  np.zeros((n, m), np.float32))
    names = {w.name: i for i, w in enumerate(workers.workers)} if workers else {}
    tokens, mask = encode_batch(vocab, [w.instruction for w in workflows], width)
    ex.tokens[:, :tokens.shape[1]], ex.word_mask[:, :tokens.shape[1]] = tokens, mask
    for i, workflow in enumerate(workflows):
        ordered = workflow.ordered()
        k = len(ordered.subtasks)
        if k > m:
            raise DataError(f"{source}: workflow {workflow.id!r} has {k} subtasks, more than --max-subtasks {m}.")
        ex.types[i, :k], ex.type_mask[i, :k] = type_ids(ordered), 1.0
        starts = start_words(ordered, width)
        ex.starts[i, :k] = filled_starts(starts)
        if all(s is not None for s in starts):  # a gap would teach "no subtask starts here" where one does
            ex.start_target[i, ex.starts[i, :k]] = 1.0
            ex.start_mask[i, 1:] = ex.word_mask[i, 1:]
        ex.edge_mask[i, :k, :k] = np.triu(np.ones((k, k)), 1)
        for a, b in ordered.edge_positions():
            ex.edges[i, a, b] = 1.0
        if workers is not None:
            ex.features[i, :k] = worker_features(ordered.types(), workers, lam, mu)
            _label_workers(ex, i, ordered, names, source)
    return ex


def _label_workers(ex: Examples, i: int, ordered: Workflow, names: dict[str, int], source: Path) -> None:
    for j, subtask in enumerate(ordered.subtasks):
        if subtask.worker is None:
            continue
        if subtask.worker not in names:
            raise DataError(f"{source}: workflow {ordered.id!r} subtask {subtask.id!r} names worker "
                            f"{subtask.worker!r}, which the workers file lacks ({', '.join(names)}).")
        ex.worker[i, j], ex.worker_mask[i, j] = names[subtask.worker], 1.0


# ---- the loss ----------------------------------------------------------------------------------
def _masked_mean(values: mx.array, mask: mx.array) -> mx.array:
    return (values * mask).sum() / mx.maximum(mask.sum(), 1.0)


def planner_loss(model: PlannerModel, batch: dict[str, mx.array], edge_weight: float, worker_weight: float
                 ) -> tuple[mx.array, mx.array, mx.array, mx.array]:
    """(total, plan loss (start BCE per word + type CE per subtask), edge BCE, worker CE), each a mean over
    the positions that exist."""
    start_logits, type_logits, states = model.forward(batch["tokens"], batch["word_mask"], batch["types"],
                                                      batch["starts"])
    start_bce = nn.losses.binary_cross_entropy(start_logits, batch["start_target"], reduction="none")
    start_loss = _masked_mean(start_bce, batch["start_mask"])
    type_loss = _masked_mean(nn.losses.cross_entropy(type_logits, batch["types"]), batch["type_mask"])
    edge_bce = nn.losses.binary_cross_entropy(model.edge_logits(states), batch["edges"], reduction="none")
    edge_loss = _masked_mean(edge_bce, batch["edge_mask"])
    worker_ce = nn.losses.cross_entropy(model.worker_logits(states, batch["features"]), batch["worker"])
    worker_loss = _masked_mean(worker_ce, batch["worker_mask"])
    plan_loss = start_loss + type_loss
    return plan_loss + edge_weight * edge_loss + worker_weight * worker_loss, plan_loss, edge_loss, worker_loss


def evaluate(model: PlannerModel, ex: Examples, loss: Callable[..., tuple[mx.array, ...]],
             batch_size: int = 256) -> dict[str, float]:
    """Validation losses, teacher-forced accuracies, and exact-plan match of greedy decoding."""
    sums: dict[str, float] = {}
    counts = {"type": 0.0, "edge_tp": 0.0, "edge_pred": 0.0, "edge_gold": 0.0, "worker": 0.0, "worker_n": 0.0,
              "match": 0.0}
    for start in range(0, len(ex), batch_size):
        rows = np.arange(start, min(start + batch_size, len(ex)))
        batch = ex.batch(rows)
        for name, value in zip(("loss", "plan_loss", "edge_loss", "worker_loss"), loss(model, batch), strict=True):
            sums[name] = sums.get(name, 0.0) + float(value) * len(rows)
        _, type_logits, states = model.forward(batch["tokens"], batch["word_mask"], batch["types"], batch["starts"])
        hit = np.array(mx.argmax(type_logits, -1)) == ex.types[rows]
        counts["type"] += float((hit * ex.type_mask[rows]).sum())
        pred = (np.array(model.edge_logits(states)) > 0) * ex.edge_mask[rows]
        counts["edge_tp"] += float((pred * ex.edges[rows]).sum())
        counts["edge_pred"] += float(pred.sum())
        counts["edge_gold"] += float(ex.edges[rows].sum())
        chose = np.array(mx.argmax(model.worker_logits(states, batch["features"]), -1)) == ex.worker[rows]
        counts["worker"] += float((chose * ex.worker_mask[rows]).sum())
        counts["worker_n"] += float(ex.worker_mask[rows].sum())
        counts["match"] += _plan_matches(model, ex, rows, batch)
    precision = counts["edge_tp"] / max(counts["edge_pred"], 1.0)
    recall = counts["edge_tp"] / max(counts["edge_gold"], 1.0)
    metrics = {f"val_{k}": v / len(ex) for k, v in sums.items()}
    metrics |= {"val_type_accuracy": counts["type"] / float(ex.type_mask.sum()),
                "val_edge_f1": 2 * precision * recall / max(precision + recall, 1e-9),
                "val_plan_match": counts["match"] / len(ex)}
    if counts["worker_n"]:
        metrics["val_worker_accuracy"] = counts["worker"] / counts["worker_n"]
    return metrics


def _plan_matches(model: PlannerModel, ex: Examples, rows: np.ndarray, batch: dict[str, mx.array]) -> float:
    """How many of ``rows`` greedy decoding reproduces exactly (the same types in order and the same edges)."""
    decoded = model.greedy(batch["tokens"], batch["word_mask"])
    matches = 0.0
    for b, (types, starts) in enumerate(decoded):
        k = int(ex.type_mask[rows[b]].sum())
        if types != list(ex.types[rows[b], :k]):
            continue
        _, _, states = model.forward(batch["tokens"][b:b + 1], batch["word_mask"][b:b + 1], mx.array([types]),
                                     mx.array([starts]))
        edges = set(edges_from_scores(k, np.array(model.edge_logits(states)[0])))
        gold = {(int(a), int(c)) for a, c in zip(*np.nonzero(ex.edges[rows[b]]), strict=True)}
        matches += float(edges == gold)
    return matches


# ---- the loop ----------------------------------------------------------------------------------
def file_record(path: Path) -> dict[str, Any]:
    """A file as a manifest names it: where it was and what it held."""
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _drop_words(tokens: np.ndarray, starts: np.ndarray, rate: float, connective_rate: float,
                rng: np.random.Generator, unk: int) -> np.ndarray:
    """Some words read as <unk>, but never <cls>, padding or a word a subtask starts at: a new phrasing brings
    unknown connectives and names, and the start head must learn that those do not start a step. The word
    just before a start (its connective: "then", "and") is dropped at ``connective_rate``, so the edge head
    also learns what an unknown connective most likely means."""
    rows = np.arange(len(tokens))[:, None]
    chance = np.full(tokens.shape, rate)
    chance[rows, np.maximum(starts - 1, 0)] = connective_rate
    hit = (rng.random(tokens.shape) < chance) & (tokens != 0) & (np.arange(tokens.shape[1])[None, :] > 0)
    hit[rows, starts] = False
    return np.where(hit, unk, tokens).astype(np.int32)


def train_planner(config: PlannerTrainConfig, callback: ReportCallback | None = None, *,
                  force: bool = False) -> TrainResult:
    """Train on DATA/train.jsonl, validate on DATA/valid.jsonl, keep the best step's weights in ``output``."""
    train_file, valid_file = config.data / "train.jsonl", config.data / "valid.jsonl"
    train_set, valid_set = read_workflows(train_file), read_workflows(valid_file)
    workers_file = config.workers or (config.data / "workers.json" if (config.data / "workers.json").is_file()
                                      else None)
    workers = read_workers(workers_file) if workers_file else None
    run = RunDir(config.output)
    plan = run.plan_output(config.model_dump(mode="json"), (), resume=False, force=force, kind="punie planner")
    vocab = Vocabulary.build(w.instruction for w in train_set)
    longest = max(len(w.subtasks) for w in [*train_set, *valid_set])
    shape = config.model_shape(len(vocab.tokens), config.max_subtasks or longest)
    train_ex = make_examples(train_set, vocab, shape, workers, config.lam, config.mu, train_file)
    valid_ex = make_examples(valid_set, vocab, shape, workers, config.lam, config.mu, valid_file)
    run.claim(plan)
    manifest: dict[str, Any] = {
        "kind": "punie planner", "status": "running", "config": config.model_dump(mode="json"),
        "data": {"train": file_record(train_file) | {"workflows": len(train_set)},
                 "valid": file_record(valid_file) | {"workflows": len(valid_set)}},
        "workers": file_record(workers_file) if workers_file else None,
        "worker_names": [w.name for w in workers.workers] if workers else [],
        "process": training_process(), "versions": software_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    run.write_manifest(manifest)

    mx.random.seed(config.seed)
    model = PlannerModel(shape)
    mx.eval(model.parameters())
    optimizer = optim.AdamW(learning_rate=config.learning_rate, weight_decay=config.weight_decay)
    loss = partial(planner_loss, edge_weight=config.edge_weight, worker_weight=config.worker_weight)
    value_and_grad = nn.value_and_grad(model, loss)
    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch: dict[str, mx.array]) -> tuple[mx.array, ...]:
        values, grads = value_and_grad(model, batch)
        optimizer.update(model, grads)
        return values

    best, best_step, metrics = _loop(config, model, vocab, train_ex, valid_ex, step, loss, run, callback, state)
    manifest |= {"status": "done", "best_step": best_step, "best": best, "steps": config.iters,
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    run.write_manifest(manifest)
    return TrainResult(config.output, best_step, best)


def _loop(config: PlannerTrainConfig, model: PlannerModel, vocab: Vocabulary, train_ex: Examples,
          valid_ex: Examples, step: Callable[..., Any], loss: Callable[..., Any], run: RunDir,
          callback: ReportCallback | None, state: list[Any]) -> tuple[dict[str, float], int, list[dict[str, Any]]]:
    rng = np.random.default_rng(config.seed)
    index = vocab.index()
    order = np.zeros(0, dtype=np.int64)
    metrics: list[dict[str, Any]] = []
    best: dict[str, float] = {}
    best_step, window, started = 0, np.zeros(4), time.perf_counter()
    extra = {"kind": "punie planner", "worker_features": "punie.planner.model.WORKER_FEATURES",
             "trained_on": str(config.data)}
    for it in range(1, config.iters + 1):
        while len(order) < config.batch_size:  # epochs back to back, each shuffled
            order = np.concatenate([order, rng.permutation(len(train_ex))])
        rows, order = order[:config.batch_size], order[config.batch_size:]
        batch = train_ex.batch(rows)
        batch["tokens"] = mx.array(_drop_words(train_ex.tokens[rows], train_ex.starts[rows], config.word_dropout,
                                               config.connective_dropout, rng, index[UNK]))
        values = step(batch)
        mx.eval(state, values)
        window += np.array([float(v) for v in values])
        if it % config.steps_per_report == 0 or it == config.iters:
            seen = config.steps_per_report if it % config.steps_per_report == 0 else it % config.steps_per_report
            loss_, type_, edge_, worker_ = (window / seen).tolist()
            report: dict[str, Any] = {"iteration": it, "loss": loss_, "plan_loss": type_, "edge_loss": edge_,
                                      "worker_loss": worker_, "seconds": time.perf_counter() - started}
            window[:] = 0
            metrics.append(report)
            if callback:
                callback.on_report(report)
        if it % config.steps_per_eval == 0 or it == config.iters:
            val = {"iteration": it, **evaluate(model, valid_ex, loss)}
            improved = not best or val["val_loss"] < best["val_loss"]
            if improved:
                best, best_step = {k: v for k, v in val.items() if k != "iteration"}, it
                save_planner(run.path, model, vocab, extra | {"step": it})
            metrics.append(val | {"best": improved})
            if callback:
                callback.on_report(val | {"best": improved})
        if metrics and (it % config.steps_per_report == 0 or it % config.steps_per_eval == 0):
            run.write_metrics(metrics)
    run.write_metrics(metrics)
    return best, best_step, metrics

