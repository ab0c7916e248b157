"""The learned planner in MLX: instruction -> typed subtasks -> DAG edges -> a worker per subtask.

One network, five parts:

1. an *encoder*: a small transformer over the instruction's words (a vocabulary built from the
   training instructions and saved with the model; unknown words map to ``<unk>``);
2. a *start head* marking the words a subtask starts at (a clause: "locate the uses of X", "run the
   tests"). Reading the instruction clause by clause is what carries over to held-out compositions:
   a first version that decoded types from the whole instruction learned each training template as
   a unit and matched no held-out plan exactly;
3. an autoregressive *type decoder*: a causal transformer over the subtasks so far (each one's type,
   the word it starts at and the word before that, its connective), reading the encoder through
   cross-attention. Its state after reading a subtask is that subtask's *state*; a subtask's type
   comes from its start word (plus, with ``decoder_types``, from the decoder state before it);
4. an *edge head* scoring pairs (earlier, later) of subtask states. Only such pairs are ever scored
   or decoded, so every plan is a DAG by construction: the decoded order is a topological order;
5. a *worker head* scoring (subtask state, worker profile features) pairs, softmax over the worker
   set. A worker enters only through its profile (success on the subtask's type, cost, latency, the
   prices ``lam``/``mu``), never through its name, so a new worker with a profile can be chosen
   without retraining.

Decoding is greedy; the plan's ids are ``s1..sN`` in decoded (topological) order and each subtask's
description is its clause of the instruction.
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
BOS = N_TYPES  # the decoder's first input (type embeddings 0..N_TYPES-1 are the types)
PAD, UNK, CLS = "<pad>", "<unk>", "<cls>"
UNK_ID = 1  # every vocabulary starts PAD, UNK, CLS
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
    decoder_types: bool = Field(default=False, description="Predict a type from the plan so far too, not only "
                                "from the word the subtask starts at.")


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
        self.clause_in = nn.Linear(2 * d, d)  # the word a subtask starts at, into the decoder's input
        self.connective_in = nn.Linear(d, d)
        self.step_pos = nn.Embedding(config.max_subtasks + 1, d)
        self.decoder = nn.TransformerDecoder(config.layers, d, config.heads, mlp_dims=2 * d)
        # Local features: each word with the two after it ("show me X", "look at X"), the same wherever it
        # stands. Whether a subtask starts at a word, and its type, are read from these, so a known clause
        # is recognised in an unseen sentence: global attention with absolute positions learned "word 2
        # starts a step", and a window reaching left read the unseen connectives before a clause.
        self.local = nn.Conv1d(d, d, kernel_size=3)
        self.start_out = nn.Linear(d, 1)  # does a subtask start at this word?
        self.word_type = nn.Linear(d, N_TYPES)  # a subtask's type from the word it starts at
        self.type_out = nn.Linear(d, N_TYPES)  # ... plus, with decoder_types, from the plan so far
        self.edge_from, self.edge_to = nn.Linear(d, d), nn.Linear(d, d)
        self.edge_out = nn.Linear(d, 1)
        self.edge_gap = nn.Embedding(config.max_subtasks, 1)  # a bias per distance (later - earlier)
        h = config.worker_hidden
        self.worker_state, self.worker_profile = nn.Linear(d, h), nn.Linear(len(WORKER_FEATURES), h)
        self.worker_mid, self.worker_out = nn.Linear(h, h), nn.Linear(h, 1)
        # Zero scores at the start: every worker equally likely, so RL from a fresh head explores.
        self.worker_out.weight = mx.zeros_like(self.worker_out.weight)

    def encode(self, tokens: mx.array, mask: mx.array) -> tuple[mx.array, mx.array]:
        """(memory (B, L, 2d): the transformer's states then the local ones, additive key mask (B, 1, 1, L))
        for word ids ``tokens`` and their 0/1 ``mask``."""
        words_ = self.word_embed(tokens)
        key_mask = ((1.0 - mask.astype(mx.float32)) * -1e9)[:, None, None, :]
        context = self.encoder(words_ + self.word_pos(mx.arange(tokens.shape[1])), key_mask)
        right = mx.pad(words_ * mask[:, :, None], [(0, 0), (0, 2), (0, 0)])  # the window is word, next, next
        local = nn.relu(self.local(right))
        return mx.concatenate([context, local], axis=-1), key_mask

    def decode(self, memory: mx.array, key_mask: mx.array, types: mx.array, pointers: mx.array) -> mx.array:
        """Decoder states (B, K+1, d) after BOS and K subtasks (their types and start words): position i
        helps type subtask i+1, and position i >= 1 is subtask i's state."""
        d = self.config.dims
        pointed = mx.take_along_axis(memory, pointers[:, :, None], axis=1)  # (B, K, 2d)
        # ... and the word before it: the connective ("and" or "then") that says whether this subtask waits
        # for the previous one, which is what the edge head needs to read
        before = mx.take_along_axis(memory, mx.maximum(pointers - 1, 0)[:, :, None], axis=1)[..., d:]
        x = self.type_embed(types) + self.clause_in(pointed) + self.connective_in(before)
        bos = mx.broadcast_to(self.type_embed(mx.array([BOS]))[None], (types.shape[0], 1, d))
        x = mx.concatenate([bos, x], axis=1)
        x = x + self.step_pos(mx.arange(x.shape[1]))
        causal = nn.MultiHeadAttention.create_additive_causal_mask(x.shape[1])
        return self.decoder(x, memory[..., :d], causal, key_mask)

    def start_logits(self, memory: mx.array) -> mx.array:
        """(B, L) scores of "a subtask starts at this word", from the local features alone, so a new
        composition or phrasing of known steps is segmented as well as a seen one."""
        return self.start_out(memory[..., self.config.dims:]).squeeze(-1)

    def type_logits(self, hidden: mx.array, memory: mx.array, pointers: mx.array) -> mx.array:
        """(B, K, T) type scores of subtasks starting at ``pointers`` (B, K), ``hidden`` the states before each."""
        logits = self.word_type(mx.take_along_axis(memory[..., self.config.dims:], pointers[:, :, None], axis=1))
        return logits + self.type_out(hidden) if self.config.decoder_types else logits

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

    def forward(self, tokens: mx.array, mask: mx.array, types: mx.array, pointers: mx.array
                ) -> tuple[mx.array, mx.array, mx.array]:
        """Teacher forcing on M subtasks: (start logits (B, L), type logits (B, M, T), states (B, M, d))."""
        memory, key_mask = self.encode(tokens, mask)
        hidden = self.decode(memory, key_mask, types, pointers)
        return self.start_logits(memory), self.type_logits(hidden[:, :-1], memory, pointers), hidden[:, 1:]

    def greedy(self, tokens: mx.array, mask: mx.array) -> list[tuple[list[int], list[int]]]:
        """(types, start words) of each instruction's plan: the subtasks start at the words the start head
        marks, left to right (at least one: the likeliest word when none is marked; at most
        ``max_subtasks``), and the decoder gives each its type, one after another."""
        memory, key_mask = self.encode(tokens, mask)
        scores = np.nan_to_num(np.array(self.start_logits(memory).astype(mx.float32)), nan=-np.inf)
        scores[:, 0] = -np.inf  # <cls> is not a word of the instruction
        # Nor does a step start at an unknown word: training never shows one there (word dropout spares
        # start words), and a step's type is read from its first word.
        scores[(np.array(mask) == 0) | (np.array(tokens) == UNK_ID)] = -np.inf
        plans = []
        for b in range(tokens.shape[0]):
            starts = [int(j) for j in np.nonzero(scores[b] > 0)[0]][:self.config.max_subtasks]
            starts = starts or [int(scores[b].argmax()) if np.isfinite(scores[b]).any() else 0]
            types: list[int] = []
            for k in range(len(starts)):
                hidden = self.decode(memory[b:b + 1], key_mask[b:b + 1], mx.array([types], dtype=mx.int32),
                                     mx.array([starts[:k]], dtype=mx.int32))[:, -1:]
                kind = np.array(self.type_logits(hidden, memory[b:b + 1], mx.array([[starts[k]]]))[0, 0]
                                .astype(mx.float32))
                types.append(int(np.nan_to_num(kind, nan=-np.inf).argmax()))
            plans.append((types, starts))
        return plans


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


def start_words(workflow: Workflow, max_words: int) -> list[int | None]:
    """Where each subtask (in the given order) starts in the encoded instruction: the first occurrence of its
    description's words after the previous subtask's start (None: not found, or cut off at ``max_words``).

    The synthetic data's descriptions are spans of the instruction, so this is the supervision that teaches
    the start head to read the instruction clause by clause (position 0 is ``<cls>``, so words start at 1).
    """
    tokens = words(workflow.instruction)
    previous, found = -1, []
    for subtask in workflow.subtasks:
        want = words(subtask.description)
        at = next((k for k in range(previous + 1, len(tokens) - len(want) + 1) if want and
                   tokens[k:k + len(want)] == want), None)
        found.append(at + 1 if at is not None and at + 1 < max_words else None)
        previous = at if at is not None else previous
    return found


def filled_starts(starts: Sequence[int | None]) -> list[int]:
    """Start words with the unknown ones set to the previous known one (0: ``<cls>``), so the decoder still
    reads the subtasks left to right where the supervision has a gap."""
    out, last = [], 0
    for s in starts:
        last = s if s is not None else last
        out.append(last)
    return out


_CLAUSE_END = re.compile(r"\s*(?:[,;:!?]|\.(?:\s|$)|\s(?:and|then|after|once|before)\s)")


def clause(instruction: str, start: int, end: int | None) -> str:
    """The text from word ``start`` (an encoded position) up to word ``end``, cut at the first clause break:
    a decoded subtask's description ("read src/app.py" from "... then read src/app.py, and ...")."""
    spans = [m.span() for m in _WORD.finditer(instruction.lower())]
    if not spans or start < 1 or start > len(spans):
        return ""
    stop = spans[end - 1][0] if end is not None and 1 <= end <= len(spans) else len(instruction)
    text = instruction[spans[start - 1][0]:stop]
    cut = _CLAUSE_END.search(text)
    return (text[:cut.start()] if cut and cut.start() > 0 else text).strip(" ,;.")


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
        types, starts = self.model.greedy(tokens, mask)[0]
        _, _, states = self.model.forward(tokens, mask, mx.array([types], dtype=mx.int32),
                                          mx.array([starts], dtype=mx.int32))
        scores = np.array(self.model.edge_logits(states)[0].astype(mx.float32))
        subtasks = []
        for i, (t, start) in enumerate(zip(types, starts, strict=True)):
            name = SUBTASK_TYPES[t]
            text = clause(instruction, start, starts[i + 1] if i + 1 < len(starts) else None)
            subtasks.append(Subtask.model_validate({"id": f"s{i + 1}", "type": name,
                                                    "description": text or DESCRIPTIONS[name]}))
        edges = [(f"s{a + 1}", f"s{b + 1}") for a, b in edges_from_scores(len(types), scores)]
        return Workflow(id="plan", instruction=instruction, subtasks=subtasks, edges=edges)

    def states(self, workflow: Workflow) -> tuple[Workflow, mx.array]:
        """(the workflow in topological order, its subtasks' states (1, M, d)), reading its types and the
        words its descriptions start at."""
        ordered = workflow.ordered()
        if len(ordered.subtasks) > self.model.config.max_subtasks:
            raise ModelError(f"workflow {workflow.id!r} has {len(ordered.subtasks)} subtasks; this planner handles at "
                             f"most {self.model.config.max_subtasks} (train with a larger --max-subtasks).")
        tokens, mask = self._tokens(workflow.instruction)
        starts = filled_starts(start_words(ordered, self.model.config.max_words))
        _, _, states = self.model.forward(tokens, mask, mx.array([type_ids(ordered)], dtype=mx.int32),
                                          mx.array([starts], dtype=mx.int32))
        return ordered, states

    def worker_logits(self, workflow: Workflow, workers: WorkerSet, lam: float, mu: float) -> tuple[Workflow, mx.array]:
        """(the workflow in topological order, worker scores (M, W) for its subtasks in that order)."""
        ordered, states = self.states(workflow)
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
        if vocab.tokens[:3] != (PAD, UNK, CLS):
            raise ValueError(f"{VOCAB_FILE} does not start {PAD}, {UNK}, {CLS}")
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
