"""Reference log-probs: the starting policy's scores of every pair, computed once and cached.

The reference policy is the model as loaded before the first step (the base,
or the base with START applied; a new LoRA starts with ``lora_b = 0``, so it is
the base). Its summed reply log-probs are computed with the same model object
the policy trains, so no second copy is ever loaded, and saved in two places:
``$PUNIE_HOME/cache/dpo-reference/<key>.safetensors``, where ``key`` hashes the
base weights, START's weights and the tokenized pairs (so another run on the same
model, adapter and data reuses them), and the run's own directory, where
``--resume`` reads them (the model there is no longer the starting policy).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from punie import fileio, paths
from punie.dpo.data import PairSplit, make_pair_batch
from punie.errors import DataError
from punie.training.rundir import BaseModelIdentity, file_sha256

RUN_FILE = "reference_logps.safetensors"


def reference_key(base: BaseModelIdentity, adapter: Path | None, splits: dict[str, PairSplit]) -> str:
    """sha256 over the base model's hashes, START's files and every pair's token ids."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"path": base.path, "config_sha256": base.config_sha256,
                              "weights_sha256": base.weights_sha256}, sort_keys=True).encode())
    if adapter is not None:
        for name in ("adapter_config.json", "adapters.safetensors"):
            digest.update(file_sha256(Path(adapter) / name).encode())
    for name in sorted(splits):
        s = splits[name]
        digest.update(json.dumps([name, s.prompts, s.chosen, s.rejected]).encode())
    return digest.hexdigest()


def compute_reference(model: Any, split: PairSplit, logps: Any, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, rejected) summed log-probs of every pair of ``split``, in order, in eval mode."""
    import mlx.core as mx

    model.eval()
    chosen, rejected = np.zeros(len(split), np.float32), np.zeros(len(split), np.float32)
    for lo in range(0, len(split), batch_size):
        indices = list(range(lo, min(lo + batch_size, len(split))))
        b = make_pair_batch(split, indices)
        scores = mx.stop_gradient(logps(model, b.prompts, b.prompt_valid, b.replies, b.reply_lengths))
        mx.eval(scores)
        values = np.array(scores)
        chosen[indices], rejected[indices] = values[:len(indices)], values[len(indices):]
    model.train()
    return chosen, rejected


def _write(path: Path, key: str, scores: dict[str, np.ndarray]) -> None:
    import mlx.core as mx

    arrays = {name: mx.array(values) for name, values in scores.items()}
    fileio.write_with(path, lambda tmp: mx.save_safetensors(str(tmp), arrays, metadata={"key": key}),
                      suffix=".safetensors")


def _read(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    import mlx.core as mx

    loaded: Any = mx.load(str(path), return_metadata=True)
    arrays, metadata = loaded
    return metadata.get("key", ""), {name: np.array(a) for name, a in arrays.items()}


def cache_file(key: str) -> Path:
    return paths.cache_dir() / "dpo-reference" / f"{key}.safetensors"


def reference_logps(model: Any, splits: dict[str, PairSplit], key: str, logps: Any, batch_size: int,
                    output: Path, *, resume: bool) -> tuple[dict[str, np.ndarray], bool]:
    """``{"<split>.chosen": [N], "<split>.rejected": [N]}`` and whether they came from a cache.

    A resumed run reads its own copy (refusing one made for other data); a new
    run reads the shared cache or computes and fills it.
    """
    own = output / RUN_FILE
    if resume:
        if not own.is_file():
            raise DataError(f"--resume: {own} is missing, so the reference policy's log-probs are lost; "
                            "start a new run.")
        saved_key, scores = _read(own)
        if saved_key != key:
            raise DataError(f"--resume: {own} was computed for other model, adapter or data; "
                            "resume with the same inputs or start a new --output.")
        return scores, True
    shared = cache_file(key)
    if shared.is_file():
        saved_key, scores = _read(shared)
        if saved_key == key:
            _write(own, key, scores)
            return scores, True
    scores = {}
    for name, split in splits.items():
        scores[f"{name}.chosen"], scores[f"{name}.rejected"] = compute_reference(model, split, logps, batch_size)
    _write(shared, key, scores)
    _write(own, key, scores)
    return scores, False
