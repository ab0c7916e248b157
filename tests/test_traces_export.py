"""Export of traces as mlx-lm ``tools`` data: per-turn expansion, masking, splits, validation."""

from __future__ import annotations

import json

import pytest

from punie.data.split import split_groups
from punie.errors import ConfigError, DataError
from punie.traces.export import assign_splits, expand, export_traces, parse_split
from punie.traces.store import Trace, TraceStore

TOOLS = [{"type": "function", "function": {"name": n, "description": "x", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}
    for n in ("read_file", "list_dir")]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(tiny_model)


def tool_call(name, **arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def multi_turn(category="read", outcome="finished", task="What is in a.txt?"):
    return Trace(tools=TOOLS, category=category, outcome=outcome, task=task, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": task},
        {"role": "assistant", "content": "", "tool_calls": [tool_call("list_dir", path=".")]},
        {"role": "tool", "content": "a.txt"},
        {"role": "assistant", "content": "", "tool_calls": [tool_call("read_file", path="a.txt")]},
        {"role": "tool", "content": "A"},
        {"role": "assistant", "content": "It says A."},
    ])


def direct(category="answer", task="Hi", outcome="finished"):
    return Trace(tools=TOOLS, category=category, outcome=outcome, task=task,
                 messages=[{"role": "user", "content": task}, {"role": "assistant", "content": "Hello!"}])


def test_one_example_per_assistant_turn():
    examples = expand(multi_turn())
    assert len(examples) == 3
    full = multi_turn().messages
    for example, end in zip(examples, (3, 5, 7), strict=True):
        assert example["messages"] == full[:end]
        assert example["messages"][-1]["role"] == "assistant"
        assert example["tools"] == TOOLS and example["category"] == "read"


def test_mask_prompt_supervises_exactly_the_last_assistant_turn(tokenizer):
    """mlx-lm trains on tokens[offset:]; after expansion that is each assistant turn in turn."""
    from mlx_lm.tuner.datasets import ChatDataset

    examples = expand(multi_turn())
    dataset = ChatDataset(examples, tokenizer, mask_prompt=True)
    supervised = []
    for i in range(len(dataset)):
        tokens, offset = dataset.process(dataset[i])
        assert 0 < offset < len(tokens)
        supervised.append(tokenizer.decode(tokens[offset:]))
    assert supervised == [
        '<tool_call>\n{"name": "list_dir", "arguments": {"path": "."}}\n</tool_call><|im_end|>\n',
        '<tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n</tool_call><|im_end|>\n',
        "It says A.<|im_end|>\n",
    ]
    # Without expansion, the whole conversation as one example would train on the final answer only.
    tokens, offset = dataset.process({"messages": multi_turn().messages, "tools": TOOLS})
    assert tokenizer.decode(tokens[offset:]) == "It says A.<|im_end|>\n"


def _fill(store, counts):
    for category, n in counts.items():
        for i in range(n):
            store.add(multi_turn(category=category, task=f"{category} task {i}") if i % 2 else
                      direct(category=category, task=f"{category} question {i}"))


def test_export_is_deterministic_and_in_mlx_lm_tools_format(tmp_path, tokenizer):
    with TraceStore(tmp_path / "t.sqlite") as store:
        _fill(store, {"read": 20, "answer": 10})
        a = export_traces(store, tmp_path / "a", seed=7, tokenizer=tokenizer)
        b = export_traces(store, tmp_path / "b", seed=7, tokenizer=tokenizer)
        c = export_traces(store, tmp_path / "c", seed=8, tokenizer=tokenizer)
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "export.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (tmp_path / "c" / "train.jsonl").read_bytes()
    assert a.examples == b.examples and a.rejected == [] and a.checked_with_tokenizer
    for line in (tmp_path / "a" / "train.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert set(record) == {"messages", "tools", "category"}
        for message in record["messages"]:
            assert set(message) <= {"role", "content", "tool_calls"}
            for call in message.get("tool_calls", []):
                assert set(call) == {"type", "function"} and isinstance(call["function"]["arguments"], dict)
    manifest = json.loads((tmp_path / "a" / "export.json").read_text())
    assert manifest["seed"] == 7 and manifest["examples"] == a.examples
    assert manifest["only_passed"] is False and manifest["skipped_not_passed"] == 0
    assert sum(a.traces.values()) == 30 and c.examples != {}


def test_splits_are_stratified_by_category():
    store_traces = []
    for category, n in {"read": 50, "run": 30, "answer": 20}.items():
        store_traces += [direct(category=category, task=f"{category} {i}") for i in range(n)]
    for i, trace in enumerate(store_traces):
        trace.id = i + 1
    splits = assign_splits(store_traces, (0.8, 0.1, 0.1), seed=42)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [80, 10, 10]
    for name, want in {"valid": {"read": 5, "run": 3, "answer": 2}, "test": {"read": 5, "run": 3, "answer": 2}}.items():
        got = {c: sum(t.category == c for t in splits[name]) for c in want}
        for category in want:
            assert abs(got[category] - want[category]) <= 1, (name, got)
    ids = [t.id for s in splits.values() for t in s]
    assert sorted(ids) == list(range(1, 101))  # every trace in exactly one split


def test_traces_giving_the_same_example_up_to_case_and_punctuation_share_a_split():
    # Two projects' requests "What files are in tests?" and "what files are in tests" expand to examples that
    # punie data check calls duplicates; split apart, the check refused the export (seen with seed 43).
    for seed in range(20):
        traces = [direct(task=f"question {i}") for i in range(30)]
        traces += [direct(task="What files are in tests?"), direct(task="what files are in tests")]
        for i, trace in enumerate(traces):
            trace.id = i + 1
        splits = assign_splits(traces, (0.8, 0.1, 0.1), seed=seed)
        where = {t.task: name for name, part in splits.items() for t in part}
        assert where["What files are in tests?"] == where["what files are in tests"], seed
        assert sorted(t.id for part in splits.values() for t in part) == list(range(1, 33))


def test_bad_traces_are_reported_not_exported(tmp_path, tokenizer):
    undeclared = multi_turn(task="undeclared")
    undeclared.messages[2]["tool_calls"] = [tool_call("delete_everything", path=".")]
    unparsed = multi_turn(task="unparsed")
    unparsed.messages[4] = {"role": "assistant", "content": '<tool_call>\n{"name": "read_file", "arg\n</tool_call>',
                            "tool_calls": [], "tool_call_errors": True}
    bad_arguments = multi_turn(task="bad arguments")
    bad_arguments.messages[2]["tool_calls"] = [{"type": "function", "function": {"name": "read_file",
                                                                                 "arguments": "{not json"}}]
    no_answer = Trace(tools=TOOLS, messages=[{"role": "user", "content": "hi"}], outcome="finished")
    with TraceStore(tmp_path / "t.sqlite") as store:
        good_ids = [store.add(multi_turn()), store.add(direct())]
        bad_ids = [store.add(t) for t in (undeclared, unparsed, bad_arguments, no_answer)]
        report = export_traces(store, tmp_path / "out", tokenizer=tokenizer)
    reasons = {r.trace_id: r.reason for r in report.rejected}
    assert sorted(reasons) == bad_ids
    assert "'delete_everything', which is not among the trace's tools" in reasons[bad_ids[0]]
    assert "message 4: a tool call in it does not parse" in reasons[bad_ids[1]]
    assert "not JSON" in reasons[bad_ids[2]]
    assert "no assistant turn" in reasons[bad_ids[3]]
    assert sum(report.traces.values()) == len(good_ids)
    exported = "".join(p.read_text() for p in (tmp_path / "out").glob("*.jsonl"))
    assert "delete_everything" not in exported and "bad arguments" not in exported
    manifest = json.loads((tmp_path / "out" / "export.json").read_text())
    assert [r["trace_id"] for r in manifest["rejected"]] == bad_ids


def test_only_passed_and_empty_splits(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "valid.jsonl").write_text("stale\n")
    with TraceStore(tmp_path / "t.sqlite") as store:
        store.add(multi_turn(outcome="failed"))
        store.add(multi_turn(outcome="finished"))  # the loop ended; nothing said the job was done
        store.add(direct(outcome="passed"))
        report = export_traces(store, out, split=(1.0, 0.0, 0.0), only_passed=True)
        with pytest.raises(DataError, match="no trace"):
            export_traces(store, tmp_path / "none", category="nothing-like-this")
        with pytest.raises(DataError, match="2 skipped as not passed"):
            export_traces(store, tmp_path / "none", category="read", only_passed=True)
    assert report.skipped_not_passed == 2 and report.examples == {"train": 1, "valid": 0, "test": 0}
    assert not (out / "valid.jsonl").exists()  # mlx-lm cannot read an empty file; a stale one would mislead
    assert json.loads((out / "train.jsonl").read_text())["messages"][-1]["content"] == "Hello!"


@pytest.mark.parametrize("text,message", [("a,b,c", "expected numbers"), ("0.5,0.1,0.1", "sum to 1"),
                                          ("0,0.5,0.5", "train above 0"), ("0.4,0.3,0.2,0.1", "2 or 3")])
def test_bad_split_is_a_config_error(text, message):
    with pytest.raises(ConfigError, match=f"--split '{text}'.*{message}"):
        parse_split(text)


def test_split_is_parsed_and_assigned_as_punie_data_split_does():
    assert parse_split("0.8,0.2") == (0.8, 0.2, 0.0)  # two shares: no test split, as in 'punie data split'
    traces = [direct(category="ab"[i % 2], task=f"t{i}") for i in range(40)]
    for i, trace in enumerate(traces):
        trace.id = i + 1
    strata = {label: [[i] for i, t in enumerate(traces) if t.category == label] for label in "ab"}
    want = split_groups(strata, (0.8, 0.1, 0.1), seed=3)
    got = assign_splits(list(reversed(traces)), (0.8, 0.1, 0.1), seed=3)
    assert [[t.id - 1 for t in got[name]] for name in ("train", "valid", "test")] == want


def test_cli_export(run_cli, tiny_model, tmp_path):
    with TraceStore() as store:  # the test's PUNIE_HOME, which run_cli also uses
        _fill(store, {"read": 6, "answer": 4})
        store.add(Trace(tools=TOOLS, messages=[{"role": "user", "content": "x"}]))
    proc = run_cli("traces", "export", "--out", str(tmp_path / "out"), "--model", str(tiny_model),
                   "--split", "0.6,0.2,0.2", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert "not exported: trace 11: it has no assistant turn" in proc.stderr
    lines = (tmp_path / "out" / "train.jsonl").read_text().splitlines()
    assert len(lines) > 0 and all("messages" in json.loads(line) for line in lines)
    bad = run_cli("traces", "export", "--out", str(tmp_path / "o2"), "--split", "1,1,1", "--no-check")
    assert bad.returncode == 1 and "Error: --split '1,1,1' sums to 3" in bad.stderr


def test_api_messages_with_broken_calls_are_kept_visible_and_rejected():
    from punie.traces.export import trace_problems
    from punie.traces.messages import normalize_message, to_openai_messages

    broken = normalize_message({"role": "assistant", "content": None, "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "read_file", "arguments": "{bad"}}]})
    assert broken["tool_call_errors"] is True
    trace = Trace(tools=TOOLS, messages=[{"role": "user", "content": "x"}, broken])
    assert trace_problems(trace) == ["message 1: a tool call in it does not parse"]
    # text with a complete call is read like model output; the call leaves the content
    assert normalize_message({"role": "assistant", "content": [{"type": "text", "text": (
        '<tool_call>\n{"name": "list_dir", "arguments": {"path": "."}}\n</tool_call>')}]}) == {
        "role": "assistant", "content": "", "tool_calls": [tool_call("list_dir", path=".")]}
    # and back to the API form: ids pair each tool result with its call, arguments become JSON strings
    api = to_openai_messages(multi_turn().messages)
    assert api[2]["tool_calls"][0]["function"]["arguments"] == '{"path": "."}'
    assert api[3]["tool_call_id"] == api[2]["tool_calls"][0]["id"]
    assert api[5]["tool_call_id"] == api[4]["tool_calls"][0]["id"] != api[3]["tool_call_id"]
