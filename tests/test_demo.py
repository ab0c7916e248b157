"""punie demo: the whole loop on the real default model (shortened: few steps, a subset of the suite)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from punie import paths


@pytest.mark.slow
def test_demo_runs_every_stage_and_reports_headline_numbers(tmp_path):
    from punie.demo import run_demo

    stages: list[str] = []
    result = run_demo(tmp_path / "demo", iters=2, eval_cases=6, on_stage=lambda key, text: stages.append(key))
    assert stages == ["import", "traces", "train", "evaluate"]
    headline = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert headline["train_steps"] == 2
    # All three suites are evaluated and reported: the sample workspace, held-out projects, foreign tools.
    assert list(headline["suites"]) == ["suite", "suite-projects", "suite-notool"]
    for suite in headline["suites"].values():
        assert suite["cases"] == 6
        assert 0 <= suite["baseline_accuracy"] <= 1 and 0 <= suite["adapter_accuracy"] <= 1
        assert {"delta", "ci95", "p_value"} <= set(suite["comparison"])
        assert Path(suite["report"]).is_file()
    assert (result.out / "eval" / "report.html").is_file() and (result.adapter / "adapters.safetensors").is_file()
    for split in ("train", "valid", "test"):
        assert (result.out / "data" / f"{split}.jsonl").stat().st_size > 0
    with sqlite3.connect(paths.traces_db()) as db:  # the traces were recorded in the store
        assert db.execute("SELECT COUNT(*) FROM traces").fetchone()[0] > 100
