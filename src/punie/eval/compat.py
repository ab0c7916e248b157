"""Is an adapter made for this base model? Checked before any case runs.

Three sources of evidence, each used when present:

1. ``adapter_config.json`` (mlx-lm) names the base model it was trained on in
   ``model``; when that is a local model directory its config is compared with
   the base's (architecture sizes and punie's ``model_id``/``source_sha256``).
2. punie's ``manifest.json`` beside the adapter may record the base model's id
   and source hash (``base_model_id``, ``base_model_sha256`` or a ``base_model``
   object holding ``model_id``/``source_sha256``).
3. The adapter's tensors: every ``X.lora_a``/``X.lora_b`` must sit on a base
   weight ``X.weight`` with matching input/output sizes. Read from the
   safetensors headers only, so nothing is loaded.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from punie.errors import ModelError
from punie.models.loading import check_adapter_dir

ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
             "num_key_value_heads", "vocab_size", "head_dim")


def check_adapter_matches(adapter: Path, base_dir: Path | None, base_name: str) -> None:
    """Raise ModelError when ``adapter`` was made for another base model than ``base_dir``."""
    config = check_adapter_dir(adapter)
    if base_dir is None or not (base_dir / "config.json").is_file():
        return  # a hub repo id not downloaded here: mlx-lm's load-time shape check is all there is
    base_config = json.loads((base_dir / "config.json").read_text())
    trained_on = config.get("model")
    hint = f"Evaluate it with --model {trained_on}" if trained_on else "Pass the base model it was trained on"
    if isinstance(trained_on, str) and trained_on:
        other = Path(trained_on).expanduser()
        if (other / "config.json").is_file() and other.resolve() != base_dir.resolve():
            diff = _config_difference(json.loads((other / "config.json").read_text()), base_config)
            if diff:
                raise ModelError(f"adapter {adapter} was trained on {trained_on}, which differs from the base model "
                                 f"{base_name} ({diff}). {hint}.")
    manifest_diff = _manifest_difference(adapter, base_config)
    if manifest_diff:
        raise ModelError(f"adapter {adapter} was made for another base model ({manifest_diff}); the base here is "
                         f"{base_name}. {hint}.")
    shape_diff = _shape_difference(adapter / "adapters.safetensors", base_dir, base_config)
    if shape_diff:
        raise ModelError(f"adapter {adapter} does not fit the base model {base_name}: {shape_diff}. It was made for "
                         f"another model ({trained_on or 'unknown base'}). {hint}.")


def _config_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    diffs = [f"{k} {a.get(k)} vs {b.get(k)}" for k in ARCH_KEYS if k in a and k in b and a[k] != b[k]]
    ida, idb = a.get("punie", {}).get("model_id"), b.get("punie", {}).get("model_id")
    if ida and idb and ida != idb:
        diffs.append(f"model_id {ida!r} vs {idb!r}")
    return ", ".join(diffs)


def _manifest_difference(adapter: Path, base_config: dict[str, Any]) -> str:
    path = adapter / "manifest.json"
    if not path.is_file():
        return ""
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON ({exc.msg}).") from exc
    base = manifest.get("base_model") if isinstance(manifest.get("base_model"), dict) else {}
    want_id = manifest.get("base_model_id") or base.get("model_id")
    want_hash = manifest.get("base_model_sha256") or base.get("source_sha256")
    have = base_config.get("punie", {})
    diffs = []
    if want_id and have.get("model_id") and want_id != have["model_id"]:
        diffs.append(f"manifest base model id {want_id!r}, base here {have['model_id']!r}")
    if want_hash and have.get("source_sha256") and want_hash != have["source_sha256"]:
        diffs.append(f"manifest base hash {want_hash[:12]}…, base here {have['source_sha256'][:12]}…")
    return "; ".join(diffs)


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors file's header (the data is not read)."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ModelError(f"{path} is not a safetensors file (too short).")
        (size,) = struct.unpack("<Q", raw)
        if size > 100_000_000:
            raise ModelError(f"{path} is not a safetensors file (header of {size} bytes).")
        try:
            header = json.loads(fh.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{path} is not a safetensors file (unreadable header).") from exc
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _base_shapes(base_dir: Path) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(base_dir.glob("*.safetensors")):
        shapes.update(safetensors_shapes(file))
    return shapes


def _shape_difference(adapter_file: Path, base_dir: Path, base_config: dict[str, Any]) -> str:
    adapter = safetensors_shapes(adapter_file)
    base = _base_shapes(base_dir)
    if not base:
        return ""
    bits = (base_config.get("quantization") or {}).get("bits")
    missing: list[str] = []
    wrong: list[str] = []
    for name, shape in sorted(adapter.items()):
        stem, _, leaf = name.rpartition(".")
        if leaf not in ("lora_a", "lora_b"):
            continue
        weight = base.get(f"{stem}.weight")
        if weight is None:
            if stem not in missing:
                missing.append(stem)
            continue
        if len(weight) != 2 or len(shape) != 2:
            continue  # expert (switch) layers: left to mlx-lm's load-time check
        rows, cols = weight
        if f"{stem}.scales" in base and bits:
            cols = cols * 32 // bits  # quantized weights pack 32/bits values per uint32
        # A linear weight is (out, in): lora_a is (in, r), lora_b (r, out). An embedding
        # is (vocab, dims): lora_a is (vocab, r), lora_b (r, dims).
        embedding = "embed" in stem.rsplit(".", 1)[-1]
        got = shape[0] if leaf == "lora_a" else shape[1]
        want = (rows if leaf == "lora_a" else cols) if embedding else (cols if leaf == "lora_a" else rows)
        if got != want:
            wrong.append(f"{name} has size {got} where the base layer has {want}")
    problems = []
    if missing:
        more = f" and {len(missing) - 2} more" if len(missing) > 2 else ""
        problems.append(f"it adapts layers the base model does not have ({', '.join(missing[:2])}{more})")
    if wrong:
        more = f" (and {len(wrong) - 2} more mismatches)" if len(wrong) > 2 else ""
        problems.append("; ".join(wrong[:2]) + more)
    return "; ".join(problems)
