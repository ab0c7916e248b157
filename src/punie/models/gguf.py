"""Import a llama-architecture GGUF file as an mlx-lm model directory.

Steps:
1. ``mx.load`` reads the GGUF tensors and metadata. Q4_0/Q4_1/Q8_0 tensors arrive
   as MLX affine-quantized triples (``weight``, ``scales``, ``biases``, group 32).
2. Tensor names are mapped to mlx-lm's llama layout.
3. llama.cpp's converter permutes the rows of the q/k projections so that RoPE
   can rotate adjacent pairs (Meta's layout); mlx-lm's llama, like Hugging Face,
   rotates the two halves of each head. The inverse permutation restores that.
4. Tensors are dequantized to the requested dtype, or kept quantized.
5. ``config.json``, ``model.safetensors``, ``tokenizer.json`` and
   ``tokenizer_config.json`` are written so unmodified ``mlx_lm.load``,
   ``mlx_lm.generate`` and ``mlx_lm.server`` work on the result.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from punie import fileio
from punie.chat import template as chat_template
from punie.errors import ModelError
from punie.models import tokenizer as gguf_tokenizer

DTYPES = ("float32", "float16", "bfloat16", "keep")
SUPPORTED_ARCHITECTURES = ("llama",)

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_QUANT_PARTS = ("weight", "scales", "biases")
_GROUP_SIZE = 32  # every GGUF block type MLX reads (Q4_0, Q4_1, Q8_0) uses blocks of 32


@dataclass(frozen=True)
class ImportResult:
    path: Path
    config: dict[str, Any]
    source_sha256: str
    dtype: str


def read_gguf(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tensors and metadata of a GGUF file, with a clear error when it is not one."""
    import mlx.core as mx

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file. Pass the path of a .gguf model file.")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ModelError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes).")
    try:
        weights, metadata = mx.load(str(path), return_metadata=True)  # type: ignore[misc]
    except Exception as exc:  # MLX raises plain RuntimeError/ValueError for bad files
        raise ModelError(f"{path}: cannot read this GGUF file ({exc}). It may be truncated or use "
                         "tensor types MLX cannot load (supported: Q4_0, Q4_1, Q8_0, F16, F32).") from exc
    return dict(weights), dict(metadata)  # type: ignore[arg-type]


def _scalar(metadata: dict[str, Any], key: str, default: Any = None) -> Any:
    value = metadata.get(key, default)
    if hasattr(value, "item"):
        return value.item()
    return value


def model_config(metadata: dict[str, Any], weights: dict[str, Any], source: Path) -> dict[str, Any]:
    """An mlx-lm ``config.json`` for a llama GGUF."""
    arch = metadata.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelError(
            f"{source}: architecture {arch!r} is not supported; punie imports "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} GGUF files. For other models pass an mlx-lm model "
            "directory or Hugging Face repo id to --model."
        )

    def need(key: str) -> Any:
        value = _scalar(metadata, f"llama.{key}")
        if value is None:
            raise ModelError(f"{source}: metadata key 'llama.{key}' is missing; the file is incomplete.")
        return value

    hidden = int(need("embedding_length"))
    heads = int(need("attention.head_count"))
    vocab = len(metadata.get("tokenizer.ggml.tokens") or []) or int(need("vocab_size"))
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(need("block_count")),
        "intermediate_size": int(need("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_scalar(metadata, "llama.attention.head_count_kv", heads)),
        "rms_norm_eps": float(need("attention.layer_norm_rms_epsilon")),
        "vocab_size": vocab,
        "rope_theta": float(_scalar(metadata, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_scalar(metadata, "llama.context_length", 2048)),
        "head_dim": int(_scalar(metadata, "llama.rope.dimension_count", hidden // heads)),
        "tie_word_embeddings": "output.weight" not in weights,
        "bos_token_id": _scalar(metadata, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _scalar(metadata, "tokenizer.ggml.eos_token_id"),
    }
    return config


def _target_name(gguf_name: str) -> tuple[str, str]:
    """(mlx-lm module path, part) for a GGUF tensor name like ``blk.3.attn_q.scales``."""
    stem, _, part = gguf_name.rpartition(".")
    if part not in _QUANT_PARTS:
        raise ModelError(f"unexpected tensor name {gguf_name!r} in GGUF file")
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)", stem)
    if match:
        layer, name = match.groups()
        if name not in _LAYER_NAMES:
            raise ModelError(f"unexpected tensor {gguf_name!r}: not part of a llama block")
        return f"model.layers.{layer}.{_LAYER_NAMES[name]}", part
    if stem not in _TOP_NAMES:
        raise ModelError(f"unexpected tensor {gguf_name!r}: not part of a llama model")
    return _TOP_NAMES[stem], part


def unpermute_rope_rows(w: Any, n_heads: int) -> Any:
    """Invert llama.cpp's q/k row permutation (works on packed quantized rows too).

    llama.cpp writes ``w.reshape(n_heads, 2, d // 2, ...).swapaxes(1, 2)``; the
    inverse reshapes to ``(n_heads, d // 2, 2, ...)`` and swaps back.
    """
    rows = w.shape[0]
    rest = tuple(w.shape[1:])
    return w.reshape(n_heads, rows // n_heads // 2, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def convert_weights(weights: dict[str, Any], config: dict[str, Any], dtype: str) -> tuple[dict[str, Any], dict | None]:
    """mlx-lm llama weights from GGUF tensors; returns (weights, quantization or None)."""
    import mlx.core as mx

    grouped: dict[str, dict[str, Any]] = {}
    for name, tensor in weights.items():
        module, part = _target_name(name)
        grouped.setdefault(module, {})[part] = tensor

    out: dict[str, Any] = {}
    quant_bits: dict[str, int] = {}
    for module, parts in grouped.items():
        if module.endswith("q_proj"):
            parts = {k: unpermute_rope_rows(v, config["num_attention_heads"]) for k, v in parts.items()}
        elif module.endswith("k_proj"):
            parts = {k: unpermute_rope_rows(v, config["num_key_value_heads"]) for k, v in parts.items()}
        if "scales" in parts:
            in_features = parts["scales"].shape[-1] * _GROUP_SIZE
            bits = parts["weight"].shape[-1] * 32 // in_features
            if dtype == "keep":
                quant_bits[module] = bits
                out.update({f"{module}.{k}": v for k, v in parts.items()})
                continue
            w = mx.dequantize(parts["weight"], parts["scales"], parts.get("biases"), group_size=_GROUP_SIZE, bits=bits)
            out[f"{module}.weight"] = w.astype(getattr(mx, dtype))
        else:
            w = parts["weight"]
            out[f"{module}.weight"] = w if dtype == "keep" else w.astype(getattr(mx, dtype))
    return out, _quantization_config(quant_bits)


def _quantization_config(bits_by_module: dict[str, int]) -> dict[str, Any] | None:
    """mlx-lm's quantization config: the most common width, plus per-module exceptions.

    GGUF files often keep the embedding at 8 bits and the rest at 4; mlx-lm reads a
    module path key in the config as that module's own setting.
    """
    if not bits_by_module:
        return None
    widths = list(bits_by_module.values())
    common = max(set(widths), key=widths.count)
    config: dict[str, Any] = {"group_size": _GROUP_SIZE, "bits": common}
    for module, bits in sorted(bits_by_module.items()):
        if bits != common:
            config[module] = {"group_size": _GROUP_SIZE, "bits": bits}
    return config


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def import_gguf(source: Path, out: Path, *, dtype: str = "float32", force: bool = False,
                model_id: str | None = None) -> ImportResult:
    """Write an mlx-lm model directory at ``out`` from the GGUF file ``source``.

    The directory is assembled beside ``out`` and renamed into place at the end,
    so an interrupted import never leaves a half-written model behind.
    """
    import mlx.core as mx

    if dtype not in DTYPES:
        raise ModelError(f"--dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}.")
    source, out = Path(source), Path(out)
    if out.exists() and not force:
        raise ModelError(f"{out} already exists; pass --force to replace it or choose another --out.")
    weights, metadata = read_gguf(source)
    config = model_config(metadata, weights, source)
    converted, quantization = convert_weights(weights, config, dtype)
    if quantization:
        config["quantization"] = quantization
    config["torch_dtype"] = dtype if dtype != "keep" else "float16"
    source_hash = sha256_file(source)
    config["punie"] = {"source": source.name, "source_sha256": source_hash, "dtype": dtype,
                       "model_id": model_id or source.stem}

    tokenizer_json, special = gguf_tokenizer.build_tokenizer_json(metadata, source)
    tok_config = tokenizer_config(metadata, special)

    staging = out.parent / f".{out.name}.importing"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        mx.save_safetensors(str(staging / "model.safetensors"), converted, metadata={"format": "mlx"})
        fileio.write_json(staging / "config.json", config)
        fileio.write_json(staging / "tokenizer.json", tokenizer_json)
        fileio.write_json(staging / "tokenizer_config.json", tok_config)
        special_map = {k: tok_config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")
                       if tok_config.get(k)}
        fileio.write_json(staging / "special_tokens_map.json", special_map)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return ImportResult(path=out, config=config, source_sha256=source_hash, dtype=dtype)


def tokenizer_config(metadata: dict[str, Any], special: dict[int, str]) -> dict[str, Any]:
    """``tokenizer_config.json``: special tokens and punie's tool-aware chat template."""
    tokens = metadata["tokenizer.ggml.tokens"]

    def token(key: str) -> str | None:
        idx = _scalar(metadata, f"tokenizer.ggml.{key}_token_id")
        return tokens[int(idx)] if idx is not None and int(idx) < len(tokens) else None

    original = metadata.get("tokenizer.chat_template")
    template, parser = chat_template.template_for_model(original, set(tokens))
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "pad_token": token("padding") or token("eos"),
        "unk_token": token("unknown"),
        "add_bos_token": bool(_scalar(metadata, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_scalar(metadata, "llama.context_length", 2048)),
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True}
            for i, t in sorted(special.items())
        },
    }
    if template is not None:
        config["chat_template"] = template
        config["punie_template_version"] = chat_template.TEMPLATE_VERSION
    if parser is not None:
        config["tool_parser_type"] = parser
    if original is not None and original != template:
        config["punie_original_chat_template"] = original
    return config

