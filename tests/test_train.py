"""punie train: learning, checkpoints, resume, safety stops, bad input, and mlx-lm compatibility."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from punie import blas
from punie.errors import ConfigError, DataError
from punie.training import TrainConfig, TrainingError, checkpoints, resolve_config, train

TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a file.", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]
FILES = ["setup.cfg", "main.py", "notes.txt", "data.json", "README.md", "app.toml"]


def tool_record(i: int) -> dict:
    path = f"dir{i % 5}/{FILES[i % len(FILES)]}"
    return {"messages": [{"role": "user", "content": f"Show me {path} (request {i})"},
                         {"role": "assistant", "content": "", "tool_calls": [
                             {"type": "function", "function": {"name": "read_file", "arguments": {"path": path}}}]}],
            "tools": TOOLS}


def write_split(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    write_split(d / "train.jsonl", [tool_record(i) for i in range(24)])
    write_split(d / "valid.jsonl", [tool_record(i) for i in range(100, 108)])
    write_split(d / "test.jsonl", [tool_record(i) for i in range(200, 204)])
    return d


def config(data_dir: Path, model: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=data_dir, model=str(model), output=out, iters=6, batch_size=4, steps_per_report=1,
                steps_per_eval=3, save_every=3, num_layers=2, learning_rate=1e-3)
    return TrainConfig(**(base | kw))


def test_smoke_loss_goes_down_and_weights_change(data_dir, tiny_model, tmp_path):
    out = tmp_path / "run"
    result = train(config(data_dir, tiny_model, out, iters=12, steps_per_eval=6))
    losses = [m["train_loss"] for m in result.metrics if "train_loss" in m]
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert result.best_val_loss < [m for m in result.metrics if "val_loss" in m][0]["val_loss"]
    weights = mx.load(str(out / "adapters.safetensors"))
    lora_b = [w for name, w in weights.items() if name.endswith("lora_b")]
    assert lora_b and all(float(mx.abs(w).max()) > 0 for w in lora_b)  # lora_b starts at zero
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["fine_tune_type"] == "lora" and adapter_config["num_layers"] == 2
    assert adapter_config["lora_parameters"] == {"rank": 8, "scale": 20.0, "dropout": 0.0}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["metrics"]["steps"] == 12
    train_file = manifest["data"]["files"]["train"]
    assert train_file["records"] == 24 and len(train_file["sha256"]) == 64
    assert manifest["base_model"]["model_id"] == "tiny-random-llama" and manifest["versions"]["mlx"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == result.metrics


def test_prompt_tokens_carry_no_loss(data_dir, tiny_model):
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from punie.training.data import tokenize_split

    tok = load_tokenizer(tiny_model)
    split = tokenize_split("train", [tool_record(0)], tok, "tools", mask_prompt=True, max_seq_length=2048)
    target = tok.decode(split.tokens[0][split.offsets[0]:])
    assert target.startswith('<tool_call>\n{"name": "read_file"') and target.endswith("</tool_call><|im_end|>\n")


def test_incomplete_checkpoints_are_ignored(tmp_path):
    (tmp_path / "checkpoints" / "step-000004").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-000004" / "state.json").write_text(json.dumps({"step": 4}))
    (tmp_path / "checkpoints" / "step-000008").mkdir()  # killed before state.json was written
    (tmp_path / "checkpoints" / ".step-000012.partial").mkdir()
    assert checkpoints.latest_checkpoint(tmp_path).step == 4


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(config(data_dir, tiny_model, out, iters=4, save_every=2, steps_per_eval=2))
    good = (out / "adapters.safetensors").read_bytes()
    from punie.training import losses

    def nan_loss(model, batch, lengths, start=0, prefix=0):
        loss, ntoks = losses.target_loss(model, batch, lengths, start, prefix)
        return loss * mx.nan, ntoks

    monkeypatch.setattr(losses, "loss_for", lambda model: nan_loss)
    with pytest.raises(TrainingError, match="became nan at step 5"):
        train(config(data_dir, tiny_model, out, iters=8, save_every=2, steps_per_eval=2), resume=True)
    assert checkpoints.latest_checkpoint(out).step == 4
    assert (out / "adapters.safetensors").read_bytes() == good
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("options", [{"fine_tune_type": "dora"}, {"fine_tune_type": "full"},
                                     {"grad_checkpoint": True, "grad_accumulation": 2}])
def test_other_fine_tune_types_train(data_dir, tiny_model, tmp_path, options):
    result = train(config(data_dir, tiny_model, tmp_path / "run", iters=3, **options))
    assert result.steps == 3 and np.isfinite(result.final_train_loss)


def test_grad_checkpointing_is_undone_after_training(data_dir, tiny_model, tmp_path):
    from mlx_lm.models.llama import TransformerBlock

    before = TransformerBlock.__call__
    train(config(data_dir, tiny_model, tmp_path / "run", iters=2, grad_checkpoint=True))
    assert TransformerBlock.__call__ is before  # mlx-lm patches the class; other models must not inherit it


def test_qlora_on_a_quantized_base(data_dir, tiny_model, tmp_path):
    import mlx.nn as nn
    from mlx_lm.utils import load, save_model

    model, _ = load(str(tiny_model))
    nn.quantize(model, group_size=32, bits=4)
    quantized = tmp_path / "q4"
    save_model(quantized, model)
    config_json = json.loads((tiny_model / "config.json").read_text()) | {"quantization": {"group_size": 32, "bits": 4}}
    (quantized / "config.json").write_text(json.dumps(config_json))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (quantized / name).write_bytes((tiny_model / name).read_bytes())
    result = train(config(data_dir, quantized, tmp_path / "run", iters=3))
    assert result.steps == 3 and np.isfinite(result.final_train_loss)


def test_early_stopping(data_dir, tiny_model, tmp_path):
    result = train(config(data_dir, tiny_model, tmp_path / "run", iters=40, learning_rate=0.5, steps_per_eval=1,
                          early_stopping=2, check_data=False))
    assert result.stopped_early and result.steps < 40


def test_truncation_is_counted_and_reported(data_dir, tiny_model, tmp_path):
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from punie.training.data import tokenize_split

    rows = [tool_record(i) for i in range(24)]
    lengths = sorted(map(len, tokenize_split("t", rows, load_tokenizer(tiny_model), "tools", mask_prompt=True,
                                             max_seq_length=4096).tokens))
    cut = lengths[-1] - 1  # shorter than the longest examples only
    expected = sum(n > cut for n in lengths)
    result = train(config(data_dir, tiny_model, tmp_path / "run", iters=2, max_seq_length=cut, check_data=False))
    assert result.truncated["train"] == expected > 0
    assert any(f"{expected} of 24 train examples are longer" in w for w in result.warnings)
    with pytest.raises(DataError, match="nothing to train on"):
        train(config(data_dir, tiny_model, tmp_path / "run2", max_seq_length=64, check_data=False))


def test_examples_whose_whole_target_is_cut_are_skipped(data_dir, tiny_model, tmp_path):
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from punie.training.data import tokenize_split

    rows = [tool_record(i) for i in range(24)]
    normal = max(map(len, tokenize_split("t", rows, load_tokenizer(tiny_model), "tools", mask_prompt=True,
                                         max_seq_length=4096).tokens))
    long = [tool_record(i) for i in range(300, 304)]
    for record in long:
        record["messages"][0]["content"] += " please" * 200  # the prompt alone outgrows --max-seq-length
    write_split(data_dir / "train.jsonl", rows + long)
    # Enough steps to reach every batch: a batch made only of cut examples would have nothing to train on.
    result = train(config(data_dir, tiny_model, tmp_path / "run", iters=8, max_seq_length=normal + 1,
                          check_data=False))
    assert result.steps == 8
    assert "4 of them lose their whole target and are skipped." in result.warnings


def test_config_precedence_cli_over_file_over_defaults(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("learning-rate: 0.001\nrank: 4\niters: 7\n")
    cfg = resolve_config({"data": tmp_path, "rank": 16, "iters": None}, file)
    assert (cfg.rank, cfg.learning_rate, cfg.iters, cfg.batch_size) == (16, 0.001, 7, 4)
    with pytest.raises(ConfigError, match="rank.*got -1"):
        resolve_config({"data": tmp_path, "rank": -1})
    file.write_text("ranks: 4\n")
    with pytest.raises(ConfigError, match="ranks"):
        resolve_config({"data": tmp_path}, file)


def test_hf_dataset_saved_to_disk(tiny_model, tmp_path):
    import datasets

    rows = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(12)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:8]),
                          "validation": datasets.Dataset.from_list(rows[8:])}).save_to_disk(str(tmp_path / "ds"))
    cfg = TrainConfig(hf_dataset=str(tmp_path / "ds"), hf_fields={"prompt": "question", "completion": "answer"},
                      model=str(tiny_model), output=tmp_path / "run", iters=2, batch_size=2, num_layers=1)
    assert train(cfg).steps == 2


@pytest.mark.parametrize("mutate, message", [
    (lambda d: (d / "train.jsonl").write_text('{"messages": []}\n{not json\n'), r"train.jsonl:2"),
    (lambda d: (d / "valid.jsonl").unlink(), "punie data split"),
    (lambda d: (d / "valid.jsonl").write_text(""), "valid"),
    (lambda d: (d / "train.jsonl").write_text(json.dumps({"text": "a"}) + "\n" + json.dumps(tool_record(1)) + "\n"),
     "mix"),
    (lambda d: (d / "train.jsonl").write_text(json.dumps({"question": "a"}) + "\n"), "fits no format"),
])
def test_bad_data_trains_nothing(data_dir, tiny_model, tmp_path, mutate, message):
    mutate(data_dir)
    out = tmp_path / "run"
    with pytest.raises(DataError, match=message):
        train(config(data_dir, tiny_model, out))
    assert not (out / "adapters.safetensors").exists()


def test_refusals_before_training(data_dir, tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="larger than the model's 2 layers"):
        train(config(data_dir, tiny_model, tmp_path / "a", num_layers=5))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="already exists"):
        train(config(data_dir, tiny_model, taken))
    assert (taken / "mine.txt").read_text() == "keep me"


def test_cli_errors_name_the_line_and_exit_1(data_dir, tiny_model, tmp_path, run_cli):
    (data_dir / "train.jsonl").write_text(json.dumps(tool_record(0)) + "\n\n{broken\n")
    result = run_cli("train", str(data_dir), "--model", str(tiny_model), "--output", str(tmp_path / "o"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "train.jsonl:3" in result.stderr


def test_adapter_works_with_unmodified_mlx_lm_tools(data_dir, tiny_model, tmp_path, run_cli):
    out = tmp_path / "run"
    result = run_cli("train", str(data_dir), "--model", str(tiny_model), "--output", str(out), "--iters", "3",
                     "--num-layers", "2", "--batch-size", "4", "--steps-per-eval", "3")
    assert result.returncode == 0, result.stderr
    assert "Adapter:" in result.stdout
    env = blas.child_env()
    gen = subprocess.run([sys.executable, "-m", "mlx_lm", "generate", "--model", str(tiny_model), "--adapter-path",
                          str(out), "--prompt", "hi", "--max-tokens", "3"], capture_output=True, text=True, env=env)
    assert gen.returncode == 0, gen.stderr
    fused = tmp_path / "fused"
    fuse = subprocess.run([sys.executable, "-m", "mlx_lm", "fuse", "--model", str(tiny_model), "--adapter-path",
                           str(out), "--save-path", str(fused)], capture_output=True, text=True, env=env)
    assert fuse.returncode == 0, fuse.stderr
    assert (fused / "config.json").is_file() and list(fused.glob("*.safetensors"))
    from punie.serve import ServerProcess

    with ServerProcess(model=str(tiny_model), adapter=str(out)) as server:  # mlx_lm.server --adapter-path
        reply = server.chat([{"role": "user", "content": "hi"}], tools=TOOLS, max_tokens=3)
    assert reply["choices"][0]["message"]["role"] == "assistant"


def _four_tool_examples(tiny_model):
    """The tiny model, and a batch of four tool examples with their (start, shared prefix)."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from punie.models.loading import load
    from punie.training import losses
    from punie.training.data import make_batch, tokenize_split

    model, _ = load(str(tiny_model))
    split = tokenize_split("t", [tool_record(i) for i in range(4)], load_tokenizer(tiny_model), "tools",
                           mask_prompt=True, max_seq_length=2048)
    batch, lengths = make_batch(split, [0, 1, 2, 3], 2048)
    start = losses.loss_start(split.offsets)
    return model, batch, lengths, start, losses.shared_prefix(split.tokens, start)


def _assert_same_loss_and_gradients(model, ours, theirs, names):
    """``ours`` and ``theirs`` are ``loss_fn(model) -> (loss, ntoks)``; compare values and named gradients."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    (loss1, n1), g1 = nn.value_and_grad(model, ours)(model)
    (loss2, n2), g2 = nn.value_and_grad(model, theirs)(model)
    assert int(n1.item()) == int(n2.item()) > 0
    np.testing.assert_allclose(loss1.item(), loss2.item(), rtol=1e-5)
    flat1, flat2 = dict(tree_flatten(g1)), dict(tree_flatten(g2))
    for name in names:
        assert np.abs(np.array(flat2[name])).max() > 0
        np.testing.assert_allclose(np.array(flat1[name]), np.array(flat2[name]), atol=1e-6)


def test_target_loss_matches_mlx_lm_loss_and_gradients(tiny_model):
    from mlx_lm.tuner.trainer import default_loss

    from punie.training import losses

    model, batch, lengths, start, _ = _four_tool_examples(tiny_model)
    assert start > 0 and losses.loss_for(model) is losses.target_loss
    _assert_same_loss_and_gradients(model, lambda m: losses.target_loss(m, batch, lengths, start),
                                    lambda m: default_loss(m, batch, lengths),
                                    ("model.layers.1.mlp.down_proj.weight", "model.embed_tokens.weight"))


def test_shared_prefix_pass_gives_the_same_loss_and_gradients(tiny_model):
    from punie.training import losses

    model, batch, lengths, start, prefix = _four_tool_examples(tiny_model)
    assert 0 < prefix <= start and prefix % losses.START_ALIGN == 0
    _assert_same_loss_and_gradients(model, lambda m: losses.target_loss(m, batch, lengths, start, prefix),
                                    lambda m: losses.target_loss(m, batch, lengths, start, 0),
                                    ("model.layers.0.self_attn.k_proj.weight", "model.layers.1.mlp.down_proj.weight",
                                     "model.embed_tokens.weight"))


def test_batches_mix_examples_of_similar_length():
    from punie.training.data import LENGTH_BUCKET, TokenizedSplit, batch_plan

    # Two kinds of example with lengths 100..115 (one bucket): strict length order would batch them by kind.
    lengths = [100 + i % 8 for i in range(16)] + [108 + i % 8 for i in range(16)]
    split = TokenizedSplit("train", [[1] * n for n in lengths], [50] * 32, 0, 0)
    plans = [batch_plan(split, 4, seed) for seed in (0, 1)]
    assert plans[0] == batch_plan(split, 4, 0)  # a pure function of the seed (resume depends on it)
    assert plans[0] != plans[1]
    assert sorted(i for b in plans[0] for i in b) == list(range(32))
    kinds = [{i < 16 for i in b} for b in plans[0]]
    assert sum(len(k) == 2 for k in kinds) >= 2  # some batches hold both kinds
    long = TokenizedSplit("train", [[1] * n for n in (10, 260, 20, 270, 30, 280, 40, 290)], [5] * 8, 0, 0)
    for batch in batch_plan(long, 4, 3):  # never a batch across buckets when each bucket fills batches
        assert len({len(long.tokens[i]) // LENGTH_BUCKET for i in batch}) == 1


def test_shared_prefix_length():
    from punie.training.losses import shared_prefix

    rows = [list(range(100)) + [1, 2], list(range(100)) + [3], list(range(70)) + [0] * 40]
    assert shared_prefix(rows, start=99) == 64  # 70 shared, aligned down to 32
    assert shared_prefix(rows[:2], start=99) == 96  # capped at the first target, aligned down
    assert shared_prefix(rows[:2], start=20) == 0
    assert shared_prefix(rows[:1], start=99) == 0  # one row: nothing to share
    assert shared_prefix([list(range(50)), list(range(100))], start=99) == 32  # capped at the shortest row


def test_chat_data_needs_a_chat_template(data_dir, tiny_model, tmp_path):
    import shutil

    bare = tmp_path / "no-template"
    shutil.copytree(tiny_model, bare)
    config_file = bare / "tokenizer_config.json"
    tok_config = json.loads(config_file.read_text())
    tok_config.pop("chat_template")
    config_file.write_text(json.dumps(tok_config))
    with pytest.raises(DataError, match="no chat template"):
        train(config(data_dir, bare, tmp_path / "run"))
    assert not (tmp_path / "run" / "adapters.safetensors").exists()
