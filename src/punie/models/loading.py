"""Loading models (and adapters) through mlx-lm, with punie's error messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from punie.errors import ModelError
from punie.models.registry import resolve_model


def load(model: str | None = None, adapter: Path | str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for a ``--model`` value, with an optional LoRA adapter applied."""
    import mlx_lm

    path = resolve_model(model)
    if adapter is not None:
        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise ModelError(f"{adapter} is not an adapter directory (no adapter_config.json in it).")
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
