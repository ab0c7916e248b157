"""The chat template and the tool-call parser agree with each other and with mlx-lm."""

from __future__ import annotations

import json

import pytest

from punie.chat import toolcalls
from punie.chat.template import default_system_prompt, render

READ_FILE = {"type": "function", "function": {
    "name": "read_file", "description": "Read a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from mlx_lm.tokenizer_utils import load

    return load(tiny_model)


def conversation():
    return [
        {"role": "user", "content": "Show me setup.cfg"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "read_file", "arguments": {"path": "setup.cfg"}}}]},
        {"role": "tool", "content": "[metadata]\nname = demo"},
        {"role": "assistant", "content": "It names the package demo."},
    ]


def test_mlx_lm_sees_tool_calling_with_json_tools_parser(tokenizer):
    assert tokenizer.has_tool_calling
    assert tokenizer.tool_call_start == "<tool_call>" and tokenizer.tool_call_end == "</tool_call>"
    parsed = tokenizer.tool_parser('\n{"name": "read_file", "arguments": {"path": "a"}}\n', None)
    assert parsed == {"name": "read_file", "arguments": {"path": "a"}}


@pytest.mark.slow
def test_tools_and_calls_render_in_the_parsed_format(default_model):
    from mlx_lm.tokenizer_utils import load

    text = render(load(default_model), conversation(), [READ_FILE])  # the real model's template and system prompt
    assert "<tools>\nread_file(path: string): Read a file.\n</tools>" in text  # the schema reaches the model
    assert '<tool_call>\n{"name": "read_file", "arguments": {"path": "setup.cfg"}}\n</tool_call><|im_end|>' in text
    assert "<|im_start|>tool\n<tool_response>\n[metadata]\nname = demo\n</tool_response><|im_end|>" in text
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_string_arguments_are_not_double_encoded(tokenizer):
    messages = conversation()[:2]
    messages[1]["tool_calls"][0]["function"]["arguments"] = '{"path": "setup.cfg"}'
    assert '"arguments": {"path": "setup.cfg"}}' in render(tokenizer, messages, [READ_FILE])


def test_every_assistant_turn_round_trips(tokenizer):
    messages = conversation()
    assert toolcalls.roundtrip_errors(tokenizer, messages, [READ_FILE], 1) == []
    assert toolcalls.roundtrip_errors(tokenizer, messages, [READ_FILE], 3) == []


def test_roundtrip_catches_a_target_written_as_text(tokenizer):
    # The failure that cost an earlier project its evaluation: the call is prose, not a structured call.
    messages = conversation()[:1] + [{"role": "assistant", "content": 'Tool call: {"name": "read_file"}'}]
    messages[1]["tool_calls"] = [{"type": "function", "function": {"name": "read_file",
                                                                    "arguments": {"path": "x"}}}]
    messages[1]["content"] = ""
    assert toolcalls.roundtrip_errors(tokenizer, messages, [READ_FILE], 1) == []

    class ProseTemplate:
        """A template that writes tool calls as prose, as the broken pipeline did."""

        def apply_chat_template(self, msgs, tools=None, tokenize=False, add_generation_prompt=False):
            out = "".join(f"{m['role']}: {m.get('content') or ''}"
                          + "".join(f"Tool call: {json.dumps(c['function'])}" for c in m.get("tool_calls") or [])
                          + "\n" for m in msgs)
            return out + ("assistant: " if add_generation_prompt else "")

    problems = toolcalls.roundtrip_errors(ProseTemplate(), messages, [READ_FILE], 1)
    assert problems and "does not render" in problems[-1] or "parses as []" in problems[-1]


def test_generation_prompt_is_a_prefix_of_the_rendered_conversation(tokenizer):
    messages = conversation()
    prompt = render(tokenizer, messages[:3], [READ_FILE], add_generation_prompt=True)
    assert render(tokenizer, messages, [READ_FILE]).startswith(prompt)


def test_parse_text_reads_content_calls_and_errors():
    text = ('Let me look.\n<tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n</tool_call>\n'
            '<tool_call>{"name": "list_dir", "arguments": "{\\"path\\": \\".\\"}"}</tool_call>'
            '<tool_call>{"name": broken}</tool_call><|im_end|>')
    parsed = toolcalls.parse_text(text)
    assert parsed.content == "Let me look."
    assert [c.as_dict() for c in parsed.tool_calls] == [
        {"name": "read_file", "arguments": {"path": "a.txt"}}, {"name": "list_dir", "arguments": {"path": "."}}]
    assert len(parsed.errors) == 1 and "not valid JSON" in parsed.errors[0]


@pytest.mark.parametrize("text, error", [
    ('<tool_call>{"name": "f", "arguments": {"a": 1', "never closed"),
    ('<tool_call>{"arguments": {}}</tool_call>', "no string 'name'"),
    ('<tool_call>{"name": "f", "arguments": [1]}</tool_call>', "must be an object"),
    ('<tool_call>["f"]</tool_call>', "expected a JSON object"),
])
def test_parse_text_reports_bad_calls(text, error):
    parsed = toolcalls.parse_text(text)
    assert parsed.tool_calls == [] and error in parsed.errors[0]


def test_truncated_but_complete_call_is_accepted():
    parsed = toolcalls.parse_text('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n')
    assert [c.as_dict() for c in parsed.tool_calls] == [{"name": "f", "arguments": {"a": 1}}]


def test_parse_message_reads_openai_tool_calls_field():
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a"}'}}]}
    parsed = toolcalls.parse_message(message)
    assert parsed.content == "" and [c.as_dict() for c in parsed.tool_calls] == [
        {"name": "read_file", "arguments": {"path": "a"}}]
    back = parsed.tool_calls[0].to_openai("call_1")
    assert json.loads(back["function"]["arguments"]) == {"path": "a"}


def test_default_system_prompt_comes_from_the_original_template():
    original = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                "{{ '<|im_start|>system\nYou are Bob.<|im_end|>\n' }}{% endif %}{% endfor %}")
    assert default_system_prompt(original) == "You are Bob."
    assert default_system_prompt(None) == "You are a helpful AI assistant."


def test_tools_render_as_signatures_or_json(tokenizer):
    search = {"type": "function", "function": {"name": "search", "description": "Find text.", "parameters": {
        "type": "object", "properties": {"pattern": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["pattern"]}}}
    nested = {"type": "function", "function": {"name": "plan", "description": "Plan.", "parameters": {
        "type": "object", "properties": {"steps": {"type": "array", "items": {"type": "string"}}}}}}
    described = {"name": "get", "parameters": {"type": "object", "properties": {
        "id": {"type": "string", "description": "The record id"}}, "required": ["id"]}}
    text = render(tokenizer, [{"role": "user", "content": "hi"}], [search, nested, described])
    assert "\nsearch(pattern: string, limit?: integer): Find text.\n" in text
    # Anything a signature cannot say exactly is shown as the JSON schema itself.
    assert "\n" + json.dumps(nested["function"]) + "\n" in text
    assert "\n" + json.dumps(described) + "\n" in text
    assert "\nno_args(): Nothing.\n" in render(tokenizer, [{"role": "user", "content": "hi"}], [
        {"type": "function", "function": {"name": "no_args", "description": "Nothing.", "parameters": {}}}, search])
