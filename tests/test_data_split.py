"""punie data split: deterministic, stratified, no record lost or duplicated (property-based)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from punie.data.dedupe import record_keys
from punie.data.split import parse_ratios, split_file, split_records
from punie.errors import ConfigError, DataError

RATIOS = st.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.5), (0.7, 0.2, 0.1), (0.34, 0.33, 0.33), (0.9, 0.0, 0.1),
                          (0.6, 0.4)])
RECORD = st.fixed_dictionaries({
    "prompt": st.text(alphabet="abcde .", min_size=1, max_size=6),
    "completion": st.sampled_from(["Yes", "No", "maybe"]),
    "category": st.sampled_from(["a", "b", "c", "d"]),
})


@settings(max_examples=200, deadline=None)
@given(records=st.lists(RECORD, max_size=60), ratios=RATIOS, seed=st.integers(0, 10),
       stratify=st.sampled_from([None, "category", "answer"]))
def test_every_record_lands_in_exactly_one_split(records, ratios, seed, stratify):
    parts = split_records(records, ratios, stratify=stratify, seed=seed)
    assert len(parts) == len(ratios)
    assert sorted(i for part in parts for i in part) == list(range(len(records)))
    assert parts == split_records(records, ratios, stratify=stratify, seed=seed)  # deterministic
    # Duplicates (up to case and punctuation) never straddle two splits.
    home: dict[str, int] = {}
    for j, part in enumerate(parts):
        for i in part:
            assert home.setdefault(record_keys(records[i]).near, j) == j


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=5), ratios=RATIOS, seed=st.integers(0, 1000))
def test_unique_records_follow_the_ratios_within_every_stratum(counts, ratios, seed):
    records = [{"text": f"record {label} {i}", "category": f"c{label}"}
               for label, n in enumerate(counts) for i in range(n)]
    parts = split_records(records, ratios, stratify="category", seed=seed)
    for j, part in enumerate(parts):
        assert abs(len(part) - ratios[j] * len(records)) < 1 + 1e-9
        per_label = Counter(records[i]["category"] for i in part)
        for label, n in enumerate(counts):
            assert abs(per_label[f"c{label}"] - ratios[j] * n) < 2 + 1e-9


def test_different_seeds_shuffle_differently():
    records = [{"text": f"r{i}"} for i in range(100)]
    assert split_records(records, (0.8, 0.2), seed=1) != split_records(records, (0.8, 0.2), seed=2)


def write_file(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_split_file_writes_lines_verbatim_and_stratified(tmp_path):
    records = [{"prompt": f"q{i}", "completion": "Yes" if i % 4 else "No", "category": "ab"[i % 2]}
               for i in range(100)]
    source = write_file(tmp_path / "all.jsonl", records)
    result = split_file(source, tmp_path / "out", stratify="category", seed=7)
    assert result.counts == {"train": 80, "valid": 10, "test": 10}
    out_lines = [line for name in ("train", "valid", "test")
                 for line in (tmp_path / "out" / f"{name}.jsonl").read_text().splitlines()]
    assert sorted(out_lines) == sorted(source.read_text().splitlines())
    assert result.strata == {"a": {"train": 40, "valid": 5, "test": 5}, "b": {"train": 40, "valid": 5, "test": 5}}
    again = split_file(source, tmp_path / "again", stratify="category", seed=7)
    assert again.counts == result.counts
    assert (tmp_path / "again" / "test.jsonl").read_text() == (tmp_path / "out" / "test.jsonl").read_text()


def test_split_file_refuses_to_overwrite(tmp_path):
    source = write_file(tmp_path / "all.jsonl", [{"text": f"t{i}"} for i in range(20)])
    split_file(source, tmp_path / "out")
    with pytest.raises(DataError, match="--force"):
        split_file(source, tmp_path / "out")
    split_file(source, tmp_path / "out", force=True)
    train = write_file(tmp_path / "data" / "train.jsonl", [{"text": f"t{i}"} for i in range(20)])
    with pytest.raises(DataError, match="overwritten by its own split"):
        split_file(train, tmp_path / "data", force=True)


def test_split_file_errors(tmp_path):
    tiny = write_file(tmp_path / "tiny.jsonl", [{"text": "a"}, {"text": "b"}])
    with pytest.raises(DataError, match="would be empty"):
        split_file(tiny, tmp_path / "out")
    assert not (tmp_path / "out" / "train.jsonl").exists()
    with pytest.raises(DataError, match="no record .* has a label 'categroy'"):
        split_file(write_file(tmp_path / "x.jsonl", [{"text": f"{i}"} for i in range(30)]), tmp_path / "o",
                   stratify="categroy")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        split_file(bad, tmp_path / "o2")


def test_ratios_with_a_zero_share_skip_that_file(tmp_path):
    source = write_file(tmp_path / "all.jsonl", [{"text": f"t{i}"} for i in range(20)])
    result = split_file(source, tmp_path / "out", ratios=(0.9, 0.1, 0.0))
    assert set(result.paths) == {"train", "valid"} and not (tmp_path / "out" / "test.jsonl").exists()


@pytest.mark.parametrize("text", ["0.8,0.1", "a,b", "0.5,0.5,0.5", "0,0.5,0.5", "1", "0.9,-0.1,0.2"])
def test_parse_ratios_rejects_bad_values(text):
    if text == "0.8,0.1":
        with pytest.raises(ConfigError, match="sums to 0.9"):
            parse_ratios(text)
        return
    with pytest.raises(ConfigError):
        parse_ratios(text)


def test_parse_ratios():
    assert parse_ratios("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    assert parse_ratios("0.9,0.1") == (0.9, 0.1)
