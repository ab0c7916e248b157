"""``punie.train(config) -> TrainResult``: LoRA/DoRA/full fine-tuning on local data."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from punie import fileio
from punie.errors import ConfigError, DataError
from punie.training import checkpoints
from punie.training.config import TrainConfig, resolve_config
from punie.training.loop import Trainer, TrainingCallback, TrainingError, TrainingInterrupted

__all__ = ["TrainConfig", "TrainResult", "TrainingError", "TrainingInterrupted", "resolve_config", "train"]

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
          force: bool = False) -> TrainResult:
    """Fine-tune ``config.model`` on ``config``'s data; write an adapter directory."""
    import mlx.core as mx

    from punie.models.loading import load
    from punie.training import data as train_data

    output = config.output_dir()
    checkpoint = _prepare_output(output, config, resume=resume, force=force)
    records = train_data.load_records(config)
    fmt = train_data.data_format(records)
    model, tokenizer = load(config.model)
    warnings = _check_data(config, tokenizer, fmt)
    mask_prompt = config.mask_prompt if config.mask_prompt is not None else fmt != "text"
    splits = {name: train_data.tokenize_split(name, rows, tokenizer, fmt, mask_prompt=mask_prompt,
                                              max_seq_length=config.max_seq_length)
              for name, rows in records.items()}
    truncated = {name: s.truncated for name, s in splits.items()}
    for name in ("train", "valid"):
        if splits[name].targets_lost == len(splits[name]):
            raise DataError(f"every {name} example is cut by --max-seq-length {config.max_seq_length} before its "
                            "target starts, so there is nothing to train on; raise --max-seq-length.")
    for name, n in truncated.items():
        if n:
            warnings.append(f"{n} of {len(splits[name])} {name} examples are longer than --max-seq-length "
                            f"{config.max_seq_length} tokens and will be truncated to it.")
        if splits[name].targets_lost and name in ("train", "valid"):
            warnings.append(f"{splits[name].targets_lost} of them lose their whole target and are skipped.")

    mx.random.seed(config.seed)
    num_layers = _attach_adapters(model, config)
    trainer = Trainer(model, config, splits["train"], splits["valid"], output, callback)
    if checkpoint is not None:
        trainer.resume(checkpoint)
    base = _base_model_info(config.model)
    manifest = _manifest(config, base, records, fmt, mask_prompt, truncated)
    checkpoints.write_adapter_config(output, config, base["path"], num_layers)
    _write_manifest(output, manifest, status="running")
    try:
        state = trainer.run()
    except TrainingInterrupted:
        _write_manifest(output, manifest, status="interrupted", state=trainer.state)
        raise
    except TrainingError:
        _write_manifest(output, manifest, status="failed", state=trainer.state)
        raise
    stopped_early = state.step < config.iters
    _write_manifest(output, manifest, status="early_stopped" if stopped_early else "completed", state=state)
    return _result(output, state, stopped_early, truncated, warnings)


def _prepare_output(output: Path, config: TrainConfig, *, resume: bool, force: bool) -> checkpoints.Checkpoint | None:
    exists = output.exists() and any(output.iterdir())
    if resume:
        checkpoint = checkpoints.latest_checkpoint(output) if exists else None
        if checkpoint is None:
            raise ConfigError(f"--resume: {output} holds no checkpoint to resume from; start without --resume.")
        saved = json.loads((output / "manifest.json").read_text())["config"]
        now = json.loads(config.model_dump_json())
        changed = [k for k in _RESUME_FIXED if saved.get(k) != now.get(k)]
        if changed:
            raise ConfigError(f"--resume: {', '.join(changed)} differ from the run in {output}; "
                              "resume with the same settings or start a new --output.")
        return checkpoint
    if exists:
        if not force:
            raise ConfigError(f"{output} already exists and is not empty; pass --resume to continue that run, "
                              "--force to replace it, or choose another --output.")
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    return None


def _check_data(config: TrainConfig, tokenizer: Any, fmt: str) -> list[str]:
    """Run punie's data checks; refuse to train on errors, return warnings."""
    if fmt in ("chat", "tools", "completions") and getattr(tokenizer, "chat_template", None) is None:
        raise DataError(f"the model's tokenizer has no chat template, which {fmt} data needs; "
                        "use completions/text data or a model with a chat template.")
    if not config.check_data or config.data is None:
        return []
    from punie.data.check import check_data_dir

    report = check_data_dir(Path(config.data), tokenizer, max_seq_length=config.max_seq_length)
    if report.errors:
        shown = "\n".join(f"  {f.file}{':' + str(f.line) if f.line else ''}: {f.message}" for f in report.errors[:10])
        more = f"\n  ... and {len(report.errors) - 10} more" if len(report.errors) > 10 else ""
        raise DataError(f"the data in {config.data} has {len(report.errors)} error(s); nothing was trained:\n"
                        f"{shown}{more}\nSee 'punie data check {config.data}', or pass --no-check to skip.")
    return [f"{f.file}{':' + str(f.line) if f.line else ''}: {f.message}" for f in report.warnings]


def _attach_adapters(model: Any, config: TrainConfig) -> int:
    from mlx_lm.tuner.utils import linear_to_lora_layers

    n_layers = len(model.layers)
    num_layers = n_layers if config.num_layers == -1 else config.num_layers
    if num_layers > n_layers:
        raise ConfigError(f"--num-layers {config.num_layers} is larger than the model's {n_layers} layers; "
                          f"use at most {n_layers} (or -1 for all).")
    model.freeze()
    if config.fine_tune_type == "full":
        for layer in model.layers[-num_layers:]:
            layer.unfreeze()
    else:
        linear_to_lora_layers(model, num_layers, config.lora_parameters(), use_dora=config.fine_tune_type == "dora")
    return num_layers


def _base_model_info(spec: str | None) -> dict[str, Any]:
    from punie.models.registry import resolve_model

    path = resolve_model(spec)
    info: dict[str, Any] = {"spec": spec or "default", "path": path}
    config_file = Path(path) / "config.json"
    if config_file.is_file():
        cfg = json.loads(config_file.read_text())
        info["model_id"] = cfg.get("punie", {}).get("model_id")
        info["config_sha256"] = _sha256(config_file)
        weights = sorted(Path(path).glob("*.safetensors"))
        info["weights_sha256"] = {w.name: _sha256(w) for w in weights}
    return info


def _sha256(path: Path) -> str:
    from punie.models.gguf import sha256_file

    return sha256_file(path)


def _manifest(config: TrainConfig, base: dict[str, Any], records: dict[str, list[Any]], fmt: str,
              mask_prompt: bool, truncated: dict[str, int]) -> dict[str, Any]:
    data_files = {}
    if config.data is not None:
        for split in records:
            path = Path(config.data) / f"{split}.jsonl"
            data_files[split] = {"path": str(path), "sha256": _sha256(path), "records": len(records[split])}
    versions: dict[str, str | None] = {}
    for dist in ("punie", "mlx", "mlx-lm", "transformers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "config": json.loads(config.model_dump_json()),
        "base_model": base,
        "data": {"format": fmt, "mask_prompt": mask_prompt, "files": data_files, "truncated": truncated},
        "versions": versions,
        "started_at": datetime.now(UTC).isoformat(),
    }


def _write_manifest(output: Path, manifest: dict[str, Any], *, status: str, state: Any = None) -> None:
    manifest = dict(manifest, status=status, updated_at=datetime.now(UTC).isoformat())
    if state is not None:
        trains = [m for m in state.metrics if "train_loss" in m]
        vals = [m for m in state.metrics if "val_loss" in m]
        manifest["ended_at"] = manifest["updated_at"]
        manifest["metrics"] = {
            "steps": state.step,
            "final_train_loss": trains[-1]["train_loss"] if trains else None,
            "final_val_loss": vals[-1]["val_loss"] if vals else None,
            "best_val_loss": state.best_val_loss,
            "best_step": state.best_step,
            "tokens_per_second": state.trained_tokens / max(state.train_seconds, 1e-9),
            "train_seconds": state.train_seconds,
        }
    fileio.write_json(output / "manifest.json", manifest)


def _result(output: Path, state: Any, stopped_early: bool, truncated: dict[str, int],
            warnings: list[str]) -> TrainResult:
    trains = [m for m in state.metrics if "train_loss" in m]
    vals = [m for m in state.metrics if "val_loss" in m]
    return TrainResult(
        output=output, adapter_file=output / checkpoints.ADAPTERS, steps=state.step,
        final_train_loss=trains[-1]["train_loss"] if trains else None,
        final_val_loss=vals[-1]["val_loss"] if vals else None,
        best_val_loss=state.best_val_loss, best_step=state.best_step, stopped_early=stopped_early,
        tokens_per_second=state.trained_tokens / max(state.train_seconds, 1e-9), truncated=truncated,
        warnings=warnings, metrics=state.metrics,
    )

