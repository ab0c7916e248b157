"""Agent traces (``punie traces``) -> workflows: each tool step is a subtask, wired by data dependencies.

The instruction is the trace's task (else its first user message). Every tool call is a subtask
whose type comes from the tool (:data:`TOOL_TYPES`); a final assistant message without tool calls
is an ``answer`` subtask. Edges, from an earlier step ``i`` to a later step ``j``:

1. data: a value ``j`` was called with (a path, a symbol, a token of a command) appears in the
   output ``i`` returned: the model read it there (``list_dir`` showed ``src/a.py``, then
   ``read_file src/a.py``);
2. same file: ``j`` names the file ``i`` read or wrote (a read then the write of that file);
3. state: a ``run`` depends on every earlier ``edit`` (running the tests checks the edits), and
   the final answer on every step whose output it quotes;
4. fallback: a step for which 1-3 find nothing depends on the steps of the turn before it (the
   model saw their outputs before choosing it); steps of one turn, called together before any
   of them returned, never depend on each other.

The edges kept are the transitive reduction (``a->b->c`` makes ``a->c`` implied), the form the
synthetic data has. Traces store no per-turn token counts, so converted workflows carry no
outcome; ``worker`` is set when a worker profile has the trace's adapter (or, without one, its model).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from punie.errors import DataError
from punie.planner.workers import WorkerSet, read_workers
from punie.planner.workflow import Subtask, SubtaskType, Workflow, write_workflows
from punie.traces.store import Trace, TraceStore

# punie's tools (punie.traces.tools) and the common names other agents give the same operations.
TOOL_TYPES: dict[str, SubtaskType] = {
    "list_dir": "list", "list_files": "list", "list_directory": "list", "ls": "list",
    "read_file": "read", "open_file": "read", "view_file": "read", "cat_file": "read", "cat": "read",
    "search": "search", "grep": "search", "find_text": "search", "search_code": "search",
    "write_file": "edit", "edit_file": "edit", "save_file": "edit", "create_file": "edit", "put_file": "edit",
    "apply_patch": "edit",
    "run_command": "run", "run": "run", "shell": "run", "exec_command": "run", "bash": "run",
}
_TOKEN = re.compile(r"[\w./-]{3,}")
_MIN_VALUE = 3  # shorter values ("." for the workspace root) match almost any output


@dataclass
class _Step:
    turn: int  # the assistant message the call came from
    type: SubtaskType
    description: str
    values: set[str]  # what the step was called with, as strings to look for in earlier outputs
    paths: set[str]
    output: str


@dataclass
class Converted:
    workflows: list[Workflow] = field(default_factory=list)
    rejected: list[tuple[int | None, str]] = field(default_factory=list)  # (trace id, why)


def _values(arguments: dict[str, Any]) -> tuple[set[str], set[str]]:
    values: set[str] = set()
    paths: set[str] = set()
    for key, value in arguments.items():
        if not isinstance(value, str) or key == "content":  # a written file's body is not a reference
            continue
        text = value.strip()
        if len(text) >= _MIN_VALUE:
            values.add(text)
        # Tokens of a longer value ("pytest tests/test_a.py"): those that look like a path or a name.
        values.update(t for t in _TOKEN.findall(text) if any(c in t for c in "/._"))
        if key == "path" and len(text) >= _MIN_VALUE:
            paths.add(text.removeprefix("./"))
            base = text.rstrip("/").rsplit("/", 1)[-1]  # list_dir shows names, not paths
            if len(base) >= _MIN_VALUE:
                values.add(base)
    return values, paths


def _steps(trace: Trace) -> list[_Step]:
    steps = []
    for call in trace.tool_calls:
        kind = TOOL_TYPES.get(call.name)
        if kind is None:
            raise ValueError(f"tool {call.name!r} has no subtask type (known: {', '.join(sorted(TOOL_TYPES))})")
        values, paths = _values(call.arguments)
        shown = ", ".join(f"{k}={v}" for k, v in call.arguments.items() if k != "content")
        steps.append(_Step(call.message_index, kind, f"{call.name}({shown})"[:200], values, paths,
                           call.result or ""))
    final = _final_answer(trace)
    if final is not None:
        index, text = final
        quoted = {t for t in _TOKEN.findall(text) if any(c in t for c in "/._")}
        steps.append(_Step(index, "answer", text[:200], quoted, set(), ""))
    return steps


def _final_answer(trace: Trace) -> tuple[int, str] | None:
    for index in range(len(trace.messages) - 1, -1, -1):
        message = trace.messages[index]
        if message.get("role") == "assistant":
            content = message.get("content") or ""
            return (index, content) if content.strip() and not message.get("tool_calls") else None
    return None


def _depends(earlier: _Step, later: _Step) -> bool:
    if earlier.turn == later.turn:
        return False  # called together: neither saw the other's output
    if any(v in earlier.output for v in later.values):
        return True
    if later.paths & earlier.paths:
        return True
    return later.type == "run" and earlier.type == "edit"


def dependency_edges(steps: list[_Step]) -> list[tuple[int, int]]:
    """The edges between step positions, by the rules of the module docstring, transitively reduced."""
    graph = nx.DiGraph()
    graph.add_nodes_from(range(len(steps)))
    turns = sorted({s.turn for s in steps})
    for j, later in enumerate(steps):
        found = [i for i in range(j) if _depends(steps[i], later)]
        if not found and later.turn != turns[0]:
            previous = max(t for t in turns if t < later.turn)
            found = [i for i in range(j) if steps[i].turn == previous]
        graph.add_edges_from((i, j) for i in found)
    reduced = nx.transitive_reduction(graph)
    return sorted(reduced.edges())


def _worker(trace: Trace, workers: WorkerSet | None) -> str | None:
    """The profile that ran the trace: the one with its adapter, or without an adapter the one with its
    model. Unlabelled rather than guessed when none matches (a scripted demo policy is no worker)."""
    for w in workers.workers if workers is not None else ():
        if trace.adapter is not None and w.adapter == trace.adapter:
            return w.name
        if trace.adapter is None and w.adapter is None and trace.model is not None and w.model == trace.model:
            return w.name
    return None


def trace_workflow(trace: Trace, workers: WorkerSet | None = None) -> Workflow:
    """One trace as a workflow; ValueError naming why when it cannot be one."""
    instruction = trace.task or next((str(m.get("content") or "") for m in trace.messages if m.get("role") == "user"),
                                     "")
    if not instruction.strip():
        raise ValueError("it has no task and no user message")
    steps = _steps(trace)
    if not steps:
        raise ValueError("it has neither a tool call nor a final answer")
    ids = [f"s{i + 1}" for i in range(len(steps))]
    worker = _worker(trace, workers)
    return Workflow(
        id=f"trace-{trace.id}", instruction=instruction.strip(), template=f"trace/{trace.category or 'none'}",
        source=f"trace:{trace.id}",
        subtasks=[Subtask(id=i, type=s.type, description=s.description, worker=worker)
                  for i, s in zip(ids, steps, strict=True)],
        edges=[(ids[a], ids[b]) for a, b in dependency_edges(steps)])


def convert_traces(traces: Iterable[Trace], workers: WorkerSet | None = None) -> Converted:
    """Every trace that can be a workflow, and why each other one cannot (none is dropped unreported)."""
    result = Converted()
    for trace in traces:
        try:
            result.workflows.append(trace_workflow(trace, workers))
        except ValueError as exc:
            result.rejected.append((trace.id, str(exc)))
    return result


def traces_to_workflows(output: Path, *, source: str | None = None, category: str | None = None,
                        workers: Path | None = None,
                        store: TraceStore | None = None) -> tuple[int, list[tuple[int | None, str]]]:
    """Convert the store's traces (filtered) into the workflow file ``output``; (written, rejected)."""
    profiles = read_workers(workers) if workers is not None else None
    own = store is None
    store = store or TraceStore()
    try:
        converted = convert_traces(store.iter_traces(source=source, category=category), profiles)
    finally:
        if own:
            store.close()
    if not converted.workflows:
        raise DataError(f"no trace in {store.path} could be converted (source {source!r}, category {category!r}, "
                        f"{len(converted.rejected)} rejected); record some with 'punie agent run'.")
    write_workflows(Path(output), converted.workflows)
    return len(converted.workflows), converted.rejected
