"""Adapter files, resumable checkpoints and the run manifest.

Layout of an output directory::

    adapters.safetensors     best (or last) adapter weights: what mlx-lm loads
    adapter_config.json      mlx-lm's adapter settings, plus punie's resolved config
    manifest.json            how the run was made and how it went
    metrics.jsonl            every train/val report
    checkpoints/step-NNNNNN/ adapters.safetensors, optimizer.safetensors, state.json

Every file is written atomically; a checkpoint directory is assembled under a
temporary name and renamed into place, and only directories holding
``state.json`` count, so a kill at any moment leaves the previous good state.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from punie import fileio

CHECKPOINTS = "checkpoints"
ADAPTERS = "adapters.safetensors"


def trainable_weights(model: Any) -> dict[str, Any]:
    from mlx.utils import tree_flatten

    return dict(tree_flatten(model.trainable_parameters()))


def save_weights(path: Path, weights: dict[str, Any]) -> None:
    import mlx.core as mx

    fileio.write_with(path, lambda tmp: mx.save_safetensors(str(tmp), weights), suffix=".safetensors")


def write_adapter_config(out: Path, config: Any, base_model: str, num_layers: int) -> None:
    """mlx-lm's adapter_config.json keys, so mlx_lm.load/server/fuse read the adapter as is."""
    payload = {
        "fine_tune_type": config.fine_tune_type,
        "num_layers": num_layers,
        "lora_parameters": config.lora_parameters(),
        "model": base_model,
        "punie_config": json.loads(config.model_dump_json()),
    }
    fileio.write_json(out / "adapter_config.json", payload)


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]


def save_checkpoint(out: Path, step: int, model: Any, optimizer: Any, state: dict[str, Any],
                    keep: int = 2) -> Path:
    """Write checkpoints/step-N atomically; keep only the newest ``keep`` of them."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    root = out / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    staging = root / f".step-{step:06d}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    mx.save_safetensors(str(staging / ADAPTERS), trainable_weights(model))
    mx.save_safetensors(str(staging / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
    fileio.write_json(staging / "state.json", state | {"step": step})
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    for old in sorted(p for p in root.glob("step-*") if (p / "state.json").is_file())[:-keep]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(out: Path) -> Checkpoint | None:
    root = out / CHECKPOINTS
    complete = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file()) if root.is_dir() else []
    if not complete:
        return None
    state = json.loads((complete[-1] / "state.json").read_text())
    return Checkpoint(path=complete[-1], step=int(state["step"]), state=state)


def restore_checkpoint(checkpoint: Checkpoint, model: Any, optimizer: Any) -> None:
    """Load adapter weights and optimizer state (step counter and schedule included)."""
    import mlx.core as mx
    from mlx.utils import tree_unflatten

    weights: dict[str, Any] = mx.load(str(checkpoint.path / ADAPTERS))  # type: ignore[assignment]
    model.load_weights(list(weights.items()), strict=False)
    optimizer.init(model.trainable_parameters())
    saved: dict[str, Any] = mx.load(str(checkpoint.path / "optimizer.safetensors"))  # type: ignore[assignment]
    optimizer.state = tree_unflatten(list(saved.items()))


def write_metrics(out: Path, metrics: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl whole (it is small), so it is never half-written."""
    fileio.write_text(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))


def read_metrics(out: Path) -> list[dict[str, Any]]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
