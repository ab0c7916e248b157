"""The imported default model answers like SmolLM2-135M-Instruct, in-process and through mlx_lm's CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from punie import blas

QUESTION = "What is the capital of France?"


@pytest.mark.slow
def test_greedy_answer_contains_paris(default_model):
    from punie.models.loading import generate_reply

    assert "Paris" in generate_reply(QUESTION, model=str(default_model), max_tokens=20)


@pytest.mark.slow
def test_unmodified_mlx_lm_generate_uses_the_import(default_model):
    result = subprocess.run(
        [sys.executable, "-m", "mlx_lm", "generate", "--model", str(default_model), "--prompt", QUESTION,
         "--max-tokens", "20"],
        capture_output=True, text=True, env=blas.child_env(), timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


@pytest.mark.slow
def test_pull_default_then_generate(run_cli):
    pulled = run_cli("models", "pull", "default")
    assert pulled.returncode == 0, pulled.stderr
    result = run_cli("generate", QUESTION, "--max-tokens", "20")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    listing = run_cli("models", "list")
    assert "smollm2-135m-instruct" in listing.stdout
