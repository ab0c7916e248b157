"""Loading models, tokenizers and adapter directories through mlx-lm, with punie's error messages.

Every part of punie that loads one of these goes through this module: the data
checks and the trace export load a tokenizer alone (no weights), serve and eval
validate an adapter directory before anything starts, generation loads both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from punie.errors import ModelError
from punie.models.registry import resolve_model

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapters.safetensors"


def check_adapter_dir(adapter: Path | str) -> dict[str, Any]:
    """The parsed ``adapter_config.json`` of an adapter directory; ModelError saying what is missing."""
    path = Path(adapter).expanduser()
    if not path.is_dir():
        raise ModelError(f"adapter {adapter} does not exist: no such directory. Pass the directory that training "
                         f"wrote (it holds {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}).")
    missing = [name for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (path / name).is_file()]
    if missing:
        hint = "; was training interrupted before the first save?" if missing == [ADAPTER_WEIGHTS] else "."
        raise ModelError(f"{adapter} is not an adapter directory: {' and '.join(missing)} missing{hint}")
    return read_adapter_config(path)


def read_adapter_config(adapter: Path | str) -> dict[str, Any]:
    """The parsed ``adapter_config.json`` (the one reader of that file); ModelError when it is not a JSON object."""
    config_path = Path(adapter).expanduser() / ADAPTER_CONFIG
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{config_path}: invalid JSON ({exc}).") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{config_path}: expected a JSON object of adapter settings, got {type(config).__name__}.")
    return config


def apply_adapter(model: Any, adapter: Path | str, *, base_name: str) -> None:
    """Add ``adapter``'s LoRA/DoRA layers and weights to a loaded ``model`` in place (mlx-lm's ``load_adapters``).

    ModelError when its layers do not fit ``model``; the caller restores the base
    (eval swaps adapters on one loaded base instead of reloading it).
    """
    from mlx_lm.tuner.utils import load_adapters

    check_adapter_dir(adapter)
    try:
        load_adapters(model, str(adapter))
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise ModelError(f"adapter {adapter} does not fit the base model {base_name}: {exc}") from exc


def load_tokenizer(model: str | None = None) -> Any:
    """The tokenizer (with its chat template) of a ``--model`` value, without loading the weights.

    A hub repo id not downloaded yet is fetched with its tokenizer files only (mlx-lm's ``load_tokenizer``).
    """
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    spec = resolve_model(model)
    try:
        return mlx_load_tokenizer(Path(spec) if Path(spec).is_dir() else spec)
    except Exception as exc:  # the hub client and transformers raise many types (not found, offline, bad files)
        raise ModelError(f"cannot load the tokenizer of {spec} ({type(exc).__name__}: {exc}). Pass a model "
                         "directory holding tokenizer.json, or a repo id where the hub is reachable.") from exc


def load(model: str | None = None, adapter: Path | str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for a ``--model`` value, with an optional LoRA adapter applied."""
    import mlx_lm

    path = resolve_model(model)
    if adapter is not None:
        check_adapter_dir(adapter)
    try:
        loaded = mlx_lm.load(path, adapter_path=str(adapter) if adapter else None)
    except FileNotFoundError as exc:
        raise ModelError(f"cannot load model {path}: {exc}") from exc
    return loaded[0], loaded[1]


def generate_reply(prompt: str, *, model: str | None = None, adapter: Path | None = None,
                   max_tokens: int = 100) -> str:
    """A greedy reply to one user message."""
    import mlx_lm

    mdl, tok = load(model, adapter)
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    return mlx_lm.generate(mdl, tok, text, max_tokens=max_tokens)
