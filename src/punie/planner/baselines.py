"""The baselines a planner is measured against, as routers are: who does each subtask, without learning.

Assigners (given a plan, pick workers):

- ``random``: a uniformly random worker per subtask (seeded by the workflow id: repeatable);
- ``strongest``: always the worker with the highest mean success over the subtask types;
- ``best-single``: the one worker whose workflows have the best mean expected reward on the
  *training* split at the given ``lam``/``mu`` (the router literature's "best single model");
- ``per-type``: for each subtask, the worker with the highest measured success on its type
  (a fixed rule, blind to cost); the rule-based planner assigns with it;
- ``profile-optimal`` (a reference): the best expected reward under the profiles, per workflow.

The rule-based planner plans from keywords (:class:`RulePlanner`). The oracle is not an assigner:
it sees the episode's outcomes (:func:`oracle_assignment`) and so bounds every assigner from above.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from punie.planner.protocol import Assigner
from punie.planner.simulate import best_assignment, expected
from punie.planner.workers import WorkerProfile, WorkerSet
from punie.planner.workflow import Subtask, SubtaskType, Workflow


class RandomAssigner:
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def assign(self, workflow: Workflow, workers: WorkerSet, lam: float = 0.0, mu: float = 0.0) -> dict[str, str]:
        rng = random.Random(f"{self.seed}:{workflow.id}")
        names = [w.name for w in workers.workers]
        return {s.id: rng.choice(names) for s in workflow.subtasks}


def mean_success(worker: WorkerProfile) -> float:
    """Unweighted over the subtask types (a profile covers every one)."""
    return sum(worker.success.values()) / len(worker.success)


def strongest(workers: WorkerSet) -> str:
    """The worker with the highest mean success over the subtask types (first on a tie)."""
    return max(workers.workers, key=mean_success).name


class StrongestAssigner:
    name = "strongest"

    def assign(self, workflow: Workflow, workers: WorkerSet, lam: float = 0.0, mu: float = 0.0) -> dict[str, str]:
        best = strongest(workers)
        return {s.id: best for s in workflow.subtasks}


class SingleAssigner:
    """Every subtask to one named worker (the single-worker points of the cost-quality plane)."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.name = f"only:{worker}"

    def assign(self, workflow: Workflow, workers: WorkerSet, lam: float = 0.0, mu: float = 0.0) -> dict[str, str]:
        workers.get(self.worker)
        return {s.id: self.worker for s in workflow.subtasks}


def best_single(train: Sequence[Workflow], workers: WorkerSet, lam: float = 0.0, mu: float = 0.0) -> str:
    """The worker whose single-worker assignment has the best mean expected reward on ``train``."""
    if not train:
        raise ValueError("best-single needs training workflows to choose on")

    def score(name: str) -> float:
        return sum(expected(w, dict.fromkeys([s.id for s in w.subtasks], name), workers).reward(lam, mu)
                   for w in train) / len(train)

    return max((w.name for w in workers.workers), key=score)


class BestSingleAssigner:
    name = "best-single"

    def __init__(self, train: Sequence[Workflow]) -> None:
        self.train = list(train)
        self._chosen: dict[tuple[int, float, float], str] = {}

    def assign(self, workflow: Workflow, workers: WorkerSet, lam: float = 0.0, mu: float = 0.0) -> dict[str, str]:
        key = (id(workers), lam, mu)  # chosen once per worker set and price, not per workflow
        if key not in self._chosen:
            self._chosen[key] = best_single(self.train, workers, lam, mu)
        return {s.id: self._chosen[key] for s in workflow.subtasks}


class PerTypeAssigner:
    name = "per-type"

    def assign(self, workflow: Workflow, workers: WorkerSet, lam: float = 0.0, mu: float = 0.0) -> dict[str, str]:
        return {s.id: best_at(s.type, workers) for s in workflow.subtasks}


def best_at(kind: SubtaskType, workers: WorkerSet) -> str:
    """The worker with the highest measured success on subtasks of type ``kind`` (first on a tie)."""
    rates = [w.success[kind] for w in workers.workers]
    return workers.workers[rates.index(max(rates))].name


# Keyword rules: the first keyword found in a step's words decides its type. They were written as a
# reader of coding requests would, not fitted to the synthetic data (whose held-out phrasings they miss).
KEYWORDS: dict[SubtaskType, tuple[str, ...]] = {
    "list": ("list", "ls", "contents", "directory", "folder"),
    "read": ("read", "open", "show", "look", "cat", "view"),
    "search": ("find", "search", "locate", "grep", "where", "uses"),
    "edit": ("fix", "rename", "add", "update", "change", "edit", "write", "replace", "refactor", "remove"),
    "run": ("run", "test", "tests", "check", "execute", "passes", "build"),
    "answer": ("tell", "explain", "summarise", "summarize", "say", "what", "why", "how", "answer", "describe"),
}
_WORD_TYPE = {word: kind for kind, words in KEYWORDS.items() for word in words}
# Stage boundaries (steps in sequence) and, within a stage, "and" joining steps that run in parallel.
_SEQUENCE = re.compile(r"(?:[.;?!](?:\s|$)|,?\s*\band then\b|,?\s*\bthen\b|\bafter (?:that|which)\b|"
                       r"\bonce that is done\b|\bfinally\b|\bnext\b|\bfirst\b|\bafterwards\b)", re.IGNORECASE)
_PARALLEL = re.compile(r"\s*(?:,\s*and\b|\band\b)\s*", re.IGNORECASE)
_FILLER = re.compile(r"^\W*(?:please|could you|can you|i need you to|i want you to)\b\W*", re.IGNORECASE)


def step_type(text: str) -> SubtaskType | None:
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _WORD_TYPE:
            return _WORD_TYPE[word]
    return None


class RulePlanner:
    """Keyword rules: split the instruction into stages at sequence words, split a stage at "and" into
    parallel steps, type each step by its first keyword (a step with none is dropped: it names no
    action), and wire every step of a stage to every step of the next. Assigns with ``per-type``."""

    name = "rules"

    def __init__(self) -> None:
        self._assigner = PerTypeAssigner()

    def plan(self, instruction: str) -> Workflow:
        stages: list[list[tuple[SubtaskType, str]]] = []
        for chunk in _SEQUENCE.split(instruction):
            steps = []
            for part in _PARALLEL.split(_FILLER.sub("", chunk.strip())):
                kind = step_type(part)
                if kind is not None:
                    steps.append((kind, part.strip()))
            if steps:
                stages.append(steps)
        if not stages:
            stages = [[("answer", instruction.strip())]]  # no action word: a question to answer
        subtasks: list[Subtask] = []
        edges: list[tuple[str, str]] = []
        previous: list[str] = []
        for stage in stages:
            ids = [f"s{len(subtasks) + k + 1}" for k in range(len(stage))]
            subtasks += [Subtask(id=i, type=kind, description=text) for i, (kind, text) in zip(ids, stage, strict=True)]
            edges += [(a, b) for a in previous for b in ids]
            previous = ids
        return Workflow(id="plan", instruction=instruction, subtasks=subtasks, edges=edges)

    def assign(self, workflow: Workflow, workers: WorkerSet, lam: float = 0.0, mu: float = 0.0) -> dict[str, str]:
        return self._assigner.assign(workflow, workers, lam, mu)


class ProfileOptimalAssigner:
    """The assignment with the best expected reward under the profiles, workflow by workflow: what a
    perfect learned assigner would pick (the synthetic supervision is this at the data's ``lam``). A
    reference, not a baseline: it searches every assignment of every workflow."""

    name = "profile-optimal"

    def assign(self, workflow: Workflow, workers: WorkerSet, lam: float = 0.0, mu: float = 0.0) -> dict[str, str]:
        return best_assignment(workflow, workers, lam, mu)


class Oracle:
    """The best assignment in hindsight, given which worker succeeded on which subtask in one episode
    (the common draws of :func:`punie.planner.simulate.draw`): an upper bound on every assigner.

    The realised reward is 1 minus the cost terms when every subtask's worker succeeded, 0 minus
    them otherwise. With ``mu`` = 0 the best is one of two: each subtask's cheapest *successful*
    worker (when every subtask has one), or each subtask's cheapest worker (the failure that costs
    least). With ``mu`` > 0 latency is a critical path and the search is exhaustive. Answers are
    cached by the episode's pattern of successes, which repeats across episodes.
    """

    name = "oracle"

    def __init__(self) -> None:
        self._cache: dict[tuple[object, ...], dict[str, str]] = {}

    def assign(self, workflow: Workflow, workers: WorkerSet, outcomes: Mapping[str, Mapping[str, bool]],
               lam: float = 0.0, mu: float = 0.0) -> dict[str, str]:
        pattern = tuple(frozenset(w for w, ok in outcomes[s.id].items() if ok) for s in workflow.subtasks)
        key = (workflow.id, id(workers), pattern, lam, mu)
        if key not in self._cache:
            self._cache[key] = self._search(workflow, workers, pattern, lam, mu)
        return self._cache[key]

    @staticmethod
    def _search(workflow: Workflow, workers: WorkerSet, pattern: tuple[frozenset[str], ...], lam: float,
                mu: float) -> dict[str, str]:
        names = [w.name for w in workers.workers]
        if mu > 0:
            success = {s.id: {n: float(n in ok) for n in names}
                       for s, ok in zip(workflow.subtasks, pattern, strict=True)}
            return best_assignment(workflow, workers, lam, mu, success=success)
        profiles = workers.by_name()

        def price(s: Subtask, n: str) -> float:
            return profiles[n].tokens[s.type] * profiles[n].price_per_token

        def cheapest(s: Subtask, among: Iterable[str]) -> str:
            return min(sorted(among, key=names.index), key=lambda n: price(s, n))

        fail = {s.id: cheapest(s, names) for s in workflow.subtasks}
        if not all(pattern):
            return fail
        win = {s.id: cheapest(s, ok) for s, ok in zip(workflow.subtasks, pattern, strict=True)}
        by_id = {s.id: s for s in workflow.subtasks}
        win_reward = 1.0 - lam * sum(price(by_id[i], n) for i, n in win.items())
        fail_reward = -lam * sum(price(by_id[i], n) for i, n in fail.items())
        return win if win_reward >= fail_reward else fail


# The assigners by name, each made from the training workflows and a seed.
ASSIGNERS: dict[str, Callable[[Sequence[Workflow], int], Assigner]] = {
    "random": lambda train, seed: RandomAssigner(seed),
    "strongest": lambda train, seed: StrongestAssigner(),
    "best-single": lambda train, seed: BestSingleAssigner(train),
    "per-type": lambda train, seed: PerTypeAssigner(),
    "profile-optimal": lambda train, seed: ProfileOptimalAssigner(),
}
REFERENCES = ("profile-optimal",)  # in ASSIGNERS for the tables, but not a baseline a planner must beat
