"""``punie demo``: punie's main job on the embedded default model, end to end."""

from __future__ import annotations

from typing import Annotated

import typer

from punie.cli.console import err, out


def demo(
    *,
    prompt: Annotated[str, typer.Option(help="The question to ask.")] = "What is the capital of France?",
) -> None:
    """Import the default model (once) and answer a question with it."""
    from punie.models import registry
    from punie.models.loading import generate_reply

    with err.status("Importing the default model (first run only) ..."):
        path = registry.pull_default()
    out.print(f"[bold]Model:[/] {path}")
    out.print(f"[bold]Q:[/] {prompt}")
    out.print(f"[bold]A:[/] {generate_reply(prompt, max_tokens=60)}")
