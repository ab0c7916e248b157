"""One candidate's work: train it to a step count (resuming what an earlier sweep left), score it on the
selection suite, and the budget that decides whether it may start.

Everything is read back from the run directory (its manifest says how far it
trained and how it ended) and from the selection results on disk, so a rerun
of a sweep redoes nothing that finished, and a candidate Ctrl-C stopped
continues from its last checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from punie.eval import stats
from punie.sweep.schedule import OutOfBudget
from punie.sweep.space import Candidate
from punie.training.loop import TrainingCallback
from punie.training.rundir import RunDir

FINISHED = ("completed", "early_stopped")  # nothing more to train, whatever the step count asked


def trained_steps(run: RunDir) -> tuple[int, str | None]:
    """(steps the run has trained, its status) from its manifest; (0, None) when it has not started."""
    manifest = run.read_manifest()
    if manifest is None:
        return 0, None
    checkpoint = run.latest_checkpoint()
    steps = (manifest.get("metrics") or {}).get("steps") or (checkpoint.step if checkpoint else 0)
    return int(steps), run.status()


def needs_training(run: RunDir, steps: int) -> bool:
    done, status = trained_steps(run)
    return not (status in FINISHED or (status == "paused" and done >= steps))


def train_to(candidate: Candidate, steps: int, callback: TrainingCallback | None) -> None:
    """Train (or continue) ``candidate`` until ``steps``, pausing there when that is short of its iters."""
    import mlx.core as mx

    from punie.training import train

    run = RunDir(candidate.train.output_dir())
    started = run.read_manifest() is not None
    mx.reset_peak_memory()  # the process trains one candidate after another: each reports its own peak
    train(candidate.train, callback, resume=started, until=steps if steps < candidate.train.iters else None)


def run_facts(run: RunDir) -> dict[str, Any]:
    """What summary.json records of a training run: steps, status, time, speed, peak memory."""
    manifest = run.read_manifest() or {}
    metrics = manifest.get("metrics") or {}
    peaks = [m["peak_memory_gb"] for m in run.read_metrics(lenient=True) if "peak_memory_gb" in m]
    return {"status": run.status(), "steps": metrics.get("steps"), "train_seconds": metrics.get("train_seconds"),
            "tokens_per_second": metrics.get("tokens_per_second"), "best_val_loss": metrics.get("best_val_loss"),
            "peak_memory_gb": max(peaks) if peaks else None}


def selection_record(results: dict[str, Any], path: Path, steps: int) -> dict[str, Any]:
    """One run's selection score (first run of a results.json) with its Wilson 95% interval."""
    summary = results["runs"][0]["summary"]
    return {"steps": steps, "accuracy": summary["accuracy"], "passed": summary["passed"], "n": summary["n"],
            "ci95": list(stats.wilson_interval(summary["passed"], summary["n"])), "results": str(path)}


def finished_results(out: Path) -> dict[str, Any] | None:
    """The results.json in ``out`` when every run in it finished (None otherwise)."""
    from punie.eval import read_results

    if not (out / "results.json").is_file():
        return None
    done = read_results(out)
    complete = not done.get("interrupted") and all(r["summary"].get("complete") for r in done["runs"])
    return done if complete else None


def evaluate(suite: Path, adapter: Path | None, out: Path, *, model: str | None, max_tokens: int,
             batch_size: int) -> dict[str, Any] | None:
    """The adapter (the base model when None) on ``suite`` into ``out``; reuses finished results.
    Returns results.json's content; None when Ctrl-C stopped it (its finished cases are kept)."""
    from punie.eval import run_eval

    done = finished_results(out)
    if done is not None:
        return done
    results = run_eval(suite, model=model, adapters=[adapter] if adapter else [], max_tokens=max_tokens,
                       out_dir=out, batch_size=batch_size, force=(out / "results.json").exists(),
                       baseline=adapter is None)
    return None if results.interrupted else results.to_dict()


@dataclass
class Budget:
    """Wall-clock minutes for this invocation; a unit of work may start only if its estimate fits.

    The estimate is the seconds per training step and per selection eval measured so far (None before the
    first measurement: the first unit always starts, as nothing tells what it costs).
    """

    minutes: float | None
    start: float = field(default_factory=time.perf_counter)
    train_s: float = 0.0
    steps: int = 0
    evals: list[float] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def record(self, steps: int, train_s: float, eval_s: float | None) -> None:
        if steps > 0:
            self.steps, self.train_s = self.steps + steps, self.train_s + train_s
        if eval_s is not None:
            self.evals.append(eval_s)

    def estimate(self, steps: int) -> float | None:
        if not self.steps and not self.evals:
            return None
        per_step = self.train_s / self.steps if self.steps else 0.0
        return per_step * steps + (sum(self.evals) / len(self.evals) if self.evals else 0.0)

    def check(self, steps: int, what: str) -> None:
        """OutOfBudget when ``what`` (``steps`` to train, then an eval) would end past the budget."""
        if self.minutes is None:
            return
        guess = self.estimate(steps)
        limit = self.minutes * 60
        if guess is not None and self.elapsed() + guess > limit:
            raise OutOfBudget(f"the budget of {self.minutes:g} min would be exceeded: {self.elapsed() / 60:.1f} min "
                              f"spent, {what} would take about {guess / 60:.1f} min more; it was not started")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    tic = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - tic
