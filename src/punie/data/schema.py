"""Per-record validation: shape of each format, messages, tool schemas and tool calls.

Everything here works without a tokenizer. Assistant tool calls are read with
punie's one parser (:mod:`punie.chat.toolcalls`), the one evaluation uses, so a
call that passes here is a call the eval would score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from punie.chat.toolcalls import parse_message
from punie.data.findings import Problem
from punie.data.formats import ALLOWED_KEYS, FORMAT_KEYS, as_reply, detect_format
from punie.errors import DataError

ROLES = frozenset({"system", "user", "assistant", "tool"})
MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "name", "tool_call_id"})
Tools = dict[str, dict[str, Any]]  # declared tool name -> its "parameters" schema


def validate_record(record: Any) -> tuple[str | None, list[Problem]]:
    """(format or None, every problem found) for one record."""
    try:
        fmt = detect_format(record)
    except DataError as exc:
        return None, [Problem("no-format", str(exc))]
    problems = _mixed_keys(record, fmt)
    problems += _VALIDATORS[fmt](record)
    return fmt, problems


def _mixed_keys(record: dict[str, Any], fmt: str) -> list[Problem]:
    foreign = sorted((record.keys() & FORMAT_KEYS) - ALLOWED_KEYS[fmt])
    problems = [Problem("mixed-keys", f"a {fmt} record also has {', '.join(repr(k) for k in foreign)}; "
                        "use one format's keys per record (mlx-lm picks a format by its keys)")] if foreign else []
    if fmt == "preference" and "prompt" in record and "messages" in record:
        problems.append(Problem("mixed-keys", "a preference pair has both 'prompt' and 'messages'; keep one"))
    return problems


def _string_field(record: dict[str, Any], key: str, *, target: bool) -> list[Problem]:
    value = record.get(key)
    if not isinstance(value, str):
        return [Problem("schema", f"'{key}' must be a string, got {type(value).__name__}")]
    if target and not value.strip():
        return [Problem("empty-target", f"'{key}' is empty or whitespace: the model would learn to say nothing")]
    return []


def _check_text(record: dict[str, Any]) -> list[Problem]:
    return _string_field(record, "text", target=True)


def _check_completions(record: dict[str, Any]) -> list[Problem]:
    problems = _string_field(record, "prompt", target=False) + _string_field(record, "completion", target=True)
    if "tools" in record:
        problems += check_tools(record["tools"])[0]
    return problems


def _check_chat(record: dict[str, Any]) -> list[Problem]:
    declared: Tools = {}  # without 'tools', any call is to an undeclared tool
    problems: list[Problem] = []
    if "tools" in record:
        tool_problems, declared = check_tools(record["tools"])
        problems += tool_problems
    return problems + check_messages(record.get("messages"), declared, need_reply=True)


def _check_preference(record: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    declared: Tools = {}
    if "tools" in record:
        tool_problems, declared = check_tools(record["tools"])
        problems += tool_problems
    if "messages" in record:
        problems += check_messages(record["messages"], declared, need_reply=False)
    elif "prompt" in record:
        problems += _string_field(record, "prompt", target=False)
    else:
        problems.append(Problem("schema", "a preference pair needs a 'prompt' string or a 'messages' list"))
    replies = {}
    for key in ("chosen", "rejected"):
        reply = as_reply(record[key])
        if reply is None:
            problems.append(Problem("schema", f"'{key}' must be a string, an assistant message or a list holding "
                                    f"one, got {_describe(record[key])}"))
            continue
        replies[key] = reply
        # A rejected reply may be wrong on purpose (a bad tool call is a fine negative): only its shape is checked.
        problems += check_assistant(reply, key, declared if key == "chosen" else None, target=key == "chosen")
    if len(replies) == 2 and _reply_key(replies["chosen"]) == _reply_key(replies["rejected"]):
        problems.append(Problem("identical-pair", "'chosen' and 'rejected' are the same reply; "
                                "the pair teaches nothing"))
    return problems


def _reply_key(reply: dict[str, Any]) -> tuple[str, str]:
    return (str(reply.get("content") or "").strip(), repr(reply.get("tool_calls")))


_VALIDATORS: dict[str, Callable[[dict[str, Any]], list[Problem]]] = {
    "chat": _check_chat,
    "tools": _check_chat,
    "completions": _check_completions,
    "text": _check_text,
    "preference": _check_preference,
}


def _describe(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_tools(tools: Any) -> tuple[list[Problem], Tools]:
    """Problems with a ``tools`` list, and the tools it declares (name -> parameters schema)."""
    if not isinstance(tools, list):
        return [Problem("schema", f"'tools' must be a list, got {_describe(tools)}")], {}
    problems: list[Problem] = []
    declared: Tools = {}
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
            problems.append(Problem("schema", f'tools[{i}] must be {{"type": "function", "function": '
                                    '{"name": str, "parameters": {...}}}'))
            continue
        if tool.get("type", "function") != "function":
            problems.append(Problem("schema", f"tools[{i}] has type {tool.get('type')!r}; "
                                    "only 'function' is supported"))
        params = fn.get("parameters", {})
        if not isinstance(params, dict):
            problems.append(Problem("schema", f"tools[{i}] ({fn['name']}): 'parameters' must be a JSON schema object"))
            params = {}
        if fn["name"] in declared:
            problems.append(Problem("schema", f"tools[{i}]: tool {fn['name']!r} is declared twice"))
        declared[fn["name"]] = params
    return problems, declared


def check_messages(messages: Any, declared: Tools | None, *, need_reply: bool) -> list[Problem]:
    """Problems with a ``messages`` list. ``need_reply``: it must end in an assistant turn to train on."""
    if not isinstance(messages, list) or not messages:
        return [Problem("schema", f"'messages' must be a non-empty list, got {_describe(messages)}")]
    problems: list[Problem] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            problems.append(Problem("schema", f"{where} must be an object, got {_describe(message)}"))
            continue
        role = message.get("role")
        if role not in ROLES:
            problems.append(Problem("schema", f"{where} has role {role!r}; expected one of {sorted(ROLES)}"))
            continue
        unknown = sorted(set(message) - MESSAGE_KEYS)
        if unknown:
            problems.append(Problem("unknown-key", f"{where} ({role}) has {', '.join(map(repr, unknown))}, "
                                    "which the chat template ignores"))
        if role == "assistant":
            problems += check_assistant(message, where, declared, target=True)
            continue
        if "tool_calls" in message:
            problems.append(Problem("schema", f"{where} ({role}) has tool_calls; only assistant messages may"))
        if not isinstance(message.get("content"), str):
            problems.append(Problem("schema", f"{where} ({role}) content must be a string, "
                                    f"got {_describe(message.get('content'))}"))
        problems += _order_problems(messages, i, role)
    if need_reply:
        problems += _reply_problems(messages)
    return problems


def _order_problems(messages: list[Any], i: int, role: str) -> list[Problem]:
    if role == "system" and i > 0:
        return [Problem("message-order", f"messages[{i}] is a system message after the first turn; "
                        "the template renders only messages[0] as the system prompt")]
    if role == "tool":
        before = messages[i - 1] if i > 0 and isinstance(messages[i - 1], dict) else {}
        if before.get("role") != "tool" and not before.get("tool_calls"):
            return [Problem("message-order", f"messages[{i}] is a tool result that follows no tool call")]
    return []


def _reply_problems(messages: list[Any]) -> list[Problem]:
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if "assistant" not in roles:
        return [Problem("schema", "no assistant message: there is nothing to train on")]
    if roles and roles[-1] != "assistant":
        return [Problem("message-order", f"the last message is {roles[-1]!r}, not 'assistant'; with --mask-prompt "
                        "training learns the last message")]
    return []


def check_assistant(message: dict[str, Any], where: str, declared: Tools | None, *, target: bool) -> list[Problem]:
    """Content and tool calls of one assistant message; ``declared=None`` skips the tool-name check."""
    content, calls = message.get("content"), message.get("tool_calls")
    if content is not None and not isinstance(content, str):
        return [Problem("schema", f"{where} (assistant) content must be a string or null, got {_describe(content)}")]
    if calls is not None and not isinstance(calls, list):
        return [Problem("schema", f"{where} (assistant) tool_calls must be a list, got {_describe(calls)}")]
    parsed = parse_message(message)
    problems = [Problem("tool-call", f"{where}: {error}") for error in parsed.errors]
    if target and not (content or "").strip() and not calls and not parsed.tool_calls:
        problems.append(Problem("empty-target", f"{where} (assistant) is empty: the model would learn to say nothing"))
    if declared is None:
        return problems
    for call in parsed.tool_calls:
        if call.name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            problems.append(Problem("undeclared-tool", f"{where} calls {call.name!r}, which this record does not "
                                    f"declare in 'tools' (declared: {known})"))
        else:
            problems += _argument_problems(where, call.name, call.arguments, declared[call.name])
    return problems


def _argument_problems(where: str, name: str, arguments: dict[str, Any], schema: dict[str, Any]) -> list[Problem]:
    props = schema.get("properties")
    problems = []
    missing = [key for key in schema.get("required", []) if key not in arguments]
    if missing:
        problems.append(Problem("tool-arguments", f"{where} calls {name!r} without required {missing}"))
    if isinstance(props, dict) and schema.get("additionalProperties") is not True:
        extra = sorted(set(arguments) - set(props))
        if extra:
            problems.append(Problem("tool-arguments", f"{where} calls {name!r} with {extra}, not in its schema"))
    return problems
