"""punie data balance: equal label counts in train, other splits copied, the original untouched."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from punie.data.balance import balance_dir, balance_indices
from punie.errors import ConfigError, DataError


@settings(max_examples=100, deadline=None)
@given(labels=st.lists(st.sampled_from(["a", "b", "c", None]), max_size=50), method=st.sampled_from(["upsample",
                                                                                                    "downsample"]))
def test_balance_indices_equalise_labels(labels, method):
    keep = balance_indices(labels, method, seed=3)
    counts = Counter(labels[i] for i in keep if labels[i] is not None)
    assert len(set(counts.values())) <= 1
    # Unlabelled records are kept exactly once; every kept index is a real record.
    assert Counter(i for i in keep if labels[i] is None) == Counter(i for i, x in enumerate(labels) if x is None)
    assert all(0 <= i < len(labels) for i in keep)
    if method == "upsample":
        assert set(range(len(labels))) <= set(keep)  # nothing dropped
    else:
        assert len(keep) == len(set(keep))  # nothing repeated
    assert keep == balance_indices(labels, method, seed=3)


def write(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "yn"
    write(folder / "train.jsonl", [{"prompt": f"q{i}", "completion": "No." if i < 25 else "Yes."} for i in range(35)])
    write(folder / "valid.jsonl", [{"prompt": "v", "completion": "No"}])
    return folder


@pytest.mark.parametrize("method, count", [("upsample", 25), ("downsample", 10)])
def test_balance_dir_on_derived_yes_no_answers(data, method, count):
    original = (data / "train.jsonl").read_text()
    result = balance_dir(data, data.parent / method, field="answer", method=method)
    assert result.before == {"no": 25, "yes": 10}
    assert result.after == {"no": count, "yes": count}
    lines = (data.parent / method / "train.jsonl").read_text().splitlines()
    assert len(lines) == 2 * count
    assert set(lines) <= set(original.splitlines())
    assert (data.parent / method / "valid.jsonl").read_text() == (data / "valid.jsonl").read_text()
    assert (data / "train.jsonl").read_text() == original  # the source is untouched


def test_balance_dir_on_a_metadata_field(tmp_path):
    write(tmp_path / "d" / "train.jsonl", [{"text": f"t{i}", "category": "ab"[i < 6]} for i in range(20)]
          + [{"text": "no category"}])
    result = balance_dir(tmp_path / "d", tmp_path / "o", field="category", method="downsample")
    assert result.after == {"a": 6, "b": 6} and result.unlabeled == 1


def test_balance_dir_errors(data):
    with pytest.raises(DataError, match="no record .* has a label 'topic'"):
        balance_dir(data, data.parent / "o", field="topic")
    with pytest.raises(DataError, match="data directory itself"):
        balance_dir(data, data, field="answer")
    with pytest.raises(ConfigError, match="--method"):
        balance_dir(data, data.parent / "o", field="answer", method="smote")
    balance_dir(data, data.parent / "o", field="answer")
    with pytest.raises(DataError, match="--force"):
        balance_dir(data, data.parent / "o", field="answer")
