"""One exception family for punie.

Domain code raises these; the CLI prints the message on one line and exits 1.
Every message should name the file, line or value at fault and what to do.
"""

from __future__ import annotations

import json
from typing import Any


class PunieError(Exception):
    """Base class: a problem the user can fix, described in the message."""


class ConfigError(PunieError):
    """A setting, option or config file value is invalid."""


class DataError(PunieError):
    """Input data is malformed or inconsistent."""


class ModelError(PunieError):
    """A model or adapter cannot be found, imported or loaded."""


class ServeError(PunieError):
    """A managed mlx_lm.server process failed or cannot be reached."""


def json_error_text(exc: json.JSONDecodeError, *, line: bool = False) -> str:
    """``exc`` as "<what> at [line L, ]column C" for a message.

    json's own text may already end in "at" ("Unterminated string starting at", "Invalid control
    character at"); it is dropped so the message does not read "at at column".
    """
    where = f"line {exc.lineno}, column {exc.colno}" if line else f"column {exc.colno}"
    return f"{exc.msg.removesuffix(' at')} at {where}"


def validation_problems(exc: Any, *, dashes: bool = False, root: str = "value") -> list[str]:
    """A pydantic ``ValidationError`` as one "where: what (got value)" per problem.

    ``where`` is the field path (``checks.0.value``; ``root`` for the whole object); ``dashes`` spells it
    as a command-line option (``max-steps``).
    """
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or root
        value = f" (got {err['input']!r:.80})" if err["loc"] and "input" in err else ""
        problems.append(f"{where.replace('_', '-') if dashes else where}: {err['msg']}{value}")
    return problems
