"""Every scorer on hand-made cases: what passes, what fails, and why."""

from __future__ import annotations

import json
from typing import Any

import pytest

from punie.eval.outputs import ModelOutput
from punie.eval.scorers import SCORERS, extract_answer, predicted_label
from punie.eval.suite import EvalCase

READ_FILE = {"type": "function", "function": {
    "name": "read_file", "description": "Read a file",
    "parameters": {"type": "object", "properties": {
        "path": {"type": "string"}, "max_lines": {"type": "integer"},
        "encoding": {"type": "string", "enum": ["utf-8", "latin-1"]}},
        "required": ["path"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "parameters": {"type": "object", "properties": {
        "query": {"type": "string"}, "limit": {"type": "number"}, "exact": {"type": "boolean"}},
        "required": ["query"]}}}


def case(scorer: str, expect: dict[str, Any], tools: list[dict[str, Any]] | None = None) -> EvalCase:
    return EvalCase(id="t", messages=[{"role": "user", "content": "q"}], scorer=scorer, expect=expect, tools=tools)


def call_text(*calls: dict[str, Any]) -> ModelOutput:
    return ModelOutput.from_text("".join(f"<tool_call>\n{json.dumps(c)}\n</tool_call>" for c in calls))


def score(c: EvalCase, output: ModelOutput):
    return SCORERS[c.scorer].score(c, output)


# --- tool_call ---------------------------------------------------------------------------------

EXPECT_READ = {"tool_calls": [{"name": "read_file", "arguments": {"path": "setup.cfg"}}]}


def test_tool_call_exact_match_passes():
    s = score(case("tool_call", EXPECT_READ, [READ_FILE]),
              call_text({"name": "read_file", "arguments": {"path": "setup.cfg"}}))
    assert s.passed and s.score == 1.0


def test_tool_call_string_normalisation():
    s = score(case("tool_call", EXPECT_READ, [READ_FILE]),
              call_text({"name": "read_file", "arguments": {"path": "  SETUP.cfg "}}))
    assert s.passed


def test_tool_call_from_openai_tool_calls_field():
    message = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "read_file", "arguments": json.dumps({"path": "setup.cfg"})}}]}
    assert score(case("tool_call", EXPECT_READ, [READ_FILE]), ModelOutput.from_message(message)).passed


def test_tool_call_wrong_name_fails_without_partial_credit():
    s = score(case("tool_call", EXPECT_READ, [READ_FILE, SEARCH]),
              call_text({"name": "search", "arguments": {"query": "setup.cfg"}}))
    assert not s.passed and s.score == 0
    assert s.details["names_right"] is False
    assert "no call to 'read_file'" in s.reason


def test_tool_call_right_name_wrong_value_is_partial():
    s = score(case("tool_call", EXPECT_READ, [READ_FILE]),
              call_text({"name": "read_file", "arguments": {"path": "setup.py"}}))
    assert not s.passed
    assert s.details["names_right"] is True
    assert "path='setup.py'" in s.reason


def test_tool_call_missing_required_argument():
    s = score(case("tool_call", EXPECT_READ, [READ_FILE]), call_text({"name": "read_file", "arguments": {}}))
    assert not s.passed and "missing required argument 'path'" in s.reason


def test_tool_call_undeclared_argument_fails():
    s = score(case("tool_call", EXPECT_READ, [READ_FILE]),
              call_text({"name": "read_file", "arguments": {"path": "setup.cfg", "mode": "r"}}))
    assert not s.passed and "'mode' is not declared" in s.reason


def test_tool_call_declared_optional_argument_is_allowed():
    s = score(case("tool_call", EXPECT_READ, [READ_FILE]),
              call_text({"name": "read_file", "arguments": {"path": "setup.cfg", "max_lines": 10}}))
    assert s.passed


def test_tool_call_type_checks():
    bad_int = call_text({"name": "read_file", "arguments": {"path": "setup.cfg", "max_lines": "10"}})
    s = score(case("tool_call", EXPECT_READ, [READ_FILE]), bad_int)
    assert not s.passed and "should be integer" in s.reason
    bool_for_int = call_text({"name": "read_file", "arguments": {"path": "setup.cfg", "max_lines": True}})
    assert not score(case("tool_call", EXPECT_READ, [READ_FILE]), bool_for_int).passed
    bad_enum = call_text({"name": "read_file", "arguments": {"path": "setup.cfg", "encoding": "ascii"}})
    assert not score(case("tool_call", EXPECT_READ, [READ_FILE]), bad_enum).passed


def test_tool_call_numbers_compare_by_value():
    expect = {"tool_calls": [{"name": "search", "arguments": {"query": "x", "limit": 5}}]}
    assert score(case("tool_call", expect, [SEARCH]),
                 call_text({"name": "search", "arguments": {"query": "x", "limit": 5.0}})).passed
    assert not score(case("tool_call", expect, [SEARCH]),
                     call_text({"name": "search", "arguments": {"query": "x", "limit": 6}})).passed


def test_tool_call_bool_is_not_a_number():
    expect = {"tool_calls": [{"name": "search", "arguments": {"query": "x", "exact": True}}]}
    assert not score(case("tool_call", expect, [SEARCH]),
                     call_text({"name": "search", "arguments": {"query": "x", "exact": 1}})).passed


def test_tool_call_one_of_and_optional_omission():
    expect = {"tool_calls": [{"name": "read_file", "arguments": {
        "path": {"one_of": ["setup.cfg", "./setup.cfg"]}, "max_lines": {"one_of": [None, 100]}}}]}
    c = case("tool_call", expect, [READ_FILE])
    assert score(c, call_text({"name": "read_file", "arguments": {"path": "./setup.cfg"}})).passed
    assert score(c, call_text({"name": "read_file", "arguments": {"path": "setup.cfg", "max_lines": 100}})).passed
    assert not score(c, call_text({"name": "read_file", "arguments": {"path": "setup.cfg", "max_lines": 5}})).passed
    assert not score(c, call_text({"name": "read_file", "arguments": {"path": "other.cfg"}})).passed


def test_tool_call_expected_optional_argument_must_be_present():
    expect = {"tool_calls": [{"name": "read_file", "arguments": {"path": "a", "max_lines": 3}}]}
    s = score(case("tool_call", expect, [READ_FILE]), call_text({"name": "read_file", "arguments": {"path": "a"}}))
    assert not s.passed and "missing argument 'max_lines'" in s.reason


def test_tool_call_parallel_calls_match_in_any_order():
    expect = {"tool_calls": [{"name": "read_file", "arguments": {"path": "a"}},
                             {"name": "read_file", "arguments": {"path": "b"}}]}
    c = case("tool_call", expect, [READ_FILE])
    out = call_text({"name": "read_file", "arguments": {"path": "b"}},
                    {"name": "read_file", "arguments": {"path": "a"}})
    assert score(c, out).passed
    half = score(c, call_text({"name": "read_file", "arguments": {"path": "b"}},
                              {"name": "read_file", "arguments": {"path": "c"}}))
    assert not half.passed and half.score == 0.5


def test_tool_call_extra_call_fails_strictly():
    c = case("tool_call", EXPECT_READ, [READ_FILE, SEARCH])
    s = score(c, call_text({"name": "read_file", "arguments": {"path": "setup.cfg"}},
                           {"name": "search", "arguments": {"query": "x"}}))
    assert not s.passed and s.score == 0.5 and "made 2 call(s), expected 1" in s.reason


def test_tool_call_no_call_and_malformed_call():
    c = case("tool_call", EXPECT_READ, [READ_FILE])
    s = score(c, ModelOutput.from_text("I will read setup.cfg for you."))
    assert not s.passed and "no tool call" in s.reason
    bad = score(c, ModelOutput.from_text('<tool_call>\n{"name": "read_file", "arguments": {"path": \n</tool_call>'))
    assert not bad.passed and "not valid JSON" in bad.reason


def test_tool_call_irrelevance():
    c = case("tool_call", {"no_tool_call": True}, [READ_FILE])
    assert score(c, ModelOutput.from_text("Hello! How can I help?")).passed
    assert not score(c, call_text({"name": "read_file", "arguments": {"path": "x"}})).passed
    assert not score(c, ModelOutput.from_text("<tool_call>\n{broken\n</tool_call>")).passed


def test_tool_call_expect_validation():
    check = SCORERS["tool_call"].check_expect
    assert check({"no_tool_call": True}) is None
    assert check(EXPECT_READ) is None
    assert "tool_calls" in (check({}) or "")
    assert check({"tool_calls": [{"arguments": {}}]})
    assert check({"no_tool_call": True, "tool_calls": []})
    check_case = SCORERS["tool_call"].check_case
    assert check_case is not None
    typo = case("tool_call", {"tool_calls": [{"name": "read_fle", "arguments": {}}]}, [READ_FILE])
    assert "read_fle" in (check_case(typo) or "")
    undeclared = case("tool_call", {"tool_calls": [{"name": "read_file", "arguments": {"pth": "x"}}]}, [READ_FILE])
    assert "pth" in (check_case(undeclared) or "")


# --- text scorers ------------------------------------------------------------------------------

def test_exact():
    c = case("exact", {"answer": "Paris"})
    assert score(c, ModelOutput.from_text("  Paris\n")).passed
    assert not score(c, ModelOutput.from_text("paris")).passed
    assert score(case("exact", {"answer": "Paris", "case_sensitive": False}), ModelOutput.from_text("paris")).passed


def test_contains_partial_score():
    c = case("contains", {"contains": ["alpha", "Beta"]})
    assert score(c, ModelOutput.from_text("ALPHA and beta")).passed
    s = score(c, ModelOutput.from_text("only alpha"))
    assert not s.passed and s.score == 0.5 and "Beta" in s.reason


def test_json_scorer():
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
              "required": ["name", "age"], "additionalProperties": False}
    c = case("json", {"json_schema": schema})
    assert score(c, ModelOutput.from_text('{"name": "Ann", "age": 3}')).passed
    assert score(c, ModelOutput.from_text('```json\n{"name": "Ann", "age": 3}\n```')).passed
    invalid = score(c, ModelOutput.from_text('{"name": "Ann", "age": 3'))
    assert not invalid.passed and "not valid JSON" in invalid.reason
    assert "age" in score(c, ModelOutput.from_text('{"name": "Ann"}')).reason
    assert not score(c, ModelOutput.from_text('{"name": "Ann", "age": -1}')).passed
    assert not score(c, ModelOutput.from_text('{"name": "Ann", "age": 1, "x": 0}')).passed
    assert not score(c, ModelOutput.from_text('{"name": "Ann", "age": true}')).passed


def test_json_scorer_rejects_unsupported_schema_keywords():
    problem = SCORERS["json"].check_expect({"json_schema": {"type": "object", "patternProperties": {}}})
    assert problem and "patternProperties" in problem
    assert SCORERS["json"].check_expect({"json_schema": {"type": "strnig"}})


def test_numeric_extraction_order():
    assert extract_answer("think 3 then 4 <answer>204</answer> and 7") == "204"
    assert extract_answer("It is 1,204 apples or 5") == "5"
    assert extract_answer("The total is 1,204.") == "1,204"
    assert extract_answer("no digits here\nfinal line") == "final line"


def test_numeric_scorer():
    c = case("numeric", {"answer": "204"})
    assert score(c, ModelOutput.from_text("Let me add: 200 + 4 = 204")).passed
    assert score(c, ModelOutput.from_text("<answer>204.0</answer> (checked with 7 steps)")).passed
    assert not score(c, ModelOutput.from_text("The answer is 205")).passed
    assert score(case("numeric", {"answer": "1204"}), ModelOutput.from_text("Total: 1,204")).passed
    assert score(case("numeric", {"answer": "3.14", "tolerance": 0.01}), ModelOutput.from_text("about 3.141")).passed
    assert score(case("numeric", {"answer": "Paris"}), ModelOutput.from_text("It is\nparis")).passed


def test_yes_no_labels_and_balance():
    assert predicted_label("No, it is not.") == "no"
    assert predicted_label("Yes.") == "yes"
    assert predicted_label("I think the answer is yes") == "yes"
    assert predicted_label("<answer>no</answer> although yes seems tempting") == "no"
    assert predicted_label("Maybe.") == "unknown"
    yes_case, no_case = case("yes_no", {"answer": "yes"}), case("yes_no", {"answer": "no"})
    scorer = SCORERS["yes_no"]
    scored = [(c, scorer.score(c, ModelOutput.from_text("No."))) for c in [yes_case] * 3 + [no_case] * 3]
    assert [s.passed for _, s in scored] == [False] * 3 + [True] * 3
    assert scorer.summarize is not None
    summary = scorer.summarize(scored)
    assert summary["predicted"] == {"no": 6}
    assert summary["recall"] == {"yes": 0.0, "no": 1.0}
    assert summary["balanced_accuracy"] == 0.5
    assert "'no' 6/6" in summary["warning"]


def test_route_scorer():
    c = case("route", {"route": ["search", "code"]})
    assert score(c, ModelOutput.from_text('["search", "code"]')).passed
    assert score(c, ModelOutput.from_text("search -> code")).passed
    assert score(c, ModelOutput.from_text('{"route": ["Search", "code"]}')).passed
    assert score(c, call_text({"name": "search", "arguments": {}}, {"name": "code", "arguments": {}})).passed
    wrong_order = score(c, ModelOutput.from_text("code, search"))
    assert not wrong_order.passed and wrong_order.details["precision"] == 1.0
    extra = score(c, ModelOutput.from_text("1. search\n2. web\n3. code"))
    assert not extra.passed
    assert extra.details["precision"] == pytest.approx(2 / 3) and extra.details["recall"] == 1.0
    assert SCORERS["route"].summarize is not None
    summary = SCORERS["route"].summarize([(c, extra)])
    assert summary["exact_match"] == 0.0 and summary["recall"] == 1.0
