"""The demo: punie's whole loop on the embedded default model.

import the model -> record agent traces (a scripted policy driving the real
tools on the sample workspace) -> export them as training data -> train a LoRA
adapter -> evaluate baseline vs adapter on three held-out first-step suites (the
sample workspace's held-out files; projects never trained on; other agents' tools
with questions that need none) and on the held-out task suite (whole episodes on
projects never trained on, judged by checks on the real files) -> an HTML report each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from punie import fileio, paths

# The demo recipe for SmolLM2-135M on this data; measured results (and their seed dependence) are in README.md.
DEMO_TRAINING: dict[str, Any] = {"iters": 120, "batch_size": 4, "num_layers": 8, "rank": 8, "learning_rate": 5e-4,
                 "warmup": 10, "lr_schedule": "cosine", "steps_per_eval": 40, "steps_per_report": 10,
                 "val_batches": 5, "save_every": 40}
DEMO_MAX_TOKENS = 64  # a first tool call or a short answer fits; rambling past it changes no score
# Task episodes: a tool call, or a final answer quoting a few lines of a file or of command output.
DEMO_TASK_MAX_TOKENS = 160
# Tasks of tasks.jsonl the demo runs (evenly spread over its categories), to keep the demo's time reasonable;
# the whole suite is `punie eval --tasks data/agent/tasks.jsonl` (README.md, "What it measured").
DEMO_TASKS = 24


@dataclass
class DemoResult:
    out: Path
    model: str
    adapter: Path
    results: Any  # punie.eval.EvalResults of the in-workspace suite
    headline: dict[str, Any]


def default_out() -> Path:
    return paths.runs_dir() / f"demo-{datetime.now():%Y%m%d-%H%M%S}"


def run_demo(out: Path | None = None, *, seed: int = 42, iters: int | None = None,
             on_stage: Callable[[str, str], None] | None = None, train_callback: Any = None,
             eval_progress: Callable[[Any], None] | None = None, eval_cases: int | None = None,
             tasks: int | None = DEMO_TASKS) -> DemoResult:
    """Run the whole loop into ``out``; ``eval_cases`` evaluates an evenly spread subset of each first-step
    suite (for quick checks), ``tasks`` one of the task suite (None: every task)."""
    from punie.eval import run_eval
    from punie.models import registry
    from punie.models.loading import load_tokenizer
    from punie.report.eval_report import write_report
    from punie.traces import demo_data
    from punie.training import TrainConfig, train

    def stage(key: str, text: str) -> None:
        if on_stage is not None:
            on_stage(key, text)

    out = Path(out) if out is not None else default_out()
    out.mkdir(parents=True, exist_ok=True)
    stage("import", "Importing the default model (first run only)")
    model = str(registry.pull_default())
    stage("traces", "Recording agent traces and exporting training data")
    data = demo_data.generate(out / "data", seed=seed, tokenizer=load_tokenizer(model))
    stage("train", f"Training a LoRA adapter on {data.export.examples.get('train', '?')} examples")
    settings: dict[str, Any] = DEMO_TRAINING | ({"iters": iters} if iters else {}) | {"seed": seed}
    config = TrainConfig(data=out / "data", model=model, output=out / "adapter", **settings)
    trained = train(config, train_callback)
    total = sum(data.suites[name] for name in demo_data.SUITES)
    stage("evaluate", f"Evaluating baseline and adapter on {len(demo_data.SUITES)} held-out suites ({total} cases)")
    suites: dict[str, Any] = {}
    main_results = None
    for name in demo_data.SUITES:
        suite = data.files[name] if eval_cases is None else _subset(data.files[name], eval_cases)
        eval_dir = out / _EVAL_DIRS[name]
        results = run_eval(suite, model=model, adapters=[trained.output], out_dir=eval_dir,
                           max_tokens=DEMO_MAX_TOKENS, progress=eval_progress, on_written=write_report)
        suites[name] = _suite_headline(results.to_dict()) | {"about": demo_data.SUITES[name],
                                                              "report": str(eval_dir / "report.html")}
        main_results = main_results or results
    stage("tasks", "Running baseline and adapter episodes on the held-out task suite")
    task_headline = _run_tasks(data.files[TASK_SUITE], model, trained.output, out / "eval-tasks", tasks,
                               eval_progress)
    headline = {"suites": suites, "tasks": task_headline, "train_steps": trained.steps,
                "best_val_loss": trained.best_val_loss}
    fileio.write_json(out / "demo.json", headline)
    return DemoResult(out=out, model=model, adapter=trained.output, results=main_results, headline=headline)


# Where each suite's results and report go; the in-workspace suite keeps the directory it always had.
_EVAL_DIRS = {"suite": "eval", "suite-projects": "eval-projects", "suite-notool": "eval-notool"}


TASK_SUITE = "tasks"


def _run_tasks(path: Path, model: str, adapter: Path, out: Path, n: int | None,
               progress: Callable[[Any], None] | None) -> dict[str, Any]:
    """Task success, baseline vs adapter, on ``n`` tasks of the held-out task suite (all when None)."""
    from punie.eval.task_eval import run_task_eval
    from punie.report.eval_report import write_report

    total = sum(1 for line in path.read_text().splitlines() if line.strip())
    suite = path if n is None or n >= total else _subset(path, n)
    results = run_task_eval(suite, model=model, adapters=[adapter], out_dir=out, max_tokens=DEMO_TASK_MAX_TOKENS,
                            progress=progress, on_written=write_report)
    return _suite_headline(results.to_dict()) | {
        "about": "held-out task suite: whole episodes on projects never trained on, judged by checks",
        "suite_tasks": total, "report": str(out / "report.html")}


def _subset(suite: Path, n: int) -> Path:
    lines = [line for line in suite.read_text().splitlines() if line.strip()]
    step = max(len(lines) // max(n, 1), 1)
    subset = suite.with_name(f"{suite.stem}-{n}.jsonl")
    fileio.write_text(subset, "".join(line + "\n" for line in lines[::step][:n]))
    return subset


def _suite_headline(data: dict[str, Any]) -> dict[str, Any]:
    runs = {r["name"]: r["summary"] for r in data["runs"]}
    baseline: dict[str, Any] = runs.get("baseline", {})
    adapter: dict[str, Any] = next((s for name, s in runs.items() if name != "baseline"), {})
    return {"cases": data["suite"]["cases"], "baseline_accuracy": baseline.get("accuracy"),
            "adapter_accuracy": adapter.get("accuracy"),
            "comparison": data["comparisons"][0] if data["comparisons"] else {}}
