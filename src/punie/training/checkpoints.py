"""Adapter weights and resumable checkpoints: the tensor files of a run directory.

The directory's layout and its JSON files belong to :mod:`punie.training.rundir`.
A checkpoint directory is assembled under a temporary name and renamed into
place, and only directories holding ``state.json`` count, so a kill at any
moment leaves the previous good state.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from punie import fileio
from punie.training.rundir import ADAPTERS, CHECKPOINTS, OPTIMIZER, STATE, Checkpoint, RunDir

__all__ = ["ADAPTERS", "CHECKPOINTS", "Checkpoint", "latest_checkpoint", "optimizer_tensors", "restore_checkpoint",
           "restore_tensors", "save_checkpoint", "save_weights", "trainable_weights", "write_adapter_config"]


def trainable_weights(model: Any) -> dict[str, Any]:
    from mlx.utils import tree_flatten

    return dict(tree_flatten(model.trainable_parameters()))


def save_weights(path: Path, weights: dict[str, Any]) -> None:
    import mlx.core as mx

    fileio.write_with(path, lambda tmp: mx.save_safetensors(str(tmp), weights), suffix=".safetensors")


def write_adapter_config(out: Path, config: Any, base_model: str, num_layers: int) -> None:
    """mlx-lm's adapter_config.json keys, so mlx_lm.load/server/fuse read the adapter as is."""
    RunDir(out).write_adapter_config({
        "fine_tune_type": config.fine_tune_type,
        "num_layers": num_layers,
        "lora_parameters": config.lora_parameters(),
        "model": base_model,
        "punie_config": json.loads(config.model_dump_json()),
    })


def untrained_best_warning(keep: str, best_step: int | None, steps: int, start: str) -> str | None:
    """A warning when ``--keep best`` kept the weights of step 0: the run's adapter is ``start``, untouched."""
    if keep != "best" or best_step != 0 or steps == 0:
        return None
    return (f"the validation loss was lowest at step 0, before any update, so {ADAPTERS} holds {start} "
            f"unchanged; the trained weights are in checkpoints/ (use --keep last to keep them).")


def save_checkpoint(out: Path, step: int, model: Any, optimizer: Any, state: dict[str, Any],
                    keep: int = 2) -> Path:
    """Write checkpoints/step-N atomically; keep only the newest ``keep`` of them."""
    import mlx.core as mx

    run = RunDir(out)
    final = run.checkpoint_dir(step)
    staging = final.with_name(f".{final.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    mx.save_safetensors(str(staging / ADAPTERS), trainable_weights(model))
    mx.save_safetensors(str(staging / OPTIMIZER), optimizer_tensors(optimizer))
    fileio.write_json(staging / STATE, state | {"step": step})
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    for old in run.complete_checkpoints()[:-keep]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(out: Path) -> Checkpoint | None:
    return RunDir(out).latest_checkpoint()


def restore_checkpoint(checkpoint: Checkpoint, model: Any, optimizer: Any) -> None:
    """Load adapter weights and optimizer state (step counter and schedule included)."""
    import mlx.core as mx

    weights: dict[str, Any] = mx.load(str(checkpoint.path / ADAPTERS))  # type: ignore[assignment]
    saved: dict[str, Any] = mx.load(str(checkpoint.path / OPTIMIZER))  # type: ignore[assignment]
    restore_tensors(model, optimizer, weights, saved)


def optimizer_tensors(optimizer: Any) -> dict[str, Any]:
    from mlx.utils import tree_flatten

    return dict(tree_flatten(optimizer.state))


def restore_tensors(model: Any, optimizer: Any, weights: dict[str, Any], optimizer_state: dict[str, Any]) -> None:
    """Set trainable weights and optimizer state from flat name -> array maps (as a checkpoint holds them)."""
    from mlx.utils import tree_unflatten

    model.load_weights(list(weights.items()), strict=False)
    optimizer.init(model.trainable_parameters())
    optimizer.state = tree_unflatten(list(optimizer_state.items()))
