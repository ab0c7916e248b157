"""punie.training.rundir: the one reader of a run directory's manifest, metrics and checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from punie.errors import DataError
from punie.training.rundir import RunDir, loss_series, read_metrics_file, training_process


def test_metrics_strict_for_resume_lenient_for_display(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1, "train_loss": 2.0}\n{"iteration": 2, "train_loss"\n'
                    '{"iteration": 2, "val_loss": NaN}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl:2: not valid JSON"):
        RunDir(tmp_path).read_metrics()
    records = read_metrics_file(path, lenient=True)
    assert [r["iteration"] for r in records] == [1, 2]
    assert loss_series(records) == {"train_loss": [(1.0, 2.0)], "val_loss": []}
    assert RunDir(tmp_path / "none").read_metrics() == []


def test_a_running_manifest_whose_process_is_gone_reads_as_interrupted(tmp_path):
    run = RunDir(tmp_path)
    assert run.status() is None
    run.write_manifest({"status": "running", "process": training_process()})
    assert run.status() == "running"  # this process is alive
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run.write_manifest({"status": "running", "process": {"pid": int(child.stdout), "start": "linux:1"}})
    assert run.status() == "interrupted"
    run.write_manifest({"status": "running"})  # a manifest from before punie recorded the process
    assert run.status() == "interrupted"
    run.write_manifest({"status": "completed", "process": {"pid": os.getpid()}})
    assert run.status() == "completed"


def test_base_model_from_manifest_else_adapter_config(tmp_path):
    run = RunDir(tmp_path)
    assert run.base_model() is None
    run.write_adapter_config({"model": "/models/a"})
    assert run.base_model().path == "/models/a" and not run.base_model().weights_sha256
    run.write_manifest({"base_model": {"path": "/models/b", "model_id": "b", "weights_sha256": {"m.safetensors": "0"}}})
    assert run.base_model().describe() == "/models/b (b)"
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(DataError, match="manifest.json:1: not valid JSON"):
        run.base_model()
    assert json.loads((tmp_path / "adapter_config.json").read_text()) == {"model": "/models/a"}
