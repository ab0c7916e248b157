"""Engines produce a model's answers to a suite's cases, once per adapter.

An engine is prepared once with every adapter it will run (so an incompatible
adapter fails before anything runs), then asked to generate for the baseline
(``adapter=None``) and each adapter in turn. Answers are handed back one by one
through ``on_result`` as they finish, so an interrupted run keeps what it has.

* ``inprocess`` (:mod:`punie.eval.inprocess`): loads the base once, swaps LoRA
  weights in place, batches generation.
* ``server`` (:mod:`punie.eval.http`): one ``punie serve`` process per run.
* ``endpoint`` (:mod:`punie.eval.http`): any OpenAI-compatible URL, one run.

Agent episodes (``punie eval --tasks``): ``agent_turns(adapter)`` gives a run's
:class:`TurnSource`, what produces the assistant turns of many conversations. The
in-process engine generates the turns of every unfinished episode in one batch,
step by step; the HTTP engines answer one conversation after another.

Timing: the HTTP engines send one request at a time, so each case has a latency
of its own (``per_case_latency``). The in-process engine generates many cases
together; a case's wall time there is mostly other cases' work, so it reports
none, and the run's time and tokens per second stand in for it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from punie.errors import ConfigError
from punie.eval.outputs import ModelOutput
from punie.eval.suite import EvalCase
from punie.traces.agent import CompleteMany


@dataclass
class Generation:
    """One answer: ``latency_s`` only from engines that time each case alone; ``tokens`` generated, if known."""

    output: ModelOutput
    latency_s: float | None
    error: str | None = None
    tokens: int | None = None


OnResult = Callable[[int, Generation], None]


@dataclass(frozen=True)
class TurnSource:
    """The assistant turns of one run's agent episodes: ``complete_many(requests)`` answers each request.

    ``batched``: every unfinished episode steps together, its turns generated in one batch (so a
    turn's time is shared); otherwise the episodes run one after another, each turn timed alone.
    """

    complete_many: CompleteMany
    batched: bool


class Engine(Protocol):
    name: str
    per_case_latency: bool  # True when each Generation.latency_s is that case's own wall time

    def prepare(self, adapters: list[Path]) -> None:
        """Load what is shared across runs and check every adapter; raise before any generation."""

    def generate(self, adapter: Path | None, cases: list[EvalCase], on_result: OnResult) -> None:
        """Answer every case (greedy unless the options sample); ``on_result(index, generation)`` as each finishes."""

    def agent_turns(self, adapter: Path | None, *, batched: bool = True) -> AbstractContextManager[TurnSource]:
        """The turn source for one run of agent episodes (``batched`` is a request; HTTP engines go one by one)."""

    def close(self) -> None:
        """Release models, servers and connections."""


@dataclass(frozen=True)
class EngineOptions:
    model: str | None = None
    max_tokens: int = 256
    batch_size: int = 16
    endpoint: str | None = None
    timeout_s: float = 300.0
    # Sampling (in-process engine only). temperature 0 is greedy, as every eval is; > 0 samples with
    # top_p (0: off), seeded so the same call draws the same drafts.
    temperature: float = 0.0
    top_p: float = 0.0
    seed: int = 0


def make_engine(name: str, options: EngineOptions) -> Engine:
    """The engine registered under ``name``."""
    from punie.eval.http import EndpointEngine, ServerEngine
    from punie.eval.inprocess import InProcessEngine

    engines: dict[str, Callable[[EngineOptions], Engine]] = {
        "inprocess": InProcessEngine, "server": ServerEngine, "endpoint": EndpointEngine,
    }
    if name not in engines:
        raise ConfigError(f"--engine {name!r}: choose one of {sorted(engines)}.")
    return engines[name](options)


ENGINE_NAMES = ("inprocess", "server", "endpoint")
