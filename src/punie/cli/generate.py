"""``punie generate``: one greedy answer from a model (and optional adapter)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from punie.cli.console import out


def generate(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    *,
    model: Annotated[str | None, typer.Option(help="Model: 'default', a directory, or a repo id.")] = None,
    adapter: Annotated[Path | None, typer.Option(help="A LoRA adapter directory.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 100,
) -> None:
    """Answer PROMPT with the model through its chat template (greedy)."""
    from punie.models.loading import generate_reply

    out.print(generate_reply(prompt, model=model, adapter=adapter, max_tokens=max_tokens))
