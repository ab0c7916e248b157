"""``punie planner eval``: score planners and baselines on held-out workflows, as routers are scored.

Two questions are asked apart:

- *Planning*: does a planner's plan for the instruction match the reference (types, edges, exact
  match, DAG validity; :mod:`punie.planner.metrics`)?
- *Routing*: given the reference plan, how good are the workers an assigner picks? Every assigner
  (the baselines, each single worker, each planner's ``assign``, the hindsight oracle) runs every
  test workflow for ``episodes`` simulated episodes on the same common draws
  (:func:`punie.planner.simulate.draw`), at each ``lam`` of a sweep: success rate, mean cost and
  latency per workflow give each assigner a cost-quality curve, summarised as APGR; at the main
  ``lam``/``mu`` the reward gives "gap closed" between the best single worker and the oracle.

*End to end* a planner plans and assigns: its plan runs on the reference's draws when it executes
(:func:`punie.planner.metrics.executes`), and fails every episode (still costing its assignment)
when it does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from punie import fileio, paths
from punie.errors import ConfigError
from punie.planner.baselines import ASSIGNERS, REFERENCES, Oracle, RulePlanner, SingleAssigner, best_single, strongest
from punie.planner.metrics import PlanCounts, apgr, executes, gap_closed
from punie.planner.protocol import Assigner, PlanningAssigner
from punie.planner.simulate import Draws, Execution, draw, expected, outcomes, replay
from punie.planner.workers import WorkerSet, read_workers
from punie.planner.workflow import Workflow, read_workflows

DEFAULT_LAMS = (0.0, 0.0003, 0.001, 0.002, 0.003, 0.005, 0.01, 0.03)


@dataclass
class EvalSettings:
    lam: float = 0.0  # the price of a cost unit (a local token) in the reward at which rows are compared
    mu: float = 0.0  # the price of a second of latency
    lams: tuple[float, ...] = DEFAULT_LAMS  # the sweep that draws each assigner's cost-quality curve
    episodes: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {self.episodes}")
        if self.lam < 0 or self.mu < 0 or any(x < 0 for x in self.lams):
            raise ValueError(f"lam, mu and the sweep must be >= 0, got lam={self.lam}, mu={self.mu}, lams={self.lams}")


@dataclass
class _Row:
    success: float = 0.0
    cost: float = 0.0
    latency_s: float = 0.0
    expected_success: float = 0.0
    worker_hits: int = 0
    worker_slots: int = 0
    n: int = 0

    def add(self, run: Execution, expected_success: float) -> None:
        self.n += 1
        self.success += run.success
        self.cost += run.cost
        self.latency_s += run.latency_s
        self.expected_success += expected_success

    def summary(self, lam: float, mu: float) -> dict[str, float | None]:
        mean = {k: getattr(self, k) / self.n for k in ("success", "cost", "latency_s", "expected_success")}
        return {**mean, "reward": mean["success"] - lam * mean["cost"] - mu * mean["latency_s"],
                "worker_accuracy": self.worker_hits / self.worker_slots if self.worker_slots else None}


@dataclass
class _Context:
    test: list[Workflow]
    workers: WorkerSet
    draws: dict[str, Draws]
    settings: EvalSettings
    oracle: Oracle = field(default_factory=Oracle)


def _route(ctx: _Context, assigner: Assigner, lam: float, mu: float) -> _Row:
    row = _Row()
    for wf in ctx.test:
        assignment = assigner.assign(wf, ctx.workers, lam, mu)
        row.add(replay(wf, assignment, ctx.workers, ctx.draws[wf.id]), expected(wf, assignment, ctx.workers).success)
        labelled = [s for s in wf.subtasks if s.worker is not None]
        row.worker_slots += len(labelled)
        row.worker_hits += sum(assignment.get(s.id) == s.worker for s in labelled)
    return row


def _route_oracle(ctx: _Context, lam: float, mu: float) -> _Row:
    """The oracle's row: its assignment is chosen per episode, seeing the episode's outcomes."""
    row = _Row()
    for wf in ctx.test:
        wins = cost = latency = 0.0
        runs: dict[tuple[str, ...], Execution] = {}  # few distinct assignments recur over the episodes
        for episode in ctx.draws[wf.id]:
            seen = outcomes(wf, ctx.workers, episode)
            assignment = ctx.oracle.assign(wf, ctx.workers, seen, lam, mu)
            key = tuple(assignment[s.id] for s in wf.subtasks)
            run = runs.get(key) or runs.setdefault(key, expected(wf, assignment, ctx.workers))
            wins += all(seen[i][w] for i, w in assignment.items())
            cost, latency = cost + run.cost, latency + run.latency_s
        n = len(ctx.draws[wf.id])
        row.add(Execution(wins / n, cost / n, latency / n), wins / n)
    return row


@dataclass
class _Planned:
    """A planner's plans for the test instructions: None where it gave no valid plan (and why)."""

    plans: dict[str, Workflow | None]
    invalid: list[dict[str, str]]


def _plan_all(planner: PlanningAssigner, test: Sequence[Workflow]) -> _Planned:
    plans: dict[str, Workflow | None] = {}
    invalid = []
    for wf in test:
        try:
            plans[wf.id] = planner.plan(wf.instruction)
        except ValidationError as exc:  # a plan that is not a DAG (or not a workflow) is scored as invalid
            plans[wf.id] = None
            invalid.append({"workflow": wf.id, "error": str(exc).splitlines()[0][:300]})
    return _Planned(plans, invalid)


def _on_reference_ids(plan: Workflow, reference: Workflow) -> tuple[Workflow, dict[str, str]]:
    """``plan`` (which executes: same types in order) with the reference's subtask ids, so it runs on the
    reference's draws, and the renaming; its own edges are kept (they set its latency)."""
    pred, ref = plan.ordered(), reference.ordered()
    rename = {p.id: r.id for p, r in zip(pred.subtasks, ref.subtasks, strict=True)}
    renamed = Workflow(id=reference.id, instruction=reference.instruction,
                       subtasks=[s.model_copy(update={"id": rename[s.id]}) for s in pred.subtasks],
                       edges=[(rename[a], rename[b]) for a, b in pred.edges])
    return renamed, rename


def _end_to_end(ctx: _Context, planner: PlanningAssigner, planned: _Planned, lam: float, mu: float) -> _Row:
    row = _Row()
    for wf in ctx.test:
        plan = planned.plans[wf.id]
        if plan is None:  # nothing to run: a failure that cost nothing
            row.add(Execution(0.0, 0.0, 0.0), 0.0)
            continue
        assignment = planner.assign(plan, ctx.workers, lam, mu)
        if executes(plan, wf):
            runnable, rename = _on_reference_ids(plan, wf)
            on_ref = {rename[i]: w for i, w in assignment.items()}
            run = replay(runnable, on_ref, ctx.workers, ctx.draws[wf.id])
            row.add(run, expected(runnable, on_ref, ctx.workers).success)
        else:
            run = expected(plan, assignment, ctx.workers)
            row.add(Execution(0.0, run.cost, run.latency_s), 0.0)
    return row


def _with_curve(kind: str, points: dict[float, dict[str, Any]], lam: float) -> dict[str, Any]:
    """The row at the main ``lam`` and its curve over the sweep."""
    return {"kind": kind, **points[lam], "curve": [{"lam": x, **point} for x, point in points.items()]}


def _sweep(settings: EvalSettings) -> list[float]:
    return sorted({*settings.lams, settings.lam})


def evaluate(test: Sequence[Workflow], workers: WorkerSet, train: Sequence[Workflow],
             planners: Sequence[PlanningAssigner] = (), settings: EvalSettings | None = None) -> dict[str, Any]:
    """The results of ``punie planner eval`` as a JSON-ready dict (see :func:`punie.planner.evaluate`)."""
    settings = settings or EvalSettings()
    if not test:
        raise ValueError("evaluate needs at least one test workflow")
    ctx = _Context(list(test), workers, {wf.id: draw(wf, workers, settings.episodes, settings.seed) for wf in test},
                   settings)
    assigners: list[tuple[str, str, Assigner]] = [
        (name, "reference" if name in REFERENCES else "baseline", make(train, settings.seed))
        for name, make in ASSIGNERS.items()]
    assigners += [(f"only:{w.name}", "single", SingleAssigner(w.name)) for w in workers.workers]
    assigners += [(p.name, "planner", p) for p in planners]  # their assign on the reference plans
    lams = _sweep(settings)
    routing: dict[str, dict[str, Any]] = {}
    for name, kind, assigner in assigners:
        points = {lam: _route(ctx, assigner, lam, settings.mu).summary(lam, settings.mu) for lam in lams}
        routing[name] = _with_curve(kind, points, settings.lam)
    oracle = {lam: _route_oracle(ctx, lam, settings.mu).summary(lam, settings.mu) for lam in lams}
    routing["oracle"] = _with_curve("oracle", oracle, settings.lam)
    plans, end_to_end = {}, {}
    for planner in planners:
        planned = _plan_all(planner, test)
        counts = PlanCounts()
        for wf in test:
            counts.add(planned.plans[wf.id], wf)
        plans[planner.name] = {**counts.summary(), "invalid": planned.invalid[:20]}
        points = {lam: _end_to_end(ctx, planner, planned, lam, settings.mu).summary(lam, settings.mu) for lam in lams}
        end_to_end[planner.name] = _with_curve("planner", points, settings.lam)
    return _summarise(ctx, train, routing, plans, end_to_end)


def _summarise(ctx: _Context, train: Sequence[Workflow], routing: dict[str, dict[str, Any]],
               plans: dict[str, Any], end_to_end: dict[str, Any]) -> dict[str, Any]:
    settings, workers = ctx.settings, ctx.workers
    singles = {w.name: routing[f"only:{w.name}"] for w in workers.workers}
    cheapest = min(singles, key=lambda n: (singles[n]["cost"], -singles[n]["success"]))
    strongest_name = max(singles, key=lambda n: (singles[n]["success"], -singles[n]["cost"]))
    ends = ((singles[cheapest]["cost"], singles[cheapest]["success"]),
            (singles[strongest_name]["cost"], singles[strongest_name]["success"]))
    best = best_single(train, workers, settings.lam, settings.mu)
    single_reward, oracle_reward = singles[best]["reward"], routing["oracle"]["reward"]
    for rows in (routing, end_to_end):
        for row in rows.values():
            row["apgr"] = apgr([(p["cost"], p["success"]) for p in row["curve"]], *ends)
            row["gap_closed"] = gap_closed(row["reward"], single_reward, oracle_reward)
    why = None
    if ends[1][0] <= ends[0][0] or ends[1][1] <= ends[0][1]:
        why = (f"the cheapest single worker ({cheapest}) is also the strongest ({strongest_name}) or as good: "
               "there is no cost-quality trade-off between single workers to normalise by")
    return {
        "format": 1, "kind": "planner-eval", "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": asdict(settings) | {"lams": _sweep(settings)},
        "test_workflows": len(ctx.test), "train_workflows": len(train),
        "workers": [w.model_dump(exclude_none=True) for w in workers.workers],
        "single": {"cheapest": cheapest, "strongest": strongest_name, "strongest_by_profile": strongest(workers),
                   "best_single": best, "best_single_reward": single_reward, "oracle_reward": oracle_reward,
                   "apgr_undefined": why},
        "plans": plans, "routing": routing, "end_to_end": end_to_end,
    }


def load_planners(specs: Sequence[str]) -> list[PlanningAssigner]:
    """``rules`` is the keyword planner; anything else a trained planner directory, loaded by
    :func:`punie.planner.model.load_planner` (the learned planner's one loader)."""
    planners: list[PlanningAssigner] = []
    for spec in specs:
        if spec == "rules":
            planners.append(RulePlanner())
            continue
        if not Path(spec).is_dir():
            raise ConfigError(f"planner {spec!r} is neither 'rules' nor a planner directory; train one with "
                              "'punie planner train DATA --output DIR'.")
        from punie.planner.model import load_planner

        planners.append(load_planner(Path(spec)))
    names = [p.name for p in planners]
    if len(set(names)) != len(names):
        raise ConfigError(f"two planners share a name ({', '.join(names)}); evaluate them in separate runs.")
    return planners


def parse_lams(text: str | None) -> tuple[float, ...]:
    if text is None:
        return DEFAULT_LAMS
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--lams {text!r}: expected comma-separated numbers, e.g. 0,0.001,0.01") from None
    if not values or any(v < 0 for v in values):
        raise ConfigError(f"--lams {text!r}: expected one or more numbers >= 0")
    return values


def run_eval(data: Path, workers_path: Path, *, specs: Sequence[str], train: Path | None = None, lam: float = 0.0,
             mu: float = 0.0, lams: str | None = None, episodes: int = 200, seed: int = 0,
             out_dir: Path | None = None, force: bool = False) -> tuple[dict[str, Any], Path]:
    """Read the files, evaluate, write ``out_dir/results.json`` (atomically) and ``report.html``; by default
    into a new ``planner-eval-DATE`` under the runs directory, as ``punie eval`` does."""
    from punie.report.planner_report import write_planner_report

    out = Path(out_dir) if out_dir is not None else paths.new_run_dir("planner-eval")
    if (out / "results.json").exists() and not force:
        raise ConfigError(f"--out {out} already holds results.json; pass --force to replace it, "
                          "or choose another --out.")
    try:
        settings = EvalSettings(lam=lam, mu=mu, lams=parse_lams(lams), episodes=episodes, seed=seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    planners = load_planners(specs)
    train_path = Path(train) if train is not None else Path(data).with_name("train.jsonl")
    test, workers = read_workflows(Path(data)), read_workers(Path(workers_path))
    results = evaluate(test, workers, read_workflows(train_path), planners, settings)
    results["inputs"] = {"data": str(data), "train": str(train_path), "workers": str(workers_path),
                         "planners": list(specs)}
    fileio.write_json(out / "results.json", results)
    return results, write_planner_report(out)
