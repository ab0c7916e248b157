"""Agent episodes for ``punie eval --tasks``: a fresh workspace each, the agent's own loop, the checks.

Every episode works on its own copy of its task's workspace, made in a temporary
directory just before it starts and removed once it is scored (kept under
``keep_dir`` when asked), so no episode sees another's writes and the task's
workspace is never touched. The loop is the agent's
(:class:`punie.traces.agent.AgentEpisode`): with a batched turn source every
episode of the run steps together, so each step is one batched generation;
otherwise the episodes run one after another. Each episode that ends is scored
by its task's checks and becomes an :class:`EpisodeResult`; with a trace store it
is also stored as a trace whose outcome is passed or failed.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from punie.errors import ConfigError
from punie.eval.engines import TurnSource
from punie.eval.tasks import Episode, Task, fresh_copy, judge
from punie.serve.client import EndpointHTTPError, EndpointReplyError
from punie.traces.agent import DEFAULT_SYSTEM, AgentEpisode, run_episodes
from punie.traces.store import PASSED, TraceStore
from punie.traces.tools import Workspace, make_tools

EVAL_SOURCE = "eval"  # the trace source of recorded episodes


@dataclass
class EpisodeResult:
    """One task's episode in one run, as results.json keeps it."""

    id: str
    category: str
    passed: bool
    outcome: str  # passed, failed, or error (the engine failed)
    checks: list[dict[str, Any]]  # every check: type, passed, reason (final_answer first when there was none)
    answer: str | None
    steps: int
    tool_calls: int
    tool_errors: int
    tokens: int | None  # generated over every turn; None when the engine did not say
    duration_s: float | None  # own wall time one at a time; in a batch, shared with the other episodes
    messages: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    trace_id: int | None = None
    workspace: str | None = None  # the kept copy (keep_dir), else None: it was removed

    @property
    def failed_checks(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["passed"]]


@dataclass(frozen=True)
class EpisodeSettings:
    sandbox: str = "auto"  # for run_command: see punie.traces.sandbox
    timeout_s: float = 10.0  # seconds a command may take
    keep_dir: Path | None = None  # keep each episode's workspace under keep_dir/<task id>
    store: TraceStore | None = None  # record each episode as a trace
    meta: dict[str, Any] = field(default_factory=dict)  # added to every recorded trace's meta


OnEpisode = Callable[[int, EpisodeResult], None]


@dataclass
class _Running:
    index: int
    task: Task
    root: Path
    episode: AgentEpisode


def run_task_episodes(tasks: list[Task], turns: TurnSource, *, outputs: dict[str, dict[str, list[str]]],
                      settings: EpisodeSettings, on_episode: OnEpisode, model_id: str | None = None,
                      adapter: str | None = None) -> None:
    """One run: every task's episode on ``turns``, scored; ``on_episode(index, result)`` as each ends.

    ``outputs`` are the reference outputs of :func:`punie.eval.tasks.reference_outputs`. One at a
    time, an episode whose request the server answered with an error fails (outcome ``error``) and
    the run goes on; any other error stops the run (episodes already scored were handed on).
    """
    with tempfile.TemporaryDirectory(prefix="punie-episodes-") as tmp:
        running: dict[int, _Running] = {}

        def start(index: int) -> AgentEpisode:
            task = tasks[index]
            root = _episode_root(settings.keep_dir or Path(tmp), index, task.id)
            fresh_copy(task.workspace, root)
            ws = Workspace(root, timeout_s=settings.timeout_s, sandbox=settings.sandbox)
            spec = task.spec
            episode = AgentEpisode(spec.instruction, tools=make_tools(ws, names=spec.tools),
                                   system=spec.system or DEFAULT_SYSTEM, max_steps=spec.max_steps, model_id=model_id,
                                   adapter=adapter, category=task.category, source=EVAL_SOURCE,
                                   meta={**settings.meta, "task_id": task.id})
            running[id(episode)] = _Running(index, task, root, episode)
            return episode

        def finish(episode: AgentEpisode) -> None:
            item = running.pop(id(episode))
            on_episode(item.index, _score(item, outputs.get(item.task.id, {}), settings))

        if turns.batched:
            run_episodes([start(i) for i in range(len(tasks))], turns.complete_many, on_done=finish)
            return
        for index in range(len(tasks)):
            episode = start(index)
            try:
                run_episodes([episode], turns.complete_many, on_done=finish)
            except (EndpointHTTPError, EndpointReplyError):
                finish(episode)  # failed with the server's reason (run_episodes recorded it); go on


def _episode_root(parent: Path, index: int, task_id: str) -> Path:
    # Task ids are free text: keep a readable, file-system-safe name, unique by its index.
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", task_id)[:60] or "task"
    root = parent / f"{index:04d}-{safe}"
    if root.exists():
        raise ConfigError(f"{root} already exists; an episode never reuses a workspace: move it away")
    return root


def _score(item: _Running, outputs: dict[str, list[str]], settings: EpisodeSettings) -> EpisodeResult:
    """Judge an ended episode by its task's checks, store its trace, drop its workspace unless kept."""
    task, root = item.task, item.root

    def evidence(result: Any) -> Episode:
        return Episode(answer=result.answer, trace=result.trace, parse_errors=list(result.errors), workspace=root,
                       pristine=task.workspace, outputs=outputs)

    try:
        result = item.episode.close(settings.store, judge(task.checks, evidence))
    finally:
        if settings.keep_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    trace = result.trace
    return EpisodeResult(
        id=task.id, category=task.category, passed=result.outcome == PASSED, outcome=result.outcome,
        checks=list(trace.meta.get("checks", [])), answer=result.answer, steps=result.steps,
        tool_calls=len(trace.tool_calls), tool_errors=sum(c.is_error for c in trace.tool_calls),
        tokens=result.tokens, duration_s=trace.duration_s, messages=trace.messages, error=trace.meta.get("error"),
        trace_id=trace.id, workspace=str(root) if settings.keep_dir is not None else None)
