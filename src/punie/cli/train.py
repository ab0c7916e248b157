"""``punie train``: fine-tune with live progress; display only, the work is in punie.training."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from punie.cli.console import err, out
from punie.training.config import TrainConfig
from punie.training.distributed import DEFAULT_PEER_TIMEOUT


def _help(name: str) -> str:
    return TrainConfig.model_fields[name].description or ""


_PEER_TIMEOUT_HELP = (f"Seconds without a finished step before a rank gives up on a silent peer "
                      f"(default {DEFAULT_PEER_TIMEOUT:.0f}).")


def train(
    data: Annotated[Path | None, typer.Argument(help=_help("data"))] = None,
    *,
    config_file: Annotated[Path | None, typer.Option("-c", "--config", help="YAML file of settings.")] = None,
    hf_dataset: Annotated[str | None, typer.Option(help=_help("hf_dataset"))] = None,
    hf_field: Annotated[list[str] | None, typer.Option(help="FIELD=COLUMN mapping (repeatable).")] = None,
    model: Annotated[str | None, typer.Option(help=_help("model"))] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help=_help("output"))] = None,
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
    grad_accumulation: Annotated[int | None, typer.Option(help=_help("grad_accumulation"))] = None,
    grad_checkpoint: Annotated[bool | None, typer.Option(help=_help("grad_checkpoint"))] = None,
    max_seq_length: Annotated[int | None, typer.Option(help=_help("max_seq_length"))] = None,
    mask_prompt: Annotated[bool | None, typer.Option(help=_help("mask_prompt"))] = None,
    seed: Annotated[int | None, typer.Option(help=_help("seed"))] = None,
    steps_per_report: Annotated[int | None, typer.Option(help=_help("steps_per_report"))] = None,
    steps_per_eval: Annotated[int | None, typer.Option(help=_help("steps_per_eval"))] = None,
    val_batches: Annotated[int | None, typer.Option(help=_help("val_batches"))] = None,
    save_every: Annotated[int | None, typer.Option(help=_help("save_every"))] = None,
    early_stopping: Annotated[int | None, typer.Option(help=_help("early_stopping"))] = None,
    keep: Annotated[str | None, typer.Option(help=_help("keep"))] = None,
    check: Annotated[bool | None, typer.Option("--check/--no-check", help=_help("check_data"))] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --output from its last checkpoint.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing --output directory.")] = False,
    hosts: Annotated[str | None, typer.Option(help="Train data-parallel on these machines (comma-separated IPs; "
                                                   "rank 0 first), started through mlx.launch over SSH.")] = None,
    hostfile: Annotated[Path | None, typer.Option(help="mlx.launch's JSON hostfile (ssh names and IPs per "
                                                       "machine) instead of --hosts.")] = None,
    nproc: Annotated[int | None, typer.Option(help="Ranks per host (on this machine alone without --hosts).")] = None,
    backend: Annotated[str | None, typer.Option(help="mlx.launch backend: ring (default), mpi, jaccl, ...")] = None,
    peer_timeout: Annotated[float | None, typer.Option(help=_PEER_TIMEOUT_HELP)] = None,
    resolved_config: Annotated[str | None, typer.Option(hidden=True, help="Set by punie for each rank.")] = None,
) -> None:
    """Fine-tune a model (LoRA by default) on DATA_DIR; writes an adapter mlx-lm loads as is."""
    from punie.data.importer import parse_mapping
    from punie.training import resolve_config
    from punie.training.launcher import Launch

    given: dict[str, Any] = {k: v for k, v in locals().items()
                             if k in TrainConfig.model_fields and v is not None}
    if hf_field:
        given["hf_fields"] = parse_mapping(hf_field, option="--hf-field")
    if check is not None:
        given["check_data"] = check
    if resolved_config is not None:  # a rank started by 'punie train --hosts': the launcher resolved everything
        config = TrainConfig.model_validate_json(resolved_config)
    else:
        if resume:
            from punie.training.rundir import resume_settings

            given = resume_settings(output, "punie training") | given
        config = resolve_config(given, config_file)
    launch = Launch(hosts=hosts, hostfile=hostfile, nproc=nproc, backend=backend, peer_timeout=peer_timeout)
    if launch.requested():
        _launch(launch, config, resume=resume, force=force)
    else:
        _train_here(config, resume=resume, force=force)


def _launch(launch: Any, config: TrainConfig, *, resume: bool, force: bool) -> None:
    from punie.training import launcher

    # Every rank must write to (and rank 0 own) the same directory: fix the timestamped default here, once.
    outcome = launcher.run(launch, config.model_copy(update={"output": config.output_dir()}), resume=resume,
                           force=force)
    if outcome.message:
        err.print(outcome.message, style="yellow" if outcome.code == 130 else "red", highlight=False)
    if outcome.code:
        sys.exit(outcome.code)


def _train_here(config: TrainConfig, *, resume: bool, force: bool) -> None:
    import os

    from punie.training import TrainingInterrupted
    from punie.training import train as run_training
    from punie.training.distributed import PEER_LOST_EXIT, PeerLost, World
    from punie.training.launcher import LAUNCHED_ENV

    if not World.init().is_main:  # another rank of a distributed run: rank 0 alone reports
        try:
            run_training(config, None, resume=resume, force=force)
        except TrainingInterrupted:
            sys.exit(130)
        except PeerLost as exc:
            err.print(f"Error: {exc}", style="red", highlight=False)
            sys.exit(PEER_LOST_EXIT)
        return
    display = TrainDisplay(config.iters)
    try:
        with display:
            result = run_training(config, display, resume=resume, force=force)
    except PeerLost as exc:  # the launcher names the rank that died; this exit code tells it this one did not
        err.print(f"Error: {exc}", style="red", highlight=False)
        sys.exit(PEER_LOST_EXIT)
    except TrainingInterrupted as exc:
        saved = f"checkpoint saved at step {exc.step}" if exc.step else "no checkpoint yet; --resume starts it again"
        hint = "" if os.environ.get(LAUNCHED_ENV) else f" Continue with: punie train --output {exc.output} --resume"
        err.print(f"[yellow]Interrupted ({saved}).[/]{hint}")
        sys.exit(130)
    for warning in result.warnings:
        err.print(f"[yellow]Warning:[/] {warning}")
    out.print(f"Adapter: {result.adapter_file} ({'best' if config.keep == 'best' else 'last'} weights, "
              f"step {result.best_step if config.keep == 'best' else result.steps})")
    out.print(f"Steps {result.steps}; train loss {result.final_train_loss:.3f}; val loss {result.final_val_loss:.3f}; "
              f"best val loss {result.best_val_loss:.3f}; {result.tokens_per_second:.0f} tokens/s")


class TrainDisplay:
    """Live progress: a bar plus the latest losses, speed, memory and ETA."""

    def __init__(self, iters: int):
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                 TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=err)
        self.task = self.progress.add_task("train", total=iters, status="")
        self.fields = {"train": "-", "val": "-", "speed": "-", "mem": "-"}

    def __enter__(self) -> TrainDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def on_report(self, report: dict[str, Any]) -> None:
        if "train_loss" in report:
            self.fields.update(train=f"{report['train_loss']:.3f}", speed=f"{report['tokens_per_second']:.0f} tok/s",
                               mem=f"{report['peak_memory_gb']:.2f} GB")
        if "val_loss" in report:
            self.fields["val"] = f"{report['val_loss']:.3f}"
            err.print(f"step {report['iteration']}: val loss {report['val_loss']:.3f}")
        status = (f"loss {self.fields['train']} | val {self.fields['val']} | {self.fields['speed']} | "
                  f"peak {self.fields['mem']}")
        self.progress.update(self.task, completed=report["iteration"], status=status)
