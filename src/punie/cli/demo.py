"""``punie demo``: punie's whole loop on the embedded default model, with the headline numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from punie.cli.console import err, out


def demo(
    *,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output directory (default: under runs/).")] = None,
    iters: Annotated[int | None, typer.Option(help="Training iterations (default: the demo recipe's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the demo data and training.")] = 42,
) -> None:
    """Import the default model, record traces, train an adapter, evaluate it against the baseline."""
    from punie.cli.eval import _ProgressBars
    from punie.cli.train import TrainDisplay
    from punie.demo import DEMO_TRAINING, run_demo

    train_display = TrainDisplay(iters or int(DEMO_TRAINING["iters"]))
    eval_bars = _ProgressBars()

    def stage(key: str, text: str) -> None:
        # Each stage owns the terminal's live display while it runs.
        if key == "evaluate":
            train_display.progress.stop()
        elif key == "tasks":
            eval_bars.bars.stop()
        err.print(f"[bold cyan]==>[/] {text}")
        if key == "train":
            train_display.progress.start()
        elif key in ("evaluate", "tasks"):
            eval_bars.bars.start()

    try:
        result = run_demo(out_dir, seed=seed, iters=iters, on_stage=stage, train_callback=train_display,
                          eval_progress=eval_bars)
    finally:
        train_display.progress.stop()
        eval_bars.bars.stop()
    out.print("\n[bold]Baseline vs adapter, SmolLM2-135M-Instruct:[/]")
    out.print("First-step accuracy (is the first tool call, or the direct answer, right?):")
    for h in result.headline["suites"].values():
        _print_headline(h, f"{h['cases']} cases", "")
    tasks = result.headline["tasks"]
    of = f" of {tasks['suite_tasks']}" if tasks["cases"] < tasks["suite_tasks"] else ""
    out.print("Task success (did the whole episode do the job? checks on the real files and output):")
    _print_headline(tasks, f"{tasks['cases']}{of} tasks", " task success")


def _print_headline(h: dict[str, Any], size: str, what: str) -> None:
    comp = h["comparison"]
    out.print(f"[bold]{h['about']}[/] ({size})")
    out.print(f"  baseline{what} {h['baseline_accuracy']:.1%}   adapter{what} {h['adapter_accuracy']:.1%}")
    if comp:
        lo, hi = comp["ci95"]
        out.print(f"  delta {comp['delta'] * 100:+.1f} pp (95% CI {lo * 100:+.1f} to {hi * 100:+.1f}), "
                  f"McNemar exact p = {comp['p_value']:.2g}; {comp['improved']} fixed, {comp['regressed']} broken")
    out.print(f"  report: {h['report']}")
