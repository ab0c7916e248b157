"""punie's dataset formats (mlx-lm's, plus preference pairs) and JSONL reading.

One record per JSONL line, in one of these shapes:

* ``chat``: ``{"messages": [...]}``
* ``tools``: ``{"messages": [...], "tools": [...]}``
* ``completions``: ``{"prompt": str, "completion": str}`` (optional ``tools``)
* ``text``: ``{"text": str}``
* ``preference``: ``{"prompt": str or "messages": [...], "chosen": reply, "rejected": reply}``
  (optional ``tools``), where a reply is a string, an assistant message, or a
  one-message list holding an assistant message.

Any other top-level key (``id``, ``category``, ...) is metadata: mlx-lm ignores it
and punie uses it for stratified splits and label balance.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from punie.errors import DataError, json_error_text

FORMATS = ("chat", "tools", "completions", "text", "preference")
# The keys that define a format; every other top-level key is metadata.
FORMAT_KEYS = frozenset({"messages", "tools", "prompt", "completion", "text", "chosen", "rejected"})
ALLOWED_KEYS = {
    "chat": frozenset({"messages"}),
    "tools": frozenset({"messages", "tools"}),
    "completions": frozenset({"prompt", "completion", "tools"}),
    "text": frozenset({"text"}),
    "preference": frozenset({"prompt", "messages", "chosen", "rejected", "tools"}),
}
FORMAT_HELP = ('chat {"messages"}, tools {"messages", "tools"}, completions {"prompt", "completion"}, '
               'text {"text"}, preference {"prompt" or "messages", "chosen", "rejected"}')
# Formats whose records mlx-lm renders through the tokenizer's chat template.
TEMPLATE_FORMATS = frozenset({"chat", "tools", "completions", "preference"})


def detect_format(record: Any) -> str:
    """The format a record's keys select; DataError if it fits none."""
    if not isinstance(record, dict):
        raise DataError(f"a record must be a JSON object, got {type(record).__name__}")
    keys = record.keys()
    if "chosen" in keys and "rejected" in keys:
        return "preference"
    if "messages" in keys:
        return "tools" if "tools" in keys else "chat"
    if "prompt" in keys and "completion" in keys:
        return "completions"
    if "text" in keys:
        return "text"
    present = sorted(keys & FORMAT_KEYS)
    hint = f" (it has {', '.join(present)})" if present else ""
    raise DataError(f"the record fits no format{hint}; keys are {sorted(keys)}. Expected one of: {FORMAT_HELP}")


@dataclass(frozen=True)
class LineProblem:
    """A line of a JSONL file that is not a record."""

    line: int
    code: str
    message: str


def scan_jsonl(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[LineProblem]]:
    """All (line number, record) pairs of a JSONL file, and every line that is not a record.

    Blank lines are skipped but reported: ``mlx_lm.lora`` fails on them.
    """
    records: list[tuple[int, dict[str, Any]]] = []
    problems: list[LineProblem] = []
    for lineno, raw in _raw_lines(path):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(LineProblem(lineno, "bad-encoding", f"not UTF-8 at byte {exc.start}"))
            continue
        if not text.strip():
            problems.append(LineProblem(lineno, "blank-line", "blank line (mlx_lm.lora fails on blank lines)"))
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(LineProblem(lineno, "bad-json", f"not valid JSON: {json_error_text(exc)}"))
            continue
        if not isinstance(record, dict):
            problems.append(LineProblem(lineno, "not-object",
                                        f"a record must be a JSON object, got {type(record).__name__}"))
            continue
        records.append((lineno, record))
    return records, problems


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                yield lineno, raw.rstrip(b"\r\n")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file; DataError ``FILE:LINE: ...`` at the first line that is not one.

    Blank lines are skipped. ``punie data check`` reports every bad line instead.
    """
    path = Path(path)
    records, problems = scan_jsonl(path)
    bad = [p for p in problems if p.code != "blank-line"]
    if bad:
        more = f" (and {len(bad) - 1} more bad lines; see 'punie data check')" if len(bad) > 1 else ""
        raise DataError(f"{path}:{bad[0].line}: {bad[0].message}{more}")
    return [record for _, record in records]


def raw_jsonl_lines(path: Path) -> list[str]:
    """The non-blank lines of a JSONL file, verbatim (for writers that must not re-serialise)."""
    path = Path(path)
    read_jsonl(path)  # fail early, naming the line, if any line is not a record
    return [raw.decode("utf-8") for _, raw in _raw_lines(path) if raw.strip()]


# ---- normalised views of a record --------------------------------------------------------------


def as_reply(value: Any) -> dict[str, Any] | None:
    """A preference reply (string, assistant message or one-message list) as an assistant message."""
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict) and value.get("role", "assistant") == "assistant":
        return {"role": "assistant", **value}
    return None


def prompt_messages(record: dict[str, Any], fmt: str) -> list[dict[str, Any]]:
    """The turns before the trained reply (for chat: everything before the last message)."""
    if fmt in ("chat", "tools"):
        return list(record["messages"][:-1])
    if fmt == "completions":
        return [{"role": "user", "content": record["prompt"]}]
    if fmt == "preference":
        if "messages" in record:
            return list(record["messages"])
        return [{"role": "user", "content": record["prompt"]}]
    return []


def preference_turns(record: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """(prompt messages, chosen assistant message, rejected assistant message) of a preference pair."""
    chosen, rejected = as_reply(record.get("chosen")), as_reply(record.get("rejected"))
    if chosen is None or rejected is None:
        raise DataError("'chosen' and 'rejected' must each be a string or an assistant message")
    return prompt_messages(record, "preference"), chosen, rejected


def target_message(record: dict[str, Any], fmt: str) -> dict[str, Any] | None:
    """The reply the model is trained to give (the chosen one for preference pairs)."""
    if fmt in ("chat", "tools"):
        messages = record.get("messages") or []
        return messages[-1] if messages and isinstance(messages[-1], dict) else None
    if fmt == "completions":
        return {"role": "assistant", "content": record.get("completion")}
    if fmt == "preference":
        return as_reply(record.get("chosen"))
    return None


def conversations(record: dict[str, Any], fmt: str) -> list[list[dict[str, Any]]]:
    """The message lists training renders through the chat template (two for a preference pair)."""
    if fmt in ("chat", "tools"):
        return [record["messages"]]
    if fmt == "completions":
        return [[{"role": "user", "content": record["prompt"]},
                 {"role": "assistant", "content": record["completion"]}]]
    if fmt == "preference":
        prompt, chosen, rejected = preference_turns(record)
        return [prompt + [chosen], prompt + [rejected]]
    return []
