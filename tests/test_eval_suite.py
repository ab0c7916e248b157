"""Suite loading: the schema, and errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from punie.errors import DataError
from punie.eval import load_suite

GOOD = {"id": "read-003", "category": "files", "messages": [{"role": "user", "content": "Show me setup.cfg"}],
        "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {
            "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}],
        "scorer": "tool_call", "expect": {"tool_calls": [{"name": "read_file", "arguments": {"path": "setup.cfg"}}]}}


def write(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "suite.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_loads_cases_and_defaults(tmp_path):
    plain = {"id": "n1", "messages": [{"role": "user", "content": "2+2?"}], "scorer": "numeric",
             "expect": {"answer": "4"}}
    suite = load_suite(write(tmp_path, GOOD, "", plain))
    assert [c.id for c in suite.cases] == ["read-003", "n1"]
    assert suite.cases[1].category == "general" and suite.cases[1].tools is None
    assert suite.cases[1].line == 3
    assert suite.categories == ["files", "general"]
    assert len(suite.sha256) == 64


@pytest.mark.parametrize(("bad", "message"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (GOOD | {"scorer": "fuzzy"}, "unknown scorer 'fuzzy'"),
    (GOOD | {"id": ""}, "'id' must be a non-empty string"),
    (GOOD | {"messages": []}, "'messages' must be a non-empty list"),
    (GOOD | {"messages": [{"role": "robot", "content": "x"}]}, "messages[0] needs a 'role'"),
    (GOOD | {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
     "the last message is the assistant's"),
    (GOOD | {"expect": {"tool_calls": []}}, "bad 'expect' for scorer 'tool_call'"),
    (GOOD | {"expect": {"tool_calls": [{"name": "write_file", "arguments": {}}]}}, "'write_file' is not among"),
    (GOOD | {"tools": {"name": "x"}}, "'tools' must be a list"),
    (GOOD | {"scorer": "yes_no", "expect": {"answer": "maybe"}}, "expected {'answer': 'yes'}"),
    (GOOD | {"extra": 1}, "unknown field(s) ['extra']"),
])
def test_bad_line_names_file_and_line(tmp_path, bad, message):
    path = write(tmp_path, GOOD | {"id": "ok-1"}, bad)
    with pytest.raises(DataError) as info:
        load_suite(path)
    assert f"{path}:2:" in str(info.value)
    assert message in str(info.value)


def test_duplicate_ids_and_empty_and_missing(tmp_path):
    with pytest.raises(DataError, match=r"suite.jsonl:2: duplicate case id 'read-003'.*line 1"):
        load_suite(write(tmp_path, GOOD, GOOD))
    with pytest.raises(DataError, match="has no cases"):
        load_suite(write(tmp_path, ""))
    with pytest.raises(DataError, match="does not exist"):
        load_suite(tmp_path / "nope.jsonl")
