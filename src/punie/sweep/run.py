"""``sweep(config) -> SweepResult``: choose training settings by held-out accuracy, within a budget.

Order of work: check the suites (a selection suite sharing a prompt with the
test suite or the training data is refused, and so is a test suite sharing one
with the training data), resolve every candidate's settings, and only then
claim ``output``. The base model is scored on the selection suite once; the
reference recipe (``reference``), when given, is trained and scored like a
candidate; then the method's rungs (:mod:`punie.sweep.schedule`) train and
score the configs. The winner is the config with the best mean selection
accuracy over its seeds; the test suite runs once, at the end, on the baseline,
the winner's seeds and the reference's, so its figures were never chosen on.

Layout of ``output``::

    plan.json                  the sweep's settings and candidates (a rerun must match it, and resumes)
    runs/ID/                   each candidate: a punie train run directory (adapter, manifest, metrics)
    selection/baseline/        the base model on the selection suite (an eval output directory)
    selection/ID/step-NNNNNN/  candidate ID on the selection suite after NNNNNN steps
    test/                      the test suite: baseline, winner, reference (results.json, report.html)
    summary.json               every candidate, config and rung; the winner; the test comparisons
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from punie import fileio
from punie.errors import ConfigError, DataError
from punie.sweep import schedule
from punie.sweep.space import Candidate, candidate_id, check_space, configs, resolve_candidate
from punie.sweep.units import (
    Budget,
    evaluate,
    finished_results,
    needs_training,
    run_facts,
    selection_record,
    timed,
    train_to,
)
from punie.training.loop import TrainingCallback, TrainingError
from punie.training.rundir import RunDir

PLAN, SUMMARY = "plan.json", "summary.json"
RUNGS: dict[str, Callable[[int, int], list[schedule.Rung]]] = {
    "grid": lambda n, eta: schedule.one_rung(n),
    "random": lambda n, eta: schedule.one_rung(n),
    "halving": schedule.halving_rungs,
}


def reference_recipes() -> dict[str, dict[str, Any]]:
    """Named recipes ``--reference`` accepts besides a settings file."""
    from punie.demo import DEMO_TRAINING

    return {"defaults": {}, "demo": dict(DEMO_TRAINING)}


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: Path = Field(..., description="Training data directory (train.jsonl, valid.jsonl), as punie train takes.")
    select_suite: Path = Field(..., description="Suite the winner is chosen on (held out from training and test).")
    test_suite: Path | None = Field(None, description="Suite run once at the end on baseline, winner and reference.")
    output: Path = Field(..., description="Sweep directory; rerun the same command to resume it.")
    model: str | None = Field(None, description="Base model: 'default', a model directory, or a repo id.")
    space: dict[str, list[Any]] = Field(default_factory=dict, description="Setting -> values to try.")
    train_config: Path | None = Field(None, description="YAML file of punie train settings every candidate shares.")
    method: Literal["grid", "random", "halving"] = Field("grid", description="grid (every config), random "
                                                         "(--trials of them) or halving (successive halving).")
    trials: int | None = Field(None, ge=1, description="Configs drawn by --method random (default: all).")
    eta: int = Field(2, ge=2, description="Halving keeps the best 1/eta of the configs at each rung.")
    seeds: int = Field(1, ge=1, description="Seeds per config (seed, seed+1, ...); a config scores their mean.")
    search_seed: int = Field(0, description="Seed of --method random's draw.")
    budget_minutes: float | None = Field(None, gt=0, description="Start no training or eval that would end past "
                                                                 "this many minutes of this invocation.")
    reference: str | None = Field(None, description="A recipe to compare the winner with on the test suite: "
                                                    "'demo', 'defaults' or a YAML file of train settings.")
    max_tokens: int = Field(256, ge=1, description="Tokens generated per selection/test case.")
    batch_size: int = Field(16, ge=1, description="Cases generated together in the evals.")

    @model_validator(mode="after")
    def _trials_are_random(self) -> SweepConfig:
        if self.trials is not None and self.method != "random":
            raise ValueError(f"trials draws configs for method 'random', got method {self.method!r}")
        return self


@dataclass
class SweepResult:
    output: Path
    summary: dict[str, Any]


def sweep(config: SweepConfig, *, training: TrainingCallback | None = None,
          on_message: Callable[[str], None] | None = None,
          on_written: Callable[[Path], object] | None = None) -> SweepResult:
    """Run (or resume) the sweep; summary.json is rewritten after every unit of work, so Ctrl-C keeps it.

    ``training`` hears every candidate's training reports, ``on_message`` one line per step of the sweep,
    ``on_written(test_dir)`` runs when the test suite's results.json is written (the CLI renders its report).
    """
    check_space(config.space)
    _check_suites(config)
    grid = configs(config.space, config.method, config.trials, config.search_seed)
    plan = plan_candidates(config, grid)
    out = _claim(config, plan.candidates + plan.reference)
    state = SweepState(config, out, grid, plan, training, on_message or (lambda _text: None))
    state.on_written = on_written
    try:
        state.run()
    finally:
        state.write()
    return SweepResult(out, state.summary)


def _check_suites(config: SweepConfig) -> None:
    from punie.eval.overlap import check_disjoint, data_prompts, suite_prompts
    from punie.eval.suite import load_suite

    train_file = config.data / "train.jsonl"
    if not train_file.is_file():
        raise DataError(f"{config.data} has no train.jsonl; DATA_DIR is a punie train data directory.")
    trained = data_prompts(train_file)
    select = load_suite(config.select_suite)
    check_disjoint(select.cases, config.select_suite, trained, train_file,
                   what="a selection suite must be held out from training")
    if config.test_suite is not None:
        test = load_suite(config.test_suite)
        check_disjoint(select.cases, config.select_suite, suite_prompts(test.cases), config.test_suite,
                       what="choosing on test cases would make the test figure a selected one; use disjoint suites")
        check_disjoint(test.cases, config.test_suite, trained, train_file,
                       what="a test suite must be held out from training")


@dataclass
class Plan:
    candidates: list[Candidate]  # the search's
    reference: list[Candidate]  # the reference recipe's, trained besides the search (empty when it is a config)
    reference_config: int | None  # the search config the reference recipe is, if it is one


def plan_candidates(config: SweepConfig, grid: list[dict[str, Any]]) -> Plan:
    """Every candidate of the search, and the reference recipe's (none when it is one of the search's configs)."""
    base_seed = resolve_candidate({}, config.train_config, {}, _fixed(config, Path("."))).seed
    varied = [k for k, values in config.space.items() if len(values) > 1]

    def make(index: int, settings: dict[str, Any], recipe: dict[str, Any], name: str | None = None) -> list[Candidate]:
        made = []
        for seed in range(base_seed, base_seed + config.seeds):
            cid = f"{name}-seed{seed}" if name else candidate_id(index, settings, seed, varied)
            train = resolve_candidate(recipe, config.train_config, settings,
                                      _fixed(config, config.output / "runs" / cid) | {"seed": seed})
            made.append(Candidate(cid, index, settings, seed, train))
        return made

    candidates = [c for i, settings in enumerate(grid) for c in make(i, settings, {})]
    if config.reference is None:
        return Plan(candidates, [], None)
    recipe = _reference_settings(config.reference)
    reference = make(-1, recipe, recipe, "reference")
    same = next((c.config_index for c in candidates if _same_training(c, reference[0])), None)
    return Plan(candidates, [] if same is not None else reference, same)


def _fixed(config: SweepConfig, output: Path) -> dict[str, Any]:
    return {"data": config.data, "model": config.model, "output": output}


def _reference_settings(reference: str) -> dict[str, Any]:
    from punie.training.config import read_config_file

    recipes = reference_recipes()
    if reference in recipes:
        return recipes[reference]
    path = Path(reference)
    if not path.is_file():
        raise ConfigError(f"--reference {reference!r} is neither a recipe ({', '.join(recipes)}) nor a settings file.")
    return read_config_file(path)


def _same_training(a: Candidate, b: Candidate) -> bool:
    def key(c: Candidate) -> dict[str, Any]:
        return json.loads(c.train.model_copy(update={"output": None}).model_dump_json())

    return key(a) == key(b)


def _fingerprint(config: SweepConfig, candidates: list[Candidate]) -> dict[str, Any]:
    """What a rerun must share with the sweep it resumes (the budget may change)."""
    from punie.eval.suite import load_suite

    suites = {name: {"path": str(path), "sha256": load_suite(path).sha256}
              for name, path in (("select", config.select_suite), ("test", config.test_suite)) if path is not None}
    settings = json.loads(config.model_dump_json(exclude={"budget_minutes"}))
    return {"settings": settings, "suites": suites,
            "candidates": [{"id": c.id, "train": json.loads(c.train.model_dump_json())} for c in candidates]}


def _claim(config: SweepConfig, candidates: list[Candidate]) -> Path:
    out = config.output
    plan = _fingerprint(config, candidates)
    if (out / PLAN).is_file():
        saved = json.loads((out / PLAN).read_text())
        if saved != plan:
            differ = sorted(k for k in plan if saved.get(k) != plan[k])
            raise ConfigError(f"{out} holds a different sweep ({', '.join(differ)} differ); rerun it with the "
                              "same options to resume it, or choose a new --output.")
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--output {out} exists and holds no punie sweep; choose a new directory.")
    fileio.write_json(out / PLAN, plan)
    return out


class SweepState:
    """One invocation's work on a claimed sweep directory, and the summary it keeps."""

    def __init__(self, config: SweepConfig, out: Path, grid: list[dict[str, Any]], plan: Plan,
                 training: TrainingCallback | None, say: Callable[[str], None]):
        self.config, self.out, self.grid, self.training, self.say = config, out, grid, training, say
        self.candidates, self.reference, self.reference_config = plan.candidates, plan.reference, plan.reference_config
        self.by_config: dict[int, list[Candidate]] = {}
        for c in self.candidates:
            self.by_config.setdefault(c.config_index, []).append(c)
        self.budget = Budget(config.budget_minutes)
        self.records: dict[str, dict[str, Any]] = {c.id: _record(c) for c in self.candidates + self.reference}
        self._carry_over()
        self.history: list[schedule.RungResult] = []
        self.summary: dict[str, Any] = {}
        self.status, self.stopped = "running", ""
        self.baseline: dict[str, Any] | None = None
        self.test: dict[str, Any] | None = None
        self.winner: int | None = None
        self.on_written: Callable[[Path], object] | None = None

    def run(self) -> None:
        self.say(f"{len(self.grid)} config(s) x {self.config.seeds} seed(s) = {len(self.candidates)} candidate(s), "
                 f"method {self.config.method}; output {self.out}")
        try:
            baseline = self._evaluate(None, self.out / "selection" / "baseline", 0)
            self.baseline = baseline
            self.say(f"baseline on {self.config.select_suite}: {baseline['accuracy']:.1%}")
            self._reference()
            rungs = RUNGS[self.config.method](len(self.grid), self.config.eta)
            self.history, self.stopped = schedule.run_rungs(len(self.grid), rungs, self._score_config)
            if self.stopped:
                self.say(f"Budget: {self.stopped}.")
            self.winner = schedule.winner(self.history)
            if self.winner is not None and self.config.test_suite is not None:
                self.test = self._test()
            self.status = "budget" if self.stopped else "complete"
        except BaseException:  # Ctrl-C or an error: summary.json says the sweep did not finish
            self.status = "interrupted"
            raise

    # ---- units of work -----------------------------------------------------------------------------------------
    def _unit(self, candidate: Candidate, steps: int) -> float | None:
        """Train ``candidate`` to ``steps`` and score it on the selection suite; None when it failed.

        A score already on disk for these steps is the rung's score, whatever the run has trained since."""
        record, run = self.records[candidate.id], RunDir(candidate.train.output_dir())
        scored = finished_results(self._selection_dir(candidate, steps))
        if scored is not None:
            return self._scored(candidate, selection_record(scored, self._selection_dir(candidate, steps), steps),
                                " (scored before)")
        if record.get("error") or run.status() == "failed":
            record["error"] = record.get("error") or "training failed (see its manifest.json)"
            return None
        if needs_training(run, steps):
            before = run_facts(run)["steps"] or 0
            self.budget.check(steps - before, f"training {candidate.id} to step {steps}")
            self.say(f"train {candidate.id} " + (f"from step {before} " if before else "") + f"to step {steps}")
            try:
                _, seconds = timed(lambda: train_to(candidate, steps, self.training))
            except (TrainingError, ConfigError) as exc:  # a diverging or impossible config (--num-layers past
                # the model's) is that candidate's result, not the end of the sweep
                record |= run_facts(run) | {"error": str(exc)}
                self.say(f"{candidate.id} failed: {exc}")
                self.write()
                return None
            self.budget.record((run_facts(run)["steps"] or 0) - before, seconds, None)
            record["wall_s"]["train"] += seconds
        done = run_facts(run)["steps"] or 0
        if done > steps:  # only a run that stopped early may fall short; none may be past its rung
            raise DataError(f"{run.path} has trained {done} steps, past the {steps} this rung scores, and holds no "
                            f"selection score at step {steps}; start the sweep again in a new --output.")
        out = self._selection_dir(candidate, done)
        return self._scored(candidate, self._evaluate(run.path, out, done, record))

    def _selection_dir(self, candidate: Candidate, steps: int) -> Path:
        return self.out / "selection" / candidate.id / f"step-{steps:06d}"

    def _scored(self, candidate: Candidate, scored: dict[str, Any], note: str = "") -> float:
        record = self.records[candidate.id]
        record |= run_facts(RunDir(candidate.train.output_dir()))
        record["selection"] = [s for s in record["selection"] if s["steps"] != scored["steps"]] + [scored]
        record["selection"].sort(key=lambda s: s["steps"])
        self.say(f"{candidate.id} at step {scored['steps']}: {scored['accuracy']:.1%} on the selection suite{note}")
        self.write()
        return float(scored["accuracy"])

    def _evaluate(self, adapter: Path | None, out: Path, steps: int,
                  record: dict[str, Any] | None = None) -> dict[str, Any]:
        """Score ``adapter`` on the selection suite (reusing a finished score); its seconds go to ``record``."""
        fresh = not (out / "results.json").is_file()
        if fresh:
            self.budget.check(0, f"scoring {adapter.name if adapter else 'the baseline'} on the selection suite")
        results, seconds = timed(lambda: evaluate(self.config.select_suite, adapter, out, model=self.config.model,
                                                  max_tokens=self.config.max_tokens,
                                                  batch_size=self.config.batch_size))
        if results is None:
            raise KeyboardInterrupt
        if fresh:
            self.budget.record(0, 0.0, seconds)
            if record is not None:
                record["wall_s"]["eval"] = record["wall_s"].get("eval", 0.0) + seconds
        return selection_record(results, out, steps)

    def _score_config(self, index: int, rung: schedule.Rung) -> float | None:
        scores = []
        for candidate in self.by_config[index]:
            steps = schedule.rung_steps(candidate.train.iters, rung.fraction, candidate.train.grad_accumulation)
            scores.append(self._unit(candidate, steps))
        self.write()
        return None if None in scores else sum(s for s in scores if s is not None) / len(scores)

    def _reference(self) -> None:
        for candidate in self.reference:
            try:
                self._unit(candidate, candidate.train.iters)
            except schedule.OutOfBudget as stop:
                self.say(f"Budget: {stop}; the reference is left out.")
                return

    def _test(self) -> dict[str, Any]:
        from punie.sweep.final import evaluate_test

        assert self.winner is not None and self.config.test_suite is not None
        winners = self.by_config[self.winner]
        reference = self.by_config.get(self.reference_config, []) if self.reference_config is not None else [
            r for r in self.reference if self.records[r.id]["selection"]]
        self.say(f"test suite {self.config.test_suite}: baseline, {len(winners)} winner run(s)"
                 + (f", {len(reference)} reference run(s)" if reference else ""))
        return evaluate_test(self.config, self.out / "test", winners, reference, self.on_written)

    def _carry_over(self) -> None:
        """What an earlier invocation measured (its wall times, its failures) is kept in the new summary."""
        path = self.out / SUMMARY
        if not path.is_file():
            return
        for old in json.loads(path.read_text()).get("candidates", []):
            if old.get("id") in self.records:
                record = self.records[old["id"]]
                record["wall_s"] = old.get("wall_s", record["wall_s"])
                record["selection"] = old.get("selection", [])
                if old.get("error"):
                    record["error"] = old["error"]

    def write(self) -> None:
        from punie.sweep.summary import build_summary

        for candidate in self.candidates + self.reference:  # how far each run got, also one Ctrl-C stopped
            run = RunDir(candidate.train.output_dir())
            if run.manifest_file.is_file():
                self.records[candidate.id] |= run_facts(run)
        self.summary = build_summary(self)
        fileio.write_json(self.out / SUMMARY, self.summary)


def _record(c: Candidate) -> dict[str, Any]:
    return {"id": c.id, "config": c.config_index, "settings": c.settings, "seed": c.seed,
            "adapter": str(c.train.output_dir()), "selection": [], "wall_s": {"train": 0.0, "eval": 0.0}}
