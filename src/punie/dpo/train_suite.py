"""A training suite for ``punie improve`` from chat/tools training data: each record's first reply as ``expect``.

A record's messages up to its first assistant turn become a case's prompt; that
turn becomes what the case expects: its tool calls (the ``tool_call`` scorer,
exact arguments) or, for a plain reply, ``no_tool_call``. Cases whose prompt is
also in the held-out suite are left out (and counted), so the suite the result
is reported on stays held out. Written for the demo's data (``data/agent``) but
any ``tools``-format file works.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from punie import fileio
from punie.chat.toolcalls import parse_message
from punie.errors import DataError
from punie.eval.overlap import prompt_key, suite_prompts
from punie.eval.suite import load_suite


def cases_from_records(path: Path, exclude: Iterable[Path] = ()) -> tuple[list[dict[str, Any]], int]:
    """(suite cases, how many records were left out for sharing a prompt with a suite of ``exclude``)."""
    held_out = set().union(*(suite_prompts(load_suite(suite).cases) for suite in exclude))
    cases, shared = [], 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}).") from exc
        case = _case(record, f"{path.stem}-{number:04d}")
        if case is None:
            raise DataError(f"{path}:{number}: expected a chat record with 'messages' holding an assistant turn.")
        if prompt_key(case["messages"]) in held_out:
            shared += 1
            continue
        cases.append(case)
    return cases, shared


def write_training_suite(data_file: Path, out: Path, exclude: Iterable[Path] = ()) -> tuple[int, int]:
    """Write the suite; returns (cases written, records left out as shared with a suite of ``exclude``)."""
    exclude = list(exclude)
    cases, shared = cases_from_records(data_file, exclude)
    if not cases:
        raise DataError(f"{data_file} gave no training case (every prompt is also in "
                        f"{', '.join(map(str, exclude))}).")
    fileio.write_text(out, "".join(json.dumps(c) + "\n" for c in cases))
    load_suite(out)  # the cases must pass the suite's own checks
    return len(cases), shared


def _case(record: Any, case_id: str) -> dict[str, Any] | None:
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list):
        return None
    first = next((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"), None)
    if first is None or first == 0:
        return None
    calls = parse_message(messages[first]).tool_calls
    expect: dict[str, Any] = ({"tool_calls": [{"name": c.name, "arguments": c.arguments} for c in calls]}
                              if calls else {"no_tool_call": True})
    case = {"id": case_id, "category": str(record.get("category", "general")), "messages": messages[:first],
            "scorer": "tool_call", "expect": expect}
    if record.get("tools"):
        case["tools"] = record["tools"]
    return case
