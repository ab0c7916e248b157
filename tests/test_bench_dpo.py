"""The DPO benchmark's pair helpers: mlx-lm-lora must be given the same tokens punie trains on."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from punie.dpo.data import tokenize_pairs
from punie.models.loading import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a text file.", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]
CALL = {"role": "assistant", "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "read_file", "arguments": {"path": "setup.cfg"}}}]}


def _bench():
    spec = importlib.util.spec_from_file_location("bench_dpo", ROOT / "bench" / "bench_dpo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _as_punie_text_pair(converted: dict[str, str]) -> dict:
    """The converted record as mlx-lm-lora's DPODataset renders it: [system,] user, then a text reply."""
    messages = ([{"role": "system", "content": converted["system"]}] if "system" in converted else [])
    return {"messages": messages + [{"role": "user", "content": converted["prompt"]}],
            "chosen": converted["chosen"], "rejected": converted["rejected"]}


def test_tool_pair_converts_to_text_with_the_same_tokens(tiny_model, tmp_path):
    bench = _bench()
    tokenizer = load_tokenizer(str(tiny_model))
    pair = {"messages": [{"role": "system", "content": "You are a coding agent."},
                         {"role": "user", "content": "Show me setup.cfg"}],
            "tools": TOOLS, "chosen": CALL, "rejected": "I cannot read files."}
    converted = bench.to_mlx_lm_lora(pair, tokenizer)
    assert set(converted) == {"system", "prompt", "chosen", "rejected"}
    assert "read_file(path: string)" in converted["system"] and "<tool_call>" in converted["chosen"]
    assert converted["rejected"] == "I cannot read files."
    original, text = tmp_path / "original.jsonl", tmp_path / "text.jsonl"
    original.write_text(json.dumps(pair) + "\n")
    text.write_text(json.dumps(_as_punie_text_pair(converted)) + "\n")
    a, b = (tokenize_pairs("train", p, tokenizer, 2048) for p in (original, text))
    assert (a.prompts, a.chosen, a.rejected) == (b.prompts, b.chosen, b.rejected)


def test_pair_without_system_turn_has_no_system_key(tiny_model):
    converted = _bench().to_mlx_lm_lora({"prompt": "Is 3 > 2?", "chosen": "Yes", "rejected": "No"},
                                        load_tokenizer(str(tiny_model)))
    assert converted == {"prompt": "Is 3 > 2?", "chosen": "Yes", "rejected": "No"}


def test_conversation_mlx_lm_lora_cannot_express_is_refused(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    pair = {"messages": [{"role": "user", "content": "Show me setup.cfg"}, CALL,
                         {"role": "tool", "content": "[metadata]"}], "tools": TOOLS,
            "chosen": "It holds metadata.", "rejected": "It is empty."}
    with pytest.raises(ValueError, match="system,\\] user prompts"):
        _bench().to_mlx_lm_lora(pair, tokenizer)


def test_agent_pairs_reject_with_another_category():
    records = [{"category": c, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": f"q{i}"},
                                            {"role": "assistant", "content": f"a{i}"}]}
               for i, c in enumerate(["read", "read", "answer", "run", "answer", "read"])]
    records.append({"category": "read", "messages": records[0]["messages"] * 2})  # multi-turn: not a first turn
    pairs = _bench().agent_pairs(records, 6)
    assert len(pairs) == 6
    for pair, record in zip(pairs, records, strict=False):
        assert pair["chosen"] == record["messages"][2]
        assert pair["rejected"] != pair["chosen"]
        rejected_from = next(r for r in records if r["messages"][-1] == pair["rejected"])
        assert rejected_from["category"] != pair["category"]
