"""``train(config) -> TrainResult``: one fine-tuning run, from data to adapter directory.

Order of work: decide what to do with ``--output`` (refuse, resume, restart or
replace) without touching it; read, check and tokenize the data; load the model
and attach adapters; only then claim the output directory. So a run refused for
its data or settings leaves the disk as it was: no empty directory, and a
``--force`` over an old run deletes nothing until training can start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from punie.errors import ConfigError, DataError
from punie.training import checkpoints, rundir
from punie.training.config import TrainConfig
from punie.training.distributed import PeerLost, World, is_peer_loss, run_identity, share_resume
from punie.training.loop import Trainer, TrainingCallback, TrainingError, TrainingInterrupted
from punie.training.rundir import BaseModelIdentity, OutputPlan, RunDir

# Settings a resumed run must share with the run it continues.
_RESUME_FIXED = ("model", "data", "hf_dataset", "fine_tune_type", "rank", "num_layers", "batch_size", "seed",
                 "max_seq_length", "mask_prompt", "grad_accumulation")


@dataclass
class TrainResult:
    output: Path
    adapter_file: Path
    steps: int
    final_train_loss: float | None
    final_val_loss: float | None
    best_val_loss: float | None
    best_step: int | None
    stopped_early: bool
    tokens_per_second: float
    truncated: dict[str, int]
    warnings: list[str]
    metrics: list[dict[str, Any]]


def train(config: TrainConfig, callback: TrainingCallback | None = None, *, resume: bool = False,
          force: bool = False, until: int | None = None) -> TrainResult:
    """Fine-tune ``config.model`` on ``config``'s data; write an adapter directory.

    ``until``: pause after that step (status "paused", a checkpoint there) with the learning-rate schedule
    of all ``config.iters``; ``resume=True`` later continues it as if it had never stopped.
    """
    import mlx.core as mx

    from punie.models.loading import load
    from punie.models.registry import resolve_model
    from punie.training import data as train_data

    world = World.init()
    if config.batch_size % world.size:
        raise ConfigError(f"--batch-size {config.batch_size} must be a multiple of the number of ranks "
                          f"({world.size}): each rank takes an equal share of every batch.")
    if until is not None and until % config.grad_accumulation:
        raise ConfigError(f"a run can pause only after an optimizer update: step {until} is not a multiple of "
                          f"--grad-accumulation {config.grad_accumulation}.")
    run = RunDir(config.output_dir())
    # Rank 0 alone owns the run directory (the other ranks may be on machines that have no copy of it).
    plan = _plan_output(run, config, resume=resume, force=force) if world.is_main else OutputPlan()
    records = train_data.load_records(config)
    fmt = train_data.data_format(records)
    model, tokenizer = load(config.model)
    warnings = _check_data(config, tokenizer, fmt)
    if plan.restart:
        warnings.append(f"{run.path} has no checkpoint yet (it was stopped before its first one); "
                        "it was trained again from step 0.")
    mask_prompt = config.mask_prompt if config.mask_prompt is not None else fmt != "text"
    splits = {name: train_data.tokenize_split(name, rows, tokenizer, fmt, mask_prompt=mask_prompt,
                                              max_seq_length=config.max_seq_length)
              for name, rows in records.items()}
    truncated = {name: s.truncated for name, s in splits.items()}
    warnings += _truncation_warnings(config, splits)

    mx.random.seed(config.seed)
    num_layers = _attach_adapters(model, config)
    trainer = Trainer(model, config, splits["train"], splits["valid"], run.path, callback, world, until=until)
    base = BaseModelIdentity.of_model_dir(resolve_model(config.model), config.model)
    manifest = _manifest(config, base, records, fmt, mask_prompt, truncated) | {"world_size": world.size}
    world.check_same(run_identity(manifest))
    if world.is_main:
        run.claim(plan)
    share_resume(world, trainer, plan.checkpoint)
    if world.is_main:
        checkpoints.write_adapter_config(run.path, config, base.path or "", num_layers)
    _write_manifest(run, world, manifest, status="running")
    try:
        state = trainer.run()
    except (TrainingInterrupted, KeyboardInterrupt) as exc:  # the latter: Ctrl-C outside the loop's own handling
        _write_manifest(run, world, manifest, status="interrupted", state=trainer.state)
        if getattr(exc, "at_boundary", False):
            _wait_for_rank_0(world, run.path)
        raise
    except TrainingError:  # a NaN loss: every rank sees the same all-summed loss and stops at the same step
        _write_manifest(run, world, manifest, status="failed", state=trainer.state)
        _wait_for_rank_0(world, run.path)
        raise
    except Exception as exc:  # anything unexpected: the manifest must not say "running"
        lost = world.size > 1 and is_peer_loss(exc)  # the run is sound; a peer rank died
        _write_manifest(run, world, manifest, status="interrupted" if lost else "failed", state=trainer.state)
        if lost:
            raise PeerLost(f"rank {world.rank} lost its connection to another rank ({exc}); that rank probably "
                           f"died. {run.path} keeps its checkpoint at step {trainer.saved_step}; continue with "
                           "--resume.") from exc
        raise
    paused = state.step == trainer.until < config.iters
    stopped_early = state.step < config.iters and not paused
    status = "paused" if paused else "early_stopped" if stopped_early else "completed"
    _write_manifest(run, world, manifest, status=status, state=state)
    if (warning := checkpoints.untrained_best_warning(config.keep, state.best_step, state.step,
                                                      "the untrained adapter (the base model)")) is not None:
        warnings.append(warning)
    return _result(run.path, state, stopped_early, truncated, warnings)


def _wait_for_rank_0(world: World, output: Path) -> None:
    """On a stop every rank takes together: exit only after rank 0 has written its files.

    mlx.launch ends the other ranks as soon as one exits with an error, which could cut rank 0's writes short.
    """
    world.barrier(lambda: f"Stopping; {output} keeps its last checkpoint.")


def check_output(config: TrainConfig, *, resume: bool, force: bool) -> None:
    """Raise the ConfigError ``train`` would raise for its ``--output``, writing nothing (for launchers)."""
    _plan_output(RunDir(config.output_dir()), config, resume=resume, force=force)


def _plan_output(run: RunDir, config: TrainConfig, *, resume: bool, force: bool) -> OutputPlan:
    return run.plan_output(json.loads(config.model_dump_json()), _RESUME_FIXED, resume=resume, force=force)


def _truncation_warnings(config: TrainConfig, splits: dict[str, Any]) -> list[str]:
    for name in ("train", "valid"):
        if splits[name].targets_lost == len(splits[name]):
            raise DataError(f"every {name} example is cut by --max-seq-length {config.max_seq_length} before its "
                            "target starts, so there is nothing to train on; raise --max-seq-length.")
    warnings = []
    for name, split in splits.items():
        if split.truncated:
            warnings.append(f"{split.truncated} of {len(split)} {name} examples are longer than --max-seq-length "
                            f"{config.max_seq_length} tokens and will be truncated to it.")
        if split.targets_lost and name in ("train", "valid"):
            warnings.append(f"{split.targets_lost} of them lose their whole target and are skipped.")
    return warnings


def _check_data(config: TrainConfig, tokenizer: Any, fmt: str) -> list[str]:
    """Run punie's data checks; refuse to train on errors, return warnings."""
    if fmt in ("chat", "tools", "completions") and getattr(tokenizer, "chat_template", None) is None:
        raise DataError(f"the model's tokenizer has no chat template, which {fmt} data needs; "
                        "use completions/text data or a model with a chat template.")
    if not config.check_data or config.data is None:
        return []
    from punie.data.check import check_data_dir

    report = check_data_dir(Path(config.data), tokenizer, max_seq_length=config.max_seq_length)
    report.raise_for_errors()
    return [f"{f.where}: {f.message}" for f in report.warnings]


def adapted_layers(model: Any, num_layers: int) -> int:
    """How many blocks ``--num-layers`` adapts on this model (-1: all); ConfigError when it has fewer."""
    n_layers = len(model.layers)
    if num_layers > n_layers:
        raise ConfigError(f"--num-layers {num_layers} is larger than the model's {n_layers} layers; "
                          f"use at most {n_layers} (or -1 for all).")
    return n_layers if num_layers == -1 else num_layers


def _attach_adapters(model: Any, config: TrainConfig) -> int:
    from mlx_lm.tuner.utils import linear_to_lora_layers

    num_layers = adapted_layers(model, config.num_layers)
    model.freeze()
    if config.fine_tune_type == "full":
        for layer in model.layers[-num_layers:]:
            layer.unfreeze()
    else:
        linear_to_lora_layers(model, num_layers, config.lora_parameters(), use_dora=config.fine_tune_type == "dora")
    return num_layers


def _manifest(config: TrainConfig, base: BaseModelIdentity, records: dict[str, list[Any]], fmt: str,
              mask_prompt: bool, truncated: dict[str, int]) -> dict[str, Any]:
    data_files = {}
    if config.data is not None:
        for split in records:
            path = Path(config.data) / f"{split}.jsonl"
            data_files[split] = {"path": str(path), "sha256": rundir.file_sha256(path), "records": len(records[split])}
    versions = rundir.software_versions()
    return {
        "config": json.loads(config.model_dump_json()),
        "base_model": base.to_record(),
        "data": {"format": fmt, "mask_prompt": mask_prompt, "files": data_files, "truncated": truncated},
        "versions": versions,
        "process": rundir.training_process(),
        "started_at": datetime.now(UTC).isoformat(),
    }


def _summary(state: Any) -> dict[str, Any]:
    trains = [m for m in state.metrics if "train_loss" in m]
    vals = [m for m in state.metrics if "val_loss" in m]
    return {
        "steps": state.step,
        "final_train_loss": trains[-1]["train_loss"] if trains else None,
        "final_val_loss": vals[-1]["val_loss"] if vals else None,
        "best_val_loss": state.best_val_loss,
        "best_step": state.best_step,
        "tokens_per_second": state.trained_tokens / max(state.train_seconds, 1e-9),
        "train_seconds": state.train_seconds,
    }


def _write_manifest(run: RunDir, world: World, manifest: dict[str, Any], *, status: str, state: Any = None) -> None:
    if not world.is_main:
        return
    manifest = dict(manifest, status=status, updated_at=datetime.now(UTC).isoformat())
    if state is not None:
        manifest["ended_at"] = manifest["updated_at"]
        manifest["metrics"] = _summary(state)
    run.write_manifest(manifest)


def _result(output: Path, state: Any, stopped_early: bool, truncated: dict[str, int],
            warnings: list[str]) -> TrainResult:
    summary = _summary(state)
    return TrainResult(
        output=output, adapter_file=output / rundir.ADAPTERS, steps=state.step,
        final_train_loss=summary["final_train_loss"], final_val_loss=summary["final_val_loss"],
        best_val_loss=state.best_val_loss, best_step=state.best_step, stopped_early=stopped_early,
        tokens_per_second=summary["tokens_per_second"], truncated=truncated, warnings=warnings,
        metrics=state.metrics,
    )


__all__ = ["TrainResult", "TrainingError", "TrainingInterrupted", "check_output", "train"]
