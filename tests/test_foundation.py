"""BLAS fix, doctor, paths and CLI error handling."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from punie import blas, paths


def test_child_env_preloads_a_found_openblas(monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(blas, "applies", lambda: True)
    monkeypatch.setattr(blas, "find_openblas", lambda: Path("/opt/libopenblas.so.0"))
    env = blas.child_env({"LD_PRELOAD": "libother.so", "PATH": "/bin"})
    assert env["LD_PRELOAD"] == "/opt/libopenblas.so.0 libother.so" and env["PATH"] == "/bin"


def test_opt_out_and_no_library_leave_env_alone(monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(blas, "applies", lambda: True)
    monkeypatch.setattr(blas, "find_openblas", lambda: Path("/opt/libopenblas.so.0"))
    assert "LD_PRELOAD" not in blas.child_env({blas.OPT_OUT_ENV: "1"})
    monkeypatch.setattr(blas, "find_openblas", lambda: None)
    assert "LD_PRELOAD" not in blas.child_env({})


def test_no_reexec_once_mlx_is_loaded_or_already_reexecuted(monkeypatch):
    import mlx.core  # noqa: F401  (this test process has MLX loaded)

    monkeypatch.setattr(blas, "applies", lambda: True)
    monkeypatch.setattr(blas, "find_openblas", lambda: Path("/opt/libopenblas.so.0"))
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert blas.reexec_env() is None
    monkeypatch.setenv(blas._REEXEC_MARK, "1")
    assert blas.reexec_env() is None


@pytest.mark.skipif(platform.system() != "Linux" or blas.find_openblas() is None,
                    reason="the BLAS fix applies on Linux with an OpenBLAS installed")
def test_cli_runs_with_openblas_loaded(run_cli):
    result = run_cli("doctor", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["blas"].startswith("OpenBLAS")
    assert info["matmul_gflops"] > 0 and info["device"] == "cpu"


def test_doctor_without_blas_fix_reports_the_reference_blas(run_cli, monkeypatch):
    monkeypatch.setenv(blas.OPT_OUT_ENV, "1")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    info = json.loads(run_cli("doctor", "--json").stdout)
    if platform.system() == "Linux":
        assert not info["blas"].startswith("OpenBLAS")
        assert "PUNIE_NO_BLAS_FIX=1" in info["blas_hint"]
    assert info["default_model"] is None


def test_punie_home_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PUNIE_HOME", str(tmp_path / "h"))
    assert paths.models_dir() == tmp_path / "h" / "models" and paths.models_dir().is_dir()


def test_unknown_model_is_a_clear_error(run_cli):
    result = run_cli("generate", "hi", "--model", "no-such-model")
    assert result.returncode == 1
    assert "Error: --model 'no-such-model'" in result.stderr and "Traceback" not in result.stderr


def test_debug_env_shows_the_traceback(run_cli, monkeypatch):
    monkeypatch.setenv("PUNIE_DEBUG", "1")
    result = run_cli("generate", "hi", "--model", "no-such-model")
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_models_list_on_an_empty_cache(run_cli):
    result = run_cli("models", "list")
    assert result.returncode == 0 and "punie models pull default" in result.stdout


def test_usage_errors_exit_nonzero_without_traceback(run_cli):
    result = run_cli("models", "import-gguf")
    assert result.returncode == 2 and "Missing argument" in result.stderr and "Traceback" not in result.stderr


def test_doctor_reports_the_command_sandbox(run_cli, monkeypatch, tmp_path):
    from punie.traces import sandbox

    info = json.loads(run_cli("doctor", "--json").stdout)
    assert info["sandbox"] == sandbox.available_level()
    if platform.system() != "Linux":
        return
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on PATH
    shown = run_cli("doctor")
    assert shown.returncode == 0, shown.stderr
    assert "Command sandbox" in shown.stdout and "none" in shown.stdout
    assert "bubblewrap (bwrap) is not installed" in shown.stdout and "--no-sandbox" in shown.stdout
