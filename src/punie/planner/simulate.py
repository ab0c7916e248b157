"""The execution simulator: run a plan with an assignment of workers, drawing outcomes from their profiles.

Model of an execution (simple on purpose, so its expectations have closed forms the tests check):
every subtask runs, once, with its assigned worker; it succeeds with the worker's success rate on
its type, independently of the others; the workflow succeeds when every subtask does. A subtask
costs the worker's mean tokens for its type times the worker's price per token and takes its mean
latency; the workflow's latency is the critical path (subtasks start when their dependencies end).
So cost and latency are fixed by the plan and the assignment, and success is the one random part:

    E[success] = prod_i p(worker_i, type_i)     cost = sum_i tokens(w_i, t_i) * price(w_i)
    reward     = success - lam * cost - mu * latency
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass

from punie.planner.workers import WorkerSet
from punie.planner.workflow import SubtaskType, Workflow, critical_path

Row = tuple[str, SubtaskType, str]  # subtask id, its type, its worker's name


@dataclass(frozen=True)
class Execution:
    success: float  # 0/1 for a sampled run, the probability for an expectation
    cost: float
    latency_s: float

    def reward(self, lam: float = 0.0, mu: float = 0.0) -> float:
        return self.success - lam * self.cost - mu * self.latency_s


def _assigned(workflow: Workflow, assignment: Mapping[str, str], workers: WorkerSet) -> list[Row]:
    """(subtask id, type, worker) for every subtask; a missing assignment is an error, not a default."""
    rows = []
    for subtask in workflow.subtasks:
        name = assignment.get(subtask.id)
        if name is None:
            raise KeyError(f"workflow {workflow.id!r}: subtask {subtask.id!r} has no worker assigned")
        workers.get(name)
        rows.append((subtask.id, subtask.type, name))
    return rows


def _cost_and_latency(workflow: Workflow, rows: list[Row], workers: WorkerSet) -> tuple[float, float]:
    profiles = workers.by_name()
    cost = sum(profiles[w].tokens[t] * profiles[w].price_per_token for _, t, w in rows)
    latency = critical_path(workflow, {i: profiles[w].latency_s[t] for i, t, w in rows})
    return cost, latency


def expected(workflow: Workflow, assignment: Mapping[str, str], workers: WorkerSet) -> Execution:
    """The closed-form expectation of :func:`sample` (success is a probability)."""
    rows = _assigned(workflow, assignment, workers)
    profiles = workers.by_name()
    success = 1.0
    for _, t, w in rows:
        success *= profiles[w].success[t]
    cost, latency = _cost_and_latency(workflow, rows, workers)
    return Execution(success, cost, latency)


def sample(workflow: Workflow, assignment: Mapping[str, str], workers: WorkerSet, rng: random.Random) -> Execution:
    """One simulated run: each subtask's success drawn from its worker's rate (one draw per subtask, in order)."""
    rows = _assigned(workflow, assignment, workers)
    profiles = workers.by_name()
    draws = [rng.random() < profiles[w].success[t] for _, t, w in rows]
    cost, latency = _cost_and_latency(workflow, rows, workers)
    return Execution(float(all(draws)), cost, latency)


# Common random numbers. Comparing policies on independent draws adds noise that has nothing to do
# with the policies; instead every (episode, subtask, worker) gets one uniform number, drawn once, and
# a subtask run by worker w succeeds in that episode when its number is below w's rate. Every
# assigner and the hindsight oracle are then scored on the same luck: an oracle that picks, per
# subtask, a worker that succeeded can never do worse than any assigner on the same draws.
Draws = list[dict[str, dict[str, float]]]  # per episode: subtask id -> worker name -> uniform in [0, 1)


def draw(workflow: Workflow, workers: WorkerSet, episodes: int, seed: int = 0) -> Draws:
    """``episodes`` sets of uniforms for ``workflow``, the same for a given (seed, workflow id)."""
    rng = random.Random(f"{seed}:{workflow.id}")  # str seeds hash deterministically (sha512)
    names = [w.name for w in workers.workers]
    return [{s.id: {name: rng.random() for name in names} for s in workflow.subtasks} for _ in range(episodes)]


def replay(workflow: Workflow, assignment: Mapping[str, str], workers: WorkerSet, draws: Draws) -> Execution:
    """The mean over the episodes of ``draws``: success is the share of episodes where every subtask succeeded."""
    if not draws:
        raise ValueError("replay needs at least one episode of draws")
    rows = _assigned(workflow, assignment, workers)
    cost, latency = _cost_and_latency(workflow, rows, workers)
    profiles = workers.by_name()
    rates = [(i, w, profiles[w].success[t]) for i, t, w in rows]
    wins = sum(all(episode[i][w] < p for i, w, p in rates) for episode in draws)
    return Execution(wins / len(draws), cost, latency)


EXHAUSTIVE_LIMIT = 4096  # assignments searched one by one; beyond, the separable search below


def best_assignment(workflow: Workflow, workers: WorkerSet, lam: float = 0.0, mu: float = 0.0,
                    allowed: Mapping[str, list[str]] | None = None, success: Mapping[str, Mapping[str, float]]
                    | None = None) -> dict[str, str]:
    """The assignment with the highest expected reward (ties: the first in worker order).

    ``allowed`` limits each subtask's candidates; ``success`` (subtask id -> worker -> probability)
    replaces the profiles' rates: the hindsight oracle passes 0/1 outcomes of one episode. Small
    problems (every shipped workflow) are searched exhaustively; beyond :data:`EXHAUSTIVE_LIMIT`
    assignments each subtask takes its most successful worker, the cheaper on a tie: exact when
    ``lam`` and ``mu`` are 0 (the success product is maximised factor by factor), an approximation
    otherwise.
    """
    profiles = workers.by_name()
    names = [w.name for w in workers.workers]
    rate = success or {s.id: {n: profiles[n].success[s.type] for n in names} for s in workflow.subtasks}
    choices = [list((allowed or {}).get(s.id, names)) for s in workflow.subtasks]
    ids = [s.id for s in workflow.subtasks]

    def reward(combo: tuple[str, ...]) -> float:
        assignment = dict(zip(ids, combo, strict=True))
        cost, latency = _cost_and_latency(workflow, _assigned(workflow, assignment, workers), workers)
        p = 1.0
        for i, w in assignment.items():
            p *= rate[i][w]
        return p - lam * cost - mu * latency

    size = 1
    for c in choices:
        size *= len(c)
    if size <= EXHAUSTIVE_LIMIT:
        best = max(itertools.product(*choices), key=reward)  # max keeps the first of equal rewards
        return dict(zip(ids, best, strict=True))
    by_type = {s.id: s.type for s in workflow.subtasks}
    chosen = {}
    for i, candidates in zip(ids, choices, strict=True):
        def alone(w: str, i: str = i) -> tuple[float, float]:
            p = profiles[w]
            # Success first (a product: the best factor wins), then the cheaper worker.
            return rate[i][w], -(lam * p.tokens[by_type[i]] * p.price_per_token + mu * p.latency_s[by_type[i]])

        chosen[i] = max(candidates, key=alone)
    return chosen


def outcomes(workflow: Workflow, workers: WorkerSet,
             episode: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, bool]]:
    """Per subtask and worker, whether that worker would have succeeded in this episode of common draws."""
    profiles = workers.by_name()
    return {s.id: {name: u < profiles[name].success[s.type] for name, u in episode[s.id].items()}
            for s in workflow.subtasks}
