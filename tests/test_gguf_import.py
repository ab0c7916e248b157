"""The GGUF importer: layout, RoPE un-permutation, tokenizer, config, and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from punie.errors import ModelError
from punie.models.gguf import import_gguf, unpermute_rope_rows
from punie.models.registry import find_default_gguf

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 96, "num_attention_heads": 4,
         "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0}
_TO_GGUF = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
            "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
            "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """What llama.cpp's converter does to q/k rows (written independently of punie's inverse)."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="module")
def real_tokenizer_metadata() -> dict:
    _, meta = mx.load(str(find_default_gguf()), return_metadata=True)
    return {k: v for k, v in meta.items() if k.startswith("tokenizer.")}


def write_synthetic_gguf(path: Path, tokenizer_meta: dict, arch: str = "llama"):
    """A random HF-layout llama written as llama.cpp would: GGUF names, permuted q/k, F32."""
    from mlx_lm.models import llama

    mx.random.seed(1)
    vocab = len(tokenizer_meta["tokenizer.ggml.tokens"])
    model = llama.Model(llama.ModelArgs(model_type="llama", vocab_size=vocab, tie_word_embeddings=True, **SMALL))
    tensors = {}
    for name, value in tree_flatten(model.parameters()):
        arr = np.array(value)
        if name == "model.embed_tokens.weight":
            tensors["token_embd.weight"] = arr
        elif name == "model.norm.weight":
            tensors["output_norm.weight"] = arr
        else:
            _, _, layer, rest = name.split(".", 3)
            module = rest.rsplit(".", 1)[0]
            if module == "self_attn.q_proj":
                arr = llama_cpp_permute(arr, SMALL["num_attention_heads"])
            elif module == "self_attn.k_proj":
                arr = llama_cpp_permute(arr, SMALL["num_key_value_heads"])
            tensors[f"blk.{layer}.{_TO_GGUF[module]}.weight"] = arr
    u32 = lambda v: mx.array(v, dtype=mx.uint32)  # noqa: E731
    meta = {
        "general.architecture": arch,
        f"{arch}.embedding_length": u32(SMALL["hidden_size"]),
        f"{arch}.block_count": u32(SMALL["num_hidden_layers"]),
        f"{arch}.feed_forward_length": u32(SMALL["intermediate_size"]),
        f"{arch}.attention.head_count": u32(SMALL["num_attention_heads"]),
        f"{arch}.attention.head_count_kv": u32(SMALL["num_key_value_heads"]),
        f"{arch}.attention.layer_norm_rms_epsilon": mx.array(SMALL["rms_norm_eps"], dtype=mx.float32),
        f"{arch}.rope.freq_base": mx.array(SMALL["rope_theta"], dtype=mx.float32),
        f"{arch}.context_length": u32(512),
        **tokenizer_meta,
    }
    mx.save_gguf(str(path), {k: mx.array(v) for k, v in tensors.items()}, meta)
    return model


def test_unpermute_inverts_llama_cpp_permutation():
    w = np.arange(8 * 16 * 3).reshape(8 * 16, 3).astype(np.float32)
    back = np.array(unpermute_rope_rows(mx.array(llama_cpp_permute(w, 8)), 8))
    np.testing.assert_array_equal(back, w)
    assert not np.array_equal(llama_cpp_permute(w, 8), w)


def test_synthetic_gguf_imports_to_identical_logits(tmp_path, real_tokenizer_metadata):
    import mlx_lm

    original = write_synthetic_gguf(tmp_path / "small.gguf", real_tokenizer_metadata)
    out = import_gguf(tmp_path / "small.gguf", tmp_path / "small", dtype="float32").path
    loaded, tokenizer = mlx_lm.load(str(out))
    tokens = mx.array([tokenizer.encode("The quick brown fox jumps over the lazy dog")])
    np.testing.assert_allclose(np.array(loaded(tokens)), np.array(original(tokens)), atol=1e-4, rtol=1e-4)


def test_non_llama_gguf_is_refused(tmp_path, real_tokenizer_metadata):
    write_synthetic_gguf(tmp_path / "gpt2.gguf", real_tokenizer_metadata, arch="gpt2")
    with pytest.raises(ModelError, match="architecture 'gpt2' is not supported"):
        import_gguf(tmp_path / "gpt2.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    (b"not a gguf file at all", "not a GGUF file"),
    (b"GGUF\x03\x00\x00\x00\x05", "cannot read this GGUF file"),
])
def test_malformed_files_give_clear_errors(tmp_path, content, message):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        import_gguf(bad, tmp_path / "out")


def test_cli_reports_bad_gguf_without_traceback(tmp_path, run_cli):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"nonsense")
    result = run_cli("models", "import-gguf", str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "not a GGUF file" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_existing_output_is_not_overwritten(tmp_path, default_model):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ModelError, match="already exists"):
        import_gguf(find_default_gguf(), target)
    assert (target / "keep.txt").read_text() == "mine"


def test_default_model_layout(default_model):
    config = json.loads((default_model / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["num_key_value_heads"], config["vocab_size"]) == (30, 576, 9, 3, 49152)
    assert config["tie_word_embeddings"] is True
    weights = mx.load(str(default_model / "model.safetensors"))
    assert weights["model.embed_tokens.weight"].shape == (49152, 576)
    assert weights["model.layers.0.self_attn.q_proj.weight"].shape == (576, 576)
    assert weights["model.layers.0.self_attn.k_proj.weight"].shape == (192, 576)
    assert weights["model.layers.29.mlp.down_proj.weight"].shape == (576, 1536)
    assert {w.dtype for w in weights.values()} == {mx.float32}
    assert len(weights) == 1 + 1 + 30 * 9


def test_tokenizer_round_trip_with_special_tokens_and_unicode(tiny_model):
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    tok = load_tokenizer(tiny_model)
    text = "<|im_start|>user\nNaïve café — 東京 🙂 x=12345\t<tool_call>{}</tool_call><|im_end|>"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert ids[0] == 1 and ids[-1] == 2  # <|im_start|> and <|im_end|> are single special tokens
    assert tok.encode("12345", add_special_tokens=False) == [tok.encode(d, add_special_tokens=False)[0]
                                                             for d in "12345"]  # digits split one by one
    assert tok.eos_token == "<|im_end|>"


@pytest.mark.slow
def test_keep_dtype_stays_quantized_and_still_answers(tmp_path):
    import mlx_lm

    out = import_gguf(find_default_gguf(), tmp_path / "q4", dtype="keep").path
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"]["group_size"] == 32 and config["quantization"]["bits"] == 4
    weights = mx.load(str(out / "model.safetensors"))
    assert weights["model.layers.0.self_attn.q_proj.weight"].dtype == mx.uint32
    model, tok = mlx_lm.load(str(out))
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, tokenize=False)
    assert "Paris" in mlx_lm.generate(model, tok, prompt, max_tokens=12)
