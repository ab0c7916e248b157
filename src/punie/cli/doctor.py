"""``punie doctor``: is this machine ready, and how fast is it?"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from punie.cli.console import out


def doctor(
    *,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Show platform, MLX versions, device, BLAS, measured matmul speed and the model cache."""
    from punie.doctor import report

    info = report()
    if as_json:
        out.print_json(json.dumps(info))
        return
    table = Table(show_header=False, box=None)
    labels = {"platform": "Platform", "python": "Python", "mlx": "MLX", "mlx_lm": "mlx-lm", "punie": "punie",
              "device": "Default device", "blas": "BLAS", "matmul_gflops": "fp32 matmul (GFLOP/s)",
              "memory_gb": "Memory (GiB)", "distributed_backends": "Distributed backends",
              "punie_home": "PUNIE_HOME", "default_model": "Default model",
              "sandbox": "Command sandbox"}
    for key, label in labels.items():
        value = info.get(key)
        if key == "default_model" and value is None:
            value = "[yellow]not imported[/] - run 'punie models pull default'"
        if key == "sandbox" and value == "none":
            value = "[yellow]none[/] - run_command refuses unless --no-sandbox"
        table.add_row(f"[bold]{label}[/]", str(value))
    out.print(table)
    for hint_key in ("blas_hint", "sandbox_hint"):
        if hint := info.get(hint_key):
            out.print(f"[yellow]Hint:[/] {escape(hint)}")
