"""The tool-call parser shared by data checks, traces and evaluation.

Two sources of tool calls are read into the same :class:`ToolCall` values:

* model text in the template's format: JSON objects inside
  ``<tool_call>...</tool_call>`` tags (mlx-lm's ``json_tools`` format), and
* OpenAI-style messages, whose ``tool_calls`` field holds
  ``{"type": "function", "function": {"name": ..., "arguments": "<json>"}}``.

A training target is aligned with evaluation when rendering it through the chat
template and parsing the text back gives the same calls (:func:`roundtrip_errors`).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from punie.errors import json_error_text

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
_BLOCK = re.compile(re.escape(TOOL_CALL_START) + r"(.*?)(?:" + re.escape(TOOL_CALL_END) + r"|$)", re.S)
_END_MARKERS = ("<|im_end|>", "<|endoftext|>")
_NAMED = re.compile(re.escape(TOOL_CALL_START) + r'\s*\{\s*"name"\s*:\s*"([^"]+)"')


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def to_message_call(self) -> dict[str, Any]:
        """The form stored in training data and traces (arguments as an object)."""
        return {"type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    def to_openai(self, call_id: str | None = None) -> dict[str, Any]:
        """The OpenAI API form (arguments as a JSON string)."""
        return {"id": call_id or f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


@dataclass
class ParsedResponse:
    """What a model said: plain text, the tool calls, and blocks that did not parse."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class ToolCallFormatError(ValueError):
    """A tool call that is not ``{"name": str, "arguments": object}``."""


def _coerce_call(obj: Any) -> ToolCall:
    if isinstance(obj, dict) and isinstance(obj.get("function"), dict):
        obj = obj["function"]
    if not isinstance(obj, dict):
        raise ToolCallFormatError(f"expected a JSON object, got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ToolCallFormatError("the call has no string 'name'")
    args = obj.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise ToolCallFormatError(
                f"'arguments' of {name!r} is a string that is not JSON: {json_error_text(exc)}") from exc
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ToolCallFormatError(f"'arguments' of {name!r} must be an object, got {type(args).__name__}")
    return ToolCall(name=name.strip(), arguments=args)


def parse_call(obj: Any) -> ToolCall:
    """One structured call (message form, OpenAI form or bare ``{name, arguments}``)."""
    return _coerce_call(obj)


def parse_text(text: str) -> ParsedResponse:
    """Split model output into plain content and ``<tool_call>`` JSON blocks.

    A block left open at the end (generation stopped by a token limit) is parsed
    if its JSON is complete and reported as an error otherwise.
    """
    for marker in _END_MARKERS:
        text = text.replace(marker, "")
    calls: list[ToolCall] = []
    errors: list[str] = []
    for match in _BLOCK.finditer(text):
        body = match.group(1).strip()
        closed = match.group(0).endswith(TOOL_CALL_END)
        try:
            calls.append(_coerce_call(json.loads(body)))
        except json.JSONDecodeError as exc:
            where = "" if closed else " (the block was never closed)"
            errors.append(f"tool call is not valid JSON{where}: {json_error_text(exc)} in {body[:120]!r}")
        except ToolCallFormatError as exc:
            errors.append(f"tool call has the wrong shape: {exc}")
    content = _BLOCK.sub("", text).strip()
    return ParsedResponse(content=content, tool_calls=calls, errors=errors)


def named_tool(text: str) -> str | None:
    """The tool name the first ``<tool_call>`` block of ``text`` begins with, read even when its JSON is broken
    (cut off by a token limit, say); None when no block names one."""
    named = _NAMED.search(text)
    return named.group(1) if named else None


def parse_message(message: dict[str, Any]) -> ParsedResponse:
    """Tool calls of an assistant message: its ``tool_calls`` field plus any in its text.

    Servers that parse tool calls return them in ``tool_calls`` and leave the text
    empty; raw completions leave them in the text. Both are read.
    """
    content = message.get("content") or ""
    if not isinstance(content, str):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    parsed = parse_text(content)
    for raw in message.get("tool_calls") or []:
        try:
            parsed.tool_calls.append(_coerce_call(raw))
        except ToolCallFormatError as exc:
            parsed.errors.append(f"tool_calls entry has the wrong shape: {exc}")
    return parsed


def roundtrip_errors(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                     index: int) -> list[str]:
    """Why the assistant message at ``index`` would not parse back as itself.

    Renders the conversation up to and including that message with the chat
    template, cuts out the assistant's turn exactly as training sees it, parses
    it as evaluation would, and compares the calls. An empty list means aligned.
    """
    from punie.chat.template import render

    message = messages[index]
    expected = parse_message({"tool_calls": message.get("tool_calls")})
    if expected.errors:
        return expected.errors
    prefix = render(tokenizer, messages[:index], tools, add_generation_prompt=True)
    full = render(tokenizer, messages[: index + 1], tools)
    if not full.startswith(prefix):
        return ["the chat template does not render the prompt as a prefix of the conversation; "
                "prompt masking would train on the wrong tokens"]
    target = full[len(prefix):]
    got = parse_text(target)
    problems = list(got.errors)
    want = [c.as_dict() for c in expected.tool_calls]
    have = [c.as_dict() for c in got.tool_calls]
    if want != have:
        problems.append(f"rendered target parses as {have} but the record says {want}; the template "
                        "does not render tool calls in the format evaluation reads")
    return problems
