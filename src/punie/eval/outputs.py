"""What a model produced for a case, and what a scorer made of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from punie.chat.toolcalls import ParsedResponse, ToolCall, parse_message, parse_text


@dataclass
class ModelOutput:
    """One answer, parsed by punie's one tool-call parser.

    ``raw`` is what the engine returned as text (tool-call blocks included for
    in-process generation); ``content`` is that text without the blocks.
    """

    raw: str
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    parse_errors: list[str] = field(default_factory=list)

    @classmethod
    def from_text(cls, text: str) -> ModelOutput:
        return cls._from_parsed(text, parse_text(text))

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ModelOutput:
        """An OpenAI-style assistant message (``content`` and ``tool_calls``) from a server."""
        raw = message.get("content") or ""
        return cls._from_parsed(raw if isinstance(raw, str) else str(raw), parse_message(message))

    @classmethod
    def _from_parsed(cls, raw: str, parsed: ParsedResponse) -> ModelOutput:
        return cls(raw=raw, content=parsed.content, tool_calls=list(parsed.tool_calls),
                   parse_errors=list(parsed.errors))


@dataclass
class Score:
    """A scorer's verdict: ``passed`` is strict; ``score`` in [0, 1] may give partial credit."""

    passed: bool
    score: float
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, **details: Any) -> Score:
        return cls(True, 1.0, "", details)

    @classmethod
    def fail(cls, reason: str, score: float = 0.0, **details: Any) -> Score:
        return cls(False, score, reason, details)
