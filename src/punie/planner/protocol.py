"""What every planner offers, learned or not, so evaluation treats them alike.

A planner does two things that are scored apart: it *plans* (an instruction -> subtasks with types
and the edges between them: a :class:`~punie.planner.workflow.Workflow` whose ``worker`` fields are
unset) and it *assigns* (a workflow's subtasks -> worker names, given the workers' profiles and the
prices of cost and latency). Baselines such as "always the strongest worker" only assign; the
rule-based planner and the learned one do both.
"""

from __future__ import annotations

from typing import Protocol

from punie.planner.workers import WorkerSet
from punie.planner.workflow import Workflow


class Planner(Protocol):
    name: str

    def plan(self, instruction: str) -> Workflow:
        """Subtasks (ids ``s1``, ``s2``, ... in topological order), their types and the edges."""
        ...


class Assigner(Protocol):
    name: str

    def assign(self, workflow: Workflow, workers: WorkerSet, lam: float = 0.0, mu: float = 0.0) -> dict[str, str]:
        """A worker name for every subtask id; ``lam``/``mu`` price cost and latency as the reward does."""
        ...


class PlanningAssigner(Planner, Assigner, Protocol):
    """A planner that also assigns: the rule-based planner and the learned one (``load_planner``)."""
