"""An adapter evaluated on a base model it was not trained on: refused, or run with --force and a warning.

Two tiny random llamas with the same shapes, config and model id but different
seeds: only the weight hashes punie records at training time can tell them apart.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from punie.errors import ConfigError, ModelError
from punie.eval import run_eval
from punie.training import TrainConfig, train
from punie.training.rundir import BaseModelIdentity, RunDir
from test_eval_engine import make_adapter, write_suite
from test_train import tool_record, write_split


def random_llama(out: Path, tokenizer_from: Path, seed: int, **sizes: int) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    out.mkdir(parents=True)
    mx.random.seed(seed)
    config = json.loads((tokenizer_from / "config.json").read_text()) | sizes  # model id included
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (out / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tokenizer_from / name, out / name)
    return out


@pytest.fixture(scope="module")
def other_seed(tiny_model, tmp_path_factory) -> Path:
    """Same config.json as ``tiny_model`` (model id included), other weights."""
    return random_llama(tmp_path_factory.mktemp("seed1") / "model", tiny_model, seed=1)


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory) -> Path:
    """An adapter punie trained on ``tiny_model``."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "data"
    data.mkdir()
    write_split(data / "train.jsonl", [tool_record(i) for i in range(8)])
    write_split(data / "valid.jsonl", [tool_record(i) for i in range(100, 104)])
    train(TrainConfig(data=data, model=str(tiny_model), output=root / "adapter", iters=2, batch_size=4,
                      num_layers=2, steps_per_eval=2))
    return root / "adapter"


def test_adapter_on_a_base_it_was_not_trained_on_is_refused(tiny_model, other_seed, trained, tmp_path):
    suite = write_suite(tmp_path / "suite.jsonl", n=2)
    with pytest.raises(ModelError) as info:
        run_eval(suite, model=str(other_seed), adapters=[trained], max_tokens=2, out_dir=tmp_path / "out")
    message = str(info.value)
    assert f"was trained on base model {tiny_model} (tiny-random-llama)" in message
    assert f"the base model here, {other_seed}, holds other weights (model.safetensors sha256" in message
    assert f"Evaluate it with --model {tiny_model}, or pass --force" in message
    assert not (tmp_path / "out").exists()

    forced = run_eval(suite, model=str(other_seed), adapters=[trained], max_tokens=2, out_dir=tmp_path / "out",
                      force=True)
    assert len(forced.warnings) == 1 and "Evaluated anyway (--force)" in forced.warnings[0]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["warnings"] == forced.warnings
    same = run_eval(suite, model=str(tiny_model), adapters=[trained], max_tokens=2, out_dir=tmp_path / "same")
    assert same.warnings == [] and [r.name for r in same.runs] == ["baseline", "adapter"]


def test_mlx_lm_adapter_naming_another_local_base_is_refused(tiny_model, other_seed, tmp_path):
    adapter = make_adapter(tiny_model, tmp_path / "mlx-lm-adapter", 0.0)  # adapter_config.json names tiny_model
    assert RunDir(adapter).read_manifest() is None
    with pytest.raises(ModelError, match=f"trained on base model {tiny_model}, but the base model here"):
        run_eval(write_suite(tmp_path / "suite.jsonl"), model=str(other_seed), adapters=[adapter],
                 out_dir=tmp_path / "out")


def test_advice_names_the_recorded_base_never_the_one_that_failed(tiny_model, trained, tmp_path):
    narrow = random_llama(tmp_path / "narrow", tiny_model, seed=0, hidden_size=32, intermediate_size=64)
    with pytest.raises(ModelError) as info:
        run_eval(write_suite(tmp_path / "suite.jsonl"), model=str(narrow), adapters=[trained],
                 out_dir=tmp_path / "out")
    assert f"Evaluate it with --model {tiny_model}." in str(info.value)
    assert f"--model {narrow}" not in str(info.value)
    # The directory the adapter records now holds another model (same path, other shapes).
    moved = tmp_path / "base"
    shutil.copytree(tiny_model, moved)
    adapter = make_adapter(moved, tmp_path / "adapter", 0.0)
    shutil.rmtree(moved)
    random_llama(moved, tiny_model, seed=0, hidden_size=32, intermediate_size=64)
    with pytest.raises(ModelError, match="does not fit") as info:
        run_eval(write_suite(tmp_path / "suite.jsonl"), model=str(moved), adapters=[adapter],
                 out_dir=tmp_path / "out")
    assert "that directory no longer holds the model the adapter was trained on" in str(info.value)
    assert f"Evaluate it with --model {moved}" not in str(info.value)


def test_eval_out_with_results_is_refused_unless_force(tiny_model, tmp_path):
    suite = write_suite(tmp_path / "suite.jsonl", n=2)
    out = tmp_path / "out"
    from punie.report.eval_report import write_report

    run_eval(suite, model=str(tiny_model), max_tokens=2, out_dir=out, on_written=write_report)
    before = (out / "results.json").read_bytes(), (out / "report.html").read_bytes()
    with pytest.raises(ConfigError, match="already holds results.json and report.html from another eval; pass "
                                          "--force to replace them"):
        run_eval(suite, model=str(tiny_model), max_tokens=2, out_dir=out)
    assert ((out / "results.json").read_bytes(), (out / "report.html").read_bytes()) == before
    again = run_eval(suite, model=str(tiny_model), max_tokens=2, out_dir=out, force=True)
    assert json.loads((out / "results.json").read_text())["created"] == again.created


def test_cli_refuses_then_forces_with_a_warning(tiny_model, other_seed, trained, tmp_path, run_cli):
    args = ["eval", "--suite", str(write_suite(tmp_path / "suite.jsonl", n=2)), "--model", str(other_seed),
            "--adapter", str(trained), "--out", str(tmp_path / "out"), "--max-tokens", "2"]
    refused = run_cli(*args)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "holds other weights" in refused.stderr and "--force" in refused.stderr
    forced = run_cli(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "Warning:" in forced.stderr and "Evaluated anyway (--force)" in forced.stderr
    again = run_cli(*args, "--force")  # --force also replaces the results in --out
    assert again.returncode == 0, again.stderr
    kept = run_cli(*args)  # without --force the results now in --out are kept
    assert kept.returncode == 1 and "already holds results.json" in kept.stderr


def test_identity_from_training_matches_the_same_weights_only(tiny_model, other_seed, trained):
    recorded = RunDir(trained).base_model()
    assert recorded == BaseModelIdentity.of_model_dir(tiny_model, str(tiny_model))
    assert recorded.weights_sha256 and recorded.difference(tiny_model) == ""
    assert recorded.difference(other_seed).startswith("model.safetensors sha256")
