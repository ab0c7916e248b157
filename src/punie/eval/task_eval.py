"""``run_task_eval``: the baseline and each adapter on every task of a task suite, judged by checks.

The order of work is ``run_eval``'s (:mod:`punie.eval.runner`, whose planning and
run loop this shares): read and check the whole task suite, check every adapter
against the base model, run each ``answer_includes_output_of`` command in a
pristine copy of its workspace, prepare the engine, and only then run episodes.
results.json is rewritten after each run; Ctrl-C keeps the finished episodes.

results.json (``"kind": "tasks"``) holds, per run, a summary (task success rate
with its 95% Wilson interval, mean steps, tool calls, tokens and time per task)
and every episode (messages, checks, answer); ``comparisons`` pair each adapter
with the baseline task by task (exact McNemar, Newcombe interval), as for eval
suites. Timing: one episode at a time (HTTP engines) each has its own wall time;
batched (in-process), episodes share every step, so a task's time is the run's
wall time divided by the tasks.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from punie import fileio
from punie.errors import ConfigError
from punie.eval import stats
from punie.eval.engines import Engine, EngineOptions, make_engine
from punie.eval.episodes import EpisodeResult, EpisodeSettings, run_task_episodes
from punie.eval.results import compare, finish_comparisons
from punie.eval.runner import (
    DEFAULT_MAX_TOKENS,
    EvalPlan,
    EvalProgress,
    ProgressFn,
    execute_runs,
    metrics_path,
    plan_eval,
)
from punie.eval.tasks import TaskSuite, load_tasks, reference_outputs
from punie.traces import sandbox as os_sandbox
from punie.traces.store import TraceStore

KIND = "tasks"
WORKSPACES = "workspaces"  # under --out, the kept episode workspaces (--keep-workspaces)


@dataclass
class TaskRun:
    name: str
    adapter: str | None
    episodes: list[EpisodeResult] = field(default_factory=list)
    complete: bool = False
    elapsed_s: float = 0.0
    metrics_path: str | None = None

    @property
    def cases(self) -> list[EpisodeResult]:
        """The episodes, under the name the paired comparison reads (one per task)."""
        return self.episodes

    def summary(self, n_suite: int, batched: bool) -> dict[str, Any]:
        eps = self.episodes
        n = len(eps)
        passed = sum(e.passed for e in eps)
        lo, hi = stats.wilson_interval(passed, n)
        by_category: dict[str, list[bool]] = defaultdict(list)
        for e in eps:
            by_category[e.category].append(e.passed)
        failed_checks = Counter(c["type"] for e in eps for c in e.failed_checks)
        tokens = [e.tokens for e in eps]
        durations = [e.duration_s for e in eps]
        if batched:  # episodes shared every step: only the run's time per task means something
            time_per_task = self.elapsed_s / n if n else None
        else:
            time_per_task = _mean([d for d in durations if d is not None]) if None not in durations else None
        return {"n": n, "n_suite": n_suite, "passed": passed, "accuracy": passed / n if n else 0.0,
                "ci95": [lo, hi], "errors": sum(e.outcome == "error" for e in eps),
                "by_category": {cat: {"n": len(v), "passed": sum(v), "accuracy": sum(v) / len(v)}
                                for cat, v in sorted(by_category.items())},
                "failed_checks": dict(sorted(failed_checks.items())),
                "mean_steps": _mean([e.steps for e in eps]), "mean_tool_calls": _mean([e.tool_calls for e in eps]),
                "mean_tool_errors": _mean([e.tool_errors for e in eps]),
                "mean_tokens": _mean([t for t in tokens if t is not None]) if eps and None not in tokens else None,
                "time_per_task_s": time_per_task, "elapsed_s": self.elapsed_s, "complete": self.complete}


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class TaskEvalResults:
    suite: TaskSuite
    model: str
    engine: str
    max_tokens: int
    batched: bool
    batch_size: int | None = None
    sandbox: str = "auto"
    runs: list[TaskRun] = field(default_factory=list)
    interrupted: bool = False
    error: str | None = None
    created: str = ""
    out_dir: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def comparisons(self) -> list[dict[str, Any]]:
        base = next((r for r in self.runs if r.adapter is None), None)
        if base is None:
            return []
        return finish_comparisons([compare(base, r) for r in self.runs if r is not base and r.episodes])

    def to_dict(self) -> dict[str, Any]:
        suite = self.suite
        return {
            "format": 1, "kind": KIND, "created": self.created,
            "suite": {"path": str(suite.path), "sha256": suite.sha256, "cases": len(suite.tasks)},
            "model": self.model, "engine": self.engine, "max_tokens": self.max_tokens,
            "timing": "batched" if self.batched else "per_case", "batch_size": self.batch_size,
            "sandbox": self.sandbox, "interrupted": self.interrupted, "error": self.error, "warnings": self.warnings,
            "runs": [{"name": r.name, "adapter": r.adapter, "metrics_path": r.metrics_path,
                      "summary": r.summary(len(suite.tasks), self.batched),
                      "episodes": [asdict(e) | {"failed_checks": e.failed_checks} for e in r.episodes]}
                     for r in self.runs],
            "comparisons": self.comparisons(),
            "tasks": [{"id": t.id, "category": t.category, "instruction": t.spec.instruction,
                       "workspace": str(t.workspace), "max_steps": t.spec.max_steps, "tools": t.spec.tools,
                       "checks": [c.model_dump() for c in t.checks], "line": t.line} for t in suite.tasks],
        }

    def write(self, out_dir: Path) -> Path:
        path = Path(out_dir) / "results.json"
        fileio.write_json(path, self.to_dict())
        return path

    def finish(self, out_dir: Path, on_written: Callable[[Path], object] | None = None) -> None:
        """Put each run's episodes in suite order, write results.json and tell ``on_written``."""
        order = {t.id: i for i, t in enumerate(self.suite.tasks)}
        for run in self.runs:
            run.episodes.sort(key=lambda e: order[e.id])
        self.write(out_dir)
        if on_written is not None:
            on_written(out_dir)


@dataclass(frozen=True)
class TaskEvalOptions:
    """How episodes run, besides the engine's options."""

    sandbox: str = "auto"  # run_command's OS sandbox; "none" runs commands unconfined
    timeout_s: float = 10.0  # seconds a command may take
    record: bool = False  # store every episode in the trace store (source "eval")
    keep_workspaces: bool = False  # keep each episode's workspace under OUT/workspaces/RUN/
    batched: bool = True  # in-process: step all episodes together (False: one after another)


def run_task_eval(tasks_path: Path | str, model: str | None = None, adapters: Sequence[Path | str] = (),
                  engine: str = "inprocess", max_tokens: int = DEFAULT_MAX_TOKENS, out_dir: Path | str | None = None,
                  progress: ProgressFn | None = None, *, endpoint: str | None = None, batch_size: int = 16,
                  on_written: Callable[[Path], object] | None = None, force: bool = False,
                  options: TaskEvalOptions = TaskEvalOptions()) -> TaskEvalResults:
    """Run every task's episode for the baseline and each adapter; write results.json to ``out_dir``.

    Refusals, ``force``, ``on_written`` and interruption are :func:`punie.eval.run_eval`'s.
    """
    suite = load_tasks(tasks_path)
    plan = plan_eval(model=model, adapters=adapters, engine=engine, endpoint=endpoint, max_tokens=max_tokens,
                     out_dir=out_dir, force=force)
    _check_sandbox(suite, options.sandbox)
    if options.keep_workspaces and (plan.out / WORKSPACES).exists():
        raise ConfigError(f"{plan.out / WORKSPACES} holds another eval's episode workspaces; move it away or "
                          "choose another --out (--force replaces results, never workspaces).")
    outputs = reference_outputs(suite, sandbox=options.sandbox, timeout_s=options.timeout_s)
    plan.out.mkdir(parents=True, exist_ok=True)
    runner = make_engine(plan.engine, EngineOptions(model=model, max_tokens=max_tokens, batch_size=batch_size,
                                                    endpoint=endpoint))
    batched = options.batched and not runner.per_case_latency
    results = TaskEvalResults(suite=suite, model=endpoint or plan.base_name, engine=plan.engine,
                              max_tokens=max_tokens, batched=batched, batch_size=batch_size if batched else None,
                              sandbox=options.sandbox, created=datetime.now(UTC).isoformat(timespec="seconds"),
                              out_dir=plan.out, warnings=plan.warnings)
    store = TraceStore() if options.record else None
    try:
        def one_run(index: int, name: str, adapter: Path | None) -> None:
            run = TaskRun(name=name, adapter=str(adapter) if adapter else None, metrics_path=metrics_path(adapter))
            results.runs.append(run)
            _one_run(runner, run, plan, suite, outputs, options, store, index, progress)

        execute_runs(runner, plan, results, one_run, on_written)
    finally:
        if store is not None:
            store.close()
    return results


def _check_sandbox(suite: TaskSuite, sandbox: str) -> None:
    """Refuse before anything loads when tasks need run_command and no sandbox can confine it."""
    needs = [t.id for t in suite.tasks if t.commands() or t.spec.tools is None or "run_command" in t.spec.tools]
    if needs and os_sandbox.choose(sandbox) is None:
        raise ConfigError(f"task {needs[0]!r} offers run_command or runs a check command, but "
                          f"{os_sandbox.UNAVAILABLE}")


def _one_run(runner: Engine, run: TaskRun, plan: EvalPlan, suite: TaskSuite, outputs: dict[str, dict[str, list[str]]],
             options: TaskEvalOptions, store: TraceStore | None, index: int, progress: ProgressFn | None) -> None:
    tic = time.perf_counter()
    total = len(suite.tasks)
    if progress:
        progress(EvalProgress(run.name, index, len(plan.runs), 0, total))

    def on_episode(_: int, episode: EpisodeResult) -> None:
        run.episodes.append(episode)
        run.elapsed_s = time.perf_counter() - tic
        if progress:
            progress(EvalProgress(run.name, index, len(plan.runs), len(run.episodes), total, episode.id,
                                  episode.passed))

    keep = plan.out / WORKSPACES / run.name.replace("/", "_") if options.keep_workspaces else None
    settings = EpisodeSettings(sandbox=options.sandbox, timeout_s=options.timeout_s, keep_dir=keep, store=store,
                               meta={"tasks_file": str(suite.path), "run": run.name, "eval_out": str(plan.out)})
    adapter = Path(run.adapter) if run.adapter else None
    with runner.agent_turns(adapter, batched=options.batched) as turns:
        run_task_episodes(suite.tasks, turns, outputs=outputs, settings=settings, on_episode=on_episode,
                          model_id=_trace_model(plan), adapter=run.adapter)
    run.complete = len(run.episodes) == total
    run.elapsed_s = time.perf_counter() - tic


def _trace_model(plan: EvalPlan) -> str:
    """The model name traces record: the base model's directory when there is one, else its name."""
    return str(plan.base_dir) if plan.base_dir is not None else plan.base_name
