"""Messages in punie's training form, and conversion to and from the OpenAI API form.

Training form (what traces store, what export writes, what mlx-lm's ``tools``
format reads): assistant tool calls are ``{"type": "function", "function":
{"name": ..., "arguments": {...}}}`` with arguments as an object; tool results are
``{"role": "tool", "content": ...}``. The OpenAI API form carries call ids and
arguments as JSON strings.
"""

from __future__ import annotations

from typing import Any

from punie.chat.toolcalls import ToolCallFormatError, parse_call, parse_text


def text_of(content: Any) -> str:
    """Message content as one string (OpenAI allows a list of text parts, or null)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def normalize_message(message: dict[str, Any]) -> dict[str, Any]:
    """One message (API or training form) in training form.

    An assistant message keeps its text unchanged when a ``<tool_call>`` block in
    it does not parse, so that export can see the broken call and reject the trace.
    """
    role = message.get("role", "user")
    content = text_of(message.get("content"))
    if role == "function":
        role = "tool"
    if role != "assistant":
        return {"role": role, "content": content}
    from_text = parse_text(content)
    calls = list(from_text.tool_calls)
    broken = bool(from_text.errors)
    for raw in message.get("tool_calls") or []:
        try:
            calls.append(parse_call(raw))
        except ToolCallFormatError:
            broken = True
    out: dict[str, Any] = {"role": "assistant", "content": content if broken else from_text.content}
    if calls or broken:
        out["tool_calls"] = [c.to_message_call() for c in calls]
        if broken:
            out["tool_call_errors"] = True
    return out


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [normalize_message(m) for m in messages]


def to_openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training-form messages for an OpenAI-compatible endpoint: call ids, JSON-string arguments.

    Each tool message answers the earliest unanswered call before it, in order.
    """
    out: list[dict[str, Any]] = []
    pending: list[str] = []
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "assistant" and message.get("tool_calls"):
            calls = []
            for position, raw in enumerate(message["tool_calls"]):
                call_id = f"call_{index}_{position}"
                calls.append(parse_call(raw).to_openai(call_id))
                pending.append(call_id)
            out.append({"role": "assistant", "content": message.get("content") or "", "tool_calls": calls})
        elif role == "tool":
            item = {"role": "tool", "content": message.get("content", "")}
            if pending:
                item["tool_call_id"] = pending.pop(0)
            out.append(item)
        else:
            out.append({"role": role, "content": message.get("content") or ""})
    return out
