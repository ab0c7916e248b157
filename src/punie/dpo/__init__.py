"""``punie.dpo.train_dpo(config) -> DPOResult``: preference training (DPO and its variants) of a LoRA adapter.

The steps, in order: decide what to do with ``--output`` (writing nothing),
check the data (``punie data check``: ``file:line`` for every bad pair), load
the model once (with START applied, if given), attach or continue the LoRA,
tokenize the pairs through the chat template; only then claim the output
directory (so a ``--force`` over an old run deletes nothing until training can
start), compute (or read from the cache) the reference log-probs on that same
model, drop the noisiest pairs if asked, and train. The output directory has the
layout of a ``punie train`` run, so mlx-lm loads the adapter as is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from punie.dpo.config import DPOConfig, resolve_dpo_config
from punie.dpo.data import PairSplit, tokenize_pairs
from punie.errors import DataError
from punie.training import checkpoints, rundir
from punie.training.loop import TrainingCallback, TrainingError, TrainingInterrupted
from punie.training.rundir import BaseModelIdentity, RunDir

__all__ = ["DPOConfig", "DPOResult", "TrainingError", "TrainingInterrupted", "resolve_dpo_config", "train_dpo"]

# Settings a resumed run must share with the run it continues.
_RESUME_FIXED = ("model", "adapter", "data", "loss", "fine_tune_type", "rank", "num_layers", "batch_size", "seed",
                 "max_seq_length", "drop_noisy")


@dataclass
class DPOResult:
    output: Path
    adapter_file: Path
    steps: int
    final_loss: float | None
    final_val_loss: float | None
    final_val_accuracy: float | None
    best_val_loss: float | None
    best_step: int | None
    reference_cached: bool
    dropped: list[dict[str, Any]]
    warnings: list[str]
    metrics: list[dict[str, Any]]


def train_dpo(config: DPOConfig, callback: TrainingCallback | None = None, *, resume: bool = False,
              force: bool = False) -> DPOResult:
    """Preference-train ``config.model`` (+ START) on ``config.data``'s pairs; write an adapter directory."""
    import mlx.core as mx

    from punie.dpo.logps import logps_fn
    from punie.dpo.loop import DPOTrainer
    from punie.dpo.reference import reference_key, reference_logps
    from punie.models.loading import load
    from punie.models.registry import resolve_model

    run = RunDir(config.output_dir())
    output = run.path
    plan = run.plan_output(json.loads(config.model_dump_json()), _RESUME_FIXED, resume=resume, force=force,
                           kind="punie dpo")
    model, tokenizer = load(config.model, config.adapter)
    warnings = _check_data(config, tokenizer)
    splits = {name: tokenize_pairs(name, config.data / f"{name}.jsonl", tokenizer, config.max_seq_length)
              for name in ("train", "valid")}
    warnings += _length_warnings(splits, config.max_seq_length)
    if plan.restart:
        warnings.append(f"{output} has no checkpoint yet (it was stopped before its first one); "
                        "it was trained again from step 0.")
    mx.random.seed(config.seed)
    num_layers = _attach_adapters(model, config)
    # Recorded exactly as punie train records it, so punie eval's adapter/base check covers DPO adapters.
    base = BaseModelIdentity.of_model_dir(resolve_model(config.model), config.model)
    key = reference_key(base, config.adapter, splits)
    run.claim(plan)  # only now: a run refused for its data or settings leaves the directory as it was
    checkpoint = plan.checkpoint
    # The policy is still the starting policy here (a new LoRA's lora_b is zero): score the pairs with it.
    reference, cached = reference_logps(model, splits, key, logps_fn(model), config.batch_size, output,
                                        resume=checkpoint is not None)
    splits["train"], reference, dropped = drop_noisy_pairs(splits["train"], reference, config.drop_noisy)
    if callback is not None and dropped:  # reported before the first step, not a metric of the curve
        callback.on_report({"iteration": 0, "dropped_pairs": dropped})
    trainer = DPOTrainer(model, config, splits["train"], splits["valid"], reference, output, callback)
    if checkpoint is not None:
        trainer.resume(checkpoint)
    manifest = _manifest(config, base, splits, key, cached, dropped)
    checkpoints.write_adapter_config(output, config, base.path or "", num_layers)
    _write_manifest(run, manifest, status="running")
    try:
        state = trainer.run()
    except (TrainingInterrupted, KeyboardInterrupt):  # the latter: Ctrl-C outside the loop's own handling
        _write_manifest(run, manifest, status="interrupted", state=trainer.state)
        raise
    except Exception:  # TrainingError (a NaN), or anything unexpected: the manifest must not say "running"
        _write_manifest(run, manifest, status="failed", state=trainer.state)
        raise
    _write_manifest(run, manifest, status="completed", state=state)
    start = f"the starting adapter {config.adapter}" if config.adapter is not None else "the untrained adapter"
    if (warning := checkpoints.untrained_best_warning(config.keep, state.best_step, state.step, start)) is not None:
        warnings.append(warning)
    return _result(output, state, cached, dropped, warnings)


def drop_noisy_pairs(split: PairSplit, reference: dict[str, np.ndarray],
                     fraction: float) -> tuple[PairSplit, dict[str, np.ndarray], list[dict[str, Any]]]:
    """Remove the ``fraction`` of pairs whose reference margin (log pi_ref(y_w) - log pi_ref(y_l)) is lowest."""
    n = int(fraction * len(split))
    if n == 0:
        return split, reference, []
    margin = reference["train.chosen"] - reference["train.rejected"]
    order = np.argsort(margin, kind="stable")
    gone = sorted(int(i) for i in order[:n])
    keep = [i for i in range(len(split)) if i not in set(gone)]
    dropped = [{"line": split.lines[i], "reference_margin": float(margin[i])} for i in gone]
    reference = dict(reference, **{f"train.{side}": reference[f"train.{side}"][keep]
                                   for side in ("chosen", "rejected")})
    return split.subset(keep), reference, dropped


def _check_data(config: DPOConfig, tokenizer: Any) -> list[str]:
    """Run punie's data checks; refuse preference training on errors or on non-preference data."""
    from punie.data.check import check_data_dir

    data = Path(config.data)
    if not data.is_dir():
        raise DataError(f"{data} is not a directory; pass one holding train.jsonl and valid.jsonl preference pairs.")
    if not config.check_data:
        return []
    report = check_data_dir(data, tokenizer, max_seq_length=config.max_seq_length, splits=("train", "valid"))
    if report.errors:
        shown = "\n".join(f"  {f.file}{':' + str(f.line) if f.line else ''}: {f.message}" for f in report.errors[:10])
        more = f"\n  ... and {len(report.errors) - 10} more" if len(report.errors) > 10 else ""
        raise DataError(f"the data in {data} has {len(report.errors)} error(s); nothing was trained:\n"
                        f"{shown}{more}\nSee 'punie data check {data}', or pass --no-check to skip.")
    if report.format != "preference":
        raise DataError(f"{data} holds {report.format} records, not preference pairs (chosen/rejected); "
                        "train them with 'punie train'.")
    return [f"{f.file}{':' + str(f.line) if f.line else ''}: {f.message}" for f in report.warnings]


def _length_warnings(splits: dict[str, PairSplit], max_seq_length: int) -> list[str]:
    warnings = []
    for name, split in splits.items():
        if split.truncated:
            warnings.append(f"{split.truncated} {name} pairs have a reply that does not fit --max-seq-length "
                            f"{max_seq_length} after its prompt; the reply is cut to fit.")
        if split.skipped:
            warnings.append(f"{len(split.skipped)} {name} pairs (lines {', '.join(map(str, split.skipped[:10]))}) "
                            "have a prompt as long as --max-seq-length and are skipped.")
        if not len(split):
            raise DataError(f"every {name} pair's prompt fills --max-seq-length {max_seq_length}; raise it.")
    return warnings


def _attach_adapters(model: Any, config: DPOConfig) -> int:
    """Continue START's LoRA (already applied by the loader) or attach a new one; only its weights train."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from punie.training.run import adapted_layers

    num_layers = adapted_layers(model, config.num_layers)
    model.freeze()
    if config.adapter is None:
        linear_to_lora_layers(model, num_layers, config.lora_parameters(), use_dora=config.fine_tune_type == "dora")
    else:
        keys = ["lora_a", "lora_b", "m"] if config.fine_tune_type == "dora" else ["lora_a", "lora_b"]
        for _, module in model.named_modules():
            if hasattr(module, "lora_a"):
                module.unfreeze(keys=keys, recurse=False, strict=False)
    return num_layers


def _manifest(config: DPOConfig, base: BaseModelIdentity, splits: dict[str, PairSplit], key: str, cached: bool,
              dropped: list[dict[str, Any]]) -> dict[str, Any]:
    files = {}
    for name, split in splits.items():
        path = Path(config.data) / f"{name}.jsonl"
        files[name] = {"path": str(path), "sha256": rundir.file_sha256(path), "pairs": len(split),
                       "truncated": split.truncated, "skipped_lines": split.skipped}
    versions = rundir.software_versions()
    start = None
    if config.adapter is not None:
        start = {"path": str(config.adapter),
                 "adapters_sha256": rundir.file_sha256(Path(config.adapter) / rundir.ADAPTERS)}
    return {
        "kind": "dpo",
        "config": json.loads(config.model_dump_json()),
        "base_model": base.to_record(),
        "start_adapter": start,
        "data": {"format": "preference", "files": files, "dropped_noisy": dropped},
        "reference": {"key": key, "reused_from_cache": cached},
        "versions": versions,
        "process": rundir.training_process(),
        "started_at": datetime.now(UTC).isoformat(),
    }


def _write_manifest(run: RunDir, manifest: dict[str, Any], *, status: str, state: Any = None) -> None:
    manifest = dict(manifest, status=status, updated_at=datetime.now(UTC).isoformat())
    if state is not None:
        trains = [m for m in state.metrics if "loss" in m]
        vals = [m for m in state.metrics if "val_loss" in m]
        manifest["ended_at"] = manifest["updated_at"]
        manifest["metrics"] = {
            "steps": state.step,
            "final_loss": trains[-1]["loss"] if trains else None,
            "final_val_loss": vals[-1]["val_loss"] if vals else None,
            "final_val_accuracy": vals[-1]["val_accuracy"] if vals else None,
            "best_val_loss": state.best_val_loss,
            "best_step": state.best_step,
            "train_seconds": state.train_seconds,
        }
    run.write_manifest(manifest)


def _result(output: Path, state: Any, cached: bool, dropped: list[dict[str, Any]], warnings: list[str]) -> DPOResult:
    trains = [m for m in state.metrics if "loss" in m]
    vals = [m for m in state.metrics if "val_loss" in m]
    return DPOResult(
        output=output, adapter_file=output / rundir.ADAPTERS, steps=state.step,
        final_loss=trains[-1]["loss"] if trains else None,
        final_val_loss=vals[-1]["val_loss"] if vals else None,
        final_val_accuracy=vals[-1]["val_accuracy"] if vals else None,
        best_val_loss=state.best_val_loss, best_step=state.best_step, reference_cached=cached,
        dropped=dropped, warnings=warnings, metrics=state.metrics,
    )
