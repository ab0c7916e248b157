"""``punie report``: open (or re-render) an eval's HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from punie.cli.console import out

app = typer.Typer(help="Open and rebuild eval reports.", no_args_is_help=True)


@app.command("open")
def open_report(
    folder: Annotated[Path, typer.Argument(help="An eval output directory (holding results.json).")],
) -> None:
    """Open DIR/report.html in the default browser (rendering it first if it is missing)."""
    import webbrowser

    from punie.report.eval_report import write_report

    page = folder / "report.html"
    if not page.is_file():
        page = write_report(folder)
    out.print(f"Opening {page}")
    if not webbrowser.open(page.resolve().as_uri()):
        out.print(f"No browser found; open {page.resolve()} yourself.")


@app.command("build")
def build_report(
    folder: Annotated[Path, typer.Argument(help="An eval output directory (holding results.json).")],
) -> None:
    """Render DIR/report.html again from DIR/results.json."""
    from punie.report.eval_report import write_report

    out.print(f"Wrote {write_report(folder)}")
