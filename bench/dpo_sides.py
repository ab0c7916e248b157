"""One side of bench_dpo.py, in a process of its own: ``python bench/dpo_sides.py SIDE JOB.json``.

SIDE is ``punie`` (``punie.dpo.train_dpo``), ``mlx-lm-lora`` (its ``train_dpo``,
driven as its ``train.py`` drives it for ``--train-mode dpo``) or ``check`` (both
tools' tokens and summed log-probs of the same pairs). The result is written as
JSON to the job's ``result`` path: per-step seconds and pairs from the tool's own
step timer and from the wall clock between its train reports, the first reported
train and validation losses, and MLX's peak memory since the process started.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlx.core as mx
import numpy as np


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _shim_device_info() -> None:
    """mlx-lm-lora calls mx.set_wired_limit(mx.device_info()["max_recommended_working_set_size"]);
    the key exists on Metal only, so on Linux it crashes before the first step. The wired limit
    does nothing on the CPU backend, so 0 (MLX's "no limit") changes nothing but the crash."""
    original = mx.device_info
    info = original()
    if "max_recommended_working_set_size" not in info:
        mx.device_info = lambda: dict(original(), max_recommended_working_set_size=0)


def run_punie(job: dict[str, Any]) -> dict[str, Any]:
    import punie.dpo.reference as reference
    from punie.dpo import DPOConfig, train_dpo

    s = job["settings"]
    timed: list[dict[str, Any]] = []
    compute = reference.compute_reference

    def timed_reference(model: Any, split: Any, logps: Any, batch_size: int) -> Any:
        tic = time.perf_counter()
        out = compute(model, split, logps, batch_size)
        timed.append({"split": split.name, "pairs": len(split), "seconds": time.perf_counter() - tic})
        return out

    reference.compute_reference = timed_reference  # train_dpo's reference_logps looks it up at call time
    steps: list[dict[str, float]] = []
    first_val: list[float] = []
    clock = [time.perf_counter()]

    class Recorder:
        def on_report(self, report: dict[str, Any]) -> None:
            now = time.perf_counter()
            if "val_loss" in report:
                first_val.append(report["val_loss"])
            elif "loss" in report:
                # pairs_per_second is cumulative over punie's step timer (the compiled step and its eval).
                trained = report["iteration"] * s["batch_size"]
                total = trained / report["pairs_per_second"]
                done = sum(x["seconds"] for x in steps)
                steps.append({"seconds": total - done, "pairs": s["batch_size"], "wall_seconds": now - clock[0],
                              "loss": report["loss"]})
            clock[0] = now

    output = Path(job["work"]) / f"punie-{job['tag']}"
    config = DPOConfig(data=Path(job["punie_data"]), model=job["model"], output=output,
                       loss=s["loss"], beta=s["beta"], rank=s["rank"], scale=s["scale"], num_layers=s["num_layers"],
                       learning_rate=s["learning_rate"], iters=job["iters"], batch_size=s["batch_size"],
                       max_seq_length=s["max_seq_length"], seed=s["seed"], steps_per_report=1,
                       steps_per_eval=10**6, val_batches=s["val_batches"], save_every=10**6)
    result = train_dpo(config, Recorder())
    assert not result.reference_cached, "the reference pass must be computed, not read from a cache"
    return {"steps": steps, "reference": timed, "first_loss": steps[0]["loss"], "first_val_loss": first_val[0],
            "warnings": result.warnings}


def run_mlx_lm_lora(job: dict[str, Any]) -> dict[str, Any]:
    _shim_device_info()
    import mlx.optimizers as optim
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm_lora.train import load_reference_model
    from mlx_lm_lora.trainer.datasets import CacheDataset, DPODataset
    from mlx_lm_lora.trainer.dpo_trainer import DPOTrainingArgs, train_dpo
    from mlx_lm_lora.utils import from_pretrained

    s = job["settings"]
    out = Path(job["work"]) / f"mlx-lm-lora-{job['tag']}"
    np.random.seed(s["seed"])  # as mlx_lm_lora.train.run does, before loading
    lora = {"rank": s["rank"], "dropout": 0.0, "scale": s["scale"], "use_dora": False, "num_layers": s["num_layers"]}
    model, tokenizer, adapter_file = from_pretrained(model=job["model"], new_adapter_path=str(out), lora_config=lora)
    ref_model = load_reference_model(SimpleNamespace(reference_model_path=None, model=job["model"]))
    data = Path(job["mlx_lm_lora_data"])
    train_set, valid_set = (CacheDataset(DPODataset(_read_jsonl(data / f"{n}.jsonl"), tokenizer))
                            for n in ("train", "valid"))
    mx.random.seed(s["seed"])  # as train_model does
    steps: list[dict[str, float]] = []
    first_val: list[float] = []
    clock = [time.perf_counter()]

    class Recorder(TrainingCallback):
        def on_train_loss_report(self, info: dict[str, Any]) -> None:
            now = time.perf_counter()
            # steps_per_report=1: its window is one step (batch building, the compiled step, its eval).
            steps.append({"seconds": 1 / info["iterations_per_second"], "pairs": s["batch_size"],
                          "wall_seconds": now - clock[0], "loss": info["train_loss"]})
            clock[0] = now

        def on_val_loss_report(self, info: dict[str, Any]) -> None:
            first_val.append(info["val_loss"])
            clock[0] = time.perf_counter()  # the evaluation is not part of a step

    args = DPOTrainingArgs(batch_size=s["batch_size"], iters=job["iters"], val_batches=s["val_batches"],
                           steps_per_report=1, steps_per_eval=10**6, steps_per_save=10**6,
                           adapter_file=adapter_file, max_seq_length=s["max_seq_length"], beta=s["beta"],
                           loss_type=s["loss"])
    train_dpo(model=model, ref_model=ref_model, optimizer=optim.Adam(learning_rate=s["learning_rate"]),
              train_dataset=train_set, val_dataset=valid_set, args=args, training_callback=Recorder(),
              loss_type=s["loss"])
    return {"steps": steps, "first_loss": steps[0]["loss"], "first_val_loss": first_val[0]}


def run_check(job: dict[str, Any]) -> dict[str, Any]:
    """Same token ids on both sides, and both tools' summed reply log-probs of the first batch of pairs."""
    from mlx_lm_lora.trainer.datasets import DPODataset
    from mlx_lm_lora.trainer.dpo_trainer import compute_score, get_token_scores, iterate_dpo_batches

    from punie.dpo.data import make_pair_batch, tokenize_pairs
    from punie.dpo.logps import logps_fn
    from punie.models.loading import load

    s = job["settings"]
    model, tokenizer = load(job["model"])
    model.eval()
    split = tokenize_pairs("train", Path(job["punie_data"]) / "train.jsonl", tokenizer, s["max_seq_length"])
    lora = DPODataset(_read_jsonl(Path(job["mlx_lm_lora_data"]) / "train.jsonl"), tokenizer)
    same = [lora[i]["chosen"] == split.prompts[i] + split.chosen[i]
            and lora[i]["rejected"] == split.prompts[i] + split.rejected[i]
            and lora[i]["chosen_prompt_length"] == len(split.prompts[i]) for i in range(len(split))]
    b = s["batch_size"]
    batch = make_pair_batch(split, list(range(b)))
    ours = np.array(logps_fn(model)(model, batch.prompts, batch.prompt_valid, batch.replies, batch.reply_lengths))
    items = [lora[i] for i in range(b)]
    order = sorted(range(b), key=lambda j: len(items[j]["chosen"]))  # iterate_dpo_batches sorts by length
    chosen, rejected, c_mask, r_mask = next(iterate_dpo_batches(items, b, s["max_seq_length"]))
    theirs_c = np.array(compute_score(get_token_scores(model, chosen, c_mask), c_mask, s["loss"]))
    theirs_r = np.array(compute_score(get_token_scores(model, rejected, r_mask), r_mask, s["loss"]))
    theirs = np.zeros(2 * b, np.float32)
    theirs[order], theirs[[b + j for j in order]] = theirs_c, theirs_r
    prompt_tokens = [len(p) for p in split.prompts]
    reply_tokens = [len(r) for r in split.chosen + split.rejected]
    return {"pairs": len(split), "pairs_with_identical_tokens": sum(same),
            "first_batch_logps_punie": ours.tolist(), "first_batch_logps_mlx_lm_lora": theirs.tolist(),
            "max_abs_logp_difference": float(np.abs(ours - theirs).max()),
            "mean_prompt_tokens": float(np.mean(prompt_tokens)), "mean_reply_tokens": float(np.mean(reply_tokens))}


SIDES = {"punie": run_punie, "mlx-lm-lora": run_mlx_lm_lora, "check": run_check}

if __name__ == "__main__":
    side, job_file = sys.argv[1], Path(sys.argv[2])
    job = json.loads(job_file.read_text())
    mx.reset_peak_memory()
    result = SIDES[side](job)
    result["peak_memory_gb"] = mx.get_peak_memory() / 1e9
    Path(job["result"]).write_text(json.dumps(result))
