"""punie data check: every check catches a crafted bad file, and clean data of every format passes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import punie.data
from punie.data.check import check_data_dir, write_summary
from punie.errors import DataError
from punie.report.data_card import write_check_outputs

TOOLS = [
    {"type": "function", "function": {"name": "read_file", "description": "Read a file",
                                      "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                                                     "required": ["path"]}}},
    {"type": "function", "function": {"name": "list_dir", "description": "List a directory",
                                      "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                                                     "required": ["path"]}}},
]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"]


def call(name: str, **arguments) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def tools_record(i: int) -> dict:
    """A unique, valid tools record; categories alternate so labels are balanced."""
    word = f"{WORDS[i % len(WORDS)]}{i}"
    if i % 2:
        messages = [{"role": "user", "content": f"Show me {word}.txt"},
                    {"role": "assistant", "content": "", "tool_calls": [call("read_file", path=f"{word}.txt")]},
                    {"role": "tool", "content": f"contents of {word}"},
                    {"role": "assistant", "content": f"The file says: contents of {word}."}]
        return {"id": f"r{i}", "category": "read", "messages": messages, "tools": TOOLS}
    messages = [{"role": "system", "content": "You are a file assistant."},
                {"role": "user", "content": f"What is in the folder {word}?"},
                {"role": "assistant", "content": "", "tool_calls": [call("list_dir", path=word)]}]
    return {"id": f"r{i}", "category": "list", "messages": messages, "tools": TOOLS}


def chat_record(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Say {WORDS[i % len(WORDS)]} {i}"},
                         {"role": "assistant", "content": f"{WORDS[i % len(WORDS)]} {i}!"}]}


def completions_record(i: int) -> dict:
    return {"prompt": f"Is {i} even?", "completion": "Yes" if i % 2 == 0 else "No"}


def text_record(i: int) -> dict:
    return {"text": f"Document {i} about {WORDS[i % len(WORDS)]}."}


def preference_record(i: int) -> dict:
    if i % 2:
        return {"prompt": f"Greet {WORDS[i % len(WORDS)]} {i}", "chosen": f"Hello, {WORDS[i % len(WORDS)]} {i}!",
                "rejected": "Go away."}
    return {"messages": [{"role": "user", "content": f"Open {i}.txt"}], "tools": TOOLS,
            "chosen": {"role": "assistant", "content": "", "tool_calls": [call("read_file", path=f"{i}.txt")]},
            "rejected": [{"role": "assistant", "content": "I cannot open files."}]}


MAKERS = {"tools": tools_record, "chat": chat_record, "completions": completions_record, "text": text_record,
          "preference": preference_record}


def write_lines(path: Path, lines: list) -> None:
    """Records become JSON lines; strings and bytes are written as they are (to craft bad lines)."""
    data = b""
    for item in lines:
        if isinstance(item, bytes):
            data += item + b"\n"
        elif isinstance(item, str):
            data += item.encode() + b"\n"
        else:
            data += json.dumps(item).encode() + b"\n"
    path.write_bytes(data)


def make_dir(root: Path, fmt: str = "tools", n_train: int = 20, n_valid: int = 4, n_test: int = 4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    make = MAKERS[fmt]
    write_lines(root / "train.jsonl", [make(i) for i in range(n_train)])
    write_lines(root / "valid.jsonl", [make(i) for i in range(1000, 1000 + n_valid)])
    write_lines(root / "test.jsonl", [make(i) for i in range(2000, 2000 + n_test)])
    return root


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from mlx_lm.tokenizer_utils import load

    return load(tiny_model)


def tokenizer_with_template(tiny_model: Path, tmp_path: Path, template: str | None):
    """The tiny model's tokenizer with its chat template replaced (None removes it)."""
    from mlx_lm.tokenizer_utils import load

    folder = tmp_path / "tok"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_model / name, folder / name)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    config.pop("tool_parser_type", None)
    if template is not None:
        config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return load(folder)


def codes(findings) -> set[str]:
    return {f.code for f in findings}


def at(findings, code: str) -> list[tuple[str, int | None]]:
    return [(Path(f.file).name, f.line) for f in findings if f.code == code]


# ---- clean data passes --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(MAKERS))
def test_clean_data_of_every_format_passes(tmp_path, tokenizer, fmt):
    report = check_data_dir(make_dir(tmp_path / fmt, fmt), tokenizer)
    assert report.ok, report.errors
    assert report.warnings == []
    assert report.format == fmt
    assert report.splits["train"].records == 20
    assert report.splits["train"].tokens["count"] == 20
    assert report.splits["train"].tokens["max"] > 5


def test_clean_report_counts_labels_and_lengths(tmp_path, tokenizer):
    report = check_data_dir(make_dir(tmp_path), tokenizer, max_seq_length=512)
    train = report.splits["train"]
    assert train.labels["category"] == {"list": 10, "read": 10}
    assert train.labels["tool"] == {"list_dir": 10, "read_file": 10}
    hist = train.tokens["histogram"]
    assert sum(b["count"] for b in hist) == 20
    assert hist[-1] == {"label": "> 512", "count": 0}


def test_no_tokenizer_is_a_warning_and_skips_lengths(tmp_path):
    report = check_data_dir(make_dir(tmp_path), None)
    assert report.ok
    assert codes(report.warnings) == {"no-tokenizer"}
    assert report.splits["train"].tokens is None


# ---- files and splits ---------------------------------------------------------------------------


def test_missing_train_and_valid_are_errors_that_say_how_to_split(tmp_path):
    data = make_dir(tmp_path)
    (data / "train.jsonl").unlink()
    (data / "valid.jsonl").unlink()
    report = check_data_dir(data)
    assert at(report.errors, "missing-split") == [("train.jsonl", None), ("valid.jsonl", None)]
    assert all("punie data split" in f.message for f in report.errors)


def test_missing_test_is_a_warning(tmp_path):
    data = make_dir(tmp_path)
    (data / "test.jsonl").unlink()
    report = check_data_dir(data)
    assert report.ok and "missing-test" in codes(report.warnings)


def test_empty_split_is_an_error(tmp_path):
    data = make_dir(tmp_path)
    (data / "valid.jsonl").write_text("")
    assert at(check_data_dir(data).errors, "empty-split") == [("valid.jsonl", None)]


def test_not_a_directory_raises(tmp_path):
    with pytest.raises(DataError, match="punie data split"):
        check_data_dir(tmp_path / "nope")


def test_every_bad_line_is_reported_with_its_line_number(tmp_path):
    data = make_dir(tmp_path)
    good = [tools_record(i) for i in range(12)]
    write_lines(data / "train.jsonl", good[:2] + ["{not json"] + good[2:5] + [b"\xff\xfe{}"] + good[5:8]
                + ["[1, 2]", "", "{\"truncated\": "] + good[8:])
    report = check_data_dir(data)
    assert at(report.errors, "bad-json") == [("train.jsonl", 3), ("train.jsonl", 13)]
    assert at(report.errors, "bad-encoding") == [("train.jsonl", 7)]
    assert at(report.errors, "not-object") == [("train.jsonl", 11)]
    assert at(report.warnings, "blank-line") == [("train.jsonl", 12)]
    assert report.splits["train"].records == 12
    assert report.splits["train"].bad_records == 4


# ---- record shapes ------------------------------------------------------------------------------


def replace_train(data: Path, bad: dict[int, object], n: int = 12) -> None:
    """train.jsonl of n good records, with the records at the given (1-based) lines replaced."""
    write_lines(data / "train.jsonl", [bad.get(i + 1, tools_record(i)) for i in range(n)])


def bad_messages(**overrides) -> dict:
    record = tools_record(101)
    record["messages"] = overrides.pop("messages", record["messages"])
    return {**record, **overrides}


SHAPE_CASES = {
    "no-format": {"question": "what?", "answer": "this"},
    "mixed-keys": {**tools_record(101), "text": "also text"},
    "schema": bad_messages(messages=[{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]),
    "empty-target": bad_messages(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": " \n"}]),
    "tool-call": bad_messages(messages=[{"role": "user", "content": "read x"}, {
        "role": "assistant", "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "read_file", "arguments": "{bad json"}}]}]),
    "undeclared-tool": bad_messages(messages=[{"role": "user", "content": "delete x"}, {
        "role": "assistant", "content": "", "tool_calls": [call("delete_file", path="x")]}]),
}


@pytest.mark.parametrize("code", sorted(SHAPE_CASES))
def test_bad_record_shape_is_an_error_at_its_line(tmp_path, code):
    data = make_dir(tmp_path)
    replace_train(data, {4: SHAPE_CASES[code], 9: SHAPE_CASES[code]})
    report = check_data_dir(data)
    assert at(report.errors, code) == [("train.jsonl", 4), ("train.jsonl", 9)]
    assert not report.ok


@pytest.mark.parametrize("record, fragment", [
    ({"messages": "hello"}, "non-empty list"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant message"),
    ({"messages": [{"role": "user", "content": ["part"]}, {"role": "assistant", "content": "x"}]}, "must be a string"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": {}},
     "'tools' must be a list"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": [{"x": 1}]},
     "tools[0] must be"),
    ({"prompt": "q", "completion": 7}, "'completion' must be a string"),
    ({"prompt": "q", "chosen": 3, "rejected": "b"}, "'chosen' must be"),
])
def test_schema_messages_name_the_field(tmp_path, record, fragment):
    data = make_dir(tmp_path)
    replace_train(data, {2: record})
    messages = [f.message for f in check_data_dir(data).errors if f.code == "schema" and f.line == 2]
    assert any(fragment in m for m in messages), messages


def test_chat_record_calling_a_tool_without_declaring_tools(tmp_path):
    data = make_dir(tmp_path, "chat")
    record = {"messages": [{"role": "user", "content": "read a"},
                           {"role": "assistant", "content": "", "tool_calls": [call("read_file", path="a")]}]}
    write_lines(data / "train.jsonl", [chat_record(i) for i in range(5)] + [record])
    assert at(check_data_dir(data).errors, "undeclared-tool") == [("train.jsonl", 6)]


def test_tool_call_written_as_text_is_parsed_too(tmp_path):
    data = make_dir(tmp_path)
    text_call = '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>'
    replace_train(data, {3: bad_messages(messages=[{"role": "user", "content": "clean up"},
                                                   {"role": "assistant", "content": text_call}])})
    assert at(check_data_dir(data).errors, "undeclared-tool") == [("train.jsonl", 3)]


def test_empty_targets_in_other_formats(tmp_path):
    data = make_dir(tmp_path, "completions")
    write_lines(data / "train.jsonl", [completions_record(i) for i in range(4)] + [{"prompt": "q", "completion": ""}])
    assert at(check_data_dir(data).errors, "empty-target") == [("train.jsonl", 5)]
    text = make_dir(tmp_path / "text", "text")
    write_lines(text / "train.jsonl", [text_record(i) for i in range(4)] + [{"text": "   "}])
    assert at(check_data_dir(text).errors, "empty-target") == [("train.jsonl", 5)]


def test_identical_preference_pair_is_an_error(tmp_path):
    data = make_dir(tmp_path, "preference")
    write_lines(data / "train.jsonl", [preference_record(i) for i in range(4)]
                + [{"prompt": "hi", "chosen": "Hello", "rejected": {"role": "assistant", "content": "Hello "}}])
    assert at(check_data_dir(data).errors, "identical-pair") == [("train.jsonl", 5)]


def test_mixed_formats_in_one_file(tmp_path):
    data = make_dir(tmp_path)
    replace_train(data, {5: completions_record(1)})
    report = check_data_dir(data)
    assert at(report.errors, "mixed-format") == [("train.jsonl", 5)]
    assert report.splits["train"].formats == {"tools": 11, "completions": 1}


def test_splits_in_different_formats_warn(tmp_path):
    data = make_dir(tmp_path)
    write_lines(data / "valid.jsonl", [completions_record(i) for i in range(3)])
    assert "split-format" in codes(check_data_dir(data).warnings)


@pytest.mark.parametrize("code, record", [
    ("unknown-key", bad_messages(messages=[{"role": "user", "content": "hi", "weight": 0},
                                           {"role": "assistant", "content": "hello"}])),
    ("message-order", bad_messages(messages=[{"role": "assistant", "content": "hello"},
                                             {"role": "user", "content": "bye"}])),
    ("tool-arguments", bad_messages(messages=[{"role": "user", "content": "read"}, {
        "role": "assistant", "content": "", "tool_calls": [call("read_file", file="x")]}])),
])
def test_record_warnings(tmp_path, code, record):
    data = make_dir(tmp_path)
    replace_train(data, {6: record})
    report = check_data_dir(data)
    assert report.ok
    assert set(at(report.warnings, code)) == {("train.jsonl", 6)}


# ---- tokenizer and template ---------------------------------------------------------------------


def test_tokenizer_without_chat_template_is_an_error(tmp_path, tiny_model):
    tok = tokenizer_with_template(tiny_model, tmp_path, None)
    report = check_data_dir(make_dir(tmp_path / "data"), tok)
    assert codes(report.errors) == {"no-chat-template"}
    text_report = check_data_dir(make_dir(tmp_path / "text", "text"), tok)  # text data needs no template
    assert text_report.ok


def test_template_that_fails_on_a_record(tmp_path, tiny_model):
    # Like the templates of models without a system role (Gemma's raise on one).
    template = ("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
                "{% endif %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    tok = tokenizer_with_template(tiny_model, tmp_path, template)
    data = make_dir(tmp_path / "data", "chat")
    system = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "hello"}]}
    write_lines(data / "train.jsonl", [chat_record(i) for i in range(3)] + [system])
    report = check_data_dir(data, tok)
    assert at(report.errors, "template-error") == [("train.jsonl", 4)]
    assert "System role not supported" in report.errors[0].message


def test_template_that_drops_tool_calls_fails_the_roundtrip(tmp_path, tiny_model):
    # A plain ChatML template: renders content only, so a tool-call turn trains on empty text.
    template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok = tokenizer_with_template(tiny_model, tmp_path, template)
    report = check_data_dir(make_dir(tmp_path / "data", n_train=4), tok)
    assert [line for file, line in at(report.errors, "roundtrip") if file == "train.jsonl"] == [1, 2, 3, 4]
    assert "does not render tool calls" in report.errors[0].message


def test_sequences_over_max_seq_length_are_counted(tmp_path, tokenizer):
    data = make_dir(tmp_path)
    long = bad_messages(messages=[{"role": "user", "content": " ".join(WORDS * 60)},
                                  {"role": "assistant", "content": "ok"}])
    replace_train(data, {7: long})
    report = check_data_dir(data, tokenizer, max_seq_length=2000)
    assert report.ok
    train = report.splits["train"]
    assert train.too_long_lines == [7]
    assert train.tokens["too_long"] == 1 and train.tokens["histogram"][-1]["count"] == 1
    assert train.tokens["max"] > 2000
    (finding,) = [f for f in report.warnings if f.code == "too-long"]
    assert "1 of 12 records" in finding.message and "lines 7" in finding.message


# ---- duplicates, leakage, balance ---------------------------------------------------------------


def test_exact_and_near_duplicates(tmp_path):
    data = make_dir(tmp_path)
    near = tools_record(2)
    near["messages"][1]["content"] = near["messages"][1]["content"].upper() + "  !!"
    near["id"] = "different-id"
    replace_train(data, {8: tools_record(1), 10: near})
    report = check_data_dir(data)
    assert at(report.warnings, "duplicate") == [("train.jsonl", 8)]
    assert at(report.warnings, "near-duplicate") == [("train.jsonl", 10)]
    assert "repeats line 2" in [f for f in report.warnings if f.code == "duplicate"][0].message
    assert report.splits["train"].duplicates == 1 and report.splits["train"].near_duplicates == 1


def test_tool_arguments_as_json_string_are_near_duplicates_of_objects(tmp_path):
    data = make_dir(tmp_path)
    as_string = tools_record(0)
    fn = as_string["messages"][2]["tool_calls"][0]["function"]
    fn["arguments"] = json.dumps(fn["arguments"])
    replace_train(data, {5: as_string})
    assert at(check_data_dir(data).warnings, "near-duplicate") == [("train.jsonl", 5)]


def test_valid_and_test_records_found_in_train_are_leakage(tmp_path):
    data = make_dir(tmp_path)
    write_lines(data / "valid.jsonl", [tools_record(1000), tools_record(3)])
    write_lines(data / "test.jsonl", [tools_record(5), tools_record(2000)])
    report = check_data_dir(data)
    assert at(report.errors, "leakage") == [("valid.jsonl", 2), ("test.jsonl", 1)]
    assert "train.jsonl:4" in report.errors[0].message


def test_yes_no_imbalance_warns_per_split(tmp_path):
    data = tmp_path / "yn"
    data.mkdir()
    # The known failure: "No" 2.5 times as often as "Yes".
    write_lines(data / "train.jsonl", [{"prompt": f"q{i}", "completion": "No." if i < 25 else "Yes, it is."}
                                       for i in range(35)])
    write_lines(data / "valid.jsonl", [{"prompt": f"v{i}", "completion": "Yes" if i % 2 else "No"} for i in range(12)])
    report = check_data_dir(data)
    assert report.ok
    assert at(report.warnings, "imbalance") == [("train.jsonl", None)]
    (finding,) = [f for f in report.warnings if f.code == "imbalance"]
    assert "25 'no' : 10 'yes'" in finding.message and "2.5:1" in finding.message
    assert "punie data balance" in finding.message
    assert report.splits["valid"].labels["answer"] == {"yes": 6, "no": 6}


def test_category_and_tool_imbalance(tmp_path):
    data = make_dir(tmp_path)
    records = [tools_record(i) for i in range(40) if i % 2 == 0] + [tools_record(i) for i in (1, 3, 5)]
    write_lines(data / "train.jsonl", records)
    report = check_data_dir(data, max_label_ratio=3.0)
    labels = sorted(f.message.split(" is ")[0] for f in report.warnings if f.code == "imbalance")
    assert labels == ["category", "tool"]
    assert report.splits["train"].labels["category"] == {"list": 20, "read": 3}


def test_few_yes_no_replies_do_not_make_a_yes_no_task(tmp_path):
    data = make_dir(tmp_path, "chat")
    records = [chat_record(i) for i in range(20)] + [
        {"messages": [{"role": "user", "content": f"ok {i}?"}, {"role": "assistant", "content": "No, sorry."}]}
        for i in range(3)]
    write_lines(data / "train.jsonl", records)
    assert "answer" not in check_data_dir(data).splits["train"].labels


# ---- summary.json and the data card -------------------------------------------------------------


def test_write_summary_and_card(tmp_path, tokenizer):
    data = make_dir(tmp_path / "data")
    replace_train(data, {3: SHAPE_CASES["undeclared-tool"], 4: {"text": "<script>alert(1)</script>"}})
    report = check_data_dir(data, tokenizer)
    summary, card = write_check_outputs(report, tmp_path / "out")
    saved = json.loads(summary.read_text())
    assert saved["ok"] is False
    assert saved["counts"]["by_code"]["undeclared-tool"] == 1
    assert {"file": str(data / "train.jsonl"), "line": 3, "code": "undeclared-tool"}.items() <= \
        saved["errors"][0].items()
    assert saved["splits"]["train"]["tokens"]["histogram"]
    html = card.read_text()
    assert "Data card" in html and "undeclared-tool" in html and "read_file" in html
    assert "<script>alert" not in html  # record text is escaped
    write_check_outputs(report, tmp_path / "out")  # punie's own files are replaced


def test_write_summary_refuses_to_overwrite_a_foreign_file(tmp_path):
    report = check_data_dir(make_dir(tmp_path / "data"))
    (tmp_path / "summary.json").write_text('{"mine": true}')
    with pytest.raises(DataError, match="not written by"):
        write_summary(report, tmp_path)
    assert (tmp_path / "summary.json").read_text() == '{"mine": true}'
    (tmp_path / "summary.json").unlink()
    (tmp_path / "data_card.html").write_text("<p>my notes</p>")
    with pytest.raises(DataError, match="data_card.html exists and was not written by"):
        write_check_outputs(report, tmp_path)
    assert (tmp_path / "data_card.html").read_text() == "<p>my notes</p>" and not (tmp_path / "summary.json").exists()


def test_data_is_a_leaf_package():
    """punie.data imports nothing from the packages built on it (the data card lives in punie.report)."""
    import ast

    src = Path(punie.data.__file__).parent
    for module in src.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith(("punie.report", "punie.eval", "punie.training", "punie.traces",
                                            "punie.serve", "punie.cli")), f"{module.name} imports {name}"


def test_raise_for_errors_lists_the_first_errors(tmp_path):
    data = make_dir(tmp_path)
    replace_train(data, {2: "{bad"})
    report = check_data_dir(data)
    with pytest.raises(DataError, match=r"train.jsonl:2: not valid JSON"):
        report.raise_for_errors()


def test_valid_calls_reusing_train_argument_values_warn_as_vocabulary_leakage(tmp_path):
    data = make_dir(tmp_path / "d")
    # New requests (no duplicate records) whose calls reuse train's paths: leakage of vocabulary, not of records.
    reused = []
    for i in (0, 2, 4, 6):  # list_dir records: their target is the call
        record = tools_record(i)
        record["messages"][1]["content"] = f"Could you take a look at it, number {i}?"
        reused.append(record)
    write_lines(data / "valid.jsonl", reused)
    report = check_data_dir(data)
    [(where, line)] = at(report.warnings, "shared-arguments")
    assert where.endswith("valid.jsonl") and line is None
    message = next(f.message for f in report.warnings if f.code == "shared-arguments")
    assert "4 of its 4 distinct" in message and "'alpha0'" in message
    assert "leakage" not in codes(report.errors)  # not the same records
    assert "shared-arguments" not in codes(check_data_dir(data, max_shared_arguments=1.0).warnings)
    assert "shared-arguments" not in codes(check_data_dir(make_dir(tmp_path / "clean")).warnings)


def test_argument_values_come_from_the_target_calls_and_skip_file_contents():
    from punie.data.vocabulary import argument_values

    record = tools_record(1)
    assert argument_values(record) == set()  # its target is the final text answer
    record["messages"] = record["messages"][:2]
    assert argument_values(record) == {"bravo1.txt"}
    record["messages"][1]["tool_calls"] = [{"type": "function", "function": {
        "name": "write_file", "arguments": json.dumps({"path": "a.md", "content": "x" * 500})}}]
    assert argument_values(record) == {"a.md"}
