"""Vocabulary leakage: valid/test tool calls whose argument values train already shows.

Duplicate records are one kind of leakage (:mod:`punie.data.dedupe`); this is a
subtler one. When the eval records ask about the same paths, patterns and
commands as training (one workspace split by record), a model that memorised
train's argument values scores well without learning to copy arguments from the
request, and the score says little about a new project. ``punie data check``
warns when the share of a split's distinct argument values that also occur in
train passes a threshold.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Values too short or too long to be vocabulary ("." is the root; long ones are file contents).
_MIN_CHARS, _MAX_CHARS = 2, 200


def argument_values(record: dict[str, Any]) -> set[str]:
    """The string argument values of the tool calls the record trains (its last assistant message)."""
    messages = record.get("messages")
    if not isinstance(messages, list):
        return set()
    target = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "assistant"), None)
    values: set[str] = set()
    for call in (target or {}).get("tool_calls") or []:
        arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                continue  # an unparseable call is reported by the tool-call check
        if isinstance(arguments, dict):
            values.update(v.strip() for v in arguments.values()
                          if isinstance(v, str) and _MIN_CHARS <= len(v.strip()) <= _MAX_CHARS)
    return values


@dataclass(frozen=True)
class SharedVocabulary:
    shared: list[str]  # sorted
    total: int  # distinct argument values in the split

    @property
    def share(self) -> float:
        return len(self.shared) / self.total if self.total else 0.0


def shared_vocabulary(train: Iterable[dict[str, Any]], split: Iterable[dict[str, Any]]) -> SharedVocabulary:
    seen = set().union(*(argument_values(r) for r in train))
    values = set().union(*(argument_values(r) for r in split))
    return SharedVocabulary(sorted(values & seen), len(values))
