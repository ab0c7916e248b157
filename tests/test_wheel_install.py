"""A wheel built from the repository works when installed non-editable, away from the checkout.

The wheel is built from a copy of only what the build reads (pyproject.toml, README.md, src/,
templates/, data/workspace/), installed into a fresh venv, and the commands that read packaged
files run from a directory outside the checkout. The venv sees the test runner's installed
dependencies through a .pth file (no download); punie itself must come from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "README.md", "src", "templates", "data/workspace")

pytestmark = pytest.mark.slow


def _run(args: list[str | Path], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{args}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _build_wheel(source: Path, dist: Path, attempts: int = 3) -> None:
    """``pip wheel``: it builds in an isolated environment, with setuptools fetched from the package index.

    A download cut short is retried; any other failure is the same every time, so it still fails the test.
    """
    args = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist), str(source)]
    for _ in range(attempts):
        proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
        if proc.returncode == 0 or not any(s in proc.stderr for s in ("Connection", "IncompleteRead", "Timeout")):
            break
    assert proc.returncode == 0, f"{args}\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with punie installed from a freshly built wheel; returns the venv directory."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    _build_wheel(source, root / "dist")
    (wheel,) = (root / "dist").glob("punie-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # Dependencies from the runner's environment; a .pth line adds a directory to sys.path after the venv's own
    # site-packages and does not run the .pth files in it, so the runner's editable punie stays invisible.
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "_runner_dependencies.pth").write_text("".join(f"{d}\n" for d in deps))
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel])
    return venv


@pytest.fixture
def punie_cli(installed, tmp_path, punie_home):
    """Run the installed ``punie`` script in an empty directory outside the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PUNIE_BLAS_REEXEC")}
    env |= {"PUNIE_HOME": str(punie_home), "COLUMNS": "200"}
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()

    def run(*args: str | Path) -> subprocess.CompletedProcess:
        return _run([installed / "bin" / "punie", *args], cwd=cwd, env=env)

    run.env, run.cwd = env, cwd  # type: ignore[attr-defined]
    return run


def test_the_installed_punie_is_the_wheel(installed, punie_cli):
    found = _run([installed / "bin" / "python", "-c", "import punie, punie.assets as a; print(punie.__file__); "
                  "print(a.templates_dir()); print(a.sample_workspace())"], cwd=punie_cli.cwd, env=punie_cli.env)
    for line in found.stdout.splitlines():
        path = Path(line)
        assert path.is_relative_to(installed) and not path.is_symlink(), line
    package = Path(found.stdout.splitlines()[0]).parent
    for name, original in (("templates", REPO / "templates"), ("workspace", REPO / "data" / "workspace")):
        assert _files(package / "assets" / name) == _files(original), f"the wheel's {name} differs from {original}"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def test_data_eval_and_report_commands_run_from_the_wheel(punie_cli, tiny_model, tmp_path):
    rows = [{"prompt": f"Is {i} prime?", "completion": "Yes" if i % 3 == 0 else "No", "category": "ab"[i % 2]}
            for i in range(30)]
    (tmp_path / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    punie_cli("data", "split", tmp_path / "all.jsonl", "--out", tmp_path / "data")
    punie_cli("data", "check", tmp_path / "data", "--model", tiny_model, "--max-label-ratio", "3")
    assert json.loads((tmp_path / "data" / "summary.json").read_text())["ok"]
    assert "Data card" in (tmp_path / "data" / "data_card.html").read_text()

    cases = [{"id": f"c{i}", "messages": [{"role": "user", "content": f"Say {i}"}], "scorer": "contains",
              "expect": {"contains": [str(i)]}} for i in range(3)]
    (tmp_path / "suite.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))
    punie_cli("eval", "--suite", tmp_path / "suite.jsonl", "--model", tiny_model, "--max-tokens", "4",
              "--out", tmp_path / "eval")
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["runs"]
    page = tmp_path / "eval" / "report.html"
    first = page.read_text()
    page.unlink()
    punie_cli("report", "build", tmp_path / "eval")
    assert page.read_text() == first


def test_demo_data_from_the_packaged_workspace_is_the_committed_data(punie_cli, tiny_model, tmp_path):
    punie_cli("traces", "demo-data", "--out", tmp_path / "agent", "--model", tiny_model)
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "suite.jsonl", "suite-projects.jsonl",
                 "suite-notool.jsonl", "export.json"):
        assert (tmp_path / "agent" / name).read_bytes() == (REPO / "data" / "agent" / name).read_bytes(), name
