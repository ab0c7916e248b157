"""The data card: ``punie data check``'s findings as one HTML page, written beside its summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from punie import fileio
from punie.data.check import CheckReport, refuse_foreign, write_summary
from punie.report.templates import render_template

CARD = "data_card.html"
TEMPLATE = "data_card.html.j2"
CARD_MARKER = 'content="punie data check"'  # in the template's <meta name="generator">


def render_data_card(summary: dict[str, Any]) -> str:
    """The page for a check's summary (``CheckReport.to_dict()``)."""
    return render_template(TEMPLATE, report=summary)


def write_check_outputs(report: CheckReport, out_dir: Path) -> tuple[Path, Path]:
    """``summary.json`` and ``data_card.html`` in ``out_dir``; neither is written over a file punie did not write."""
    card = Path(out_dir) / CARD
    refuse_foreign(card, CARD_MARKER)  # before anything is written, so a refusal leaves both files as they were
    html = render_data_card(report.to_dict())
    summary = write_summary(report, out_dir)
    fileio.write_text(card, html)
    return summary, card
