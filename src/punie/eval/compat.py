"""Is an adapter made for this base model? Checked before any case runs.

Three kinds of evidence, each used when present, strongest refusal first:

1. Architecture: ``adapter_config.json`` (mlx-lm) names the base model in
   ``model``; when that is another local model directory its config is compared
   with the base's (architecture sizes, punie's ``model_id``). Cannot be forced.
2. Shapes: every ``X.lora_a``/``X.lora_b`` must sit on a base weight ``X.weight``
   with matching input/output sizes, read from the safetensors headers only.
   Cannot be forced.
3. Identity: the base the adapter records (punie's manifest: model id, GGUF
   source hash, weight hashes; else the directory adapter_config.json names) must
   hold the same weights as the base used here. Shapes that fit do not make it
   the same model: this is refused unless ``force``, which turns it into a warning.

The advice always names the base the adapter records, never the one that failed.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from punie.errors import DataError, ModelError
from punie.models.loading import check_adapter_dir
from punie.models.registry import read_model_config
from punie.training.rundir import ADAPTERS, BaseModelIdentity, RunDir

ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
             "num_key_value_heads", "vocab_size", "head_dim")


def check_adapter_matches(adapter: Path, base_dir: Path | None, base_name: str, *, force: bool = False) -> list[str]:
    """Raise ModelError when ``adapter`` was made for another base model than ``base_dir``.

    Returns warnings: with ``force``, a base whose shapes fit but whose weights
    differ from the recorded base is a warning instead of an error.
    """
    config = check_adapter_dir(adapter)
    if base_dir is None or not (base_dir / "config.json").is_file():
        return []  # a hub repo id not downloaded here: mlx-lm's load-time shape check is all there is
    base_config = read_model_config(base_dir)
    try:
        recorded = RunDir(adapter).base_model()
    except DataError as exc:
        raise ModelError(str(exc)) from exc
    trained_on = config.get("model")
    hint = _advice(recorded, base_dir)
    if isinstance(trained_on, str) and trained_on:
        other = Path(trained_on).expanduser()
        if (other / "config.json").is_file() and other.resolve() != base_dir.resolve():
            diff = _config_difference(read_model_config(other), base_config)
            if diff:
                raise ModelError(f"adapter {adapter} was trained on {trained_on}, which differs from the base model "
                                 f"{base_name} ({diff}). {hint}.")
    shape_diff = _shape_difference(adapter / ADAPTERS, base_dir, base_config)
    if shape_diff:
        made_for = recorded.describe() if recorded else "unknown base"
        raise ModelError(f"adapter {adapter} does not fit the base model {base_name}: {shape_diff}. It was made for "
                         f"another model ({made_for}). {hint}.")
    identity_diff = _identity_difference(recorded, base_dir)
    if not identity_diff:
        return []
    assert recorded is not None
    problem = (f"adapter {adapter} was trained on base model {recorded.describe()}, but the base model here, "
               f"{base_name}, holds other weights ({identity_diff}); its layer shapes fit, so it would run, "
               "but the numbers would not be that adapter's")
    if force:
        return [f"{problem}. Evaluated anyway (--force)."]
    raise ModelError(f"{problem}. {hint}, or pass --force to evaluate it on {base_name} anyway.")


def _advice(recorded: BaseModelIdentity | None, base_dir: Path) -> str:
    """What to pass instead: the recorded base, unless that is the very directory that just failed."""
    where = recorded.path or recorded.spec if recorded else None
    if not where:
        return "Pass the base model it was trained on with --model"
    if Path(where).expanduser().exists() and Path(where).expanduser().resolve() == base_dir.resolve():
        model_id = f" ({recorded.model_id})" if recorded and recorded.model_id else ""
        return (f"It records {where}{model_id} as its base, which is the directory used here: that directory no "
                "longer holds the model the adapter was trained on. Restore that model, or pass it with --model")
    return f"Evaluate it with --model {where}"


def _identity_difference(recorded: BaseModelIdentity | None, base_dir: Path) -> str:
    if recorded is None:
        return ""
    if not (recorded.weights_sha256 or recorded.source_sha256 or recorded.model_id) and recorded.path:
        # An adapter from mlx-lm records only a directory: hash that model when it is another one here.
        other = Path(recorded.path).expanduser()
        if not (other / "config.json").is_file() or other.resolve() == base_dir.resolve():
            return ""
        recorded = BaseModelIdentity.of_model_dir(other, recorded.spec)
    return recorded.difference(base_dir)


def _config_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    diffs = [f"{k} {a.get(k)} vs {b.get(k)}" for k in ARCH_KEYS if k in a and k in b and a[k] != b[k]]
    ida, idb = a.get("punie", {}).get("model_id"), b.get("punie", {}).get("model_id")
    if ida and idb and ida != idb:
        diffs.append(f"model_id {ida!r} vs {idb!r}")
    return ", ".join(diffs)


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
