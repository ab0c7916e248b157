"""punie sweep: the halving schedule on a synthetic score, resume, the budget, overlap refusals, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import pytest

from punie.errors import ConfigError, DataError
from punie.sweep import SweepConfig, sweep
from punie.sweep import units as sweep_units
from punie.sweep.schedule import OutOfBudget, halving_rungs, one_rung, ranked, run_rungs, rung_steps, winner
from punie.sweep.space import check_space, configs, parse_grid
from punie.training import TrainConfig, TrainingInterrupted, train
from punie.training.rundir import RunDir

TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a file.", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]


# ---- the schedule, on a synthetic score ---------------------------------------------------------------------------

def test_halving_keeps_the_best_configs_of_each_rung_on_a_synthetic_score():
    # Config i's score at a rung mixes an early and a late quality: early leaders are not the late ones, so a
    # schedule that ranked on anything but the current rung's scores would keep the wrong configs.
    early = [0.9, 0.1, 0.8, 0.3, 0.7, 0.2, 0.6, 0.4]
    late = [0.1, 0.9, 0.5, 0.8, 0.3, 0.7, 0.4, 0.6]
    calls = []

    def score(i, rung):
        calls.append((rung.index, i))
        return early[i] * (1 - rung.fraction) + late[i] * rung.fraction

    rungs = halving_rungs(8, eta=2)
    assert [(r.fraction, r.keep) for r in rungs] == [(0.125, 4), (0.25, 2), (0.5, 1), (1.0, 1)]
    history, stopped = run_rungs(8, rungs, score)
    assert stopped == "" and all(r.complete for r in history)
    for result in history[:-1]:  # each rung keeps the top `keep` of its own scores
        best = sorted(result.scores, key=lambda i: -result.scores[i])[:result.rung.keep]
        assert result.kept == best
    assert [sorted(r.scores) for r in history] == [list(range(8)), [0, 2, 4, 6], [0, 2], [2]]
    assert len(calls) == 8 + 4 + 2 + 1
    assert [i for rung, i in calls if rung == 1] == [0, 2, 4, 6]  # the previous rung's best first
    assert [i for rung, i in calls if rung == 2] == [2, 0]
    assert winner(history) == 2
    # A one-rung search (grid) scores everything fully and picks the best late score.
    history, _ = run_rungs(8, one_rung(8), score)
    assert [r.rung.fraction for r in history] == [1.0] and winner(history) == 1
    assert [(r.fraction, r.keep) for r in halving_rungs(5, eta=3)] == [(1 / 9, 2), (1 / 3, 1), (1.0, 1)]
    assert halving_rungs(1) == one_rung(1)


def test_a_failed_config_ranks_last_and_the_budget_stops_where_it_stands():
    assert ranked({0: 0.5, 1: None, 2: 0.5, 3: 0.9}) == [3, 0, 2, 1]
    scored = []

    def score(i, rung):
        if len(scored) == 5:  # rung 0 (4 configs) and the first of rung 1's two
            raise OutOfBudget("the budget of 1 min would be exceeded")
        scored.append(i)
        return [0.2, 0.9, 0.5, 0.7][i] * (1 + rung.index)

    history, stopped = run_rungs(4, halving_rungs(4), score)
    assert stopped == "the budget of 1 min would be exceeded"
    assert [r.complete for r in history] == [True, False] and history[1].scores == {1: 1.8}
    assert winner(history) == 1  # the furthest-trained: rung 1 scores the previous rung's best first
    assert rung_steps(100, 0.125) == 13 and rung_steps(100, 0.125, multiple=4) == 16
    assert rung_steps(3, 0.1, multiple=2) == 2 and rung_steps(10, 1.0, multiple=4) == 10


def test_the_space_is_parsed_like_train_options_and_checked():
    space = parse_grid(["rank=8,16 learning_rate=2e-4,5e-4", "lr-schedule=cosine", "grad_checkpoint=true"])
    assert space == {"rank": [8, 16], "learning_rate": [2e-4, 5e-4], "lr_schedule": ["cosine"],
                     "grad_checkpoint": [True]}
    assert len(configs(space, "grid", None, 0)) == 4
    drawn = configs(space, "random", 2, seed=1)
    assert len(drawn) == 2 and drawn == configs(space, "random", 2, seed=1) and drawn[0] != drawn[1]
    with pytest.raises(ConfigError, match="use --seeds"):
        check_space({"seed": [1, 2]})
    with pytest.raises(ConfigError, match="'rnak', which is not a punie train setting"):
        check_space({"rnak": [8]})
    with pytest.raises(ConfigError, match="SETTING=VALUE"):
        parse_grid(["rank"])
    with pytest.raises(ValueError, match="trials draws configs for method 'random', got method 'grid'"):
        SweepConfig(data=Path("d"), select_suite=Path("s"), output=Path("o"), trials=3)


# ---- training: pausing keeps the whole run's schedule -------------------------------------------------------------

def tool_record(i: int) -> dict:
    path = f"dir{i % 5}/file{i}.txt"
    return {"messages": [{"role": "user", "content": f"Show me {path}"},
                         {"role": "assistant", "content": "", "tool_calls": [
                             {"type": "function", "function": {"name": "read_file", "arguments": {"path": path}}}]}],
            "tools": TOOLS}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_suite(path: Path, numbers: range) -> Path:
    return write_jsonl(path, [{"id": f"{path.stem}-{i}", "category": "read", "messages": tool_record(i)["messages"][:1],
                               "tools": TOOLS, "scorer": "contains", "expect": {"contains": ["e"]}} for i in numbers])


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    write_jsonl(d / "train.jsonl", [tool_record(i) for i in range(16)])
    write_jsonl(d / "valid.jsonl", [tool_record(i) for i in range(100, 104)])
    return d


def test_a_paused_run_continues_exactly_as_an_uninterrupted_one(data_dir, tiny_model, tmp_path):
    settings = dict(data=data_dir, model=str(tiny_model), iters=6, batch_size=4, num_layers=2, learning_rate=1e-3,
                    lr_schedule="cosine", warmup=2, steps_per_eval=3, save_every=10, steps_per_report=1)
    whole = train(TrainConfig(**settings, output=tmp_path / "whole"))
    paused = train(TrainConfig(**settings, output=tmp_path / "paused"), until=4)
    assert paused.steps == 4 and RunDir(tmp_path / "paused").status() == "paused"
    assert RunDir(tmp_path / "paused").latest_checkpoint().step == 4
    continued = train(TrainConfig(**settings, output=tmp_path / "paused"), resume=True)
    assert continued.steps == 6 and RunDir(tmp_path / "paused").status() == "completed"
    a, b = mx.load(str(whole.adapter_file)), mx.load(str(continued.adapter_file))
    assert all(mx.allclose(a[k], b[k], atol=1e-6).item() for k in a)

    def curve(result):  # the schedule and the losses, step by step
        return [v for m in result.metrics if "train_loss" in m for v in (m["iteration"], m["learning_rate"],
                                                                          m["train_loss"])]

    assert curve(whole)[::3] == [1, 2, 3, 4, 5, 6]
    assert curve(continued) == pytest.approx(curve(whole), rel=1e-5)


# ---- the sweep, end to end on the tiny model ----------------------------------------------------------------------

def sweep_config(data_dir: Path, tiny_model: Path, tmp_path: Path, **kw) -> SweepConfig:
    select = write_suite(tmp_path / "select.jsonl", range(200, 204))
    test = write_suite(tmp_path / "test.jsonl", range(300, 304))
    fixed = {"iters": [4], "num_layers": [2], "batch_size": [4], "steps_per_eval": [2], "val_batches": [1]}
    base = dict(data=data_dir, select_suite=select, test_suite=test, output=tmp_path / "sweep", model=str(tiny_model),
                space={"learning_rate": [1e-3, 2e-2], "rank": [2, 4]} | fixed, max_tokens=4, batch_size=8)
    return SweepConfig(**(base | kw))


def test_a_halving_sweep_resumes_without_redoing_finished_work(data_dir, tiny_model, tmp_path, monkeypatch):
    config = sweep_config(data_dir, tiny_model, tmp_path, method="halving")
    trained: list[tuple[str, int]] = []
    interrupt = [True]
    real_train_to = sweep_units.train_to

    def counting(candidate, steps, callback):
        trained.append((candidate.id, steps))
        if interrupt and len(trained) == 3:  # Ctrl-C as the third candidate starts training
            interrupt.clear()
            raise TrainingInterrupted(0, candidate.train.output_dir())
        real_train_to(candidate, steps, callback)

    monkeypatch.setattr("punie.sweep.run.train_to", counting)
    with pytest.raises(TrainingInterrupted):
        sweep(config)
    out = config.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert [len(c["selection"]) for c in summary["candidates"]] == [1, 1, 0, 0]  # finished work is kept

    trained.clear()
    result = sweep(config)
    summary = result.summary
    # The rerun trains neither finished candidate again: it starts with the interrupted one.
    assert trained[:2] == [("c02-lr0.02-rank2-seed0", 1), ("c03-lr0.02-rank4-seed0", 1)]
    assert summary["status"] == "complete" and [r["fraction"] for r in summary["rungs"]] == [0.25, 0.5, 1.0]
    first, second, last = summary["rungs"]
    assert second["kept"] == ranked({int(k): v for k, v in second["scores"].items()})[:1]
    assert sorted(map(int, second["scores"])) == sorted(first["kept"]) and list(last["scores"]) == list(
        map(str, second["kept"]))
    won = summary["winner"]
    assert won["config"] == second["kept"][0] and won["rung"] == 2
    record = next(c for c in summary["candidates"] if c["id"] in won["candidates"])
    assert record["steps"] == 4 and record["status"] == "completed" and record["tokens_per_second"] > 0
    assert record["peak_memory_gb"] > 0 and [s["steps"] for s in record["selection"]] == [1, 2, 4]
    lo, hi = record["selection"][-1]["ci95"]
    assert 0 <= lo <= record["selection"][-1]["accuracy"] <= hi <= 1
    assert json.loads((Path(record["adapter"]) / "manifest.json").read_text())["config"]["iters"] == 4
    # The test suite ran once: the baseline and the winner, paired.
    test = json.loads((out / "test" / "results.json").read_text())
    assert [r["name"] for r in test["runs"]] == ["baseline", record["id"]]
    assert summary["test"]["vs_baseline"][0]["n_paired"] == 4

    trained.clear()
    written = {p: p.stat().st_mtime_ns for p in out.rglob("results.json")}
    again = sweep(config)  # everything finished: nothing is trained or evaluated again
    assert trained == [] and again.summary["winner"] == summary["winner"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json")} == written

    with pytest.raises(ConfigError, match="holds a different sweep"):
        sweep(config.model_copy(update={"seeds": 2}))


def test_the_budget_stops_starting_work_and_says_so(data_dir, tiny_model, tmp_path):
    config = sweep_config(data_dir, tiny_model, tmp_path, budget_minutes=1e-4, space={
        "learning_rate": [1e-3], "iters": [2], "num_layers": [2], "batch_size": [4]})
    summary = sweep(config).summary
    assert summary["status"] == "budget" and summary["budget"]["stopped"]
    assert "the budget of 0.0001 min would be exceeded" in summary["budget"]["message"]
    assert "training c00-seed0 to step 2" in summary["budget"]["message"]
    assert summary["winner"] is None and summary["test"] is None
    assert summary["baseline"]["selection"]["n"] == 4  # the first unit always starts: nothing predicts its cost
    assert not (config.output / "runs").exists()


def test_a_candidate_whose_settings_the_model_cannot_take_fails_alone(data_dir, tiny_model, tmp_path):
    # The tiny model has 2 layers: --num-layers 5 is refused by training (a ConfigError), for that candidate only.
    said: list[str] = []
    config = sweep_config(data_dir, tiny_model, tmp_path, space={
        "num_layers": [5, 2], "iters": [2], "batch_size": [4], "learning_rate": [1e-3]})
    summary = sweep(config, on_message=said.append).summary
    failed, ok = summary["candidates"]
    assert "--num-layers 5 is larger than the model's 2 layers" in failed["error"] and not failed["selection"]
    assert any(line.startswith(f"{failed['id']} failed: --num-layers 5") for line in said)
    assert summary["status"] == "complete" and summary["winner"]["candidates"] == [ok["id"]]
    assert ok["wall_s"]["train"] > 0 and ok["wall_s"]["eval"] > 0 and failed["wall_s"]["eval"] == 0


def test_overlapping_suites_are_refused_before_anything_is_written(data_dir, tiny_model, tmp_path):
    config = sweep_config(data_dir, tiny_model, tmp_path)
    leaky = write_suite(tmp_path / "leaky.jsonl", range(14, 18))  # cases 14, 15 are training prompts
    with pytest.raises(DataError, match=r"leaky.jsonl shares 2 prompt\(s\) with .*train.jsonl .*held out from train"):
        sweep(config.model_copy(update={"select_suite": leaky}))
    with pytest.raises(DataError, match="test suite must be held out from training"):
        sweep(config.model_copy(update={"test_suite": leaky}))
    overlapping = write_suite(tmp_path / "overlap.jsonl", range(203, 206))
    with pytest.raises(DataError, match=r"select.jsonl shares 1 prompt\(s\) with .*overlap.jsonl \(cases "
                                        r"select-203\); choosing on test cases"):
        sweep(config.model_copy(update={"test_suite": overlapping}))
    assert not config.output.exists()


def test_the_cli_runs_a_grid_with_a_reference_and_writes_the_report(data_dir, tiny_model, tmp_path, run_cli):
    config = sweep_config(data_dir, tiny_model, tmp_path)
    (tmp_path / "reference.yaml").write_text("rank: 2\nnum_layers: 1\niters: 2\n")
    args = ["sweep", str(data_dir), "--select-suite", str(config.select_suite), "--test-suite",
            str(config.test_suite), "--output", str(config.output), "--model", str(tiny_model),
            "--grid", "rank=2,4 iters=2", "--grid", "num_layers=2", "--grid", "batch_size=4",
            "--reference", str(tmp_path / "reference.yaml"), "--max-tokens", "4"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "Winner: rank=" in result.stdout and "test: reference-seed0 vs baseline" in result.stdout
    summary = json.loads((config.output / "summary.json").read_text())
    assert [c["id"] for c in summary["candidates"]] == ["c00-rank2-seed0", "c01-rank4-seed0", "reference-seed0"]
    assert len(summary["test"]["winner_vs_reference"]) == 1
    page = (config.output / "report.html").read_text()
    assert page.count("<tr") == 4 and "c01-rank4-seed0" in page and "Selection accuracy by setting" in page
    assert "Training loss" in page and "vs reference-seed0: " in page
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    assert (config.output / "test" / "report.html").is_file()

    refused = run_cli(*args[:5], str(config.select_suite), *args[6:])
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "choosing on test cases" in refused.stderr
