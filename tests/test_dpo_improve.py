"""punie improve: pairing drafts, the balance refusal, seeded sampling, and one tiny end-to-end round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from punie.dpo.improve import (
    ImbalanceError,
    ImproveConfig,
    check_balance,
    decision,
    decision_counts,
    downsample,
    downsample_categories,
    downsample_decisions,
    improve,
    make_pairs,
)
from punie.errors import DataError
from punie.eval.engines import EngineOptions
from punie.eval.inprocess import InProcessEngine
from punie.eval.results import CaseResult
from punie.eval.suite import EvalCase
from punie.training.rundir import RunDir, loss_series

TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a file.", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]


def case(i: int, scorer: str = "contains", **expect) -> EvalCase:
    return EvalCase(id=f"c{i}", messages=[{"role": "user", "content": f"question {i}"}], scorer=scorer,
                    expect=expect or {"contains": ["e"]}, category="a" if i % 2 else "b",
                    tools=TOOLS if scorer == "tool_call" else None)


def draft(passed: bool, text: str) -> CaseResult:
    return CaseResult(id="x", category="a", scorer="contains", passed=passed, score=float(passed), output=text,
                      tool_calls=[], latency_s=None)


def test_a_passing_draft_is_paired_with_a_failing_one_and_the_rest_are_counted():
    cases = [case(0), case(1), case(2),
             case(3, "tool_call", tool_calls=[{"name": "read_file", "arguments": {"path": {"one_of": ["a.md",
                                                                                                      "./a.md"]}}}]),
             case(4, "tool_call", no_tool_call=True)]
    drafts = [[draft(False, "no"), draft(True, "yes 1"), draft(True, "yes 2"), draft(False, "nope")],
              [draft(True, "yes")] * 4,
              [draft(False, "no")] * 4,
              [draft(False, "I cannot")] * 4,
              [draft(False, "<tool_call>")] * 4]
    pairing = make_pairs(cases, drafts, reference_answers=False)
    assert [p["case"] for p in pairing.pairs] == ["c0"]
    pair = pairing.pairs[0]
    assert pair["chosen"] == {"role": "assistant", "content": "yes 1"}
    assert pair["rejected"] == {"role": "assistant", "content": "no"}
    assert pair["messages"] == cases[0].messages and pair["category"] == "b" and "tools" not in pair
    assert pairing.summary() == {"pairs": 1, "from_reference": 0,
                                 "no_pair": {"all drafts passed": 1, "all drafts failed": 3}}

    with_reference = make_pairs(cases, drafts, reference_answers=True)
    assert [p["case"] for p in with_reference.pairs] == ["c0", "c3"]  # no_tool_call and contains name no answer
    call = {"type": "function", "function": {"name": "read_file", "arguments": {"path": "a.md"}}}
    assert with_reference.pairs[1]["chosen"] == {"role": "assistant", "content": "", "tool_calls": [call]}
    assert with_reference.pairs[1]["tools"] == TOOLS
    assert with_reference.summary()["from_reference"] == 1
    assert with_reference.summary()["no_pair"] == {"all drafts passed": 1, "all drafts failed": 2}


def test_pairs_past_two_to_one_are_refused_unless_allowed():
    def pairs(categories):
        return [{"prompt": f"q{i}", "chosen": "yes e", "rejected": "no", "category": c}
                for i, c in enumerate(categories)]

    assert check_balance(pairs("aab"), 2.0, allow=False) == []  # 2:1 is allowed
    with pytest.raises(ImbalanceError) as info:
        check_balance(pairs("aaab"), 2.0, allow=False)
    assert "category is 3 'a' : 1 'b' (3.0:1, above 2:1)" in str(info.value)
    assert "--allow-imbalance" in str(info.value) and "nothing was trained" in str(info.value)
    assert check_balance(pairs("aaab"), 2.0, allow=True) == [
        "the training pairs' category is 3 'a' : 1 'b' (3.0:1, above 2:1)"]
    labelled = [p | {"chosen": "Yes", "rejected": "No"} for p in pairs("ab")] + \
        [p | {"chosen": "No", "rejected": "Yes", "prompt": f"r{i}"} for i, p in enumerate(pairs("ababab"))]
    with pytest.raises(ImbalanceError, match="answer is 6 'no' : 2 'yes'"):
        check_balance(labelled, 2.0, allow=False)
    # A category the training suite holds but no pair has: balanced among the rest, still refused.
    assert check_balance(pairs("aabb"), 2.0, allow=False, suite_categories=["a", "b"]) == []
    with pytest.raises(ImbalanceError, match="no training pair has category 'answer', which the training suite"):
        check_balance(pairs("aabb"), 2.0, allow=False, suite_categories=["a", "b", "answer"])


def test_downsample_cuts_the_commoner_categories_to_the_ratio_and_says_how_many():
    pairs = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b", "category": c}
             for i, c in enumerate("eeeeeeeeeessssrrra")]  # 10 edit-like 'e', 4 's', 3 'r', 1 'a'
    kept, dropped = downsample_categories(pairs, 2.0, seed=0)
    assert dropped == {"e": 8, "s": 2, "r": 1}
    assert sorted(p["category"] for p in kept) == sorted("eessrra")
    assert [p["prompt"] for p in kept] == sorted((p["prompt"] for p in kept), key=lambda q: int(q[1:]))  # order kept
    assert check_balance(kept, 2.0, allow=False) == []
    assert downsample_categories(pairs, 2.0, seed=0) == (kept, dropped)  # seeded
    assert downsample_categories(pairs, 2.0, seed=1)[0] != kept
    balanced = pairs[10:]  # 4 : 3 : 1 is already past 2:1 for 's' only
    assert downsample_categories(balanced, 4.0, seed=0) == (balanced, {})


def call(name: str, path: str = "a.md") -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {{"path": "{path}"}}}}\n</tool_call>'


def test_the_rejected_draft_made_the_chosen_sides_decision_when_one_did():
    expect = {"tool_calls": [{"name": "read_file", "arguments": {"path": "a.md"}}]}
    cases = [case(1, "tool_call", **expect), case(3, "tool_call", **expect)]
    drafts = [[draft(False, "It is a markdown file."), draft(False, call("list_dir")), draft(True, call("read_file")),
               draft(False, call("read_file", "b.md"))],
              [draft(True, call("read_file")), draft(False, "No need."), draft(False, call("search"))]]
    first, second = make_pairs(cases, drafts, reference_answers=False).pairs
    assert first["rejected"]["content"] == call("read_file", "b.md")  # the same tool, a wrong argument
    assert first["decisions"] == ["read_file", "read_file"]
    assert second["rejected"]["content"] == "No need."  # no same-decision draft: the first failing one
    assert second["decisions"] == ["read_file", "no tool"]
    assert decision({"role": "assistant", "content": "<tool_call>{oops"}) == "unparsed tool call"
    cut_off = '<tool_call>\n{"name": "read_file", "arguments": {"path": "unterminated'
    assert decision({"role": "assistant", "content": cut_off}) == "read_file"
    assert decision({"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "search", "arguments": {}}}]}) == "search"


def decided(*sides: tuple[str, str]) -> list[dict]:
    return [{"prompt": f"q{i}", "chosen": chosen, "rejected": rejected, "category": "a"}
            for i, (chosen, rejected) in enumerate(sides)]


def test_a_decision_mostly_rejected_is_refused_though_the_categories_balance():
    # list_dir is the rejected side 3 times and the chosen side once: DPO would push it down everywhere.
    pairs = decided((call("search"), call("list_dir")), (call("read_file"), call("list_dir")),
                    ("Paris.", call("list_dir")), (call("list_dir"), "It has files."),
                    (call("read_file"), call("read_file", "b.md")), (call("read_file"), call("read_file", "c.md")))
    assert decision_counts(pairs) == {"list_dir": {"chosen": 1, "rejected": 3}, "no tool": {"chosen": 1, "rejected": 1},
                                      "read_file": {"chosen": 1, "rejected": 0}, "search": {"chosen": 1, "rejected": 0},
                                      "same decision": {"pairs": 2}}
    with pytest.raises(ImbalanceError, match="decision 'list_dir' is the chosen side of 1 pair.s. and the rejected "
                                             "side of 3 .*past 2:1"):
        check_balance(pairs, 2.0, allow=False)
    assert check_balance(pairs, 3.0, allow=False) == []  # 3 : 1 is within 3:1; one unmatched side is allowed
    assert check_balance(pairs[4:], 2.0, allow=False) == []  # same-decision pairs never lean


def test_downsample_drops_the_pairs_that_make_a_decision_lean_and_keeps_the_same_decision_ones():
    pairs = decided(*[(call("search"), call("list_dir"))] * 6, (call("list_dir"), "Hi."), ("Hi.", call("list_dir")),
                    (call("read_file"), call("read_file", "b.md")))
    kept, dropped = downsample_decisions(pairs, 2.0, seed=0)
    counts = decision_counts(kept)
    assert counts["same decision"] == {"pairs": 1} and pairs[-1] in kept
    assert check_balance(kept, 2.0, allow=False) == []
    assert sum(dropped.values()) == len(pairs) - len(kept) > 0
    assert set(dropped) <= {"search -> list_dir", "list_dir -> no tool", "no tool -> list_dir"}
    assert [p["prompt"] for p in kept] == sorted((p["prompt"] for p in kept), key=lambda q: int(q[1:]))  # order kept
    assert downsample_decisions(pairs, 2.0, seed=0) == (kept, dropped)  # seeded
    balanced = decided((call("search"), call("list_dir")), (call("list_dir"), call("search")))
    assert downsample_decisions(balanced, 2.0, seed=0) == (balanced, {})


def test_downsample_repeats_both_cuts_until_categories_and_decisions_both_hold():
    # Cutting the decisions empties most of 'b', which then makes 'a' too common: both must hold at the end.
    pairs = [p | {"category": "a"} for p in decided(*[(call("read_file"), call("read_file", "x"))] * 5)] + \
        [p | {"category": "b", "prompt": f"b{i}"} for i, p in enumerate(decided(*[("Hi.", call("search"))] * 4))]
    kept, categories, decisions = downsample(pairs, 2.0, seed=0)
    assert check_balance(kept, 2.0, allow=False) == []
    assert decisions == {"no tool -> search": 2} and categories == {"a": 1}  # 5 : 2 after the decisions' cut
    assert len(kept) == len(pairs) - 3


def test_balance_names_what_is_checked_and_cut():
    # The same pairs as above: 'a' 5 : 4 'b' with 'no tool -> search' 4 times. Held to the decisions only,
    # the category cut never runs, nor is a missing category refused; held to categories only, no decision.
    pairs = [p | {"category": "a"} for p in decided(*[(call("read_file"), call("read_file", "x"))] * 5)] + \
        [p | {"category": "b", "prompt": f"b{i}"} for i, p in enumerate(decided(*[("Hi.", call("search"))] * 4))]
    kept, categories, decisions = downsample(pairs, 2.0, seed=0, balance=("decisions",))
    assert categories == {} and decisions == {"no tool -> search": 2} and len(kept) == len(pairs) - 2
    assert check_balance(kept, 2.0, allow=False, balance=("decisions",), suite_categories=["a", "b"]) == []
    with pytest.raises(ImbalanceError, match="category is 5 'a' : 2 'b'"):
        check_balance(kept, 2.0, allow=False)
    with pytest.raises(ImbalanceError, match="decision 'no tool'"):
        check_balance(pairs, 2.0, allow=False)
    assert check_balance(pairs, 2.0, allow=False, balance=("categories", "labels")) == []
    assert downsample(pairs, 2.0, seed=0, balance=("categories",))[2] == {}
    assert ImproveConfig(suite="s", eval_suite="e", output="o", balance="decisions, labels").balance == (
        "decisions", "labels")
    with pytest.raises(ValueError, match="balance"):
        ImproveConfig(suite="s", eval_suite="e", output="o", balance="decisions,tools")
    with pytest.raises(ValueError, match="unknown balance 'category'"):
        check_balance(pairs, 2.0, allow=False, balance=("category",))
    # Labels alone: a yes/no lean is refused, the categories and decisions above are not; a missing category is.
    labelled = [p | {"label": "yes"} for p in pairs[:3]] + [p | {"label": "no"} for p in pairs[3:4]]
    with pytest.raises(ImbalanceError, match="label is 3 'yes' : 1 'no'"):
        check_balance(labelled, 2.0, allow=False, balance=("labels",))
    assert check_balance(pairs, 2.0, allow=False, balance=("labels",)) == []
    with pytest.raises(ImbalanceError, match="no training pair has category 'c'"):
        check_balance(pairs, 2.0, allow=False, balance=("labels",), suite_categories=["a", "b", "c"])


def test_sampling_is_seeded_and_greedy_stays_the_default(tiny_model):
    cases = [case(i) for i in range(3)] * 3

    def answers(**options):
        engine = InProcessEngine(EngineOptions(model=str(tiny_model), max_tokens=8, batch_size=4, **options))
        engine.prepare([])
        got: dict[int, str] = {}
        engine.generate(None, cases, lambda i, g: got.__setitem__(i, g.output.raw))
        engine.close()
        return [got[i] for i in range(len(cases))]

    greedy = answers()
    assert greedy[:3] == greedy[3:6] == greedy[6:]  # the same prompt gives the same greedy answer
    sampled = answers(temperature=1.0, seed=1)
    assert sampled == answers(temperature=1.0, seed=1)
    assert sampled != answers(temperature=1.0, seed=2)
    assert len({sampled[0], sampled[3], sampled[6]}) > 1  # drafts of one prompt differ


def write_suite(path: Path, prompts: list[str]) -> Path:
    lines = [{"id": f"{path.stem}-{i}", "category": "a" if i % 2 else "b",
              "messages": [{"role": "user", "content": text}], "scorer": "contains", "expect": {"contains": ["e"]}}
             for i, text in enumerate(prompts)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_one_tiny_round_end_to_end(tiny_model, tmp_path, run_cli, monkeypatch):
    train_suite = write_suite(tmp_path / "train.jsonl", [f"Tell me about item {i}." for i in range(12)])
    held_out = write_suite(tmp_path / "held.jsonl", [f"Describe thing {i}, please." for i in range(4)])
    out = tmp_path / "improve"
    config = ImproveConfig(suite=train_suite, eval_suite=held_out, output=out, model=str(tiny_model), k=4,
                           temperature=1.0, max_tokens=6, batch_size=8, allow_imbalance=True,
                           dpo={"iters": 2, "num_layers": 2, "batch_size": 2, "steps_per_eval": 2})
    rounds = []
    result = improve(config, on_round=lambda n, record: rounds.append(record))
    record = rounds[0]
    assert record["pairs"] + sum(record["no_pair"].values()) == 12 and record["pairs"] >= 2
    drafts = [json.loads(line) for line in (out / "round-1" / "drafts.jsonl").read_text().splitlines()]
    assert len(drafts) == 48 and all(d["passed"] == ("e" in d["output"].lower()) for d in drafts)
    pairs = [json.loads(line) for name in ("train", "valid")
             for line in (out / "round-1" / "pairs" / f"{name}.jsonl").read_text().splitlines()]
    assert len(pairs) == record["pairs"]
    trained = (out / "round-1" / "pairs" / "train.jsonl").read_text().count("\n")
    assert record["decisions"] == {"same decision": {"pairs": trained}}  # text against text: no tool either side
    assert all("e" in p["chosen"]["content"].lower() and "e" not in p["rejected"]["content"].lower() for p in pairs)
    adapter = out / "dpo-1"
    assert result.adapters == [adapter] and json.loads((adapter / "manifest.json").read_text())["status"] == "completed"
    # The report's loss curves read DPO's "loss" as the training curve.
    curves = loss_series(RunDir(adapter).read_metrics())
    assert [x for x, _ in curves["train_loss"]] == [2] and [x for x, _ in curves["val_loss"]] == [0, 2]
    evaluated = json.loads((out / "eval" / "results.json").read_text())
    assert [r["name"] for r in evaluated["runs"]] == ["baseline", "dpo-1"]
    assert [(c["baseline"], c["run"], c["n_paired"]) for c in result.comparisons] == [
        ("baseline", "dpo-1", 4)]
    assert json.loads((out / "improve.json").read_text())["rounds"] == rounds

    # The same drafts again (--drafts): nothing is sampled, they are scored again and paired as before.
    import punie.dpo.improve as improve_module

    def no_sampling(*args, **kwargs):
        raise AssertionError("--drafts must not sample")

    monkeypatch.setattr(improve_module, "sample_drafts", no_sampling)
    again = improve(config.model_copy(update={"output": tmp_path / "again", "drafts": out / "round-1" / "drafts.jsonl",
                                              "dpo": config.dpo | {"iters": 1}}))
    for name in ("round-1/drafts.jsonl", "round-1/pairs/train.jsonl", "round-1/pairs/valid.jsonl"):
        assert (tmp_path / "again" / name).read_text() == (out / name).read_text()
    assert again.rounds[0]["pairs"] == record["pairs"] and again.adapters == [tmp_path / "again" / "dpo-1"]
    monkeypatch.undo()

    # From START (the adapter just made), through the CLI: START is what the new adapter is compared with.
    # Two held-out suites: each evaluated, compared and reported in its own folder.
    other = write_suite(tmp_path / "other.jsonl", [f"Name colour {i}." for i in range(3)])
    cli = run_cli("improve", "--suite", str(train_suite), "--eval-suite", str(held_out), "--eval-suite", str(other),
                  "--output",
                  str(tmp_path / "cli"), "--model", str(tiny_model), "--adapter", str(adapter), "--k", "4",
                  "--temperature", "1.0", "--max-tokens", "6", "--allow-imbalance", "--iters", "2",
                  "--dpo-batch-size", "2", "--sft-weight", "0.5", "--keep", "last", "--loss", "dpop",
                  "--dpop-lambda", "5")
    assert cli.returncode == 0, cli.stderr
    dpo_config = json.loads((tmp_path / "cli" / "dpo-1" / "manifest.json").read_text())["config"]
    assert (dpo_config["sft_weight"], dpo_config["keep"], dpo_config["loss"], dpo_config["dpop_lambda"]) == (
        0.5, "last", "dpop", 5.0)
    assert "Round 1:" in cli.stderr and "case(s) gave pairs" in cli.stderr and "all drafts failed" in cli.stderr
    both = json.loads((tmp_path / "cli" / "improve.json").read_text())["comparisons"]
    assert [(c["suite"], c["baseline"], c["run"], c["n_paired"]) for c in both] == [
        (str(held_out), "dpo-1", "cli/dpo-1", 4), (str(other), "dpo-1", "cli/dpo-1", 3)]
    assert all((tmp_path / "cli" / "eval" / name / "report.html").is_file() for name in ("held", "other"))
    assert f"on {other} (3 cases)" in cli.stdout
    assert "dpo step 2/2: loss" in cli.stderr
    assert ("Trained anyway (--allow-imbalance)" in cli.stderr) == bool(
        json.loads((tmp_path / "cli" / "improve.json").read_text())["rounds"][0]["balance_warnings"])
    assert "cli/dpo-1 vs dpo-1 on" in cli.stdout


def test_a_held_out_suite_sharing_training_prompts_is_refused(tiny_model, tmp_path):
    train_suite = write_suite(tmp_path / "train.jsonl", ["one", "two", "three"])
    held_out = write_suite(tmp_path / "held.jsonl", ["four", "two"])
    config = ImproveConfig(suite=train_suite, eval_suite=held_out, output=tmp_path / "o", model=str(tiny_model))
    with pytest.raises(DataError, match="shares 1 prompt"):
        improve(config)
    clean = write_suite(tmp_path / "clean.jsonl", ["five"])
    with pytest.raises(DataError, match="held.jsonl shares 1 prompt"):  # the second of two held-out suites
        improve(config.model_copy(update={"eval_suite": [clean, held_out]}))
    (tmp_path / "other").mkdir()
    same_name = write_suite(tmp_path / "other" / "Clean.jsonl", ["six"])  # one folder on macOS's disk
    with pytest.raises(DataError, match="same file name"):
        improve(config.model_copy(update={"eval_suite": [clean, same_name]}))
    assert not (tmp_path / "o").exists()


def test_an_interrupted_evaluation_stops_and_says_so(tiny_model, tmp_path, monkeypatch):
    import punie.eval

    train_suite = write_suite(tmp_path / "train.jsonl", [f"Tell me about item {i}." for i in range(8)])
    held = [write_suite(tmp_path / f"held{i}.jsonl", [f"Describe thing {i}."]) for i in range(2)]
    evaluated = []

    def ctrl_c(path, **options):  # run_eval keeps what finished and returns it, marked interrupted
        evaluated.append(path)
        return type("Results", (), {"interrupted": True})()

    monkeypatch.setattr(punie.eval, "run_eval", ctrl_c)
    config = ImproveConfig(suite=train_suite, eval_suite=held, output=tmp_path / "o", model=str(tiny_model), k=4,
                           temperature=1.0, max_tokens=6, allow_imbalance=True, reference_answers=True,
                           dpo={"iters": 1, "num_layers": 1, "batch_size": 1})
    with pytest.raises(KeyboardInterrupt):
        improve(config)
    assert evaluated == [held[0]]  # the second suite never started
    record = json.loads((tmp_path / "o" / "improve.json").read_text())
    assert record["interrupted"] == f"evaluating {held[0]}" and "comparisons" not in record


def test_a_training_suite_from_tools_data_expects_each_first_reply_and_skips_held_out_prompts(tmp_path):
    from punie.dpo.train_suite import write_training_suite

    system = {"role": "system", "content": "You are a coding agent."}
    call = {"type": "function", "function": {"name": "read_file", "arguments": {"path": "a.md"}}}
    records = [
        {"messages": [system, {"role": "user", "content": "Show a.md"}, {"role": "assistant", "content": "",
                                                                          "tool_calls": [call]},
                      {"role": "tool", "content": "hello"}, {"role": "assistant", "content": "It says hello."}],
         "tools": TOOLS, "category": "read"},
        {"messages": [system, {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
         "tools": TOOLS, "category": "answer"},
        {"messages": [system, {"role": "user", "content": "Held out"}, {"role": "assistant", "content": "x"}],
         "tools": TOOLS, "category": "answer"},
    ]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    held = tmp_path / "held.jsonl"
    held.write_text(json.dumps({"id": "h", "messages": records[2]["messages"][:2], "tools": TOOLS,
                                "scorer": "tool_call", "expect": {"no_tool_call": True}}) + "\n")
    out = tmp_path / "suite.jsonl"
    other = tmp_path / "other.jsonl"
    other.write_text(held.read_text().replace("Held out", "What is 2+2?"))
    assert write_training_suite(data, tmp_path / "both.jsonl", exclude=[held, other]) == (1, 2)
    assert write_training_suite(data, out, exclude=[held]) == (2, 1)
    cases = [json.loads(line) for line in out.read_text().splitlines()]
    assert [c["messages"] for c in cases] == [records[0]["messages"][:2], records[1]["messages"][:2]]
    assert cases[0]["expect"] == {"tool_calls": [{"name": "read_file", "arguments": {"path": "a.md"}}]}
    assert cases[1]["expect"] == {"no_tool_call": True}
    assert [c["category"] for c in cases] == ["read", "answer"] and cases[0]["tools"] == TOOLS
    (tmp_path / "bad.jsonl").write_text(json.dumps(records[0]) + "\n" + json.dumps({"messages": [system]}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl:2: expected a chat record"):
        write_training_suite(tmp_path / "bad.jsonl", tmp_path / "x.jsonl")


def test_a_rejected_draft_with_a_broken_tool_call_is_trained_on(tiny_model, tmp_path, monkeypatch):
    from punie.dpo import improve as improve_module

    # Regression: punie data check refuses a rejected side whose tool call is not valid JSON, so the pairs of
    # a real run (drafts cut off mid-call) were refused and nothing was trained.
    train_suite = write_suite(tmp_path / "train.jsonl", [f"Tell me about item {i}." for i in range(4)])
    held_out = write_suite(tmp_path / "held.jsonl", ["Describe a thing."])
    broken = '<tool_call>\n{"name": "read_file", "arguments": {"path": "unterminated'
    monkeypatch.setattr(improve_module, "sample_drafts", lambda cases, *a, **kw: [
        [draft(True, f"here {i}"), draft(False, broken)] for i in range(len(cases))])
    config = ImproveConfig(suite=train_suite, eval_suite=held_out, output=tmp_path / "o", model=str(tiny_model),
                           max_tokens=4, valid_fraction=0.25, allow_imbalance=True,  # every pair rejects read_file
                           dpo={"iters": 1, "num_layers": 2, "batch_size": 2})
    result = improve(config)
    pairs = (tmp_path / "o" / "round-1" / "pairs" / "train.jsonl").read_text()
    assert "unterminated" in pairs and result.rounds[0]["pairs"] == 4
    assert json.loads((result.adapters[0] / "manifest.json").read_text())["status"] == "completed"


def test_drafts_of_another_suite_are_refused_naming_the_line(tmp_path):
    from punie.dpo.improve import load_drafts

    cases = [case(0), case(1)]
    path = tmp_path / "drafts.jsonl"
    path.write_text(json.dumps({"case": "c0", "output": "yes"}) + "\n" + json.dumps({"case": "c1", "output": "no"})
                    + "\n" + json.dumps({"case": "c1", "output": "e", "error": "out of memory"}) + "\n")
    scored = load_drafts(path, cases)  # scored again by the case's scorer ("contains": "e")
    assert [[d.passed for d in row] for row in scored] == [[True], [False, False]]
    assert scored[1][1].reason == "engine error: out of memory"  # an engine failure stays a failure
    with pytest.raises(DataError, match="no draft for 1 case"):
        load_drafts(path, cases + [case(2)])
    path.write_text(json.dumps({"case": "c0", "output": "yes"}) + "\n" + json.dumps({"case": "c9", "output": "x"}))
    with pytest.raises(DataError, match=r"drafts.jsonl:2: case 'c9' is not in the training suite"):
        load_drafts(path, cases)
    path.write_text(json.dumps({"case": "c0"}) + "\n")
    with pytest.raises(DataError, match=r"drafts.jsonl:1: a draft needs"):
        load_drafts(path, cases)
    with pytest.raises(DataError, match="does not exist"):
        load_drafts(tmp_path / "missing.jsonl", cases)


def test_improve_refuses_drafts_of_another_suite_before_writing_anything(tmp_path):
    train_suite = write_suite(tmp_path / "train.jsonl", ["one", "two"])
    held_out = write_suite(tmp_path / "held.jsonl", ["three"])
    drafts = tmp_path / "drafts.jsonl"
    drafts.write_text(json.dumps({"case": "other-0", "output": "e"}) + "\n")
    config = ImproveConfig(suite=train_suite, eval_suite=held_out, output=tmp_path / "o", drafts=drafts)
    with pytest.raises(DataError, match="'other-0' is not in the training suite"):
        improve(config)
    with pytest.raises(DataError, match="--drafts .*missing.jsonl does not exist"):
        improve(config.model_copy(update={"drafts": tmp_path / "missing.jsonl"}))
    assert not (tmp_path / "o").exists()
