"""The console-script entry point: fix BLAS first, then run the typer app."""

from __future__ import annotations

import os
import sys


def main() -> None:
    from punie import blas

    blas.ensure_fast_blas()  # may re-execute this process; must precede any MLX import
    from punie.cli.app import app
    from punie.errors import PunieError

    try:
        app()  # standalone: usage errors print themselves and exit 2
    except PunieError as exc:
        if os.environ.get("PUNIE_DEBUG") == "1":
            raise
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
