"""Labels a record carries and their balance (rebalancing is in :mod:`punie.data.balance`).

A label is either a metadata field of the record (``category``, ``label``,
``route``, or any field named on the command line) or derived from the reply
the model is trained to give:

* ``answer``: ``yes`` or ``no`` when the reply starts with that word. Counted
  only when most replies in a split are yes/no answers, so a dataset with a
  few replies that happen to start with "No," is not called a yes/no task.
* ``tool``: the first tool an assistant turn calls (for preference pairs, the
  chosen reply), or ``(text reply)`` when a record that declares tools calls none.

A model trained on 25 "No" for every 10 "Yes" learns to say "No"; the balance
check warns when the most common value outnumbers the rarest past a ratio.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from punie.chat.toolcalls import parse_message
from punie.data.formats import target_message

METADATA_LABELS = ("category", "label", "route")
DERIVED_LABELS = ("answer", "tool")
TEXT_REPLY = "(text reply)"
_FIRST_WORD = re.compile(r"\s*([A-Za-z]+)")


def _answer(reply: dict[str, Any] | None) -> str | None:
    if reply is None or reply.get("tool_calls"):
        return None
    content = reply.get("content")
    if not isinstance(content, str):
        return None
    match = _FIRST_WORD.match(content)
    word = match.group(1).lower() if match else ""
    return word if word in ("yes", "no") else None


def _tool(record: dict[str, Any], fmt: str, reply: dict[str, Any] | None) -> str | None:
    replies = [m for m in record["messages"] if isinstance(m, dict) and m.get("role") == "assistant"] \
        if fmt in ("chat", "tools") and isinstance(record.get("messages"), list) else [reply] if reply else []
    for message in replies:
        if not isinstance(message.get("content") or "", str) or not isinstance(message.get("tool_calls") or [], list):
            continue  # malformed; the schema check reports it
        calls = parse_message(message).tool_calls
        if calls:
            return calls[0].name
    return TEXT_REPLY if record.get("tools") else None


def label_of(record: dict[str, Any], fmt: str | None, field: str) -> str | None:
    """The value of label ``field`` for a record, or None when it has none.

    A metadata field of that name wins over a derived label of the same name.
    """
    value = record.get(field)
    if isinstance(value, str | int | bool) and str(value).strip():
        return str(value)
    if fmt is None or field not in DERIVED_LABELS:
        return None
    reply = target_message(record, fmt)
    reply = reply if isinstance(reply, dict) else None
    return _answer(reply) if field == "answer" else _tool(record, fmt, reply)


def label_counts(records: list[tuple[dict[str, Any], str | None]]) -> dict[str, dict[str, int]]:
    """Counts per label value, for every label the records carry (``{field: {value: count}}``)."""
    counts: dict[str, Counter[str]] = {}
    fields = [f for f in METADATA_LABELS if any(f in r for r, _ in records)] + list(DERIVED_LABELS)
    for field in fields:
        values = [label_of(r, fmt, field) for r, fmt in records]
        present = [v for v in values if v is not None]
        if field == "answer" and len(present) * 2 <= len(records):
            continue  # not a yes/no task (see the module docstring)
        if present:
            counts[field] = Counter(present)
    return {field: dict(c.most_common()) for field, c in counts.items()}


def imbalance(counts: dict[str, int], max_ratio: float, min_records: int) -> float | None:
    """The most/least common ratio when it exceeds ``max_ratio`` (None when balanced or too few records)."""
    if sum(counts.values()) < min_records:
        return None
    if len(counts) < 2:
        return None
    ratio = max(counts.values()) / min(counts.values())
    return ratio if ratio > max_ratio else None
