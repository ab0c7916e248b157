"""Render HTML reports from the jinja2 templates (``templates/`` in the repository, found by :mod:`punie.assets`).

Autoescaping is on: every value from data or model output is escaped unless a
template marks it safe. Undefined variables raise, so a typo in a template fails
its test instead of rendering an empty cell.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from punie.assets import templates_dir
from punie.errors import PunieError


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
