"""``punie sweep``: train candidates, choose one on the selection suite, test it once; display only, the work
is in punie.sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from punie.cli.console import err, out
from punie.sweep.run import SweepConfig


def _help(name: str) -> str:
    return SweepConfig.model_fields[name].description or ""


def sweep(
    data: Annotated[Path, typer.Argument(help=_help("data"))],
    *,
    select_suite: Annotated[Path, typer.Option(help=_help("select_suite"))],
    output: Annotated[Path, typer.Option("--output", "-o", help=_help("output"))],
    test_suite: Annotated[Path | None, typer.Option(help=_help("test_suite"))] = None,
    grid: Annotated[list[str] | None, typer.Option(
        help="SETTING=VALUE[,VALUE...] of any punie train setting, repeatable or space-separated in one quoted "
             "value: --grid 'rank=8,16 learning_rate=2e-4,5e-4'. One value fixes the setting.")] = None,
    space: Annotated[Path | None, typer.Option(help="YAML/JSON file: setting -> list of values (--grid adds to "
                                                    "and overrides it).")] = None,
    config_file: Annotated[Path | None, typer.Option("-c", "--config", help=_help("train_config"))] = None,
    model: Annotated[str | None, typer.Option(help=_help("model"))] = None,
    method: Annotated[str, typer.Option(help=_help("method"))] = "grid",
    trials: Annotated[int | None, typer.Option(help=_help("trials"))] = None,
    eta: Annotated[int, typer.Option(help=_help("eta"))] = 2,
    seeds: Annotated[int, typer.Option(help=_help("seeds"))] = 1,
    search_seed: Annotated[int, typer.Option(help=_help("search_seed"))] = 0,
    budget_minutes: Annotated[float | None, typer.Option(help=_help("budget_minutes"))] = None,
    reference: Annotated[str | None, typer.Option(help=_help("reference"))] = None,
    max_tokens: Annotated[int, typer.Option(help=_help("max_tokens"))] = 256,
    batch_size: Annotated[int, typer.Option(help=_help("batch_size"))] = 16,
) -> None:
    """Choose training settings by held-out accuracy: train every candidate, pick on --select-suite, test once."""
    from pydantic import ValidationError

    from punie.errors import ConfigError, validation_problems
    from punie.report.eval_report import write_report
    from punie.report.sweep_report import write_sweep_report
    from punie.sweep import sweep as run_sweep
    from punie.sweep.space import parse_grid, read_space_file
    from punie.training import TrainingInterrupted

    searched = (read_space_file(space) if space else {}) | parse_grid(grid or [])
    if not searched:
        raise ConfigError("give the search space: --grid SETTING=V1,V2 (repeatable) or --space FILE.")
    try:
        config = SweepConfig.model_validate(
            {"data": data, "select_suite": select_suite, "test_suite": test_suite, "output": output, "model": model,
             "space": searched, "train_config": config_file, "method": method, "trials": trials, "eta": eta,
             "seeds": seeds, "search_seed": search_seed, "budget_minutes": budget_minutes, "reference": reference,
             "max_tokens": max_tokens, "batch_size": batch_size})
    except ValidationError as exc:
        raise ConfigError("invalid sweep settings: " + "; ".join(validation_problems(exc, dashes=True))) from None
    try:
        result = run_sweep(config, training=_TrainLines(), on_message=lambda text: err.print(text, highlight=False),
                           on_written=write_report)
    except (TrainingInterrupted, KeyboardInterrupt):
        if (output / "summary.json").is_file():
            write_sweep_report(output)
        err.print(f"[yellow]Interrupted.[/] Finished candidates are kept in {output}; rerun the same command to "
                  "continue the sweep.")
        raise SystemExit(130) from None
    report = write_sweep_report(result.output)
    _print_result(result.summary)
    out.print(f"Summary: {result.output / 'summary.json'}\nReport:  {report}")


def _print_result(summary: dict[str, Any]) -> None:
    if summary["budget"]["stopped"]:
        err.print(f"[yellow]Budget:[/] {summary['budget']['message']}.")
    winner = summary["winner"]
    if winner is None:
        out.print("No config was scored on the selection suite.")
        return
    settings = ", ".join(f"{k}={v}" for k, v in winner["settings"].items())
    out.print(f"Winner: {settings} (mean selection accuracy {winner['selection_accuracy']:.1%} over "
              f"{len(winner['candidates'])} seed(s); baseline {summary['baseline']['selection']['accuracy']:.1%})")
    if winner["tied_with"]:
        out.print(f"[yellow]Tied on the selection suite with config(s) {winner['tied_with']}; the first was taken.[/]")
    test = summary.get("test")
    if not test:
        return
    for comp in test["vs_baseline"] + test["winner_vs_reference"]:
        lo, hi = comp["ci95"]
        out.print(f"test: {comp['run']} vs {comp['baseline']} ({comp['n_paired']} cases): "
                  f"{comp['baseline_accuracy']:.1%} -> {comp['accuracy']:.1%} ({comp['delta']:+.1%}, 95% CI "
                  f"{lo:+.1%} to {hi:+.1%}, McNemar p={comp['p_value']:.3g}); {comp['verdict']}")


class _TrainLines:
    """Each candidate's validation losses as lines (a sweep trains many runs; one bar each would scroll away)."""

    def on_report(self, report: dict[str, Any]) -> None:
        if "val_loss" in report:
            err.print(f"  step {report['iteration']}: val loss {report['val_loss']:.3f}", highlight=False)
