"""``punie dpo``: preference training with live progress; display only, the work is in punie.dpo."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from punie.cli.console import err, out
from punie.dpo.config import DPOConfig


def _help(name: str) -> str:
    return DPOConfig.model_fields[name].description or ""


def dpo(
    data: Annotated[Path, typer.Argument(metavar="DATA_DIR", help=_help("data"))],
    *,
    config_file: Annotated[Path | None, typer.Option("-c", "--config", help="YAML file of settings.")] = None,
    model: Annotated[str | None, typer.Option(help=_help("model"))] = None,
    adapter: Annotated[Path | None, typer.Option(help=_help("adapter"))] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help=_help("output"))] = None,
    loss: Annotated[str | None, typer.Option(help=_help("loss"))] = None,
    beta: Annotated[float | None, typer.Option(help=_help("beta"))] = None,
    beta_schedule: Annotated[str | None, typer.Option(help=_help("beta_schedule"))] = None,
    label_smoothing: Annotated[float | None, typer.Option(help=_help("label_smoothing"))] = None,
    dr_beta: Annotated[float | None, typer.Option(help=_help("dr_beta"))] = None,
    dpop_lambda: Annotated[float | None, typer.Option(help=_help("dpop_lambda"))] = None,
    sft_weight: Annotated[float | None, typer.Option(help=_help("sft_weight"))] = None,
    drop_noisy: Annotated[float | None, typer.Option(help=_help("drop_noisy"))] = None,
    fine_tune_type: Annotated[str | None, typer.Option(help=_help("fine_tune_type"))] = None,
    rank: Annotated[int | None, typer.Option(help=_help("rank"))] = None,
    alpha: Annotated[float | None, typer.Option(help=_help("alpha"))] = None,
    scale: Annotated[float | None, typer.Option(help=_help("scale"))] = None,
    dropout: Annotated[float | None, typer.Option(help=_help("dropout"))] = None,
    num_layers: Annotated[int | None, typer.Option(help=_help("num_layers"))] = None,
    learning_rate: Annotated[float | None, typer.Option(help=_help("learning_rate"))] = None,
    lr_schedule: Annotated[str | None, typer.Option(help=_help("lr_schedule"))] = None,
    warmup: Annotated[int | None, typer.Option(help=_help("warmup"))] = None,
    iters: Annotated[int | None, typer.Option(help=_help("iters"))] = None,
    batch_size: Annotated[int | None, typer.Option(help=_help("batch_size"))] = None,
    max_seq_length: Annotated[int | None, typer.Option(help=_help("max_seq_length"))] = None,
    seed: Annotated[int | None, typer.Option(help=_help("seed"))] = None,
    steps_per_report: Annotated[int | None, typer.Option(help=_help("steps_per_report"))] = None,
    steps_per_eval: Annotated[int | None, typer.Option(help=_help("steps_per_eval"))] = None,
    val_batches: Annotated[int | None, typer.Option(help=_help("val_batches"))] = None,
    save_every: Annotated[int | None, typer.Option(help=_help("save_every"))] = None,
    keep: Annotated[str | None, typer.Option(help=_help("keep"))] = None,
    check: Annotated[bool | None, typer.Option("--check/--no-check", help=_help("check_data"))] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --output from its last checkpoint.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing --output directory.")] = False,
) -> None:
    """Preference-train a LoRA adapter (DPO and variants) on DATA_DIR's chosen/rejected pairs."""
    from punie.dpo import TrainingInterrupted, resolve_dpo_config, train_dpo

    given: dict[str, Any] = {k: v for k, v in locals().items() if k in DPOConfig.model_fields and v is not None}
    if check is not None:
        given["check_data"] = check
    if resume:
        from punie.training.rundir import resume_settings

        given = resume_settings(output, "punie dpo") | given
    config = resolve_dpo_config(given, config_file)
    display = DPODisplay(config.iters)
    try:
        with display:
            result = train_dpo(config, display, resume=resume, force=force)
    except TrainingInterrupted as exc:
        err.print(f"[yellow]Interrupted at step {exc.step}.[/] Continue with: punie dpo {data} --output {exc.output} "
                  "--resume")
        sys.exit(130)
    for warning in result.warnings:
        err.print(f"[yellow]Warning:[/] {warning}")
    which = f"best, step {result.best_step}" if config.keep == "best" else f"last, step {result.steps}"
    out.print(f"Adapter: {result.adapter_file} ({which})")
    reference = "reused from the cache" if result.reference_cached else "computed"
    out.print(f"Steps {result.steps}; loss {result.final_loss:.3f}; val loss {result.final_val_loss:.3f}; "
              f"val accuracy {result.final_val_accuracy:.2f}; reference log-probs {reference}")


class DPODisplay:
    """Live progress: a bar plus the latest loss, accuracy, margin and validation results."""

    def __init__(self, iters: int):
        self.progress = Progress(TextColumn("[bold]dpo"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                 TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=err)
        self.task = self.progress.add_task("dpo", total=iters, status="")
        self.status = ""

    def __enter__(self) -> DPODisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def on_report(self, report: dict[str, Any]) -> None:
        if "dropped_pairs" in report:
            dropped = report["dropped_pairs"]
            lines = ", ".join(f"{d['line']} ({d['reference_margin']:.2f})" for d in dropped[:20])
            more = f", ... ({len(dropped) - 20} more)" if len(dropped) > 20 else ""
            err.print(f"Dropped {len(dropped)} noisy train pairs (line, reference margin): {lines}{more}")
            return
        if "loss" in report:
            self.status = (f"loss {report['loss']:.3f} | acc {report['accuracy']:.2f} | margin "
                           f"{report['margins']:.2f} | beta {report['beta']:g}")
        if "val_loss" in report:
            err.print(f"step {report['iteration']}: val loss {report['val_loss']:.3f}, val accuracy "
                      f"{report['val_accuracy']:.2f}, val margin {report['val_margins']:.2f}")
        self.progress.update(self.task, completed=report["iteration"], status=self.status)
