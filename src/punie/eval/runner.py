"""``run_eval``: the baseline and each adapter on the same cases, scored and compared.

Order of work: read and check the whole suite, check every adapter against the
base model, prepare the engine (which loads every adapter once), and only then
generate. results.json is rewritten after each run, and on Ctrl-C the finished
cases are kept and written before returning with ``interrupted=True``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from punie import paths
from punie.errors import ConfigError, PunieError
from punie.eval import compat
from punie.eval.engines import Engine, EngineOptions, Generation, make_engine
from punie.eval.results import BASELINE, CaseResult, EvalResults, RunResult
from punie.eval.scorers import SCORERS
from punie.eval.suite import EvalCase, load_suite

DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True)
class EvalProgress:
    """One step of an eval: a run started (``case_id`` None) or a case finished."""

    run: str
    run_index: int
    runs: int
    done: int
    total: int
    case_id: str | None = None
    passed: bool | None = None


ProgressFn = Callable[[EvalProgress], None]


def run_eval(suite_path: Path | str, model: str | None = None, adapters: Sequence[Path | str] = (),
             engine: str = "inprocess", max_tokens: int = DEFAULT_MAX_TOKENS, out_dir: Path | str | None = None,
             progress: ProgressFn | None = None, *, endpoint: str | None = None, batch_size: int = 16,
             on_written: Callable[[Path], object] | None = None, force: bool = False,
             baseline: bool = True) -> EvalResults:
    """Evaluate the baseline and each adapter on a suite; write results.json to ``out_dir``.

    Returns the results; ``results.interrupted`` is True when Ctrl-C stopped the
    run early (the finished cases are kept and written). ``on_written(out_dir)``
    runs once the final results.json is written, also when an error stopped the
    eval: the CLI renders the report there (eval itself knows nothing of reports).
    ``force`` replaces the results in an existing ``out_dir`` and evaluates an
    adapter on a base model other than the one it records (``results.warnings`` says so). ``baseline=False``
    answers with the adapters only (``punie sweep`` evaluates the base model once, not beside every candidate).
    """
    suite = load_suite(suite_path)
    plan = plan_eval(model=model, adapters=adapters, engine=engine, endpoint=endpoint, max_tokens=max_tokens,
                     out_dir=out_dir, force=force, baseline=baseline)
    plan.out.mkdir(parents=True, exist_ok=True)
    runner = make_engine(plan.engine, EngineOptions(model=model, max_tokens=max_tokens, batch_size=batch_size,
                                                    endpoint=endpoint))
    results = EvalResults(suite_path=str(Path(suite_path)), suite_sha256=suite.sha256,
                          model=endpoint or plan.base_name, engine=plan.engine, max_tokens=max_tokens,
                          cases=suite.cases, timing="per_case" if runner.per_case_latency else "batched",
                          batch_size=None if runner.per_case_latency else batch_size,
                          created=datetime.now(UTC).isoformat(timespec="seconds"), out_dir=plan.out,
                          warnings=plan.warnings)

    def one_run(index: int, name: str, adapter: Path | None) -> None:
        run = RunResult(name=name, adapter=str(adapter) if adapter else None, metrics_path=metrics_path(adapter))
        results.runs.append(run)
        _one_run(runner, run, suite.cases, index, len(plan.runs), progress)

    execute_runs(runner, plan, results, one_run, on_written)
    return results


@dataclass(frozen=True)
class EvalPlan:
    """What an eval will do, settled (and refused when wrong) before any model loads."""

    engine: str
    adapters: list[Path]
    out: Path
    base_name: str
    base_dir: Path | None
    warnings: list[str]
    runs: list[tuple[str, Path | None]]  # (name, adapter); the baseline (adapter None) first


def plan_eval(*, model: str | None, adapters: Sequence[Path | str], engine: str, endpoint: str | None,
              max_tokens: int, out_dir: Path | str | None, force: bool, baseline: bool = True) -> EvalPlan:
    """Check the options, the output directory and every adapter against the base model; name the runs."""
    if max_tokens < 1:
        raise ConfigError(f"--max-tokens must be at least 1, got {max_tokens}.")
    if endpoint and engine == "inprocess":
        engine = "endpoint"
    elif endpoint and engine != "endpoint":
        raise ConfigError(f"--endpoint evaluates a server you already run; it cannot be combined with "
                          f"--engine {engine}.")
    adapter_paths = [Path(a).expanduser() for a in adapters]
    if engine == "endpoint" and adapter_paths:
        raise ConfigError("--endpoint evaluates the one model the server runs; it cannot switch adapters. "
                          "Use --engine inprocess or --engine server to compare adapters with the baseline.")
    out = _output_dir(out_dir, force=force)
    base_name, base_dir = _base_model(model, engine)
    warnings = [w for adapter in adapter_paths
                for w in compat.check_adapter_matches(adapter, base_dir, base_name, force=force)]
    runs: list[tuple[str, Path | None]] = [(BASELINE if engine != "endpoint" else "endpoint", None)]
    if not baseline and adapter_paths:
        runs = []
    runs += list(zip(run_names(adapter_paths), adapter_paths, strict=True))
    return EvalPlan(engine, adapter_paths, out, base_name, base_dir, warnings, runs)


class _Results(Protocol):
    interrupted: bool
    error: str | None

    def write(self, out_dir: Path) -> Path: ...

    def finish(self, out_dir: Path, on_written: Callable[[Path], object] | None) -> None: ...


def execute_runs(runner: Engine, plan: EvalPlan, results: _Results, one_run: Callable[[int, str, Path | None], None],
                 on_written: Callable[[Path], object] | None) -> None:
    """Prepare the engine (every adapter loads before anything runs), then each run in turn, results
    written after each. Ctrl-C keeps what finished; an engine error keeps it too, then propagates."""
    try:
        runner.prepare(plan.adapters)
        for index, (name, adapter) in enumerate(plan.runs):
            one_run(index, name, adapter)
            results.write(plan.out)
    except KeyboardInterrupt:
        results.interrupted = True
    except PunieError as exc:
        # A server that died mid-run: keep what finished, then report the error.
        results.interrupted, results.error = True, str(exc)
        results.finish(plan.out, on_written)
        raise
    finally:
        runner.close()
    results.finish(plan.out, on_written)


def _output_dir(out_dir: Path | str | None, *, force: bool) -> Path:
    """``--out``, refused when it holds results unless ``force``; by default a new directory under runs/."""
    if out_dir is None:
        return paths.new_run_dir("eval")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; choose a directory.")
    held = [name for name in ("results.json", "report.html") if (out / name).exists()]
    if held and not force:
        raise ConfigError(f"--out {out} already holds {' and '.join(held)} from another eval; pass --force to "
                          "replace them, or choose another --out.")
    return out


def _one_run(runner, run: RunResult, cases: list[EvalCase], index: int, runs: int,
             progress: ProgressFn | None) -> None:
    tic = time.perf_counter()
    if progress:
        progress(EvalProgress(run.name, index, runs, 0, len(cases)))

    def on_result(i: int, generation: Generation) -> None:
        result = score_case(cases[i], generation)
        run.cases.append(result)
        run.elapsed_s = time.perf_counter() - tic
        if progress:
            progress(EvalProgress(run.name, index, runs, len(run.cases), len(cases), result.id, result.passed))

    runner.generate(Path(run.adapter) if run.adapter else None, cases, on_result)
    run.complete = len(run.cases) == len(cases)
    run.elapsed_s = time.perf_counter() - tic


def score_case(case: EvalCase, generation: Generation) -> CaseResult:
    """Score one answer with the case's scorer (an engine error fails the case with that reason)."""
    output = generation.output
    score = SCORERS[case.scorer].score(case, output)
    passed, reason = score.passed, score.reason
    if generation.error:
        passed, reason = False, f"engine error: {generation.error}"
    return CaseResult(id=case.id, category=case.category, scorer=case.scorer, passed=passed,
                      score=score.score if passed or not generation.error else 0.0, output=output.raw,
                      tool_calls=[c.as_dict() for c in output.tool_calls],
                      latency_s=None if generation.latency_s is None else round(generation.latency_s, 4),
                      reason=reason, details=score.details, parse_errors=output.parse_errors,
                      error=generation.error, generated_tokens=generation.tokens)


def _base_model(model: str | None, engine: str) -> tuple[str, Path | None]:
    """A display name and the local directory of the base model (None for an endpoint or a hub id)."""
    if engine == "endpoint":
        return model or "endpoint", None
    from punie.models.registry import resolve_model

    resolved = resolve_model(model)
    path = Path(resolved)
    return (model or "default") if model in (None, "default") else resolved, path if path.is_dir() else None


def run_names(adapters: list[Path]) -> list[str]:
    names: list[str] = []
    for adapter in adapters:
        name = adapter.resolve().name or str(adapter)
        if name == BASELINE or name in names:
            name = f"{adapter.resolve().parent.name}/{name}"
        while name in names or name == BASELINE:
            name += "'"
        names.append(name)
    return names


def metrics_path(adapter: Path | None) -> str | None:
    if adapter is None:
        return None
    from punie.training.rundir import RunDir

    path = RunDir(adapter).metrics_file
    return str(path) if path.is_file() else None
