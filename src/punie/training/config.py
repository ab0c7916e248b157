"""Training settings: one pydantic model holds every default and its help text.

Precedence is CLI > config file > defaults, resolved in :func:`resolve_config`
only. The CLI passes just the options the user actually gave.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from punie.errors import ConfigError, validation_problems


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: Path | None = Field(None, description="Directory with train.jsonl and valid.jsonl (test.jsonl optional).")
    hf_dataset: str | None = Field(None, description="A datasets dataset: a save_to_disk directory or a hub name.")
    hf_fields: dict[str, str] = Field(default_factory=dict,
                                      description="Map punie fields to dataset columns, e.g. prompt=question.")
    model: str | None = Field(None, description="Base model: 'default', a model directory, or a repo id.")
    output: Path | None = Field(None, description="Adapter output directory (default: adapters/<timestamp>).")
    fine_tune_type: Literal["lora", "dora", "full"] = Field("lora", description="lora, dora or full.")
    rank: int = Field(8, ge=1, description="LoRA rank.")
    alpha: float | None = Field(None, gt=0, description="LoRA alpha; sets scale = alpha / rank.")
    scale: float = Field(20.0, gt=0, description="LoRA scale (mlx-lm's convention), unless --alpha is given.")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    num_layers: int = Field(8, ge=-1, description="Transformer blocks to adapt, counted from the top (-1 = all).")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (Adam).")
    lr_schedule: Literal["constant", "cosine"] = Field("constant", description="constant or cosine decay.")
    warmup: int = Field(0, ge=0, description="Linear warm-up steps.")
    iters: int = Field(100, ge=1, description="Training iterations (optimizer steps x grad accumulation).")
    batch_size: int = Field(4, ge=1, description="Examples per batch.")
    grad_accumulation: int = Field(1, ge=1, description="Batches per optimizer update.")
    grad_checkpoint: bool = Field(False, description="Recompute activations to save memory.")
    max_seq_length: int = Field(2048, ge=8, description="Longer sequences are truncated (and counted).")
    mask_prompt: bool | None = Field(None, description="Train only on the final assistant turn "
                                                        "(default: on for chat/tools/completions data).")
    seed: int = Field(0, description="Seed for initialisation, data order and dropout.")
    steps_per_report: int = Field(10, ge=1, description="Steps between train-loss reports.")
    steps_per_eval: int = Field(50, ge=1, description="Steps between validation-loss evaluations.")
    val_batches: int = Field(25, ge=-1, description="Validation batches per evaluation (-1 = all).")
    save_every: int = Field(50, ge=1, description="Steps between resumable checkpoints.")
    early_stopping: int | None = Field(None, ge=1, description="Stop after this many evaluations without "
                                                                "validation improvement.")
    keep: Literal["best", "last"] = Field("best", description="Which weights adapters.safetensors holds.")
    check_data: bool = Field(True, description="Check the data before training (punie data check).")

    @model_validator(mode="after")
    def _one_data_source(self) -> TrainConfig:
        if (self.data is None) == (self.hf_dataset is None):
            raise ValueError("give exactly one data source: DATA_DIR or --hf-dataset")
        if self.num_layers == 0:
            raise ValueError("num_layers must be -1 (all) or at least 1, got 0")
        return self

    @property
    def lora_scale(self) -> float:
        return self.alpha / self.rank if self.alpha is not None else self.scale

    def lora_parameters(self) -> dict[str, Any]:
        return {"rank": self.rank, "scale": self.lora_scale, "dropout": self.dropout}

    def output_dir(self) -> Path:
        return self.output or Path("adapters") / datetime.now().strftime("run-%Y%m%d-%H%M%S")


def read_config_file(path: Path) -> dict[str, Any]:
    """Settings from a YAML (or JSON) file, keys spelled as options with - or _."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}).") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(raw).__name__}.")
    return {str(k).replace("-", "_"): v for k, v in raw.items()}


def resolve_config(cli: dict[str, Any], config_file: Path | None = None) -> TrainConfig:
    """Defaults, overridden by the config file, overridden by options given on the command line."""
    return resolve_settings(TrainConfig, cli, config_file)


Settings = TypeVar("Settings", bound=BaseModel)


def resolve_settings(schema: type[Settings], cli: dict[str, Any], config_file: Path | None = None) -> Settings:
    """:func:`resolve_config`'s rule for any settings model (``punie dpo`` resolves its own with it)."""
    merged: dict[str, Any] = read_config_file(config_file) if config_file else {}
    merged.update({k: v for k, v in cli.items() if v is not None})
    try:
        return schema(**merged)
    except ValidationError as exc:
        problems = validation_problems(exc, dashes=True, root="config")
        source = f" in {config_file}" if config_file else ""
        raise ConfigError(f"invalid training settings{source}: " + "; ".join(problems)) from exc
