"""The search space: which ``punie train`` settings a sweep varies, and the candidate runs it makes.

A space maps setting names (spelled as ``punie train`` options, ``-`` or ``_``)
to the values to try; a single value fixes the setting for every candidate.
``--grid rank=8,16 --grid learning_rate=2e-4,5e-4`` and a YAML/JSON file
``{rank: [8, 16], learning_rate: [2e-4, 5e-4]}`` say the same. A *config* is one
combination of values; a *candidate* is one config trained with one seed.
Every value is checked by :class:`~punie.training.TrainConfig` before anything
runs, so a typo fails at once.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from punie.errors import ConfigError
from punie.training.config import TrainConfig, read_config_file, resolve_settings

# Settings the sweep itself decides (or that name the data and model every candidate shares).
NOT_SWEPT = {"data": "DATA_DIR", "hf_dataset": "DATA_DIR", "hf_fields": "DATA_DIR", "model": "--model",
             "output": "--output", "seed": "--seeds"}
# Short names for candidate directory names.
ABBREVIATIONS = {"learning_rate": "lr", "num_layers": "layers", "rank": "rank", "iters": "iters",
                 "batch_size": "bs", "fine_tune_type": "", "lr_schedule": "", "dropout": "drop", "warmup": "warm",
                 "grad_accumulation": "accum", "max_seq_length": "len"}


@dataclass(frozen=True)
class Candidate:
    """One training run of the sweep: a config (its index and swept values) with one seed."""

    id: str
    config_index: int  # -1: the reference recipe
    settings: dict[str, Any]  # the swept values (the reference: its recipe's)
    seed: int
    train: TrainConfig  # fully resolved, output included


def parse_value(text: str) -> Any:
    """A value as written on the command line: YAML's reading, with 2e-4 a number (YAML 1.1 wants 2.0e-4)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_grid(specs: list[str]) -> dict[str, list[Any]]:
    """``["rank=8,16 learning_rate=2e-4,5e-4", ...]`` -> ``{"rank": [8, 16], ...}`` (items split on spaces)."""
    space: dict[str, list[Any]] = {}
    for item in (part for spec in specs for part in spec.split()):
        name, sep, values = item.partition("=")
        if not sep or not name or not values:
            raise ConfigError(f"--grid {item!r}: expected SETTING=VALUE[,VALUE...], e.g. rank=8,16.")
        space[name.replace("-", "_")] = [parse_value(v) for v in values.split(",")]
    return space


def read_space_file(path: Path) -> dict[str, list[Any]]:
    """A YAML/JSON mapping of settings to a list of values (or one value)."""
    raw = read_config_file(path)
    return {name: list(value) if isinstance(value, list) else [value] for name, value in raw.items()}


def check_space(space: dict[str, list[Any]]) -> None:
    for name, values in space.items():
        if name in NOT_SWEPT:
            raise ConfigError(f"the search space sets {name!r}, which the sweep fixes itself; use {NOT_SWEPT[name]}.")
        if name not in TrainConfig.model_fields:
            raise ConfigError(f"the search space sets {name!r}, which is not a punie train setting; the settings are "
                              f"{', '.join(n for n in TrainConfig.model_fields if n not in NOT_SWEPT)}.")
        if not values or len(set(map(repr, values))) != len(values):
            raise ConfigError(f"the search space gives {name} the values {values}; give each value once.")


def configs(space: dict[str, list[Any]], method: str, trials: int | None, seed: int) -> list[dict[str, Any]]:
    """The configs to try: every combination (grid, halving) or ``trials`` of them drawn without replacement
    (random, seeded), in the space's order."""
    names = list(space)
    every = [dict(zip(names, values, strict=True)) for values in itertools.product(*space.values())]
    if method != "random" or trials is None or trials >= len(every):
        return every
    chosen = sorted(random.Random(seed).sample(range(len(every)), trials))
    return [every[i] for i in chosen]


def candidate_id(index: int, settings: dict[str, Any], seed: int, varied: list[str]) -> str:
    """A readable, unique directory name: the config's number, the values that vary, the seed."""
    parts = [f"c{index:02d}"] + [f"{ABBREVIATIONS.get(k, k)}{_short(settings[k])}" for k in varied]
    return "-".join(parts + [f"seed{seed}"])


def _short(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return "".join(ch if ch.isalnum() or ch in ".+-_" else "_" for ch in text)


def resolve_candidate(base: dict[str, Any], config_file: Path | None, settings: dict[str, Any],
                      fixed: dict[str, Any]) -> TrainConfig:
    """The candidate's training settings: swept values over the base options over the config file over defaults."""
    return resolve_settings(TrainConfig, base | settings | fixed, config_file)
