"""The learned planner in MLX: instruction -> typed subtasks -> DAG edges -> a worker per subtask.

Four parts, one network:

1. an *encoder*: a small transformer over the instruction's words (a vocabulary built from the
   training instructions and saved with the model; unknown words map to ``<unk>``);
2. a *type decoder*: a causal transformer that reads the encoder through cross-attention and emits
   subtask types one by one, then ``<end>`` (at most ``max_subtasks``). Its hidden state after
   reading a subtask's type is that subtask's *state*;
3. an *edge head* scoring pairs (earlier, later) of subtask states. Only such pairs are ever scored
   or decoded, so every plan is a DAG by construction: the decoded order is a topological order;
4. a *worker head* scoring (subtask state, worker profile features) pairs, softmax over the worker
   set. A worker enters only through its profile (success on the subtask's type, cost, latency, the
   prices ``lam``/``mu``), never through its name, so a new worker with a profile can be chosen
   without retraining.

Decoding is greedy; the plan's ids are ``s1..sN`` in decoded (topological) order.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten
from pydantic import BaseModel, ConfigDict, Field

from punie import fileio
from punie.errors import ModelError
from punie.planner.workers import WorkerSet
from punie.planner.workflow import SUBTASK_TYPES, Subtask, Workflow

N_TYPES = len(SUBTASK_TYPES)
END = N_TYPES  # the decoder's "no more subtasks" output
BOS = N_TYPES  # the decoder's first input (type embeddings 0..N_TYPES-1 are the types)
PAD, UNK, CLS = "<pad>", "<unk>", "<cls>"
CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE = "config.json", "vocab.json", "planner.safetensors"
# Short labels a decoded subtask carries as its description (what `punie plan --execute` asks a worker to do).
DESCRIPTIONS = {"list": "list the relevant files", "read": "read the relevant file", "search": "search the code",
                "edit": "make the edit", "run": "run the command", "answer": "answer the question"}
_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    """Lower-cased words, numbers and punctuation marks; ``parse_date`` is ``parse _ date`` so its parts are known."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Vocabulary:
    tokens: tuple[str, ...]

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> Vocabulary:
        counts = Counter(w for text in texts for w in words(text))
        kept = sorted(w for w, c in counts.items() if c >= min_count)
        return cls((PAD, UNK, CLS, *kept))

    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def encode(self, text: str, max_words: int) -> list[int]:
        """``<cls>`` then the words (cut at ``max_words`` in all): never empty, so attention always has a key."""
        index = self.index()
        unk = index[UNK]
        return [index[CLS], *(index.get(w, unk) for w in words(text))][:max_words]


class ModelConfig(BaseModel):
    """The network's shape; saved in config.json so a planner directory loads without its training settings."""

    model_config = ConfigDict(extra="forbid")
    vocab_size: int = Field(ge=3)
    dims: int = Field(default=64, ge=8, description="Width of the encoder and decoder.")
    layers: int = Field(default=2, ge=1, description="Transformer layers in the encoder and in the decoder.")
    heads: int = Field(default=4, ge=1, description="Attention heads (must divide dims).")
    max_words: int = Field(default=64, ge=2, description="Instruction words the encoder reads (more are cut).")
    max_subtasks: int = Field(default=8, ge=1, description="Most subtasks a plan may have.")
    worker_hidden: int = Field(default=64, ge=4, description="Width of the worker head.")


# ---- worker features ---------------------------------------------------------------------------
WORKER_FEATURES = ("success", "log_success", "log_cost", "log_latency", "cost_penalty", "latency_penalty",
                   "rel_success", "rel_log_cost", "rel_log_latency", "log_lam", "log_mu")


def worker_features(types: Sequence[str], workers: WorkerSet, lam: float, mu: float) -> np.ndarray:
    """(subtasks, workers, features) for the worker head: each worker's profile on each subtask's type.

    Costs are logs (a remote worker may cost 100x a local one); ``cost_penalty``/``latency_penalty`` are the
    reward's own terms (lam*cost, mu*latency), so the head sees a price in the units the reward is in;
    ``rel_*`` are each value minus the set's mean, which is what makes scoring *as a set* possible.
    Each feature is scaled to about [-1, 1] for typical profiles: a randomly initialised head is then
    not already saturated, which would leave RL from it no gradient.
    """
    profiles = workers.workers
    out = np.zeros((len(types), len(profiles), len(WORKER_FEATURES)), dtype=np.float32)
    for i, t in enumerate(types):
        p = np.array([w.success[t] for w in profiles])  # type: ignore[index]
        cost = np.array([w.tokens[t] * w.price_per_token for w in profiles])  # type: ignore[index]
        latency = np.array([w.latency_s[t] for w in profiles])  # type: ignore[index]
        log_cost, log_latency = np.log1p(cost), np.log1p(latency)
        out[i] = np.stack([p, np.log(p + 1e-3) / 3, log_cost / 5, log_latency / 3, lam * cost, mu * latency,
                           p - p.mean(), log_cost - log_cost.mean(), log_latency - log_latency.mean(),
                           np.full_like(p, _log_price(lam)), np.full_like(p, _log_price(mu))], axis=-1)
    return out


def _log_price(price: float) -> float:
    """A price on a log scale: 1e-6 -> -1, 1e-3 -> 0, 1 -> 1."""
    return (math.log10(price + 1e-6) + 3) / 3


# ---- the network -------------------------------------------------------------------------------
class PlannerModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.dims
        self.config = config
        self.word_embed = nn.Embedding(config.vocab_size, d)
        self.word_pos = nn.Embedding(config.max_words, d)
        self.encoder = nn.TransformerEncoder(config.layers, d, config.heads, mlp_dims=2 * d)
        self.type_embed = nn.Embedding(N_TYPES + 1, d)  # the types, then BOS
        self.step_pos = nn.Embedding(config.max_subtasks + 1, d)
        self.decoder = nn.TransformerDecoder(config.layers, d, config.heads, mlp_dims=2 * d)
        self.type_out = nn.Linear(d, N_TYPES + 1)  # the types, then END
        self.edge_from, self.edge_to = nn.Linear(d, d), nn.Linear(d, d)
        self.edge_out = nn.Linear(d, 1)
        self.edge_gap = nn.Embedding(config.max_subtasks, 1)  # a bias per distance (later - earlier)
        h = config.worker_hidden
        self.worker_state, self.worker_profile = nn.Linear(d, h), nn.Linear(len(WORKER_FEATURES), h)
        self.worker_mid, self.worker_out = nn.Linear(h, h), nn.Linear(h, 1)
        # Zero scores at the start: every worker equally likely, so RL from a fresh head explores.
        self.worker_out.weight = mx.zeros_like(self.worker_out.weight)

    def encode(self, tokens: mx.array, mask: mx.array) -> tuple[mx.array, mx.array]:
        """(memory (B, L, d), additive key mask (B, 1, 1, L)) for word ids ``tokens`` and their 0/1 ``mask``."""
        x = self.word_embed(tokens) + self.word_pos(mx.arange(tokens.shape[1]))
        key_mask = ((1.0 - mask.astype(mx.float32)) * -1e9)[:, None, None, :]
        return self.encoder(x, key_mask), key_mask

    def decode(self, memory: mx.array, key_mask: mx.array, types_in: mx.array) -> mx.array:
        """Decoder states (B, T, d) for inputs ``types_in`` (BOS, t1, t2, ...): position i predicts subtask
        i+1's type (or END), and position i (i >= 1) is the state of subtask i, which has read its type."""
        x = self.type_embed(types_in) + self.step_pos(mx.arange(types_in.shape[1]))
        causal = nn.MultiHeadAttention.create_additive_causal_mask(types_in.shape[1])
        return self.decoder(x, memory, causal, key_mask)

    def type_logits(self, hidden: mx.array) -> mx.array:
        return self.type_out(hidden)

    def edge_logits(self, states: mx.array) -> mx.array:
        """(B, M, M) scores of edge a -> b; only a < b is meaningful (the rest is never read)."""
        m = states.shape[1]
        pair = self.edge_from(states)[:, :, None, :] + self.edge_to(states)[:, None, :, :]
        gap = mx.clip(mx.arange(m)[None, :] - mx.arange(m)[:, None], 0, self.config.max_subtasks - 1)
        return self.edge_out(mx.tanh(pair)).squeeze(-1) + self.edge_gap(gap).squeeze(-1)

    def worker_logits(self, states: mx.array, features: mx.array) -> mx.array:
        """(B, M, W) scores from states (B, M, d) and worker features (B, M, W, F)."""
        x = self.worker_state(states)[:, :, None, :] + self.worker_profile(features)
        return self.worker_out(nn.relu(self.worker_mid(nn.relu(x)))).squeeze(-1)

    def states(self, tokens: mx.array, mask: mx.array, types: mx.array) -> tuple[mx.array, mx.array]:
        """(type logits (B, M+1, T+1), subtask states (B, M, d)) with the types given (teacher forcing)."""
        memory, key_mask = self.encode(tokens, mask)
        types_in = mx.concatenate([mx.full((types.shape[0], 1), BOS, dtype=types.dtype), types], axis=1)
        hidden = self.decode(memory, key_mask, types_in)
        return self.type_logits(hidden), hidden[:, 1:]

    def greedy_types(self, tokens: mx.array, mask: mx.array) -> list[list[int]]:
        """The most likely type at each step until END (at least one subtask, at most ``max_subtasks``)."""
        memory, key_mask = self.encode(tokens, mask)
        batch = tokens.shape[0]
        types_in = mx.full((batch, 1), BOS, dtype=mx.int32)
        chosen: list[list[int]] = [[] for _ in range(batch)]
        open_ = [True] * batch
        for step in range(self.config.max_subtasks):
            logits = np.array(self.type_logits(self.decode(memory, key_mask, types_in))[:, -1].astype(mx.float32))
            if step == 0:
                logits[:, END] = -np.inf  # a plan has at least one subtask (a Workflow needs one)
            best = np.nan_to_num(logits, nan=-np.inf).argmax(axis=-1)  # NaN weights still give a type, not END
            for b in range(batch):
                if open_[b] and best[b] == END:
                    open_[b] = False
                elif open_[b]:
                    chosen[b].append(int(best[b]))
            if not any(open_):
                break
            types_in = mx.concatenate([types_in, mx.array(np.where(best == END, 0, best)[:, None], dtype=mx.int32)],
                                      axis=1)
        return chosen


def edges_from_scores(n: int, scores: np.ndarray) -> list[tuple[int, int]]:
    """The edges of an n-subtask plan: pairs (a, b) with a < b whose score is positive (probability > 0.5).

    Only a < b is read, whatever the scores are, so the result is a DAG for any network output.
    """
    return [(a, b) for b in range(n) for a in range(b) if scores[a, b] > 0]


def encode_batch(vocab: Vocabulary, instructions: Sequence[str], max_words: int) -> tuple[np.ndarray, np.ndarray]:
    """(word ids, 0/1 mask) padded to the longest instruction in the batch."""
    encoded = [vocab.encode(text, max_words) for text in instructions]
    width = max(len(e) for e in encoded)
    tokens = np.zeros((len(encoded), width), dtype=np.int32)
    mask = np.zeros((len(encoded), width), dtype=np.float32)
    for i, e in enumerate(encoded):
        tokens[i, :len(e)], mask[i, :len(e)] = e, 1.0
    return tokens, mask


def type_ids(workflow: Workflow) -> list[int]:
    return [SUBTASK_TYPES.index(t) for t in workflow.types()]


# ---- the planner object (the protocol evaluation calls) ----------------------------------------
class LearnedPlanner:
    """A trained :class:`PlannerModel` with its vocabulary: plans instructions and assigns workers."""

    def __init__(self, model: PlannerModel, vocab: Vocabulary, name: str = "learned"):
        self.model, self.vocab, self.name = model, vocab, name

    def _tokens(self, instruction: str) -> tuple[mx.array, mx.array]:
        tokens, mask = encode_batch(self.vocab, [instruction], self.model.config.max_words)
        return mx.array(tokens), mx.array(mask)

    def plan(self, instruction: str) -> Workflow:
        tokens, mask = self._tokens(instruction)
        types = self.model.greedy_types(tokens, mask)[0]
        _, states = self.model.states(tokens, mask, mx.array([types], dtype=mx.int32))
        scores = np.array(self.model.edge_logits(states)[0].astype(mx.float32))
        names = [SUBTASK_TYPES[t] for t in types]
        subtasks = [Subtask.model_validate({"id": f"s{i + 1}", "type": t, "description": DESCRIPTIONS[t]})
                    for i, t in enumerate(names)]
        edges = [(f"s{a + 1}", f"s{b + 1}") for a, b in edges_from_scores(len(types), scores)]
        return Workflow(id="plan", instruction=instruction, subtasks=subtasks, edges=edges)

    def worker_logits(self, workflow: Workflow, workers: WorkerSet, lam: float, mu: float) -> tuple[Workflow, mx.array]:
        """(the workflow in topological order, worker scores (M, W) for its subtasks in that order)."""
        ordered = workflow.ordered()
        if len(ordered.subtasks) > self.model.config.max_subtasks:
            raise ModelError(f"workflow {workflow.id!r} has {len(ordered.subtasks)} subtasks; this planner handles at "
                             f"most {self.model.config.max_subtasks} (train with a larger --max-subtasks).")
        tokens, mask = self._tokens(workflow.instruction)
        _, states = self.model.states(tokens, mask, mx.array([type_ids(ordered)], dtype=mx.int32))
        features = mx.array(worker_features(ordered.types(), workers, lam, mu)[None])
        return ordered, self.model.worker_logits(states, features)[0]

    def assign(self, workflow: Workflow, workers: WorkerSet, lam: float = 0.0, mu: float = 0.0) -> dict[str, str]:
        ordered, logits = self.worker_logits(workflow, workers, lam, mu)
        best = np.array(mx.argmax(logits, axis=-1))
        return {s.id: workers.workers[int(w)].name for s, w in zip(ordered.subtasks, best, strict=True)}


# ---- a planner directory -----------------------------------------------------------------------
def save_planner(directory: Path, model: PlannerModel, vocab: Vocabulary, extra: dict[str, Any] | None = None) -> None:
    """Weights, vocabulary and shape, each written atomically; ``extra`` goes into config.json beside the shape."""
    directory = Path(directory)
    weights = dict(tree_flatten(model.parameters()))
    fileio.write_with(directory / WEIGHTS_FILE, lambda p: mx.save_safetensors(str(p), weights), suffix=".safetensors")
    fileio.write_json(directory / VOCAB_FILE, list(vocab.tokens))
    fileio.write_json(directory / CONFIG_FILE, {"model": model.config.model_dump(), **(extra or {})})


def load_planner(directory: Path | str, name: str | None = None) -> LearnedPlanner:
    """The planner saved in ``directory`` by ``punie planner train`` or ``punie planner rl``."""
    directory = Path(directory)
    missing = [f for f in (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE) if not (directory / f).is_file()]
    if missing:
        raise ModelError(f"{directory} is not a planner directory (no {', '.join(missing)}); "
                         "make one with 'punie planner train DATA --output DIR'.")
    try:
        config = ModelConfig.model_validate(json.loads((directory / CONFIG_FILE).read_text())["model"])
        vocab = Vocabulary(tuple(json.loads((directory / VOCAB_FILE).read_text())))
    except (ValueError, KeyError) as exc:
        raise ModelError(f"{directory / CONFIG_FILE}: not a planner config ({exc}); retrain the planner.") from None
    model = PlannerModel(config)
    try:
        model.load_weights(str(directory / WEIGHTS_FILE))
    except ValueError as exc:
        raise ModelError(f"{directory / WEIGHTS_FILE}: does not fit {CONFIG_FILE} ({exc}); retrain the planner.") \
            from None
    mx.eval(model.parameters())
    return LearnedPlanner(model, vocab, name or directory.name)
