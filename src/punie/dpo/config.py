"""Preference-training settings: one pydantic model holds every default and its help text.

Precedence is CLI > config file > defaults, resolved by training's
:func:`punie.training.config.resolve_settings` (the one owner of that rule).
The LoRA and optimizer fields mirror :class:`punie.training.config.TrainConfig`
so that training's optimizer, checkpoint and adapter-config writers take a
``DPOConfig`` as they are.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from punie.errors import ConfigError
from punie.training.config import resolve_settings

# Settings taken from START's adapter_config.json when training continues it.
ADAPTER_FIXED = ("fine_tune_type", "rank", "scale", "dropout", "num_layers")


class DPOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: Path = Field(..., description="Directory with preference pairs: train.jsonl and valid.jsonl.")
    model: str | None = Field(None, description="Base model: 'default', a model directory, or a repo id.")
    adapter: Path | None = Field(None, description="START: a LoRA adapter to continue (and the reference policy).")
    output: Path | None = Field(None, description="Adapter output directory (default: adapters/<timestamp>).")
    loss: str = Field("sigmoid", description="Preference loss: sigmoid, hinge, ipo, robust, cdpo, cal-dpo, dpop, "
                                               "dr-dpo.")
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference policy.")
    beta_schedule: str | None = Field(None, description="BETA:STEP,... e.g. 0.05:0,0.1:40 (0.05 from step 0, "
                                                        "0.1 from step 40); overrides --beta.")
    label_smoothing: float = Field(0.1, ge=0, lt=0.5, description="epsilon of the robust and cdpo losses "
                                                                 "(the assumed share of flipped labels).")
    dr_beta: float = Field(1.0, gt=0, description="beta' of the dr-dpo loss (smaller trusts noisy pairs less).")
    dpop_lambda: float = Field(50.0, ge=0, description="lambda of the dpop loss: how hard a chosen reply "
                                                       "less likely than under the reference is penalised.")
    sft_weight: float = Field(0.0, ge=0, description="Add this times the chosen reply's per-token NLL to the loss.")
    drop_noisy: float = Field(0.0, ge=0, lt=1, description="Drop this fraction of training pairs whose reference "
                                                           "margin most favours the rejected reply.")
    fine_tune_type: Literal["lora", "dora"] = Field("lora", description="lora or dora (from START if given).")
    rank: int = Field(8, ge=1, description="LoRA rank (from START if given).")
    alpha: float | None = Field(None, gt=0, description="LoRA alpha; sets scale = alpha / rank.")
    scale: float = Field(20.0, gt=0, description="LoRA scale (mlx-lm's convention), unless --alpha is given.")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    num_layers: int = Field(8, ge=-1, description="Transformer blocks to adapt, counted from the top (-1 = all).")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate (Adam).")
    lr_schedule: Literal["constant", "cosine"] = Field("constant", description="constant or cosine decay.")
    warmup: int = Field(0, ge=0, description="Linear warm-up steps.")
    iters: int = Field(100, ge=1, description="Training iterations (optimizer steps).")
    batch_size: int = Field(4, ge=1, description="Preference pairs per batch.")
    max_seq_length: int = Field(2048, ge=8, description="Prompt + reply longer than this are cut (and counted).")
    seed: int = Field(0, description="Seed for initialisation, data order and dropout.")
    steps_per_report: int = Field(10, ge=1, description="Steps between train reports.")
    steps_per_eval: int = Field(50, ge=1, description="Steps between validation evaluations.")
    val_batches: int = Field(25, ge=-1, description="Validation batches per evaluation (-1 = all).")
    save_every: int = Field(50, ge=1, description="Steps between resumable checkpoints.")
    keep: Literal["best", "last"] = Field("best", description="Which weights adapters.safetensors holds.")
    check_data: bool = Field(True, description="Check the data before training (punie data check).")

    @model_validator(mode="before")
    @classmethod
    def _continue_start(cls, given: Any) -> Any:
        """With START, its LoRA shape replaces the defaults (however the settings are built)."""
        if isinstance(given, dict) and given.get("adapter") is not None:
            return given | _start_settings(Path(given["adapter"]), given)
        return given

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        from punie.dpo.losses import LOSSES

        if value not in LOSSES:
            raise ValueError(f"unknown loss {value!r}; expected one of {', '.join(LOSSES)}")
        return value

    @model_validator(mode="after")
    def _check(self) -> DPOConfig:
        if self.num_layers == 0:
            raise ValueError("num_layers must be -1 (all) or at least 1, got 0")
        if self.beta_schedule is not None:
            parse_beta_schedule(self.beta_schedule)
        return self

    @property
    def lora_scale(self) -> float:
        return self.alpha / self.rank if self.alpha is not None else self.scale

    def lora_parameters(self) -> dict[str, Any]:
        return {"rank": self.rank, "scale": self.lora_scale, "dropout": self.dropout}

    def output_dir(self) -> Path:
        return self.output or Path("adapters") / datetime.now().strftime("dpo-%Y%m%d-%H%M%S")

    def beta_at(self, step: int) -> float:
        """beta for 0-based ``step``: the last schedule entry that has started, else --beta."""
        if self.beta_schedule is None:
            return self.beta
        value = self.beta
        for beta, start in parse_beta_schedule(self.beta_schedule):
            if start <= step:
                value = beta
        return value


def parse_beta_schedule(text: str) -> list[tuple[float, int]]:
    """``"0.05:0,0.1:40"`` -> [(0.05, 0), (0.1, 40)]; ValueError naming the bad entry."""
    entries: list[tuple[float, int]] = []
    for raw in text.split(","):
        beta_text, sep, step_text = raw.strip().partition(":")
        try:
            beta, step = float(beta_text), int(step_text)
        except ValueError:
            raise ValueError(f"beta schedule entry {raw.strip()!r} is not BETA:STEP (e.g. 0.1:40)") from None
        if not sep or beta <= 0 or step < 0:
            raise ValueError(f"beta schedule entry {raw.strip()!r}: need BETA > 0 and STEP >= 0")
        if entries and step <= entries[-1][1]:
            raise ValueError(f"beta schedule steps must increase, got {step} after {entries[-1][1]}")
        entries.append((beta, step))
    if entries[0][1] != 0:
        raise ValueError(f"the beta schedule must start at step 0 (got {entries[0][1]}), e.g. 0.05:0,0.1:40")
    return entries


def resolve_dpo_config(cli: dict[str, Any], config_file: Path | None = None) -> DPOConfig:
    """CLI > config file > defaults; with START given, its LoRA shape replaces the defaults."""
    return resolve_settings(DPOConfig, cli, config_file)


def _start_settings(adapter: Path, given: dict[str, Any]) -> dict[str, Any]:
    """START's LoRA shape; ConfigError when the command line asks for a different one."""
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise ConfigError(f"--adapter {adapter}: no adapter_config.json there; pass an adapter directory "
                          "written by punie train or mlx_lm.lora.")
    saved = json.loads(config_file.read_text())
    fine_tune_type = saved.get("fine_tune_type", "lora")
    if fine_tune_type not in ("lora", "dora"):
        raise ConfigError(f"--adapter {adapter} is a {fine_tune_type!r} fine-tune; punie dpo continues LoRA or "
                          "DoRA adapters only.")
    lora = saved.get("lora_parameters", {})
    start = {"fine_tune_type": fine_tune_type, "rank": lora.get("rank"), "scale": lora.get("scale"),
             "dropout": lora.get("dropout", 0.0), "num_layers": saved.get("num_layers")}
    start = {k: v for k, v in start.items() if v is not None}
    clash = [k for k in ADAPTER_FIXED if k in given and k in start and given[k] != start[k]]
    if clash or "alpha" in given:
        names = ", ".join(clash + (["alpha"] if "alpha" in given else []))
        raise ConfigError(f"--adapter {adapter} fixes {names} ({', '.join(f'{k}={start.get(k)}' for k in clash)}); "
                          "drop those options to continue START, or start a new LoRA without --adapter.")
    return start
