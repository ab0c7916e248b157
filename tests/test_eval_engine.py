"""The in-process engine on the tiny random model: adapter swapping, batching, checks, interrupts.

Outputs of a random model are junk; these tests check the plumbing: an adapter
with zero weights changes nothing, a non-zero one changes the output, the
baseline after an adapter is the base again, and batched greedy generation
equals mlx-lm's one-at-a-time greedy generation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from punie.errors import ConfigError, ModelError
from punie.eval import run_eval
from punie.eval.engines import EngineOptions
from punie.eval.inprocess import InProcessEngine, adapter_parameter_names, generate_batched
from punie.eval.prefix import prefix_groups
from punie.eval.suite import EvalCase

PROMPTS = ["Show me setup.cfg", "hi", "What is two plus two? Please answer with a number only.", "List files"]


def make_adapter(base: Path, out: Path, lora_b_scale: float, *, rank: int = 4, seed: int = 0) -> Path:
    """A LoRA adapter in mlx-lm's format: random lora_a, lora_b scaled normal (0 = no effect)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = load(str(base))
    model.freeze()
    config = {"rank": rank, "scale": 10.0, "dropout": 0.0}
    mx.random.seed(seed)
    linear_to_lora_layers(model, 2, config)
    params = {k: (mx.random.normal(v.shape) * lora_b_scale if k.endswith("lora_b") else v)
              for k, v in tree_flatten(model.trainable_parameters())}
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), params)
    (out / "adapter_config.json").write_text(json.dumps(
        {"model": str(base), "fine_tune_type": "lora", "num_layers": 2, "lora_parameters": config}))
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {"zero": make_adapter(tiny_model, root / "zero", 0.0),
            "strong": make_adapter(tiny_model, root / "strong", 1.0)}


@pytest.fixture(scope="module")
def engine(tiny_model, adapters):
    eng = InProcessEngine(EngineOptions(model=str(tiny_model), max_tokens=8, batch_size=4))
    eng.prepare(list(adapters.values()))
    yield eng
    eng.close()


def cases(n: int = len(PROMPTS)) -> list[EvalCase]:
    return [EvalCase(id=f"c{i}", messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], scorer="exact",
                     expect={"answer": "x"}, category="a" if i % 2 else "b") for i in range(n)]


def outputs(engine: InProcessEngine, adapter: Path | None) -> list[str]:
    got: dict[int, str] = {}
    engine.generate(adapter, cases(), lambda i, g: got.__setitem__(i, g.output.raw))
    return [got[i] for i in range(len(PROMPTS))]


def test_zero_adapter_equals_baseline_and_nonzero_differs(engine, adapters):
    base = outputs(engine, None)
    assert outputs(engine, adapters["zero"]) == base
    assert adapter_parameter_names(engine.model)  # the zero adapter really was applied
    strong = outputs(engine, adapters["strong"])
    assert strong != base


def test_baseline_after_an_adapter_is_the_base_model(engine, adapters, tiny_model):
    from mlx_lm import generate, load

    outputs(engine, adapters["strong"])
    again = outputs(engine, None)
    assert adapter_parameter_names(engine.model) == []
    fresh, tok = load(str(tiny_model))
    for case, text in zip(cases(), again, strict=True):
        assert generate(fresh, tok, engine.encode(case), max_tokens=8) == text


@pytest.mark.parametrize("share_prefixes", [True, False])
def test_batched_generation_equals_one_at_a_time(engine, adapters, share_prefixes):
    from mlx_lm import generate

    engine.use_adapter(adapters["strong"])
    prompts = [engine.encode(c) for c in cases()]
    assert len({len(p) for p in prompts}) > 1  # different lengths: padding is exercised
    if share_prefixes:  # the system prompt is shared: one prefix group, prefilled once
        assert [len(g.members) for g in prefix_groups(prompts)] == [4]
        assert prefix_groups(prompts)[0].length >= 16
    batched = {i: text for i, text, _ in generate_batched(engine.model, engine.tokenizer, prompts, max_tokens=8,
                                                          batch_size=4, share_prefixes=share_prefixes)}
    for i, prompt in enumerate(prompts):
        assert batched[i] == generate(engine.model, engine.tokenizer, prompt, max_tokens=8)


def test_prefix_groups():
    tools = list(range(100, 160))  # a long shared block (system prompt + tool schemas)
    prompts = [tools + [1, 2], [7, 8, 9], tools + [3], list(range(100, 120)) + [5, 5], tools[:59]]
    groups = {tuple(sorted(g.members)): g.length for g in prefix_groups(prompts)}
    # 0, 2 and 4 share 59 tokens (4 keeps one of its own); 3 shares only 20, which would more than halve that
    assert groups == {(0, 2, 4): 58, (3,): 0, (1,): 0}
    assert prefix_groups([]) == []
    assert [g.length for g in prefix_groups([[1] * 40, [1] * 40])] == [39]
    assert [g.length for g in prefix_groups([[1] * 10 + [2], [1] * 10 + [3]])] == [0, 0]  # below the minimum


def write_suite(path: Path, n: int = 4) -> Path:
    lines = [{"id": f"c{i}", "category": "a" if i % 2 else "b",
              "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
              "scorer": "contains", "expect": {"contains": ["e"]}} for i in range(n)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_run_eval_writes_results_and_hands_them_on(tiny_model, adapters, tmp_path):
    events, written = [], []
    results = run_eval(write_suite(tmp_path / "suite.jsonl"), model=str(tiny_model), adapters=[adapters["strong"]],
                       max_tokens=6, out_dir=tmp_path / "out", progress=events.append, batch_size=4,
                       on_written=written.append)
    assert not results.interrupted
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["name"] for r in data["runs"]] == ["baseline", "strong"]
    assert data["runs"][0]["adapter"] is None and data["runs"][1]["adapter"] == str(adapters["strong"])
    for run in data["runs"]:
        assert set(run["summary"]["by_category"]) == {"a", "b"}
        assert 0 <= run["summary"]["accuracy"] <= 1
        assert [c["id"] for c in run["cases"]] == ["c0", "c1", "c2", "c3"]
        for case in run["cases"]:
            assert {"id", "category", "passed", "score", "output", "tool_calls", "latency_s"} <= set(case)
            assert case["passed"] == ("e" in case["output"].lower())
    comp = data["comparisons"][0]
    assert comp["run"] == "strong" and comp["baseline"] == "baseline"
    assert {"delta", "ci95", "p_value", "significant", "verdict"} <= set(comp)
    # eval writes no report: whoever calls it renders one from results.json (the CLI does)
    assert written == [tmp_path / "out"] and not (tmp_path / "out" / "report.html").exists()
    assert [e.done for e in events if e.run == "baseline"] == [0, 1, 2, 3, 4]


def test_inprocess_results_claim_no_per_case_latency(tiny_model, adapters, tmp_path):
    """Batched cases share every step: a case's wall time is not its own, so only run time and tokens/s are given."""
    run_eval(write_suite(tmp_path / "suite.jsonl"), model=str(tiny_model), max_tokens=6, out_dir=tmp_path / "out",
             batch_size=4)
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["timing"] == "batched" and data["batch_size"] == 4
    [run] = data["runs"]
    assert all(case["latency_s"] is None for case in run["cases"])
    assert all(1 <= case["generated_tokens"] <= 6 for case in run["cases"])
    summary = run["summary"]
    assert summary["mean_latency_s"] is None
    assert summary["generated_tokens"] == sum(case["generated_tokens"] for case in run["cases"])
    assert summary["elapsed_s"] > 0
    assert summary["tokens_per_s"] == pytest.approx(summary["generated_tokens"] / summary["elapsed_s"])


def test_ctrl_c_keeps_finished_cases(tiny_model, adapters, tmp_path):
    def progress(event):
        if event.run == "strong" and event.done == 3:
            raise KeyboardInterrupt

    results = run_eval(write_suite(tmp_path / "suite.jsonl", n=8), model=str(tiny_model),
                       adapters=[adapters["strong"]], max_tokens=4, out_dir=tmp_path / "out", progress=progress,
                       batch_size=2)
    assert results.interrupted
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["interrupted"] is True
    assert len(data["runs"][0]["cases"]) == 8 and data["runs"][0]["summary"]["complete"]
    assert len(data["runs"][1]["cases"]) == 3 and not data["runs"][1]["summary"]["complete"]
    assert data["comparisons"][0]["n_paired"] == 3


def test_adapter_for_another_model_fails_before_anything_runs(tiny_model, default_model, tmp_path):
    wrong = make_adapter(default_model, tmp_path / "for-smollm", 0.0, rank=2)
    events = []
    with pytest.raises(ModelError) as info:
        run_eval(write_suite(tmp_path / "suite.jsonl"), model=str(tiny_model), adapters=[wrong],
                 out_dir=tmp_path / "out", progress=events.append)
    message = str(info.value)
    assert str(wrong) in message and "hidden_size 576 vs 64" in message
    assert events == [] and not (tmp_path / "out" / "results.json").exists()


def test_adapter_layers_checked_without_a_base_path(tiny_model, default_model, tmp_path):
    wrong = make_adapter(default_model, tmp_path / "for-smollm", 0.0, rank=2)
    config = json.loads((wrong / "adapter_config.json").read_text())
    (wrong / "adapter_config.json").write_text(json.dumps(config | {"model": "some/hub-model"}))
    with pytest.raises(ModelError, match=r"does not fit the base model.*layers the base model does not have "
                                         r"\(model.layers.28.mlp.down_proj, .* and 12 more\)"):
        run_eval(write_suite(tmp_path / "suite.jsonl"), model=str(tiny_model), adapters=[wrong],
                 out_dir=tmp_path / "out")


def test_adapter_sizes_checked_without_a_base_path(tiny_model, tmp_path):
    import mlx.core as mx

    wrong = tmp_path / "wide"
    wrong.mkdir()
    stem = "model.layers.1.self_attn.q_proj"
    mx.save_safetensors(str(wrong / "adapters.safetensors"),
                        {f"{stem}.lora_a": mx.zeros((576, 4)), f"{stem}.lora_b": mx.zeros((4, 576))})
    (wrong / "adapter_config.json").write_text(json.dumps(
        {"fine_tune_type": "lora", "num_layers": 1, "lora_parameters": {"rank": 4, "scale": 1.0, "dropout": 0.0}}))
    with pytest.raises(ModelError, match=f"{stem}.lora_a has size 576 where the base layer has 64"):
        run_eval(write_suite(tmp_path / "suite.jsonl"), model=str(tiny_model), adapters=[wrong],
                 out_dir=tmp_path / "out")


def test_manifest_of_another_base_is_refused(tiny_model, adapters, tmp_path):
    import shutil

    copy = Path(shutil.copytree(adapters["zero"], tmp_path / "zero-copy"))
    (copy / "manifest.json").write_text(json.dumps({"base_model": {"model_id": "Qwen2.5-0.5B"}}))
    with pytest.raises(ModelError, match="model id .Qwen2.5-0.5B. vs .tiny-random-llama."):
        run_eval(write_suite(tmp_path / "suite.jsonl"), model=str(tiny_model), adapters=[copy],
                 out_dir=tmp_path / "out")


def test_missing_adapter_dir_and_bad_options(tiny_model, tmp_path):
    suite = write_suite(tmp_path / "suite.jsonl")
    with pytest.raises(ModelError, match="does not exist"):
        run_eval(suite, model=str(tiny_model), adapters=[tmp_path / "nope"], out_dir=tmp_path / "out")
    with pytest.raises(ConfigError, match="--engine 'warp'"):
        run_eval(suite, model=str(tiny_model), engine="warp", out_dir=tmp_path / "out")
    with pytest.raises(ConfigError, match="--max-tokens"):
        run_eval(suite, model=str(tiny_model), max_tokens=0, out_dir=tmp_path / "out")


def test_run_timing_per_case_and_batched():
    from punie.eval.results import CaseResult, RunResult

    def result(latency, tokens):
        return CaseResult(id="c", category="a", scorer="exact", passed=True, score=1.0, output="", tool_calls=[],
                          latency_s=latency, generated_tokens=tokens)

    timed = RunResult("endpoint", None, [result(0.5, 10), result(1.5, 30)], elapsed_s=10.0).timing()
    # throughput over the requests' own time, not the run's (which includes starting a server)
    assert timed == {"elapsed_s": 10.0, "mean_latency_s": 1.0, "generated_tokens": 40, "tokens_per_s": 20.0}
    batched = RunResult("baseline", None, [result(None, 10), result(None, 30)], elapsed_s=4.0).timing()
    assert batched == {"elapsed_s": 4.0, "mean_latency_s": None, "generated_tokens": 40, "tokens_per_s": 10.0}
    unknown = RunResult("endpoint", None, [result(0.5, None), result(1.5, 30)], elapsed_s=10.0).timing()
    assert unknown["generated_tokens"] is None and unknown["tokens_per_s"] is None
