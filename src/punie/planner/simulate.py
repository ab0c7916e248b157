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
