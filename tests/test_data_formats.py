"""Format detection, JSONL reading and the normalised views of records."""

from __future__ import annotations

import pytest

from punie.data.formats import conversations, detect_format, preference_turns, read_jsonl, scan_jsonl, target_message
from punie.data.lengths import length_stats
from punie.errors import DataError


@pytest.mark.parametrize("record, fmt", [
    ({"messages": []}, "chat"),
    ({"messages": [], "tools": [], "category": "x"}, "tools"),
    ({"prompt": "p", "completion": "c", "id": 3}, "completions"),
    ({"text": "t"}, "text"),
    ({"prompt": "p", "chosen": "a", "rejected": "b"}, "preference"),
    ({"messages": [], "chosen": "a", "rejected": "b"}, "preference"),
])
def test_detect_format(record, fmt):
    assert detect_format(record) == fmt


def test_detect_format_names_what_is_missing():
    with pytest.raises(DataError, match=r"fits no format \(it has prompt\)"):
        detect_format({"prompt": "only a prompt"})
    with pytest.raises(DataError, match="JSON object"):
        detect_format(["a", "list"])


def test_read_jsonl_reads_records_and_skips_blank_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n')
    assert read_jsonl(path) == [{"text": "a"}, {"text": "b"}]


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a"}\n{"text": \n[1]\n')
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    assert str(info.value).startswith(f"{path}:2: not valid JSON")
    assert "1 more bad lines" in str(info.value)


def test_read_jsonl_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_jsonl(tmp_path / "none.jsonl")


def test_preference_turns_accept_strings_messages_and_lists():
    prompt, chosen, rejected = preference_turns({"prompt": "hi", "chosen": "Hello",
                                                 "rejected": [{"role": "assistant", "content": "Bye"}]})
    assert prompt == [{"role": "user", "content": "hi"}]
    assert chosen == {"role": "assistant", "content": "Hello"}
    assert rejected == {"role": "assistant", "content": "Bye"}
    with pytest.raises(DataError):
        preference_turns({"prompt": "hi", "chosen": 1, "rejected": "x"})


def test_conversations_and_targets():
    record = {"prompt": "q", "completion": "a"}
    assert conversations(record, "completions") == [[{"role": "user", "content": "q"},
                                                     {"role": "assistant", "content": "a"}]]
    assert target_message(record, "completions") == {"role": "assistant", "content": "a"}
    pair = {"messages": [{"role": "user", "content": "q"}], "chosen": "yes", "rejected": "no"}
    assert [c[-1]["content"] for c in conversations(pair, "preference")] == ["yes", "no"]
    assert conversations({"text": "t"}, "text") == []


def test_length_stats_histogram_covers_every_length():
    stats = length_stats([10, 11, 50, 99, 100, 3000], max_seq_length=100, bins=4)
    assert (stats["min"], stats["max"], stats["too_long"], stats["p50"]) == (10, 3000, 1, 50)
    assert sum(b["count"] for b in stats["histogram"]) == 6
    assert stats["histogram"][0]["label"].startswith("10-")
    assert stats["histogram"][-1] == {"label": "> 100", "count": 1}
    assert length_stats([500], max_seq_length=100)["histogram"] == [{"label": "> 100", "count": 1}]


def test_json_errors_read_well(tmp_path):
    """json's own message can end in "at" ("Unterminated string starting at"); it was printed "at at column"."""
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "unterminated\n{"text": "tab\there"}\n')
    problems = scan_jsonl(path)[1]
    assert [p.message for p in problems] == ["not valid JSON: Unterminated string starting at column 10",
                                             "not valid JSON: Invalid control character at column 14"]
