"""Run a plan for real: each subtask is one ``punie agent`` episode with its assigned worker.

Subtasks run one after another in the plan's topological order. Each one's prompt is the user's
instruction, the step it is (type and description) and the answers of the subtasks it depends on,
so a later step works from what earlier ones found. Every step is stored in the trace store as its
own agent trace (so it can be exported and trained on like any other), with the trace's model and
adapter those of the step's worker and ``meta["plan"]`` naming the run, the subtask, its worker and
its dependencies, which ties the steps of one execution together.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from punie.planner.workers import WorkerProfile, WorkerSet
from punie.planner.workflow import Workflow
from punie.traces.agent import ChatCompletionsEngine, Engine, local_engine, run_agent
from punie.traces.store import TraceStore
from punie.traces.tools import Tool

ANSWER_CHARS = 800  # of an earlier step's answer passed on: enough for a path or a finding, not a whole file


@dataclass
class StepResult:
    subtask: str
    worker: str
    outcome: str
    answer: str | None
    trace_id: int | None


def step_prompt(workflow: Workflow, position: int, answers: dict[str, str | None]) -> str:
    """The task one subtask's worker is given: the step itself first (a worker is trained on tasks, not on
    plans), then what the steps it depends on found, then the whole instruction as context."""
    subtask = workflow.subtasks[position]
    step = (subtask.description or subtask.type).strip()
    lines = [step[:1].upper() + step[1:] + ("" if step.endswith((".", "?", "!")) else ".")]
    needs = [a for a, b in workflow.edges if b == subtask.id]
    if needs:
        lines += ["", "What the steps it depends on found:"]
        for need in needs:
            answer = (answers.get(need) or "(no answer)").strip()
            kind = next(s.type for s in workflow.subtasks if s.id == need)
            lines.append(f"- {need} ({kind}): {answer[:ANSWER_CHARS]}")
    lines += ["", f"(This is step {position + 1} of {len(workflow.subtasks)} ({subtask.type}) of: "
                  f"{workflow.instruction})"]
    return "\n".join(lines)


class WorkerEngines:
    """One engine per distinct (model, adapter, endpoint), loaded when a step first needs it."""

    def __init__(self, max_tokens: int = 256, make: Callable[[WorkerProfile], Engine] | None = None):
        self.max_tokens = max_tokens
        self.make = make or self._make
        self.engines: dict[tuple[str | None, str | None, str | None], Engine] = {}

    def _make(self, worker: WorkerProfile) -> Engine:
        if worker.endpoint:
            return ChatCompletionsEngine.at(worker.endpoint, model=worker.model, adapter=worker.adapter,
                                            max_tokens=self.max_tokens)
        return local_engine(worker.model, worker.adapter, max_tokens=self.max_tokens)

    def __call__(self, worker: WorkerProfile) -> Engine:
        key = (worker.model, worker.adapter, worker.endpoint)
        if key not in self.engines:
            self.engines[key] = self.make(worker)
        return self.engines[key]

    def close(self) -> None:
        for engine in self.engines.values():
            if isinstance(engine, ChatCompletionsEngine):
                engine.close()


def execute_plan(workflow: Workflow, assignment: dict[str, str], workers: WorkerSet, *, tools: dict[str, Tool],
                 engines: Callable[[WorkerProfile], Engine], store: TraceStore | None, max_steps: int = 8,
                 on_step: Callable[[StepResult], None] | None = None,
                 on_message: Callable[[dict[str, Any]], None] | None = None) -> list[StepResult]:
    """Run every subtask in topological order with its worker; the results in the order they ran."""
    ordered = workflow.ordered()
    missing = [s.id for s in ordered.subtasks if s.id not in assignment]
    if missing:
        raise KeyError(f"no worker assigned to subtask(s) {', '.join(missing)}")
    run_id = uuid.uuid4().hex[:12]
    answers: dict[str, str | None] = {}
    results: list[StepResult] = []
    for position, subtask in enumerate(ordered.subtasks):
        worker = workers.get(assignment[subtask.id])
        meta = {"plan": {"run": run_id, "instruction": workflow.instruction, "subtask": subtask.id,
                         "type": subtask.type, "worker": worker.name, "step": position + 1,
                         "of": len(ordered.subtasks), "depends_on": [a for a, b in ordered.edges if b == subtask.id]}}
        result = run_agent(step_prompt(ordered, position, answers), engine=engines(worker), tools=tools,
                           max_steps=max_steps, store=store, category=subtask.type, source="planner", meta=meta,
                           on_message=on_message)
        answers[subtask.id] = result.answer
        step = StepResult(subtask.id, worker.name, result.outcome, result.answer, result.trace.id)
        results.append(step)
        if on_step is not None:
            on_step(step)
    return results


def dependents(workflow: Workflow) -> tuple[list[str], dict[str, list[str]]]:
    """(the roots: subtasks that depend on nothing; each subtask's dependents), for drawing a plan as a
    tree from its first steps down."""
    children: dict[str, list[str]] = {s.id: [] for s in workflow.subtasks}
    has_parent = set()
    for a, b in workflow.edges:
        children[a].append(b)
        has_parent.add(b)
    return [s.id for s in workflow.subtasks if s.id not in has_parent], children
