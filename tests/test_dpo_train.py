"""punie dpo on the tiny model: exact shared-prompt log-probs, the reference policy, gradients, learning,
resume, mlx-lm compatibility and bad input."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from punie.dpo import DPOConfig, TrainingInterrupted, train_dpo
from punie.dpo.data import PairSplit, make_pair_batch, tokenize_pairs
from punie.dpo.logps import plain_logps, shared_prompt_logps
from punie.errors import ConfigError, DataError
from punie.training.rundir import BaseModelIdentity, RunDir
from test_train_interrupts import ctrl_c

TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a file.", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]
THINGS = ["the sky", "water", "a cat", "fire", "the moon", "a tree", "ice", "a river", "sand", "a bird"]


def yes_no_pair(i: int) -> dict:
    """The toy task: every prompt's chosen reply is "yes", the rejected one "no"."""
    return {"prompt": f"Question {i}: is {THINGS[i % len(THINGS)]} real?", "chosen": "yes", "rejected": "no"}


def tool_pair(i: int) -> dict:
    call = {"type": "function", "function": {"name": "read_file", "arguments": {"path": f"dir{i}/notes.txt"}}}
    return {"messages": [{"role": "system", "content": "You read files."},
                         {"role": "user", "content": f"Show me dir{i}/notes.txt" + " please" * (i % 3)}],
            "tools": TOOLS, "chosen": {"role": "assistant", "content": "", "tool_calls": [call]},
            "rejected": [{"role": "assistant", "content": f"I cannot open files, sorry ({i})."}]}


def write_split(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def pairs_dir(tmp_path) -> Path:
    d = tmp_path / "pairs"
    d.mkdir()
    write_split(d / "train.jsonl", [yes_no_pair(i) for i in range(16)])
    write_split(d / "valid.jsonl", [yes_no_pair(i) for i in range(100, 104)])
    return d


def config(data: Path, model: Path, out: Path, **kw) -> DPOConfig:
    base = dict(data=data, model=str(model), output=out, iters=6, batch_size=4, steps_per_report=1,
                steps_per_eval=3, save_every=3, num_layers=2, learning_rate=1e-3)
    return DPOConfig(**(base | kw))


def _tool_split(tiny_model: Path, tmp_path: Path) -> tuple[object, PairSplit]:
    from punie.models.loading import load

    model, tokenizer = load(str(tiny_model))
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "tool_pairs.jsonl"
    write_split(path, [tool_pair(i) for i in range(4)] + [yes_no_pair(1)])
    return model, tokenize_pairs("train", path, tokenizer, 2048)


def test_shared_prompt_pass_equals_full_rows_and_scores_only_the_reply(tiny_model, tmp_path):
    model, split = _tool_split(tiny_model, tmp_path)
    assert len({len(p) for p in split.prompts}) > 1  # prompts of different lengths share one left-padded batch
    _assert_shared_equals_plain(tiny_model, tmp_path / "again")
    batch = make_pair_batch(split, list(range(len(split))))
    shared = shared_prompt_logps(model, batch.prompts, batch.prompt_valid, batch.replies, batch.reply_lengths)
    # One pair alone, unpadded, scored token by token from the model's full-sequence logits.
    i = 2
    row = split.prompts[i] + split.chosen[i]
    logprobs = np.array(mx.log(mx.softmax(model(mx.array([row])).astype(mx.float32), axis=-1)))[0]
    start = len(split.prompts[i])
    expected = sum(logprobs[t - 1, row[t]] for t in range(start, len(row)))
    np.testing.assert_allclose(np.array(shared)[i], expected, rtol=1e-5)


def test_gradient_matches_central_finite_differences(tiny_model, tmp_path):
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from punie.dpo.losses import LossOptions, PairLogps, preference_loss

    model, split = _tool_split(tiny_model, tmp_path)
    model.freeze()
    linear_to_lora_layers(model, 1, {"rank": 2, "scale": 2.0, "dropout": 0.0})
    mx.random.seed(3)
    # lora_b starts at zero, where the lora_a gradient vanishes: give it small random values.
    model.load_weights([(n, mx.random.normal(p.shape) * 0.05) for n, p in tree_flatten(model.trainable_parameters())
                        if n.endswith("lora_b")], strict=False)
    batch = make_pair_batch(split, [0, 1, 4])
    ref_c, ref_r = mx.array([-30.0, -31.0, -9.0]), mx.array([-70.0, -60.0, -8.0])
    b = 3

    def loss(m):
        policy = shared_prompt_logps(m, batch.prompts, batch.prompt_valid, batch.replies, batch.reply_lengths)
        pairs = PairLogps(policy[:b], policy[b:], ref_c, ref_r, batch.reply_lengths[:b], batch.reply_lengths[b:])
        return preference_loss("sigmoid", pairs, 0.05, LossOptions(), sft_weight=0.1)

    _, grads = nn.value_and_grad(model, loss)(model)
    flat_grads = dict(tree_flatten(grads))
    checked = 0
    for name in ("model.layers.1.self_attn.q_proj.lora_a", "model.layers.1.mlp.down_proj.lora_b"):
        param = dict(tree_flatten(model.trainable_parameters()))[name]
        grad = np.array(flat_grads[name]).ravel()
        for k in np.argsort(-np.abs(grad))[:3]:  # the largest entries: well above float32 noise
            values = np.array(param).ravel()
            estimates = []
            for sign in (1, -1):
                shifted = values.copy()
                shifted[k] += sign * 1e-2
                model.load_weights([(name, mx.array(shifted.reshape(param.shape)))], strict=False)
                estimates.append(loss(model).item())
            model.load_weights([(name, param)], strict=False)
            numeric = (estimates[0] - estimates[1]) / 2e-2
            np.testing.assert_allclose(grad[k], numeric, rtol=2e-2, atol=1e-5)
            checked += 1
    assert checked == 6 and np.abs(grad).max() > 1e-4


def test_toy_preference_task_is_learned(pairs_dir, tiny_model, tmp_path):
    from mlx_lm import load as mlx_load

    out = tmp_path / "run"
    result = train_dpo(config(pairs_dir, tiny_model, out, iters=8, steps_per_eval=4))
    trains = [m for m in result.metrics if "loss" in m]
    vals = [m for m in result.metrics if "val_loss" in m]
    # Step 1 scores the batch before its update: policy = reference, so every margin is 0 up to float noise
    # (and accuracy, margin > 0, is a coin flip); it ends above 0.9 on the train batches and the held-out pairs.
    assert abs(trains[0]["margins"]) < 1e-3 and abs(vals[0]["val_margins"]) < 1e-3
    assert len(trains) == 8 and trains[-1]["accuracy"] > 0.9 and result.final_val_accuracy > 0.9
    assert trains[-1]["loss"] < trains[0]["loss"] and vals[-1]["val_margins"] > vals[0]["val_margins"]
    assert set(trains[0]) >= {"loss", "rewards/chosen", "rewards/rejected", "margins", "accuracy", "logps/chosen",
                              "logps/rejected", "beta"}
    assert [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] == result.metrics
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["config"]["loss"] == "sigmoid"
    assert manifest["base_model"]["model_id"] == "tiny-random-llama" and manifest["versions"]["mlx-lm"]
    assert len(manifest["data"]["files"]["train"]["sha256"]) == 64 and manifest["data"]["files"]["train"]["pairs"] == 16
    # Unmodified mlx-lm loads the adapter, and it prefers "yes" where the base model did not care.
    model, tokenizer = mlx_load(str(tiny_model), adapter_path=str(out))
    split = tokenize_pairs("valid", pairs_dir / "valid.jsonl", tokenizer, 2048)
    batch = make_pair_batch(split, list(range(len(split))))
    scores = np.array(plain_logps(model, batch.prompts, batch.prompt_valid, batch.replies, batch.reply_lengths))
    assert (scores[:4] > scores[4:]).all()


def test_reference_is_the_starting_policy_and_is_cached(pairs_dir, tiny_model, tmp_path):
    from mlx_lm import load as mlx_load

    from punie.dpo.reference import RUN_FILE

    start = tmp_path / "start"
    train_dpo(config(pairs_dir, tiny_model, start, iters=3, steps_per_eval=3))
    out = tmp_path / "continued"
    first = train_dpo(config(pairs_dir, tiny_model, out, iters=1, adapter=start, learning_rate=1e-4))
    assert not first.reference_cached
    saved = {k: np.array(v) for k, v in mx.load(str(out / RUN_FILE)).items()}
    # Recompute with an independently loaded base + START (mlx-lm's own loader), one pair at a time.
    model, tokenizer = mlx_load(str(tiny_model), adapter_path=str(start))
    base, _ = mlx_load(str(tiny_model))
    for name in ("train", "valid"):
        split = tokenize_pairs(name, pairs_dir / f"{name}.jsonl", tokenizer, 2048)
        for i in range(len(split)):
            batch = make_pair_batch(split, [i])
            args = (batch.prompts, batch.prompt_valid, batch.replies, batch.reply_lengths)
            expected = np.array(plain_logps(model, *args))
            np.testing.assert_allclose([saved[f"{name}.chosen"][i], saved[f"{name}.rejected"][i]], expected,
                                       rtol=1e-5, atol=1e-4)
            if i == 0:  # START really changed the scores, so the comparison above can fail
                assert np.abs(np.array(plain_logps(base, *args)) - expected).max() > 1e-2
    assert json.loads((out / "adapter_config.json").read_text())["lora_parameters"]["rank"] == 8
    again = train_dpo(config(pairs_dir, tiny_model, tmp_path / "again", iters=1, adapter=start, learning_rate=1e-4))
    assert again.reference_cached


RESUMABLE = dict(iters=6, lr_schedule="cosine", warmup=2, dropout=0.1, save_every=2, beta_schedule="0.1:0,0.3:3",
                 loss="ipo", sft_weight=0.2)


def dpo_curves(run: Path) -> list[tuple]:
    """Every reported number that must not depend on interruptions (timings and speeds do)."""
    keys = ("loss", "margins", "beta", "learning_rate", "val_loss", "val_margins", "best_val_loss")
    return [(m["iteration"], k, m[k]) for m in RunDir(run).read_metrics() for k in keys if k in m]


def assert_same_dpo_run(a: Path, b: Path) -> None:
    ca, cb = dpo_curves(a), dpo_curves(b)
    assert [c[:2] for c in ca] == [c[:2] for c in cb]
    np.testing.assert_allclose([c[2] for c in ca], [c[2] for c in cb], rtol=1e-5, atol=1e-6)
    wa, wb = mx.load(str(a / "adapters.safetensors")), mx.load(str(b / "adapters.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(np.array(wa[k]), np.array(wb[k]), atol=1e-6, err_msg=k)


def test_ctrl_c_at_any_point_resumes_to_the_uninterrupted_curve(pairs_dir, tiny_model, tmp_path, monkeypatch):
    from punie.dpo.loop import DPOTrainer

    straight = tmp_path / "straight"
    train_dpo(config(pairs_dir, tiny_model, straight, **RESUMABLE))
    assert [m["beta"] for m in RunDir(straight).read_metrics() if "loss" in m] == [0.1, 0.1, 0.1, 0.3, 0.3, 0.3]
    account, validation = DPOTrainer._account, DPOTrainer.validation

    def after_update_of(step):  # the step's weights are computed, its counter not yet advanced
        def hook(self, *args):
            if self.state.step + 1 == step:
                ctrl_c()
            return account(self, *args)
        return hook

    def during_validation_at(step):
        def hook(self):
            if self.state.step == step:
                ctrl_c()
            return validation(self)
        return hook

    class CtrlCAtReport:
        def on_report(self, report):
            if report["iteration"] == 3 and "loss" in report:
                ctrl_c()

    points = {"after the update of step 5": (after_update_of(5), None, None, 5),
              "in the report of step 3": (None, None, CtrlCAtReport(), 3),
              "during the validation of step 3": (None, during_validation_at(3), None, 3)}
    for name, (account_hook, validation_hook, callback, stopped_at) in points.items():
        out = tmp_path / name.replace(" ", "-")
        with monkeypatch.context() as patch:
            if account_hook:
                patch.setattr(DPOTrainer, "_account", account_hook)
            if validation_hook:
                patch.setattr(DPOTrainer, "validation", validation_hook)
            with pytest.raises(TrainingInterrupted) as info:
                train_dpo(config(pairs_dir, tiny_model, out, **RESUMABLE), callback)
        # Stopped at the end of the step it was in, with that step's checkpoint (3 and 5 are not scheduled).
        assert info.value.step == stopped_at == RunDir(out).latest_checkpoint().step, name
        assert RunDir(out).status() == "interrupted", name
        resumed = train_dpo(config(pairs_dir, tiny_model, out, **RESUMABLE), resume=True)
        assert resumed.reference_cached  # read from the run, not recomputed from the trained weights
        assert_same_dpo_run(straight, out)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the loop put the handler back


def test_keyboard_interrupt_from_a_callback_stops_without_saving(pairs_dir, tiny_model, tmp_path):
    class RaiseAt:
        def on_report(self, report):
            if report["iteration"] == 3 and "loss" in report:
                raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as info:
        train_dpo(config(pairs_dir, tiny_model, out, **RESUMABLE), RaiseAt())
    assert info.value.step == 2 == RunDir(out).latest_checkpoint().step  # the last scheduled checkpoint
    train_dpo(config(pairs_dir, tiny_model, out, **RESUMABLE), resume=True)
    straight = tmp_path / "straight"
    train_dpo(config(pairs_dir, tiny_model, straight, **RESUMABLE))
    assert_same_dpo_run(straight, out)


def test_a_dpo_adapter_on_another_base_with_the_same_shapes_is_refused(pairs_dir, tiny_model, tmp_path):
    from punie.errors import ModelError
    from punie.eval import run_eval
    from test_adapter_base import random_llama
    from test_eval_engine import write_suite

    out = tmp_path / "dpo"
    train_dpo(config(pairs_dir, tiny_model, out, iters=2, steps_per_eval=2))
    train_manifest = RunDir(out).read_manifest()
    assert train_manifest["base_model"] == BaseModelIdentity.of_model_dir(tiny_model, str(tiny_model)).to_record()
    other = random_llama(tmp_path / "seed1", tiny_model, seed=1)
    suite = write_suite(tmp_path / "suite.jsonl", n=2)
    with pytest.raises(ModelError, match=re.escape(f"was trained on base model {tiny_model} (tiny-random-llama)")):
        run_eval(suite, model=str(other), adapters=[out], max_tokens=2, out_dir=tmp_path / "eval")
    same = run_eval(suite, model=str(tiny_model), adapters=[out], max_tokens=2, out_dir=tmp_path / "same")
    assert same.warnings == [] and [r.name for r in same.runs] == ["baseline", "dpo"]


def test_bad_pair_files_name_the_line_and_exit_1(pairs_dir, tiny_model, tmp_path, run_cli):
    write_split(pairs_dir / "train.jsonl", [yes_no_pair(i) for i in range(4)] + [
        {"prompt": "Is it?", "chosen": "yes", "rejected": "yes"}])
    result = run_cli("dpo", str(pairs_dir), "--model", str(tiny_model), "--output", str(tmp_path / "o"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "train.jsonl:5" in result.stderr and "same reply" in result.stderr
    (pairs_dir / "train.jsonl").write_text(json.dumps(yes_no_pair(0)) + "\n{broken\n")
    result = run_cli("dpo", str(pairs_dir), "--model", str(tiny_model), "--output", str(tmp_path / "o"))
    assert result.returncode == 1 and "train.jsonl:2" in result.stderr and "Traceback" not in result.stderr
    write_split(pairs_dir / "train.jsonl", [{"prompt": f"q{i}", "completion": "a"} for i in range(4)])
    write_split(pairs_dir / "valid.jsonl", [{"prompt": f"v{i}", "completion": "a"} for i in range(2)])
    result = run_cli("dpo", str(pairs_dir), "--model", str(tiny_model), "--output", str(tmp_path / "o"))
    assert result.returncode == 1 and "punie train" in result.stderr
    assert not (tmp_path / "o" / "adapters.safetensors").exists()


def test_force_over_a_run_deletes_nothing_when_the_new_data_is_refused(pairs_dir, tiny_model, tmp_path):
    good = tmp_path / "good"
    train_dpo(config(pairs_dir, tiny_model, good, iters=3))
    before = {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="holds a punie dpo run .completed, last checkpoint at step 3"):
        train_dpo(config(pairs_dir, tiny_model, good, iters=3))
    write_split(pairs_dir / "train.jsonl", [{"prompt": "Is it?", "chosen": "yes", "rejected": "yes"}])
    with pytest.raises(DataError, match="train.jsonl:1"):
        train_dpo(config(pairs_dir, tiny_model, good, iters=3), force=True)
    assert {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()} == before
    with pytest.raises(DataError, match="train.jsonl:1"):
        train_dpo(config(pairs_dir, tiny_model, tmp_path / "new" / "run"))
    assert not (tmp_path / "new").exists()


def test_cli_trains_reports_dropped_pairs_and_resumes(pairs_dir, tiny_model, tmp_path, run_cli):
    out = tmp_path / "cli"
    args = ("dpo", str(pairs_dir), "--model", str(tiny_model), "--output", str(out), "--num-layers", "2",
            "--steps-per-eval", "2", "--learning-rate", "1e-3", "--drop-noisy", "0.25", "--loss", "robust")
    result = run_cli(*args, "--iters", "2")
    assert result.returncode == 0, result.stderr
    assert "Dropped 4 noisy train pairs" in result.stderr and "Adapter:" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["data"]["dropped_noisy"]) == 4 and manifest["config"]["loss"] == "robust"
    more = run_cli("dpo", str(pairs_dir), "--output", str(out), "--resume", "--iters", "4")
    assert more.returncode == 0, more.stderr
    assert json.loads((out / "manifest.json").read_text())["metrics"]["steps"] == 4


def test_models_without_the_shared_pass_train_on_full_rows(pairs_dir, tiny_model, tmp_path, monkeypatch):
    from punie.dpo import loop

    # As for an architecture the shared-prompt pass does not cover: the loop takes the uncompiled full-row path.
    monkeypatch.setattr(loop, "logps_fn", lambda model: plain_logps)
    result = train_dpo(config(pairs_dir, tiny_model, tmp_path / "plain", iters=3, steps_per_eval=3))
    trains = [m for m in result.metrics if "loss" in m]
    assert result.steps == 3 and trains[-1]["loss"] < trains[0]["loss"]


@pytest.mark.slow
def test_shared_prompt_pass_is_exact_on_the_default_model(default_model, tmp_path):
    _assert_shared_equals_plain(default_model, tmp_path, rtol=1e-4, atol=1e-3)  # 30 layers of float32 rounding


def _assert_shared_equals_plain(model_dir: Path, tmp_path: Path, rtol: float = 1e-5, atol: float = 1e-4) -> None:
    model, split = _tool_split(model_dir, tmp_path)
    batch = make_pair_batch(split, list(range(len(split))))
    args = (batch.prompts, batch.prompt_valid, batch.replies, batch.reply_lengths)
    np.testing.assert_allclose(np.array(shared_prompt_logps(model, *args)), np.array(plain_logps(model, *args)),
                               rtol=rtol, atol=atol)


def test_a_best_step_of_0_says_the_adapter_is_the_start_unchanged(pairs_dir, tiny_model, tmp_path):
    start = tmp_path / "start"
    train_dpo(config(pairs_dir, tiny_model, start, iters=3, steps_per_eval=3))
    # A step too small to lower the validation loss: the best weights are those of step 0, i.e. START's.
    out = tmp_path / "still"
    result = train_dpo(config(pairs_dir, tiny_model, out, iters=2, steps_per_eval=2, adapter=start,
                              learning_rate=1e-30))
    assert result.best_step == 0
    assert any(f"holds the starting adapter {start} unchanged" in w for w in result.warnings)
    kept, original = mx.load(str(out / "adapters.safetensors")), mx.load(str(start / "adapters.safetensors"))
    assert all(np.array_equal(np.array(kept[k]), np.array(original[k])) for k in original)
    moved = train_dpo(config(pairs_dir, tiny_model, tmp_path / "moved", iters=2, steps_per_eval=2, adapter=start,
                             learning_rate=1e-4, keep="last"))
    assert not any("unchanged" in w for w in moved.warnings)


def test_untrained_best_warning_only_for_keep_best_at_step_0():
    from punie.training.checkpoints import untrained_best_warning

    assert "holds the base unchanged" in untrained_best_warning("best", 0, 40, "the base")
    assert untrained_best_warning("best", 40, 40, "the base") is None
    assert untrained_best_warning("last", 0, 40, "the base") is None
    assert untrained_best_warning("best", 0, 0, "the base") is None  # nothing was trained at all
