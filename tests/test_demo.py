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
    result = run_demo(tmp_path / "demo", iters=2, eval_cases=6, tasks=4,
                      on_stage=lambda key, text: stages.append(key))
    assert stages == ["import", "traces", "train", "evaluate", "tasks"]
    headline = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert headline["train_steps"] == 2
    # All three suites are evaluated and reported: the sample workspace, held-out projects, foreign tools.
    assert list(headline["suites"]) == ["suite", "suite-projects", "suite-notool"]
    for suite in headline["suites"].values():
        assert suite["cases"] == 6
        assert 0 <= suite["baseline_accuracy"] <= 1 and 0 <= suite["adapter_accuracy"] <= 1
        assert {"delta", "ci95", "p_value"} <= set(suite["comparison"])
        assert Path(suite["report"]).is_file()
    # Task success on a subset of the held-out task suite, baseline vs adapter, with the paired test.
    tasks = headline["tasks"]
    assert tasks["cases"] == 4 and tasks["suite_tasks"] >= 40 and Path(tasks["report"]).is_file()
    assert 0 <= tasks["baseline_accuracy"] <= 1 and {"delta", "p_value"} <= set(tasks["comparison"])
    episodes = json.loads((result.out / "eval-tasks" / "results.json").read_text())["runs"][1]["episodes"]
    assert len(episodes) == 4 and all(e["checks"] for e in episodes)
    assert (result.out / "eval" / "report.html").is_file() and (result.adapter / "adapters.safetensors").is_file()
    for split in ("train", "valid", "test"):
        assert (result.out / "data" / f"{split}.jsonl").stat().st_size > 0
    with sqlite3.connect(paths.traces_db()) as db:  # the traces were recorded in the store
        assert db.execute("SELECT COUNT(*) FROM traces").fetchone()[0] > 100


def test_demo_prints_task_success_next_to_first_step_accuracy(monkeypatch, tmp_path):
    """The CLI's summary: each first-step suite, then task success with the paired test and how many tasks."""
    from typer.testing import CliRunner

    import punie.demo
    from punie.cli.app import app

    comparison = {"delta": 0.5, "ci95": [0.2, 0.7], "p_value": 0.004, "improved": 9, "regressed": 1}

    def headline(about: str, cases: int) -> dict:
        return {"about": about, "cases": cases, "baseline_accuracy": 0.1, "adapter_accuracy": 0.6,
                "comparison": comparison, "report": str(tmp_path / "report.html")}

    def fake_demo(out, **_):
        result = punie.demo.DemoResult(out=tmp_path, model="m", adapter=tmp_path, results=None, headline={
            "suites": {"suite": headline("the sample workspace", 78)},
            "tasks": headline("held-out task suite", 24) | {"suite_tasks": 55}})
        return result

    monkeypatch.setattr(punie.demo, "run_demo", fake_demo)
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "First-step accuracy" in text and "the sample workspace (78 cases)" in text
    assert "Task success" in text and "held-out task suite (24 of 55 tasks)" in text
    assert "baseline task success 10.0% adapter task success 60.0%" in text and "p = 0.004" in text


def test_demo_task_stage_runs_a_subset_of_the_task_suite(tiny_model, tmp_path):
    """The demo's task stage: an evenly spread subset of the held-out task suite, baseline vs adapter, headline."""
    import shutil

    from punie.demo import _run_tasks
    from test_eval_engine import make_adapter

    data = Path(__file__).resolve().parents[1] / "data"
    shutil.copytree(data / "tasks", tmp_path / "tasks")
    (tmp_path / "data").mkdir()
    shutil.copy(data / "agent" / "tasks.jsonl", tmp_path / "data" / "tasks.jsonl")
    adapter = make_adapter(tiny_model, tmp_path / "adapter", 1.0)
    headline = _run_tasks(tmp_path / "data" / "tasks.jsonl", str(tiny_model), adapter, tmp_path / "eval-tasks", 3,
                          None)
    assert headline["cases"] == 3 and headline["suite_tasks"] == 55 and Path(headline["report"]).is_file()
    assert headline["baseline_accuracy"] == 0.0  # a random model passes no task: the checks are not vacuous
    assert {"delta", "p_value", "improved", "regressed"} <= set(headline["comparison"])
    results = json.loads((tmp_path / "eval-tasks" / "results.json").read_text())
    assert [r["name"] for r in results["runs"]][0] == "baseline" and len(results["runs"]) == 2
    assert {e["category"] for e in results["runs"][0]["episodes"]} <= {"read", "list", "search", "edit", "run"}
