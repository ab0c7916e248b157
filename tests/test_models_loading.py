"""models/loading: the one loader of tokenizers and checker of adapter directories; one split-name table."""

from __future__ import annotations

import json

import pytest

from punie.errors import ConfigError, ModelError
from punie.eval import compat
from punie.models import loading
from punie.serve import manager


def adapter_dir(path, config="{}", weights=True):
    path.mkdir()
    (path / "adapter_config.json").write_text(config)
    if weights:
        (path / "adapters.safetensors").write_bytes(b"")
    return path


def test_check_adapter_dir_returns_the_parsed_config(tmp_path):
    path = adapter_dir(tmp_path / "a", json.dumps({"fine_tune_type": "lora", "num_layers": 2}))
    assert loading.check_adapter_dir(path) == {"fine_tune_type": "lora", "num_layers": 2}
    assert manager.check_adapter(path) == str(path.resolve())
    with pytest.raises(ModelError, match="expected a JSON object"):
        loading.check_adapter_dir(adapter_dir(tmp_path / "b", "[1, 2]"))


def test_serve_eval_and_loading_refuse_a_half_written_adapter_alike(tmp_path, tiny_model):
    half = adapter_dir(tmp_path / "half", weights=False)  # the old models/loading check let this through
    messages = set()
    for check in (manager.check_adapter, lambda p: compat.check_adapter_matches(p, tiny_model, "tiny"),
                  lambda p: loading.load(str(tiny_model), p)):
        with pytest.raises(ModelError) as info:
            check(half)
        messages.add(str(info.value))
    assert messages == {f"{half} is not an adapter directory: adapters.safetensors missing; was training "
                        "interrupted before the first save?"}


def test_load_tokenizer_reads_only_the_tokenizer(tmp_path, tiny_model):
    tokenizer = loading.load_tokenizer(str(tiny_model))
    assert tokenizer.chat_template and tokenizer.has_tool_calling
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model / "config.json").read_text())
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelError, match=f"cannot load the tokenizer of {broken}"):
        loading.load_tokenizer(str(broken))


def test_training_reads_the_split_names_import_reads(tmp_path):
    import datasets

    from punie.data.split import canonical_split
    from punie.training.data import _load_hf

    assert [canonical_split(n) for n in ("Validation", "dev", "val", "training", "testing", "extra")] == \
        ["valid", "valid", "valid", "train", "test", None]
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(4)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                          "dev": datasets.Dataset.from_list(rows[:2])}).save_to_disk(str(tmp_path / "ds"))
    found = _load_hf(str(tmp_path / "ds"), {})  # before: "dev" was not a validation split for training
    assert sorted(found) == ["train", "valid"] and len(found["valid"]) == 2


def test_hf_field_is_parsed_as_import_parses_map(run_cli):
    from punie.data.importer import parse_mapping

    assert parse_mapping(["prompt = question"], option="--hf-field") == {"prompt": "question"}
    with pytest.raises(ConfigError, match="--hf-field 'prompt': expected FIELD=COLUMN"):
        parse_mapping(["prompt"], option="--hf-field")
    result = run_cli("train", "--hf-dataset", "x", "--hf-field", "prompt=")
    assert result.returncode == 1 and "--hf-field 'prompt=': expected FIELD=COLUMN" in result.stderr
