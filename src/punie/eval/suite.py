"""Eval suites: JSONL files with one case per line.

A case names its scorer and what the scorer expects::

    {"id": "read-003", "category": "files",
     "messages": [{"role": "user", "content": "Show me what is in setup.cfg"}],
     "tools": [...OpenAI-style function schemas...],
     "scorer": "tool_call",
     "expect": {"tool_calls": [{"name": "read_file", "arguments": {"path": "setup.cfg"}}]}}

Every line is checked when the suite loads (including the ``expect`` block,
by the scorer that will read it), so a typo fails before any model runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from punie.errors import DataError, json_error_text

_ROLES = {"system", "user", "assistant", "tool"}
_KEYS = {"id", "category", "messages", "tools", "scorer", "expect", "notes"}
DEFAULT_CATEGORY = "general"


@dataclass(frozen=True)
class EvalCase:
    id: str
    messages: list[dict[str, Any]]
    scorer: str
    expect: dict[str, Any]
    category: str = DEFAULT_CATEGORY
    tools: list[dict[str, Any]] | None = None
    line: int = 0

    def tool_schema(self, name: str) -> dict[str, Any] | None:
        """The ``function`` schema of the tool called ``name``, if the case declares it."""
        for tool in self.tools or []:
            function = tool.get("function", tool)
            if function.get("name") == name:
                return function
        return None


@dataclass(frozen=True)
class Suite:
    path: Path
    cases: list[EvalCase]
    sha256: str = ""
    categories: list[str] = field(default_factory=list)


def load_suite(path: Path | str) -> Suite:
    """Read and check every line of a suite; errors name the file and line."""
    path = Path(path)
    cases, sha256 = read_jsonl(path, parse_case, kind="suite", item="case")
    categories = sorted({c.category for c in cases})
    return Suite(path=path, cases=cases, sha256=sha256, categories=categories)


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


Item = TypeVar("Item", bound=_Identified)


def read_jsonl(path: Path, parse: Callable[..., Item], *, kind: str, item: str) -> tuple[list[Item], str]:
    """Every non-blank line of the JSONL file ``path`` parsed by ``parse(text, where=..., line=...)``,
    and the file's sha256.

    ``where`` is ``file:line``, the prefix of every error ``parse`` raises; ids must be unique. ``kind``
    and ``item`` name the file and its lines in messages ("suite"/"case", "task suite"/"task").
    """
    if not path.is_file():
        raise DataError(f"{kind} {path} does not exist (expected a JSONL file, one {item} per line).")
    raw = path.read_bytes()
    items: list[Item] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parsed = parse(line, where=f"{path}:{lineno}", line=lineno)
        if parsed.id in seen:
            raise DataError(f"{path}:{lineno}: duplicate {item} id {parsed.id!r} (first used on line "
                            f"{seen[parsed.id]}); give every {item} its own id.")
        seen[parsed.id] = lineno
        items.append(parsed)
    if not items:
        raise DataError(f"{kind} {path} has no {item}s; add one JSON object per line.")
    return items, hashlib.sha256(raw).hexdigest()


def json_object(text: str, where: str) -> dict[str, Any]:
    """One line's JSON object; ``where`` prefixes the error when it is not one."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({json_error_text(exc)}).") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object per line, got {type(obj).__name__}.")
    return obj


def parse_case(text: str, *, where: str = "<case>", line: int = 0) -> EvalCase:
    """One case from one JSON line; ``where`` prefixes error messages."""
    from punie.eval.scorers import SCORERS

    obj = json_object(text, where)
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise DataError(f"{where}: unknown field(s) {unknown}; a case has {sorted(_KEYS)}.")
    case_id = obj.get("id")
    if not isinstance(case_id, str) or not case_id.strip():
        raise DataError(f"{where}: 'id' must be a non-empty string, got {case_id!r}.")
    category = obj.get("category", DEFAULT_CATEGORY)
    if not isinstance(category, str) or not category.strip():
        raise DataError(f"{where}: 'category' must be a non-empty string, got {category!r}.")
    messages = _check_messages(obj.get("messages"), where)
    tools = _check_tools(obj.get("tools"), where)
    scorer = obj.get("scorer")
    if scorer not in SCORERS:
        raise DataError(f"{where}: unknown scorer {scorer!r}; choose one of {sorted(SCORERS)}.")
    expect = obj.get("expect")
    if not isinstance(expect, dict):
        raise DataError(f"{where}: 'expect' must be an object, got {type(expect).__name__}.")
    problem = SCORERS[scorer].check_expect(expect)
    if problem:
        raise DataError(f"{where}: bad 'expect' for scorer {scorer!r}: {problem}")
    case = EvalCase(id=case_id, messages=messages, scorer=scorer, expect=expect, category=category,
                    tools=tools, line=line)
    check_case = SCORERS[scorer].check_case
    problem = check_case(case) if check_case else None
    if problem:
        raise DataError(f"{where}: {problem}")
    return case


def _check_messages(messages: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects.")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in _ROLES:
            raise DataError(f"{where}: messages[{i}] needs a 'role' in {sorted(_ROLES)}, got {msg!r:.80}.")
        if not isinstance(msg.get("content", ""), str | None):
            raise DataError(f"{where}: messages[{i}].content must be a string.")
    if messages[-1]["role"] == "assistant":
        raise DataError(f"{where}: the last message is the assistant's; end with the turn the model should answer.")
    return messages


def _check_tools(tools: Any, where: str) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise DataError(f"{where}: 'tools' must be a list of OpenAI-style function schemas.")
    for i, tool in enumerate(tools):
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise DataError(f"{where}: tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., "
                            "'parameters': {...}}}}}.")
        params = function.get("parameters", {})
        if not isinstance(params, dict) or not isinstance(params.get("properties", {}), dict):
            raise DataError(f"{where}: tools[{i}] ({function['name']}) 'parameters' must be a JSON schema object.")
    return tools
