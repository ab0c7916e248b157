"""``punie improve``: sample drafts, pair them, DPO, evaluate; display only, the work is in punie.dpo.improve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from punie.cli.console import err, out
from punie.dpo.config import DPOConfig
from punie.dpo.improve import ImproveConfig


def _help(name: str) -> str:
    return ImproveConfig.model_fields[name].description or ""


def improve(
    *,
    eval_suite: Annotated[list[Path], typer.Option(help=_help("eval_suite"))],
    output: Annotated[Path, typer.Option("--output", "-o", help=_help("output"))],
    suite: Annotated[Path | None, typer.Option(help=_help("suite"))] = None,
    suite_from_data: Annotated[Path | None, typer.Option(help=_help("suite_from_data"))] = None,
    model: Annotated[str | None, typer.Option(help=_help("model"))] = None,
    adapter: Annotated[Path | None, typer.Option(help=_help("adapter"))] = None,
    rounds: Annotated[int | None, typer.Option(help=_help("rounds"))] = None,
    k: Annotated[int | None, typer.Option("--k", help=_help("k"))] = None,
    temperature: Annotated[float | None, typer.Option(help=_help("temperature"))] = None,
    top_p: Annotated[float | None, typer.Option(help=_help("top_p"))] = None,
    seed: Annotated[int | None, typer.Option(help=_help("seed"))] = None,
    max_tokens: Annotated[int | None, typer.Option(help=_help("max_tokens"))] = None,
    batch_size: Annotated[int | None, typer.Option(help=_help("batch_size"))] = None,
    reference_answers: Annotated[bool | None, typer.Option(help=_help("reference_answers"))] = None,
    allow_imbalance: Annotated[bool | None, typer.Option(help=_help("allow_imbalance"))] = None,
    downsample: Annotated[bool | None, typer.Option(help=_help("downsample"))] = None,
    max_ratio: Annotated[float | None, typer.Option(help=_help("max_ratio"))] = None,
    balance: Annotated[str | None, typer.Option(help=_help("balance"))] = None,
    drafts: Annotated[Path | None, typer.Option(help=_help("drafts"))] = None,
    iters: Annotated[int | None, typer.Option(help="DPO iterations per round (punie dpo --iters).")] = None,
    beta: Annotated[float | None, typer.Option(help="DPO beta (punie dpo --beta).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="DPO learning rate (punie dpo --learning-rate).")] = None,
    loss: Annotated[str | None, typer.Option(help="Preference loss (punie dpo --loss).")] = None,
    dpop_lambda: Annotated[float | None, typer.Option(help="lambda of the dpop loss (punie dpo "
                                                           "--dpop-lambda).")] = None,
    dpo_batch_size: Annotated[int | None, typer.Option(help="Pairs per DPO batch (punie dpo --batch-size).")] = None,
    keep: Annotated[str | None, typer.Option(help="Which DPO weights each round's adapter holds: best (lowest "
                                                  "validation loss) or last (punie dpo --keep).")] = None,
    sft_weight: Annotated[float | None, typer.Option(help="Weight of the chosen replies' NLL added to the loss "
                                                         "(punie dpo --sft-weight).")] = None,
) -> None:
    """Self-improvement: sample, score and pair drafts on --suite, DPO, then START vs new on --eval-suite."""
    from punie.dpo.improve import improve as run_improve
    from punie.report.eval_report import write_report
    from punie.training import TrainingInterrupted
    from punie.training.config import resolve_settings

    dpo = {"iters": iters, "beta": beta, "learning_rate": learning_rate, "loss": loss, "batch_size": dpo_batch_size,
           "sft_weight": sft_weight, "keep": keep, "dpop_lambda": dpop_lambda}
    given: dict[str, Any] = {k: v for k, v in locals().items() if k in ImproveConfig.model_fields and v is not None}
    given["dpo"] = {k: v for k, v in dpo.items() if v is not None}
    config = resolve_settings(ImproveConfig, given, None)
    bar = Progress(TextColumn("[bold]drafts"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err)
    task = bar.add_task("drafts", total=None)
    try:
        with bar:
            result = run_improve(config, on_round=_print_round, on_written=write_report,
                                 on_draft=lambda done, total: bar.update(task, completed=done, total=total),
                                 training=_DPOReports(config.dpo.get("iters", DPOConfig.model_fields["iters"].default)))
    except (TrainingInterrupted, KeyboardInterrupt):
        err.print(f"[yellow]Interrupted.[/] What finished is in {output} (improve.json lists the rounds); "
                  "punie improve does not resume: start again with a new --output.")
        raise SystemExit(130) from None
    for r in result.rounds:
        if r.get("downsampled"):
            dropped = ", ".join(f"{n} {category!r}" for category, n in r["downsampled"].items())
            err.print(f"Round {r['round']}: --downsample dropped {dropped} training pair(s) to keep the categories "
                      f"within {config.max_ratio:g}:1.")
        if r.get("downsampled_decisions"):
            dropped = ", ".join(f"{n} {pair!r}" for pair, n in r["downsampled_decisions"].items())
            err.print(f"Round {r['round']}: --downsample dropped {dropped} (chosen -> rejected decision) training "
                      f"pair(s) to keep each decision within {config.max_ratio:g}:1 as the chosen and the "
                      "rejected side.")
    for warning in (w for r in result.rounds for w in r["balance_warnings"]):
        err.print(f"[yellow]Trained anyway (--allow-imbalance):[/] {warning}")
    for comp in result.comparisons:
        out.print(f"{comp['run']} vs {comp['baseline']} on {comp['suite']} ({comp['n_paired']} cases): "
                  f"{comp['baseline_accuracy']:.1%} -> {comp['accuracy']:.1%} ({comp['delta']:+.1%}, "
                  f"{comp['improved']} improved, {comp['regressed']} regressed, McNemar p={comp['p_value']:.3g}); "
                  f"{comp['verdict']}")
        for category, row in comp["by_category"].items():
            out.print(f"  {category}: {row['baseline_accuracy']:.1%} -> {row['accuracy']:.1%} (n={row['n']})")
        if comp.get("note"):
            out.print(f"  [yellow]{comp['note']}[/]")
    out.print(f"Adapter: {result.adapters[-1]}")
    for eval_dir in result.eval_dirs:
        out.print(f"Report:  {eval_dir / 'report.html'}")


def _print_round(n: int, record: dict[str, Any]) -> None:
    no_pair = ", ".join(f"{count} {reason}" for reason, count in record["no_pair"].items())
    reference = f" ({record['from_reference']} with the reference answer)" if record["from_reference"] else ""
    err.print(f"Round {n}: {record['pairs']} case(s) gave pairs{reference}; no pair: {no_pair}.")


class _DPOReports:
    """Each round's DPO progress as one line per report (the drafts' bar stays on screen)."""

    def __init__(self, iters: int):
        self.iters = iters

    def on_report(self, report: dict[str, Any]) -> None:
        if "loss" in report:
            err.print(f"dpo step {report['iteration']}/{self.iters}: loss {report['loss']:.3f}, "
                      f"acc {report['accuracy']:.2f}, margin {report['margins']:.2f}")
        elif "val_loss" in report:
            err.print(f"dpo step {report['iteration']}: val loss {report['val_loss']:.3f}, "
                      f"val accuracy {report['val_accuracy']:.2f}")
