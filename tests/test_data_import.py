"""punie data import: datasets saved to disk, CSV, JSON(L) and Parquet into punie formats."""

from __future__ import annotations

import csv
import json

import pytest

from punie.data.check import check_data_dir
from punie.data.formats import read_jsonl
from punie.data.importer import import_dataset, parse_mapping
from punie.errors import ConfigError, DataError

TOOLS = [{"type": "function", "function": {"name": "read_file", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_csv_with_field_mapping_to_completions(tmp_path):
    source = write_csv(tmp_path / "qa.csv", [{"question": f"Is {i} even?", "answer": "Yes" if i % 2 == 0 else "No",
                                              "topic": "maths", "id": str(i)} for i in range(6)])
    result = import_dataset(str(source), tmp_path / "out", fmt="completions",
                            mapping=parse_mapping(["prompt=question", "completion=answer", "category=topic"]))
    assert result.counts == {"all.jsonl": 6} and result.problems == []
    records = read_jsonl(tmp_path / "out" / "all.jsonl")
    assert records[1] == {"prompt": "Is 1 even?", "completion": "No", "id": "1", "category": "maths"}


def test_saved_dataset_dict_keeps_its_splits(tmp_path):
    import datasets

    def rows(n, tag):
        return {"user": [f"{tag} question {i}" for i in range(n)], "assistant": [f"{tag} answer {i}" for i in range(n)],
                "category": ["x"] * n}

    ds = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows(8, "t")),
                               "validation": datasets.Dataset.from_dict(rows(2, "v")),
                               "test": datasets.Dataset.from_dict(rows(2, "s"))})
    ds.save_to_disk(str(tmp_path / "saved"))
    result = import_dataset(str(tmp_path / "saved"), tmp_path / "out", fmt="chat")
    assert result.counts == {"train.jsonl": 8, "valid.jsonl": 2, "test.jsonl": 2}
    first = read_jsonl(tmp_path / "out" / "train.jsonl")[0]
    assert first == {"messages": [{"role": "user", "content": "t question 0"},
                                  {"role": "assistant", "content": "t answer 0"}], "category": "x"}
    assert check_data_dir(tmp_path / "out").ok


def test_saved_single_dataset_and_split_selection(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["a", "b", "c"]}).save_to_disk(str(tmp_path / "one"))
    assert import_dataset(str(tmp_path / "one"), tmp_path / "o1", fmt="text").counts == {"all.jsonl": 3}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]}),
                          "unsupervised": datasets.Dataset.from_dict({"text": ["b", "c"]})}
                         ).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(DataError, match="--split"):
        import_dataset(str(tmp_path / "two"), tmp_path / "o2", fmt="text")
    result = import_dataset(str(tmp_path / "two"), tmp_path / "o2", fmt="text", split="unsupervised")
    assert result.counts == {"all.jsonl": 2}


def test_parquet_json_and_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "hi", "chosen": "Hello!", "rejected": "Go away."}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    (tmp_path / "p.json").write_text(json.dumps(rows))
    (tmp_path / "p.jsonl").write_text(json.dumps(rows[0]) + "\n")
    for name in ("p.parquet", "p.json", "p.jsonl"):
        result = import_dataset(str(tmp_path / name), tmp_path / name.replace(".", "_"), fmt="preference")
        assert read_jsonl(result.paths["all.jsonl"]) == rows


def test_tools_from_json_strings_in_a_csv(tmp_path):
    messages = [{"role": "user", "content": "read a"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": "read_file", "arguments": {"path": "a"}}}]}]
    source = write_csv(tmp_path / "t.csv", [{"messages": json.dumps(messages), "tools": json.dumps(TOOLS)}])
    result = import_dataset(str(source), tmp_path / "out", fmt="tools")
    assert read_jsonl(result.paths["all.jsonl"]) == [{"messages": messages, "tools": TOOLS}]
    assert result.problems == []


def test_rows_with_missing_values_are_written_and_reported(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps([{"q": "a", "a": "b"}, {"q": "c", "a": None}, {"q": "d", "a": 42}]))
    result = import_dataset(str(tmp_path / "r.json"), tmp_path / "out", fmt="completions",
                            mapping={"prompt": "q", "completion": "a"})
    assert result.counts == {"all.jsonl": 3}
    assert [(f.line, f.code) for f in result.problems] == [(2, "schema")]
    assert read_jsonl(result.paths["all.jsonl"])[2]["completion"] == "42"


def test_import_errors_name_the_fix(tmp_path, monkeypatch):
    source = write_csv(tmp_path / "qa.csv", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=r"needs a 'prompt' field .* --map prompt=COLUMN"):
        import_dataset(str(source), tmp_path / "o", fmt="completions")
    with pytest.raises(DataError, match="no column 'answr'"):
        import_dataset(str(source), tmp_path / "o", fmt="completions", mapping={"prompt": "question",
                                                                               "completion": "answr"})
    with pytest.raises(DataError, match="user=COLUMN and assistant=COLUMN"):
        import_dataset(str(source), tmp_path / "o", fmt="chat")
    with pytest.raises(ConfigError, match="--format"):
        import_dataset(str(source), tmp_path / "o", fmt="sft")
    with pytest.raises(ConfigError, match="FIELD=COLUMN"):
        parse_mapping(["prompt"])
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(DataError, match="unknown file type"):
        import_dataset(str(tmp_path / "x.xlsx"), tmp_path / "o", fmt="text")
    import_dataset(str(source), tmp_path / "o", fmt="completions", mapping={"prompt": "question",
                                                                           "completion": "answer"})
    with pytest.raises(DataError, match="--force"):
        import_dataset(str(source), tmp_path / "o", fmt="completions", mapping={"prompt": "question",
                                                                               "completion": "answer"})

    import datasets

    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="not a local file or directory.*no network"):
        import_dataset("someone/some-dataset", tmp_path / "o3", fmt="text")
