"""Render HTML reports from the jinja2 templates in the repository's top-level ``templates/``.

Autoescaping is on: every value from data or model output is escaped unless a
template marks it safe. Undefined variables raise, so a typo in a template fails
its test instead of rendering an empty cell.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2

import punie
from punie.errors import PunieError


def templates_dir() -> Path:
    """The ``templates/`` folder: beside ``src/`` in a source checkout (editable install)."""
    folder = Path(punie.__file__).resolve().parents[2] / "templates"
    if not folder.is_dir():
        raise PunieError(f"punie's report templates are missing (looked for {folder}). Install punie from a "
                         "source checkout ('pip install -e .') so the templates/ folder is present.")
    return folder


@cache
def _environment(folder: Path) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(folder), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_template(name: str, **context: Any) -> str:
    """The template ``name`` (e.g. ``"data_card.html.j2"``) rendered with ``context``."""
    folder = templates_dir()
    try:
        template = _environment(folder).get_template(name)
    except jinja2.TemplateNotFound as exc:
        raise PunieError(f"report template {name!r} is missing from {folder}") from exc
    return template.render(**context)
