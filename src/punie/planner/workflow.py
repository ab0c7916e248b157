"""Workflows: an instruction decomposed into typed subtasks wired into a dependency DAG.

One JSONL record per workflow. The supervised planner learns from these, the converter from agent
traces and the synthetic generator write them, and ``punie planner eval`` compares decoded plans
with them, so they are validated once, here:

    {"id": "wf-0001", "instruction": "Find where parse_date is defined and fix its docstring",
     "template": "find-then-edit", "source": "synthetic",
     "subtasks": [{"id": "s1", "type": "search", "description": "find parse_date", "worker": "base"},
                  {"id": "s2", "type": "edit", "description": "fix the docstring", "worker": "demo"}],
     "edges": [["s1", "s2"]],
     "outcome": {"success": true, "tokens": 212, "latency_s": 3.1}}

``type`` comes from :data:`SUBTASK_TYPES`: the categories ``punie eval`` suites already score, so a
worker's measured success on a category is its success on that subtask type. ``template`` names the
instruction template (or phrasing family) a workflow came from: splits hold out whole templates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from punie import fileio
from punie.data.formats import scan_jsonl
from punie.errors import DataError, validation_problems

SubtaskType = Literal["list", "read", "search", "edit", "run", "answer"]
SUBTASK_TYPES: tuple[str, ...] = get_args(SubtaskType)


class Outcome(BaseModel):
    """What running a subtask (or a whole workflow) gave: did it succeed, tokens generated, wall time."""

    model_config = ConfigDict(extra="forbid")
    success: bool
    tokens: int = Field(ge=0)
    latency_s: float = Field(ge=0)


class Subtask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    type: SubtaskType
    description: str = ""
    worker: str | None = None  # the worker the supervision chose (None: unlabelled)
    outcome: Outcome | None = None


class Workflow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    instruction: str = Field(min_length=1)
    template: str | None = None
    source: str | None = None  # "synthetic", or the trace file a workflow was converted from
    subtasks: list[Subtask] = Field(min_length=1)
    edges: list[tuple[str, str]] = []
    outcome: Outcome | None = None

    @model_validator(mode="after")
    def _is_a_dag(self) -> Workflow:
        ids = [s.id for s in self.subtasks]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"subtask ids must be unique; repeated: {', '.join(repeated)}")
        known = set(ids)
        for src, dst in self.edges:
            if src not in known or dst not in known:
                missing = src if src not in known else dst
                raise ValueError(f"edge [{src!r}, {dst!r}] names subtask {missing!r}, which is not in subtasks")
            if src == dst:
                raise ValueError(f"edge [{src!r}, {dst!r}] joins a subtask to itself")
        if len(set(self.edges)) != len(self.edges):
            raise ValueError("an edge is listed twice")
        cycle = _cycle(ids, self.edges)
        if cycle:
            raise ValueError(f"the edges form a cycle: {' -> '.join(cycle + cycle[:1])}")
        return self

    def graph(self) -> nx.DiGraph:
        graph = nx.DiGraph()
        graph.add_nodes_from(s.id for s in self.subtasks)
        graph.add_edges_from(self.edges)
        return graph

    def ordered(self) -> Workflow:
        """The same workflow with its subtasks in topological order (ties keep the listed order).

        The planner decodes subtasks in this order, so every edge runs from an earlier subtask to a
        later one and a decoder that only scores such edges can express every workflow.
        """
        position = {s.id: i for i, s in enumerate(self.subtasks)}
        order = nx.lexicographical_topological_sort(self.graph(), key=position.__getitem__)
        by_id = {s.id: s for s in self.subtasks}
        return self.model_copy(update={"subtasks": [by_id[i] for i in order]})

    def edge_positions(self) -> set[tuple[int, int]]:
        """The edges as (earlier, later) positions in ``subtasks`` (call on :meth:`ordered`)."""
        position = {s.id: i for i, s in enumerate(self.subtasks)}
        return {(position[a], position[b]) for a, b in self.edges}

    def types(self) -> list[str]:
        return [s.type for s in self.subtasks]


def _cycle(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    try:
        return [a for a, _ in nx.find_cycle(graph)]
    except nx.NetworkXNoCycle:
        return []


def is_dag(n: int, edges: Iterable[tuple[int, int]]) -> bool:
    """Whether ``edges`` over positions ``0..n-1`` form a DAG (for decoded plans, before any ids exist)."""
    pairs = list(edges)
    if any(not (0 <= a < n and 0 <= b < n) or a == b for a, b in pairs):
        return False
    return not _cycle([str(i) for i in range(n)], [(str(a), str(b)) for a, b in pairs])


def critical_path(workflow: Workflow, duration: Mapping[str, float]) -> float:
    """The longest total duration along any dependency chain: the workflow's wall time when every
    subtask starts as soon as its dependencies are done (``duration`` by subtask id)."""
    graph = workflow.graph()
    finish: dict[str, float] = {}
    for node in nx.topological_sort(graph):
        start = max((finish[p] for p in graph.predecessors(node)), default=0.0)
        finish[node] = start + duration[node]
    return max(finish.values(), default=0.0)


def read_workflows(path: Path) -> list[Workflow]:
    """The workflows of a JSONL file; DataError naming ``FILE:LINE`` and the field at the first bad record."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such workflow file (JSONL, one workflow per line; see 'punie planner --help').")
    records, problems = scan_jsonl(path)
    bad = [p for p in problems if p.code != "blank-line"]
    if bad:
        raise DataError(f"{path}:{bad[0].line}: {bad[0].message}")
    workflows: list[Workflow] = []
    seen: dict[str, int] = {}
    for line, record in records:
        try:
            workflow = Workflow.model_validate(record)
        except ValidationError as exc:
            raise DataError(f"{path}:{line}: not a workflow: {'; '.join(validation_problems(exc, root='record'))}") \
                from None
        if workflow.id in seen:
            raise DataError(f"{path}:{line}: workflow id {workflow.id!r} repeats line {seen[workflow.id]}; "
                            "give each workflow its own id.")
        seen[workflow.id] = line
        workflows.append(workflow)
    if not workflows:
        raise DataError(f"{path}: holds no workflow.")
    return workflows


def write_workflows(path: Path, workflows: Iterable[Workflow]) -> None:
    lines = [w.model_dump_json(exclude_none=True) + "\n" for w in workflows]
    fileio.write_text(Path(path), "".join(lines))
